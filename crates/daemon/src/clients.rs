//! The API's client connections, counted and capped as libvirtd's `max_clients` does:
//! [`CountedListener`] wraps the Unix listener handed to `axum::serve`, so that every accepted
//! connection holds a [`ClientGuard`] for as long as hyper keeps its stream (a kept-alive
//! connection until its client closes it), and a connection beyond the limit is closed at once,
//! with a log line.
//! `oxvirt admin server-clients-info` reads the count, `server-clients-set` changes the limit.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{unix::SocketAddr, UnixListener, UnixStream};

/// libvirtd's default `max_clients`.
pub const DEFAULT_MAX_CLIENTS: u32 = 5000;

/// The one server oxvirtd has (virt-admin's `srv-list`; libvirtd has `libvirtd` and `admin`,
/// oxvirtd serves its administration on the same socket).
pub const SERVER_NAME: &str = "oxvirtd";

/// The open connections and their limit, shared by the listener and the admin routes.
#[derive(Debug)]
pub struct Clients {
    open: AtomicU32,
    max: AtomicU32,
}

impl Clients {
    pub fn new(max: u32) -> Arc<Clients> {
        Arc::new(Clients {
            open: AtomicU32::new(0),
            max: AtomicU32::new(max),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }

    /// A new limit; connections already open stay (as in libvirtd), new ones wait for the
    /// count to drop below it.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::SeqCst);
    }

    /// Counts one more connection, unless that would exceed the limit.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<ClientGuard> {
        let max = self.max();
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(ClientGuard {
            clients: Arc::clone(self),
        })
    }
}

/// One counted connection: dropping it (when hyper drops the stream) uncounts it.
#[derive(Debug)]
pub struct ClientGuard {
    clients: Arc<Clients>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The API's listener: a Unix listener that counts and caps its connections.
pub struct CountedListener {
    listener: UnixListener,
    clients: Arc<Clients>,
}

impl CountedListener {
    pub fn new(listener: UnixListener, clients: Arc<Clients>) -> CountedListener {
        CountedListener { listener, clients }
    }
}

impl axum::serve::Listener for CountedListener {
    type Io = ClientStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ClientStream, SocketAddr) {
        loop {
            // axum's own accept for a Unix listener: it retries (and logs) accept errors.
            let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
            match self.clients.admit() {
                Some(guard) => {
                    return (
                        ClientStream {
                            stream,
                            _guard: guard,
                        },
                        addr,
                    )
                }
                None => {
                    // As libvirtd: refused at once, not queued; dropping the stream closes it.
                    tracing::warn!(
                        "too many active clients ({}), dropping connection",
                        self.clients.max()
                    );
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection's stream, counted while it lives.
#[derive(Debug)]
pub struct ClientStream {
    stream: UnixStream,
    _guard: ClientGuard,
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_uncounts_on_drop() {
        let clients = Clients::new(2);
        let a = clients.admit().expect("first");
        let b = clients.admit().expect("second");
        assert!(clients.admit().is_none());
        assert_eq!(clients.open(), 2);
        drop(a);
        assert_eq!(clients.open(), 1);
        let c = clients.admit().expect("a slot again");
        // A lower limit keeps the open connections and refuses new ones.
        clients.set_max(1);
        assert!(clients.admit().is_none());
        assert_eq!(clients.open(), 2);
        drop((b, c));
        assert_eq!(clients.open(), 0);
        assert!(clients.admit().is_some());
    }
}
