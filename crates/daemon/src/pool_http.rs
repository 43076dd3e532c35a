//! HTTP routes of storage pools, volumes and `blockresize` (see `oxvirt_api::storage`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oxvirt_api::{
    code, ApiError, AutostartRequest, BlockResizeRequest, BlockResized, CloneVolumeRequest,
    CreateVolumeRequest, PoolInfo, ResizeVolumeRequest, VolumeInfo, XmlDocument,
};

use crate::daemon::{ApiResult, Daemon};
use crate::http::{body, Failure};

type Reply<T> = Result<Json<T>, Failure>;
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

/// Runs file work (image creation, copies) on the blocking pool, in a task a client that hangs
/// up cannot cancel half-way.
async fn blocking<T: Send + 'static>(
    daemon: Arc<Daemon>,
    what: &'static str,
    op: impl FnOnce(&Daemon) -> ApiResult<T> + Send + 'static,
) -> Reply<T> {
    let value = tokio::task::spawn_blocking(move || op(&daemon))
        .await
        .map_err(|e| {
            Failure(ApiError::new(
                code::INTERNAL,
                format!("the {what} operation failed inside the daemon: {e}"),
            ))
        })??;
    Ok(Json(value))
}

async fn list(State(daemon): Shared) -> Reply<Vec<PoolInfo>> {
    Ok(Json(daemon.list_pools()?))
}

async fn define(State(daemon): Shared, bytes: Bytes) -> Reply<PoolInfo> {
    let doc: XmlDocument = body(&bytes)?;
    Ok(Json(daemon.define_pool(&doc.xml)?))
}

async fn info(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    Ok(Json(daemon.pool_info(&pool)?))
}

async fn undefine(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    Ok(Json(daemon.undefine_pool(&pool)?))
}

async fn xml(State(daemon): Shared, Path(pool): Path<String>) -> Reply<XmlDocument> {
    Ok(Json(XmlDocument {
        xml: daemon.pool_xml(&pool)?,
    }))
}

async fn build(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(daemon, "pool-build", move |d| d.build_pool(&pool)).await
}

async fn start(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    Ok(Json(daemon.start_pool(&pool)?))
}

async fn destroy(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    Ok(Json(daemon.destroy_pool(&pool)?))
}

async fn refresh(State(daemon): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    Ok(Json(daemon.refresh_pool(&pool)?))
}

async fn autostart(
    State(daemon): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<PoolInfo> {
    let request: AutostartRequest = body(&bytes)?;
    Ok(Json(daemon.set_pool_autostart(&pool, request.enabled)?))
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
    let operation = tokio::spawn(async move { daemon.block_resize(&id, &request).await });
    let resized = operation.await.map_err(|e| {
        Failure(ApiError::new(
            code::INTERNAL,
            format!("the blockresize operation failed inside the daemon: {e}"),
        ))
    })??;
    Ok(Json(resized))
}
