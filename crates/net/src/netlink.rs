//! The few rtnetlink operations oxvirt needs (links, addresses, routes, neighbours), over `rtnetlink`.
//!
//! A [`Netlink`] talks to the network namespace that was current on the thread that called
//! [`Netlink::connect`].

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::MacVtapMode;
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridge, LinkMacVtap, LinkUnspec, RouteMessageBuilder};

use crate::addr::{Ipv4Subnet, MacAddr};
use crate::NetError;

/// The main routing table's id.
const RT_TABLE_MAIN: u32 = 254;

/// What oxvirt reads about a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Link kind (`bridge`, `tun`, `veth`, ...); `None` for physical devices.
    pub kind: Option<String>,
    /// `ifalias`: oxvirt marks the devices it creates here.
    pub alias: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// Index of the bridge the link is a port of.
    pub controller: Option<u32>,
    pub up: bool,
    pub stats: InterfaceStats,
}

/// Traffic counters of an interface, as the host sees them (`rx` = received by the host side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// An IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Kernel state: `reachable`, `stale`, `permanent`, ...
    pub state: String,
}

/// Settings of a bridge to create.
#[derive(Debug, Clone)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub stp: bool,
    /// Forward delay in seconds.
    pub delay: u32,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
}

/// A connection to rtnetlink.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

fn nl_error(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace; its I/O task runs on the current
    /// tokio runtime.
    pub fn connect() -> Result<Netlink, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetError::Io {
                what: "opening a netlink socket".into(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing links"))?;
        Ok(messages.iter().map(link_from_message).collect())
    }

    /// The link named `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(message)) => Ok(Some(link_from_message(&message))),
            Ok(None) => Ok(None),
            // The kernel answers ENODEV for a name it does not know.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(source) => Err(NetError::Netlink {
                op: format!("looking up link {name}"),
                source,
            }),
        }
    }

    /// Creates a bridge (down) and returns its index.
    pub async fn create_bridge(&self, spec: &BridgeSpec<'_>) -> Result<u32, NetError> {
        let mut builder = LinkBridge::new(spec.name)
            // The kernel takes the delay in hundredths of a second.
            .forward_delay(spec.delay.saturating_mul(100))
            .stp_state(if spec.stp {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            });
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = spec.mac {
            builder = builder.address(mac.0.to_vec());
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(nl_error(format!("creating bridge {}", spec.name)))?;
        let link = self
            .link(spec.name)
            .await?
            .ok_or_else(|| NetError::Invalid {
                reason: format!("bridge {} vanished right after it was created", spec.name),
            })?;
        Ok(link.index)
    }

    /// Creates a macvtap device `name` (down) on link `lower` in `mode`, with MAC `mac` (the guest's:
    /// a macvtap passes frames for its own address only), and returns its index.
    pub async fn create_macvtap(
        &self,
        name: &str,
        lower: u32,
        mode: MacVtapMode,
        mac: Option<MacAddr>,
    ) -> Result<u32, NetError> {
        let mut builder = LinkMacVtap::new(name, lower, mode);
        if let Some(mac) = mac {
            builder = builder.address(mac.0.to_vec());
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(nl_error(format!("creating macvtap {name}")))?;
        let link = self.link(name).await?.ok_or_else(|| NetError::Invalid {
            reason: format!("macvtap {name} vanished right after it was created"),
        })?;
        Ok(link.index)
    }

    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).alias(alias).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl_error(format!("setting the alias of link #{index}")))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl_error(format!("bringing link #{index} up")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl_error(format!("setting MTU of link #{index}")))
    }

    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index)
            .address(mac.0.to_vec())
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl_error(format!("setting MAC of link #{index}")))
    }

    /// Makes link `index` a port of bridge `bridge_index`.
    pub async fn set_controller(&self, index: u32, bridge_index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl_error(format!(
                "attaching link #{index} to bridge #{bridge_index}"
            )))
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), NetError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl_error(format!("deleting link #{index}")))
    }

    pub async fn add_ipv4(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address), prefix)
            .execute()
            .await
            .map_err(nl_error(format!(
                "adding {address}/{prefix} to link #{index}"
            )))
    }

    /// IPv4 addresses of link `index` (`None`: of every link), with their prefix lengths and link indexes.
    pub async fn ipv4_addresses(
        &self,
        index: Option<u32>,
    ) -> Result<Vec<(u32, Ipv4Addr, u8)>, NetError> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let messages: Vec<_> = request
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing addresses"))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => {
                        Some((m.header.index, *ip, m.header.prefix_len))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// IPv4 subnets in use on the host: every address's subnet and every non-default route of the main table,
    /// except those on link `except_link` (the network's own bridge when adopting). Each comes with a
    /// description for error messages.
    pub async fn used_ipv4_subnets(
        &self,
        except_link: Option<u32>,
    ) -> Result<Vec<(Ipv4Subnet, String)>, NetError> {
        let links = self.links().await?;
        let link_name = |index: u32| {
            links
                .iter()
                .find(|l| l.index == index)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("#{index}"))
        };
        let mut used = Vec::new();
        for (index, ip, prefix) in self.ipv4_addresses(None).await? {
            if Some(index) == except_link || ip.is_loopback() {
                continue;
            }
            if let Some(subnet) = Ipv4Subnet::containing(ip, prefix) {
                used.push((
                    subnet,
                    format!("address {ip}/{prefix} on {}", link_name(index)),
                ));
            }
        }
        let routes: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing routes"))?;
        for route in &routes {
            let table = route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(route.header.table));
            let prefix = route.header.destination_prefix_length;
            if table != RT_TABLE_MAIN || prefix == 0 {
                continue;
            }
            let oif = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif.is_some() && oif == except_link {
                continue;
            }
            let destination = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            if let Some(subnet) = destination.and_then(|d| Ipv4Subnet::containing(d, prefix)) {
                let via = oif
                    .map(|i| format!(" dev {}", link_name(i)))
                    .unwrap_or_default();
                used.push((subnet, format!("route {subnet}{via}")));
            }
        }
        Ok(used)
    }

    /// IPv4 neighbour entries on link `index` (complete ones only: those with a MAC address).
    pub async fn ipv4_neighbours(&self, index: u32) -> Result<Vec<Neighbour>, NetError> {
        let messages: Vec<_> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing neighbours"))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                let mac = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(bytes) => {
                        <[u8; 6]>::try_from(bytes.as_slice()).ok()
                    }
                    _ => None,
                })?;
                Some(Neighbour {
                    ip,
                    mac: MacAddr(mac),
                    state: neighbour_state_name(m.header.state),
                })
            })
            .collect())
    }
}

fn neighbour_state_name(state: NeighbourState) -> String {
    match state {
        NeighbourState::Incomplete => "incomplete".into(),
        NeighbourState::Reachable => "reachable".into(),
        NeighbourState::Stale => "stale".into(),
        NeighbourState::Delay => "delay".into(),
        NeighbourState::Probe => "probe".into(),
        NeighbourState::Failed => "failed".into(),
        NeighbourState::Noarp => "noarp".into(),
        NeighbourState::Permanent => "permanent".into(),
        NeighbourState::None => "none".into(),
        NeighbourState::Other(n) => format!("state {n}"),
        _ => "unknown".into(),
    }
}

fn link_from_message(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        kind: None,
        alias: None,
        mac: None,
        mtu: None,
        controller: None,
        up: message.header.flags.contains(LinkFlags::Up),
        stats: InterfaceStats::default(),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::Controller(index) => link.controller = Some(*index),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
            }
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind_name(kind)),
                    _ => None,
                })
            }
            LinkAttribute::Stats64(s) => {
                link.stats = InterfaceStats {
                    rx_bytes: s.rx_bytes,
                    rx_packets: s.rx_packets,
                    rx_errors: s.rx_errors,
                    rx_dropped: s.rx_dropped,
                    tx_bytes: s.tx_bytes,
                    tx_packets: s.tx_packets,
                    tx_errors: s.tx_errors,
                    tx_dropped: s.tx_dropped,
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Tun => "tun".into(),
        other => other.to_string(),
    }
}
