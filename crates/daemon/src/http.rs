//! The HTTP face of the daemon: routes of the oxvirt API (see the `oxvirt-api` crate).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oxvirt_api::{
    code, Action, ApiError, AutostartRequest, DomainInfo, DomainSummary, ShutdownRequest,
    VersionInfo, XmlDocument,
};
use serde::de::DeserializeOwned;

use crate::daemon::Daemon;

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

type Reply<T> = Result<Json<T>, Failure>;

/// Parses a JSON body ourselves, so a bad body gets an [`ApiError`] like everything else.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure(ApiError::new(
            code::BAD_REQUEST,
            format!("the request body is not valid JSON for this endpoint: {e}"),
        ))
    })
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
    Ok(Json(daemon.list()?))
}

async fn define(State(daemon): State<Arc<Daemon>>, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    Ok(Json(daemon.define(&doc.xml)?))
}

async fn info(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<DomainInfo> {
    Ok(Json(daemon.info(&id)?))
}

async fn undefine(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Reply<DomainSummary> {
    Ok(Json(daemon.undefine(&id)?))
}

async fn xml(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<XmlDocument> {
    Ok(Json(XmlDocument {
        xml: daemon.xml(&id)?,
    }))
}

async fn replace_xml(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    Ok(Json(daemon.replace_xml(&id, &doc.xml)?))
}

async fn autostart(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: AutostartRequest = body(&bytes)?;
    Ok(Json(daemon.set_autostart(&id, request.enabled)?))
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
    // Run the operation in its own task: a client that hangs up must not cancel a start
    // half-way (a launched guest the store does not know about).
    let operation = tokio::spawn(async move {
        match action {
            Action::Start => daemon.start(&id).await,
            Action::Shutdown => daemon.shutdown(&id, timeout_secs).await,
            Action::Destroy => daemon.destroy(&id).await,
            Action::Reboot => daemon.reboot(&id).await,
            Action::Reset => daemon.reset(&id).await,
            Action::Suspend => daemon.suspend(&id).await,
            Action::Resume => daemon.resume(&id).await,
        }
    });
    let summary = operation.await.map_err(|e| {
        Failure(ApiError::new(
            code::INTERNAL,
            format!("the {action} operation failed inside the daemon: {e}"),
        ))
    })??;
    Ok(Json(summary))
}
