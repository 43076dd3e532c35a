//! HTTP routes of IOThreads (see `oxvirt_api::iothreads`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use oxvirt_api::{
    IoThreadInfo, IoThreadPinRequest, IoThreadRequest, IoThreadScope, IoThreadsChanged,
};

use super::reply::{body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/iothreadinfo", post(iothread_info))
        .route("/v1/domains/{id}/iothreadpin", post(iothread_pin))
        .route("/v1/domains/{id}/iothreadadd", post(iothread_add))
        .route("/v1/domains/{id}/iothreaddel", post(iothread_del))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(iothread_info, iothread_pin, iothread_add, iothread_del))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/iothreadinfo",
    operation_id = "iothreads_iothread_info",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = IoThreadScope,
    responses((status = 200, description = "success", body = IoThreadInfo)),
)]
async fn iothread_info(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<IoThreadInfo> {
    let scope: IoThreadScope = body(&bytes)?;
    detached(services, "iothreadinfo", |d| async move {
        d.domains.iothread_info(&id, &scope).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/iothreadpin",
    operation_id = "iothreads_iothread_pin",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = IoThreadPinRequest,
    responses((status = 200, description = "success", body = IoThreadsChanged)),
)]
async fn iothread_pin(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<IoThreadsChanged> {
    let request: IoThreadPinRequest = body(&bytes)?;
    detached(services, "iothreadpin", |d| async move {
        d.domains.iothread_pin(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/iothreadadd",
    operation_id = "iothreads_iothread_add",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = IoThreadRequest,
    responses((status = 200, description = "success", body = IoThreadsChanged)),
)]
async fn iothread_add(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<IoThreadsChanged> {
    let request: IoThreadRequest = body(&bytes)?;
    detached(services, "iothreadadd", |d| async move {
        d.domains.iothread_add(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/iothreaddel",
    operation_id = "iothreads_iothread_del",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = IoThreadRequest,
    responses((status = 200, description = "success", body = IoThreadsChanged)),
)]
async fn iothread_del(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<IoThreadsChanged> {
    let request: IoThreadRequest = body(&bytes)?;
    detached(services, "iothreaddel", |d| async move {
        d.domains.iothread_del(&id, &request).await
    })
    .await
}
