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

async fn domain_stats(State(services): State<Arc<Services>>, bytes: Bytes) -> Reply<DomainsStats> {
    let request: StatsRequest = body(&bytes)?;
    detached(services, "domstats", |d| async move {
        d.domains.domain_stats(&request).await
    })
    .await
}
