//! This oxvirtd as a member of a cluster (`--cluster etcd=URL --host-name NAME`,
//! docs/cluster.md): it joins in the background, keeps its lease alive and republishes its
//! record (free memory, guests) every [`RENEW_EVERY`]; the etcd side is crates/cluster.
//!
//! etcd being down never stops oxvirtd nor a single-host operation: the loop keeps retrying,
//! and only the cluster's own routes answer with an error naming the endpoints.
//!
//! Cluster guests (`define --cluster`) are kept in etcd. `start` of one places it
//! (`oxvirt_cluster::placement`) and asks the chosen member, through a request key in etcd, to
//! start it; that member takes the guest's lock (`/oxvirt/running/UUID` under its lease), defines
//! a local copy of the definition and starts it. The local copy exists only while the guest runs
//! there: once it stopped, [`Cluster::reconcile`] removes the copy and releases the lock.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oxvirt_api::cluster::{
    ClusterDomain, ClusterHosts, ClusterPool, HostRecord, LockHolder, MigrationTarget,
    MigrationTargets,
};
use oxvirt_api::{
    Action, DomainInfo, DomainState, DomainSummary, PrepareMigration, UndefineOptions,
};
use oxvirt_cluster::{
    placement, ClusterError, Etcd, Member, RequestState, RunnerReport, LEASE_TTL,
};
use oxvirt_host::HostView;
use tokio::sync::RwLock;

use super::domains::Domains;
use super::error::{
    definition_error, engine_failure, invalid_state, DaemonError, DaemonResult, ErrorKind,
};
use super::migration_lock::{DestinationLock, SourceLock};
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
    /// Cluster guests this host is starting now (their lock is taken, the local copy may not
    /// run yet): [`Cluster::reconcile`] leaves them alone.
    starting: Mutex<HashSet<String>>,
    /// When the lease was last renewed (self-fencing counts from it).
    last_renewed: Mutex<Option<Instant>>,
    /// The HA cluster guests running here, as last seen: what self-fencing destroys.
    ha_here: Mutex<HashSet<String>>,
    /// The cluster guests' UUIDs as last read from etcd: with etcd out of reach, a stopped local
    /// copy of one of them is not started as a local domain.
    known_guests: Mutex<HashSet<String>>,
    /// Since when each wanted HA guest has had no host.
    missing_since: Mutex<std::collections::HashMap<String, Instant>>,
    /// Whether this oxvirtd started the cluster's autostart guests already.
    autostarted: std::sync::atomic::AtomicBool,
}

/// A host that has not renewed its lease for this long destroys its HA guests: two thirds of the
/// lease, so they are gone before the lease expires and another host may restart them.
pub const FENCE_AFTER: Duration = Duration::from_millis(LEASE_TTL.as_millis() as u64 * 2 / 3);

/// How long a wanted HA guest stays without a host before the next host in its ranking steps
/// in: the host ranked N-th (from 0) restarts it after N steps. The best one may be unable to;
/// and each member ranks from the host records it read, at its own moment, while free memory
/// moves between records: two members may each see the other first (benches/cluster.sh met a
/// restart 24 s after the kill that way, when any ranked host waited for a fixed 15 s). A step
/// a little shorter than a renewal lets the next in line try at its next renewal; the lock
/// (create-if-absent) keeps two that try at once from both running the guest.
const HA_STEP: Duration = Duration::from_millis(RENEW_EVERY.as_millis() as u64 * 9 / 10);

/// How long a member waits before reading the start requests (to it, or the answer to its own)
/// again when etcd could not be read or watched.
const REQUEST_POLL: Duration = Duration::from_millis(500);

/// The longest wait for a change of the start requests before reading them again anyway: etcd's
/// watch wakes the member at once (docs/cluster.md); this bounds what a lost watch costs.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// How long a placing member waits for the chosen host's answer (a start under TCG on a loaded
/// machine takes seconds; the answer comes once QEMU runs).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

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
            starting: Mutex::new(HashSet::new()),
            last_renewed: Mutex::new(None),
            ha_here: Mutex::new(HashSet::new()),
            missing_since: Mutex::new(std::collections::HashMap::new()),
            known_guests: Mutex::new(HashSet::new()),
            autostarted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts the membership loop (nothing without `--cluster`).
    pub fn start(self: &Arc<Self>) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let cluster = self.clone();
        let name = config.host_name.clone();
        tokio::spawn(async move { cluster.run(config).await });
        let cluster = self.clone();
        tokio::spawn(async move { cluster.serve_requests(name).await });
        let cluster = self.clone();
        tokio::spawn(async move { cluster.fence().await });
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
                    let expired =
                        lock(&self.last_renewed).is_some_and(|at| at.elapsed() > LEASE_TTL);
                    if matches!(err, ClusterError::LeaseLost { .. }) || expired {
                        // A new lease at the next tick: the old one's keys are gone. Past the
                        // TTL the lease is gone anyway, and the old connection may be one the
                        // network dropped without a word: the next tick makes a new one.
                        *self.member.write().await = None;
                    }
                    last_error = Some(text);
                }
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    async fn tick(self: &Arc<Self>, config: &ClusterConfig) -> Result<(), ClusterError> {
        let record = self.record(config).await;
        let member = self.member.read().await.clone();
        match member {
            Some(member) => {
                member.renew().await?;
                *lock(&self.last_renewed) = Some(Instant::now());
                member.publish(&record).await?;
                self.reconcile(&member).await
            }
            None => {
                let etcd = Etcd::connect(&config.endpoints).await?;
                let member = Member::join(etcd, &record).await?;
                tracing::info!(host = %config.host_name, endpoints = %config.endpoints.join(","), "joined the cluster");
                *lock(&self.last_renewed) = Some(Instant::now());
                *self.member.write().await = Some(Arc::new(member));
                // Once per start of this oxvirtd (not when it joins again after a lost lease).
                if !self
                    .autostarted
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    tokio::spawn(self.clone().autostart_guests());
                }
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

impl Cluster {
    /// `define --cluster`: checks the definition as a local define does (parser, engine) and
    /// stores it in etcd; nothing is stored on this host.
    pub async fn define(&self, xml: String) -> DaemonResult<DomainSummary> {
        let config = self.config()?;
        let domains = self.domains.clone();
        let engine = self.engine.clone();
        let (mut domain, local, names_uuid) = blocking(move || {
            let domain = oxvirt_domain::parse_domain_xml(&xml).map_err(definition_error)?;
            engine
                .check_definition(&domain)
                .map_err(|e| engine_failure(&domain.name, e))?;
            let local = domains
                .info(&domain.name)
                .ok()
                .or_else(|| domains.info(&domain.uuid.to_string()).ok());
            Ok((domain, local, super::xml::names_uuid(&xml)))
        })
        .await?;
        let etcd = self.etcd(config).await?;
        if !names_uuid {
            // As a local define: without <uuid> it updates the cluster's domain of that name.
            if let Some(existing) = etcd.find_domain(&domain.name).await.map_err(unavailable)? {
                if existing.name == domain.name {
                    if let Ok(uuid) = existing.uuid.parse() {
                        domain.uuid = uuid;
                    }
                }
            }
        }
        let mut record = cluster_record(&domain);
        // A new definition of a cluster guest keeps its autostart, as a local define does.
        if let Some(existing) = etcd.domain(&record.uuid).await.map_err(unavailable)? {
            record.autostart = existing.autostart;
        }
        if let Some(local) = local {
            // A local copy of this very guest is one running here; any other is a clash.
            let ours = etcd
                .domain(&local.uuid)
                .await
                .map_err(unavailable)?
                .is_some_and(|d| d.uuid == record.uuid && d.name == record.name);
            if !ours {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "domain '{}' (uuid {}) is defined on this host, not in the cluster",
                        local.name, local.uuid
                    ),
                ));
            }
        }
        etcd.put_domain(&record).await.map_err(|err| match err {
            ClusterError::Conflict(message) => DaemonError::new(ErrorKind::AlreadyExists, message),
            other => unavailable(other),
        })?;
        tracing::info!(domain = %record.name, uuid = %record.uuid, "defined in the cluster");
        let host = etcd
            .runner(&record.uuid)
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        Ok(DomainSummary {
            id: None,
            name: record.name,
            uuid: record.uuid,
            state: if host.is_empty() {
                DomainState::ShutOff
            } else {
                DomainState::Running
            },
            autostart: record.autostart,
            managed_save: false,
            host: Some(host),
        })
    }

    /// This host's domain `id` (a local domain, or the local copy of a cluster guest), if any.
    async fn local_info(&self, id: &str) -> DaemonResult<Option<DomainInfo>> {
        let domains = self.domains.clone();
        let id = id.to_string();
        blocking(move || Ok(domains.info(&id).ok())).await
    }

    /// `autostart` of a cluster guest (on any member): kept in its record in etcd. `None` when
    /// `id` is no cluster guest (or names this host's own domain): the local autostart applies.
    pub async fn set_autostart(
        &self,
        id: &str,
        enabled: bool,
    ) -> DaemonResult<Option<DomainSummary>> {
        let Some(config) = self.config.as_ref() else {
            return Ok(None);
        };
        let local = self.local_info(id).await?;
        if local
            .as_ref()
            .is_some_and(|l| !lock(&self.known_guests).contains(&l.uuid))
        {
            return Ok(None);
        }
        let etcd = self.etcd(config).await?;
        let Some(mut guest) = etcd.find_domain(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        guest.autostart = enabled;
        etcd.put_domain(&guest).await.map_err(unavailable)?;
        tracing::info!(domain = %guest.name, enabled, "cluster guest's autostart set");
        let host = etcd.runner(&guest.uuid).await.map_err(unavailable)?;
        Ok(Some(DomainSummary {
            id: None,
            state: cluster_state(host.as_deref(), None),
            name: guest.name,
            uuid: guest.uuid,
            autostart: enabled,
            managed_save: false,
            host: Some(host.unwrap_or_default()),
        }))
    }

    /// The autostart of the cluster guest `uuid` (whose local copy runs here); `None` for a
    /// local domain, or when etcd does not answer.
    pub async fn autostart_of(&self, uuid: &str) -> Option<bool> {
        let config = self.config.as_ref()?;
        if !lock(&self.known_guests).contains(uuid) {
            return None;
        }
        let etcd = self.etcd(config).await.ok()?;
        Some(etcd.domain(uuid).await.ok()??.autostart)
    }

    /// Once this oxvirtd joined the cluster after it started: starts each autostart cluster
    /// guest that runs nowhere, placed as `start` places it (the lock keeps members that start
    /// at the same moment from starting one twice: the later ones are told where it runs).
    async fn autostart_guests(self: Arc<Self>) {
        let Some(member) = self.member.read().await.clone() else {
            return;
        };
        let etcd = member.etcd();
        let (Ok(domains), Ok(running)) = (etcd.domains().await, etcd.running().await) else {
            tracing::warn!("cluster autostart: etcd did not answer");
            return;
        };
        for guest in domains.into_iter().filter(|d| d.autostart) {
            if running.iter().any(|(uuid, _)| *uuid == guest.uuid) {
                continue;
            }
            match self.start_domain(&guest.uuid).await {
                Ok(started) => {
                    tracing::info!(domain = %guest.name, host = ?started.host, "cluster guest autostarted")
                }
                Err(err) => tracing::info!(domain = %guest.name, "cluster autostart: {err}"),
            }
        }
    }

    /// `list` on a member: this host's guests and every cluster guest, each with the host it
    /// runs on. Outside a cluster `local` unchanged; with etcd out of reach, this host's only.
    pub async fn list(&self, local: Vec<DomainSummary>) -> Vec<DomainSummary> {
        let Some(config) = self.config.as_ref() else {
            return local;
        };
        let here = |d: &DomainSummary| {
            if d.state.is_active() {
                config.host_name.clone()
            } else {
                String::new()
            }
        };
        let cluster = async {
            let etcd = self.etcd(config).await?;
            let domains = etcd.domains().await.map_err(unavailable)?;
            let running = etcd.running().await.map_err(unavailable)?;
            let statuses = etcd.statuses().await.map_err(unavailable)?;
            Ok::<_, DaemonError>((domains, running, statuses))
        };
        let (domains, running, statuses) = match cluster.await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!("list: the cluster's guests left out: {err}");
                return local
                    .into_iter()
                    .map(|d| DomainSummary {
                        host: Some(here(&d)),
                        ..d
                    })
                    .collect();
            }
        };
        let mut out = Vec::new();
        let mut shown = HashSet::new();
        for d in local {
            let in_cluster = domains.iter().any(|c| c.uuid == d.uuid);
            // A stopped local copy of a cluster guest: the cluster's row says where it is.
            if in_cluster && !d.state.is_active() {
                continue;
            }
            shown.insert(d.uuid.clone());
            out.push(DomainSummary {
                host: Some(here(&d)),
                ..d
            });
        }
        for c in domains {
            if shown.contains(&c.uuid) {
                continue;
            }
            let host = running
                .iter()
                .find(|(uuid, _)| *uuid == c.uuid)
                .map(|(_, host)| host.clone());
            let status = statuses
                .iter()
                .find(|(uuid, status)| *uuid == c.uuid && Some(&status.host) == host.as_ref())
                .map(|(_, status)| status);
            out.push(DomainSummary {
                id: None,
                state: cluster_state(host.as_deref(), status),
                name: c.name,
                uuid: c.uuid,
                autostart: c.autostart,
                managed_save: false,
                host: Some(host.unwrap_or_default()),
            });
        }
        out
    }

    /// `undefine` of a cluster guest: removed from etcd, refused while a host runs it. `None`
    /// when `id` is no cluster guest (or etcd is out of reach and `id` is a local domain): the
    /// local undefine applies.
    pub async fn undefine(&self, id: &str) -> DaemonResult<Option<DomainSummary>> {
        let Some(config) = self.config.as_ref() else {
            return Ok(None);
        };
        let local = self.local_info(id).await?.is_some();
        let found = async {
            let etcd = self.etcd(config).await?;
            let guest = etcd.find_domain(id).await.map_err(unavailable)?;
            Ok::<_, DaemonError>((etcd, guest))
        };
        let (etcd, guest) = match found.await {
            Ok((etcd, Some(guest))) => (etcd, guest),
            Ok((_, None)) => return Ok(None),
            Err(_) if local => return Ok(None),
            Err(err) => return Err(err),
        };
        if !etcd.delete_domain(&guest).await.map_err(unavailable)? {
            let host = etcd
                .runner(&guest.uuid)
                .await
                .map_err(unavailable)?
                .unwrap_or_default();
            return Err(invalid_state(format!(
                "domain '{}' is running on host '{host}': stop it before undefining it",
                guest.name
            )));
        }
        tracing::info!(domain = %guest.name, uuid = %guest.uuid, "undefined from the cluster");
        Ok(Some(DomainSummary {
            id: None,
            name: guest.name,
            uuid: guest.uuid,
            state: DomainState::ShutOff,
            autostart: false,
            managed_save: false,
            host: Some(String::new()),
        }))
    }

    /// `dominfo`/`domstate` of a cluster guest that has no local copy here: its definition in
    /// etcd, running (reason "unknown": the member that runs it knows it) on the host that holds
    /// its lock, or shut off while nobody does. `None` when `id` is no cluster guest.
    pub async fn info(&self, id: &str) -> DaemonResult<Option<DomainInfo>> {
        let Some(config) = self.config.as_ref() else {
            return Ok(None);
        };
        let etcd = self.etcd(config).await?;
        let Some(guest) = etcd.find_domain(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let host = etcd.runner(&guest.uuid).await.map_err(unavailable)?;
        let status = match &host {
            Some(host) => etcd
                .statuses()
                .await
                .map_err(unavailable)?
                .into_iter()
                .find(|(uuid, status)| *uuid == guest.uuid && status.host == *host)
                .map(|(_, status)| status),
            None => None,
        };
        let domain = oxvirt_domain::parse_domain_xml(&guest.xml).map_err(definition_error)?;
        let state = cluster_state(host.as_deref(), status.as_ref());
        let reason = status.as_ref().map_or("unknown", |s| s.reason.as_str());
        let mut info = self
            .domains
            .info_of_definition(&domain, state, reason, host);
        if let Some(status) = status {
            info.cpu_time_ns = status.cpu_time_ns;
            info.used_memory_kib = status.used_memory_kib;
        }
        info.autostart = guest.autostart;
        Ok(Some(info))
    }

    /// `dumpxml` of a cluster guest that has no local copy here.
    pub async fn xml(&self, id: &str) -> DaemonResult<Option<String>> {
        let Some(config) = self.config.as_ref() else {
            return Ok(None);
        };
        let etcd = self.etcd(config).await?;
        let found = etcd.find_domain(id).await.map_err(unavailable)?;
        Ok(found.map(|d| d.xml))
    }

    /// `migrate` of the domain `id` from this host: a cluster guest's lock, which the
    /// destination takes over (migration_lock.rs); `None` for a domain of this host only.
    /// Refused when the lock is not this host's, or etcd is out of reach (the lock cannot move).
    pub async fn source_lock(
        self: &Arc<Self>,
        id: &str,
    ) -> DaemonResult<Option<Arc<dyn SourceLock>>> {
        let Some(config) = self.config.as_ref() else {
            return Ok(None);
        };
        let info = self.local_info(id).await?;
        // Unknown here: the migration itself says so.
        let Some(info) = info else {
            return Ok(None);
        };
        let known = lock(&self.known_guests).contains(&info.uuid);
        let guest = match self.etcd(config).await {
            Ok(etcd) => etcd.domain(&info.uuid).await.map_err(unavailable),
            Err(err) => Err(err),
        };
        let guest = match guest {
            Ok(Some(guest)) => guest,
            Ok(None) => return Ok(None),
            // A local domain moves with etcd down; a cluster guest cannot (nor its lock).
            Err(_) if !known => return Ok(None),
            Err(err) => return Err(err),
        };
        let member = self.joined(config).await?;
        let holder = member.holder();
        match member.etcd().lock_of(&guest.uuid).await.map_err(unavailable)? {
            Some((held, _)) if held == holder => {}
            other => {
                return Err(invalid_state(format!(
                    "domain '{}' is a cluster guest whose lock is {}, not this host's: it cannot migrate from here",
                    guest.name,
                    describe_holder(other.map(|(held, _)| held).as_ref())
                )))
            }
        }
        Ok(Some(Arc::new(MigrationLock {
            cluster: self.clone(),
            member,
            uuid: guest.uuid,
            name: guest.name,
            ha: guest.ha,
            source: holder,
        })))
    }

    /// A prepare of an incoming migration: for a cluster guest (the source sent its hold of
    /// the lock), this host must be a member of the same cluster, where the lock is the
    /// source's as sent. `None` for any other domain.
    pub async fn incoming_lock(
        self: &Arc<Self>,
        request: &PrepareMigration,
    ) -> DaemonResult<Option<Arc<dyn DestinationLock>>> {
        let Some(source) = &request.cluster else {
            return Ok(None);
        };
        let domain = oxvirt_domain::parse_domain_xml(&request.xml).map_err(definition_error)?;
        let uuid = domain.uuid.to_string();
        let Some(config) = self.config.as_ref() else {
            return Err(invalid_state(format!(
                "this oxvirtd is not a member of a cluster, and domain '{}' is a cluster guest (of host '{}'): it moves only between members of its cluster",
                domain.name, source.host
            )));
        };
        let member = self.joined(config).await?;
        let etcd = member.etcd();
        let guest = etcd.domain(&uuid).await.map_err(unavailable)?.ok_or_else(|| {
            invalid_state(format!(
                "domain '{}' is not a guest of the cluster of host '{}' (etcd {}): it moves only between members of its own cluster",
                domain.name,
                config.host_name,
                config.endpoints.join(",")
            ))
        })?;
        match etcd.lock_of(&uuid).await.map_err(unavailable)? {
            Some((held, _)) if held == *source => {}
            other => {
                return Err(invalid_state(format!(
                "the cluster lock of domain '{}' is {} here, not host '{}''s as the source says",
                guest.name,
                describe_holder(other.map(|(held, _)| held).as_ref()),
                source.host
            )))
            }
        }
        lock(&self.known_guests).insert(uuid.clone());
        Ok(Some(Arc::new(MigrationLock {
            cluster: self.clone(),
            member,
            uuid,
            name: guest.name,
            ha: guest.ha,
            source: source.clone(),
        })))
    }

    /// The members the running domain `id` of this host can migrate to, best first by the
    /// placement rules (placement::rank_migration): live, with an engine, its memory free and an
    /// API address; the larger CPU group first, and only this host's CPU model for a guest given
    /// the host's CPU; no host running a guest of its spread group while another can take it
    /// (counting where the cluster's guests run now, so those moved before count).
    pub async fn migration_targets(&self, id: &str) -> DaemonResult<MigrationTargets> {
        let config = self.config()?;
        let local = {
            let domains = self.domains.clone();
            let id = id.to_string();
            blocking(move || {
                let info = domains.info(&id)?;
                let xml = domains.xml(&id)?;
                Ok((info, xml))
            })
            .await?
        };
        let (info, xml) = local;
        if !info.state.is_active() {
            return Err(invalid_state(format!(
                "domain '{}' does not run here: only a running guest migrates",
                info.name
            )));
        }
        let domain = oxvirt_domain::parse_domain_xml(&xml).map_err(definition_error)?;
        let member = self.joined(config).await?;
        let etcd = member.etcd();
        // A cluster guest as etcd has it; any other as its definition here says.
        let guest = match etcd.domain(&info.uuid).await.map_err(unavailable)? {
            Some(guest) => guest,
            None => cluster_record(&domain),
        };
        let same_cpu = domain.cpu.as_ref().is_some_and(|cpu| {
            matches!(
                cpu.mode,
                oxvirt_domain::CpuMode::HostPassthrough
                    | oxvirt_domain::CpuMode::HostModel
                    | oxvirt_domain::CpuMode::Maximum
            )
        });
        // Only members whose API the migration can reach.
        let hosts: Vec<_> = etcd
            .hosts()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|m| m.host.name == config.host_name || m.host.api_address.is_some())
            .collect();
        let running = etcd.running().await.map_err(unavailable)?;
        let domains = etcd.domains().await.map_err(unavailable)?;
        let ranked = placement::rank_migration(
            &guest,
            &config.host_name,
            same_cpu,
            &hosts,
            &running,
            &domains,
        )
        .map_err(invalid_state)?;
        let targets = ranked
            .into_iter()
            .filter_map(|name| {
                let host = hosts.iter().find(|m| m.host.name == name)?;
                Some(MigrationTarget {
                    api_address: host.host.api_address.clone()?,
                    name,
                })
            })
            .collect();
        Ok(MigrationTargets { targets })
    }

    /// The membership, or why this host has none yet.
    async fn joined(&self, config: &ClusterConfig) -> DaemonResult<Arc<Member>> {
        self.member.read().await.clone().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unavailable,
                format!(
                    "host '{}' has not joined the cluster yet (etcd {})",
                    config.host_name,
                    config.endpoints.join(",")
                ),
            )
        })
    }

    /// `start`: a cluster guest is placed and started on the chosen host; any other domain is
    /// started here as without a cluster.
    pub async fn start_domain(&self, id: &str) -> DaemonResult<DomainSummary> {
        let Some(config) = self.config.as_ref() else {
            return self.domains.start(id).await;
        };
        let local = self.local_info(id).await?;
        let found = async {
            let etcd = self.etcd(config).await?;
            etcd.find_domain(id).await.map_err(unavailable)
        };
        let guest = match found.await {
            Ok(Some(guest)) => guest,
            Ok(None) => return self.domains.start(id).await,
            // etcd out of reach: a local domain starts as always; a cluster guest cannot (its
            // lock cannot be taken), not even its stopped local copy, which only a reachable etcd
            // lets this host remove: the cluster may run it elsewhere.
            Err(_)
                if local
                    .as_ref()
                    .is_some_and(|l| !lock(&self.known_guests).contains(&l.uuid)) =>
            {
                return self.domains.start(id).await
            }
            Err(err) => return Err(err),
        };
        if let Some(local) = local.filter(|l| l.uuid != guest.uuid) {
            return Err(DaemonError::new(
                ErrorKind::InvalidState,
                format!(
                    "'{id}' names both this host's domain (uuid {}) and a cluster guest (uuid {}): \
                     start it by its UUID",
                    local.uuid, guest.uuid
                ),
            ));
        }
        let member = self.joined(config).await?;
        let etcd = member.etcd().clone();
        if let Some(host) = etcd.runner(&guest.uuid).await.map_err(unavailable)? {
            return Err(invalid_state(format!(
                "domain '{}' is already running on host '{host}'",
                guest.name
            )));
        }
        let hosts = etcd.hosts().await.map_err(unavailable)?;
        let running = etcd.running().await.map_err(unavailable)?;
        let domains = etcd.domains().await.map_err(unavailable)?;
        let ranked = placement::rank(&guest, &hosts, &running, &domains)
            .map_err(|why| DaemonError::new(ErrorKind::InvalidState, why))?;
        let mut failures = Vec::new();
        for host in ranked {
            let started = if host == config.host_name {
                self.start_here(&member, &guest, false).await
            } else {
                self.start_on(&member, &host, &guest).await
            };
            match started {
                Ok(()) => {
                    tracing::info!(domain = %guest.name, %host, "cluster guest started");
                    return Ok(DomainSummary {
                        id: None,
                        name: guest.name,
                        uuid: guest.uuid,
                        state: DomainState::Running,
                        autostart: false,
                        managed_save: false,
                        host: Some(host),
                    });
                }
                // Someone else started it meanwhile: no other host may.
                Err(err) if err.kind == ErrorKind::InvalidState => return Err(err),
                Err(err) => failures.push(format!("{host}: {}", err.message)),
            }
        }
        Err(DaemonError::new(
            ErrorKind::Engine,
            format!(
                "no host could start '{}': {}",
                guest.name,
                failures.join("; ")
            ),
        ))
    }

    /// Asks `host` to start `guest` and waits for its answer.
    async fn start_on(
        &self,
        member: &Member,
        host: &str,
        guest: &ClusterDomain,
    ) -> DaemonResult<()> {
        self.ask(member, host, guest, Action::Start, None)
            .await
            .map(drop)
    }

    /// Asks `host` (through etcd) to do `action` with `guest` and waits for its answer: the
    /// guest's state after it.
    async fn ask(
        &self,
        member: &Member,
        host: &str,
        guest: &ClusterDomain,
        action: Action,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainState> {
        let etcd = member.etcd();
        etcd.ask(member, host, &guest.uuid, action, timeout_secs)
            .await
            .map_err(unavailable)?;
        let wait = ANSWER_TIMEOUT + Duration::from_secs(timeout_secs.unwrap_or(0));
        let deadline = Instant::now() + wait;
        let key = oxvirt_cluster::keys::request(host, &guest.uuid);
        let answer = loop {
            let revision = match etcd.request_at(host, &guest.uuid).await {
                Ok((Some(request), _)) if request.state != RequestState::Pending => {
                    break Ok(request.state)
                }
                Ok((Some(_), revision)) => Some(revision),
                Ok((None, _)) => break Err("its request vanished".to_string()),
                // etcd may answer again before the deadline.
                Err(err) => {
                    tracing::debug!("waiting for {host}: {err}");
                    None
                }
            };
            if Instant::now() > deadline {
                break Err(format!("{host} did not answer within {}s", wait.as_secs()));
            }
            match revision {
                Some(revision) => etcd.wait_for_change(&key, revision, REQUEST_WAIT).await,
                None => tokio::time::sleep(REQUEST_POLL).await,
            }
        };
        let _ = etcd.delete_request(host, &guest.uuid).await;
        match answer {
            Ok(RequestState::Done(state)) => Ok(state),
            Ok(RequestState::Failed(why))
                if why.contains("is already running on host") || why.contains("is not running") =>
            {
                Err(invalid_state(why))
            }
            Ok(RequestState::Failed(why)) => Err(DaemonError::new(ErrorKind::Engine, why)),
            Ok(RequestState::Pending) | Err(_) => Err(DaemonError::new(
                ErrorKind::Engine,
                answer.err().unwrap_or_default(),
            )),
        }
    }

    /// A lifecycle action (`POST /v1/domains/{id}/ACTION`). Outside a cluster, and for this
    /// host's own domains, it acts here. On a member: `start` of a cluster guest places it
    /// ([`Cluster::start_domain`]); the other actions of a cluster guest that runs on another
    /// member are asked of that member through etcd, as a placed start is, so that any member
    /// manages every guest.
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainSummary> {
        if action == Action::Start {
            return self.start_domain(id).await;
        }
        if let Some(config) = self.config.as_ref() {
            if let Some((member, guest, host)) = self.runs_elsewhere(config, id).await? {
                let state = self
                    .ask(&member, &host, &guest, action, timeout_secs)
                    .await?;
                tracing::info!(domain = %guest.name, %host, action = action.as_str(), "asked of its host");
                return Ok(DomainSummary {
                    id: None,
                    name: guest.name,
                    uuid: guest.uuid,
                    state,
                    autostart: false,
                    managed_save: false,
                    host: Some(host),
                });
            }
        }
        self.act_here(id, action, timeout_secs).await
    }

    /// The cluster guest `id` names, with the member running it, when that is another member
    /// and this host has no domain `id` of its own. `None` also when etcd is out of reach: the
    /// action then applies to this host's domains as without a cluster.
    async fn runs_elsewhere(
        &self,
        config: &ClusterConfig,
        id: &str,
    ) -> DaemonResult<Option<(Arc<Member>, ClusterDomain, String)>> {
        let has_local = self.local_info(id).await?.is_some();
        if has_local {
            return Ok(None);
        }
        let found = async {
            let etcd = self.etcd(config).await?;
            let Some(guest) = etcd.find_domain(id).await.map_err(unavailable)? else {
                return Ok(None);
            };
            let runner = etcd.runner(&guest.uuid).await.map_err(unavailable)?;
            Ok::<_, DaemonError>(Some((guest, runner)))
        };
        let Ok(Some((guest, runner))) = found.await else {
            return Ok(None);
        };
        match runner {
            Some(host) if host != config.host_name => {
                Ok(Some((self.joined(config).await?, guest, host)))
            }
            Some(_) => Ok(None),
            None => Err(invalid_state(format!(
                "domain '{}' is not running (a cluster guest, on no host now)",
                guest.name
            ))),
        }
    }

    /// A lifecycle action on this host's domain `id`.
    async fn act_here(
        &self,
        id: &str,
        action: Action,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainSummary> {
        let done = match action {
            Action::Start => self.domains.start(id).await,
            Action::Shutdown => self.domains.shutdown(id, timeout_secs).await,
            Action::Destroy => self.domains.destroy(id).await,
            Action::Reboot => self.domains.reboot(id).await,
            Action::Reset => self.domains.reset(id).await,
            Action::Suspend => self.domains.suspend(id).await,
            Action::Resume => self.domains.resume(id).await,
        }?;
        if done.state == DomainState::ShutOff {
            self.release_stopped(&done.uuid).await;
        }
        Ok(done)
    }

    /// A cluster guest a user stopped here: its local copy and lock go now, so that every
    /// member sees it shut off once the command returned (the reconcile would at the next
    /// renewal; it still does for a guest that stops by itself).
    async fn release_stopped(&self, uuid: &str) {
        if !lock(&self.known_guests).contains(uuid) {
            return;
        }
        let Some(member) = self.member.read().await.clone() else {
            return;
        };
        // The lock first: with etcd out of reach the stopped copy stays (only a reachable etcd
        // lets this host drop it), and the reconcile finishes the job later.
        match member.unlock_guest(uuid, true).await {
            Ok(()) => self.drop_copy(uuid).await,
            Err(err) => {
                tracing::warn!(%uuid, "cluster guest stopped here, its lock left to the next renewal: {err}")
            }
        }
    }

    /// Starts `guest` on this host: takes its lock, defines the local copy, starts it; undoes
    /// both on failure.
    async fn start_here(
        &self,
        member: &Member,
        guest: &ClusterDomain,
        restart: bool,
    ) -> DaemonResult<()> {
        // A copy migrating in (or out) is the migration's, not a started guest: an HA restart
        // that took it for one would leave the guest running nowhere once the migration failed.
        if self.domains.migrating(&guest.uuid) {
            return Err(invalid_state(format!(
                "domain '{}' is migrating to or from host '{}'; try again once that ended",
                guest.name,
                self.config()?.host_name
            )));
        }
        let _starting = Starting::new(&self.starting, &guest.uuid);
        lock(&self.known_guests).insert(guest.uuid.clone());
        match member.lock_guest(&guest.uuid).await.map_err(unavailable)? {
            Ok(()) => {}
            Err(holder) => {
                return Err(invalid_state(format!(
                    "domain '{}' is already running on host '{holder}'",
                    guest.name
                )))
            }
        }
        let domains = self.domains.clone();
        let xml = guest.xml.clone();
        let uuid = guest.uuid.clone();
        let defined = blocking(move || {
            match domains.info(&uuid) {
                Ok(info) if info.state.is_active() => return Ok(true),
                _ => {}
            }
            domains.define(&xml).map(|_| false)
        })
        .await;
        let started = match defined {
            Ok(true) => Ok(()),
            Ok(false) => self.domains.start(&guest.uuid).await.map(drop),
            Err(err) => Err(err),
        };
        if started.is_ok() && guest.ha {
            // Fenced from now on, not only from the next renewal's reconcile: the lease may be
            // lost before that.
            lock(&self.ha_here).insert(guest.uuid.clone());
        }
        if let Err(err) = started {
            self.drop_copy(&guest.uuid).await;
            // A user's start that failed is not wanted; an HA restart still is.
            let _ = member.unlock_guest(&guest.uuid, !restart).await;
            return Err(err);
        }
        Ok(())
    }

    /// `action` asked by another member, on this host's running copy of the cluster guest.
    async fn act_on_copy(
        &self,
        guest: &ClusterDomain,
        action: Action,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainSummary> {
        let runs_here = self
            .local_info(&guest.uuid)
            .await?
            .is_some_and(|d| d.state.is_active());
        if !runs_here {
            return Err(invalid_state(format!(
                "domain '{}' is not running on host '{}'",
                guest.name,
                self.config()?.host_name
            )));
        }
        self.act_here(&guest.uuid, action, timeout_secs).await
    }

    /// Removes the stopped local copy of the cluster guest `uuid`, if there is one.
    async fn drop_copy(&self, uuid: &str) {
        let domains = self.domains.clone();
        let uuid = uuid.to_string();
        let _ = blocking(move || {
            if domains.info(&uuid).is_ok_and(|d| !d.state.is_active()) {
                domains.undefine(&uuid, &UndefineOptions::default())?;
            }
            Ok(())
        })
        .await;
    }

    /// Answers the requests of other members: to start a guest here, or to act on one that runs
    /// here.
    async fn serve_requests(self: Arc<Self>, name: String) {
        let handling: Arc<Mutex<HashSet<String>>> = Arc::default();
        let prefix = oxvirt_cluster::keys::requests_of(&name);
        loop {
            let Some(member) = self.member.read().await.clone() else {
                tokio::time::sleep(REQUEST_POLL).await;
                continue;
            };
            let Ok((requests, revision)) = member.etcd().requests_to(&name).await else {
                tokio::time::sleep(REQUEST_POLL).await;
                continue;
            };
            for (uuid, request) in requests {
                if request.state != RequestState::Pending {
                    continue;
                }
                if !lock(&handling).insert(uuid.clone()) {
                    continue;
                }
                let cluster = self.clone();
                let member = member.clone();
                let name = name.clone();
                let handling = handling.clone();
                tokio::spawn(async move {
                    let answer = match member.etcd().domain(&uuid).await {
                        Ok(Some(guest)) => match request.action {
                            Action::Start => match cluster.start_here(&member, &guest, false).await
                            {
                                Ok(()) => RequestState::Done(DomainState::Running),
                                Err(err) => RequestState::Failed(err.message),
                            },
                            // Only a guest this host runs: not another one it may have.
                            action => match cluster
                                .act_on_copy(&guest, action, request.timeout_secs)
                                .await
                            {
                                Ok(done) => RequestState::Done(done.state),
                                Err(err) => RequestState::Failed(err.message),
                            },
                        },
                        Ok(None) => RequestState::Failed(format!("no cluster domain {uuid}")),
                        Err(err) => RequestState::Failed(err.to_string()),
                    };
                    let action = request.action.as_str();
                    tracing::info!(%uuid, from = %request.from, action, ?answer, "request answered");
                    let _ = member.etcd().answer_request(&name, &uuid, answer).await;
                    lock(&handling).remove(&uuid);
                });
            }
            member
                .etcd()
                .wait_for_change(&prefix, revision, REQUEST_WAIT)
                .await;
        }
    }

    /// Keeps this host's side of the cluster's guests true, once per renewal:
    /// - local copies of cluster guests that stopped here are removed, their lock released (and
    ///   the guest marked as not wanted: it stopped on a live host, nobody restarts it);
    /// - a copy running here without this host's lock (the lease was lost and taken again) takes
    ///   it back, or is destroyed when another host holds it: the guest runs there;
    /// - a wanted HA guest without a lock lost its host: the best-ranked live host restarts it
    ///   (the N-th ranked once it has stayed without one for N [`HA_STEP`]s).
    async fn reconcile(self: &Arc<Self>, member: &Arc<Member>) -> Result<(), ClusterError> {
        let etcd = member.etcd();
        let cluster_domains = etcd.domains().await?;
        *lock(&self.known_guests) = cluster_domains.iter().map(|d| d.uuid.clone()).collect();
        let running = etcd.running().await?;
        let held: Vec<String> = running
            .iter()
            .filter(|(_, host)| host == member.name())
            .map(|(uuid, _)| uuid.clone())
            .collect();
        let domains = self.domains.clone();
        let local = blocking(move || domains.list()).await.unwrap_or_default();
        let starting = lock(&self.starting).clone();
        let is_cluster = |uuid: &str| cluster_domains.iter().any(|d| d.uuid == uuid);
        let mut ha_here = HashSet::new();
        let mut runs_here = Vec::new();
        // A copy that migrates out or in is the migration's: its lock moves with it.
        let migrating = |uuid: &str| self.domains.migrating(uuid);
        for d in &local {
            if !is_cluster(&d.uuid) || starting.contains(&d.uuid) || migrating(&d.uuid) {
                continue;
            }
            if !d.state.is_active() {
                self.drop_copy(&d.uuid).await;
                continue;
            }
            if !held.contains(&d.uuid) {
                if let Err(holder) = member.lock_guest(&d.uuid).await? {
                    tracing::warn!(domain = %d.name, %holder, "cluster guest runs on another host: destroying the copy here");
                    let _ = self.domains.destroy(&d.uuid).await;
                    self.drop_copy(&d.uuid).await;
                    continue;
                }
            }
            if cluster_domains.iter().any(|c| c.uuid == d.uuid && c.ha) {
                ha_here.insert(d.uuid.clone());
            }
            runs_here.push(d.uuid.clone());
        }
        self.publish_statuses(member, runs_here).await?;
        {
            // Started here since (in `starting`) or running: kept; stopped: forgotten.
            let mut set = lock(&self.ha_here);
            set.retain(|uuid| {
                starting.contains(uuid)
                    || local.iter().any(|d| d.uuid == *uuid && d.state.is_active())
            });
            set.extend(ha_here);
        }
        for uuid in held {
            let runs = local.iter().any(|d| d.uuid == uuid && d.state.is_active());
            if !runs && !starting.contains(&uuid) && !migrating(&uuid) {
                member.unlock_guest(&uuid, true).await?;
                tracing::info!(%uuid, "cluster guest stopped here: its lock released");
            }
        }
        // High availability: wanted, HA, and no host holds its lock.
        let wanted = etcd.wanted().await?;
        let orphans: Vec<&ClusterDomain> = cluster_domains
            .iter()
            .filter(|d| d.ha && wanted.contains(&d.uuid))
            .filter(|d| !running.iter().any(|(uuid, _)| *uuid == d.uuid))
            .collect();
        let since: Vec<Instant> = {
            let mut missing = lock(&self.missing_since);
            missing.retain(|uuid, _| orphans.iter().any(|d| d.uuid == *uuid));
            orphans
                .iter()
                .map(|d| *missing.entry(d.uuid.clone()).or_insert_with(Instant::now))
                .collect()
        };
        if orphans.is_empty() {
            return Ok(());
        }
        let hosts = etcd.hosts().await?;
        for (guest, since) in orphans.into_iter().zip(since) {
            let Ok(ranked) = placement::rank(guest, &hosts, &running, &cluster_domains) else {
                continue;
            };
            let due = ranked
                .iter()
                .position(|h| h == member.name())
                .is_some_and(|n| since.elapsed() >= HA_STEP * n as u32);
            if !due || starting.contains(&guest.uuid) {
                continue;
            }
            tracing::warn!(domain = %guest.name, "HA guest lost its host: restarting it here");
            let cluster = self.clone();
            let member = member.clone();
            let guest = guest.clone();
            // Off the renewal loop: a start takes seconds, the lease must not wait for it.
            tokio::spawn(async move {
                match cluster.start_here(&member, &guest, true).await {
                    Ok(()) => tracing::info!(domain = %guest.name, "HA guest restarted here"),
                    Err(err) => tracing::warn!(domain = %guest.name, "HA restart failed: {err}"),
                }
            });
        }
        Ok(())
    }

    /// Publishes the state of the cluster guests running here (their lock is this host's), for
    /// the other members' `dominfo`, `domstate` and `list`.
    async fn publish_statuses(
        &self,
        member: &Member,
        uuids: Vec<String>,
    ) -> Result<(), ClusterError> {
        let domains = self.domains.clone();
        let infos =
            blocking(move || Ok(uuids.iter().filter_map(|u| domains.info(u).ok()).collect()))
                .await
                .unwrap_or_else(|_| Vec::<DomainInfo>::new());
        for info in infos {
            let status = RunnerReport {
                host: member.name().to_string(),
                state: info.state,
                reason: info.state_reason,
                cpu_time_ns: info.cpu_time_ns,
                used_memory_kib: info.used_memory_kib,
            };
            member.publish_status(&info.uuid, &status).await?;
        }
        Ok(())
    }

    /// Self-fencing: once this host has not renewed its lease for [`FENCE_AFTER`], it destroys
    /// its HA guests, before the lease can expire and another host restart them.
    async fn fence(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let late = lock(&self.last_renewed).is_some_and(|at| at.elapsed() > FENCE_AFTER);
            if !late {
                continue;
            }
            let guests: Vec<String> = lock(&self.ha_here).drain().collect();
            for uuid in guests {
                tracing::warn!(%uuid, "cluster lease not renewed for {}s: destroying this HA guest (self-fencing)", FENCE_AFTER.as_secs());
                if let Err(err) = self.domains.fence(&uuid).await {
                    tracing::warn!(%uuid, "self-fencing: {err}");
                }
            }
        }
    }
}

/// What etcd keeps of a cluster guest, and placement reads.
fn cluster_record(domain: &oxvirt_domain::Domain) -> ClusterDomain {
    let placement = domain.placement().unwrap_or_default();
    ClusterDomain {
        uuid: domain.uuid.to_string(),
        name: domain.name.clone(),
        xml: domain.to_xml(),
        memory_kib: domain.memory_kib,
        group: placement.group,
        spread: placement.spread,
        ha: placement.ha,
        disk_paths: domain
            .devices
            .disks
            .iter()
            .filter_map(|disk| disk.source.clone())
            .collect(),
        disk_pools: domain
            .devices
            .disks
            .iter()
            .filter_map(|disk| Some(disk.volume.as_ref()?.pool.clone()))
            .collect(),
        autostart: false,
    }
}

/// A cluster guest's state on a member that does not run it: as its host last published it,
/// running while a host holds its lock and has published nothing yet, else shut off.
fn cluster_state(host: Option<&str>, status: Option<&RunnerReport>) -> DomainState {
    match (host, status) {
        (Some(_), Some(status)) => status.state,
        (Some(_), None) => DomainState::Running,
        (None, _) => DomainState::ShutOff,
    }
}

/// "host 'NAME''s lock" or "held by nobody", for messages.
fn describe_holder(holder: Option<&LockHolder>) -> String {
    match holder {
        Some(holder) => format!("held by host '{}'", holder.host),
        None => "held by nobody".to_string(),
    }
}

/// A cluster guest's lock while the guest migrates (docs/cluster.md, "Migrating a cluster
/// guest"): on the source, `member` is the source and `source` its own hold; on the
/// destination, `member` is the destination and `source` the hold it takes over.
struct MigrationLock {
    cluster: Arc<Cluster>,
    member: Arc<Member>,
    uuid: String,
    name: String,
    ha: bool,
    source: LockHolder,
}

impl MigrationLock {
    /// Who holds the lock now, for a refusal.
    async fn holder_now(&self) -> String {
        match self.member.etcd().lock_of(&self.uuid).await {
            Ok(holder) => describe_holder(holder.map(|(held, _)| held).as_ref()),
            Err(err) => format!("unknown ({err})"),
        }
    }
}

#[async_trait]
impl SourceLock for MigrationLock {
    fn holder(&self) -> LockHolder {
        self.source.clone()
    }

    async fn check_destination(&self, host: Option<&str>) -> DaemonResult<()> {
        let Some(host) = host else {
            return Err(invalid_state(format!(
                "the destination oxvirtd is not a member of this cluster: domain '{}' is a cluster guest, which moves only between members of its cluster",
                self.name
            )));
        };
        if host == self.member.name() {
            return Err(invalid_state(format!(
                "the destination is this host ('{host}') itself"
            )));
        }
        let hosts = self.member.etcd().hosts().await.map_err(unavailable)?;
        let live = hosts
            .iter()
            .any(|h| h.host.name == host && h.state == oxvirt_api::HostState::Up);
        if !live {
            return Err(invalid_state(format!(
                "the destination is host '{host}', which is not a live member of this cluster"
            )));
        }
        Ok(())
    }

    async fn offer(&self) -> DaemonResult<i64> {
        match self
            .member
            .etcd()
            .lock_of(&self.uuid)
            .await
            .map_err(unavailable)?
        {
            Some((held, revision)) if held == self.source => Ok(revision),
            other => Err(invalid_state(format!(
                "the cluster lock of domain '{}' is no longer this host's ({}): it cannot be handed over",
                self.name,
                describe_holder(other.map(|(held, _)| held).as_ref())
            ))),
        }
    }

    async fn keep(&self) -> DaemonResult<()> {
        let etcd = self.member.etcd();
        match etcd
            .pass_lock(&self.uuid, &self.source, &self.source, None)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(invalid_state(format!(
                "its cluster lock is {}",
                self.holder_now().await
            ))),
            Err(err) => Err(unavailable(err)),
        }
    }

    fn handed_over(&self) {
        lock(&self.cluster.ha_here).remove(&self.uuid);
        tracing::info!(domain = %self.name, "cluster guest migrated: its lock went with it");
    }
}

#[async_trait]
impl DestinationLock for MigrationLock {
    fn host(&self) -> String {
        self.member.name().to_string()
    }

    async fn take(&self, revision: Option<i64>) -> DaemonResult<()> {
        let Some(revision) = revision else {
            return Err(invalid_state(format!(
                "the source offered no lock for cluster guest '{}'",
                self.name
            )));
        };
        let etcd = self.member.etcd();
        let taken = etcd
            .pass_lock(
                &self.uuid,
                &self.source,
                &self.member.holder(),
                Some(revision),
            )
            .await
            .map_err(unavailable)?;
        if !taken {
            return Err(invalid_state(format!(
                "the cluster lock of domain '{}' is no longer host '{}''s as offered (its lease expired, or the migration was called off there; it is {}): the guest does not run here",
                self.name,
                self.source.host,
                self.holder_now().await
            )));
        }
        if self.ha {
            // Fenced here from now on, as a guest started here.
            lock(&self.cluster.ha_here).insert(self.uuid.clone());
        }
        tracing::info!(domain = %self.name, from = %self.source.host, "cluster guest's lock taken over");
        Ok(())
    }

    async fn give_back(&self) {
        lock(&self.cluster.ha_here).remove(&self.uuid);
        let etcd = self.member.etcd();
        match etcd
            .pass_lock(&self.uuid, &self.member.holder(), &self.source, None)
            .await
        {
            Ok(true) => {
                tracing::warn!(domain = %self.name, to = %self.source.host, "cluster guest did not resume here: its lock went back")
            }
            Ok(false) => {
                tracing::warn!(domain = %self.name, "cluster guest did not resume here, and its lock was not this host's any more")
            }
            Err(err) => {
                // The source's lease is gone (or etcd): released, the guest stays wanted.
                tracing::warn!(domain = %self.name, "cluster guest did not resume here, and its lock could not go back ({err}): released");
                let _ = self.member.unlock_guest(&self.uuid, false).await;
            }
        }
    }
}

/// Marks a cluster guest as being started here for as long as it lives.
struct Starting<'a> {
    set: &'a Mutex<HashSet<String>>,
    uuid: String,
}

impl<'a> Starting<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, uuid: &str) -> Starting<'a> {
        lock(set).insert(uuid.to_string());
        Starting {
            set,
            uuid: uuid.to_string(),
        }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.uuid);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves a set of UUIDs that is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a synchronous operation (SQLite, parsing) off the async workers.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> DaemonResult<T> + Send + 'static,
) -> DaemonResult<T> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("cluster operation: {e}")))?
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
