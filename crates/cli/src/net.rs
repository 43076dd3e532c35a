//! Network commands (`net-*`) and the domain interface commands (`domif*`, `attach-interface`,
//! `detach-interface`), with virsh's names, messages and output formats.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use oxvirt_api::{
    AddressSource, AttachInterfaceRequest, Client, DetachInterfaceRequest, DomainInterface,
    InterfaceAddress, InterfaceStats, NetworkInfo, NetworkLease,
};

use crate::commands::block_on;
use crate::format::table;

/// A network, by name or UUID.
#[derive(Args, Debug)]
pub struct NetworkArg {
    /// Network name or UUID.
    network: String,
}

#[derive(Subcommand, Debug)]
pub enum NetCommand {
    /// Define (but don't start) a network from an XML file.
    NetDefine {
        /// File with the network XML.
        file: PathBuf,
    },
    /// Undefine an inactive network.
    NetUndefine(NetworkArg),
    /// Start a defined, inactive network.
    NetStart(NetworkArg),
    /// Stop an active network (guests on it lose connectivity until it starts again).
    NetDestroy(NetworkArg),
    /// Mark a network to start when oxvirtd starts (or unmark it with --disable).
    NetAutostart {
        #[command(flatten)]
        network: NetworkArg,
        /// Unmark the network instead.
        #[arg(long)]
        disable: bool,
    },
    /// List networks.
    NetList {
        /// List active and inactive networks.
        #[arg(long)]
        all: bool,
        /// List only inactive networks.
        #[arg(long, conflicts_with = "all")]
        inactive: bool,
        /// Print only names, one a line.
        #[arg(long)]
        name: bool,
    },
    /// Show network information.
    NetInfo(NetworkArg),
    /// Print a network's XML definition.
    NetDumpxml(NetworkArg),
    /// Edit a network's XML definition with $EDITOR.
    NetEdit(NetworkArg),
    /// Show the DHCP leases of a network.
    NetDhcpLeases {
        #[command(flatten)]
        network: NetworkArg,
        /// Only the lease of this MAC address.
        #[arg(long)]
        mac: Option<String>,
    },
    /// List a domain's network interfaces.
    Domiflist {
        /// Domain name or UUID.
        domain: String,
    },
    /// Show the addresses of a running domain's network interfaces.
    Domifaddr {
        /// Domain name or UUID.
        domain: String,
        /// Only this interface (its host device name).
        #[arg(long)]
        interface: Option<String>,
        /// Where addresses come from.
        #[arg(long, value_parser = ["lease", "arp"], default_value = "lease")]
        source: String,
    },
    /// Show the traffic counters of a running domain's interface (as the guest sees them).
    Domifstat {
        /// Domain name or UUID.
        domain: String,
        /// The interface's host device name or its MAC address.
        interface: String,
    },
    /// Add a network interface to a domain (hotplug with --live).
    AttachInterface {
        /// Domain name or UUID.
        domain: String,
        /// Interface type.
        #[arg(long = "type", value_parser = ["network", "bridge"])]
        interface_type: String,
        /// The network or bridge to connect to.
        #[arg(long)]
        source: String,
        /// NIC model (default virtio).
        #[arg(long)]
        model: Option<String>,
        /// MAC address (default: generated under 52:54:00).
        #[arg(long)]
        mac: Option<String>,
        /// Change the stored definition.
        #[arg(long)]
        config: bool,
        /// Change the running guest.
        #[arg(long)]
        live: bool,
    },
    /// Remove a network interface from a domain (hot-unplug with --live).
    DetachInterface {
        /// Domain name or UUID.
        domain: String,
        /// Interface type.
        #[arg(long = "type", value_parser = ["network", "bridge", "user"])]
        interface_type: String,
        /// Which interface, when the domain has several of that type.
        #[arg(long)]
        mac: Option<String>,
        /// Change the stored definition.
        #[arg(long)]
        config: bool,
        /// Change the running guest.
        #[arg(long)]
        live: bool,
    },
}

/// Runs a network command; returns what it prints on success.
pub fn run(client: &Client, command: NetCommand) -> anyhow::Result<String> {
    match command {
        NetCommand::NetEdit(arg) => crate::edit::run_network(client, &arg.network),
        command => block_on(run_async(client, command))?,
    }
}

async fn run_async(client: &Client, command: NetCommand) -> anyhow::Result<String> {
    let output = match command {
        NetCommand::NetDefine { file } => {
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let network = client
                .define_network(&xml)
                .await
                .with_context(|| format!("failed to define network from {}", file.display()))?;
            format!("Network {} defined from {}\n", network.name, file.display())
        }
        NetCommand::NetUndefine(arg) => {
            let network = client.undefine_network(&arg.network).await?;
            format!("Network {} has been undefined\n", network.name)
        }
        NetCommand::NetStart(arg) => {
            let network = client.start_network(&arg.network).await?;
            format!("Network {} started\n", network.name)
        }
        NetCommand::NetDestroy(arg) => {
            let network = client.destroy_network(&arg.network).await?;
            format!("Network {} destroyed\n", network.name)
        }
        NetCommand::NetAutostart { network, disable } => {
            let network = client
                .set_network_autostart(&network.network, !disable)
                .await?;
            if disable {
                format!("Network {} unmarked as autostarted\n", network.name)
            } else {
                format!("Network {} marked as autostarted\n", network.name)
            }
        }
        NetCommand::NetList {
            all,
            inactive,
            name,
        } => {
            let networks: Vec<NetworkInfo> = client
                .list_networks()
                .await?
                .into_iter()
                .filter(|n| all || (n.active != inactive))
                .collect();
            if name {
                networks.iter().map(|n| format!("{}\n", n.name)).collect()
            } else {
                net_list(&networks)
            }
        }
        NetCommand::NetInfo(arg) => net_info(&client.network_info(&arg.network).await?),
        NetCommand::NetDumpxml(arg) => client.network_xml(&arg.network).await?,
        NetCommand::NetEdit(_) => unreachable!("net-edit runs outside the async runtime"),
        NetCommand::NetDhcpLeases { network, mac } => {
            let mut leases = client.network_leases(&network.network).await?;
            if let Some(mac) = mac {
                leases.retain(|l| l.mac.eq_ignore_ascii_case(&mac));
            }
            dhcp_leases(&leases)
        }
        NetCommand::Domiflist { domain } => domiflist(&client.domain_interfaces(&domain).await?),
        NetCommand::Domifaddr {
            domain,
            interface,
            source,
        } => {
            let source = if source == "arp" {
                AddressSource::Arp
            } else {
                AddressSource::Lease
            };
            let mut addresses = client.domain_interface_addresses(&domain, source).await?;
            if let Some(interface) = interface {
                addresses.retain(|a| a.name == interface);
            }
            domifaddr(&addresses)
        }
        NetCommand::Domifstat { domain, interface } => domifstat(
            &interface,
            &client.domain_interface_stats(&domain, &interface).await?,
        ),
        NetCommand::AttachInterface {
            domain,
            interface_type,
            source,
            model,
            mac,
            config,
            live,
        } => {
            let request = AttachInterfaceRequest {
                interface_type,
                source,
                model,
                mac,
                live,
                config,
            };
            client.attach_interface(&domain, &request).await?;
            "Interface attached successfully\n".to_string()
        }
        NetCommand::DetachInterface {
            domain,
            interface_type,
            mac,
            config,
            live,
        } => {
            let request = DetachInterfaceRequest {
                interface_type,
                mac,
                live,
                config,
            };
            client.detach_interface(&domain, &request).await?;
            "Interface detached successfully\n".to_string()
        }
    };
    Ok(output)
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// `net-list`: virsh's table, networks by name.
pub fn net_list(networks: &[NetworkInfo]) -> String {
    let mut sorted: Vec<&NetworkInfo> = networks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.active { "active" } else { "inactive" }.to_string(),
                yes_no(n.autostart).to_string(),
                yes_no(n.persistent).to_string(),
            ]
        })
        .collect();
    table(&["Name", "State", "Autostart", "Persistent"], &rows)
}

/// `net-info`.
pub fn net_info(network: &NetworkInfo) -> String {
    let mut fields = vec![
        ("Name:", network.name.clone()),
        ("UUID:", network.uuid.clone()),
        ("Active:", yes_no(network.active).to_string()),
        ("Persistent:", yes_no(network.persistent).to_string()),
        ("Autostart:", yes_no(network.autostart).to_string()),
    ];
    if let Some(bridge) = &network.bridge {
        fields.push(("Bridge:", bridge.clone()));
    }
    fields
        .into_iter()
        .map(|(label, value)| format!("{label:<15} {value}\n"))
        .collect()
}

/// `net-dhcp-leases`: virsh's table; expiry in local time.
pub fn dhcp_leases(leases: &[NetworkLease]) -> String {
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.expiry_unix
                    .map(|unix| crate::format::local_time(unix, false))
                    .unwrap_or_else(|| "never".to_string()),
                l.mac.clone(),
                l.protocol.clone(),
                l.address.clone(),
                l.hostname.clone().unwrap_or_else(|| "-".to_string()),
                l.client_id.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    table(
        &[
            "Expiry Time",
            "MAC address",
            "Protocol",
            "IP address",
            "Hostname",
            "Client ID or DUID",
        ],
        &rows,
    )
}

/// `domiflist`: virsh's table; "-" for what is not there.
pub fn domiflist(interfaces: &[DomainInterface]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let rows: Vec<Vec<String>> = interfaces
        .iter()
        .map(|i| {
            vec![
                dash(&i.target),
                i.interface_type.clone(),
                dash(&i.source),
                dash(&i.model),
                i.mac.clone(),
            ]
        })
        .collect();
    table(&["Interface", "Type", "Source", "Model", "MAC"], &rows)
}

/// `domifaddr`: virsh's fixed-width layout; further addresses of an interface get "-" for
/// its name and MAC.
pub fn domifaddr(addresses: &[InterfaceAddress]) -> String {
    let mut out = format!(
        " {:<10} {:<20} {:<8}     {}\n{}\n",
        "Name",
        "MAC address",
        "Protocol",
        "Address",
        "-".repeat(79)
    );
    let mut previous: Option<&str> = None;
    for address in addresses {
        let (name, mac) = if previous == Some(address.name.as_str()) {
            ("-", "-")
        } else {
            (address.name.as_str(), address.mac.as_str())
        };
        out.push_str(&format!(
            " {name:<10} {mac:<17}    {:<12} {}\n",
            address.protocol, address.address
        ));
        previous = Some(address.name.as_str());
    }
    out
}

/// `domifstat`: one "IFACE counter value" line per counter.
pub fn domifstat(interface: &str, stats: &InterfaceStats) -> String {
    [
        ("rx_bytes", stats.rx_bytes),
        ("rx_packets", stats.rx_packets),
        ("rx_errs", stats.rx_errs),
        ("rx_drop", stats.rx_drop),
        ("tx_bytes", stats.tx_bytes),
        ("tx_packets", stats.tx_packets),
        ("tx_errs", stats.tx_errs),
        ("tx_drop", stats.tx_drop),
    ]
    .iter()
    .map(|(name, value)| format!("{interface} {name} {value}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local times read like libc's (here through date(1), in the same environment and zone).
    #[test]
    fn lease_expiry_is_in_local_time_like_libc() {
        for unix in [0u64, 1_700_000_000, 1_719_792_000] {
            let date = std::process::Command::new("date")
                .args(["-d", &format!("@{unix}"), "+%Y-%m-%d %H:%M:%S"])
                .output()
                .expect("date(1) runs");
            let expected = String::from_utf8_lossy(&date.stdout).trim().to_string();
            assert_eq!(
                crate::format::local_time(unix, false),
                expected,
                "unix time {unix}"
            );
        }
        assert_eq!(
            crate::format::local_time(u64::MAX, false),
            u64::MAX.to_string()
        );
    }

    fn network(name: &str, active: bool, autostart: bool) -> NetworkInfo {
        NetworkInfo {
            name: name.to_string(),
            uuid: "dd8fe884-6c02-601e-7551-cca97df1c5df".to_string(),
            active,
            persistent: true,
            autostart,
            bridge: Some("virbr0".to_string()),
        }
    }

    // The expected texts below are what `virsh -c test:///default` printed for the same data.

    #[test]
    fn net_list_matches_virsh() {
        assert_eq!(
            net_list(&[network("n2", false, false), network("default", true, false)]),
            " Name      State      Autostart   Persistent\n\
             ----------------------------------------------\n \
             default   active     no          yes\n \
             n2        inactive   no          yes\n"
        );
        assert_eq!(
            net_list(&[]),
            " Name   State   Autostart   Persistent\n\
             ----------------------------------------\n"
        );
    }

    #[test]
    fn net_info_matches_virsh() {
        assert_eq!(
            net_info(&network("default", true, false)),
            "Name:           default\n\
             UUID:           dd8fe884-6c02-601e-7551-cca97df1c5df\n\
             Active:         yes\n\
             Persistent:     yes\n\
             Autostart:      no\n\
             Bridge:         virbr0\n"
        );
    }

    #[test]
    fn domiflist_matches_virsh() {
        let interfaces = [DomainInterface {
            target: Some("testnet0".to_string()),
            interface_type: "network".to_string(),
            source: Some("default".to_string()),
            model: None,
            mac: "aa:bb:cc:dd:ee:ff".to_string(),
        }];
        assert_eq!(
            domiflist(&interfaces),
            " Interface   Type      Source    Model   MAC\n\
             ------------------------------------------------------------\n \
             testnet0    network   default   -       aa:bb:cc:dd:ee:ff\n"
        );
    }

    #[test]
    fn domifaddr_matches_virsh() {
        let address = |ip: &str| InterfaceAddress {
            name: "testnet0".to_string(),
            mac: "aa:bb:cc:dd:ee:ff".to_string(),
            protocol: "ipv4".to_string(),
            address: ip.to_string(),
        };
        let expected_head = " Name       MAC address          Protocol     Address\n\
            -------------------------------------------------------------------------------\n";
        assert_eq!(
            domifaddr(&[address("192.168.122.3/24")]),
            format!(
                "{expected_head} testnet0   aa:bb:cc:dd:ee:ff    ipv4         192.168.122.3/24\n"
            )
        );
        assert_eq!(
            domifaddr(&[address("192.168.122.3/24"), address("192.168.122.4/24")]),
            format!(
                "{expected_head} testnet0   aa:bb:cc:dd:ee:ff    ipv4         192.168.122.3/24\n \
                 -          -                    ipv4         192.168.122.4/24\n"
            )
        );
    }

    #[test]
    fn domifstat_matches_virsh() {
        let stats = InterfaceStats {
            rx_bytes: 1,
            rx_packets: 2,
            rx_errs: 3,
            rx_drop: 4,
            tx_bytes: 5,
            tx_packets: 6,
            tx_errs: 7,
            tx_drop: 8,
        };
        assert_eq!(
            domifstat("vnet0", &stats),
            "vnet0 rx_bytes 1\nvnet0 rx_packets 2\nvnet0 rx_errs 3\nvnet0 rx_drop 4\n\
             vnet0 tx_bytes 5\nvnet0 tx_packets 6\nvnet0 tx_errs 7\nvnet0 tx_drop 8\n"
        );
    }

    #[test]
    fn leases_table_has_virsh_columns() {
        let text = dhcp_leases(&[NetworkLease {
            expiry_unix: None,
            mac: "52:54:00:00:00:01".to_string(),
            protocol: "ipv4".to_string(),
            address: "192.168.122.10/24".to_string(),
            hostname: None,
            client_id: Some("01:52:54:00:00:00:01".to_string()),
        }]);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                " Expiry Time   MAC address         Protocol   IP address          Hostname   Client ID or DUID"
            )
        );
        lines.next();
        assert_eq!(
            lines.next(),
            Some(
                " never         52:54:00:00:00:01   ipv4       192.168.122.10/24   -          01:52:54:00:00:00:01"
            )
        );
    }
}
