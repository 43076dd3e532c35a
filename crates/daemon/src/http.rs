//! The HTTP face of the daemon: routes of the oxvirt API (see the `oxvirt-api` crate).
//!
//! Two rules hold for every route:
//! - Work that parses, touches SQLite or files runs on the blocking pool ([`blocking`]) or in a
//!   task of its own ([`detached`]), never inline on the async workers: a large definition being
//!   parsed must not make `version` or any other client wait, and a client that hangs up cannot
//!   cancel an operation half-way.
//! - Every error reply is an [`ApiError`] in JSON, also the ones axum makes itself (a body over
//!   [`oxvirt_api::MAX_REQUEST_BYTES`], a path that does not decode): see [`json_errors`].

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oxvirt_api::{
    code, Action, ApiError, AutostartRequest, DomainInfo, DomainSummary, ShutdownRequest,
    VersionInfo, XmlDocument,
};
use serde::de::DeserializeOwned;

use crate::daemon::{ApiResult, Daemon};

/// An [`ApiError`] as an HTTP reply.
pub(crate) struct Failure(pub(crate) ApiError);

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
    daemon: Arc<Daemon>,
    what: &'static str,
    op: impl FnOnce(&Daemon) -> ApiResult<T> + Send + 'static,
) -> Reply<T> {
    let value = tokio::task::spawn_blocking(move || op(&daemon))
        .await
        .map_err(|e| operation_failed(what, e))??;
    Ok(Json(value))
}

/// Runs an async daemon operation in a task of its own, so a client that hangs up cannot
/// cancel it half-way (a launched guest, a bridge or TAP the store does not know about).
pub(crate) async fn detached<T, F>(
    daemon: Arc<Daemon>,
    what: &'static str,
    op: impl FnOnce(Arc<Daemon>) -> F,
) -> Reply<T>
where
    T: Send + 'static,
    F: Future<Output = ApiResult<T>> + Send + 'static,
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
async fn json_errors(request: Request, next: Next) -> Response {
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

pub fn router(daemon: Arc<Daemon>) -> Router {
    let mut router = Router::new()
        .route("/v1/version", get(version))
        .route("/v1/domains", get(list).post(define))
        .route("/v1/domains/{id}", get(info).delete(undefine))
        .route("/v1/domains/{id}/xml", get(xml).put(replace_xml))
        .route("/v1/domains/{id}/autostart", put(autostart));
    for action in Action::ALL {
        router = router.route(
            &format!("/v1/domains/{{id}}/{}", action.as_str()),
            post(move |state, path, bytes| lifecycle(state, path, bytes, action)),
        );
    }
    router
        .merge(crate::net_http::routes())
        .merge(crate::pool_http::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(oxvirt_api::MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(json_errors))
        .with_state(daemon)
}

async fn method_not_allowed() -> Response {
    let error = ApiError::new(
        code::BAD_REQUEST,
        "this API endpoint does not accept that HTTP method",
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}

async fn not_found() -> Failure {
    Failure(ApiError::new(
        code::NOT_FOUND,
        "no such API endpoint (this daemon speaks API version 1 under /v1/)",
    ))
}

async fn version(State(daemon): State<Arc<Daemon>>) -> Json<VersionInfo> {
    Json(daemon.version())
}

async fn list(State(daemon): State<Arc<Daemon>>) -> Reply<Vec<DomainSummary>> {
    blocking(daemon, "list", |d| d.list()).await
}

async fn define(State(daemon): State<Arc<Daemon>>, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "define", move |d| d.define(&doc.xml)).await
}

async fn info(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<DomainInfo> {
    blocking(daemon, "dominfo", move |d| d.info(&id)).await
}

async fn undefine(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Reply<DomainSummary> {
    blocking(daemon, "undefine", move |d| d.undefine(&id)).await
}

async fn xml(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<XmlDocument> {
    blocking(daemon, "dumpxml", move |d| {
        Ok(XmlDocument { xml: d.xml(&id)? })
    })
    .await
}

async fn replace_xml(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "edit", move |d| d.replace_xml(&id, &doc.xml)).await
}

async fn autostart(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(daemon, "autostart", move |d| {
        d.set_autostart(&id, request.enabled)
    })
    .await
}

async fn lifecycle(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
    action: Action,
) -> Reply<DomainSummary> {
    let timeout_secs = match action {
        Action::Shutdown if !bytes.is_empty() => body::<ShutdownRequest>(&bytes)?.timeout_secs,
        _ => None,
    };
    detached(daemon, action.as_str(), move |daemon| async move {
        match action {
            Action::Start => daemon.start(&id).await,
            Action::Shutdown => daemon.shutdown(&id, timeout_secs).await,
            Action::Destroy => daemon.destroy(&id).await,
            Action::Reboot => daemon.reboot(&id).await,
            Action::Reset => daemon.reset(&id).await,
            Action::Suspend => daemon.suspend(&id).await,
            Action::Resume => daemon.resume(&id).await,
        }
    })
    .await
}
