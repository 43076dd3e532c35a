//! NAT and forwarding rules in nftables: one table, `ip oxvirt`, owned by oxvirt; per network two base chains
//! named after its bridge (`nat_BRIDGE`, `fwd_BRIDGE`). Every change is one `nft -f -` transaction, so a
//! network's rules appear, change or vanish atomically, and no other table is ever touched.

use std::fmt::Write as _;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::addr::Ipv4Subnet;
use crate::xml::ForwardMode;
use crate::NetError;

/// The nftables family and name of oxvirt's table.
pub const TABLE: &str = "ip oxvirt";

/// What the rules of one network depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    pub bridge: String,
    pub subnet: Ipv4Subnet,
    pub mode: ForwardMode,
    /// Uplink device: forwarding/NAT only towards it.
    pub uplink: Option<String>,
}

pub fn nat_chain(bridge: &str) -> String {
    format!("nat_{bridge}")
}

pub fn forward_chain(bridge: &str) -> String {
    format!("fwd_{bridge}")
}

/// The transaction that creates or replaces the network's chains (bridge and uplink names are validated
/// interface names, so they need no quoting beyond nft's string quotes).
pub fn apply_script(spec: &FirewallSpec) -> String {
    let FirewallSpec {
        bridge,
        subnet,
        mode,
        uplink,
    } = spec;
    let nat = nat_chain(bridge);
    let fwd = forward_chain(bridge);
    let out_to_uplink = uplink
        .as_ref()
        .map(|u| format!(" oifname \"{u}\""))
        .unwrap_or_default();
    let in_from_uplink = uplink
        .as_ref()
        .map(|u| format!(" iifname \"{u}\""))
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "add table {TABLE}");
    if *mode == ForwardMode::Nat {
        let _ = writeln!(s, "add chain {TABLE} {nat} {{ type nat hook postrouting priority srcnat; policy accept; }}");
        let _ = writeln!(s, "flush chain {TABLE} {nat}");
        // Multicast and limited broadcast stay local, as libvirt does.
        let _ = writeln!(
            s,
            "add rule {TABLE} {nat} ip saddr {subnet} ip daddr 224.0.0.0/24 return"
        );
        let _ = writeln!(
            s,
            "add rule {TABLE} {nat} ip saddr {subnet} ip daddr 255.255.255.255 return"
        );
        let _ = writeln!(s, "add rule {TABLE} {nat} ip saddr {subnet} ip daddr != {subnet}{out_to_uplink} masquerade");
    } else {
        // A chain of a mode the network no longer has must go: create-then-delete is nft's "delete if present".
        let _ = writeln!(s, "add chain {TABLE} {nat}\ndelete chain {TABLE} {nat}");
    }
    let _ = writeln!(
        s,
        "add chain {TABLE} {fwd} {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {TABLE} {fwd}");
    let _ = writeln!(
        s,
        "add rule {TABLE} {fwd} iifname \"{bridge}\" oifname \"{bridge}\" accept"
    );
    match mode {
        ForwardMode::Nat => {
            let _ = writeln!(s, "add rule {TABLE} {fwd} iifname \"{bridge}\" ip saddr {subnet}{out_to_uplink} accept");
            let _ = writeln!(
                s,
                "add rule {TABLE} {fwd} oifname \"{bridge}\"{in_from_uplink} ip daddr {subnet} ct state established,related accept"
            );
        }
        ForwardMode::Route => {
            let _ = writeln!(s, "add rule {TABLE} {fwd} iifname \"{bridge}\" ip saddr {subnet}{out_to_uplink} accept");
            let _ = writeln!(s, "add rule {TABLE} {fwd} oifname \"{bridge}\"{in_from_uplink} ip daddr {subnet} accept");
        }
        ForwardMode::Isolated | ForwardMode::Bridge => {}
    }
    let _ = writeln!(s, "add rule {TABLE} {fwd} iifname \"{bridge}\" reject");
    let _ = writeln!(s, "add rule {TABLE} {fwd} oifname \"{bridge}\" reject");
    s
}

/// The transaction that removes the network's chains, present or not.
pub fn remove_script(bridge: &str) -> String {
    let mut s = format!("add table {TABLE}\n");
    for chain in [nat_chain(bridge), forward_chain(bridge)] {
        let _ = writeln!(s, "add chain {TABLE} {chain}\ndelete chain {TABLE} {chain}");
    }
    s
}

/// Runs `nft -f -` with `script` as one transaction.
pub async fn run_script(script: &str) -> Result<(), NetError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NetError::Tool {
            tool: "nft",
            message: format!("cannot run nft: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| NetError::Tool {
                tool: "nft",
                message: format!("cannot write the ruleset to nft: {e}"),
            })?;
    }
    let output = child.wait_with_output().await.map_err(|e| NetError::Tool {
        tool: "nft",
        message: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(NetError::Tool {
            tool: "nft",
            message: format!(
                "{} for ruleset:\n{script}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Lists oxvirt's table (`None` if it does not exist).
pub async fn list_table() -> Result<Option<String>, NetError> {
    let output = tokio::process::Command::new("nft")
        .args(["list", "table", "ip", "oxvirt"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| NetError::Tool {
            tool: "nft",
            message: format!("cannot run nft: {e}"),
        })?;
    if output.status.success() {
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Ok(None)
    }
}

/// Removes oxvirt's table once no network has chains in it (so a host without oxvirt networks has no trace).
pub async fn remove_table_if_empty() -> Result<(), NetError> {
    if let Some(listing) = list_table().await? {
        if !listing.contains("chain ") {
            run_script(&format!("delete table {TABLE}\n")).await?;
        }
    }
    Ok(())
}

/// Bridges that have chains in oxvirt's table (from a listing of it).
pub fn bridges_with_chains(listing: &str) -> Vec<String> {
    let mut bridges: Vec<String> = listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("chain "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|chain| {
            chain
                .strip_prefix("nat_")
                .or_else(|| chain.strip_prefix("fwd_"))
        })
        .map(str::to_string)
        .collect();
    bridges.sort();
    bridges.dedup();
    bridges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn nat_rules_masquerade_the_subnet_to_elsewhere() {
        let spec = FirewallSpec {
            bridge: "oxbr0".into(),
            subnet: Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 122, 1), 24).unwrap(),
            mode: ForwardMode::Nat,
            uplink: None,
        };
        let script = apply_script(&spec);
        assert!(script.contains(
            "add rule ip oxvirt nat_oxbr0 ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 masquerade\n"
        ));
        assert!(script.contains(
            "oifname \"oxbr0\" ip daddr 192.168.122.0/24 ct state established,related accept"
        ));
        // Only oxvirt's table is named anywhere.
        for line in script.lines() {
            assert!(line.contains(" ip oxvirt"), "{line}");
        }
    }

    #[test]
    fn isolated_network_rejects_forwarding_and_has_no_nat() {
        let spec = FirewallSpec {
            bridge: "iso0".into(),
            subnet: Ipv4Subnet::containing(Ipv4Addr::new(10, 0, 0, 1), 24).unwrap(),
            mode: ForwardMode::Isolated,
            uplink: None,
        };
        let script = apply_script(&spec);
        assert!(!script.contains("masquerade"));
        assert!(!script.contains("nat_iso0 {"));
        assert!(script.ends_with("add rule ip oxvirt fwd_iso0 oifname \"iso0\" reject\n"));
    }

    #[test]
    fn listing_names_the_bridges() {
        let listing = "table ip oxvirt {\n\tchain nat_oxbr0 {\n\t}\n\tchain fwd_oxbr0 {\n\t}\n\tchain fwd_lab.1 {\n\t}\n}\n";
        assert_eq!(bridges_with_chains(listing), ["lab.1", "oxbr0"]);
    }
}
