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

async fn schedinfo(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<LimitValues> {
    limits(services, id, bytes, LimitKind::Cpu).await
}

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
