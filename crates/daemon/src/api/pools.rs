//! HTTP routes of storage pools, volumes and `blockresize` (see `oxvirt_api::storage`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::Router;
use oxvirt_api::{
    AutostartRequest, BlockResizeRequest, BlockResized, CloneVolumeRequest, CreateVolumeRequest,
    PoolInfo, ResizeVolumeRequest, VolumeInfo, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::daemon::Daemon;
type Shared = State<Arc<Daemon>>;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/v1/pools", get(list).post(define))
        .route("/v1/pools/{pool}", get(info).delete(undefine))
        .route("/v1/pools/{pool}/xml", get(xml))
        .route("/v1/pools/{pool}/build", post(build))
        .route("/v1/pools/{pool}/start", post(start))
        .route("/v1/pools/{pool}/destroy", post(destroy))
        .route("/v1/pools/{pool}/refresh", post(refresh))
        .route("/v1/pools/{pool}/autostart", put(autostart))
        .route("/v1/pools/{pool}/volumes", get(volumes).post(create_volume))
        .route("/v1/pools/{pool}/volume-xml", post(create_volume_from_xml))
        .route(
            "/v1/pools/{pool}/volumes/{vol}",
            get(volume).delete(delete_volume),
        )
        .route("/v1/pools/{pool}/volumes/{vol}/xml", get(volume_xml))
        .route("/v1/pools/{pool}/volumes/{vol}/clone", post(clone_volume))
        .route("/v1/pools/{pool}/volumes/{vol}/resize", post(resize_volume))
        .route("/v1/domains/{id}/block-resize", post(block_resize))
}

async fn list(State(daemon): Shared) -> Reply<Vec<PoolInfo>> {
    blocking(daemon, "pool-list", |d| d.list_pools()).await
}

async fn define(State(daemon): Shared, bytes: Bytes) -> Reply<PoolInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "pool-define", move |d| d.define_pool(&doc.xml)).await
}

async fn info(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-info", move |d| d.pool_info(&pool)).await
}

async fn undefine(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-undefine", move |d| d.undefine_pool(&pool)).await
}

async fn xml(State(daemon): Shared, Path(pool): Path<String>) -> Reply<XmlDocument> {
    blocking(daemon, "pool-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.pool_xml(&pool)?,
        })
    })
    .await
}

async fn build(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-build", move |d| d.build_pool(&pool)).await
}

async fn start(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-start", move |d| d.start_pool(&pool)).await
}

async fn destroy(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-destroy", move |d| d.destroy_pool(&pool)).await
}

async fn refresh(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-refresh", move |d| d.refresh_pool(&pool)).await
}

async fn autostart(
    State(daemon): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<PoolInfo> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(daemon, "pool-autostart", move |d| {
        d.set_pool_autostart(&pool, request.enabled)
    })
    .await
}

async fn volumes(State(daemon): Shared, Path(pool): Path<String>) -> Reply<Vec<VolumeInfo>> {
    blocking(daemon, "vol-list", move |d| d.list_volumes(&pool)).await
}

async fn create_volume(
    State(daemon): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: CreateVolumeRequest = body(&bytes)?;
    blocking(daemon, "vol-create", move |d| {
        d.create_volume(&pool, &request)
    })
    .await
}

async fn create_volume_from_xml(
    State(daemon): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "vol-create", move |d| {
        d.create_volume_from_xml(&pool, &doc.xml)
    })
    .await
}

async fn volume(
    State(daemon): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<VolumeInfo> {
    blocking(daemon, "vol-info", move |d| d.volume_info(&pool, &vol)).await
}

async fn volume_xml(
    State(daemon): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<XmlDocument> {
    blocking(daemon, "vol-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.volume_xml(&pool, &vol)?,
        })
    })
    .await
}

async fn delete_volume(
    State(daemon): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<VolumeInfo> {
    blocking(daemon, "vol-delete", move |d| d.delete_volume(&pool, &vol)).await
}

async fn clone_volume(
    State(daemon): Shared,
    Path((pool, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: CloneVolumeRequest = body(&bytes)?;
    blocking(daemon, "vol-clone", move |d| {
        d.clone_volume(&pool, &vol, &request.name)
    })
    .await
}

async fn resize_volume(
    State(daemon): Shared,
    Path((pool, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: ResizeVolumeRequest = body(&bytes)?;
    blocking(daemon, "vol-resize", move |d| {
        d.resize_volume(&pool, &vol, request)
    })
    .await
}

async fn block_resize(
    State(daemon): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<BlockResized> {
    let request: BlockResizeRequest = body(&bytes)?;
    detached(daemon, "blockresize", |d| async move {
        d.block_resize(&id, &request).await
    })
    .await
}
