//! HTTP routes of guest memory (see `oxvirt_api::memory`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use oxvirt_api::{DomainMemoryStats, MemoryChanged, MemoryRequest, StatsPeriodRequest};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/setmem", post(set_memory))
        .route("/v1/domains/{id}/setmaxmem", post(set_max_memory))
        .route("/v1/domains/{id}/memstats", get(memory_stats))
        .route("/v1/domains/{id}/memstats-period", post(stats_period))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(set_memory, set_max_memory, memory_stats, stats_period))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/setmem",
    operation_id = "memory_set_memory",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = MemoryRequest,
    responses((status = 200, description = "success", body = MemoryChanged)),
)]
async fn set_memory(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MemoryChanged> {
    let request: MemoryRequest = body(&bytes)?;
    detached(services, "setmem", |d| async move {
        d.domains.set_memory(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/setmaxmem",
    operation_id = "memory_set_max_memory",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = MemoryRequest,
    responses((status = 200, description = "success", body = MemoryChanged)),
)]
async fn set_max_memory(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MemoryChanged> {
    let request: MemoryRequest = body(&bytes)?;
    blocking(services, "setmaxmem", move |d| {
        d.domains.set_max_memory(&id, &request)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/memstats",
    operation_id = "memory_memory_stats",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = DomainMemoryStats)),
)]
async fn memory_stats(State(services): Shared, Path(id): Path<String>) -> Reply<DomainMemoryStats> {
    detached(services, "dommemstat", |d| async move {
        d.domains.memory_stats(&id).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/memstats-period",
    operation_id = "memory_stats_period",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = StatsPeriodRequest,
    responses((status = 200, description = "success", body = MemoryChanged)),
)]
async fn stats_period(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MemoryChanged> {
    let request: StatsPeriodRequest = body(&bytes)?;
    detached(services, "dommemstat --period", |d| async move {
        d.domains.set_memory_stats_period(&id, &request).await
    })
    .await
}
