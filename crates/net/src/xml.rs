//! libvirt's `<network>` XML: parse, validate, fill defaults, serialize (as `virsh net-dumpxml` prints it).
//!
//! Pure: no I/O. Anything this model does not support is an error naming the element or attribute and its line,
//! never silently dropped. Checks that need the host (routes, existing links) live in the runtime.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use oxvirt_xml::roxmltree;
use oxvirt_xml::{escape_attr, escape_text, LimitError, XmlError};
use uuid::Uuid;

use crate::addr::{mask_to_prefix, Ipv4Subnet, MacAddr};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Prefix of the bridge names oxvirt generates (`oxbr0`, `oxbr1`, ...), like libvirt's `virbrN`.
pub const GENERATED_BRIDGE_PREFIX: &str = "oxbr";

/// A virtual network definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    pub name: String,
    pub uuid: Uuid,
    pub forward: Forward,
    pub bridge: Bridge,
    /// MAC address of the bridge; generated (52:54:00:..) by [`NetworkDef::fill_defaults`] when absent.
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// DNS domain served by dnsmasq for this network (`<domain name=>`).
    pub domain: Option<String>,
    pub dns_hosts: Vec<DnsHost>,
    /// The network's IPv4 address on the bridge and its DHCP service; `None` for a network without IP.
    pub ip: Option<IpConfig>,
}

/// `<forward>`: how traffic leaves the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mode: ForwardMode,
    /// Uplink device (`dev=`): NAT/routing only towards it.
    pub dev: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// No `<forward>`: guests reach each other and the host, nothing else.
    Isolated,
    /// Masquerade the subnet behind the host's addresses.
    Nat,
    /// Route the subnet without translation.
    Route,
    /// Use an existing host bridge (`<bridge name=>`); oxvirt creates nothing but the guests' TAPs.
    Bridge,
}

impl ForwardMode {
    fn xml_name(self) -> Option<&'static str> {
        match self {
            ForwardMode::Isolated => None,
            ForwardMode::Nat => Some("nat"),
            ForwardMode::Route => Some("route"),
            ForwardMode::Bridge => Some("bridge"),
        }
    }
}

/// `<bridge>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Filled with a free `oxbrN` by [`NetworkDef::fill_defaults`] when absent.
    pub name: Option<String>,
    pub stp: bool,
    /// STP forward delay in seconds.
    pub delay: u32,
}

/// `<ip>` with its optional `<dhcp>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The bridge's own address.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Whether the definition spelled the prefix as `netmask=` (kept on output, as libvirt does).
    pub written_as_netmask: bool,
    pub dhcp: Option<Dhcp>,
}

impl IpConfig {
    pub fn subnet(&self) -> Ipv4Subnet {
        // The prefix is validated at parse time (0..=32); a definition changed by hand to a bigger one is
        // treated as the single address.
        Ipv4Subnet::containing(self.address, self.prefix)
            .unwrap_or(Ipv4Subnet::single(self.address))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dhcp {
    pub ranges: Vec<DhcpRange>,
    pub hosts: Vec<DhcpHost>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// A static DHCP reservation (`<host mac= name= ip=/>`): at least one of `mac` and `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<MacAddr>,
    pub name: Option<String>,
    pub ip: Ipv4Addr,
}

/// `<dns><host ip=><hostname>..</hostname></host></dns>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    pub ip: Ipv4Addr,
    pub hostnames: Vec<String>,
}

/// What is wrong with a network definition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetXmlError {
    #[error("network XML is not well-formed: {0}")]
    Syntax(String),
    /// The text breaks one of the XML limits (size, nesting, attributes, nodes, namespaces).
    #[error(transparent)]
    Limit(LimitError),
    #[error("unsupported {what} at line {line}")]
    Unsupported { what: String, line: u32 },
    #[error("missing {what} at line {line}")]
    Missing { what: String, line: u32 },
    #[error("invalid {what} '{value}' at line {line}: {reason}")]
    BadValue {
        what: String,
        value: String,
        line: u32,
        reason: String,
    },
    #[error("invalid network '{network}': {reason}")]
    Invalid { network: String, reason: String },
    #[error("network '{network}' conflicts with defined network '{other}': {reason}")]
    Conflict {
        network: String,
        other: String,
        reason: String,
    },
}

impl NetworkDef {
    /// Parses and validates a `<network>` document. Defaults that depend on other networks (bridge name) are
    /// left for [`NetworkDef::fill_defaults`]; a missing `<uuid>` is generated here.
    pub fn from_xml(xml: &str) -> Result<NetworkDef, NetXmlError> {
        let doc = oxvirt_xml::parse(xml).map_err(|err| match err {
            XmlError::Limit(limit) => NetXmlError::Limit(limit),
            XmlError::Malformed { message, .. } => NetXmlError::Syntax(message),
        })?;
        let root = doc.root_element();
        let line = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
        if root.tag_name().name() != "network" || root.tag_name().namespace().is_some() {
            return Err(NetXmlError::Unsupported {
                what: format!(
                    "root element <{}> (expected <network>)",
                    root.tag_name().name()
                ),
                line: line(root),
            });
        }
        check_attributes(&doc, root, &[])?;

        let mut name = None;
        let mut uuid = None;
        let mut forward = Forward {
            mode: ForwardMode::Isolated,
            dev: None,
        };
        let mut bridge = Bridge {
            name: None,
            stp: true,
            delay: 0,
        };
        let mut mac = None;
        let mut mtu = None;
        let mut domain = None;
        let mut dns_hosts = Vec::new();
        let mut ip: Option<IpConfig> = None;
        let mut seen = HashSet::new();

        for child in elements(&doc, root)? {
            let tag = child.tag_name().name();
            if !seen.insert(tag) && tag != "ip" {
                return Err(NetXmlError::Unsupported {
                    what: format!("second <{tag}> element"),
                    line: line(child),
                });
            }
            match tag {
                "name" => {
                    check_attributes(&doc, child, &[])?;
                    name = Some(text_of(&doc, child)?);
                }
                "uuid" => {
                    check_attributes(&doc, child, &[])?;
                    let text = text_of(&doc, child)?;
                    uuid = Some(Uuid::parse_str(&text).map_err(|e| NetXmlError::BadValue {
                        what: "<uuid>".into(),
                        value: text.clone(),
                        line: line(child),
                        reason: e.to_string(),
                    })?);
                }
                "forward" => {
                    check_attributes(&doc, child, &["mode", "dev"])?;
                    check_empty(&doc, child)?;
                    forward.mode = match child.attribute("mode") {
                        None | Some("nat") => ForwardMode::Nat,
                        Some("route") => ForwardMode::Route,
                        Some("bridge") => ForwardMode::Bridge,
                        Some(other) => {
                            return Err(NetXmlError::Unsupported {
                                what: format!("forward mode '{other}'"),
                                line: line(child),
                            })
                        }
                    };
                    if let Some(dev) = child.attribute("dev") {
                        check_ifname(dev, "<forward dev=>", line(child))?;
                        forward.dev = Some(dev.to_string());
                    }
                }
                "bridge" => {
                    check_attributes(&doc, child, &["name", "stp", "delay"])?;
                    check_empty(&doc, child)?;
                    if let Some(n) = child.attribute("name") {
                        check_ifname(n, "<bridge name=>", line(child))?;
                        bridge.name = Some(n.to_string());
                    }
                    if let Some(stp) = child.attribute("stp") {
                        bridge.stp = parse_on_off(stp, "<bridge stp=>", line(child))?;
                    }
                    if let Some(delay) = child.attribute("delay") {
                        bridge.delay = parse_number(delay, "<bridge delay=>", line(child))?;
                        if bridge.delay > 30 {
                            return Err(bad(
                                delay,
                                "<bridge delay=>",
                                line(child),
                                "must be 0..=30 seconds",
                            ));
                        }
                    }
                }
                "mac" => {
                    check_attributes(&doc, child, &["address"])?;
                    check_empty(&doc, child)?;
                    let text = required(child, "address", line(child))?;
                    let parsed = parse_mac(text, "<mac address=>", line(child))?;
                    if parsed.is_multicast() {
                        return Err(bad(
                            text,
                            "<mac address=>",
                            line(child),
                            "multicast MAC address",
                        ));
                    }
                    mac = Some(parsed);
                }
                "mtu" => {
                    check_attributes(&doc, child, &["size"])?;
                    check_empty(&doc, child)?;
                    let text = required(child, "size", line(child))?;
                    let size: u32 = parse_number(text, "<mtu size=>", line(child))?;
                    if !(68..=65535).contains(&size) {
                        return Err(bad(text, "<mtu size=>", line(child), "must be 68..=65535"));
                    }
                    mtu = Some(size);
                }
                "domain" => {
                    check_attributes(&doc, child, &["name"])?;
                    check_empty(&doc, child)?;
                    let text = required(child, "name", line(child))?;
                    check_hostname(text, "<domain name=>", line(child))?;
                    domain = Some(text.to_string());
                }
                "dns" => {
                    check_attributes(&doc, child, &[])?;
                    dns_hosts = parse_dns(&doc, child)?;
                }
                "ip" => {
                    if ip.is_some() {
                        return Err(NetXmlError::Unsupported {
                            what: "second <ip> element (one IPv4 address per network)".into(),
                            line: line(child),
                        });
                    }
                    ip = Some(parse_ip(&doc, child)?);
                }
                other => {
                    return Err(NetXmlError::Unsupported {
                        what: format!("element <{other}> in <network>"),
                        line: line(child),
                    })
                }
            }
        }

        let name = name.ok_or(NetXmlError::Missing {
            what: "<name> in <network>".into(),
            line: line(root),
        })?;
        let def = NetworkDef {
            name,
            uuid: uuid.unwrap_or_else(Uuid::new_v4),
            forward,
            bridge,
            mac,
            mtu,
            domain,
            dns_hosts,
            ip,
        };
        def.validate()?;
        Ok(def)
    }

    /// Checks the rules that hold within one definition (called by [`NetworkDef::from_xml`]; call again after
    /// changing a definition by hand).
    pub fn validate(&self) -> Result<(), NetXmlError> {
        let invalid = |reason: String| NetXmlError::Invalid {
            network: self.name.clone(),
            reason,
        };
        check_network_name(&self.name).map_err(invalid)?;
        if let Some(bridge) = &self.bridge.name {
            check_ifname_text(bridge)
                .map_err(|r| invalid(format!("bridge name '{bridge}': {r}")))?;
        }
        if self.forward.mode == ForwardMode::Bridge {
            if self.bridge.name.is_none() {
                return Err(invalid(
                    "forward mode 'bridge' needs <bridge name=> of an existing host bridge".into(),
                ));
            }
            if self.ip.is_some()
                || !self.dns_hosts.is_empty()
                || self.domain.is_some()
                || self.mac.is_some()
            {
                return Err(invalid(
                    "forward mode 'bridge' uses a host bridge as it is: <ip>, <dns>, <domain> and <mac> are not allowed"
                        .into(),
                ));
            }
            if self.forward.dev.is_some() {
                return Err(invalid(
                    "forward mode 'bridge' takes no dev= (the bridge is the uplink)".into(),
                ));
            }
        }
        if matches!(self.forward.mode, ForwardMode::Nat | ForwardMode::Route) && self.ip.is_none() {
            return Err(invalid(
                "NAT and routed networks need an <ip> address".into(),
            ));
        }
        if self.ip.is_none() && !self.dns_hosts.is_empty() {
            return Err(invalid(
                "<dns> hosts need an <ip> on the network (dnsmasq listens there)".into(),
            ));
        }
        let Some(ip) = &self.ip else { return Ok(()) };
        let subnet = ip.subnet();
        if !(8..=30).contains(&ip.prefix) {
            return Err(invalid(format!(
                "prefix /{} is not supported (use /8../30)",
                ip.prefix
            )));
        }
        if !subnet.is_host_address(ip.address) {
            return Err(invalid(format!(
                "address {} is the network or broadcast address of {subnet}",
                ip.address
            )));
        }
        let Some(dhcp) = &ip.dhcp else { return Ok(()) };
        for range in &dhcp.ranges {
            if !subnet.is_host_address(range.start) || !subnet.is_host_address(range.end) {
                return Err(invalid(format!(
                    "DHCP range {}-{} is not inside {subnet}",
                    range.start, range.end
                )));
            }
            if u32::from(range.start) > u32::from(range.end) {
                return Err(invalid(format!(
                    "DHCP range {}-{} ends before it starts",
                    range.start, range.end
                )));
            }
            if (u32::from(range.start)..=u32::from(range.end)).contains(&u32::from(ip.address)) {
                return Err(invalid(format!(
                    "DHCP range {}-{} contains the bridge address {}",
                    range.start, range.end, ip.address
                )));
            }
        }
        let mut macs = HashSet::new();
        let mut names = HashSet::new();
        let mut ips = HashSet::new();
        for host in &dhcp.hosts {
            if !subnet.is_host_address(host.ip) || host.ip == ip.address {
                return Err(invalid(format!(
                    "DHCP host address {} is not a free host address of {subnet}",
                    host.ip
                )));
            }
            if let Some(mac) = host.mac {
                if !macs.insert(mac) {
                    return Err(invalid(format!("duplicate MAC {mac} in DHCP hosts")));
                }
            }
            if let Some(name) = &host.name {
                if !names.insert(name.clone()) {
                    return Err(invalid(format!("duplicate name '{name}' in DHCP hosts")));
                }
            }
            if !ips.insert(host.ip) {
                return Err(invalid(format!(
                    "duplicate address {} in DHCP hosts",
                    host.ip
                )));
            }
        }
        Ok(())
    }

    /// Checks this definition against the other defined networks: unique name, uuid and bridge, and no
    /// overlapping subnets.
    pub fn check_against(&self, others: &[NetworkDef]) -> Result<(), NetXmlError> {
        for other in others
            .iter()
            .filter(|o| o.uuid != self.uuid || o.name != self.name)
        {
            let conflict = |reason: String| NetXmlError::Conflict {
                network: self.name.clone(),
                other: other.name.clone(),
                reason,
            };
            if other.name == self.name {
                return Err(conflict("same name, different uuid".into()));
            }
            if other.uuid == self.uuid {
                return Err(conflict(format!("same uuid {}", self.uuid)));
            }
            if self.bridge.name.is_some() && self.bridge.name == other.bridge.name {
                // Several networks may share an existing host bridge only in forward mode 'bridge'.
                if !(self.forward.mode == ForwardMode::Bridge
                    && other.forward.mode == ForwardMode::Bridge)
                {
                    return Err(conflict(format!(
                        "same bridge '{}'",
                        self.bridge.name.as_deref().unwrap_or_default()
                    )));
                }
            }
            if let (Some(mine), Some(theirs)) = (&self.ip, &other.ip) {
                if mine.subnet().overlaps(&theirs.subnet()) {
                    return Err(conflict(format!(
                        "subnet {} overlaps {}",
                        mine.subnet(),
                        theirs.subnet()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fills what `virsh net-dumpxml` always shows: a bridge name (the first `oxbrN` not used by `others` nor
    /// reported taken by `name_taken`, e.g. an existing host link) and a bridge MAC address.
    pub fn fill_defaults(&mut self, others: &[NetworkDef], name_taken: impl Fn(&str) -> bool) {
        if self.bridge.name.is_none() {
            let used: HashSet<&str> = others
                .iter()
                .filter_map(|o| o.bridge.name.as_deref())
                .collect();
            let free = (0u32..)
                .map(|n| format!("{GENERATED_BRIDGE_PREFIX}{n}"))
                .find(|candidate| !used.contains(candidate.as_str()) && !name_taken(candidate));
            self.bridge.name = free;
        }
        if self.mac.is_none() && self.forward.mode != ForwardMode::Bridge {
            self.mac = Some(MacAddr::random_qemu());
        }
    }

    /// The bridge guests of this network attach to (set once [`NetworkDef::fill_defaults`] ran).
    pub fn bridge_name(&self) -> Option<&str> {
        self.bridge.name.as_deref()
    }

    /// Serializes in libvirt's element order, with explicit defaults, two-space indented.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<network>\n");
        let _ = writeln!(out, "  <name>{}</name>", escape_text(&self.name));
        let _ = writeln!(out, "  <uuid>{}</uuid>", self.uuid);
        if let Some(mode) = self.forward.mode.xml_name() {
            match &self.forward.dev {
                Some(dev) => {
                    let _ = writeln!(out, "  <forward mode='{mode}' dev='{}'/>", escape_attr(dev));
                }
                None => {
                    let _ = writeln!(out, "  <forward mode='{mode}'/>");
                }
            }
        }
        match (&self.bridge.name, self.forward.mode) {
            (Some(name), ForwardMode::Bridge) => {
                let _ = writeln!(out, "  <bridge name='{}'/>", escape_attr(name));
            }
            (name, _) => {
                let name_attr = name
                    .as_deref()
                    .map(|n| format!("name='{}' ", escape_attr(n)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  <bridge {name_attr}stp='{}' delay='{}'/>",
                    if self.bridge.stp { "on" } else { "off" },
                    self.bridge.delay
                );
            }
        }
        if let Some(mtu) = self.mtu {
            let _ = writeln!(out, "  <mtu size='{mtu}'/>");
        }
        if let Some(mac) = self.mac {
            let _ = writeln!(out, "  <mac address='{mac}'/>");
        }
        if let Some(domain) = &self.domain {
            let _ = writeln!(out, "  <domain name='{}'/>", escape_attr(domain));
        }
        if !self.dns_hosts.is_empty() {
            out.push_str("  <dns>\n");
            for host in &self.dns_hosts {
                let _ = writeln!(out, "    <host ip='{}'>", host.ip);
                for name in &host.hostnames {
                    let _ = writeln!(out, "      <hostname>{}</hostname>", escape_text(name));
                }
                out.push_str("    </host>\n");
            }
            out.push_str("  </dns>\n");
        }
        if let Some(ip) = &self.ip {
            let mask = if ip.written_as_netmask {
                format!("netmask='{}'", ip.subnet().netmask())
            } else {
                format!("prefix='{}'", ip.prefix)
            };
            match &ip.dhcp {
                None => {
                    let _ = writeln!(out, "  <ip address='{}' {mask}/>", ip.address);
                }
                Some(dhcp) => {
                    let _ = writeln!(out, "  <ip address='{}' {mask}>", ip.address);
                    out.push_str("    <dhcp>\n");
                    for range in &dhcp.ranges {
                        let _ = writeln!(
                            out,
                            "      <range start='{}' end='{}'/>",
                            range.start, range.end
                        );
                    }
                    for host in &dhcp.hosts {
                        out.push_str("      <host");
                        if let Some(mac) = host.mac {
                            let _ = write!(out, " mac='{mac}'");
                        }
                        if let Some(name) = &host.name {
                            let _ = write!(out, " name='{}'", escape_attr(name));
                        }
                        let _ = writeln!(out, " ip='{}'/>", host.ip);
                    }
                    out.push_str("    </dhcp>\n");
                    out.push_str("  </ip>\n");
                }
            }
        }
        out.push_str("</network>\n");
        out
    }

    /// libvirt's `default` network on the first free `192.168.N.0/24` (N from 122 up, then from 0), avoiding
    /// `used` subnets (host addresses/routes and other networks). NAT, bridge address `.1`, DHCP `.2`-`.254`.
    /// `None` when every 192.168.N.0/24 is taken.
    pub fn propose_default(used: &[Ipv4Subnet]) -> Option<NetworkDef> {
        let third_octet = (122u8..=255).chain(0..122).find(|n| {
            let candidate = Ipv4Subnet::containing(Ipv4Addr::new(192, 168, *n, 0), 24);
            candidate.is_some_and(|c| !used.iter().any(|u| u.overlaps(&c)))
        })?;
        let at = |host: u8| Ipv4Addr::new(192, 168, third_octet, host);
        Some(NetworkDef {
            name: "default".into(),
            uuid: Uuid::new_v4(),
            forward: Forward {
                mode: ForwardMode::Nat,
                dev: None,
            },
            bridge: Bridge {
                name: None,
                stp: true,
                delay: 0,
            },
            mac: None,
            mtu: None,
            domain: None,
            dns_hosts: Vec::new(),
            ip: Some(IpConfig {
                address: at(1),
                prefix: 24,
                written_as_netmask: true,
                dhcp: Some(Dhcp {
                    ranges: vec![DhcpRange {
                        start: at(2),
                        end: at(254),
                    }],
                    hosts: Vec::new(),
                }),
            }),
        })
    }
}

fn parse_ip(doc: &roxmltree::Document, node: roxmltree::Node) -> Result<IpConfig, NetXmlError> {
    let line = doc.text_pos_at(node.range().start).row;
    check_attributes(doc, node, &["address", "netmask", "prefix", "family"])?;
    if let Some(family) = node.attribute("family") {
        if family != "ipv4" {
            return Err(NetXmlError::Unsupported {
                what: format!("<ip family='{family}'> (only IPv4 networks)"),
                line,
            });
        }
    }
    let address = parse_ipv4(required(node, "address", line)?, "<ip address=>", line)?;
    let (prefix, written_as_netmask) = match (node.attribute("netmask"), node.attribute("prefix")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "netmask+prefix",
                "<ip>",
                line,
                "give either netmask= or prefix=, not both",
            ))
        }
        (Some(mask), None) => {
            let parsed = parse_ipv4(mask, "<ip netmask=>", line)?;
            let prefix = mask_to_prefix(parsed)
                .ok_or_else(|| bad(mask, "<ip netmask=>", line, "not a contiguous netmask"))?;
            (prefix, true)
        }
        (None, Some(prefix)) => {
            let value: u8 = parse_number(prefix, "<ip prefix=>", line)?;
            if value > 32 {
                return Err(bad(prefix, "<ip prefix=>", line, "must be 0..=32"));
            }
            (value, false)
        }
        (None, None) => {
            return Err(NetXmlError::Missing {
                what: "netmask= or prefix= on <ip>".into(),
                line,
            })
        }
    };
    let mut dhcp = None;
    for child in elements(doc, node)? {
        let child_line = doc.text_pos_at(child.range().start).row;
        match child.tag_name().name() {
            "dhcp" if dhcp.is_none() => {
                check_attributes(doc, child, &[])?;
                dhcp = Some(parse_dhcp(doc, child)?);
            }
            other => {
                return Err(NetXmlError::Unsupported {
                    what: format!("element <{other}> in <ip>"),
                    line: child_line,
                })
            }
        }
    }
    Ok(IpConfig {
        address,
        prefix,
        written_as_netmask,
        dhcp,
    })
}

fn parse_dhcp(doc: &roxmltree::Document, node: roxmltree::Node) -> Result<Dhcp, NetXmlError> {
    let mut dhcp = Dhcp::default();
    for child in elements(doc, node)? {
        let line = doc.text_pos_at(child.range().start).row;
        check_empty(doc, child)?;
        match child.tag_name().name() {
            "range" => {
                check_attributes(doc, child, &["start", "end"])?;
                dhcp.ranges.push(DhcpRange {
                    start: parse_ipv4(required(child, "start", line)?, "<range start=>", line)?,
                    end: parse_ipv4(required(child, "end", line)?, "<range end=>", line)?,
                });
            }
            "host" => {
                check_attributes(doc, child, &["mac", "name", "ip"])?;
                let mac = child
                    .attribute("mac")
                    .map(|m| parse_mac(m, "<host mac=>", line))
                    .transpose()?;
                let name = child.attribute("name").map(str::to_string);
                if let Some(name) = &name {
                    check_hostname(name, "<host name=>", line)?;
                }
                if mac.is_none() && name.is_none() {
                    return Err(NetXmlError::Missing {
                        what: "mac= or name= on DHCP <host>".into(),
                        line,
                    });
                }
                dhcp.hosts.push(DhcpHost {
                    mac,
                    name,
                    ip: parse_ipv4(required(child, "ip", line)?, "<host ip=>", line)?,
                });
            }
            other => {
                return Err(NetXmlError::Unsupported {
                    what: format!("element <{other}> in <dhcp>"),
                    line,
                })
            }
        }
    }
    Ok(dhcp)
}

fn parse_dns(
    doc: &roxmltree::Document,
    node: roxmltree::Node,
) -> Result<Vec<DnsHost>, NetXmlError> {
    let mut hosts = Vec::new();
    for child in elements(doc, node)? {
        let line = doc.text_pos_at(child.range().start).row;
        if child.tag_name().name() != "host" {
            return Err(NetXmlError::Unsupported {
                what: format!("element <{}> in <dns>", child.tag_name().name()),
                line,
            });
        }
        check_attributes(doc, child, &["ip"])?;
        let ip = parse_ipv4(required(child, "ip", line)?, "<dns host ip=>", line)?;
        let mut hostnames = Vec::new();
        for name_node in elements(doc, child)? {
            let name_line = doc.text_pos_at(name_node.range().start).row;
            if name_node.tag_name().name() != "hostname" {
                return Err(NetXmlError::Unsupported {
                    what: format!("element <{}> in <dns><host>", name_node.tag_name().name()),
                    line: name_line,
                });
            }
            check_attributes(doc, name_node, &[])?;
            let text = text_of(doc, name_node)?;
            check_hostname(&text, "<hostname>", name_line)?;
            hostnames.push(text);
        }
        if hostnames.is_empty() {
            return Err(NetXmlError::Missing {
                what: "<hostname> in <dns><host>".into(),
                line,
            });
        }
        hosts.push(DnsHost { ip, hostnames });
    }
    Ok(hosts)
}

fn check_attributes(
    doc: &roxmltree::Document,
    node: roxmltree::Node,
    allowed: &[&str],
) -> Result<(), NetXmlError> {
    for attribute in node.attributes() {
        if attribute.namespace().is_some() || !allowed.contains(&attribute.name()) {
            return Err(NetXmlError::Unsupported {
                what: format!(
                    "attribute '{}' on <{}>",
                    attribute.name(),
                    node.tag_name().name()
                ),
                line: doc.text_pos_at(attribute.range().start).row,
            });
        }
    }
    Ok(())
}

/// The element children of `node`. Text between them must be blank, and an element in a
/// namespace is not libvirt's: both are errors, never skipped.
fn elements<'a, 'input>(
    doc: &roxmltree::Document,
    node: roxmltree::Node<'a, 'input>,
) -> Result<Vec<roxmltree::Node<'a, 'input>>, NetXmlError> {
    let mut out = Vec::new();
    for child in node.children() {
        let line = doc.text_pos_at(child.range().start).row;
        if child.is_element() {
            if let Some(namespace) = child.tag_name().namespace() {
                return Err(NetXmlError::Unsupported {
                    what: format!(
                        "element <{}> of namespace '{namespace}' in <{}>",
                        child.tag_name().name(),
                        node.tag_name().name()
                    ),
                    line,
                });
            }
            out.push(child);
        } else if child.is_text() {
            let text = child.text().unwrap_or("").trim();
            if !text.is_empty() {
                let shown: String = text.chars().take(40).collect();
                return Err(NetXmlError::Unsupported {
                    what: format!("text '{shown}' in <{}>", node.tag_name().name()),
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// An element that takes attributes only: no children, no text.
fn check_empty(doc: &roxmltree::Document, node: roxmltree::Node) -> Result<(), NetXmlError> {
    if let Some(child) = elements(doc, node)?.first() {
        return Err(NetXmlError::Unsupported {
            what: format!(
                "element <{}> in <{}>",
                child.tag_name().name(),
                node.tag_name().name()
            ),
            line: doc.text_pos_at(child.range().start).row,
        });
    }
    Ok(())
}

/// An element that takes text only: no child elements.
fn check_no_children(doc: &roxmltree::Document, node: roxmltree::Node) -> Result<(), NetXmlError> {
    if let Some(child) = node.children().find(|n| n.is_element()) {
        return Err(NetXmlError::Unsupported {
            what: format!(
                "element <{}> in <{}>",
                child.tag_name().name(),
                node.tag_name().name()
            ),
            line: doc.text_pos_at(child.range().start).row,
        });
    }
    Ok(())
}

/// The trimmed text of a leaf element; an error if it has child elements or is empty.
fn text_of(doc: &roxmltree::Document, node: roxmltree::Node) -> Result<String, NetXmlError> {
    check_no_children(doc, node)?;
    // All of it: a comment splits the text into several nodes.
    let text: String = node
        .children()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(NetXmlError::Missing {
            what: format!("text of <{}>", node.tag_name().name()),
            line: doc.text_pos_at(node.range().start).row,
        });
    }
    Ok(text)
}

fn required<'a>(
    node: roxmltree::Node<'a, '_>,
    attribute: &str,
    line: u32,
) -> Result<&'a str, NetXmlError> {
    node.attribute(attribute)
        .ok_or_else(|| NetXmlError::Missing {
            what: format!("attribute '{attribute}' on <{}>", node.tag_name().name()),
            line,
        })
}

fn bad(value: &str, what: &str, line: u32, reason: &str) -> NetXmlError {
    NetXmlError::BadValue {
        what: what.into(),
        value: value.into(),
        line,
        reason: reason.into(),
    }
}

fn parse_ipv4(text: &str, what: &str, line: u32) -> Result<Ipv4Addr, NetXmlError> {
    text.parse()
        .map_err(|_| bad(text, what, line, "not an IPv4 address"))
}

fn parse_mac(text: &str, what: &str, line: u32) -> Result<MacAddr, NetXmlError> {
    text.parse()
        .map_err(|()| bad(text, what, line, "not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

fn parse_number<T: std::str::FromStr>(text: &str, what: &str, line: u32) -> Result<T, NetXmlError> {
    text.parse()
        .map_err(|_| bad(text, what, line, "not a number in range"))
}

fn parse_on_off(text: &str, what: &str, line: u32) -> Result<bool, NetXmlError> {
    match text {
        "on" | "yes" => Ok(true),
        "off" | "no" => Ok(false),
        _ => Err(bad(text, what, line, "expected 'on' or 'off'")),
    }
}

fn check_ifname(name: &str, what: &str, line: u32) -> Result<(), NetXmlError> {
    check_ifname_text(name).map_err(|reason| bad(name, what, line, &reason))
}

/// Interface names: 1..=15 bytes of letters, digits, `_`, `-`, `.` (a subset of what Linux allows, safe to
/// put in nftables rules and dnsmasq options).
pub fn check_ifname_text(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!("must be 1..={MAX_IFNAME_LEN} bytes long"));
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not interface names".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "character {c:?} is not allowed (letters, digits, '_', '-', '.')"
        ));
    }
    Ok(())
}

/// Network names end up in file names and log lines: letters, digits, `_`, `-`, `.`, `+`, at most 64.
fn check_network_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || name.starts_with('.') {
        return Err(format!(
            "name '{name}' must be 1..=64 characters and not start with '.'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')))
    {
        return Err(format!("character {c:?} is not allowed in a network name"));
    }
    Ok(())
}

/// DNS names go into dnsmasq's files: letters, digits, `-`, `.`, each label 1..=63, at most 253 in all.
fn check_hostname(name: &str, what: &str, line: u32) -> Result<(), NetXmlError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(bad(
            name,
            what,
            line,
            "not a DNS name (letters, digits, '-', dot-separated labels)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_XML: &str = "<network>
  <name>default</name>
  <forward mode='nat'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>";

    fn full_xml() -> &'static str {
        "<network>
  <name>lab</name>
  <uuid>4f3a4c64-53c1-4a8e-9c62-8f0a8b3f1c11</uuid>
  <forward mode='route' dev='eth0'/>
  <bridge name='labbr' stp='off' delay='2'/>
  <mtu size='1400'/>
  <mac address='52:54:00:12:34:56'/>
  <domain name='lab.test'/>
  <dns>
    <host ip='10.9.0.50'>
      <hostname>db</hostname>
      <hostname>db.lab.test</hostname>
    </host>
  </dns>
  <ip address='10.9.0.1' prefix='24'>
    <dhcp>
      <range start='10.9.0.100' end='10.9.0.199'/>
      <host mac='52:54:00:aa:bb:cc' name='web' ip='10.9.0.10'/>
      <host name='cache' ip='10.9.0.11'/>
    </dhcp>
  </ip>
</network>
"
    }

    fn error_of(xml: &str) -> String {
        NetworkDef::from_xml(xml)
            .expect_err("definition must be rejected")
            .to_string()
    }

    #[test]
    fn default_network_normalizes_like_net_dumpxml() {
        let mut def = NetworkDef::from_xml(DEFAULT_XML).unwrap();
        def.fill_defaults(&[], |name| name == "oxbr0");
        assert_eq!(
            def.bridge_name(),
            Some("oxbr1"),
            "oxbr0 is taken on the host"
        );
        let mac = def.mac.unwrap().to_string();
        assert!(mac.starts_with("52:54:00:"), "{mac}");
        let expected = format!(
            "<network>
  <name>default</name>
  <uuid>{}</uuid>
  <forward mode='nat'/>
  <bridge name='oxbr1' stp='on' delay='0'/>
  <mac address='{mac}'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
",
            def.uuid
        );
        assert_eq!(def.to_xml(), expected);
        // The normalized form parses back to the same definition.
        assert_eq!(NetworkDef::from_xml(&def.to_xml()).unwrap(), def);
    }

    #[test]
    fn full_definition_round_trips_exactly() {
        let def = NetworkDef::from_xml(full_xml()).unwrap();
        assert_eq!(def.forward.mode, ForwardMode::Route);
        assert_eq!(def.forward.dev.as_deref(), Some("eth0"));
        assert!(!def.bridge.stp);
        assert_eq!(def.bridge.delay, 2);
        assert_eq!(def.mtu, Some(1400));
        let ip = def.ip.as_ref().unwrap();
        assert_eq!(ip.subnet().to_string(), "10.9.0.0/24");
        assert_eq!(ip.dhcp.as_ref().unwrap().hosts.len(), 2);
        assert_eq!(def.dns_hosts[0].hostnames, ["db", "db.lab.test"]);
        assert_eq!(def.to_xml(), full_xml());
    }

    #[test]
    fn missing_uuid_is_generated_and_isolated_network_has_no_forward() {
        let a = NetworkDef::from_xml(
            "<network><name>iso</name><ip address='10.1.0.1' prefix='16'/></network>",
        )
        .unwrap();
        let b = NetworkDef::from_xml(
            "<network><name>iso</name><ip address='10.1.0.1' prefix='16'/></network>",
        )
        .unwrap();
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(a.forward.mode, ForwardMode::Isolated);
        assert!(!a.to_xml().contains("<forward"));
    }

    #[test]
    fn unsupported_element_and_attribute_are_named_with_their_line() {
        let err = error_of("<network>\n  <name>x</name>\n  <portgroup name='a'/>\n</network>");
        assert_eq!(
            err,
            "unsupported element <portgroup> in <network> at line 3"
        );
        let err = error_of(
            "<network>\n<name>x</name>\n<bridge name='br' macTableManager='libvirt'/>\n</network>",
        );
        assert_eq!(
            err,
            "unsupported attribute 'macTableManager' on <bridge> at line 3"
        );
        let err = error_of(
            "<network><name>x</name><forward mode='nat'>\n<nat><port start='1' end='2'/></nat></forward></network>",
        );
        assert_eq!(err, "unsupported element <nat> in <forward> at line 2");
        let err = error_of("<network><name>x</name><forward mode='hostdev'/></network>");
        assert!(err.contains("forward mode 'hostdev'"), "{err}");
        let err = error_of(
            "<network><name>x</name><ip family='ipv6' address='fd00::1' prefix='64'/></network>",
        );
        assert!(err.contains("<ip family='ipv6'>"), "{err}");
    }

    /// Every element of a definition using everything refuses an attribute it does not know.
    #[test]
    fn every_element_refuses_an_unknown_attribute() {
        let xml = full_xml();
        let starts: Vec<usize> = xml
            .match_indices('<')
            .map(|(i, _)| i)
            .filter(|i| !xml[i + 1..].starts_with('/'))
            .collect();
        assert!(starts.len() > 15, "{}", starts.len());
        for start in starts {
            let name_end = start + 1 + xml[start + 1..].find([' ', '>', '/']).unwrap();
            let element = &xml[start + 1..name_end];
            let changed = format!("{} bogus='1'{}", &xml[..name_end], &xml[name_end..]);
            match NetworkDef::from_xml(&changed) {
                Err(NetXmlError::Unsupported { what, .. }) => assert!(
                    what.contains("'bogus'") && what.contains(element),
                    "<{element}>: {what}"
                ),
                other => panic!("<{element}> with an unknown attribute: {other:?}"),
            }
        }
    }

    #[test]
    fn namespaced_elements_and_stray_text_are_refused() {
        let err = error_of("<network>\n<n:name xmlns:n='urn:x'>x</n:name>\n</network>");
        assert_eq!(
            err,
            "unsupported element <name> of namespace 'urn:x' in <network> at line 2"
        );
        let err = error_of("<network><name>x</name>\n<forward mode='nat'>junk</forward></network>");
        assert_eq!(err, "unsupported text 'junk' in <forward> at line 2");
        let err = error_of("<network><name>x</name>stray<bridge/></network>");
        assert_eq!(err, "unsupported text 'stray' in <network> at line 1");
        let err = error_of(
            "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>\n<range start='10.0.0.2' end='10.0.0.9'>r</range></dhcp></ip></network>",
        );
        assert_eq!(err, "unsupported text 'r' in <range> at line 2");
        // Comments are not text: the name around one is read whole.
        let def = NetworkDef::from_xml("<network><name>a<!-- c -->b</name></network>").unwrap();
        assert_eq!(def.name, "ab");
    }

    /// Just over each XML limit: the error names the limit.
    #[test]
    fn inputs_just_over_each_xml_limit_are_refused() {
        use oxvirt_xml::{Limit, Limits};
        let limits = Limits::DEFAULT;
        let limit_of = |xml: &str| match NetworkDef::from_xml(xml) {
            Err(NetXmlError::Limit(e)) => (e.limit, e.max, e.line),
            other => panic!("expected a limit error, got {other:?}"),
        };
        let pad = limits.max_bytes + 1 - DEFAULT_XML.len() - "<!---->".len();
        let big = format!("{DEFAULT_XML}<!--{}-->", "x".repeat(pad));
        assert_eq!(limit_of(&big), (Limit::Size, limits.max_bytes, None));
        // <network> is level 1: 64 more levels make 65.
        let nest = "<x>".repeat(64) + &"</x>".repeat(64);
        let deep = DEFAULT_XML.replace("<dhcp>", &format!("<dhcp>\n{nest}"));
        assert_eq!(limit_of(&deep), (Limit::Depth, 64, Some(6)));
        let attrs: String = (0..65).map(|n| format!(" a{n}='x'")).collect();
        let wide = DEFAULT_XML.replace("<forward mode='nat'", &format!("<forward{attrs}"));
        assert_eq!(limit_of(&wide), (Limit::Attributes, 64, Some(3)));
        let many = DEFAULT_XML.replace("<dhcp>", &"<!---->".repeat(limits.max_nodes));
        assert_eq!(limit_of(&many).0, Limit::Nodes);
        let declarations = "<x xmlns:q='urn:q'/>".repeat(limits.max_namespaces + 1);
        let spaced = DEFAULT_XML.replace("<dhcp>", &format!("<dhcp>{declarations}"));
        assert_eq!(limit_of(&spaced).0, Limit::Namespaces);
        let err = error_of(&wide);
        assert!(
            err.contains("attribute limit") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn bridge_name_too_long_or_with_bad_characters() {
        let err = error_of("<network><name>x</name><bridge name='a-very-long-bridge0'/></network>");
        assert!(
            err.contains("a-very-long-bridge0") && err.contains("1..=15 bytes"),
            "{err}"
        );
        let err = error_of("<network><name>x</name><bridge name='br 0'/></network>");
        assert!(err.contains("' '"), "{err}");
    }

    #[test]
    fn dhcp_range_outside_subnet_or_over_the_bridge_address() {
        let err = error_of(
            "<network><name>x</name><ip address='192.168.5.1' prefix='24'><dhcp>\
             <range start='192.168.5.10' end='192.168.6.20'/></dhcp></ip></network>",
        );
        assert!(
            err.contains("DHCP range 192.168.5.10-192.168.6.20 is not inside 192.168.5.0/24"),
            "{err}"
        );
        let err = error_of(
            "<network><name>x</name><ip address='192.168.5.1' prefix='24'><dhcp>\
             <range start='192.168.5.1' end='192.168.5.20'/></dhcp></ip></network>",
        );
        assert!(err.contains("contains the bridge address"), "{err}");
        let err = error_of(
            "<network><name>x</name><ip address='192.168.5.1' prefix='24'><dhcp>\
             <range start='192.168.5.30' end='192.168.5.20'/></dhcp></ip></network>",
        );
        assert!(err.contains("ends before it starts"), "{err}");
    }

    #[test]
    fn duplicate_mac_and_host_outside_subnet() {
        let err = error_of(
            "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>\
             <host mac='52:54:00:00:00:01' ip='10.0.0.5'/><host mac='52:54:00:00:00:01' ip='10.0.0.6'/>\
             </dhcp></ip></network>",
        );
        assert!(err.contains("duplicate MAC 52:54:00:00:00:01"), "{err}");
        let err = error_of(
            "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>\
             <host mac='52:54:00:00:00:01' ip='10.0.1.5'/></dhcp></ip></network>",
        );
        assert!(err.contains("10.0.1.5 is not a free host address"), "{err}");
    }

    #[test]
    fn bad_values_and_missing_parts() {
        assert!(
            error_of("<network><ip address='10.0.0.1' prefix='24'/></network>")
                .contains("missing <name>")
        );
        let err = error_of(
            "<network><name>x</name><ip address='10.0.0.1' netmask='255.0.255.0'/></network>",
        );
        assert!(err.contains("not a contiguous netmask"), "{err}");
        let err = error_of("<network><name>x</name><ip address='10.0.0.1' prefix='31'/></network>");
        assert!(err.contains("prefix /31"), "{err}");
        let err = error_of("<network><name>x</name><ip address='10.0.0.0' prefix='24'/></network>");
        assert!(err.contains("network or broadcast"), "{err}");
        let err = error_of("<network><name>x</name><mac address='01:00:5e:00:00:01'/></network>");
        assert!(err.contains("multicast"), "{err}");
        let err = error_of("<network><name>x</name><forward mode='nat'/></network>");
        assert!(err.contains("need an <ip>"), "{err}");
        let err = error_of("<network><name>a/b</name></network>");
        assert!(err.contains("'/'"), "{err}");
        let err = error_of("<network><name>x</name><domain name='bad name\nx'/></network>");
        assert!(err.contains("not a DNS name"), "{err}");
        assert!(error_of("<network><name>x</name>").contains("not well-formed"));
    }

    #[test]
    fn overlapping_subnets_and_duplicates_between_networks() {
        let a = NetworkDef::from_xml(DEFAULT_XML).unwrap();
        let b = NetworkDef::from_xml(
            "<network><name>b</name><forward/><ip address='192.168.0.1' prefix='16'/></network>",
        )
        .unwrap();
        let err = b
            .check_against(std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "network 'b' conflicts with defined network 'default': subnet 192.168.0.0/16 overlaps 192.168.122.0/24"
        );
        let mut same_name = b.clone();
        same_name.name = "default".into();
        same_name.ip = None;
        same_name.forward.mode = ForwardMode::Isolated;
        assert!(same_name
            .check_against(std::slice::from_ref(&a))
            .unwrap_err()
            .to_string()
            .contains("same name"));
        // A network checked against itself (redefinition) is fine.
        assert!(a.check_against(std::slice::from_ref(&a)).is_ok());
    }

    #[test]
    fn forward_bridge_uses_an_existing_bridge() {
        let def = NetworkDef::from_xml(
            "<network><name>host</name><forward mode='bridge'/><bridge name='br0'/></network>",
        )
        .unwrap();
        assert!(def.to_xml().contains("<bridge name='br0'/>"));
        let err = error_of("<network><name>host</name><forward mode='bridge'/></network>");
        assert!(err.contains("needs <bridge name=>"), "{err}");
    }

    #[test]
    fn default_proposal_skips_used_subnets() {
        let proposal = NetworkDef::propose_default(&[]).unwrap();
        assert_eq!(
            proposal.ip.as_ref().unwrap().address,
            Ipv4Addr::new(192, 168, 122, 1)
        );
        proposal.validate().unwrap();
        let used = [
            Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 122, 7), 24).unwrap(),
            Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 123, 0), 25).unwrap(),
        ];
        let proposal = NetworkDef::propose_default(&used).unwrap();
        let ip = proposal.ip.as_ref().unwrap();
        assert_eq!(ip.address, Ipv4Addr::new(192, 168, 124, 1));
        let range = ip.dhcp.as_ref().unwrap().ranges[0];
        assert_eq!(
            (range.start, range.end),
            (
                Ipv4Addr::new(192, 168, 124, 2),
                Ipv4Addr::new(192, 168, 124, 254)
            )
        );
        let everything = [Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 0, 0), 16).unwrap()];
        assert!(NetworkDef::propose_default(&everything).is_none());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Valid definitions: a subnet, the bridge on its first host address, a DHCP range after it, and
        /// reservations below the range.
        fn valid_def() -> impl Strategy<Value = NetworkDef> {
            (
                "[a-z][a-z0-9_.-]{0,20}",
                any::<[u8; 3]>(),
                16u8..=28,
                any::<bool>(),
                prop::collection::vec(any::<[u8; 3]>(), 0..4),
                prop::option::of(68u32..=9000),
                any::<bool>(),
            )
                .prop_map(|(name, net, prefix, netmask, macs, mtu, stp)| {
                    let base = u32::from(Ipv4Addr::new(10, net[0], net[1], net[2]))
                        & crate::addr::prefix_to_mask(prefix).unwrap_or(0);
                    let size = 1u32 << (32 - prefix);
                    let at = |offset: u32| Ipv4Addr::from(base + offset);
                    let hosts = macs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| DhcpHost {
                            mac: Some(MacAddr([0x52, 0x54, 0x00, m[0], m[1], i as u8])),
                            name: Some(format!("host{i}")),
                            ip: at(2 + i as u32),
                        })
                        .collect();
                    NetworkDef {
                        name,
                        uuid: Uuid::new_v4(),
                        forward: Forward {
                            mode: ForwardMode::Nat,
                            dev: None,
                        },
                        bridge: Bridge {
                            name: Some(format!("oxbr{}", net[2])),
                            stp,
                            delay: 0,
                        },
                        mac: Some(MacAddr([0x52, 0x54, 0x00, net[0], net[1], net[2]])),
                        mtu,
                        domain: None,
                        dns_hosts: Vec::new(),
                        ip: Some(IpConfig {
                            address: at(1),
                            prefix,
                            written_as_netmask: netmask,
                            dhcp: Some(Dhcp {
                                ranges: vec![DhcpRange {
                                    start: at(8),
                                    end: at(size - 2),
                                }],
                                hosts,
                            }),
                        }),
                    }
                })
        }

        proptest! {
            #[test]
            fn serialized_definitions_parse_back_identically(def in valid_def()) {
                prop_assume!(def.validate().is_ok());
                prop_assert_eq!(NetworkDef::from_xml(&def.to_xml()), Ok(def));
            }

            #[test]
            fn arbitrary_input_is_an_error_not_a_panic(text in "\\PC{0,200}") {
                let _ = NetworkDef::from_xml(&text);
                let _ = NetworkDef::from_xml(&format!("<network><name>n</name>{text}</network>"));
            }
        }
    }
}
