//! The cluster's verbs (oxvirtd --cluster, docs/cluster.md): `host-list`, asked of any member,
//! on its socket or with `--connect`.

use clap::Subcommand;
use oxvirt_api::Client;

use crate::commands::block_on;
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// List the cluster's hosts: state (up, or lease expired), CPU model, free memory, guests.
    HostList,
}

pub fn run(client: &Client, command: ClusterCommand) -> anyhow::Result<String> {
    match command {
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
