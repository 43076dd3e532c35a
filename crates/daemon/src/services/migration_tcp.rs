//! Migrations between hosts (an `oxvirt+https://` destination, docs/migration.md): the TCP
//! connections of [`super::migration`] and [`super::migration_storage`] when the source asked
//! over the destination's TLS API instead of its Unix socket.
//!
//! - Destination (D): the stream's listener is bound on the address the prepare came in on, at
//!   a free port of `migration_port_range`, and accepts one connection, from the address the
//!   prepare came from ([`StreamListener`]); the disks' NBD server (a Unix socket D's QEMU
//!   serves, as on one host) is reached through [`NbdRelay`], a port of the same range that
//!   accepts one connection per disk from that address and relays each to QEMU's socket.
//! - Source (S): [`connect`] to those ports.
//! - Both: [`watch_connection`] makes a connection that stops carrying anything (a cut network)
//!   fail within [`DEAD_AFTER`], so each QEMU's migration fails and each side cleans up,
//!   instead of waiting on TCP's own retries for a quarter of an hour.
//!
//! Neither QEMU listens or connects itself: oxvirtd hands them the connected sockets.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_host::lock;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};

use super::error::{internal, DaemonError, DaemonResult, ErrorKind};

/// The ports a destination opens for migrations when the configuration names none: libvirt's.
pub const DEFAULT_PORTS: RangeInclusive<u16> = 49152..=49215;

/// How long a connection may carry nothing (no acknowledgement of what was sent, no answer to
/// a keepalive probe) before it fails.
pub(super) const DEAD_AFTER: Duration = Duration::from_secs(20);
/// How long S's connection to D's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a prepare came from, when it came over the TLS API: the source's address (the only
/// one D accepts the migration's connections from) and D's own address it reached (where D
/// listens for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSource {
    pub source: IpAddr,
    pub local: IpAddr,
}

/// Binds a socket (not listening yet) on `ip` at the first free port of `ports`.
fn bind(ip: IpAddr, ports: &RangeInclusive<u16>) -> DaemonResult<TcpSocket> {
    for port in ports.clone() {
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|err| internal("a migration socket", err))?;
        match socket.bind(SocketAddr::new(ip, port)) {
            Ok(()) => return Ok(socket),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(err) => {
                return Err(internal(
                    &format!("cannot bind a migration port on {ip}:{port}"),
                    err,
                ))
            }
        }
    }
    Err(DaemonError::new(
        ErrorKind::Busy,
        format!(
            "no free port in migration_port_range {}-{} on {ip} for the migration",
            ports.start(),
            ports.end()
        ),
    ))
}

/// Makes `connection` fail once it carried nothing for about [`DEAD_AFTER`]: keepalive probes
/// while it is idle (D's side only receives), and a limit on unacknowledged data (S's side
/// sends without pause).
pub(super) fn watch_connection(connection: impl AsFd) -> std::io::Result<()> {
    use rustix::net::sockopt;
    let fd = connection.as_fd();
    sockopt::set_socket_keepalive(fd, true)?;
    sockopt::set_tcp_keepidle(fd, Duration::from_secs(5))?;
    sockopt::set_tcp_keepintvl(fd, Duration::from_secs(3))?;
    sockopt::set_tcp_keepcnt(fd, 5)?;
    let millis = u32::try_from(DEAD_AFTER.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(fd, millis)?;
    Ok(())
}

/// Accepts connections on `listener` until one comes from `source`; any other is closed
/// (logged): nobody else may feed a guest's state in.
async fn accept_from(listener: &TcpListener, source: IpAddr) -> std::io::Result<TcpStream> {
    loop {
        let (stream, peer) = listener.accept().await?;
        if peer.ip() == source {
            watch_connection(&stream)?;
            return Ok(stream);
        }
        tracing::warn!(%peer, %source, "refused a migration connection from another address");
    }
}

/// (Source) A connection to `address` (`IP:PORT`, as D announced it), watched.
pub(super) async fn connect(address: &str) -> std::io::Result<OwnedFd> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(connected) => connected?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        }
    };
    watch_connection(&stream)?;
    Ok(OwnedFd::from(stream.into_std()?))
}

/// (Destination) Where the migration stream arrives: D's Unix socket (a source on this host),
/// a TCP port for one connection from the source's address, or the source's upgraded API
/// connection (`--tunnelled`, services/migration_tunnel.rs).
pub(super) enum StreamListener {
    Unix(UnixListener),
    Tcp {
        listener: TcpListener,
        source: IpAddr,
    },
    /// What the stream route sends the stream's end by.
    Tunnel(tokio::sync::oneshot::Receiver<OwnedFd>),
}

impl StreamListener {
    /// A TCP listener for `remote`'s source on a port of `ports`; its address to announce.
    pub(super) fn tcp(
        remote: RemoteSource,
        ports: &RangeInclusive<u16>,
    ) -> DaemonResult<(StreamListener, SocketAddr)> {
        let socket = bind(remote.local, ports)?;
        let address = socket
            .local_addr()
            .map_err(|err| internal("the migration port", err))?;
        let listener = socket
            .listen(1)
            .map_err(|err| internal(&format!("cannot listen on {address}"), err))?;
        Ok((
            StreamListener::Tcp {
                listener,
                source: remote.source,
            },
            address,
        ))
    }

    /// The one connection of the stream; the listener closes when this is dropped.
    pub(super) async fn accept(self) -> std::io::Result<OwnedFd> {
        match self {
            StreamListener::Unix(listener) => {
                Ok(OwnedFd::from(listener.accept().await?.0.into_std()?))
            }
            StreamListener::Tcp { listener, source } => Ok(OwnedFd::from(
                accept_from(&listener, source).await?.into_std()?,
            )),
            StreamListener::Tunnel(receiver) => receiver.await.map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the migration ended before its stream came",
                )
            }),
        }
    }
}

/// (Destination) The TCP port through which a remote source reaches the disks' NBD server
/// (D's QEMU serves them on a Unix socket, as for a source on this host). It is bound at the
/// prepare but listens only once QEMU serves (S's connections are refused before, and S
/// retries), accepts one connection per disk from the source's address, relays each to the
/// Unix socket, and stops when the migration ends (finish or failure).
pub struct NbdRelay {
    socket: Mutex<Option<TcpSocket>>,
    address: SocketAddr,
    source: IpAddr,
    target: PathBuf,
    connections: usize,
    /// The accepting task and the relays, aborted by [`NbdRelay::stop`].
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl NbdRelay {
    pub(super) fn bind(
        remote: RemoteSource,
        ports: &RangeInclusive<u16>,
        target: PathBuf,
        connections: usize,
    ) -> DaemonResult<NbdRelay> {
        let socket = bind(remote.local, ports)?;
        let address = socket
            .local_addr()
            .map_err(|err| internal("the NBD port", err))?;
        Ok(NbdRelay {
            socket: Mutex::new(Some(socket)),
            address,
            source: remote.source,
            target,
            connections,
            tasks: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub(super) fn address(&self) -> SocketAddr {
        self.address
    }

    /// QEMU serves the disks on the target socket: accept the source's connections.
    pub(super) fn start(&self) {
        let Some(socket) = lock(&self.socket).take() else {
            return;
        };
        let backlog = u32::try_from(self.connections).unwrap_or(u32::MAX);
        let listener = match socket.listen(backlog) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(address = %self.address, "cannot listen for the NBD connections: {err}");
                return;
            }
        };
        let (source, target, connections) = (self.source, self.target.clone(), self.connections);
        let tasks = Arc::clone(&self.tasks);
        let accepting = tokio::spawn(async move {
            for _ in 0..connections {
                let mut remote = match accept_from(&listener, source).await {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::warn!("accepting an NBD connection of a migration: {err}");
                        return;
                    }
                };
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    let mut local = match tokio::net::UnixStream::connect(&target).await {
                        Ok(local) => local,
                        Err(err) => {
                            tracing::warn!(
                                "cannot reach the NBD server {}: {err}",
                                target.display()
                            );
                            return;
                        }
                    };
                    if let Err(err) = tokio::io::copy_bidirectional(&mut remote, &mut local).await {
                        tracing::info!("an NBD connection of a migration ended: {err}");
                    }
                });
                lock(&tasks).push(relay.abort_handle());
            }
            // Every disk's connection came: nobody else connects (the listener closes here).
        });
        lock(&self.tasks).push(accepting.abort_handle());
    }

    /// The migration ended: the port closes and every relay stops.
    pub(super) fn stop(&self) {
        lock(&self.socket).take();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for NbdRelay {
    fn drop(&mut self) {
        self.stop();
    }
}
