//! HTTP routes of a guest's CPU, memory and block I/O limits (see `oxvirt_api::limits`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use oxvirt_api::{BlkioRequest, BlkioValues, LimitValues, LimitsRequest};

use super::reply::{body, detached, Reply};
use crate::services::cgroups::LimitKind;
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/schedinfo", post(schedinfo))
        .route("/v1/domains/{id}/memtune", post(memtune))
        .route("/v1/domains/{id}/blkio", post(blkiotune))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(blkiotune, schedinfo, memtune))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/blkio",
    operation_id = "limits_blkiotune",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = BlkioRequest,
    responses((status = 200, description = "success", body = BlkioValues)),
)]
async fn blkiotune(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<BlkioValues> {
    let request: BlkioRequest = body(&bytes)?;
    detached(services, "blkiotune", move |d| async move {
        d.domains.blkiotune(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/schedinfo",
    operation_id = "limits_schedinfo",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = LimitsRequest,
    responses((status = 200, description = "success", body = LimitValues)),
)]
async fn schedinfo(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<LimitValues> {
    limits(services, id, bytes, LimitKind::Cpu).await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/memtune",
    operation_id = "limits_memtune",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = LimitsRequest,
    responses((status = 200, description = "success", body = LimitValues)),
)]
async fn memtune(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<LimitValues> {
    limits(services, id, bytes, LimitKind::Memory).await
}

async fn limits(
    services: Arc<Services>,
    id: String,
    bytes: Bytes,
    kind: LimitKind,
) -> Reply<LimitValues> {
    let request: LimitsRequest = body(&bytes)?;
    detached(services, "limits", move |d| async move {
        d.domains.limits(&id, &request, kind).await
    })
    .await
}
