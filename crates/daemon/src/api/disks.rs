//! HTTP routes of disk hotplug and disk statistics (see `oxvirt_api::disks`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use oxvirt_api::{
    AttachDiskRequest, BlockInfo, BlockIoTune, BlockStat, DetachDiskRequest, DeviceRequest,
    DiskChanged, DomainDisk, IoTuneRequest,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/attach-disk", post(attach_disk))
        .route("/v1/domains/{id}/detach-disk", post(detach_disk))
        .route("/v1/domains/{id}/device", post(change_device))
        .route("/v1/domains/{id}/inactive-disks", get(inactive_disks))
        .route("/v1/domains/{id}/blkinfo", get(block_info))
        .route("/v1/domains/{id}/blkstat", get(block_stats))
        .route("/v1/domains/{id}/blkiotune", post(block_io_tune))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    attach_disk,
    detach_disk,
    change_device,
    inactive_disks,
    block_info,
    block_stats,
    block_io_tune
))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/attach-disk",
    operation_id = "disks_attach_disk",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = AttachDiskRequest,
    responses((status = 200, description = "success", body = DiskChanged)),
)]
async fn attach_disk(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DiskChanged> {
    let request: AttachDiskRequest = body(&bytes)?;
    detached(services, "attach-disk", |d| async move {
        d.domains.attach_disk(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/detach-disk",
    operation_id = "disks_detach_disk",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = DetachDiskRequest,
    responses((status = 200, description = "success", body = DiskChanged)),
)]
async fn detach_disk(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DiskChanged> {
    let request: DetachDiskRequest = body(&bytes)?;
    detached(services, "detach-disk", |d| async move {
        d.domains.detach_disk(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/device",
    operation_id = "disks_change_device",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = DeviceRequest,
    responses((status = 200, description = "success", body = DiskChanged)),
)]
async fn change_device(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DiskChanged> {
    let request: DeviceRequest = body(&bytes)?;
    detached(services, "device", |d| async move {
        d.domains.change_device(&id, &request).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/inactive-disks",
    operation_id = "disks_inactive_disks",
    tag = "devices",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<DomainDisk>)),
)]
async fn inactive_disks(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<DomainDisk>> {
    blocking(services, "domblklist", move |s| {
        s.domains.inactive_disks(&id)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/blkinfo",
    operation_id = "disks_block_info",
    tag = "devices",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<BlockInfo>)),
)]
async fn block_info(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<BlockInfo>> {
    detached(services, "domblkinfo", |d| async move {
        d.domains.block_info(&id).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/blkstat",
    operation_id = "disks_block_stats",
    tag = "devices",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<BlockStat>)),
)]
async fn block_stats(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<BlockStat>> {
    detached(services, "domblkstat", |d| async move {
        d.domains.block_stats(&id).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/blkiotune",
    operation_id = "disks_block_io_tune",
    tag = "devices",
    params(super::openapi::DomainPath),
    request_body = IoTuneRequest,
    responses((status = 200, description = "success", body = BlockIoTune)),
)]
async fn block_io_tune(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<BlockIoTune> {
    let request: IoTuneRequest = body(&bytes)?;
    detached(services, "blkdeviotune", |d| async move {
        d.domains.block_io_tune(&id, &request).await
    })
    .await
}
