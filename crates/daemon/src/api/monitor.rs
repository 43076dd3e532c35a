//! HTTP route of the engine's own monitor (see `oxvirt_api::monitor`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use oxvirt_api::{MonitorAnswer, MonitorCommand};

use super::reply::{body, detached, Reply};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/domains/{id}/monitor", post(monitor_command))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(monitor_command))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/monitor",
    operation_id = "monitor_monitor_command",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = MonitorCommand,
    responses((status = 200, description = "success", body = MonitorAnswer)),
)]
async fn monitor_command(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MonitorAnswer> {
    let request: MonitorCommand = body(&bytes)?;
    detached(services, "qemu-monitor-command", |d| async move {
        d.domains.monitor_command(&id, &request).await
    })
    .await
}
