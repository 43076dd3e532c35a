//! HTTP routes of the cluster (see `oxvirt_api::cluster`, services/cluster.rs).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use oxvirt_api::ClusterHosts;

use super::reply::Reply;
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/cluster/hosts", get(hosts))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(hosts))]
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
