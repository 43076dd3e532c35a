//! HTTP routes of live migration (see `oxvirt_api::migration`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::Router;
use oxvirt_api::{
    DomainSummary, FinishMigration, JobInfo, MigrateRequest, MigrationAborted, MigrationSettings,
    PrepareMigration, PreparedMigration, MIGRATION_PROTOCOL,
};

use super::auth::{Local, Peer};
use super::reply::{
    blocking, body, detached, require_upgrade, switching_protocols, Failure, Reply,
};
use crate::services::migration_tcp::RemoteSource;
use crate::services::Services;

type Shared = State<Arc<Services>>;

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    migrate,
    job_info,
    job_abort,
    job_postcopy,
    settings,
    set_settings,
    prepare,
    stream,
    finish,
    abort
))]
pub(super) struct Doc;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/migrate", post(migrate))
        .route("/v1/domains/{id}/job", get(job_info))
        .route("/v1/domains/{id}/job/abort", post(job_abort))
        .route("/v1/domains/{id}/job/postcopy", post(job_postcopy))
        .route(
            "/v1/domains/{id}/migration-settings",
            get(settings).put(set_settings),
        )
        .route("/v1/migrations", post(prepare))
        .route("/v1/migrations/{id}/stream", post(stream))
        .route("/v1/migrations/{id}/finish", post(finish))
        .route("/v1/migrations/{id}", delete(abort))
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/migrate",
    operation_id = "migration_migrate",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = MigrateRequest,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn migrate(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let mut request: MigrateRequest = body(&bytes)?;
    detached(services, "migrate", |d| async move {
        // A cluster guest's lock moves with it (docs/cluster.md).
        let cluster_lock = d.cluster.source_lock(&id).await?;
        if request.offline {
            if cluster_lock.is_some() {
                return Err(crate::services::error::bad_request(format!(
                    "domain '{id}' is a cluster guest: its definition lives in the cluster's etcd, so --offline has nothing to move"
                )));
            }
            return d.domains.migrate_offline(&id, &request).await;
        }
        // The cluster's definition is the only one: the local copy does not stay here.
        if cluster_lock.is_some() {
            request.undefine_source = true;
        }
        // A native guest's destination does not compare QEMU's CPUs (migration_cpu.rs), and
        // a native host may have no QEMU to describe them.
        let source_cpu = if d.domains.runs_natively(&id)? {
            None
        } else {
            Some(d.cpu_description().await?)
        };
        d.domains
            .migrate(&id, &request, source_cpu, cluster_lock)
            .await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/job",
    operation_id = "migration_job_info",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = JobInfo)),
)]
async fn job_info(State(services): Shared, Path(id): Path<String>) -> Reply<JobInfo> {
    blocking(services, "domjobinfo", move |d| d.domains.job_info(&id)).await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/job/abort",
    operation_id = "migration_job_abort",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = JobInfo)),
)]
async fn job_abort(State(services): Shared, Path(id): Path<String>) -> Reply<JobInfo> {
    blocking(services, "domjobabort", move |d| d.domains.job_abort(&id)).await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/job/postcopy",
    operation_id = "migration_job_postcopy",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = JobInfo)),
)]
async fn job_postcopy(State(services): Shared, Path(id): Path<String>) -> Reply<JobInfo> {
    detached(services, "migrate-postcopy", |d| async move {
        d.domains.start_postcopy(&id).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/migration-settings",
    operation_id = "migration_settings",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = MigrationSettings)),
)]
async fn settings(State(services): Shared, Path(id): Path<String>) -> Reply<MigrationSettings> {
    detached(services, "migrate-getspeed", |d| async move {
        d.domains.migration_settings(&id).await
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/domains/{id}/migration-settings",
    operation_id = "migration_set_settings",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = MigrationSettings,
    responses((status = 200, description = "success", body = MigrationSettings)),
)]
async fn set_settings(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<MigrationSettings> {
    let request: MigrationSettings = body(&bytes)?;
    detached(services, "migration settings", |d| async move {
        d.domains.set_migration_settings(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/migrations",
    operation_id = "migration_prepare",
    tag = "migrations",
    request_body = PrepareMigration,
    responses((status = 200, description = "success", body = PreparedMigration)),
)]
async fn prepare(
    State(services): Shared,
    peer: Option<Extension<Peer>>,
    local: Option<Extension<Local>>,
    bytes: Bytes,
) -> Reply<PreparedMigration> {
    let request: PrepareMigration = body(&bytes)?;
    // Over the TLS API the source is another host: the stream comes over TCP, from its address.
    let remote = match (peer, local) {
        (Some(Extension(Peer(source))), Some(Extension(Local(local)))) => {
            Some(RemoteSource { source, local })
        }
        _ => None,
    };
    detached(services, "migration prepare", |d| async move {
        // Before anything moves or is defined here.
        d.check_incoming_cpu(&request).await?;
        // A cluster guest comes only to a member of its cluster.
        let cluster_lock = d.cluster.incoming_lock(&request).await?;
        d.domains
            .prepare_incoming(&request, remote, cluster_lock)
            .await
    })
    .await
}

/// `--tunnelled`: the source's connection becomes the migration stream of the prepared migration
/// `id` (services/migration_tunnel.rs). A write (POST), so only an admin may, as the prepare;
/// once per migration (a second request is refused, 409).
#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/stream",
    operation_id = "migration_stream",
    tag = "migrations",
    params(super::openapi::MigrationPath),
    responses((
        status = 101,
        description = "switched to the migration stream (the request must carry `Connection: upgrade` and `Upgrade: oxvirt-migration`; the migration must have been prepared tunnelled)"
    )),
)]
async fn stream(
    State(services): Shared,
    Path(id): Path<String>,
    mut request: Request,
) -> Result<Response, Failure> {
    require_upgrade(
        &request,
        MIGRATION_PROTOCOL,
        "a migration's stream comes by upgrading the connection",
    )?;
    // Taken before the 101: a refusal is still an error reply.
    let local = services.domains.incoming_stream(&id)?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => crate::services::migration_tunnel::serve(upgraded, local, id).await,
            // Its end closes: the waiting load fails and the migration is cleaned up.
            Err(err) => tracing::warn!(migration = %id, "migration stream upgrade failed: {err}"),
        }
    });
    switching_protocols(MIGRATION_PROTOCOL)
}

#[utoipa::path(
    post,
    path = "/v1/migrations/{id}/finish",
    operation_id = "migration_finish",
    tag = "migrations",
    params(super::openapi::MigrationPath),
    request_body = FinishMigration,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn finish(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    // An empty body is an oxvirtd of before the cluster's lock handover: nothing to take over.
    let request: FinishMigration = if bytes.is_empty() {
        FinishMigration::default()
    } else {
        body(&bytes)?
    };
    detached(services, "migration finish", |d| async move {
        d.domains.finish_incoming(&id, &request).await
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/migrations/{id}",
    operation_id = "migration_abort",
    tag = "migrations",
    params(super::openapi::MigrationPath),
    responses((status = 200, description = "success", body = MigrationAborted)),
)]
async fn abort(State(services): Shared, Path(id): Path<String>) -> Reply<MigrationAborted> {
    detached(services, "migration abort", |d| async move {
        d.domains
            .abort_incoming(&id)
            .await
            .map(|()| MigrationAborted {})
    })
    .await
}
