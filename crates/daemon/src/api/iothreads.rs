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
