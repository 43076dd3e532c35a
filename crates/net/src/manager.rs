//! Running networks on the host: bridges, addresses, nftables chains, dnsmasq, TAP devices.
//!
//! Everything oxvirt creates is marked so it can be recognized after a daemon restart and never confused with
//! the host's own devices: bridges carry the ifalias `oxvirt-net:<uuid>`, TAPs `oxvirt-tap:<owner>`, dnsmasq
//! carries `--conf-file=<state dir>/<network>/dnsmasq.conf` on its command line, and firewall rules live only in
//! the `ip oxvirt` nftables table.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::addr::{Ipv4Subnet, MacAddr};
use crate::dnsmasq::{self, DhcpLease, DnsmasqFiles};
use crate::netlink::{BridgeSpec, InterfaceStats, Link, Neighbour, Netlink};
use crate::nft::{self, FirewallSpec};
use crate::xml::{check_ifname_text, ForwardMode, NetworkDef};
use crate::NetError;

/// ifalias prefix of the bridges oxvirt creates; the network's uuid follows.
pub const BRIDGE_ALIAS_PREFIX: &str = "oxvirt-net:";
/// ifalias prefix of the TAP devices oxvirt creates; the owner (e.g. the domain's name) follows.
pub const TAP_ALIAS_PREFIX: &str = "oxvirt-tap:";
/// Name pattern of generated TAP devices (the kernel picks the number).
pub const GENERATED_TAP_PATTERN: &str = "oxtap%d";

/// What a started or adopted network runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub bridge: String,
    pub bridge_index: u32,
    /// The network's dnsmasq (`None` for networks without `<ip>` and for forward mode 'bridge').
    pub dnsmasq_pid: Option<u32>,
}

/// A guest interface's TAP device to create.
#[derive(Debug, Clone)]
pub struct TapRequest<'a> {
    /// `<target dev=>`; `None`: the kernel picks the first free `oxtapN`.
    pub name: Option<&'a str>,
    /// The bridge to attach to: the network's bridge (`NetworkDef::bridge_name`) or a host bridge.
    pub bridge: &'a str,
    /// The guest's MAC address; the TAP gets it with the first byte set to 0xfe, so the bridge never takes
    /// the guest's address as its own (as libvirt does).
    pub guest_mac: Option<MacAddr>,
    /// Who owns the TAP (e.g. the domain name), recorded in its ifalias.
    pub owner: &'a str,
    /// Queue pairs of the guest NIC (`<driver queues=>`, 1 when absent): more than 1 creates a multiqueue TAP
    /// (`IFF_MULTI_QUEUE`), which QEMU's `-netdev tap,ifname=..,queues=N` needs.
    pub queues: u32,
}

/// A macvtap device for a guest interface (`<interface type='direct'>`).
#[derive(Debug, Clone)]
pub struct MacvtapRequest<'a> {
    /// `<target dev=>`; `None`: the first free `oxmvtN`.
    pub name: Option<&'a str>,
    /// `<source dev=>`: the host interface the macvtap sits on.
    pub lower: &'a str,
    pub mode: MacvtapMode,
    /// The guest's MAC address, which the macvtap device takes (it receives frames for it only).
    pub guest_mac: Option<MacAddr>,
    /// Who owns the device, recorded in its ifalias (as for TAPs: removed with them).
    pub owner: &'a str,
}

/// `<source mode=>` of a direct interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvtapMode {
    Vepa,
    Bridge,
    Private,
    Passthrough,
}

/// Names oxvirt gives the macvtap devices it creates when the definition names none.
pub const GENERATED_MACVTAP_PREFIX: &str = "oxmvt";

/// Handles the networks of one host (or network namespace): create with [`NetworkManager::new`] inside a
/// tokio runtime; the netlink socket belongs to the calling thread's network namespace.
pub struct NetworkManager {
    netlink: Netlink,
    state_dir: PathBuf,
    /// Serializes changes: nft table creation/removal and bridge name checks must not interleave.
    lock: tokio::sync::Mutex<()>,
}

/// An action that undoes one step of a network start.
enum Undo {
    DeleteLink(u32),
    RemoveFirewall(String),
    StopDnsmasq(DnsmasqFiles),
}

impl NetworkManager {
    /// `state_dir` holds one directory per network (dnsmasq configuration, pid, leases, hosts files); it is
    /// created if missing. It should survive daemon restarts (e.g. `/var/lib/oxvirt/network`).
    pub async fn new(state_dir: impl Into<PathBuf>) -> Result<NetworkManager, NetError> {
        let state_dir = state_dir.into();
        tokio::fs::create_dir_all(&state_dir)
            .await
            .map_err(|source| NetError::Io {
                what: format!("creating {}", state_dir.display()),
                source,
            })?;
        Ok(NetworkManager {
            netlink: Netlink::connect()?,
            state_dir,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The dnsmasq files of network `def`.
    pub fn dnsmasq_files(&self, def: &NetworkDef) -> DnsmasqFiles {
        DnsmasqFiles::new(&self.state_dir, &def.name)
    }

    /// Fills a new definition's defaults against the host: a bridge name used neither by `others` nor by an
    /// existing host link, and a bridge MAC.
    pub async fn fill_defaults(
        &self,
        def: &mut NetworkDef,
        others: &[NetworkDef],
    ) -> Result<(), NetError> {
        let names: HashSet<String> = self
            .netlink
            .links()
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        def.fill_defaults(others, |name| names.contains(name));
        Ok(())
    }

    /// libvirt's `default` network (NAT, DHCP) on 192.168.122.0/24, or on the next free 192.168.N.0/24 when the
    /// host's addresses/routes or `others` use it; defaults filled. `None` if no 192.168.N.0/24 is free.
    pub async fn propose_default_network(
        &self,
        others: &[NetworkDef],
    ) -> Result<Option<NetworkDef>, NetError> {
        let mut used: Vec<Ipv4Subnet> = self
            .netlink
            .used_ipv4_subnets(None)
            .await?
            .into_iter()
            .map(|(subnet, _)| subnet)
            .collect();
        used.extend(
            others
                .iter()
                .filter_map(|o| o.ip.as_ref())
                .map(|ip| ip.subnet()),
        );
        let Some(mut def) = NetworkDef::propose_default(&used) else {
            return Ok(None);
        };
        self.fill_defaults(&mut def, others).await?;
        Ok(Some(def))
    }

    /// Starts `def` (defaults filled): bridge with its address, up; nftables chains; dnsmasq. On any failure
    /// everything created so far is removed again before the error is returned.
    pub async fn start(&self, def: &NetworkDef) -> Result<NetworkStatus, NetError> {
        def.validate()?;
        let bridge = require_bridge_name(def)?;
        let _guard = self.lock.lock().await;
        if def.forward.mode == ForwardMode::Bridge {
            let link = self.host_bridge(bridge).await?;
            return Ok(NetworkStatus {
                bridge: bridge.to_string(),
                bridge_index: link.index,
                dnsmasq_pid: None,
            });
        }
        if let Some(existing) = self.netlink.link(bridge).await? {
            if existing.alias.as_deref() == Some(bridge_alias(def).as_str()) {
                return Err(NetError::AlreadyRunning {
                    network: def.name.clone(),
                    bridge: bridge.to_string(),
                });
            }
            return Err(NetError::BridgeNameTaken {
                network: def.name.clone(),
                bridge: bridge.to_string(),
                kind: existing.kind.unwrap_or_else(|| "device".into()),
            });
        }
        self.check_subnet_free(def, None).await?;

        let mut undo = Vec::new();
        match self.start_steps(def, bridge, &mut undo).await {
            Ok(status) => Ok(status),
            Err(error) => {
                tracing::warn!(network = %def.name, %error, "start failed; undoing {} step(s)", undo.len());
                self.undo(undo).await;
                Err(error)
            }
        }
    }

    async fn start_steps(
        &self,
        def: &NetworkDef,
        bridge: &str,
        undo: &mut Vec<Undo>,
    ) -> Result<NetworkStatus, NetError> {
        let index = self
            .netlink
            .create_bridge(&BridgeSpec {
                name: bridge,
                stp: def.bridge.stp,
                delay: def.bridge.delay,
                mtu: def.mtu,
                mac: def.mac,
            })
            .await?;
        undo.push(Undo::DeleteLink(index));
        self.netlink.set_alias(index, &bridge_alias(def)).await?;
        if let Some(ip) = &def.ip {
            self.netlink.add_ipv4(index, ip.address, ip.prefix).await?;
        }
        self.netlink.set_up(index).await?;
        let mut dnsmasq_pid = None;
        if let Some(ip) = &def.ip {
            if matches!(def.forward.mode, ForwardMode::Nat | ForwardMode::Route) {
                enable_ipv4_forwarding().await?;
            }
            undo.push(Undo::RemoveFirewall(bridge.to_string()));
            nft::run_script(&nft::apply_script(&firewall_spec(def, bridge, ip.subnet()))).await?;
            let files = self.dnsmasq_files(def);
            undo.push(Undo::StopDnsmasq(files.clone()));
            dnsmasq_pid = Some(dnsmasq::start(def, &files).await?);
        }
        Ok(NetworkStatus {
            bridge: bridge.to_string(),
            bridge_index: index,
            dnsmasq_pid,
        })
    }

    async fn undo(&self, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let result = match &step {
                Undo::DeleteLink(index) => self.netlink.delete_link(*index).await,
                Undo::RemoveFirewall(bridge) => remove_firewall(bridge).await,
                Undo::StopDnsmasq(files) => dnsmasq::stop(files).await.map(|_| ()),
            };
            if let Err(error) = result {
                tracing::error!(%error, "could not undo a step of a failed network start");
            }
        }
    }

    /// Stops `def`: dnsmasq, nftables chains and bridge go (the lease file stays, as libvirt keeps it, so
    /// guests get their addresses back). Works after a daemon restart (needs no handle); stopping a network
    /// that is not running is not an error. A bridge of that name that is not this network's is left alone
    /// and reported.
    pub async fn stop(&self, def: &NetworkDef) -> Result<(), NetError> {
        let bridge = require_bridge_name(def)?;
        if def.forward.mode == ForwardMode::Bridge {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        let files = self.dnsmasq_files(def);
        let mut first_error = dnsmasq::stop(&files).await.err();
        remove_state_files(&files).await;
        if let Err(e) = remove_firewall(bridge).await {
            first_error.get_or_insert(e);
        }
        match self.netlink.link(bridge).await {
            Ok(Some(link)) if link.alias.as_deref() == Some(bridge_alias(def).as_str()) => {
                if let Err(e) = self.netlink.delete_link(link.index).await {
                    first_error.get_or_insert(e);
                }
            }
            Ok(Some(_)) => {
                first_error.get_or_insert(NetError::NotOurs {
                    device: bridge.to_string(),
                    expected: bridge_alias(def),
                });
            }
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// After a daemon restart: takes over `def` if its bridge runs. Returns `None` (after removing any leftover
    /// dnsmasq and firewall chains) when the network is not running. A running network is completed where
    /// something is missing (address, up, firewall chains re-applied atomically, dnsmasq restarted if dead);
    /// nothing is created twice.
    pub async fn adopt(&self, def: &NetworkDef) -> Result<Option<NetworkStatus>, NetError> {
        def.validate()?;
        let bridge = require_bridge_name(def)?;
        let _guard = self.lock.lock().await;
        if def.forward.mode == ForwardMode::Bridge {
            return Ok(self
                .netlink
                .link(bridge)
                .await?
                .filter(|l| l.kind.as_deref() == Some("bridge"))
                .map(|l| NetworkStatus {
                    bridge: bridge.to_string(),
                    bridge_index: l.index,
                    dnsmasq_pid: None,
                }));
        }
        let files = self.dnsmasq_files(def);
        let Some(link) = self.netlink.link(bridge).await? else {
            dnsmasq::stop(&files).await?;
            remove_firewall(bridge).await?;
            return Ok(None);
        };
        if link.alias.as_deref() != Some(bridge_alias(def).as_str()) {
            return Err(NetError::NotOurs {
                device: bridge.to_string(),
                expected: bridge_alias(def),
            });
        }
        let mut dnsmasq_pid = None;
        if let Some(ip) = &def.ip {
            let has_address = self
                .netlink
                .ipv4_addresses(Some(link.index))
                .await?
                .iter()
                .any(|(_, a, p)| *a == ip.address && *p == ip.prefix);
            if !has_address {
                self.netlink
                    .add_ipv4(link.index, ip.address, ip.prefix)
                    .await?;
            }
        }
        if !link.up {
            self.netlink.set_up(link.index).await?;
        }
        if let Some(ip) = &def.ip {
            if matches!(def.forward.mode, ForwardMode::Nat | ForwardMode::Route) {
                enable_ipv4_forwarding().await?;
            }
            nft::run_script(&nft::apply_script(&firewall_spec(def, bridge, ip.subnet()))).await?;
            dnsmasq_pid = match dnsmasq::running_pid(&files) {
                Some(pid) => Some(pid),
                None => Some(dnsmasq::start(def, &files).await?),
            };
        }
        Ok(Some(NetworkStatus {
            bridge: bridge.to_string(),
            bridge_index: link.index,
            dnsmasq_pid,
        }))
    }

    /// Whether `def` runs, without changing anything (for `net-list`/`net-info`): its bridge exists and is
    /// this network's. `dnsmasq_pid` is `None` also when the network's dnsmasq died (`adopt` restarts it).
    pub async fn status(&self, def: &NetworkDef) -> Result<Option<NetworkStatus>, NetError> {
        let bridge = require_bridge_name(def)?;
        let Some(link) = self.netlink.link(bridge).await? else {
            return Ok(None);
        };
        let running = match def.forward.mode {
            ForwardMode::Bridge => link.kind.as_deref() == Some("bridge"),
            _ => link.alias.as_deref() == Some(bridge_alias(def).as_str()),
        };
        Ok(running.then(|| NetworkStatus {
            bridge: bridge.to_string(),
            bridge_index: link.index,
            dnsmasq_pid: dnsmasq::running_pid(&self.dnsmasq_files(def)),
        }))
    }

    /// Removes what oxvirt left of networks that are not in `running` (bridges marked as ours, their
    /// dnsmasq, their firewall chains, their state files except leases). Returns what was removed, for the log.
    pub async fn cleanup_orphans(&self, running: &[NetworkDef]) -> Result<Vec<String>, NetError> {
        let _guard = self.lock.lock().await;
        let mut removed = Vec::new();
        let keep_aliases: HashSet<String> = running.iter().map(bridge_alias).collect();
        let keep_bridges: HashSet<&str> = running.iter().filter_map(|d| d.bridge_name()).collect();
        let keep_names: HashSet<&str> = running.iter().map(|d| d.name.as_str()).collect();

        let mut entries = match tokio::fs::read_dir(&self.state_dir).await {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(NetError::Io {
                    what: format!("reading {}", self.state_dir.display()),
                    source,
                })
            }
        };
        while let Some(entry) = match entries.as_mut() {
            Some(e) => e.next_entry().await.ok().flatten(),
            None => None,
        } {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep_names.contains(name.as_str()) {
                continue;
            }
            let files = DnsmasqFiles::new(&self.state_dir, &name);
            if dnsmasq::stop(&files).await? {
                removed.push(format!("dnsmasq of network '{name}'"));
            }
            remove_state_files(&files).await;
        }
        for link in self.netlink.links().await? {
            let Some(alias) = &link.alias else { continue };
            if alias.starts_with(BRIDGE_ALIAS_PREFIX) && !keep_aliases.contains(alias) {
                self.netlink.delete_link(link.index).await?;
                removed.push(format!("bridge {} ({alias})", link.name));
            }
        }
        if let Some(listing) = nft::list_table().await? {
            for bridge in nft::bridges_with_chains(&listing) {
                if !keep_bridges.contains(bridge.as_str()) {
                    nft::run_script(&nft::remove_script(&bridge)).await?;
                    removed.push(format!("nftables chains of bridge {bridge}"));
                }
            }
            nft::remove_table_if_empty().await?;
        }
        Ok(removed)
    }

    /// DHCP leases handed out on network `def` (for `net-dhcp-leases`, `domifaddr --source lease`).
    pub async fn leases(&self, def: &NetworkDef) -> Result<Vec<DhcpLease>, NetError> {
        let path = self.dnsmasq_files(def).lease_file;
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Ok(dnsmasq::parse_leases(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(NetError::Io {
                what: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    /// IPv4 neighbour (ARP) entries seen on a bridge (for `domifaddr --source arp`).
    pub async fn neighbours(&self, bridge: &str) -> Result<Vec<Neighbour>, NetError> {
        let link = self
            .netlink
            .link(bridge)
            .await?
            .ok_or_else(|| NetError::NoSuchDevice {
                device: bridge.to_string(),
            })?;
        self.netlink.ipv4_neighbours(link.index).await
    }

    /// Traffic counters of an interface, e.g. a guest's TAP (`domifstat`; the TAP's rx is the guest's tx).
    pub async fn interface_stats(&self, device: &str) -> Result<InterfaceStats, NetError> {
        Ok(self.device(device).await?.stats)
    }

    /// A host interface by name.
    pub async fn device(&self, device: &str) -> Result<Link, NetError> {
        self.netlink
            .link(device)
            .await?
            .ok_or_else(|| NetError::NoSuchDevice {
                device: device.to_string(),
            })
    }

    /// Creates a persistent TAP for a guest interface, attached to `request.bridge`, with the bridge's MTU,
    /// up. Returns its name, for QEMU's `-netdev tap,ifname=NAME,script=no,downscript=no`. Nothing is left
    /// behind on failure.
    pub async fn create_tap(&self, request: &TapRequest<'_>) -> Result<String, NetError> {
        self.new_tap(request, true).await
    }

    /// Creates a persistent TAP for an `<interface type='ethernet'>`: as [`NetworkManager::create_tap`] (name,
    /// MAC, owner, queues, up), but attached to no bridge (`request.bridge` is not used): what the host does
    /// with the device (routes, its own bridge) is up to it, as with libvirt's ethernet interfaces.
    pub async fn create_unattached_tap(
        &self,
        request: &TapRequest<'_>,
    ) -> Result<String, NetError> {
        self.new_tap(request, false).await
    }

    async fn new_tap(&self, request: &TapRequest<'_>, attach: bool) -> Result<String, NetError> {
        if let Some(name) = request.name {
            check_ifname_text(name).map_err(|reason| NetError::Invalid {
                reason: format!("TAP name '{name}': {reason}"),
            })?;
            if self.netlink.link(name).await?.is_some() {
                return Err(NetError::DeviceExists {
                    device: name.to_string(),
                });
            }
        }
        let bridge = if attach {
            Some(self.host_bridge(request.bridge).await?)
        } else {
            None
        };
        let name = crate::tap::create_persistent_tap(
            request.name.unwrap_or(GENERATED_TAP_PATTERN),
            request.queues,
        )?;
        let result = async {
            let link = self.device(&name).await?;
            self.netlink
                .set_alias(link.index, &format!("{TAP_ALIAS_PREFIX}{}", request.owner))
                .await?;
            if let Some(mac) = request.guest_mac {
                let mut bytes = mac.0;
                bytes[0] = 0xfe;
                self.netlink.set_mac(link.index, MacAddr(bytes)).await?;
            }
            if let Some(bridge) = &bridge {
                if let Some(mtu) = bridge.mtu {
                    self.netlink.set_mtu(link.index, mtu).await?;
                }
                self.netlink
                    .set_controller(link.index, bridge.index)
                    .await?;
            }
            self.netlink.set_up(link.index).await
        }
        .await;
        if let Err(error) = result {
            if let Ok(Some(link)) = self.netlink.link(&name).await {
                let _ = self.netlink.delete_link(link.index).await;
            }
            return Err(error);
        }
        Ok(name)
    }

    /// Creates a macvtap device on `request.lower` with the guest's MAC, owned like a TAP (listed by
    /// [`NetworkManager::taps`], removed by [`NetworkManager::remove_tap`]), up. Returns its name; QEMU
    /// then reads and writes the guest's frames through `/dev/tapINDEX`.
    pub async fn create_macvtap(&self, request: &MacvtapRequest<'_>) -> Result<String, NetError> {
        use rtnetlink::packet_route::link::MacVtapMode;
        let _guard = self.lock.lock().await;
        let lower = self.device(request.lower).await?;
        let name = match request.name {
            Some(name) => {
                check_ifname_text(name).map_err(|reason| NetError::Invalid {
                    reason: format!("macvtap name '{name}': {reason}"),
                })?;
                if self.netlink.link(name).await?.is_some() {
                    return Err(NetError::DeviceExists {
                        device: name.to_string(),
                    });
                }
                name.to_string()
            }
            None => {
                let taken: Vec<String> = self
                    .netlink
                    .links()
                    .await?
                    .into_iter()
                    .map(|l| l.name)
                    .collect();
                (0..)
                    .map(|n| format!("{GENERATED_MACVTAP_PREFIX}{n}"))
                    .find(|candidate| !taken.contains(candidate))
                    .unwrap_or_else(|| GENERATED_MACVTAP_PREFIX.to_string())
            }
        };
        let mode = match request.mode {
            MacvtapMode::Vepa => MacVtapMode::Vepa,
            MacvtapMode::Bridge => MacVtapMode::Bridge,
            MacvtapMode::Private => MacVtapMode::Private,
            MacvtapMode::Passthrough => MacVtapMode::Passthrough,
        };
        let index = self
            .netlink
            .create_macvtap(&name, lower.index, mode, request.guest_mac)
            .await?;
        let result = async {
            self.netlink
                .set_alias(index, &format!("{TAP_ALIAS_PREFIX}{}", request.owner))
                .await?;
            self.netlink.set_up(index).await
        }
        .await;
        if let Err(error) = result {
            let _ = self.netlink.delete_link(index).await;
            return Err(error);
        }
        Ok(name)
    }

    /// Attaches an existing oxvirt TAP to `bridge` (e.g. again after its network was restarted) and brings it up.
    pub async fn attach_tap(&self, tap: &str, bridge: &str) -> Result<(), NetError> {
        let link = self.our_tap(tap).await?;
        let bridge = self.host_bridge(bridge).await?;
        self.netlink
            .set_controller(link.index, bridge.index)
            .await?;
        self.netlink.set_up(link.index).await
    }

    /// Removes a TAP created by [`NetworkManager::create_tap`]; absent is fine, a device not created by
    /// oxvirt is refused.
    pub async fn remove_tap(&self, tap: &str) -> Result<(), NetError> {
        match self.our_tap(tap).await {
            Ok(link) => self.netlink.delete_link(link.index).await,
            Err(NetError::NoSuchDevice { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// oxvirt's TAP devices with their owners.
    pub async fn taps(&self) -> Result<Vec<(String, String)>, NetError> {
        Ok(self
            .netlink
            .links()
            .await?
            .into_iter()
            .filter_map(|l| Some((l.name, l.alias?.strip_prefix(TAP_ALIAS_PREFIX)?.to_string())))
            .collect())
    }

    async fn our_tap(&self, tap: &str) -> Result<Link, NetError> {
        let link = self.device(tap).await?;
        if !link
            .alias
            .as_deref()
            .is_some_and(|a| a.starts_with(TAP_ALIAS_PREFIX))
        {
            return Err(NetError::NotOurs {
                device: tap.to_string(),
                expected: format!("{TAP_ALIAS_PREFIX}<owner>"),
            });
        }
        Ok(link)
    }

    async fn host_bridge(&self, bridge: &str) -> Result<Link, NetError> {
        let link = self.device(bridge).await?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetError::Invalid {
                reason: format!(
                    "{bridge} is a {} device, not a bridge",
                    link.kind.as_deref().unwrap_or("physical")
                ),
            });
        }
        Ok(link)
    }

    /// The network's subnet must not be in use on the host (addresses, routes), except on `own_link`.
    async fn check_subnet_free(
        &self,
        def: &NetworkDef,
        own_link: Option<u32>,
    ) -> Result<(), NetError> {
        let Some(ip) = &def.ip else { return Ok(()) };
        let subnet = ip.subnet();
        if let Some((_, used_by)) = self
            .netlink
            .used_ipv4_subnets(own_link)
            .await?
            .into_iter()
            .find(|(used, _)| used.overlaps(&subnet))
        {
            return Err(NetError::SubnetInUse {
                network: def.name.clone(),
                subnet: subnet.to_string(),
                used_by,
            });
        }
        Ok(())
    }
}

fn bridge_alias(def: &NetworkDef) -> String {
    format!("{BRIDGE_ALIAS_PREFIX}{}", def.uuid)
}

fn require_bridge_name(def: &NetworkDef) -> Result<&str, NetError> {
    def.bridge_name().ok_or_else(|| NetError::Invalid {
        reason: format!(
            "network '{}' has no bridge name: fill its defaults first",
            def.name
        ),
    })
}

fn firewall_spec(def: &NetworkDef, bridge: &str, subnet: Ipv4Subnet) -> FirewallSpec {
    FirewallSpec {
        bridge: bridge.to_string(),
        subnet,
        mode: def.forward.mode,
        uplink: def.forward.dev.clone(),
    }
}

/// Removes a network's generated files; the lease file stays (as libvirt keeps it).
async fn remove_state_files(files: &DnsmasqFiles) {
    for path in [
        &files.config,
        &files.dhcp_hosts,
        &files.dns_hosts,
        &files.start_log,
    ] {
        let _ = tokio::fs::remove_file(path).await;
    }
}

async fn remove_firewall(bridge: &str) -> Result<(), NetError> {
    if nft::list_table().await?.is_none() {
        return Ok(());
    }
    nft::run_script(&nft::remove_script(bridge)).await?;
    nft::remove_table_if_empty().await
}

/// NAT and routed networks need the kernel to forward IPv4 (per network namespace).
async fn enable_ipv4_forwarding() -> Result<(), NetError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if tokio::fs::read_to_string(path)
        .await
        .is_ok_and(|v| v.trim() == "1")
    {
        return Ok(());
    }
    tokio::fs::write(path, "1\n")
        .await
        .map_err(|source| NetError::Io {
            what: format!("enabling IPv4 forwarding ({path})"),
            source,
        })
}
