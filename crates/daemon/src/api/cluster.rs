//! HTTP routes of the cluster (see `oxvirt_api::cluster`, services/cluster.rs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use oxvirt_api::{ClusterHosts, DomainSummary, MigrationTargets, XmlDocument};

use super::reply::{body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/cluster/hosts", get(hosts))
        .route("/v1/cluster/domains", post(define))
        .route("/v1/domains/{id}/migration-targets", get(migration_targets))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(hosts, define, migration_targets))]
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

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/migration-targets",
    operation_id = "cluster_migration_targets",
    tag = "cluster",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "the members the running guest can migrate to, best first (placement rules)", body = MigrationTargets)),
)]
async fn migration_targets(
    State(services): Shared,
    Path(id): Path<String>,
) -> Reply<MigrationTargets> {
    detached(services, "migration targets", move |services| async move {
        services.cluster.migration_targets(&id).await
    })
    .await
}
