//! `oxvirt admin ...`: virt-admin's daemon commands, with its output.

use clap::Subcommand;
use oxvirt_api::{Client, ClientLimits, ServerInfo, SetClientLimits};

use crate::commands::block_on;
use crate::format::table;

/// oxvirtd's one server, the default SERVER of the server-* commands (virt-admin's
/// `libvirtd`).
const SERVER: &str = "oxvirtd";

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Show oxvirtd's log filters, or replace them (e.g. "3:qemu 1:daemon.engine"; "" clears
    /// them) from the next line logged on, without a restart.
    DaemonLogFilters {
        /// The new filters (oxvirtd.conf's log_filters syntax).
        filters: Option<String>,
    },
    /// Show oxvirtd's log outputs, or replace them (e.g. "1:file:/var/log/oxvirt/oxvirtd.log").
    DaemonLogOutputs {
        /// The new outputs (oxvirtd.conf's log_outputs syntax).
        outputs: Option<String>,
    },
    /// List oxvirtd's servers (one: oxvirtd, which serves the API and its administration).
    #[command(alias = "srv-list")]
    ServerList,
    /// Show a server's client connections and their limit: nclients counts the API connections
    /// open now, this one included; max_clients caps them.
    #[command(alias = "srv-clients-info")]
    ServerClientsInfo {
        /// The server (oxvirtd's only one).
        #[arg(default_value = SERVER)]
        server: String,
    },
    /// Change a server's client limit at run time (until oxvirtd restarts): connections
    /// beyond it are refused; those open stay.
    #[command(alias = "srv-clients-set")]
    ServerClientsSet {
        /// The server (oxvirtd's only one).
        #[arg(default_value = SERVER)]
        server: String,
        /// The most API connections open at once (oxvirtd.conf's max_clients), at least 1.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_clients: u32,
    },
}

pub fn run(client: &Client, command: AdminCommand) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

async fn run_async(client: &Client, command: AdminCommand) -> anyhow::Result<String> {
    // As virt-admin: setting prints nothing, showing prints " Logging filters: ...".
    Ok(match command {
        AdminCommand::DaemonLogFilters { filters: Some(f) } => {
            client.set_log_filters(&f).await?;
            String::new()
        }
        AdminCommand::DaemonLogFilters { filters: None } => {
            let filters = client.log_filters().await?;
            format!(" Logging filters: {}\n", filters.filters)
        }
        AdminCommand::DaemonLogOutputs { outputs: Some(o) } => {
            client.set_log_outputs(&o).await?;
            String::new()
        }
        AdminCommand::DaemonLogOutputs { outputs: None } => {
            let outputs = client.log_outputs().await?;
            format!(" Logging outputs: {}\n", outputs.outputs)
        }
        AdminCommand::ServerList => server_list(&client.servers().await?),
        AdminCommand::ServerClientsInfo { server } => {
            clients_info(&client.client_limits(&server).await?)
        }
        // As virt-admin: setting prints nothing.
        AdminCommand::ServerClientsSet {
            server,
            max_clients,
        } => {
            let limits = SetClientLimits {
                nclients_max: Some(max_clients),
            };
            client.set_client_limits(&server, &limits).await?;
            String::new()
        }
    })
}

/// virt-admin's `server-list` table.
fn server_list(servers: &[ServerInfo]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| vec![s.id.to_string(), s.name.clone()])
        .collect();
    table(&["Id", "Name"], &rows)
}

/// virt-admin's `server-clients-info`: each typed parameter as `"%-20s: %u"`.
fn clients_info(limits: &ClientLimits) -> String {
    [
        ("nclients_max", limits.nclients_max),
        ("nclients", limits.nclients),
        ("nclients_unauth_max", limits.nclients_unauth_max),
        ("nclients_unauth", limits.nclients_unauth),
    ]
    .iter()
    .map(|(field, value)| format!("{field:<20}: {value}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_admin_formats() {
        let limits = ClientLimits {
            nclients_max: 5000,
            nclients: 2,
            nclients_unauth_max: 0,
            nclients_unauth: 0,
        };
        assert_eq!(
            clients_info(&limits),
            "nclients_max        : 5000\n\
             nclients            : 2\n\
             nclients_unauth_max : 0\n\
             nclients_unauth     : 0\n"
        );
        let servers = [ServerInfo {
            id: 0,
            name: "oxvirtd".to_string(),
        }];
        assert_eq!(
            server_list(&servers),
            " Id   Name\n---------------\n 0    oxvirtd\n"
        );
    }
}
