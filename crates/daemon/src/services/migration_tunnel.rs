//! `migrate --tunnelled` (docs/migration.md, "Tunnelled"): the migration stream goes through a
//! connection to the destination's API itself, the way the source reaches it for the prepare
//! and the finish (its Unix socket, or its TLS API with the same credentials and certificate
//! check), upgraded by `POST /v1/migrations/{id}/stream` (`Upgrade: oxvirt-migration`). The
//! destination opens no socket or port for the migration.
//!
//! Each QEMU still gets its end by descriptor (`migrate fd:`, `migrate-incoming fd:`): one end
//! of a socketpair whose other end a relay task of oxvirtd copies to and from the upgraded
//! connection. A relay ends once both directions ended (each QEMU closes its end when its
//! migration completes, fails or is cancelled), or as soon as either connection breaks: the
//! other side then sees its end close, and its QEMU's migration fails as with a closed socket.
//! Between hosts, the tunnel's TCP connection is watched as the direct ports are
//! (migration_tcp.rs's keepalive and user timeout): a cut network fails it within about half a
//! minute on both sides.

use std::os::fd::OwnedFd;

use oxvirt_api::{Client, UpgradedStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::error::{internal, invalid_state, DaemonError, DaemonResult, ErrorKind};

/// (Destination) Where the stream route hands the prepared migration's end of its socketpair
/// to the task that waits to load it. Taken by the first stream request: only one ever comes.
pub(super) type TunnelSender = oneshot::Sender<OwnedFd>;

/// A socketpair: QEMU's end (as a descriptor to hand over) and the relay's.
fn socketpair() -> DaemonResult<(OwnedFd, UnixStream)> {
    let (qemu, relay) =
        UnixStream::pair().map_err(|err| internal("a socketpair for the tunnel", err))?;
    let qemu = qemu
        .into_std()
        .map_err(|err| internal("a socketpair for the tunnel", err))?;
    Ok((OwnedFd::from(qemu), relay))
}

/// Copies between the upgraded API connection and the relay's end of the socketpair until
/// both directions ended, or either broke (logged with `what`: which side's tunnel).
async fn relay<A>(mut upgraded: A, mut local: UnixStream, what: &'static str, id: String)
where
    A: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut upgraded, &mut local).await {
        Ok((sent, received)) => {
            tracing::info!(migration = %id, sent, received, "{what}: the tunnel ended")
        }
        Err(err) => tracing::info!(migration = %id, "{what}: the tunnel broke: {err}"),
    }
}

/// (Source) Opens the tunnel of prepared migration `id` on `destination`: returns QEMU's end of
/// the stream; a detached relay carries it through the upgraded connection.
pub(super) async fn open(destination: &Client, id: &str) -> DaemonResult<OwnedFd> {
    let watch =
        |socket: std::os::fd::BorrowedFd<'_>| super::migration_tcp::watch_connection(socket);
    let upgraded: UpgradedStream =
        destination
            .migration_stream(id, &watch)
            .await
            .map_err(|err| {
                DaemonError::new(
                    ErrorKind::Engine,
                    format!(
                        "cannot open the tunnel of the migration stream to the destination: {err}"
                    ),
                )
            })?;
    let (qemu, local) = socketpair()?;
    tokio::spawn(relay(upgraded, local, "outgoing migration", id.to_string()));
    Ok(qemu)
}

/// (Destination) The stream request of migration `id` came (the caller took `sender`, so no
/// second one can): hands QEMU's end to the task waiting to load it and returns the relay's
/// end, for [`serve`] once the connection is upgraded.
pub(super) fn accept(id: &str, sender: TunnelSender) -> DaemonResult<UnixStream> {
    let (qemu, local) = socketpair()?;
    sender.send(qemu).map_err(|_| {
        invalid_state(format!(
            "incoming migration '{id}' no longer waits for its stream"
        ))
    })?;
    Ok(local)
}

/// The API's TLS connections as remote.rs serves them (what an upgraded one downcasts to).
type TlsConnection =
    hyper_util::rt::TokioIo<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// (Destination) Relays the upgraded connection of migration `id` to its QEMU's end; a TLS
/// connection (from another host) watched first as the direct ports are.
pub async fn serve(upgraded: hyper::upgrade::Upgraded, mut local: UnixStream, id: String) {
    use tokio::io::AsyncWriteExt;
    match upgraded.downcast::<TlsConnection>() {
        Ok(parts) => {
            if let Err(err) = super::migration_tcp::watch_connection(parts.io.inner().get_ref().0) {
                tracing::warn!(migration = %id, "cannot watch the tunnel's connection: {err}");
            }
            // What hyper read past the request already is the stream's beginning.
            if let Err(err) = local.write_all(&parts.read_buf).await {
                tracing::info!(migration = %id, "incoming migration: the tunnel broke: {err}");
                return;
            }
            relay(parts.io.into_inner(), local, "incoming migration", id).await;
        }
        // The Unix socket: this host's source.
        Err(upgraded) => {
            relay(
                hyper_util::rt::TokioIo::new(upgraded),
                local,
                "incoming migration",
                id,
            )
            .await
        }
    }
}
