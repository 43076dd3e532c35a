//! HTTP routes of graphical consoles and removable media (see `oxvirt_api::display`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use oxvirt_api::{
    ChangeMediaRequest, DisplaysRequest, GraphicsDisplay, KeysSent, MediaChanged, Screenshot,
    ScreenshotRequest, SendKeyRequest,
};

use super::reply::{body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/displays", post(displays))
        .route("/v1/domains/{id}/screenshot", post(screenshot))
        .route("/v1/domains/{id}/send-key", post(send_key))
        .route("/v1/domains/{id}/change-media", post(change_media))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(displays, screenshot, send_key, change_media))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/displays",
    operation_id = "display_displays",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = DisplaysRequest,
    responses((status = 200, description = "success", body = Vec<GraphicsDisplay>)),
)]
async fn displays(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<Vec<GraphicsDisplay>> {
    let request: DisplaysRequest = body(&bytes)?;
    detached(services, "domdisplay", |d| async move {
        d.domains.displays(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/screenshot",
    operation_id = "display_screenshot",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = ScreenshotRequest,
    responses((status = 200, description = "success", body = Screenshot)),
)]
async fn screenshot(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<Screenshot> {
    let request: ScreenshotRequest = body(&bytes)?;
    detached(services, "screenshot", |d| async move {
        d.domains.screenshot(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/send-key",
    operation_id = "display_send_key",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = SendKeyRequest,
    responses((status = 200, description = "success", body = KeysSent)),
)]
async fn send_key(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<KeysSent> {
    let request: SendKeyRequest = body(&bytes)?;
    detached(services, "send-key", |d| async move {
        d.domains.send_key(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/change-media",
    operation_id = "display_change_media",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = ChangeMediaRequest,
    responses((status = 200, description = "success", body = MediaChanged)),
)]
async fn change_media(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MediaChanged> {
    let request: ChangeMediaRequest = body(&bytes)?;
    detached(services, "change-media", |d| async move {
        d.domains.change_media(&id, &request).await
    })
    .await
}
