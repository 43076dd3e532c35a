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

async fn vcpu_count(State(services): Shared, Path(id): Path<String>) -> Reply<VcpuCounts> {
    detached(services, "vcpucount", |d| async move {
        d.domains.vcpu_count(&id).await
    })
    .await
}

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

async fn vcpu_info(State(services): Shared, Path(id): Path<String>) -> Reply<VcpuInfo> {
    detached(services, "vcpuinfo", |d| async move {
        d.domains.vcpu_info(&id).await
    })
    .await
}

async fn vcpu_pin(State(services): Shared, Path(id): Path<String>, bytes: Bytes) -> Reply<Pins> {
    let request: PinRequest = body(&bytes)?;
    detached(services, "vcpupin", |d| async move {
        d.domains.vcpu_pin(&id, &request).await
    })
    .await
}

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
