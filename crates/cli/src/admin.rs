//! `oxvirt admin ...`: virt-admin's daemon commands, with its output.

use clap::Subcommand;
use oxvirt_api::Client;

use crate::commands::block_on;

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
    })
}
