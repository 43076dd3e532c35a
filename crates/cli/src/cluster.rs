//! The cluster's verbs (oxvirtd --cluster, docs/cluster.md): `host-list`, asked of any member,
//! on its socket or with `--connect`; `host-evacuate HOST`, asked of HOST itself.

use anyhow::{bail, Context};
use clap::Subcommand;
use oxvirt_api::remote::Endpoint;
use oxvirt_api::{Client, CopyStorage, DomainState, HostState, MigrateRequest};

use crate::migrate::DestArgs;

use crate::commands::block_on;
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the cluster's hosts: state (up, or lease expired), CPU model, free memory, guests.
    HostList,
    /// Live-migrate every running guest of HOST (the member this command talks to: its socket,
    /// or --connect to it) to the other live members, over their TLS APIs (their api_address)
    /// with --dest-token or --dest-user (an admin on each) and --dest-ca: each to the member the
    /// cluster's placement ranks best (engine, free memory, CPU group, spread groups, counting
    /// the guests moved before); its disks copied unless all are in a shared pool. A guest that
    /// cannot move stays and is named (exit 1).
    HostEvacuate {
        /// The member to empty (its --host-name).
        host: String,
        #[command(flatten)]
        dest: DestArgs,
    },
}

pub fn run(client: &Client, command: ClusterCommand) -> anyhow::Result<String> {
    match command {
        ClusterCommand::HostEvacuate { host, dest } => evacuate(client, &host, &dest),
        ClusterCommand::HostList => {
            let hosts = block_on(client.cluster_hosts())??;
            let rows: Vec<Vec<String>> = hosts
                .hosts
                .iter()
                .map(|member| {
                    let host = &member.host;
                    vec![
                        host.name.clone(),
                        member.state.as_str().to_string(),
                        host.cpu_model.clone(),
                        format!("{} MiB", host.free_memory_kib / 1024),
                        host.guests.to_string(),
                    ]
                })
                .collect();
            Ok(table(
                &["Name", "State", "CPU model", "Free memory", "Guests"],
                &rows,
            ))
        }
    }
}

/// `host-evacuate`: moves HOST's running guests to the other live members, one after the other;
/// a per-guest summary, exit 1 naming those that stay.
fn evacuate(client: &Client, host: &str, dest: &DestArgs) -> anyhow::Result<String> {
    let hosts = block_on(client.cluster_hosts())??;
    if hosts.this_host != host {
        bail!(
            "this is host '{}': run host-evacuate {host} on {host} itself (its socket, or --connect to its API)",
            hosts.this_host
        );
    }
    let source = hosts
        .hosts
        .iter()
        .find(|member| member.host.name == host)
        .context("this host is not registered in the cluster yet")?;
    let shared: Vec<String> = source
        .host
        .pools
        .iter()
        .filter(|pool| pool.shared)
        .map(|pool| format!("{}/", pool.target.trim_end_matches('/')))
        .collect();
    if !hosts
        .hosts
        .iter()
        .any(|member| member.host.name != host && member.state == HostState::Up)
    {
        bail!("no other live member to move the guests of {host} to");
    }
    let credentials = crate::migrate::credentials(dest, "the other members", "host-evacuate")?;
    let guests: Vec<_> = block_on(client.list_domains())??
        .into_iter()
        .filter(|guest| matches!(guest.state, DomainState::Running | DomainState::Paused))
        // A member lists the cluster's guests running elsewhere too.
        .filter(|guest| guest.host.as_deref().is_none_or(|on| on == host))
        .collect();
    let mut lines = Vec::new();
    let mut stayed = Vec::new();
    for guest in &guests {
        // Asked again for each guest: those moved before count (placement's spread rule).
        let target = match block_on(client.migration_targets(&guest.name))? {
            Ok(found) => found.targets.into_iter().next(),
            Err(err) => {
                lines.push(format!("{}: stays on {host}: {err}", guest.name));
                stayed.push(guest.name.clone());
                continue;
            }
        };
        let Some(target) = target else {
            lines.push(format!(
                "{}: stays on {host}: no member with an API address (--listen) can take it",
                guest.name
            ));
            stayed.push(guest.name.clone());
            continue;
        };
        let address = &target.api_address;
        let endpoint = Endpoint::parse(&format!("https://{address}"))
            .with_context(|| format!("member {}'s API address {address}", target.name))?;
        let remote = crate::migrate::with_trust(credentials.clone(), &endpoint, dest)?;
        let (name, url) = (&target.name, endpoint.url());
        let disks = block_on(client.domain_disks(&guest.name))??;
        let on_shared = disks
            .iter()
            .filter_map(|disk| disk.source.as_deref())
            .all(|source| shared.iter().any(|dir| source.starts_with(dir.as_str())));
        let request = MigrateRequest {
            destination: url,
            remote: Some(remote),
            live: true,
            undefine_source: true,
            copy_storage: (!on_shared).then_some(CopyStorage::All),
            ..MigrateRequest::default()
        };
        match block_on(client.migrate(&guest.name, &request))? {
            Ok(_) => lines.push(format!("{}: moved to {name}", guest.name)),
            Err(err) => {
                lines.push(format!("{}: stays on {host}: {err}", guest.name));
                stayed.push(guest.name.clone());
            }
        }
    }
    if guests.is_empty() {
        lines.push(format!("{host} runs no guest"));
    }
    let summary = lines.join("\n") + "\n";
    if !stayed.is_empty() {
        eprint!("{summary}");
        bail!(
            "{} of {} guests could not leave {host}: {}",
            stayed.len(),
            guests.len(),
            stayed.join(", ")
        );
    }
    Ok(summary)
}
