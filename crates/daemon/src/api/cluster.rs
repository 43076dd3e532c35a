//! HTTP routes of the cluster (see `oxvirt_api::cluster`, services/cluster.rs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use oxvirt_api::{ClusterHosts, DomainSummary, XmlDocument};

use super::reply::{body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/cluster/hosts", get(hosts))
        .route("/v1/cluster/domains", post(define))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(hosts, define))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/cluster/hosts",
    operation_id = "cluster_hosts",
    tag = "cluster",
    responses((status = 200, description = "every member of the cluster, with its state", body = ClusterHosts)),
)]
async fn hosts(State(services): Shared) -> Reply<ClusterHosts> {
    Ok(Json(services.cluster.hosts().await?))
}

#[utoipa::path(
    post,
    path = "/v1/cluster/domains",
    operation_id = "cluster_define",
    tag = "cluster",
    request_body = XmlDocument,
    responses((status = 200, description = "the guest, defined in the cluster (etcd)", body = DomainSummary)),
)]
async fn define(State(services): Shared, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    detached(services, "define --cluster", move |services| async move {
        services.cluster.define(doc.xml).await
    })
    .await
}
