//! The browser's consoles, over WebSockets on the TLS listener (docs/remote.md):
//! - `GET /v1/domains/{id}/console/ws`: the serial console, its bytes in binary frames both ways
//!   (text frames from the browser count as their bytes);
//! - `GET /v1/domains/{id}/vnc/ws`: the graphical console, RFB in binary frames (noVNC's
//!   `binary` subprotocol), to a client connection oxvirtd opened on the guest's VNC server
//!   itself (services/display.rs `open_vnc`), so no VNC port is reached or exposed.
//!
//! Both are writes to the guest (admin role) and refuse a foreign Origin before the upgrade
//! (api/auth.rs); a domain that does not exist is 404 and one not running 409, also before it.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use oxvirt_api::{code, ApiError};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::reply::Failure;
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/console/ws", get(console))
        .route("/v1/domains/{id}/vnc/ws", get(vnc))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(console, vnc))]
pub(super) struct Doc;

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// The upgrade, or a JSON error naming what a WebSocket request lacked.
fn upgrade(upgrade: Upgrade) -> Result<WebSocketUpgrade, Failure> {
    upgrade.map_err(|rejection| {
        Failure(ApiError::new(
            code::BAD_REQUEST,
            format!("this endpoint is a WebSocket: {rejection}"),
        ))
    })
}

/// The serial console as a WebSocket (binary frames both ways).
#[utoipa::path(
    get,
    path = "/v1/domains/{id}/console/ws",
    operation_id = "websocket_console",
    tag = "browser",
    params(super::openapi::DomainPath),
    responses((status = 101, description = "switched to the WebSocket protocol")),
)]
async fn console(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    ws: Upgrade,
) -> Result<Response, Failure> {
    let (name, stream) = super::console::connect(services, id).await?;
    let ws = upgrade(ws)?;
    Ok(ws
        .protocols(["binary"])
        .on_upgrade(move |socket| relay(socket, stream, name, "serial console"))
        .into_response())
}

/// The graphical console as a WebSocket (RFB in binary frames, subprotocol `binary`).
#[utoipa::path(
    get,
    path = "/v1/domains/{id}/vnc/ws",
    operation_id = "websocket_vnc",
    tag = "browser",
    params(super::openapi::DomainPath),
    responses((status = 101, description = "switched to the WebSocket protocol")),
)]
async fn vnc(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    ws: Upgrade,
) -> Result<Response, Failure> {
    let ws = upgrade(ws)?;
    let domain = id.clone();
    let stream = tokio::spawn(async move { services.domains.open_vnc(&id).await })
        .await
        .map_err(|e| {
            Failure(ApiError::new(
                code::INTERNAL,
                format!("opening the graphical console failed inside the daemon: {e}"),
            ))
        })??;
    let stream = stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
        .map_err(|e| {
            Failure(ApiError::new(
                code::INTERNAL,
                format!("the graphical console's socket of domain '{domain}': {e}"),
            ))
        })?;
    Ok(ws
        .protocols(["binary"])
        .on_upgrade(move |socket| relay(socket, stream, domain, "graphical console"))
        .into_response())
}

/// Copies bytes both ways between the WebSocket and `stream` until either side ends.
async fn relay<S>(mut socket: WebSocket, stream: S, domain: String, what: &'static str)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = vec![0u8; 64 * 1024];
    let ended = loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) => break "the guest's side closed".to_string(),
                Ok(n) => {
                    let frame = Message::Binary(axum::body::Bytes::copy_from_slice(&buffer[..n]));
                    if let Err(err) = socket.send(frame).await {
                        break format!("sending to the browser: {err}");
                    }
                }
                Err(err) => break format!("reading the guest's side: {err}"),
            },
            message = socket.recv() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Text(text))) => axum::body::Bytes::from(text.as_str().to_owned()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break "the browser closed".to_string(),
                    Some(Err(err)) => break format!("reading from the browser: {err}"),
                };
                if let Err(err) = writer.write_all(&bytes).await {
                    break format!("writing to the guest's side: {err}");
                }
            }
        }
    };
    tracing::info!(%domain, "{what} WebSocket ended: {ended}");
    let _ = socket.send(Message::Close(None)).await;
}
