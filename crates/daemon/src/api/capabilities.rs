//! HTTP routes of the hypervisor's capabilities (see `oxvirt_api::capabilities`): the CPU model
//! database, the host's capabilities and a domain type's, answered by
//! `services/capabilities.rs` (QEMU probes cached per QEMU version).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use oxvirt_api::{CpuModels, DomainCapabilities, DomainCapabilitiesQuery, HostCapabilities};
use serde::Deserialize;

use super::reply::{blocking, Reply};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/capabilities/cpu-models", get(cpu_models))
        .route("/v1/capabilities/host", get(host_capabilities))
        .route("/v1/capabilities/domain", get(domain_capabilities))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(host_capabilities, domain_capabilities, cpu_models))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/capabilities/host",
    operation_id = "capabilities_host_capabilities",
    tag = "host",
    responses((status = 200, description = "success", body = HostCapabilities)),
)]
async fn host_capabilities(State(services): State<Arc<Services>>) -> Reply<HostCapabilities> {
    blocking(services, "capabilities", |services| {
        services.host_capabilities()
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/capabilities/domain",
    operation_id = "capabilities_domain_capabilities",
    tag = "host",
    params(DomainCapabilitiesQuery),
    responses((status = 200, description = "success", body = DomainCapabilities)),
)]
async fn domain_capabilities(
    State(services): State<Arc<Services>>,
    Query(query): Query<DomainCapabilitiesQuery>,
) -> Reply<DomainCapabilities> {
    blocking(services, "domcapabilities", move |services| {
        services.domain_capabilities(&query)
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ModelsQuery {
    arch: Option<String>,
    virttype: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/capabilities/cpu-models",
    operation_id = "capabilities_cpu_models",
    tag = "host",
    params(ModelsQuery),
    responses((status = 200, description = "success", body = CpuModels)),
)]
async fn cpu_models(
    State(services): State<Arc<Services>>,
    Query(query): Query<ModelsQuery>,
) -> Reply<CpuModels> {
    blocking(services, "cpu-models", move |services| {
        services.cpu_models(
            query.arch.as_deref().unwrap_or("x86_64"),
            query.virttype.as_deref().unwrap_or("qemu"),
        )
    })
    .await
}
