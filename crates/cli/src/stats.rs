//! `domstats`: each domain's statistics as virsh prints them (`Domain: 'NAME'`, then
//! `  name=value` lines).

use clap::Args;
use oxvirt_api::{Client, StatsRequest};

use crate::commands::block_on;

/// Show statistics of domains (all of them without DOMAIN), by group (all groups without one).
#[derive(Args, Debug)]
pub struct DomstatsArgs {
    /// Domain names or UUIDs.
    domains: Vec<String>,
    /// state.state, state.reason.
    #[arg(long)]
    state: bool,
    /// cpu.time, cpu.user, cpu.system.
    #[arg(long)]
    cpu_total: bool,
    /// balloon.current, balloon.maximum, the guest's memory statistics, balloon.rss.
    #[arg(long)]
    balloon: bool,
    /// vcpu.current, vcpu.maximum, each vCPU's state, time, wait and delay.
    #[arg(long)]
    vcpu: bool,
    /// net.count, each NIC's name and counters.
    #[arg(long)]
    interface: bool,
    /// block.count, each disk's name, path, counters and sizes.
    #[arg(long)]
    block: bool,
    /// Only running and paused domains.
    #[arg(long)]
    list_active: bool,
    /// Only shut-off domains.
    #[arg(long)]
    list_inactive: bool,
    /// Only running domains.
    #[arg(long)]
    list_running: bool,
    /// Only paused domains.
    #[arg(long)]
    list_paused: bool,
    /// Only shut-off domains.
    #[arg(long)]
    list_shutoff: bool,
}

pub fn run(client: &Client, args: DomstatsArgs) -> anyhow::Result<String> {
    let groups = [
        ("state", args.state),
        ("cpu-total", args.cpu_total),
        ("balloon", args.balloon),
        ("vcpu", args.vcpu),
        ("interface", args.interface),
        ("block", args.block),
    ]
    .into_iter()
    .filter(|(_, wanted)| *wanted)
    .map(|(group, _)| group.to_string())
    .collect();
    let mut states = Vec::new();
    if args.list_active || args.list_running {
        states.push("running".to_string());
    }
    if args.list_active || args.list_paused {
        states.push("paused".to_string());
    }
    if args.list_inactive || args.list_shutoff {
        states.push("shutoff".to_string());
    }
    let request = StatsRequest {
        domains: args.domains,
        groups,
        states,
    };
    let stats = block_on(client.domain_stats(&request))??;
    let blocks: Vec<String> = stats
        .domains
        .iter()
        .map(|domain| {
            let mut text = format!("Domain: '{}'\n", domain.name);
            for field in &domain.fields {
                text.push_str(&format!("  {}={}\n", field.name, field.value));
            }
            text
        })
        .collect();
    Ok(blocks.join("\n"))
}
