//! HTTP routes of live migration (see `oxvirt_api::migration`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::Router;
use oxvirt_api::{
    DomainSummary, JobInfo, MigrateRequest, MigrationAborted, MigrationSettings, PrepareMigration,
    PreparedMigration,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/migrate", post(migrate))
        .route("/v1/domains/{id}/job", get(job_info))
        .route("/v1/domains/{id}/job/abort", post(job_abort))
        .route(
            "/v1/domains/{id}/migration-settings",
            get(settings).put(set_settings),
        )
        .route("/v1/migrations", post(prepare))
        .route("/v1/migrations/{id}/finish", post(finish))
        .route("/v1/migrations/{id}", delete(abort))
}

async fn migrate(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: MigrateRequest = body(&bytes)?;
    detached(services, "migrate", |d| async move {
        d.domains.migrate(&id, &request).await
    })
    .await
}

async fn job_info(State(services): Shared, Path(id): Path<String>) -> Reply<JobInfo> {
    blocking(services, "domjobinfo", move |d| d.domains.job_info(&id)).await
}

async fn job_abort(State(services): Shared, Path(id): Path<String>) -> Reply<JobInfo> {
    blocking(services, "domjobabort", move |d| d.domains.job_abort(&id)).await
}

async fn settings(State(services): Shared, Path(id): Path<String>) -> Reply<MigrationSettings> {
    detached(services, "migrate-getspeed", |d| async move {
        d.domains.migration_settings(&id).await
    })
    .await
}

async fn set_settings(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MigrationSettings> {
    let request: MigrationSettings = body(&bytes)?;
    detached(services, "migrate-setmaxdowntime", |d| async move {
        d.domains.set_migration_settings(&id, &request).await
    })
    .await
}

async fn prepare(State(services): Shared, bytes: Bytes) -> Reply<PreparedMigration> {
    let request: PrepareMigration = body(&bytes)?;
    detached(services, "migration prepare", |d| async move {
        d.domains.prepare_incoming(&request).await
    })
    .await
}

async fn finish(State(services): Shared, Path(id): Path<String>) -> Reply<DomainSummary> {
    detached(services, "migration finish", |d| async move {
        d.domains.finish_incoming(&id).await
    })
    .await
}

async fn abort(State(services): Shared, Path(id): Path<String>) -> Reply<MigrationAborted> {
    detached(services, "migration abort", |d| async move {
        d.domains
            .abort_incoming(&id)
            .await
            .map(|()| MigrationAborted {})
    })
    .await
}
