//! oxvirt's multi-host cluster, its state in etcd (docs/cluster.md).
//!
//! Each member oxvirtd ([`Member`]) holds a lease it keeps alive and publishes its
//! [`HostRecord`] twice: under `/oxvirt/hosts/NAME` without the lease (so a host whose lease
//! expired is still listed, as such) and `/oxvirt/alive/NAME` under it (gone when the lease
//! expires). [`Etcd::hosts`] reads both. Nothing here knows about guests' engines: the daemon
//! (crates/daemon/src/services/cluster.rs) publishes what it runs.
//!
//! Guests defined in the cluster (the keys are in [`keys`]):
//! - `/oxvirt/domains/UUID`: the [`ClusterDomain`] (its XML), and `/oxvirt/domain-names/NAME`
//!   its UUID, both written in one transaction so that names stay unique;
//! - `/oxvirt/running/UUID`: the name of the host running it, under that host's lease (the
//!   guest's lock: taken with create-if-absent, gone with the lease);
//! - `/oxvirt/wanted/UUID`: written with the lock, without a lease, removed with the lock when
//!   the guest stops on a live host: a wanted guest without a lock lost its host (HA restarts it);
//! - `/oxvirt/requests/HOST/UUID`: a [`GuestRequest`] to `HOST`: to start the guest, written by
//!   the member that placed it ([`placement::rank`]), or another lifecycle action of the guest
//!   `HOST` runs, written by the member a user asked; answered by `HOST` in the same key;
//! - `/oxvirt/status/UUID`: the [`RunnerReport`] its host last saw, under that host's lease,
//!   written once per renewal: how the other members answer `dominfo`, `domstate` and `list`.

pub mod placement;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
pub use oxvirt_api::cluster::{
    ClusterDomain, ClusterHost, ClusterPool, HostRecord, HostState, LockHolder,
};
pub use oxvirt_api::{Action, DomainState};
use serde::{Deserialize, Serialize};

/// Every key the cluster writes starts with this.
pub const PREFIX: &str = "/oxvirt/";
const HOSTS: &str = "/oxvirt/hosts/";
const ALIVE: &str = "/oxvirt/alive/";

/// The keys of the cluster's guests.
pub mod keys {
    pub const DOMAINS: &str = "/oxvirt/domains/";
    pub const NAMES: &str = "/oxvirt/domain-names/";
    pub const RUNNING: &str = "/oxvirt/running/";
    pub const REQUESTS: &str = "/oxvirt/requests/";
    pub const WANTED: &str = "/oxvirt/wanted/";
    pub const STATUS: &str = "/oxvirt/status/";

    pub fn domain(uuid: &str) -> String {
        format!("{DOMAINS}{uuid}")
    }
    pub fn name(name: &str) -> String {
        format!("{NAMES}{name}")
    }
    pub fn running(uuid: &str) -> String {
        format!("{RUNNING}{uuid}")
    }
    pub fn wanted(uuid: &str) -> String {
        format!("{WANTED}{uuid}")
    }
    pub fn status(uuid: &str) -> String {
        format!("{STATUS}{uuid}")
    }
    pub fn requests_of(host: &str) -> String {
        format!("{REQUESTS}{host}/")
    }
    pub fn request(host: &str, uuid: &str) -> String {
        format!("{REQUESTS}{host}/{uuid}")
    }
}

/// A member's request to another to start a guest, or to act on one it runs (`destroy`,
/// `shutdown`, `suspend`...), and that member's answer, in one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRequest {
    /// The member that asks.
    pub from: String,
    #[serde(default = "start")]
    pub action: Action,
    /// `shutdown`'s wait for the guest to stop.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    pub state: RequestState,
}

fn start() -> Action {
    Action::Start
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Not answered yet.
    Pending,
    /// Done, and the guest's state after it (started: the answering host holds its lock).
    Done(DomainState),
    /// Refused or failed, with why.
    Failed(String),
}

/// A running cluster guest as the host running it last saw it (once per renewal): stale by up to
/// a renewal, and only believed while `host` holds the guest's lock (a status left by the host
/// a guest migrated from is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReport {
    pub host: String,
    pub state: DomainState,
    /// virsh's reason, e.g. "migrated", "user".
    pub reason: String,
    pub cpu_time_ns: u64,
    pub used_memory_kib: u64,
}

/// How long a member's lease lives without renewal: a host that stops renewing (crash, kill,
/// network cut) is seen as down this long after its last renewal at most.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How long one request to etcd may take before it counts as etcd being unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `--cluster`'s value is not `etcd=URL[,URL...]`.
    #[error("'{spec}' is not a cluster setting like \"etcd=http://HOST:2379[,http://HOST2:2379]\": {reason}")]
    Spec { spec: String, reason: String },
    /// A host name that cannot be a key segment.
    #[error("'{name}' is not a host name: {reason}")]
    HostName { name: String, reason: &'static str },
    /// etcd did not answer, or refused.
    #[error("the cluster's etcd ({endpoints}) failed: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// A cluster guest's name or UUID is taken by another.
    #[error("{0}")]
    Conflict(String),
    /// etcd's answer came too late.
    #[error("the cluster's etcd ({endpoints}) did not answer within {}s", timeout.as_secs())]
    Timeout {
        endpoints: String,
        timeout: Duration,
    },
    /// The member's lease is gone (not renewed in time): whatever it held is no longer its.
    #[error("host '{host}' lost its cluster lease (not renewed within {}s)", LEASE_TTL.as_secs())]
    LeaseLost { host: String },
    /// A value in etcd that is not what oxvirt writes.
    #[error("the cluster's record at '{key}' is not valid: {source}")]
    BadRecord {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// The etcd endpoints of `--cluster etcd=URL[,URL...]`.
pub fn parse_spec(spec: &str) -> Result<Vec<String>> {
    let bad = |reason: &str| ClusterError::Spec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let Some(urls) = spec.trim().strip_prefix("etcd=") else {
        return Err(bad(
            "only an etcd cluster is supported: start it with \"etcd=\"",
        ));
    };
    let mut endpoints = Vec::new();
    for url in urls.split(',').map(str::trim) {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(bad(&format!(
                "endpoint '{url}' must start with http:// (TLS to etcd is not supported yet)"
            )));
        };
        let authority = rest.trim_end_matches('/');
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || authority.contains('/') {
            return Err(bad(&format!("endpoint '{url}' must be http://HOST:PORT")));
        }
        endpoints.push(format!("http://{authority}"));
    }
    Ok(endpoints)
}

/// Checks a `--host-name`: it is a key segment in etcd and a word in tables.
pub fn check_host_name(name: &str) -> Result<()> {
    let bad = |reason| ClusterError::HostName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("it must have 1 to 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

/// Seconds since the Unix epoch, for records' `updated`.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A connection to the cluster's etcd.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Etcd {
    /// Connects to `endpoints`; fails within [`REQUEST_TIMEOUT`] when none answers.
    pub async fn connect(endpoints: &[String]) -> Result<Etcd> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let joined = endpoints.join(",");
        let client = bounded(&joined, Client::connect(endpoints, Some(options))).await?;
        Ok(Etcd {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// Every host that ever joined, with whether its lease is alive, by name.
    pub async fn hosts(&self) -> Result<Vec<ClusterHost>> {
        let mut kv = self.client.kv_client();
        let prefix = GetOptions::new().with_prefix();
        let records = self.call(kv.get(HOSTS, Some(prefix.clone()))).await?;
        let alive = self.call(kv.get(ALIVE, Some(prefix))).await?;
        let alive: Vec<&[u8]> = alive
            .kvs()
            .iter()
            .map(|kv| &kv.key()[ALIVE.len()..])
            .collect();
        let mut hosts = Vec::new();
        for entry in records.kvs() {
            let key = String::from_utf8_lossy(entry.key()).into_owned();
            let host: HostRecord = serde_json::from_slice(entry.value()).map_err(|source| {
                ClusterError::BadRecord {
                    key: key.clone(),
                    source,
                }
            })?;
            let up = alive.contains(&host.name.as_bytes());
            hosts.push(ClusterHost {
                state: if up {
                    HostState::Up
                } else {
                    HostState::LeaseExpired
                },
                host,
            });
        }
        hosts.sort_by(|a, b| a.host.name.cmp(&b.host.name));
        Ok(hosts)
    }

    /// Stores a new cluster guest, or updates the one of that name and UUID; refused when the
    /// name or the UUID belongs to another.
    pub async fn put_domain(&self, domain: &ClusterDomain) -> Result<()> {
        let value = to_json(&keys::domain(&domain.uuid), domain)?;
        let mut kv = self.client.kv_client();
        let name_key = keys::name(&domain.name);
        let domain_key = keys::domain(&domain.uuid);
        // Either both keys are new, or the name already names this UUID.
        let txn = Txn::new()
            .when([
                Compare::create_revision(name_key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(domain_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(name_key.clone(), domain.uuid.clone(), None),
                TxnOp::put(domain_key.clone(), value.clone(), None),
            ]);
        if self.call(kv.txn(txn)).await?.succeeded() {
            return Ok(());
        }
        let update = Txn::new()
            .when([Compare::value(
                name_key.clone(),
                CompareOp::Equal,
                domain.uuid.clone(),
            )])
            .and_then([TxnOp::put(domain_key, value, None)]);
        if self.call(kv.txn(update)).await?.succeeded() {
            return Ok(());
        }
        match self.domain(&domain.uuid).await? {
            Some(other) => Err(ClusterError::Conflict(format!(
                "the cluster's domain with uuid {} is named '{}'",
                other.uuid, other.name
            ))),
            None => Err(ClusterError::Conflict(format!(
                "the cluster's domain '{}' exists with another uuid",
                domain.name
            ))),
        }
    }

    /// The cluster guest with this UUID.
    pub async fn domain(&self, uuid: &str) -> Result<Option<ClusterDomain>> {
        let mut kv = self.client.kv_client();
        let key = keys::domain(uuid);
        let answer = self.call(kv.get(key.clone(), None)).await?;
        answer
            .kvs()
            .first()
            .map(|entry| from_json(&key, entry.value()))
            .transpose()
    }

    /// Every cluster guest.
    pub async fn domains(&self) -> Result<Vec<ClusterDomain>> {
        let mut kv = self.client.kv_client();
        let answer = self
            .call(kv.get(keys::DOMAINS, Some(GetOptions::new().with_prefix())))
            .await?;
        answer
            .kvs()
            .iter()
            .map(|entry| from_json(&String::from_utf8_lossy(entry.key()), entry.value()))
            .collect()
    }

    /// The cluster guest named or with the UUID `id`.
    pub async fn find_domain(&self, id: &str) -> Result<Option<ClusterDomain>> {
        let mut kv = self.client.kv_client();
        let answer = self.call(kv.get(keys::name(id), None)).await?;
        let uuid = match answer.kvs().first() {
            Some(entry) => String::from_utf8_lossy(entry.value()).into_owned(),
            None => id.to_ascii_lowercase(),
        };
        self.domain(&uuid).await
    }

    /// Removes a cluster guest; refused while a host holds its lock.
    pub async fn delete_domain(&self, domain: &ClusterDomain) -> Result<bool> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys::running(&domain.uuid),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::delete(keys::domain(&domain.uuid), None),
                TxnOp::delete(keys::name(&domain.name), None),
            ]);
        Ok(self.call(kv.txn(txn)).await?.succeeded())
    }

    /// Who runs each cluster guest: (UUID, host).
    pub async fn running(&self) -> Result<Vec<(String, String)>> {
        self.under(keys::RUNNING).await
    }

    /// Every key under `prefix`, without it, with its value: (key, value).
    async fn under(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut kv = self.client.kv_client();
        let answer = self
            .call(kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        Ok(answer
            .kvs()
            .iter()
            .map(|entry| {
                (
                    String::from_utf8_lossy(&entry.key()[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(entry.value()).into_owned(),
                )
            })
            .collect())
    }

    /// Every published [`RunnerReport`], by UUID (a record that does not parse is left out: it
    /// only informs).
    pub async fn statuses(&self) -> Result<Vec<(String, RunnerReport)>> {
        Ok(self
            .under(keys::STATUS)
            .await?
            .into_iter()
            .filter_map(|(uuid, value)| {
                let status = from_json(&keys::status(&uuid), value.as_bytes()).ok()?;
                Some((uuid, status))
            })
            .collect())
    }

    /// The cluster guests that should run (started, not stopped on a live host), by UUID.
    pub async fn wanted(&self) -> Result<Vec<String>> {
        Ok(self
            .under(keys::WANTED)
            .await?
            .into_iter()
            .map(|(uuid, _)| uuid)
            .collect())
    }

    /// The host running the cluster guest `uuid`, if one holds its lock.
    pub async fn runner(&self, uuid: &str) -> Result<Option<String>> {
        let mut kv = self.client.kv_client();
        let answer = self.call(kv.get(keys::running(uuid), None)).await?;
        Ok(answer
            .kvs()
            .first()
            .map(|entry| String::from_utf8_lossy(entry.value()).into_owned()))
    }

    /// Who holds the lock of the cluster guest `uuid`, and the key's revision (it changes with
    /// every write of the lock: a holder that re-writes it calls off an earlier offer).
    pub async fn lock_of(&self, uuid: &str) -> Result<Option<(LockHolder, i64)>> {
        let mut kv = self.client.kv_client();
        let answer = self.call(kv.get(keys::running(uuid), None)).await?;
        Ok(answer.kvs().first().map(|entry| {
            (
                LockHolder {
                    host: String::from_utf8_lossy(entry.value()).into_owned(),
                    lease: entry.lease(),
                },
                entry.mod_revision(),
            )
        }))
    }

    /// Moves the lock of the cluster guest `uuid` from `from` to `to` in one transaction: only
    /// if the key names `from`'s host under `from`'s lease (and, with `revision`, was not
    /// written since). `false` when it did not (the lock is another's, or gone); an error
    /// naming `to` when `to`'s lease is gone. From a holder to itself it re-writes the key:
    /// the revision changes, so a takeover offered at the old revision fails from then on.
    pub async fn pass_lock(
        &self,
        uuid: &str,
        from: &LockHolder,
        to: &LockHolder,
        revision: Option<i64>,
    ) -> Result<bool> {
        let key = keys::running(uuid);
        let mut when = vec![
            Compare::value(key.clone(), CompareOp::Equal, from.host.clone()),
            Compare::lease(key.clone(), CompareOp::Equal, from.lease),
        ];
        if let Some(revision) = revision {
            when.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            ));
        }
        let txn = Txn::new().when(when).and_then([TxnOp::put(
            key,
            to.host.clone(),
            Some(PutOptions::new().with_lease(to.lease)),
        )]);
        let mut kv = self.client.kv_client();
        match self.call(kv.txn(txn)).await {
            Ok(answer) => Ok(answer.succeeded()),
            Err(ClusterError::Etcd { source, .. }) if lease_not_found(&source) => {
                Err(ClusterError::LeaseLost {
                    host: to.host.clone(),
                })
            }
            Err(err) => Err(err),
        }
    }

    /// Asks `host` to do `action` with the guest `uuid` (the request lives under `member`'s
    /// lease, so it goes away with the asking member).
    pub async fn ask(
        &self,
        member: &Member,
        host: &str,
        uuid: &str,
        action: Action,
        timeout_secs: Option<u64>,
    ) -> Result<()> {
        let key = keys::request(host, uuid);
        let request = GuestRequest {
            from: member.name.clone(),
            action,
            timeout_secs,
            state: RequestState::Pending,
        };
        let value = to_json(&key, &request)?;
        let mut kv = self.client.kv_client();
        let put = kv.put(key, value, Some(PutOptions::new().with_lease(member.lease)));
        self.call(put).await.map(drop)
    }

    /// The state of the request to `host` about `uuid`; `None` once it is gone.
    pub async fn request(&self, host: &str, uuid: &str) -> Result<Option<GuestRequest>> {
        Ok(self.request_at(host, uuid).await?.0)
    }

    /// [`Etcd::request`], with the revision etcd read it at (for [`Etcd::wait_for_change`]).
    pub async fn request_at(&self, host: &str, uuid: &str) -> Result<(Option<GuestRequest>, i64)> {
        let key = keys::request(host, uuid);
        let mut kv = self.client.kv_client();
        let answer = self.call(kv.get(key.clone(), None)).await?;
        let request = answer
            .kvs()
            .first()
            .map(|entry| from_json(&key, entry.value()))
            .transpose()?;
        Ok((request, revision_of(answer.header())))
    }

    /// Forgets the request to `host` about `uuid`.
    pub async fn delete_request(&self, host: &str, uuid: &str) -> Result<()> {
        let mut kv = self.client.kv_client();
        self.call(kv.delete(keys::request(host, uuid), None))
            .await
            .map(drop)
    }

    /// Every request to `host`: (UUID, request), and the revision etcd read them at (for
    /// [`Etcd::wait_for_change`]).
    pub async fn requests_to(&self, host: &str) -> Result<(Vec<(String, GuestRequest)>, i64)> {
        let prefix = keys::requests_of(host);
        let mut kv = self.client.kv_client();
        let answer = self
            .call(kv.get(prefix.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let requests = answer
            .kvs()
            .iter()
            .map(|entry| {
                let key = String::from_utf8_lossy(entry.key()).into_owned();
                let request = from_json(&key, entry.value())?;
                Ok((key[prefix.len()..].to_string(), request))
            })
            .collect::<Result<_>>()?;
        Ok((requests, revision_of(answer.header())))
    }

    /// Returns once a key starting with `prefix` changed after `revision` (that of the read the
    /// caller acted on: a change made since is not missed), or after `timeout`. A member waiting
    /// for a start request, or for the answer to its own, is woken by etcd instead of polling.
    /// Returns no error: the caller reads again either way; when etcd cannot be watched it
    /// waits the whole `timeout`, so a caller looping on it never spins.
    pub async fn wait_for_change(&self, prefix: &str, revision: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision.saturating_add(1));
        let mut watch = self.client.watch_client();
        let changed = async {
            let Ok(mut stream) = watch.watch(prefix, Some(options)).await else {
                return false;
            };
            // The first response only says the watch was created.
            while let Ok(Some(response)) = stream.message().await {
                if !response.events().is_empty() {
                    return true;
                }
                if response.canceled() {
                    return false;
                }
            }
            false
        };
        if let Ok(true) = tokio::time::timeout_at(deadline, changed).await {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }

    /// Answers a request to `host` (keeps the asking member's lease on the key; nothing when
    /// the request is gone).
    pub async fn answer_request(&self, host: &str, uuid: &str, state: RequestState) -> Result<()> {
        let key = keys::request(host, uuid);
        let Some(mut request) = self.request(host, uuid).await? else {
            return Ok(());
        };
        request.state = state;
        let value = to_json(&key, &request)?;
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        self.call(kv.txn(txn)).await.map(drop)
    }

    /// Runs one request with the endpoints named in its error and a bound on its time.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        bounded(&self.endpoints(), request).await
    }
}

/// The revision of etcd's store a read saw (0 without a header: a watch from 1 then).
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |header| header.revision())
}

/// `request`, failing after [`REQUEST_TIMEOUT`] (etcd-client's own timeout does not cover every
/// step of a connection).
async fn bounded<T>(
    endpoints: &str,
    request: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ClusterError::Etcd {
            endpoints: endpoints.to_string(),
            source,
        }),
        Err(_) => Err(ClusterError::Timeout {
            endpoints: endpoints.to_string(),
            timeout: REQUEST_TIMEOUT,
        }),
    }
}

/// This host's membership: its lease, kept alive by [`Member::renew`].
#[derive(Debug)]
pub struct Member {
    etcd: Etcd,
    name: String,
    lease: i64,
}

impl Member {
    /// Joins: takes a lease of [`LEASE_TTL`] and publishes `record` (whose name is this host's).
    pub async fn join(etcd: Etcd, record: &HostRecord) -> Result<Member> {
        check_host_name(&record.name)?;
        let mut lease_client = etcd.client.lease_client();
        let ttl = LEASE_TTL.as_secs() as i64;
        let lease = etcd.call(lease_client.grant(ttl, None)).await?.id();
        let member = Member {
            etcd,
            name: record.name.clone(),
            lease,
        };
        member.publish(record).await?;
        Ok(member)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This member as a lock's holder: its name and lease.
    pub fn holder(&self) -> LockHolder {
        LockHolder {
            host: self.name.clone(),
            lease: self.lease,
        }
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// Writes `record` (free memory, guests) as this host's: the lasting copy and the one under
    /// the lease.
    pub async fn publish(&self, record: &HostRecord) -> Result<()> {
        let value = serde_json::to_vec(record).map_err(|source| ClusterError::BadRecord {
            key: format!("{HOSTS}{}", self.name),
            source,
        })?;
        let mut kv = self.etcd.client.kv_client();
        self.etcd
            .call(kv.put(format!("{HOSTS}{}", self.name), value.clone(), None))
            .await?;
        let put = kv.put(
            format!("{ALIVE}{}", self.name),
            value,
            Some(PutOptions::new().with_lease(self.lease)),
        );
        match self.etcd.call(put).await {
            // etcd refuses a put under a lease it no longer has.
            Err(ClusterError::Etcd { source, .. }) if lease_not_found(&source) => {
                Err(ClusterError::LeaseLost {
                    host: self.name.clone(),
                })
            }
            other => other.map(drop),
        }
    }

    /// Renews the lease once; [`ClusterError::LeaseLost`] when it had already expired.
    pub async fn renew(&self) -> Result<()> {
        let mut lease_client = self.etcd.client.lease_client();
        let renewed = async {
            let (mut keeper, mut stream) = lease_client.keep_alive(self.lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match self.etcd.call(renewed).await? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            _ => Err(ClusterError::LeaseLost {
                host: self.name.clone(),
            }),
        }
    }
}

impl Member {
    /// Takes the lock of the cluster guest `uuid` for this host (create-if-absent, under the
    /// lease); `Err(holder)` when another host holds it. Holding it already counts as taken.
    pub async fn lock_guest(&self, uuid: &str) -> Result<std::result::Result<(), String>> {
        let key = keys::running(uuid);
        let mut kv = self.etcd.client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.clone(),
                    self.name.clone(),
                    Some(PutOptions::new().with_lease(self.lease)),
                ),
                TxnOp::put(keys::wanted(uuid), self.name.clone(), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let answer = match self.etcd.call(kv.txn(txn)).await {
            Err(ClusterError::Etcd { source, .. }) if lease_not_found(&source) => {
                return Err(ClusterError::LeaseLost {
                    host: self.name.clone(),
                })
            }
            other => other?,
        };
        if answer.succeeded() {
            return Ok(Ok(()));
        }
        let holder = answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if holder == self.name {
            Ok(Ok(()))
        } else {
            Ok(Err(holder))
        }
    }

    /// Publishes what this host sees of the cluster guest `uuid` it runs, under its lease.
    pub async fn publish_status(&self, uuid: &str, status: &RunnerReport) -> Result<()> {
        let key = keys::status(uuid);
        let value = to_json(&key, status)?;
        let mut kv = self.etcd.client.kv_client();
        self.etcd
            .call(kv.put(key, value, Some(PutOptions::new().with_lease(self.lease))))
            .await
            .map(drop)
    }

    /// Releases this host's lock of `uuid` (nothing if another host holds it); with `unwanted`
    /// also marks it as not wanted: it stopped here, or a user's start failed. Its status goes with it.
    pub async fn unlock_guest(&self, uuid: &str, unwanted: bool) -> Result<()> {
        let key = keys::running(uuid);
        let mut kv = self.etcd.client.kv_client();
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then(if unwanted {
                vec![
                    TxnOp::delete(key, None::<DeleteOptions>),
                    TxnOp::delete(keys::status(uuid), None),
                    TxnOp::delete(keys::wanted(uuid), None),
                ]
            } else {
                vec![
                    TxnOp::delete(key, None::<DeleteOptions>),
                    TxnOp::delete(keys::status(uuid), None),
                ]
            });
        self.etcd.call(kv.txn(txn)).await.map(drop)
    }
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| ClusterError::BadRecord {
        key: key.to_string(),
        source,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| ClusterError::BadRecord {
        key: key.to_string(),
        source,
    })
}

fn lease_not_found(err: &etcd_client::Error) -> bool {
    err.to_string().contains("requested lease not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("etcd=http://10.0.0.1:2379,http://h2:2379/").unwrap(),
            vec!["http://10.0.0.1:2379", "http://h2:2379"]
        );
        for bad in [
            "http://h:2379",
            "etcd=h:2379",
            "etcd=https://h:2379",
            "etcd=http://h",
            "etcd=http://h:2379/x",
            "etcd=",
        ] {
            let err = parse_spec(bad).unwrap_err().to_string();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn host_names() {
        assert!(check_host_name("host-a.example").is_ok());
        assert!(check_host_name("").is_err());
        assert!(check_host_name("a/b").is_err());
        assert!(check_host_name(&"x".repeat(64)).is_err());
    }
}
