//! How the API's routes reply: the one place where daemon errors become HTTP replies, and the
//! two rules every route follows:
//! - Work that parses, touches SQLite or files runs on the blocking pool ([`blocking`]) or in a
//!   task of its own ([`detached`]), never inline on the async workers: a large definition being
//!   parsed must not make `version` or any other client wait, and a client that hangs up cannot
//!   cancel an operation half-way.
//! - Every error reply is an [`ApiError`] in JSON, also the ones axum makes itself (a body over
//!   [`oxvirt_api::MAX_REQUEST_BYTES`], a path that does not decode): see [`json_errors`].

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oxvirt_api::{code, ApiError};
use serde::de::DeserializeOwned;

use crate::services::error::{DaemonError, DaemonResult, ErrorKind};
use crate::services::Services;

/// An [`ApiError`] as an HTTP reply.
pub(crate) struct Failure(pub(crate) ApiError);

/// Refuses a request that does not ask for its connection to be upgraded to `protocol` (the
/// `Upgrade:` header; the console's and a migration's stream): `lead` says how the route is
/// reached, e.g. "the console is reached by upgrading the connection".
pub(crate) fn require_upgrade(
    request: &Request,
    protocol: &str,
    lead: &str,
) -> Result<(), Failure> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol));
    if upgrade {
        return Ok(());
    }
    Err(Failure(ApiError::new(
        code::BAD_REQUEST,
        format!("{lead}: send 'Connection: upgrade' and 'Upgrade: {protocol}'"),
    )))
}

/// The 101 reply that switches the connection to `protocol`.
pub(crate) fn switching_protocols(protocol: &str) -> Result<Response, Failure> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(axum::body::Body::empty())
        .map_err(|e| Failure(ApiError::new(code::INTERNAL, e.to_string())))
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.0.code, "{}", self.0.message);
        } else {
            tracing::info!(code = %self.0.code, "{}", self.0.message);
        }
        (status, Json(self.0)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        Failure(err)
    }
}

/// The one mapping of daemon errors to the API's error codes (and through them, HTTP statuses).
impl From<DaemonError> for Failure {
    fn from(err: DaemonError) -> Self {
        let code = match err.kind {
            ErrorKind::NotFound => code::NOT_FOUND,
            ErrorKind::InvalidXml => code::INVALID_XML,
            ErrorKind::InvalidName => code::INVALID_NAME,
            ErrorKind::Unsupported => code::UNSUPPORTED,
            ErrorKind::AlreadyExists => code::ALREADY_EXISTS,
            ErrorKind::InvalidState => code::INVALID_STATE,
            ErrorKind::Busy => code::BUSY,
            ErrorKind::Engine => code::ENGINE,
            ErrorKind::Timeout => code::TIMEOUT,
            ErrorKind::BadRequest => code::BAD_REQUEST,
            ErrorKind::Internal => code::INTERNAL,
            ErrorKind::Unavailable => code::UNAVAILABLE,
        };
        Failure(ApiError::new(code, err.message))
    }
}

pub(crate) type Reply<T> = Result<Json<T>, Failure>;

/// Parses a JSON body ourselves, so a bad body gets an [`ApiError`] like everything else.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure(ApiError::new(
            code::BAD_REQUEST,
            format!("the request body is not valid JSON for this endpoint: {e}"),
        ))
    })
}

/// Runs a synchronous daemon operation on the blocking thread pool, in a task a client that
/// hangs up cannot cancel. A panic inside it becomes an `internal` error reply.
pub(crate) async fn blocking<T: Send + 'static>(
    daemon: Arc<Services>,
    what: &'static str,
    op: impl FnOnce(&Services) -> DaemonResult<T> + Send + 'static,
) -> Reply<T> {
    let value = tokio::task::spawn_blocking(move || op(&daemon))
        .await
        .map_err(|e| operation_failed(what, e))??;
    Ok(Json(value))
}

/// Runs an async daemon operation in a task of its own, so a client that hangs up cannot
/// cancel it half-way (a launched guest, a bridge or TAP the store does not know about).
pub(crate) async fn detached<T, F>(
    daemon: Arc<Services>,
    what: &'static str,
    op: impl FnOnce(Arc<Services>) -> F,
) -> Reply<T>
where
    T: Send + 'static,
    F: Future<Output = DaemonResult<T>> + Send + 'static,
{
    let value = tokio::spawn(op(daemon))
        .await
        .map_err(|e| operation_failed(what, e))??;
    Ok(Json(value))
}

fn operation_failed(what: &str, err: tokio::task::JoinError) -> Failure {
    Failure(ApiError::new(
        code::INTERNAL,
        format!("the {what} operation failed inside the daemon: {err}"),
    ))
}

/// Turns the error replies axum produces by itself (plain text: a body over the limit, a path
/// segment that does not decode, a wrong content type) into the API's JSON errors, so a client
/// never has to parse two kinds of failure.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // axum's own rejections are one short sentence; never read more than a little of a body.
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            code::TOO_LARGE,
            format!(
                "the request body is larger than {} bytes",
                oxvirt_api::MAX_REQUEST_BYTES
            ),
        ),
        StatusCode::NOT_FOUND => (code::NOT_FOUND, text),
        s if s.is_client_error() => (code::BAD_REQUEST, text),
        _ => (code::INTERNAL, text),
    };
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message
    };
    (status, Json(ApiError::new(code, message))).into_response()
}
