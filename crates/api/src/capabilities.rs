//! The hypervisor's CPU models: wire types and [`Client`] calls behind virsh's `cpu-models`,
//! `hypervisor-cpu-baseline` and `hypervisor-cpu-compare` (the CLI reads the users' CPU
//! descriptions and computes the answers from this database; see docs/cpu-models.md).
//!
//! | method + path                          | query                        | reply         |
//! |----------------------------------------|------------------------------|---------------|
//! | `GET /v1/capabilities/cpu-models`      | `?arch=A&virttype=qemu\|kvm` | [`CpuModels`] |

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError};

/// Reply of `GET /v1/capabilities/cpu-models`: QEMU's named models (virsh's names and order
/// of listing) with their features under libvirt's names, and the CPU the hypervisor provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModels {
    pub qemu_version: String,
    pub arch: String,
    pub models: Vec<CpuModelInfo>,
    /// `qemu` (TCG's `max`) or `kvm` (the host CPU as KVM offers it).
    pub virttype: String,
    /// The features of the CPU that `virttype` provides on this host.
    pub host_features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModelInfo {
    pub name: String,
    /// CPUID vendor string, empty when the model sets none.
    pub vendor: String,
    /// The hypervisor can run it as it is.
    pub usable: bool,
    pub features: Vec<String>,
}

impl Client {
    /// `GET /v1/capabilities/cpu-models`.
    pub async fn cpu_models(&self, arch: &str, virttype: &str) -> Result<CpuModels, ClientError> {
        let query = format!(
            "?arch={}&virttype={}",
            crate::percent_encode_segment(arch),
            crate::percent_encode_segment(virttype)
        );
        self.call(
            Method::GET,
            format!("/v1/capabilities/cpu-models{query}"),
            None,
        )
        .await
    }
}
