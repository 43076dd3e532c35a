//! oxvirt-net: virtual networks for oxvirt (libvirt's network driver role).
//!
//! Two halves:
//! - [`xml`]: libvirt's `<network>` XML. Pure: parse + validate ([`NetworkDef::from_xml`]), check against the
//!   other defined networks ([`NetworkDef::check_against`]), fill defaults ([`NetworkDef::fill_defaults`]:
//!   bridge `oxbrN`, MAC 52:54:00:..), serialize as `virsh net-dumpxml` prints ([`NetworkDef::to_xml`]).
//! - [`NetworkManager`]: the host side (root; async, tokio). Bridges, addresses, links and neighbours over
//!   rtnetlink; NAT/forwarding in the nftables table `ip oxvirt` (one `nft -f -` transaction per change);
//!   DHCP/DNS by one dnsmasq per network; persistent TAP devices for guests.
//!
//! # How the daemon uses it
//! ```text
//! let nets = NetworkManager::new("/var/lib/oxvirt/network").await?;     // once, inside the tokio runtime
//!
//! // net-define:  parse, compare with the other definitions, fill defaults, store def.to_xml()
//! let mut def = NetworkDef::from_xml(&xml)?;
//! def.check_against(&defined)?;
//! nets.fill_defaults(&mut def, &defined).await?;
//! // net-start / net-destroy
//! let status = nets.start(&def).await?;          // NetworkStatus { bridge, bridge_index, dnsmasq_pid }
//! nets.stop(&def).await?;                        // idempotent; needs no handle
//! // daemon start-up: take over what still runs, remove the rest
//! for def in &active { nets.adopt(def).await?; }  // Some(status) if running, None if not
//! nets.cleanup_orphans(&active).await?;
//! nets.status(&def).await?;                       // net-list / net-info: Some(status) if running, no changes
//! // net-dhcp-leases, domifaddr (lease / arp), domifstat
//! nets.leases(&def).await?;                       // Vec<DhcpLease>
//! nets.neighbours(bridge).await?;                 // Vec<Neighbour>
//! nets.interface_stats(tap).await?;               // InterfaceStats
//! // <interface type='network'>: bridge = def.bridge_name(); type='bridge': <source bridge=>
//! let tap = nets.create_tap(&TapRequest { name: target_dev, bridge, guest_mac, owner: domain, queues }).await?;
//! //   -> qemu -netdev tap,id=..,ifname=TAP,script=no,downscript=no[,queues=N]  (queues > 1: multiqueue TAP)
//! nets.remove_tap(&tap).await?;                   // after QEMU exits
//! // first start of the daemon: the default network
//! if let Some(def) = nets.propose_default_network(&defined).await? { /* define + start it */ }
//! ```
//! A `NetworkManager` works in the network namespace of the thread that created it; spawned tools (nft,
//! dnsmasq) run in the namespace of the thread that spawns them, so use it from the runtime it was made in.

pub mod addr;
pub mod dnsmasq;
pub mod manager;
pub mod netlink;
pub mod nft;
pub mod tap;
pub mod xml;

pub use addr::{Ipv4Subnet, MacAddr};
pub use dnsmasq::DhcpLease;
pub use manager::{MacvtapMode, MacvtapRequest, NetworkManager, NetworkStatus, TapRequest};
pub use netlink::{InterfaceStats, Link, Neighbour};
pub use xml::{ForwardMode, NetXmlError, NetworkDef};

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Xml(#[from] NetXmlError),
    #[error("{reason}")]
    Invalid { reason: String },
    #[error("network '{network}' cannot use bridge name {bridge}: a {kind} device of that name exists and is not this network's")]
    BridgeNameTaken {
        network: String,
        bridge: String,
        kind: String,
    },
    #[error("network '{network}' is already running (bridge {bridge})")]
    AlreadyRunning { network: String, bridge: String },
    #[error("network '{network}' subnet {subnet} is already in use on the host: {used_by}")]
    SubnetInUse {
        network: String,
        subnet: String,
        used_by: String,
    },
    #[error(
        "device {device} was not created by oxvirt (expected ifalias '{expected}'); left alone"
    )]
    NotOurs { device: String, expected: String },
    #[error("no network device named {device}")]
    NoSuchDevice { device: String },
    #[error("a network device named {device} already exists")]
    DeviceExists { device: String },
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("dnsmasq for network '{network}': {message}")]
    Dnsmasq { network: String, message: String },
}
