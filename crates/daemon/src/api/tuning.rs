//! HTTP routes of vCPU placement (see `oxvirt_api::tuning`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use oxvirt_api::{PinRequest, Pins, SetVcpus, VcpuCounts, VcpuInfo};

use super::reply::{body, detached, Reply};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/domains/{id}/vcpuinfo", get(vcpu_info))
        .route("/v1/domains/{id}/vcpupin", post(vcpu_pin))
        .route("/v1/domains/{id}/emulatorpin", post(emulator_pin))
        .route("/v1/domains/{id}/vcpucount", get(vcpu_count))
        .route("/v1/domains/{id}/setvcpus", post(set_vcpus))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(vcpu_count, set_vcpus, vcpu_info, vcpu_pin, emulator_pin))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/vcpucount",
    operation_id = "tuning_vcpu_count",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = VcpuCounts)),
)]
async fn vcpu_count(State(services): Shared, Path(id): Path<String>) -> Reply<VcpuCounts> {
    detached(services, "vcpucount", |d| async move {
        d.domains.vcpu_count(&id).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/setvcpus",
    operation_id = "tuning_set_vcpus",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = SetVcpus,
    responses((status = 200, description = "success", body = VcpuCounts)),
)]
async fn set_vcpus(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<VcpuCounts> {
    let request: SetVcpus = body(&bytes)?;
    detached(services, "setvcpus", |d| async move {
        d.domains.set_vcpus(&id, &request).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/vcpuinfo",
    operation_id = "tuning_vcpu_info",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = VcpuInfo)),
)]
async fn vcpu_info(State(services): Shared, Path(id): Path<String>) -> Reply<VcpuInfo> {
    detached(services, "vcpuinfo", |d| async move {
        d.domains.vcpu_info(&id).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/vcpupin",
    operation_id = "tuning_vcpu_pin",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = PinRequest,
    responses((status = 200, description = "success", body = Pins)),
)]
async fn vcpu_pin(State(services): Shared, Path(id): Path<String>, bytes: Bytes) -> Reply<Pins> {
    let request: PinRequest = body(&bytes)?;
    detached(services, "vcpupin", |d| async move {
        d.domains.vcpu_pin(&id, &request).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/emulatorpin",
    operation_id = "tuning_emulator_pin",
    tag = "domains",
    params(super::openapi::DomainPath),
    request_body = PinRequest,
    responses((status = 200, description = "success", body = Pins)),
)]
async fn emulator_pin(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<Pins> {
    let request: PinRequest = body(&bytes)?;
    detached(services, "emulatorpin", |d| async move {
        d.domains.emulator_pin(&id, &request).await
    })
    .await
}
