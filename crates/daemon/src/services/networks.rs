//! Virtual networks in oxvirtd, and the host side of guest network interfaces.
//!
//! - Definitions live in the store's `networks` table (uuid, name, normalized XML, autostart,
//!   active). `active` is what the daemon keeps running: after a restart those networks are
//!   adopted (`NetworkManager::adopt`) and everything oxvirt left of other networks is removed
//!   (`cleanup_orphans`). On the very first start the daemon defines libvirt's `default` NAT
//!   network (unless started with `--no-default-network`), but does not mark it autostart:
//!   Debian's libvirt packaging autostarts it, which puts a NAT bridge with a private address on
//!   the host the moment the daemon starts; here the operator does that knowingly
//!   (`oxvirt net-autostart default; oxvirt net-start default`).
//! - Guests: when a domain starts, every `<interface type='network'|'bridge'>` gets a TAP device
//!   attached to the right bridge, owned by the domain's uuid (the TAP's ifalias), and the
//!   launched copy of the definition names it in `<target dev>`. That copy and the engine ids of
//!   its NICs are kept in `live_domains` while the guest runs (`domiflist`, `domifaddr`,
//!   `domifstat`, hotplug). The TAPs are removed when the guest stops for any reason, and at
//!   daemon start for domains that stopped while the daemon was away.
//! - `net-destroy` is allowed while guests use the network, as in libvirt: their TAPs lose the
//!   bridge (no traffic) until `net-start`, which attaches them again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use oxvirt_api::{NetworkInfo, NetworkLease};
use oxvirt_domain::{DirectMode, Domain, InterfaceSource, InterfaceType, MacAddr};
use oxvirt_net::{
    MacvtapMode, MacvtapRequest, NetError, NetXmlError, NetworkDef, NetworkManager, TapRequest,
};
use rusqlite::Transaction;
use uuid::Uuid;

use super::error::{db, internal, invalid_state, DaemonError, DaemonResult, ErrorKind};
use super::xml::names_uuid;
use crate::store::{
    self, all_live_domains, delete_live_domain, insert_network, list_networks, put_live_domain,
    set_network_flag, DomainRecord, LiveDomain, NetworkRecord, NicIds, Store,
};

/// `counters` row set once the default network was offered, so undefining it sticks.
const DEFAULT_OFFERED: &str = "default_network_offered";

/// The daemon's network side.
pub struct Networks {
    store: Arc<Store>,
    /// `None` when the host side could not be set up (e.g. no netlink); `unavailable` says why.
    manager: Option<NetworkManager>,
    unavailable: String,
    define_default: bool,
    /// One network change (define, start, stop, undefine) at a time.
    op: tokio::sync::Mutex<()>,
}

/// `<state dir>-network`: next to the state directory, which is private (mode 0700), while
/// dnsmasq, running as an unprivileged user, must read its hosts files here.
pub fn default_network_dir(state_dir: &Path) -> PathBuf {
    let mut name = state_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "oxvirt".into());
    name.push("-network");
    state_dir.with_file_name(name)
}

/// Creates `dir` (mode 0755) and warns when dnsmasq's unprivileged user could not reach it.
fn prepare_network_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let closed = dir
        .ancestors()
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 == 0));
    if let Some(closed) = closed {
        tracing::warn!(
            "{} is not searchable by other users: dnsmasq (which drops its privileges) cannot read the DNS hosts and DHCP reservations of networks under {}",
            closed.display(),
            dir.display()
        );
    }
    Ok(())
}

impl Networks {
    /// Creates the network manager (state under `state_dir`); the tables are the store's. Must
    /// run inside the runtime the daemon serves from: the manager works in this thread's network
    /// namespace.
    pub async fn new(
        store: Arc<Store>,
        state_dir: PathBuf,
        define_default: bool,
    ) -> anyhow::Result<Networks> {
        prepare_network_dir(&state_dir)?;
        let (manager, unavailable) = match NetworkManager::new(state_dir).await {
            Ok(manager) => (Some(manager), String::new()),
            Err(err) => {
                tracing::warn!("virtual networks unavailable: {err}");
                (None, err.to_string())
            }
        };
        Ok(Networks {
            store,
            manager,
            unavailable,
            define_default,
            op: tokio::sync::Mutex::new(()),
        })
    }
}

impl NetworkRecord {
    pub(super) fn def(&self) -> DaemonResult<NetworkDef> {
        NetworkDef::from_xml(&self.xml).map_err(|err| {
            internal(
                &format!(
                    "stored definition of network '{}' does not parse",
                    self.name
                ),
                err,
            )
        })
    }

    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            uuid: self.uuid.to_string(),
            active: self.active,
            persistent: true,
            autostart: self.autostart,
            bridge: self
                .def()
                .ok()
                .and_then(|d| d.bridge_name().map(str::to_string)),
        }
    }
}

/// Makes the MACs of `domain`'s interfaces unique among the defined and running domains (the
/// store's MAC index): a clash with a MAC the XML names is an error; a generated one is picked
/// again.
fn ensure_unique_macs_in(store: &Store, domain: &mut Domain, xml: &str) -> DaemonResult<()> {
    let given = interfaces_with_given_mac(xml);
    let except = (domain.uuid, domain.name.clone());
    let name = domain.name.clone();
    store.transaction_or(db, |tx| {
        let mut own: HashSet<[u8; 6]> = HashSet::new();
        for (index, iface) in domain.devices.interfaces.iter_mut().enumerate() {
            let mut mac = iface.mac.unwrap_or_else(random_mac);
            loop {
                let whose = if own.contains(&mac.0) {
                    Some("another interface of this domain".to_string())
                } else {
                    store::mac_user(tx, mac, Some((&except.0, &except.1)))
                        .map_err(db)?
                        .map(|owner| format!("domain '{owner}'"))
                };
                let Some(whose) = whose else { break };
                if given.get(index).copied().unwrap_or(false) {
                    return Err(DaemonError::new(ErrorKind::AlreadyExists,
                        format!(
                            "interface {index} of domain '{name}': MAC address {mac} is already used by {whose}"
                        ),
                    ));
                }
                mac = random_mac();
            }
            own.insert(mac.0);
            iface.mac = Some(mac);
        }
        Ok(())
    })
}

/// A MAC for a new interface: `given` if no domain uses it, else a generated one no domain uses.
pub(super) fn free_mac(store: &Store, given: Option<MacAddr>) -> DaemonResult<MacAddr> {
    store.transaction_or(db, |tx| match given {
        Some(mac) => match store::mac_user(tx, mac, None).map_err(db)? {
            Some(owner) => Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!("MAC address {mac} is already used by domain '{owner}'"),
            )),
            None => Ok(mac),
        },
        None => loop {
            let mac = random_mac();
            if store::mac_user(tx, mac, None).map_err(db)?.is_none() {
                return Ok(mac);
            }
        },
    })
}

/// Refuses, inside the transaction that stored domain `name`'s definition, a MAC another domain
/// took since the check before it (a concurrent define).
pub(super) fn refuse_mac_clash(tx: &Transaction<'_>, uuid: &Uuid, name: &str) -> DaemonResult<()> {
    match store::mac_clash(tx, uuid).map_err(db)? {
        Some((mac, owner)) => Err(DaemonError::new(
            ErrorKind::AlreadyExists,
            format!("domain '{name}': MAC address {mac} is already used by domain '{owner}'"),
        )),
        None => Ok(()),
    }
}

pub(super) fn net_error(err: NetError) -> DaemonError {
    let code = match &err {
        NetError::Xml(_) | NetError::Invalid { .. } => ErrorKind::InvalidXml,
        NetError::BridgeNameTaken { .. } | NetError::DeviceExists { .. } => {
            ErrorKind::AlreadyExists
        }
        NetError::AlreadyRunning { .. }
        | NetError::SubnetInUse { .. }
        | NetError::NotOurs { .. } => ErrorKind::InvalidState,
        NetError::NoSuchDevice { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    };
    DaemonError::new(code, err.to_string())
}

fn net_xml_error(err: NetXmlError) -> DaemonError {
    let code = match &err {
        NetXmlError::Unsupported { .. } => ErrorKind::Unsupported,
        NetXmlError::Conflict { .. } => ErrorKind::AlreadyExists,
        _ => ErrorKind::InvalidXml,
    };
    DaemonError::new(code, err.to_string())
}

/// For each `<interface>` of a domain XML text, in order: whether it names its MAC.
fn interfaces_with_given_mac(xml: &str) -> Vec<bool> {
    let Ok(doc) = oxvirt_xml::parse(xml) else {
        return Vec::new();
    };
    doc.root_element()
        .children()
        .filter(|c| c.has_tag_name("devices"))
        .flat_map(|devices| devices.children().filter(|c| c.has_tag_name("interface")))
        .map(|iface| iface.children().any(|c| c.has_tag_name("mac")))
        .collect()
}

fn random_mac() -> MacAddr {
    let random = Uuid::new_v4();
    let b = random.as_bytes();
    oxvirt_domain::generate_mac([b[0], b[1], b[2]])
}

pub(super) fn net_mac(mac: MacAddr) -> oxvirt_net::MacAddr {
    oxvirt_net::MacAddr(mac.0)
}

/// The engine ids the QEMU command line gives NIC number `index`.
pub(super) fn launch_ids(index: usize, mac: &str) -> NicIds {
    let ids = oxvirt_qemu::NicIds::at_start(index);
    NicIds {
        mac: mac.to_string(),
        device: ids.device,
        netdev: ids.netdev,
    }
}

impl Networks {
    pub(super) fn net_manager(&self) -> DaemonResult<&NetworkManager> {
        self.manager.as_ref().ok_or_else(|| {
            DaemonError::new(
                ErrorKind::Unsupported,
                format!(
                    "virtual networks are unavailable on this host: {}",
                    self.unavailable
                ),
            )
        })
    }

    pub(super) fn network_records(&self) -> DaemonResult<Vec<NetworkRecord>> {
        self.store.transaction(list_networks).map_err(db)
    }

    /// A network by name or UUID.
    pub(super) fn resolve_network(&self, id: &str) -> DaemonResult<NetworkRecord> {
        let records = self.network_records()?;
        let uuid = Uuid::parse_str(id).ok();
        records
            .iter()
            .find(|r| r.name == id)
            .or_else(|| records.iter().find(|r| Some(r.uuid) == uuid))
            .cloned()
            .ok_or_else(|| {
                DaemonError::new(ErrorKind::NotFound, format!("network '{id}' not found"))
            })
    }

    pub fn list_networks(&self) -> DaemonResult<Vec<NetworkInfo>> {
        Ok(self
            .network_records()?
            .iter()
            .map(NetworkRecord::info)
            .collect())
    }

    pub fn network_info(&self, id: &str) -> DaemonResult<NetworkInfo> {
        Ok(self.resolve_network(id)?.info())
    }

    pub fn network_xml(&self, id: &str) -> DaemonResult<String> {
        Ok(self.resolve_network(id)?.xml)
    }

    /// net-define: create a network, or update an inactive one of the same name (and uuid).
    pub async fn define_network(&self, xml: &str) -> DaemonResult<NetworkInfo> {
        let _guard = self.op.lock().await;
        self.define_network_locked(xml, None).await
    }

    /// net-edit's write: replace the definition of inactive network `id` (same name and uuid).
    pub async fn replace_network_xml(&self, id: &str, xml: &str) -> DaemonResult<NetworkInfo> {
        let _guard = self.op.lock().await;
        let record = self.resolve_network(id)?;
        self.define_network_locked(xml, Some(&record)).await
    }

    async fn define_network_locked(
        &self,
        xml: &str,
        editing: Option<&NetworkRecord>,
    ) -> DaemonResult<NetworkInfo> {
        let mut def = NetworkDef::from_xml(xml).map_err(net_xml_error)?;
        let records = self.network_records()?;
        let existing = records.iter().find(|r| r.name == def.name).cloned();
        if let Some(record) = editing {
            if def.name != record.name {
                return Err(DaemonError::new(ErrorKind::InvalidXml,
                    format!(
                        "the new definition of network '{}' names it '{}'; renaming is not supported",
                        record.name, def.name
                    ),
                ));
            }
        }
        if let Some(record) = &existing {
            if !names_uuid(xml) {
                def.uuid = record.uuid;
            }
            if def.uuid != record.uuid {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "network '{}' already exists with uuid {}",
                        record.name, record.uuid
                    ),
                ));
            }
            if record.active {
                return Err(invalid_state(format!(
                    "network '{}' is active; destroy it before changing its definition",
                    record.name
                )));
            }
        }
        if let Some(other) = records
            .iter()
            .find(|r| r.uuid == def.uuid && r.name != def.name)
        {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "network with uuid {} already exists with name '{}'",
                    other.uuid, other.name
                ),
            ));
        }
        let others: Vec<NetworkDef> = records
            .iter()
            .filter(|r| r.uuid != def.uuid)
            .filter_map(|r| r.def().ok())
            .collect();
        def.check_against(&others).map_err(net_xml_error)?;
        let manager = self.net_manager()?;
        manager
            .fill_defaults(&mut def, &others)
            .await
            .map_err(net_error)?;
        self.check_bridge_name_free(manager, &def).await?;

        let record = NetworkRecord {
            uuid: def.uuid,
            name: def.name.clone(),
            xml: def.to_xml(),
            autostart: existing.as_ref().is_some_and(|r| r.autostart),
            active: false,
        };
        self.store
            .transaction(|tx| {
                store::delete_network(tx, &record.uuid)?;
                insert_network(tx, &record)
            })
            .map_err(db)?;
        tracing::info!(network = %record.name, uuid = %record.uuid, "network defined");
        Ok(record.info())
    }

    /// A network that creates its bridge must not name a host device that is not its own.
    async fn check_bridge_name_free(
        &self,
        manager: &NetworkManager,
        def: &NetworkDef,
    ) -> DaemonResult<()> {
        if def.forward.mode == oxvirt_net::ForwardMode::Bridge {
            return Ok(());
        }
        let Some(bridge) = def.bridge_name() else {
            return Ok(());
        };
        if let Ok(link) = manager.device(bridge).await {
            let ours = format!("{}{}", oxvirt_net::manager::BRIDGE_ALIAS_PREFIX, def.uuid);
            if link.alias.as_deref() != Some(ours.as_str()) {
                return Err(DaemonError::new(ErrorKind::AlreadyExists,
                    format!(
                        "network '{}' cannot use bridge name {bridge}: a {} device of that name exists and is not this network's",
                        def.name,
                        link.kind.as_deref().unwrap_or("network")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// net-undefine: refused while a running domain uses the network, or while it is active.
    pub async fn undefine_network(&self, id: &str) -> DaemonResult<NetworkInfo> {
        let _guard = self.op.lock().await;
        let record = self.resolve_network(id)?;
        if let Some(domain) = self.domains_using_network(&record.name)?.first() {
            return Err(invalid_state(format!(
                "network {} is in use by domain {domain}",
                record.name
            )));
        }
        if record.active {
            return Err(invalid_state(format!(
                "network '{}' is active; destroy it before undefining it",
                record.name
            )));
        }
        self.store
            .transaction(|tx| store::delete_network(tx, &record.uuid))
            .map_err(db)?;
        tracing::info!(network = %record.name, "network undefined");
        Ok(NetworkInfo {
            active: false,
            ..record.info()
        })
    }

    /// Names of the running domains with an interface on network `name`.
    fn domains_using_network(&self, name: &str) -> DaemonResult<Vec<String>> {
        let mut users = Vec::new();
        for (uuid, live) in all_live_domains(&self.store).map_err(db)? {
            if self.store.runtime(&uuid).map_err(db)?.is_none() {
                continue;
            }
            let Ok(domain) = oxvirt_domain::parse_domain_xml(&live.xml) else {
                continue;
            };
            if domain
                .devices
                .interfaces
                .iter()
                .any(|i| i.source == InterfaceSource::Network(name.to_string()))
            {
                users.push(domain.name);
            }
        }
        users.sort();
        Ok(users)
    }

    pub async fn start_network(&self, id: &str) -> DaemonResult<NetworkInfo> {
        let _guard = self.op.lock().await;
        let record = self.resolve_network(id)?;
        if record.active {
            return Err(invalid_state(format!(
                "network '{}' is already active",
                record.name
            )));
        }
        self.start_network_locked(&record).await?;
        Ok(NetworkInfo {
            active: true,
            ..record.info()
        })
    }

    async fn start_network_locked(&self, record: &NetworkRecord) -> DaemonResult<()> {
        let def = record.def()?;
        let manager = self.net_manager()?;
        let status = manager.start(&def).await.map_err(net_error)?;
        if let Err(err) = set_network_flag(&self.store, &record.uuid, "active", true) {
            // The store must not disagree with the host: undo the start.
            if let Err(stop) = manager.stop(&def).await {
                tracing::error!(network = %record.name, "cannot stop again: {stop}");
            }
            return Err(db(err));
        }
        tracing::info!(network = %record.name, bridge = %status.bridge, "network started");
        // Guests that stayed up while the network was down get their TAPs back on the bridge.
        for (uuid, live) in all_live_domains(&self.store).map_err(db)? {
            if self.store.runtime(&uuid).map_err(db)?.is_none() {
                continue;
            }
            let Ok(domain) = oxvirt_domain::parse_domain_xml(&live.xml) else {
                continue;
            };
            for iface in &domain.devices.interfaces {
                if iface.source != InterfaceSource::Network(record.name.clone()) {
                    continue;
                }
                if let Some(tap) = &iface.target_dev {
                    match manager.attach_tap(tap, &status.bridge).await {
                        Ok(()) => {
                            tracing::info!(domain = %domain.name, tap, "TAP attached again")
                        }
                        Err(err) => {
                            tracing::warn!(domain = %domain.name, tap, "cannot attach TAP: {err}")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// net-destroy: stops the network (allowed while guests use it; see the module docs).
    pub async fn destroy_network(&self, id: &str) -> DaemonResult<NetworkInfo> {
        let _guard = self.op.lock().await;
        let record = self.resolve_network(id)?;
        if !record.active {
            return Err(invalid_state(format!(
                "network '{}' is not active",
                record.name
            )));
        }
        let def = record.def()?;
        self.net_manager()?.stop(&def).await.map_err(net_error)?;
        set_network_flag(&self.store, &record.uuid, "active", false).map_err(db)?;
        tracing::info!(network = %record.name, "network destroyed");
        Ok(NetworkInfo {
            active: false,
            ..record.info()
        })
    }

    pub fn set_network_autostart(&self, id: &str, enabled: bool) -> DaemonResult<NetworkInfo> {
        let record = self.resolve_network(id)?;
        set_network_flag(&self.store, &record.uuid, "autostart", enabled).map_err(db)?;
        Ok(NetworkInfo {
            autostart: enabled,
            ..record.info()
        })
    }

    pub async fn network_leases(&self, id: &str) -> DaemonResult<Vec<NetworkLease>> {
        let record = self.resolve_network(id)?;
        let def = record.def()?;
        let prefix = def.ip.as_ref().map(|ip| ip.prefix).unwrap_or(32);
        let leases = self.net_manager()?.leases(&def).await.map_err(net_error)?;
        Ok(leases
            .into_iter()
            .map(|lease| NetworkLease {
                expiry_unix: lease.expiry,
                mac: lease.mac.to_string(),
                protocol: "ipv4".to_string(),
                address: format!("{}/{prefix}", lease.ip),
                hostname: lease.hostname,
                client_id: lease.client_id,
            })
            .collect())
    }

    /// Brings the network side up after the domains were recovered: the default network on the
    /// first start, adoption of running networks, removal of orphans, autostart networks, and
    /// the TAPs of domains that stopped while the daemon was away.
    pub async fn start_networking(&self) {
        let Some(manager) = self.manager.as_ref() else {
            return;
        };
        let _guard = self.op.lock().await;
        if let Err(err) = self.offer_default_network(manager).await {
            tracing::error!("cannot define the default network: {err}");
        }
        let records = match self.network_records() {
            Ok(records) => records,
            Err(err) => {
                tracing::error!("cannot list networks: {err}");
                return;
            }
        };
        let mut running = Vec::new();
        for record in records.iter().filter(|r| r.active) {
            let adopted = match record.def() {
                Ok(def) => match manager.adopt(&def).await {
                    Ok(Some(status)) => {
                        tracing::info!(network = %record.name, bridge = %status.bridge, "network adopted");
                        running.push(def);
                        true
                    }
                    Ok(None) => false,
                    Err(err) => {
                        tracing::error!(network = %record.name, "cannot adopt: {err}");
                        false
                    }
                },
                Err(err) => {
                    tracing::error!("{err}");
                    false
                }
            };
            if !adopted {
                if let Err(err) = set_network_flag(&self.store, &record.uuid, "active", false) {
                    tracing::error!(network = %record.name, "{err}");
                }
            }
        }
        // Only a daemon that manages networks cleans up after them (a daemon without any
        // network definition leaves the host's networking alone).
        if !records.is_empty() {
            match manager.cleanup_orphans(&running).await {
                Ok(removed) => {
                    for what in removed {
                        tracing::info!("removed orphan {what}");
                    }
                }
                Err(err) => tracing::error!("cannot clean up orphan networks: {err}"),
            }
        }
        let adopted: HashSet<Uuid> = running.iter().map(|d| d.uuid).collect();
        for record in records
            .iter()
            .filter(|r| r.autostart && !adopted.contains(&r.uuid))
        {
            match self.start_network_locked(record).await {
                Ok(()) => tracing::info!(network = %record.name, "network autostarted"),
                Err(err) => tracing::error!(network = %record.name, "autostart failed: {err}"),
            }
        }
        self.remove_orphan_taps(manager).await;
    }

    /// libvirt's `default` network, defined once (on the first start), not autostarted (see the
    /// module docs).
    async fn offer_default_network(&self, manager: &NetworkManager) -> DaemonResult<()> {
        if !self.define_default {
            return Ok(());
        }
        let offered = self
            .store
            .transaction(|tx| {
                let offered = store::counter(tx, DEFAULT_OFFERED)?.is_some();
                Ok(offered || store::count_networks(tx)? > 0)
            })
            .map_err(db)?;
        if offered {
            return Ok(());
        }
        let proposal = manager
            .propose_default_network(&[])
            .await
            .map_err(net_error)?;
        self.store
            .transaction(|tx| {
                if let Some(def) = &proposal {
                    insert_network(
                        tx,
                        &NetworkRecord {
                            uuid: def.uuid,
                            name: def.name.clone(),
                            xml: def.to_xml(),
                            autostart: false,
                            active: false,
                        },
                    )?;
                }
                store::set_counter(tx, DEFAULT_OFFERED, 1)
            })
            .map_err(db)?;
        match proposal {
            Some(def) => tracing::info!(bridge = ?def.bridge_name(), "defined the default network"),
            None => tracing::warn!("no free 192.168.N.0/24 for the default network"),
        }
        Ok(())
    }

    /// Removes the TAPs (and live records) of this daemon's domains that are not running.
    async fn remove_orphan_taps(&self, manager: &NetworkManager) {
        let (records, running) = match (self.store.list_domains(), self.store.list_runtime()) {
            (Ok(records), Ok(running)) => (records, running),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!("cannot look for orphan TAPs: {}", store::named(err));
                return;
            }
        };
        let running: HashSet<Uuid> = running.iter().map(|r| r.uuid).collect();
        let stopped: HashSet<String> = records
            .iter()
            .filter(|r| !running.contains(&r.uuid))
            .map(|r| r.uuid.to_string())
            .collect();
        match manager.taps().await {
            Ok(taps) => {
                for (tap, owner) in taps {
                    if stopped.contains(&owner) {
                        match manager.remove_tap(&tap).await {
                            Ok(()) => tracing::info!(tap, owner, "removed orphan TAP"),
                            Err(err) => tracing::warn!(tap, "cannot remove orphan TAP: {err}"),
                        }
                    }
                }
            }
            Err(err) => tracing::error!("cannot list TAP devices: {err}"),
        }
        if let Ok(live) = all_live_domains(&self.store) {
            for (uuid, _) in live.iter().filter(|(uuid, _)| !running.contains(uuid)) {
                if let Err(err) = delete_live_domain(&self.store, uuid) {
                    tracing::warn!(%uuid, "{}", store::named(err));
                }
            }
        }
    }

    /// Makes the MACs of `domain`'s interfaces unique among the defined and running domains:
    /// a clash with a MAC the XML names is an error; a generated one is picked again. Reads the
    /// store's MAC index: the cost does not grow with the number of domains.
    pub(crate) fn ensure_unique_macs(&self, domain: &mut Domain, xml: &str) -> DaemonResult<()> {
        ensure_unique_macs_in(&self.store, domain, xml)
    }

    /// The bridge a network interface attaches to: its network's (which must be active) or the
    /// host bridge it names.
    pub(super) fn bridge_for(
        &self,
        domain_name: &str,
        interface_type: InterfaceType,
        source: &InterfaceSource,
    ) -> DaemonResult<Option<String>> {
        match (interface_type, source) {
            (InterfaceType::Network, InterfaceSource::Network(name)) => {
                let record = self
                    .network_records()?
                    .into_iter()
                    .find(|r| &r.name == name)
                    .ok_or_else(|| {
                        DaemonError::new(
                            ErrorKind::NotFound,
                            format!("domain '{domain_name}': network '{name}' not found"),
                        )
                    })?;
                if !record.active {
                    return Err(invalid_state(format!(
                        "domain '{domain_name}': network '{name}' is not active"
                    )));
                }
                let def = record.def()?;
                Ok(def.bridge_name().map(str::to_string))
            }
            (InterfaceType::Bridge, InterfaceSource::Bridge(bridge)) => Ok(Some(bridge.clone())),
            _ => Ok(None),
        }
    }

    pub(super) async fn create_guest_tap(
        &self,
        record: &DomainRecord,
        index: usize,
        iface: &oxvirt_domain::Interface,
        bridge: &str,
    ) -> DaemonResult<String> {
        let owner = record.uuid.to_string();
        let request = TapRequest {
            name: iface.target_dev.as_deref(),
            bridge,
            guest_mac: iface.mac.map(net_mac),
            owner: &owner,
            // `<driver queues='N'/>`: QEMU opens N queues of the TAP, which must be multiqueue for that.
            queues: iface.driver_queues.unwrap_or(1),
        };
        let what = match &iface.source {
            InterfaceSource::Network(name) => format!("network '{name}'"),
            _ => format!("bridge '{bridge}'"),
        };
        self.net_manager()?
            .create_tap(&request)
            .await
            .map_err(|err| {
                net_error(err).context(format!(
                    "domain '{}': interface {index} on {what}",
                    record.name
                ))
            })
    }

    /// The macvtap device of an `<interface type='direct'>` on host interface `dev`, with the guest's MAC,
    /// owned like the TAPs (so it goes when the guest stops).
    async fn create_guest_macvtap(
        &self,
        record: &DomainRecord,
        index: usize,
        iface: &oxvirt_domain::Interface,
        (dev, mode): (&str, DirectMode),
    ) -> DaemonResult<String> {
        let owner = record.uuid.to_string();
        let request = MacvtapRequest {
            name: iface.target_dev.as_deref(),
            lower: dev,
            mode: match mode {
                DirectMode::Vepa => MacvtapMode::Vepa,
                DirectMode::Bridge => MacvtapMode::Bridge,
                DirectMode::Private => MacvtapMode::Private,
                DirectMode::Passthrough => MacvtapMode::Passthrough,
            },
            guest_mac: iface.mac.map(net_mac),
            owner: &owner,
        };
        self.net_manager()?
            .create_macvtap(&request)
            .await
            .map_err(|err| {
                net_error(err).context(format!(
                    "domain '{}': interface {index} (direct on '{dev}')",
                    record.name
                ))
            })
    }

    /// The TAP of an `<interface type='ethernet'>` (managed): owned like the others (so it goes when the
    /// guest stops), attached to no bridge.
    async fn create_ethernet_tap(
        &self,
        record: &DomainRecord,
        index: usize,
        iface: &oxvirt_domain::Interface,
    ) -> DaemonResult<String> {
        let owner = record.uuid.to_string();
        let request = TapRequest {
            name: iface.target_dev.as_deref(),
            bridge: "",
            guest_mac: iface.mac.map(net_mac),
            owner: &owner,
            queues: iface.driver_queues.unwrap_or(1),
        };
        self.net_manager()?
            .create_unattached_tap(&request)
            .await
            .map_err(|err| {
                net_error(err).context(format!(
                    "domain '{}': interface {index} (ethernet)",
                    record.name
                ))
            })
    }

    /// Creates the TAPs of `domain`'s network interfaces and names them in `<target dev>` of
    /// this (launched) copy; records the copy as the domain's live definition. All or nothing.
    pub(crate) async fn plug_interfaces(
        &self,
        record: &DomainRecord,
        domain: &mut Domain,
    ) -> DaemonResult<()> {
        let mut created: Vec<String> = Vec::new();
        let result = async {
            for index in 0..domain.devices.interfaces.len() {
                let iface = &domain.devices.interfaces[index];
                if let InterfaceSource::Direct { dev, mode } = &iface.source {
                    let tap = self
                        .create_guest_macvtap(record, index, iface, (dev, *mode))
                        .await?;
                    created.push(tap.clone());
                    domain.devices.interfaces[index].target_dev = Some(tap);
                    continue;
                }
                if iface.interface_type == InterfaceType::Ethernet {
                    // managed='no': the host's own TAP, which QEMU opens by name as it is.
                    if iface.target_managed != Some(false) {
                        let tap = self.create_ethernet_tap(record, index, iface).await?;
                        created.push(tap.clone());
                        domain.devices.interfaces[index].target_dev = Some(tap);
                    }
                    continue;
                }
                let Some(bridge) =
                    self.bridge_for(&record.name, iface.interface_type, &iface.source)?
                else {
                    continue;
                };
                let tap = self.create_guest_tap(record, index, iface, &bridge).await?;
                created.push(tap.clone());
                domain.devices.interfaces[index].target_dev = Some(tap);
            }
            let nics = domain
                .devices
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, iface)| {
                    launch_ids(i, &iface.mac.map(|m| m.to_string()).unwrap_or_default())
                })
                .collect();
            let live = LiveDomain {
                xml: domain.to_xml(),
                nics,
            };
            put_live_domain(&self.store, &record.uuid, &live).map_err(db)
        }
        .await;
        if result.is_err() {
            if let Ok(manager) = self.net_manager() {
                for tap in &created {
                    if let Err(err) = manager.remove_tap(tap).await {
                        tracing::warn!(tap, "cannot remove TAP: {err}");
                    }
                }
            }
        }
        result
    }

    /// Removes the TAPs of domain `uuid` and forgets its live definition (the guest is gone).
    pub(crate) async fn unplug_interfaces(&self, uuid: &Uuid) {
        if let Some(manager) = self.manager.as_ref() {
            match manager.taps().await {
                Ok(taps) => {
                    let owner = uuid.to_string();
                    for (tap, _) in taps.into_iter().filter(|(_, o)| *o == owner) {
                        match manager.remove_tap(&tap).await {
                            Ok(()) => tracing::debug!(tap, "TAP removed"),
                            Err(err) => tracing::warn!(tap, "cannot remove TAP: {err}"),
                        }
                    }
                }
                Err(err) => tracing::warn!(%uuid, "cannot list TAP devices: {err}"),
            }
        }
        if let Err(err) = delete_live_domain(&self.store, uuid) {
            tracing::warn!(%uuid, "cannot forget the live definition: {}", store::named(err));
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    #[test]
    fn given_macs_are_told_apart_from_generated_ones() {
        let xml = "<domain><devices>
            <interface type='network'><source network='a'/></interface>
            <interface type='network'><mac address='52:54:00:00:00:01'/><source network='a'/></interface>
        </devices></domain>";
        assert_eq!(interfaces_with_given_mac(xml), vec![false, true]);
    }

    #[test]
    fn network_dir_sits_next_to_the_private_state_dir() {
        assert_eq!(
            default_network_dir(Path::new("/var/lib/oxvirt")),
            PathBuf::from("/var/lib/oxvirt-network")
        );
        assert_eq!(
            default_network_dir(Path::new("/tmp/x/state/")),
            PathBuf::from("/tmp/x/state-network")
        );
    }

    /// A domain definition with one interface per MAC (`None`: no `<mac>`, one is generated).
    fn domain_xml(name: &str, macs: &[Option<&str>]) -> String {
        let interfaces: String = macs
            .iter()
            .map(|mac| match mac {
                Some(mac) => format!("<interface type='user'><mac address='{mac}'/></interface>"),
                None => "<interface type='user'/>".to_string(),
            })
            .collect();
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64'>hvm</type></os><devices>{interfaces}</devices></domain>"
        )
    }

    /// Stores `name`'s definition as define does; returns it (MACs filled in).
    fn define(store: &Store, name: &str, macs: &[Option<&str>]) -> DaemonResult<Domain> {
        let xml = domain_xml(name, macs);
        let mut domain = oxvirt_domain::parse_domain_xml(&xml).unwrap();
        ensure_unique_macs_in(store, &mut domain, &xml)?;
        let record = DomainRecord {
            uuid: domain.uuid,
            name: name.to_string(),
            xml: domain.to_xml(),
            autostart: false,
            engine: "qemu".to_string(),
            off_reason: "unknown".to_string(),
        };
        store
            .transaction(|tx| store::insert_domain(tx, &record))
            .unwrap();
        Ok(domain)
    }

    fn clash_message(result: DaemonResult<Domain>) -> String {
        match result {
            Err(err) => {
                assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err:?}");
                err.message
            }
            Ok(domain) => panic!("defined with MACs {:?}", domain.devices.interfaces),
        }
    }

    #[test]
    fn macs_of_stored_definitions_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        define(&store, "a", &[Some("52:54:00:aa:00:01")]).unwrap();
        let message = clash_message(define(&store, "b", &[Some("52:54:00:AA:00:01")]));
        assert!(
            message.contains("52:54:00:aa:00:01 is already used by domain 'a'"),
            "{message}"
        );
        let message = clash_message(define(
            &store,
            "c",
            &[Some("52:54:00:aa:00:05"), Some("52:54:00:aa:00:05")],
        ));
        assert!(
            message.contains("another interface of this domain"),
            "{message}"
        );
        // Redefining a domain with its own MAC is no clash.
        define(&store, "d", &[Some("52:54:00:aa:00:07")]).unwrap();
        let xml = domain_xml("d", &[Some("52:54:00:aa:00:07")]);
        let mut again = oxvirt_domain::parse_domain_xml(&xml).unwrap();
        ensure_unique_macs_in(&store, &mut again, &xml).unwrap();
        // Generated MACs are filled in and unique.
        let generated = define(&store, "e", &[None, None]).unwrap();
        let macs: Vec<MacAddr> = generated
            .devices
            .interfaces
            .iter()
            .map(|i| i.mac.unwrap())
            .collect();
        assert_ne!(macs[0], macs[1]);
    }

    #[test]
    fn macs_hot_plugged_into_a_running_guest_are_taken_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = define(&store, "a", &[Some("52:54:00:aa:00:01")]).unwrap();
        // `a` runs and got a NIC hot-plugged (attach-interface --live): only its live
        // definition has that MAC.
        let live = LiveDomain {
            xml: oxvirt_domain::parse_domain_xml(&domain_xml(
                "a",
                &[Some("52:54:00:aa:00:01"), Some("52:54:00:aa:00:02")],
            ))
            .unwrap()
            .to_xml(),
            nics: Vec::new(),
        };
        put_live_domain(&store, &a.uuid, &live).unwrap();
        let message = clash_message(define(&store, "b", &[Some("52:54:00:aa:00:02")]));
        assert!(message.contains("already used by domain 'a'"), "{message}");
        let err = free_mac(&store, Some(MacAddr([0x52, 0x54, 0, 0xaa, 0, 2]))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        // The guest stopped: its live definition, and the hot-plugged MAC, are gone.
        delete_live_domain(&store, &a.uuid).unwrap();
        define(&store, "b", &[Some("52:54:00:aa:00:02")]).unwrap();
    }

    #[test]
    fn a_definition_whose_stored_xml_is_damaged_keeps_its_macs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        let a = define(&store, "a", &[Some("52:54:00:aa:00:01")]).unwrap();
        store
            .transaction(|tx| {
                tx.execute(
                    "UPDATE domains SET xml = 'damaged' WHERE uuid = ?1",
                    params![a.uuid.to_string()],
                )
            })
            .unwrap();
        let message = clash_message(define(&store, "b", &[Some("52:54:00:aa:00:01")]));
        assert!(message.contains("already used by domain 'a'"), "{message}");
    }
}
