//! Routes of domain snapshots (see `oxvirt_api::snapshot`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use oxvirt_api::{
    CreateSnapshot, DeleteSnapshot, DomainSummary, RevertSnapshot, SnapshotSummary, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/snapshots", get(list).post(create))
        .route(
            "/v1/domains/{id}/snapshots/{name}/xml",
            get(xml).put(replace_xml),
        )
        .route("/v1/domains/{id}/snapshots/{name}/revert", post(revert))
        .route("/v1/domains/{id}/snapshots/{name}/delete", post(delete))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, xml, replace_xml, revert, delete))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/snapshots",
    operation_id = "snapshots_list",
    tag = "snapshots",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<SnapshotSummary>)),
)]
async fn list(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<SnapshotSummary>> {
    blocking(services, "snapshot-list", move |d| {
        d.domains.list_snapshots(&id)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/snapshots",
    operation_id = "snapshots_create",
    tag = "snapshots",
    params(super::openapi::DomainPath),
    request_body = CreateSnapshot,
    responses((status = 200, description = "success", body = SnapshotSummary)),
)]
async fn create(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<SnapshotSummary> {
    let request: CreateSnapshot = body(&bytes)?;
    detached(services, "snapshot-create", |d| async move {
        d.domains.create_snapshot(&id, &request).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/snapshots/{name}/xml",
    operation_id = "snapshots_xml",
    tag = "snapshots",
    params(super::openapi::SnapshotPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn xml(
    State(services): Shared,
    Path((id, name)): Path<(String, String)>,
) -> Reply<XmlDocument> {
    blocking(services, "snapshot-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.domains.snapshot_xml(&id, &name)?,
        })
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/domains/{id}/snapshots/{name}/xml",
    operation_id = "snapshots_replace_xml",
    tag = "snapshots",
    params(super::openapi::SnapshotPath),
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = SnapshotSummary)),
)]
async fn replace_xml(
    State(services): Shared,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<SnapshotSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "snapshot-edit", move |d| {
        d.domains.replace_snapshot_xml(&id, &name, &doc.xml)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/snapshots/{name}/revert",
    operation_id = "snapshots_revert",
    tag = "snapshots",
    params(super::openapi::SnapshotPath),
    request_body = RevertSnapshot,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn revert(
    State(services): Shared,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: RevertSnapshot = body(&bytes)?;
    detached(services, "snapshot-revert", |d| async move {
        d.domains.revert_snapshot(&id, &name, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/snapshots/{name}/delete",
    operation_id = "snapshots_delete",
    tag = "snapshots",
    params(super::openapi::SnapshotPath),
    request_body = DeleteSnapshot,
    responses((status = 200, description = "success", body = Vec<String>)),
)]
async fn delete(
    State(services): Shared,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<Vec<String>> {
    let request: DeleteSnapshot = body(&bytes)?;
    detached(services, "snapshot-delete", |d| async move {
        d.domains.delete_snapshot(&id, &name, &request).await
    })
    .await
}
