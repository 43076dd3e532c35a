//! HTTP routes of storage pools, volumes and `blockresize` (see `oxvirt_api::storage`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::Router;
use oxvirt_api::{
    AutostartRequest, BlockResizeRequest, BlockResized, CloneVolumeRequest, CreateVolumeRequest,
    DomainDisk, PoolInfo, ResizeVolumeRequest, VolumeInfo, XmlDocument,
};

use super::reply::{blocking, body, detached, Failure, Reply};
use crate::services::volumes::UploadChunk;
use crate::services::Services;
type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
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
        .route(
            "/v1/pools/{pool}/volumes/{vol}/data",
            get(download_volume).put(upload_volume),
        )
        .route("/v1/domains/{id}/disks", get(domain_disks))
        .route("/v1/domains/{id}/block-resize", post(block_resize))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list,
    define,
    info,
    undefine,
    xml,
    build,
    start,
    destroy,
    refresh,
    autostart,
    volumes,
    create_volume,
    create_volume_from_xml,
    volume,
    volume_xml,
    delete_volume,
    clone_volume,
    resize_volume,
    upload_volume,
    download_volume,
    domain_disks,
    block_resize
))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/pools",
    operation_id = "pools_list",
    tag = "pools",
    responses((status = 200, description = "success", body = Vec<PoolInfo>)),
)]
async fn list(State(services): Shared) -> Reply<Vec<PoolInfo>> {
    blocking(services, "pool-list", |d| d.pools.list_pools()).await
}

#[utoipa::path(
    post,
    path = "/v1/pools",
    operation_id = "pools_define",
    tag = "pools",
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn define(State(services): Shared, bytes: Bytes) -> Reply<PoolInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "pool-define", move |d| {
        d.pools.define_pool(&doc.xml)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/pools/{pool}",
    operation_id = "pools_info",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn info(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-info", move |d| d.pools.pool_info(&pool)).await
}

#[utoipa::path(
    delete,
    path = "/v1/pools/{pool}",
    operation_id = "pools_undefine",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn undefine(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-undefine", move |d| {
        d.pools.undefine_pool(&pool)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/xml",
    operation_id = "pools_xml",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn xml(State(services): Shared, Path(pool): Path<String>) -> Reply<XmlDocument> {
    blocking(services, "pool-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.pools.pool_xml(&pool)?,
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/build",
    operation_id = "pools_build",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn build(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-build", move |d| d.pools.build_pool(&pool)).await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/start",
    operation_id = "pools_start",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn start(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-start", move |d| d.pools.start_pool(&pool)).await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/destroy",
    operation_id = "pools_destroy",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn destroy(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-destroy", move |d| {
        d.pools.destroy_pool(&pool)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/refresh",
    operation_id = "pools_refresh",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn refresh(State(services): Shared, Path(pool): Path<String>) -> Reply<PoolInfo> {
    blocking(services, "pool-refresh", move |d| {
        d.pools.refresh_pool(&pool)
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/pools/{pool}/autostart",
    operation_id = "pools_autostart",
    tag = "pools",
    params(super::openapi::PoolPath),
    request_body = AutostartRequest,
    responses((status = 200, description = "success", body = PoolInfo)),
)]
async fn autostart(
    State(services): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<PoolInfo> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(services, "pool-autostart", move |d| {
        d.pools.set_pool_autostart(&pool, request.enabled)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/volumes",
    operation_id = "pools_volumes",
    tag = "pools",
    params(super::openapi::PoolPath),
    responses((status = 200, description = "success", body = Vec<VolumeInfo>)),
)]
async fn volumes(State(services): Shared, Path(pool): Path<String>) -> Reply<Vec<VolumeInfo>> {
    blocking(services, "vol-list", move |d| d.volumes.list_volumes(&pool)).await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/volumes",
    operation_id = "pools_create_volume",
    tag = "pools",
    params(super::openapi::PoolPath),
    request_body = CreateVolumeRequest,
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn create_volume(
    State(services): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: CreateVolumeRequest = body(&bytes)?;
    blocking(services, "vol-create", move |d| {
        d.volumes.create_volume(&pool, &request)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/volume-xml",
    operation_id = "pools_create_volume_from_xml",
    tag = "pools",
    params(super::openapi::PoolPath),
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn create_volume_from_xml(
    State(services): Shared,
    Path(pool): Path<String>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "vol-create", move |d| {
        d.volumes.create_volume_from_xml(&pool, &doc.xml)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/volumes/{vol}",
    operation_id = "pools_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<VolumeInfo> {
    blocking(services, "vol-info", move |d| {
        d.volumes.volume_info(&pool, &vol)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/volumes/{vol}/xml",
    operation_id = "pools_volume_xml",
    tag = "pools",
    params(super::openapi::VolumePath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn volume_xml(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<XmlDocument> {
    blocking(services, "vol-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.volumes.volume_xml(&pool, &vol)?,
        })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/pools/{pool}/volumes/{vol}",
    operation_id = "pools_delete_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn delete_volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Reply<VolumeInfo> {
    blocking(services, "vol-delete", move |d| {
        d.volumes.delete_volume(&pool, &vol)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/volumes/{vol}/clone",
    operation_id = "pools_clone_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    request_body = CloneVolumeRequest,
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn clone_volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: CloneVolumeRequest = body(&bytes)?;
    blocking(services, "vol-clone", move |d| {
        d.volumes.clone_volume(&pool, &vol, &request.name)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/volumes/{vol}/resize",
    operation_id = "pools_resize_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    request_body = ResizeVolumeRequest,
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn resize_volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<VolumeInfo> {
    let request: ResizeVolumeRequest = body(&bytes)?;
    blocking(services, "vol-resize", move |d| {
        d.volumes.resize_volume(&pool, &vol, request)
    })
    .await
}

/// vol-upload: the body is streamed to the volume service's writer a few chunks at a time, never
/// held whole (`Body` is not under the JSON bodies' size limit). If the service refuses
/// before the end, the rest of the body is read and dropped, so the client gets the refusal
/// rather than a broken connection.
#[utoipa::path(
    put,
    path = "/v1/pools/{pool}/volumes/{vol}/data",
    operation_id = "pools_upload_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    request_body(content = String, description = "the volume's new bytes", content_type = "application/octet-stream"),
    responses((status = 200, description = "success", body = VolumeInfo)),
)]
async fn upload_volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
    body: axum::body::Body,
) -> Reply<VolumeInfo> {
    use http_body_util::BodyExt;
    let (sender, chunks) = tokio::sync::mpsc::channel(4);
    let writer = tokio::spawn(blocking(services, "vol-upload", move |d| {
        d.volumes.upload_volume(&pool, &vol, chunks)
    }));
    let mut body = body;
    let mut taken = true;
    loop {
        let chunk = match body.frame().await {
            None => UploadChunk::End,
            Some(Err(err)) => UploadChunk::Failed(err.to_string()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => UploadChunk::Data(data),
                Err(_) => continue,
            },
        };
        let last = !matches!(chunk, UploadChunk::Data(_));
        if taken && sender.send(chunk).await.is_err() {
            taken = false;
        }
        if last {
            break;
        }
    }
    drop(sender);
    writer.await.map_err(|err| {
        Failure(oxvirt_api::ApiError::new(
            oxvirt_api::code::INTERNAL,
            format!("the vol-upload operation failed inside the daemon: {err}"),
        ))
    })?
}

/// vol-download: the file's bytes, read on a blocking thread into a streamed body (the read lock
/// goes with the file when the stream ends).
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/volumes/{vol}/data",
    operation_id = "pools_download_volume",
    tag = "pools",
    params(super::openapi::VolumePath),
    responses((
        status = 200,
        description = "the volume's bytes",
        body = String,
        content_type = "application/octet-stream"
    )),
)]
async fn download_volume(
    State(services): Shared,
    Path((pool, vol)): Path<(String, String)>,
) -> Result<axum::response::Response, Failure> {
    let axum::Json((file, length)) = blocking(services, "vol-download", move |d| {
        d.volumes.open_download(&pool, &vol)
    })
    .await?;
    let stream = oxvirt_api::ChannelBody::from_reader(file, length, |_| {});
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .body(axum::body::Body::new(stream))
        .map_err(|err| {
            Failure(oxvirt_api::ApiError::new(
                oxvirt_api::code::INTERNAL,
                format!("cannot build the vol-download reply: {err}"),
            ))
        })
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/disks",
    operation_id = "pools_domain_disks",
    tag = "pools",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<DomainDisk>)),
)]
async fn domain_disks(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<DomainDisk>> {
    blocking(services, "domblklist", move |s| s.domains.disks(&id)).await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/block-resize",
    operation_id = "pools_block_resize",
    tag = "pools",
    params(super::openapi::DomainPath),
    request_body = BlockResizeRequest,
    responses((status = 200, description = "success", body = BlockResized)),
)]
async fn block_resize(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<BlockResized> {
    let request: BlockResizeRequest = body(&bytes)?;
    detached(services, "blockresize", |d| async move {
        d.domains.block_resize(&id, &request).await
    })
    .await
}
