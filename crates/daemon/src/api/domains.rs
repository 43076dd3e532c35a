//! Routes of domains: definitions and the lifecycle (see `oxvirt_api`'s endpoint table).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::Router;
use oxvirt_api::{
    Action, AutostartRequest, DomainInfo, DomainSummary, NvramOnUndefine, ShutdownRequest,
    UndefineOptions, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    let router = Router::new()
        .route("/v1/domains", get(list).post(define))
        .route("/v1/domains/{id}", get(info).delete(undefine))
        .route("/v1/domains/{id}/xml", get(xml).put(replace_xml))
        .route("/v1/domains/{id}/inactive-xml", get(inactive_xml))
        .route("/v1/domains/{id}/autostart", put(autostart));
    // One named handler per action (not a loop over `Action::ALL`): each is an operation of
    // its own in the OpenAPI document, which takes its path from the handler's attribute.
    router
        .route("/v1/domains/{id}/start", post(start))
        .route("/v1/domains/{id}/shutdown", post(shutdown))
        .route("/v1/domains/{id}/destroy", post(destroy))
        .route("/v1/domains/{id}/reboot", post(reboot))
        .route("/v1/domains/{id}/reset", post(reset))
        .route("/v1/domains/{id}/suspend", post(suspend))
        .route("/v1/domains/{id}/resume", post(resume))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list,
    define,
    info,
    undefine,
    xml,
    inactive_xml,
    replace_xml,
    autostart,
    start,
    shutdown,
    destroy,
    reboot,
    reset,
    suspend,
    resume
))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/domains",
    operation_id = "domains_list",
    tag = "domains",
    responses((status = 200, description = "success", body = Vec<DomainSummary>)),
)]
async fn list(State(services): State<Arc<Services>>) -> Reply<Vec<DomainSummary>> {
    let local = blocking(services.clone(), "list", |d| d.domains.list()).await?;
    // On a cluster member: with the cluster's guests and where they run.
    Ok(axum::Json(services.cluster.list(local.0).await))
}

#[utoipa::path(
    post,
    path = "/v1/domains",
    operation_id = "domains_define",
    tag = "domains",
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn define(State(services): State<Arc<Services>>, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "define", move |d| d.domains.define(&doc.xml)).await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}",
    operation_id = "domains_info",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = DomainInfo)),
)]
async fn info(State(services): State<Arc<Services>>, Path(id): Path<String>) -> Reply<DomainInfo> {
    let wanted = id.clone();
    let local = blocking(services.clone(), "dominfo", move |d| {
        d.domains.info(&wanted)
    })
    .await;
    match local {
        // A cluster guest without a local copy here: as the cluster knows it (as dumpxml).
        Err(err) if err.0.code == oxvirt_api::code::NOT_FOUND => {
            match services.cluster.info(&id).await? {
                Some(info) => Ok(axum::Json(info)),
                None => Err(err),
            }
        }
        other => other,
    }
}

/// `?nvram=remove|keep`: what to do with a UEFI guest's NVRAM file.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UndefineQuery {
    nvram: Option<NvramOnUndefine>,
    /// Forget the domain's snapshots (virsh's `--snapshots-metadata`).
    #[serde(default)]
    snapshots_metadata: bool,
    /// `?managed_save=true`: remove a managed save too (else a domain with one is refused).
    #[serde(default)]
    managed_save: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/domains/{id}",
    operation_id = "domains_undefine",
    tag = "domains",
    params(super::openapi::DomainPath, UndefineQuery),
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn undefine(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    Query(query): Query<UndefineQuery>,
) -> Reply<DomainSummary> {
    // On a cluster member a cluster guest is undefined in etcd (services/cluster.rs).
    let wanted = id.clone();
    let undefined = detached(services.clone(), "undefine", move |services| async move {
        services.cluster.undefine(&wanted).await
    })
    .await?;
    if let Some(summary) = undefined.0 {
        return Ok(axum::Json(summary));
    }
    blocking(services, "undefine", move |d| {
        d.domains.undefine(
            &id,
            &UndefineOptions {
                nvram: query.nvram,
                snapshots_metadata: query.snapshots_metadata,
                managed_save: query.managed_save,
            },
        )
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/xml",
    operation_id = "domains_xml",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn xml(State(services): State<Arc<Services>>, Path(id): Path<String>) -> Reply<XmlDocument> {
    let wanted = id.clone();
    let local = blocking(services.clone(), "dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.domains.xml(&wanted)?,
        })
    })
    .await;
    match local {
        // A cluster guest without a local copy here: its definition in etcd.
        Err(err) if err.0.code == oxvirt_api::code::NOT_FOUND => {
            match services.cluster.xml(&id).await? {
                Some(xml) => Ok(axum::Json(XmlDocument { xml })),
                None => Err(err),
            }
        }
        other => other,
    }
}

/// `dumpxml --inactive`: the definition for the next start.
#[utoipa::path(
    get,
    path = "/v1/domains/{id}/inactive-xml",
    operation_id = "domains_inactive_xml",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn inactive_xml(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Reply<XmlDocument> {
    blocking(services, "dumpxml --inactive", move |d| {
        Ok(XmlDocument {
            xml: d.domains.inactive_xml(&id)?,
        })
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/domains/{id}/xml",
    operation_id = "domains_replace_xml",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn replace_xml(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "edit", move |d| {
        d.domains.replace_xml(&id, &doc.xml)
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/domains/{id}/autostart",
    operation_id = "domains_autostart",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = AutostartRequest,
    responses((status = 200, description = "success", body = DomainSummary)),
)]
async fn autostart(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(services, "autostart", move |d| {
        d.domains.set_autostart(&id, request.enabled)
    })
    .await
}

/// The lifecycle actions without a body, a handler each: each is an operation of its own in the
/// OpenAPI document, which takes its path from the handler's attribute.
macro_rules! lifecycle_handlers {
    ($($name:ident: $action:ident, $path:literal, $operation:literal, $doc:literal;)*) => {$(
        #[doc = $doc]
        #[utoipa::path(
            post,
            path = $path,
            operation_id = $operation,
            tag = "domains",
            params(super::openapi::DomainPath),
            responses((status = 200, description = "the domain after the action", body = DomainSummary)),
        )]
        async fn $name(
            state: State<Arc<Services>>,
            path: Path<String>,
            bytes: Bytes,
        ) -> Reply<DomainSummary> {
            lifecycle(state, path, bytes, Action::$action).await
        }
    )*};
}

lifecycle_handlers! {
    start: Start, "/v1/domains/{id}/start", "domains_start", "Starts the domain.";
    destroy: Destroy, "/v1/domains/{id}/destroy", "domains_destroy", "Stops the domain at once (pulls the plug).";
    reboot: Reboot, "/v1/domains/{id}/reboot", "domains_reboot", "Asks the guest to reboot.";
    reset: Reset, "/v1/domains/{id}/reset", "domains_reset", "Resets the guest (the reset button).";
    suspend: Suspend, "/v1/domains/{id}/suspend", "domains_suspend", "Pauses the domain's vCPUs.";
    resume: Resume, "/v1/domains/{id}/resume", "domains_resume", "Resumes a paused domain.";
}

/// Asks the guest to shut down (ACPI power button); with `timeout_secs`, waits that long for it
/// to stop.
#[utoipa::path(
    post,
    path = "/v1/domains/{id}/shutdown",
    operation_id = "domains_shutdown",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = Option<ShutdownRequest>,
    responses((status = 200, description = "the domain after the action", body = DomainSummary)),
)]
async fn shutdown(
    state: State<Arc<Services>>,
    path: Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    lifecycle(state, path, bytes, Action::Shutdown).await
}

async fn lifecycle(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
    action: Action,
) -> Reply<DomainSummary> {
    let timeout_secs = match action {
        Action::Shutdown if !bytes.is_empty() => body::<ShutdownRequest>(&bytes)?.timeout_secs,
        _ => None,
    };
    // On a cluster member a cluster guest is placed, or asked of its host (services/cluster.rs).
    detached(services, action.as_str(), move |services| async move {
        services.cluster.act(&id, action, timeout_secs).await
    })
    .await
}
