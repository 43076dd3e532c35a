//! vCPU placement: wire types and [`Client`] calls (virsh's `vcpuinfo`, `vcpupin`,
//! `emulatorpin`).
//!
//! | method + path                          | body           | reply         |
//! |----------------------------------------|----------------|---------------|
//! | `GET /v1/domains/{id}/vcpuinfo`        |                | [`VcpuInfo`]  |
//! | `POST /v1/domains/{id}/vcpupin`        | [`PinRequest`] | [`Pins`]      |
//! | `POST /v1/domains/{id}/emulatorpin`    | [`PinRequest`] | [`Pins`]      |
//! | `GET /v1/domains/{id}/vcpucount`       |                | [`VcpuCounts`]|
//! | `POST /v1/domains/{id}/setvcpus`       | [`SetVcpus`]   | [`VcpuCounts`]|
//!
//! A pin request without `cpulist` asks; with one, it pins. `live` is the running guest's
//! threads, `config` the definition; neither is virsh's `--current` (the running guest, else
//! the definition).

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

/// Reply of `GET /v1/domains/{id}/vcpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VcpuInfo {
    /// How many CPUs the host has (the length of each affinity map).
    pub host_cpus: u32,
    pub vcpus: Vec<VcpuState>,
}

/// One vCPU of a running guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VcpuState {
    pub vcpu: u32,
    /// The host CPU it last ran on.
    pub cpu: u32,
    /// Its thread's CPU time.
    pub cpu_time_ns: u64,
    /// The host CPUs it may run on.
    pub affinity: Vec<u32>,
}

/// Body of the pin calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinRequest {
    /// `vcpupin`: one vCPU (all without it, for a question). Unused by `emulatorpin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// Host CPUs as libvirt writes them (`0-2,^1`); without it, the call asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpulist: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Reply of the pin calls: each vCPU's (or the emulator's: `vcpu` is `None`) host CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pins {
    pub pins: Vec<Pin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pin {
    pub vcpu: Option<u32>,
    /// As libvirt prints it (`0-1`).
    pub cpulist: String,
}

/// A domain's vCPU counts (virsh's `vcpucount`): the definition's, and the running guest's
/// (`None` when it is not running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VcpuCounts {
    pub config_maximum: u32,
    pub config_current: u32,
    pub live_maximum: Option<u32>,
    pub live_current: Option<u32>,
}

/// Body of `setvcpus`: `count` vCPUs online (or, with `maximum`, the definition's maximum).
/// `live`/`config` as for pins; `guest` asks a guest agent, which oxvirt does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetVcpus {
    pub count: u32,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    #[serde(default)]
    pub maximum: bool,
    #[serde(default)]
    pub guest: bool,
}

impl Client {
    /// `GET /v1/domains/{id}/vcpuinfo`.
    pub async fn vcpu_info(&self, domain: &str) -> Result<VcpuInfo, ClientError> {
        self.call(Method::GET, domain_path(domain, "/vcpuinfo"), None)
            .await
    }

    /// `POST /v1/domains/{id}/vcpupin`.
    pub async fn vcpu_pin(&self, domain: &str, request: &PinRequest) -> Result<Pins, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/vcpupin"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/emulatorpin`.
    pub async fn emulator_pin(
        &self,
        domain: &str,
        request: &PinRequest,
    ) -> Result<Pins, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/emulatorpin"),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/domains/{id}/vcpucount`.
    pub async fn vcpu_count(&self, domain: &str) -> Result<VcpuCounts, ClientError> {
        self.call(Method::GET, domain_path(domain, "/vcpucount"), None)
            .await
    }

    /// `POST /v1/domains/{id}/setvcpus`.
    pub async fn set_vcpus(
        &self,
        domain: &str,
        request: &SetVcpus,
    ) -> Result<VcpuCounts, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/setvcpus"),
            Some(to_json(request)),
        )
        .await
    }
}
