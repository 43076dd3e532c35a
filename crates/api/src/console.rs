//! A domain's serial console over the API connection, upgraded (`POST /v1/domains/{id}/console`
//! with `Upgrade: oxvirt-console`): how a client that cannot reach the console's Unix socket (a
//! remote one) reaches it. After the 101 reply the connection carries the console's bytes both
//! ways until either side closes.

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{domain_path, Client, ClientError};

/// The upgrade protocol of `POST /v1/domains/{id}/console`.
pub const CONSOLE_PROTOCOL: &str = "oxvirt-console";

/// An API connection switched to another protocol by a 101 reply ([`Client::upgrade`]): a
/// domain's serial console ([`Client::console_stream`]), a migration's stream
/// (`Client::migration_stream`).
pub type UpgradedStream = TokioIo<hyper::upgrade::Upgraded>;

/// A domain's serial console over an upgraded API connection ([`Client::console_stream`]).
pub type ConsoleStream = UpgradedStream;

impl Client {
    /// `POST /v1/domains/{id}/console` upgraded: the domain's serial console, until either
    /// side closes. (The local CLI connects to the console's socket itself.)
    pub async fn console_stream(&self, id: &str) -> Result<ConsoleStream, ClientError> {
        self.upgrade(&domain_path(id, "/console"), CONSOLE_PROTOCOL, None)
            .await
    }

    /// `POST path` on a fresh connection, asking to switch it to `protocol`: after the 101
    /// reply, the connection itself (any other reply is the error it names). Over TLS its TCP
    /// socket goes through `tcp_socket` first.
    pub(crate) async fn upgrade(
        &self,
        path: &str,
        protocol: &str,
        tcp_socket: Option<&crate::TcpSocketHook>,
    ) -> Result<UpgradedStream, ClientError> {
        let mut response = self
            .send_request(
                Method::POST,
                path,
                Empty::<Bytes>::new(),
                None,
                Some(protocol),
                tcp_socket,
            )
            .await?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = self.reply_body(path, response).await?;
            return Err(self.error_reply(path, status, &bytes));
        }
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| self.protocol(format!("upgrading {path}: {e}")))?;
        Ok(TokioIo::new(upgraded))
    }
}

/// Copies between two streams both ways until either direction ends (one side closed or shut
/// its end), then returns, dropping both: the console relay of oxvirtd and of the remote CLI.
pub async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    tokio::select! {
        _ = tokio::io::copy(&mut a_read, &mut b_write) => {}
        _ = tokio::io::copy(&mut b_read, &mut a_write) => {}
    }
}
