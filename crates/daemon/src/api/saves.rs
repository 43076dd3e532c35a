//! HTTP routes of saved machine states (see `oxvirt_api::save`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use oxvirt_api::{
    DomainSummary, ManagedSaveRequest, RestoreRequest, SaveImageRequest, SaveRequest, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/save", post(save))
        .route(
            "/v1/domains/{id}/managed-save",
            post(managed_save).delete(managed_save_remove),
        )
        .route("/v1/restore", post(restore))
        .route("/v1/save-image/xml", post(save_image_xml))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(save, managed_save, managed_save_remove, restore, save_image_xml))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/save",
    operation_id = "saves_save",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = SaveRequest,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn save(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: SaveRequest = body(&bytes)?;
    detached(services, "save", |d| async move {
        d.domains.save(&id, &request.file, request.after).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/managed-save",
    operation_id = "saves_managed_save",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = Option<ManagedSaveRequest>,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn managed_save(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    // The body is optional: without one the image records the guest's state as it is.
    let request: ManagedSaveRequest = if bytes.is_empty() {
        ManagedSaveRequest::default()
    } else {
        body(&bytes)?
    };
    detached(services, "managedsave", |d| async move {
        d.domains.managed_save(&id, request.after).await
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/domains/{id}/managed-save",
    operation_id = "saves_managed_save_remove",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn managed_save_remove(
    State(services): Shared,
    Path(id): Path<String>,
) -> Reply<DomainSummary> {
    blocking(services, "managedsave-remove", move |d| {
        d.domains.managed_save_remove(&id)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/restore",
    operation_id = "saves_restore",
    tag = "domains",
    request_body = RestoreRequest,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn restore(State(services): Shared, bytes: Bytes) -> Reply<DomainSummary> {
    let request: RestoreRequest = body(&bytes)?;
    detached(services, "restore", |d| async move {
        d.domains.restore(&request.file, request.after).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/save-image/xml",
    operation_id = "saves_save_image_xml",
    tag = "domains",
    request_body = SaveImageRequest,
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn save_image_xml(State(services): Shared, bytes: Bytes) -> Reply<XmlDocument> {
    let request: SaveImageRequest = body(&bytes)?;
    blocking(services, "save-image-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.domains.save_image_xml(&request.file)?,
        })
    })
    .await
}
