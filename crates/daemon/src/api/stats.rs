//! HTTP route of domain statistics (see `oxvirt_api::stats`). Not under `/v1/domains/`, where
//! any segment is a domain's name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use oxvirt_api::{DomainsStats, StatsRequest};

use super::reply::{body, detached, Reply};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/domain-stats", post(domain_stats))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(domain_stats))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domain-stats",
    operation_id = "stats_domain_stats",
    tag = "domains",
    request_body = StatsRequest,
    responses((status = 200, description = "success", body = DomainsStats)),
)]
async fn domain_stats(State(services): State<Arc<Services>>, bytes: Bytes) -> Reply<DomainsStats> {
    let request: StatsRequest = body(&bytes)?;
    detached(services, "domstats", |d| async move {
        d.domains.domain_stats(&request).await
    })
    .await
}
