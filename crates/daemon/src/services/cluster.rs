//! This oxvirtd as a member of a cluster (`--cluster etcd=URL --host-name NAME`,
//! docs/cluster.md): it joins in the background, keeps its lease alive and republishes its
//! record (free memory, guests) every [`RENEW_EVERY`]; the etcd side is crates/cluster.
//!
//! etcd being down never stops oxvirtd nor a single-host operation: the loop keeps retrying,
//! and only the cluster's own routes answer with an error naming the endpoints.

use std::sync::Arc;
use std::time::Duration;

use oxvirt_api::cluster::{ClusterHosts, ClusterPool, HostRecord};
use oxvirt_cluster::{ClusterError, Etcd, Member, LEASE_TTL};
use oxvirt_host::HostView;
use tokio::sync::RwLock;

use super::domains::Domains;
use super::error::{DaemonError, DaemonResult, ErrorKind};
use super::pools::Pools;
use crate::engine::Engine;

/// How often the lease is renewed and the record republished: three times per lease, so one
/// lost renewal never lets the lease expire.
pub const RENEW_EVERY: Duration = Duration::from_millis(LEASE_TTL.as_millis() as u64 / 3);

/// `--cluster` and `--host-name`, checked.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub host_name: String,
    /// `--listen`'s address, published for the other members.
    pub api_address: Option<String>,
}

/// The membership, if this oxvirtd is configured as a member.
pub struct Cluster {
    config: Option<ClusterConfig>,
    member: RwLock<Option<Arc<Member>>>,
    domains: Arc<Domains>,
    pools: Arc<Pools>,
    engine: Arc<dyn Engine>,
}

impl Cluster {
    pub fn new(
        config: Option<ClusterConfig>,
        domains: Arc<Domains>,
        pools: Arc<Pools>,
        engine: Arc<dyn Engine>,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            config,
            member: RwLock::new(None),
            domains,
            pools,
            engine,
        })
    }

    /// Starts the membership loop (nothing without `--cluster`).
    pub fn start(self: &Arc<Self>) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let cluster = self.clone();
        tokio::spawn(async move { cluster.run(config).await });
    }

    /// Joins, renews, republishes; on any failure logs it once per change and tries again.
    async fn run(self: Arc<Self>, config: ClusterConfig) {
        let mut last_error: Option<String> = None;
        loop {
            match self.tick(&config).await {
                Ok(()) => {
                    if last_error.take().is_some() {
                        tracing::info!(host = %config.host_name, "back in the cluster");
                    }
                }
                Err(err) => {
                    let text = err.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(host = %config.host_name, "cluster: {text}");
                    }
                    if matches!(err, ClusterError::LeaseLost { .. }) {
                        // A new lease at the next tick: the old one's keys are gone.
                        *self.member.write().await = None;
                    }
                    last_error = Some(text);
                }
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    async fn tick(&self, config: &ClusterConfig) -> Result<(), ClusterError> {
        let record = self.record(config).await;
        let member = self.member.read().await.clone();
        match member {
            Some(member) => {
                member.renew().await?;
                member.publish(&record).await
            }
            None => {
                let etcd = Etcd::connect(&config.endpoints).await?;
                let member = Member::join(etcd, &record).await?;
                tracing::info!(host = %config.host_name, endpoints = %config.endpoints.join(","), "joined the cluster");
                *self.member.write().await = Some(Arc::new(member));
                Ok(())
            }
        }
    }

    /// What this host publishes now.
    async fn record(&self, config: &ClusterConfig) -> HostRecord {
        let domains = self.domains.clone();
        let pools = self.pools.clone();
        let qemu = self.engine.version().is_some();
        let (host, guests, pools) = tokio::task::spawn_blocking(move || {
            let view = HostView::this_host();
            let guests = domains.list().map_or(0, |list| {
                list.iter().filter(|d| d.state.is_active()).count() as u32
            });
            let pools = pools.list_pools().unwrap_or_default();
            (host_facts(&view), guests, pools)
        })
        .await
        .unwrap_or_default();
        HostRecord {
            name: config.host_name.clone(),
            api_address: config.api_address.clone(),
            cpus: host.cpus,
            memory_kib: host.memory_kib,
            free_memory_kib: host.free_memory_kib,
            cpu_model: host.cpu_model,
            cpu_features: host.cpu_features,
            engines: if qemu {
                vec!["qemu".to_string()]
            } else {
                vec![]
            },
            pools: pools
                .into_iter()
                .map(|pool| ClusterPool {
                    shared: is_shared_fs(&pool.target),
                    name: pool.name,
                    target: pool.target,
                })
                .collect(),
            guests,
            updated: oxvirt_cluster::now_unix(),
        }
    }

    /// `host-list`: every member with its state.
    pub async fn hosts(&self) -> DaemonResult<ClusterHosts> {
        let config = self.config()?;
        let etcd = self.etcd(config).await?;
        let hosts = etcd.hosts().await.map_err(unavailable)?;
        Ok(ClusterHosts {
            this_host: config.host_name.clone(),
            hosts,
        })
    }

    fn config(&self) -> DaemonResult<&ClusterConfig> {
        self.config.as_ref().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::InvalidState,
                "this oxvirtd is not in a cluster: start it with --cluster etcd=http://HOST:2379 \
                 --host-name NAME (or the keys cluster and host_name in oxvirtd.conf)",
            )
        })
    }

    /// The member's connection, or a new one while it has not joined (etcd was down).
    async fn etcd(&self, config: &ClusterConfig) -> DaemonResult<Etcd> {
        if let Some(member) = self.member.read().await.as_ref() {
            return Ok(member.etcd().clone());
        }
        Etcd::connect(&config.endpoints).await.map_err(unavailable)
    }
}

fn unavailable(err: ClusterError) -> DaemonError {
    DaemonError::new(ErrorKind::Unavailable, err.to_string())
}

/// The host's side of its record, read from /proc and /sys.
#[derive(Debug, Default)]
struct HostFacts {
    cpus: u32,
    memory_kib: u64,
    free_memory_kib: u64,
    cpu_model: String,
    cpu_features: Vec<String>,
}

fn host_facts(view: &HostView) -> HostFacts {
    let info = oxvirt_host::node::node_info(view).ok();
    let free = oxvirt_host::node::free_memory(view)
        .map(|cells| cells.iter().map(|(_, kib)| kib).sum())
        .unwrap_or(0);
    let cpu = oxvirt_host::topology::host_topology(view)
        .map(|t| t.cpu)
        .unwrap_or_default();
    HostFacts {
        cpus: info.as_ref().map_or(0, |i| i.cpus),
        memory_kib: info.as_ref().map_or(0, |i| i.memory_kib),
        free_memory_kib: free,
        cpu_model: cpu_model_name(&cpu),
        cpu_features: cpu.flags,
    }
}

/// "VENDOR FAMILY/MODEL": hosts with the same one run guests with the same CPU.
fn cpu_model_name(cpu: &oxvirt_host::topology::HostCpuId) -> String {
    let number = |n: Option<u32>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    let vendor = if cpu.vendor_id.is_empty() {
        "unknown"
    } else {
        cpu.vendor_id.as_str()
    };
    format!("{vendor} {}/{}", number(cpu.family), number(cpu.model))
}

/// Whether `path` is on a network file system (NFS, CIFS/SMB, Ceph, FUSE such as GlusterFS),
/// which other hosts may mount too.
fn is_shared_fs(path: &str) -> bool {
    const NFS: i64 = 0x6969;
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    const CEPH: i64 = 0x00C3_6400;
    const FUSE: i64 = 0x6573_5546;
    let Ok(c_path) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we own from a NUL-terminated path.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as i64;
    [NFS, CIFS, SMB2, CEPH, FUSE].contains(&magic)
}
