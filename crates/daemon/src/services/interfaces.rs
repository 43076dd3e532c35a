//! A running or defined domain's network interfaces: attach-interface, detach-interface,
//! domiflist, domifaddr, domifstat. The TAPs and networks behind them are the networks service's.

use std::sync::Arc;

use oxvirt_api::{
    AddressSource, AttachInterfaceRequest, DetachInterfaceRequest, DomainInterface,
    InterfaceAddress, InterfaceStats,
};
use oxvirt_domain::{Address, Domain, InterfaceSource, InterfaceType, MacAddr};
use oxvirt_net::TapRequest;
use oxvirt_xml::escape_attr as xml_escape;

use super::error::{
    bad_request, db, definition_error, engine_failure, internal, invalid_state, DaemonError,
    DaemonResult, ErrorKind,
};
use super::guests::{stored_domain, Guests};
use super::networks::{free_mac, launch_ids, net_error, net_mac, refuse_mac_clash, Networks};
use crate::engine::NicPlug;
use crate::store::{self, live_domain, put_live_domain, DomainRecord, LiveDomain, NicIds, Store};

/// A domain's network interfaces.
pub struct Interfaces {
    store: Arc<Store>,
    guests: Arc<Guests>,
    networks: Arc<Networks>,
}

impl Interfaces {
    pub fn new(store: Arc<Store>, guests: Arc<Guests>, networks: Arc<Networks>) -> Interfaces {
        Interfaces {
            store,
            guests,
            networks,
        }
    }
}

fn type_name(interface_type: InterfaceType) -> &'static str {
    match interface_type {
        InterfaceType::Network => "network",
        InterfaceType::Bridge => "bridge",
        InterfaceType::User => "user",
        InterfaceType::Ethernet => "ethernet",
        InterfaceType::Direct => "direct",
    }
}

fn source_name(source: &InterfaceSource) -> Option<String> {
    match source {
        InterfaceSource::None => None,
        InterfaceSource::Network(name) | InterfaceSource::Bridge(name) => Some(name.clone()),
        InterfaceSource::Direct { dev, .. } => Some(dev.clone()),
    }
}

/// Adds an `<interface>` element at the end of `<devices>` of a normalized domain XML text.
fn with_interface(domain_xml: &str, interface_xml: &str) -> DaemonResult<String> {
    let at = domain_xml
        .rfind("</devices>")
        .ok_or_else(|| internal("adding an interface", "the definition has no <devices>"))?;
    Ok(format!(
        "{}{interface_xml}\n  {}",
        &domain_xml[..at],
        &domain_xml[at..]
    ))
}

/// Engine ids of a hot-plugged NIC (unique: MACs are unique in a domain).
fn hotplug_ids(mac: MacAddr) -> NicIds {
    let ids = oxvirt_qemu::NicIds::hotplug(mac);
    NicIds {
        mac: mac.to_string(),
        device: ids.device,
        netdev: ids.netdev,
    }
}

/// One interface as `domiflist` shows it; `live`: the domain runs (TAP names are known).
fn describe(iface: &oxvirt_domain::Interface, live: bool) -> DomainInterface {
    DomainInterface {
        target: if live { iface.target_dev.clone() } else { None },
        interface_type: type_name(iface.interface_type).to_string(),
        source: source_name(&iface.source),
        model: iface.model.clone(),
        mac: iface.mac.map(|m| m.to_string()).unwrap_or_default(),
    }
}

/// Which of virsh's `--live` / `--config` apply; neither means the domain's current state.
fn live_and_config(live: bool, config: bool, running: bool) -> (bool, bool) {
    if live || config {
        (live, config)
    } else {
        (running, !running)
    }
}

fn parse_interface_type(text: &str) -> DaemonResult<InterfaceType> {
    match text {
        "network" => Ok(InterfaceType::Network),
        "bridge" => Ok(InterfaceType::Bridge),
        "user" => Ok(InterfaceType::User),
        other => Err(bad_request(format!(
            "interface type '{other}' is not supported (use network or bridge)"
        ))),
    }
}

fn parse_guest_mac(text: &str) -> DaemonResult<MacAddr> {
    let mac = oxvirt_domain::parse_mac(text).map_err(|_| {
        bad_request(format!(
            "'{text}' is not a MAC address like 52:54:00:12:34:56"
        ))
    })?;
    if mac.0[0] & 1 == 1 {
        return Err(bad_request(format!(
            "MAC address {mac} is a multicast address; a NIC needs a unicast one"
        )));
    }
    Ok(mac)
}

impl Interfaces {
    /// The definition a running domain was launched with (plus hotplugs), if it runs.
    fn running_domain(&self, record: &DomainRecord) -> DaemonResult<Option<(Domain, LiveDomain)>> {
        if self.store.runtime(&record.uuid).map_err(db)?.is_none() {
            return Ok(None);
        }
        let Some(live) = live_domain(&self.store, &record.uuid).map_err(db)? else {
            // Started by a daemon without network support: the stored definition is what runs.
            let domain = stored_domain(record)?;
            let nics = domain
                .devices
                .interfaces
                .iter()
                .enumerate()
                .map(|(i, iface)| {
                    launch_ids(i, &iface.mac.map(|m| m.to_string()).unwrap_or_default())
                })
                .collect();
            return Ok(Some((
                domain.clone(),
                LiveDomain {
                    xml: domain.to_xml(),
                    nics,
                },
            )));
        };
        let domain = oxvirt_domain::parse_domain_xml(&live.xml).map_err(|err| {
            internal(
                &format!("live definition of domain '{}' does not parse", record.name),
                err,
            )
        })?;
        Ok(Some((domain, live)))
    }

    fn require_running(&self, record: &DomainRecord) -> DaemonResult<(Domain, LiveDomain)> {
        self.running_domain(record)?
            .ok_or_else(|| invalid_state(format!("domain '{}' is not running", record.name)))
    }

    /// domiflist: the running guest's interfaces, or the definition's.
    pub fn domain_interfaces(&self, id: &str) -> DaemonResult<Vec<DomainInterface>> {
        let record = self.guests.resolve(id)?;
        let (domain, live) = match self.running_domain(&record)? {
            Some((domain, _)) => (domain, true),
            None => (stored_domain(&record)?, false),
        };
        Ok(domain
            .devices
            .interfaces
            .iter()
            .map(|iface| describe(iface, live))
            .collect())
    }

    /// domifaddr: addresses of a running guest's interfaces from DHCP leases or ARP.
    pub async fn domain_interface_addresses(
        &self,
        id: &str,
        source: AddressSource,
    ) -> DaemonResult<Vec<InterfaceAddress>> {
        let record = self.guests.resolve(id)?;
        let (domain, _) = self.require_running(&record)?;
        let manager = self.networks.net_manager()?;
        let networks = self.networks.network_records()?;
        let mut addresses = Vec::new();
        for iface in &domain.devices.interfaces {
            let (Some(tap), Some(mac)) = (&iface.target_dev, iface.mac) else {
                continue;
            };
            let network = match &iface.source {
                InterfaceSource::Network(name) => networks
                    .iter()
                    .find(|n| &n.name == name)
                    .and_then(|n| n.def().ok()),
                _ => None,
            };
            let mut push = |address: String| {
                addresses.push(InterfaceAddress {
                    name: tap.clone(),
                    mac: mac.to_string(),
                    protocol: "ipv4".to_string(),
                    address,
                })
            };
            match source {
                AddressSource::Lease => {
                    let Some(def) = network else { continue };
                    let prefix = def.ip.as_ref().map(|ip| ip.prefix).unwrap_or(32);
                    for lease in manager.leases(&def).await.map_err(net_error)? {
                        if lease.mac.0 == mac.0 {
                            push(format!("{}/{prefix}", lease.ip));
                        }
                    }
                }
                AddressSource::Arp => {
                    let bridge = match (&iface.source, &network) {
                        (_, Some(def)) => def.bridge_name().map(str::to_string),
                        (InterfaceSource::Bridge(bridge), _) => Some(bridge.clone()),
                        _ => None,
                    };
                    let Some(bridge) = bridge else { continue };
                    // A bridge that went away (net-destroy) has no neighbours.
                    let Ok(neighbours) = manager.neighbours(&bridge).await else {
                        continue;
                    };
                    for neighbour in neighbours {
                        if neighbour.mac.0 == mac.0 {
                            // As libvirt: the ARP table knows no prefix.
                            push(format!("{}/0", neighbour.ip));
                        }
                    }
                }
            }
        }
        Ok(addresses)
    }

    /// domifstat: counters of a running guest's interface, named by its TAP or its MAC.
    pub async fn domain_interface_stats(
        &self,
        id: &str,
        device: &str,
    ) -> DaemonResult<InterfaceStats> {
        let record = self.guests.resolve(id)?;
        let (domain, _) = self.require_running(&record)?;
        let tap = domain
            .devices
            .interfaces
            .iter()
            .find(|iface| {
                iface.target_dev.as_deref() == Some(device)
                    || iface
                        .mac
                        .is_some_and(|m| m.to_string().eq_ignore_ascii_case(device))
            })
            .and_then(|iface| iface.target_dev.clone())
            .ok_or_else(|| {
                DaemonError::new(ErrorKind::NotFound,
                    format!(
                        "domain '{}' has no interface '{device}' (give its host device name or its MAC)",
                        record.name
                    ),
                )
            })?;
        let host = self
            .networks
            .net_manager()?
            .interface_stats(&tap)
            .await
            .map_err(net_error)?;
        // The TAP's receive side is what the guest sent.
        Ok(InterfaceStats {
            rx_bytes: host.tx_bytes,
            rx_packets: host.tx_packets,
            rx_errs: host.tx_errors,
            rx_drop: host.tx_dropped,
            tx_bytes: host.rx_bytes,
            tx_packets: host.rx_packets,
            tx_errs: host.rx_errors,
            tx_drop: host.rx_dropped,
        })
    }

    /// attach-interface: hot-plug into the running guest (`live`) and/or add to the stored
    /// definition (`config`).
    pub async fn attach_interface(
        &self,
        id: &str,
        request: &AttachInterfaceRequest,
    ) -> DaemonResult<DomainInterface> {
        let interface_type = parse_interface_type(&request.interface_type)?;
        if interface_type == InterfaceType::User {
            return Err(bad_request(
                "attach-interface supports types network and bridge".to_string(),
            ));
        }
        if request.source.is_empty() {
            return Err(bad_request("attach-interface needs a --source".to_string()));
        }
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| "virtio".to_string());
        if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad_request(format!("'{model}' is not a NIC model name")));
        }
        let given_mac = request.mac.as_deref().map(parse_guest_mac).transpose()?;

        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let running = self.store.runtime(&record.uuid).map_err(db)?.is_some();
        let (live, config) = live_and_config(request.live, request.config, running);
        if live && !running {
            return Err(invalid_state(format!(
                "domain '{}' is not running; use --config to change its definition",
                record.name
            )));
        }
        let mac = free_mac(&self.store, given_mac)?;
        let (kind, attr) = match interface_type {
            InterfaceType::Network => ("network", "network"),
            _ => ("bridge", "bridge"),
        };
        let element = |target: Option<&str>| {
            let target = target
                .map(|t| format!("\n      <target dev='{}'/>", xml_escape(t)))
                .unwrap_or_default();
            format!(
                "  <interface type='{kind}'>\n      <mac address='{mac}'/>\n      <source {attr}='{}'/>{target}\n      <model type='{}'/>\n    </interface>",
                xml_escape(&request.source),
                xml_escape(&model)
            )
        };
        let source = match interface_type {
            InterfaceType::Network => InterfaceSource::Network(request.source.clone()),
            _ => InterfaceSource::Bridge(request.source.clone()),
        };

        // Everything that can be checked is checked before anything changes.
        let new_config = if config {
            let xml = with_interface(&record.xml, &element(None))?;
            Some(
                oxvirt_domain::parse_domain_xml(&xml)
                    .map_err(definition_error)?
                    .to_xml(),
            )
        } else {
            None
        };
        let mut attached = DomainInterface {
            target: None,
            interface_type: kind.to_string(),
            source: Some(request.source.clone()),
            model: Some(model.clone()),
            mac: mac.to_string(),
        };

        if live {
            let (_, mut live_state) = self.require_running(&record)?;
            let control = self.guests.running_control(&vm, &record)?;
            let bridge = self
                .networks
                .bridge_for(&record.name, interface_type, &source)?
                .ok_or_else(|| internal("attach-interface", "no bridge for the interface"))?;
            let manager = self.networks.net_manager()?;
            let owner = record.uuid.to_string();
            let tap = manager
                .create_tap(&TapRequest {
                    name: None,
                    bridge: &bridge,
                    guest_mac: Some(net_mac(mac)),
                    owner: &owner,
                    // The interface built here has no `<driver queues>`: one queue pair.
                    queues: 1,
                })
                .await
                .map_err(|err| {
                    net_error(err).context(format!("domain '{}': new interface", record.name))
                })?;
            let plugged = async {
                let xml = with_interface(&live_state.xml, &element(Some(&tap)))?;
                let domain = oxvirt_domain::parse_domain_xml(&xml).map_err(definition_error)?;
                let pci_slot =
                    domain
                        .devices
                        .interfaces
                        .last()
                        .and_then(|iface| match &iface.address {
                            Some(Address::Pci(pci)) if pci.bus == 0 && pci.domain == 0 => {
                                Some(pci.slot)
                            }
                            _ => None,
                        });
                let ids = hotplug_ids(mac);
                control
                    .plug_nic(&NicPlug {
                        netdev_id: ids.netdev.clone(),
                        device_id: ids.device.clone(),
                        tap: tap.clone(),
                        mac: mac.to_string(),
                        model: model.clone(),
                        pci_slot,
                    })
                    .await
                    .map_err(|e| engine_failure(&record.name, e))?;
                live_state.xml = domain.to_xml();
                live_state.nics.push(ids);
                Ok::<(), DaemonError>(())
            }
            .await;
            if let Err(err) = plugged {
                if let Err(remove) = manager.remove_tap(&tap).await {
                    tracing::warn!(tap, "cannot remove TAP: {remove}");
                }
                return Err(err);
            }
            put_live_domain(&self.store, &record.uuid, &live_state).map_err(db)?;
            tracing::info!(domain = %record.name, tap, %mac, "interface hot-plugged");
            attached.target = Some(tap);
        }
        if let Some(xml) = new_config {
            self.store.transaction_or(db, |tx| {
                store::update_domain_xml(tx, &record.uuid, &xml, &record.engine).map_err(db)?;
                refuse_mac_clash(tx, &record.uuid, &record.name)
            })?;
            tracing::info!(domain = %record.name, %mac, "interface added to the definition");
        }
        Ok(attached)
    }

    /// detach-interface: hot-unplug from the running guest (`live`) and/or remove from the
    /// stored definition (`config`).
    pub async fn detach_interface(
        &self,
        id: &str,
        request: &DetachInterfaceRequest,
    ) -> DaemonResult<DomainInterface> {
        let interface_type = parse_interface_type(&request.interface_type)?;
        let mac = request.mac.as_deref().map(parse_guest_mac).transpose()?;
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let running = self.store.runtime(&record.uuid).map_err(db)?.is_some();
        let (live, config) = live_and_config(request.live, request.config, running);
        if live && !running {
            return Err(invalid_state(format!(
                "domain '{}' is not running; use --config to change its definition",
                record.name
            )));
        }
        let pick = |domain: &Domain| -> DaemonResult<usize> {
            let matching: Vec<usize> = domain
                .devices
                .interfaces
                .iter()
                .enumerate()
                .filter(|(_, i)| {
                    i.interface_type == interface_type
                        && mac.is_none_or(|m| i.mac.is_some_and(|own| own.0 == m.0))
                })
                .map(|(index, _)| index)
                .collect();
            match (matching.as_slice(), mac) {
                ([index], _) => Ok(*index),
                ([], Some(mac)) => Err(DaemonError::new(
                    ErrorKind::NotFound,
                    format!(
                        "domain '{}' has no {} interface with MAC address {mac}",
                        record.name, request.interface_type
                    ),
                )),
                ([], None) => Err(DaemonError::new(
                    ErrorKind::NotFound,
                    format!(
                        "domain '{}' has no {} interface",
                        record.name, request.interface_type
                    ),
                )),
                (many, _) => Err(bad_request(format!(
                    "domain '{}' has {} {} interfaces; give --mac to choose one",
                    record.name,
                    many.len(),
                    request.interface_type
                ))),
            }
        };

        let new_config = if config {
            let mut domain = stored_domain(&record)?;
            let index = pick(&domain)?;
            domain.devices.interfaces.remove(index);
            Some(domain.to_xml())
        } else {
            None
        };
        let mut detached = None;
        if live {
            let (mut domain, mut live_state) = self.require_running(&record)?;
            let index = pick(&domain)?;
            let iface = domain.devices.interfaces.remove(index);
            let mac_text = iface.mac.map(|m| m.to_string()).unwrap_or_default();
            let ids = live_state
                .nics
                .iter()
                .position(|n| n.mac.eq_ignore_ascii_case(&mac_text))
                .ok_or_else(|| {
                    internal(
                        &format!("domain '{}'", record.name),
                        format!("no engine ids recorded for the NIC with MAC {mac_text}"),
                    )
                })?;
            let control = self.guests.running_control(&vm, &record)?;
            let NicIds { device, netdev, .. } = live_state.nics[ids].clone();
            control
                .unplug_nic(&device, &netdev)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            if let Some(tap) = &iface.target_dev {
                if let Err(err) = self.networks.net_manager()?.remove_tap(tap).await {
                    tracing::warn!(tap, "cannot remove TAP: {err}");
                }
            }
            live_state.nics.remove(ids);
            live_state.xml = domain.to_xml();
            put_live_domain(&self.store, &record.uuid, &live_state).map_err(db)?;
            tracing::info!(domain = %record.name, mac = %mac_text, "interface hot-unplugged");
            detached = Some(describe(&iface, true));
        }
        if let Some(xml) = new_config {
            let domain = stored_domain(&record)?;
            let index = pick(&domain)?;
            let removed = describe(&domain.devices.interfaces[index], false);
            self.store
                .transaction(|tx| store::update_domain_xml(tx, &record.uuid, &xml, &record.engine))
                .map_err(db)?;
            tracing::info!(domain = %record.name, mac = %removed.mac, "interface removed from the definition");
            detached.get_or_insert(removed);
        }
        detached.ok_or_else(|| internal("detach-interface", "nothing was detached"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_goes_at_the_end_of_devices() {
        let xml = "<domain>\n  <devices>\n    <disk/>\n  </devices>\n</domain>";
        let out = with_interface(xml, "  <interface/>").unwrap();
        assert_eq!(
            out,
            "<domain>\n  <devices>\n    <disk/>\n    <interface/>\n  </devices>\n</domain>"
        );
    }

    #[test]
    fn current_state_decides_when_neither_flag_is_given() {
        assert_eq!(live_and_config(false, false, true), (true, false));
        assert_eq!(live_and_config(false, false, false), (false, true));
        assert_eq!(live_and_config(true, true, false), (true, true));
        assert_eq!(live_and_config(false, true, true), (false, true));
    }

    #[test]
    fn hotplug_ids_are_valid_qemu_ids() {
        let ids = hotplug_ids(MacAddr([0x52, 0x54, 0, 1, 2, 0xab]));
        assert_eq!(ids.device, "net-hp5254000102ab");
        assert_eq!(ids.netdev, "hostnet-hp5254000102ab");
        assert_eq!(ids.mac, "52:54:00:01:02:ab");
    }
}
