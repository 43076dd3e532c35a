//! The cluster (`oxvirtd --cluster etcd=URL --host-name NAME`, docs/cluster.md): wire types and
//! [`Client`] calls behind `oxvirt host-list`. The same [`HostRecord`] is what each member keeps
//! in etcd (crates/cluster), so what a host publishes and what the API shows are one type.
//!
//! | method + path              | reply                |
//! |----------------------------|----------------------|
//! | `GET /v1/cluster/hosts`    | [`ClusterHosts`]     |
//! | `POST /v1/cluster/domains` | [`crate::XmlDocument`] -> [`crate::DomainSummary`] |
//! | `GET /v1/domains/{id}/migration-targets` | [`MigrationTargets`] |

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, DomainSummary, XmlDocument};

/// A storage pool of a host, as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterPool {
    pub name: String,
    /// The pool's directory.
    pub target: String,
    /// Whether other hosts reach the same storage (a network file system), so that a guest
    /// with disks there can run on any host that has the pool too.
    pub shared: bool,
}

/// What a member publishes about itself, refreshed while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRecord {
    /// `--host-name`: unique in the cluster.
    pub name: String,
    /// Where its TLS API answers (`--listen`), if it serves one.
    pub api_address: Option<String>,
    pub cpus: u32,
    pub memory_kib: u64,
    pub free_memory_kib: u64,
    /// The CPU model: vendor, family and model (e.g. "AuthenticAMD 25/1"); hosts with the same
    /// model form a placement group (a guest moves between them without a CPU change).
    pub cpu_model: String,
    /// Linux's CPU flags.
    pub cpu_features: Vec<String>,
    /// The engines it runs guests with ("qemu", "native").
    pub engines: Vec<String>,
    pub pools: Vec<ClusterPool>,
    /// How many guests run there.
    pub guests: u32,
    /// When the record was written, in seconds since the Unix epoch.
    pub updated: u64,
}

/// Whether a member's lease is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its oxvirtd renews its lease.
    Up,
    /// Its lease expired: its oxvirtd stopped, crashed or lost etcd.
    LeaseExpired,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::LeaseExpired => "lease expired",
        }
    }
}

/// One member in `GET /v1/cluster/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterHost {
    pub state: HostState,
    pub host: HostRecord,
}

/// Reply of `GET /v1/cluster/hosts`: every host that ever joined, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterHosts {
    /// The host that answered.
    pub this_host: String,
    pub hosts: Vec<ClusterHost>,
}

/// Who holds a cluster guest's lock (`/oxvirt/running/UUID`): the host's name, and the lease
/// the key lives under. A migration of a cluster guest hands the lock from the source's holder
/// to the destination's in one etcd transaction that compares both (docs/cluster.md,
/// "Migrating a cluster guest").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockHolder {
    pub host: String,
    pub lease: i64,
}

/// A guest defined in the cluster (`oxvirt define --cluster`), as kept in etcd under
/// `/oxvirt/domains/UUID`: its normalized XML and what placement reads of it (so that choosing a
/// host needs no XML parser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDomain {
    pub uuid: String,
    pub name: String,
    /// The normalized definition, as `dumpxml` prints it.
    pub xml: String,
    /// `<memory>`: a host needs this much free memory to take it.
    pub memory_kib: u64,
    /// `<oxvirt:placement group=...>`.
    pub group: Option<String>,
    /// `policy='spread'`.
    pub spread: bool,
    /// `<oxvirt:ha/>`.
    pub ha: bool,
    /// The files and block devices of its disks (`<source file=|dev=>`): placement prefers the
    /// hosts that publish a pool holding them.
    #[serde(default)]
    pub disk_paths: Vec<String>,
    /// The pools of its volume disks (`<source pool=>`).
    #[serde(default)]
    pub disk_pools: Vec<String>,
}

/// Reply of `GET /v1/domains/{id}/migration-targets`: the members a running guest of the
/// answering host can migrate to, best first by the cluster's placement rules (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationTargets {
    pub targets: Vec<MigrationTarget>,
}

/// A member a guest can migrate to, and its TLS API's address (`--listen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationTarget {
    pub name: String,
    pub api_address: String,
}

impl Client {
    /// `GET /v1/domains/{id}/migration-targets`: where the running guest can move, best first.
    pub async fn migration_targets(&self, domain: &str) -> Result<MigrationTargets, ClientError> {
        self.call(
            Method::GET,
            crate::domain_path(domain, "/migration-targets"),
            None,
        )
        .await
    }

    /// `POST /v1/cluster/domains`: defines a guest in the cluster (stored in etcd).
    pub async fn define_cluster_domain(&self, xml: &str) -> Result<DomainSummary, ClientError> {
        let body = crate::to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, "/v1/cluster/domains".to_string(), Some(body))
            .await
    }

    /// `GET /v1/cluster/hosts`.
    pub async fn cluster_hosts(&self) -> Result<ClusterHosts, ClientError> {
        self.call(Method::GET, "/v1/cluster/hosts".to_string(), None)
            .await
    }
}
