//! The hypervisor's capabilities: wire types and [`Client`] calls behind virsh's `cpu-models`,
//! `hypervisor-cpu-baseline` and `hypervisor-cpu-compare` (the CLI reads the users' CPU
//! descriptions and computes the answers from this database; see docs/cpu-models.md), and
//! `capabilities` and `domcapabilities` (the CLI prints them in libvirt's XML formats; see
//! docs/capabilities.md).
//!
//! | method + path                          | query                        | reply         |
//! |----------------------------------------|------------------------------|---------------|
//! | `GET /v1/capabilities/cpu-models`      | `?arch=A&virttype=qemu\|kvm` | [`CpuModels`] |
//! | `GET /v1/capabilities/host`            |                              | [`HostCapabilities`] |
//! | `GET /v1/capabilities/domain`          | `?virttype=V&emulatorbin=P&arch=A&machine=M` (each optional) | [`DomainCapabilities`] |

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError};

/// Reply of `GET /v1/capabilities/cpu-models`: QEMU's named models (virsh's names and order
/// of listing) with their features under libvirt's names, and the CPU the hypervisor provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuModels {
    pub qemu_version: String,
    pub arch: String,
    pub models: Vec<CpuModelInfo>,
    /// `qemu` (TCG's `max`) or `kvm` (the host CPU as KVM offers it).
    pub virttype: String,
    /// The features of the CPU that `virttype` provides on this host.
    pub host_features: Vec<String>,
    /// Its CPUID vendor string (`AuthenticAMD`), empty when unknown.
    #[serde(default)]
    pub host_vendor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuModelInfo {
    pub name: String,
    /// CPUID vendor string, empty when the model sets none.
    pub vendor: String,
    /// The hypervisor can run it as it is.
    pub usable: bool,
    pub features: Vec<String>,
}

/// Reply of `GET /v1/capabilities/host`: `<capabilities>`'s facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCapabilities {
    pub uuid: String,
    pub cpu: HostCpuCapabilities,
    pub iommu: bool,
    pub cells: Vec<NumaCellInfo>,
    pub caches: Vec<CacheBankInfo>,
    /// The security models guests run under (`none`: oxvirt relabels nothing).
    pub secmodels: Vec<String>,
    pub guests: Vec<GuestCapabilities>,
}

/// The host CPU: identity, topology and features (libvirt's names, CPUID's order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCpuCapabilities {
    pub arch: String,
    /// CPUID's vendor string (`AuthenticAMD`).
    pub vendor_id: String,
    pub microcode: Option<u64>,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    pub tsc_hz: Option<u64>,
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    pub phys_bits: Option<u32>,
    pub features: Vec<String>,
    pub page_sizes_kib: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NumaCellInfo {
    pub id: u32,
    pub memory_kib: u64,
    /// (page size in KiB, pages of it).
    pub pages: Vec<(u64, u64)>,
    /// (cell, distance).
    pub distances: Vec<(u32, u32)>,
    pub cpus: Vec<CellCpuInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CellCpuInfo {
    pub id: u32,
    pub socket: u32,
    pub die: u32,
    pub core: u32,
    pub siblings: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheBankInfo {
    pub id: u32,
    pub level: u32,
    /// `both`, `data` or `code`.
    pub kind: String,
    pub size_kib: u64,
    pub cpus: String,
}

/// One `<guest>`: an architecture, its emulator, machine types and domain types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestCapabilities {
    pub os_type: String,
    pub arch: String,
    pub wordsize: u32,
    pub emulator: String,
    pub machines: Vec<MachineInfo>,
    /// `qemu`, and `kvm` where the host has hardware KVM.
    pub domain_types: Vec<String>,
    pub features: Vec<GuestFeature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineInfo {
    /// The name as written (`pc-i440fx-7.2`, or the alias `pc`).
    pub name: String,
    /// For an alias, the machine it stands for.
    pub canonical: Option<String>,
    pub max_cpus: u32,
    pub deprecated: bool,
}

/// `<features>` of a `<guest>`: `<acpi default='on' toggle='yes'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestFeature {
    pub name: String,
    pub default: Option<String>,
    pub toggle: Option<String>,
}

/// Reply of `GET /v1/capabilities/domain`: `<domainCapabilities>`'s facts; the CPU models come
/// from `GET /v1/capabilities/cpu-models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainCapabilities {
    pub path: String,
    pub domain: String,
    /// The canonical machine name.
    pub machine: String,
    pub arch: String,
    pub vcpu_max: u32,
    pub iothreads: bool,
    /// `<os>` and its `firmware` enum.
    pub os: CapabilityGroup,
    /// `<loader>`'s enums; its values are `loader_values`.
    pub loader: CapabilityGroup,
    /// The UEFI firmware files of this host's descriptors for the machine.
    pub loader_values: Vec<String>,
    pub host_passthrough: bool,
    /// `maximumMigratable` values, `None` when the mode is not supported.
    pub maximum: Option<Vec<String>>,
    pub host_model: bool,
    pub custom: bool,
    pub memory_backing: CapabilityGroup,
    pub devices: Vec<CapabilityGroup>,
    pub features: Vec<CapabilityGroup>,
}

/// An element with `supported='yes|no'` and its `<enum>`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityGroup {
    pub name: String,
    pub supported: bool,
    pub enums: Vec<CapabilityEnum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityEnum {
    pub name: String,
    pub values: Vec<String>,
}

/// What `domcapabilities` asks about; `None` takes the default (qemu, this host's emulator,
/// x86_64, the emulator's default machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct DomainCapabilitiesQuery {
    pub virttype: Option<String>,
    pub emulatorbin: Option<String>,
    pub arch: Option<String>,
    pub machine: Option<String>,
}

impl Client {
    /// `GET /v1/capabilities/host`.
    pub async fn host_capabilities(&self) -> Result<HostCapabilities, ClientError> {
        self.call(Method::GET, "/v1/capabilities/host".to_string(), None)
            .await
    }

    /// `GET /v1/capabilities/domain`.
    pub async fn domain_capabilities(
        &self,
        query: &DomainCapabilitiesQuery,
    ) -> Result<DomainCapabilities, ClientError> {
        let pairs = [
            ("virttype", &query.virttype),
            ("emulatorbin", &query.emulatorbin),
            ("arch", &query.arch),
            ("machine", &query.machine),
        ];
        let query: Vec<String> = pairs
            .iter()
            .filter_map(|(key, value)| {
                let value = value.as_deref()?;
                Some(format!("{key}={}", crate::percent_encode_segment(value)))
            })
            .collect();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        self.call(Method::GET, format!("/v1/capabilities/domain{query}"), None)
            .await
    }

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
