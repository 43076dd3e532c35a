//! The one-shot domain commands: one or two API calls, then virsh's message.

use std::future::Future;

use anyhow::Context;
use oxvirt_api::{Client, NvramOnUndefine, UndefineOptions};

use crate::{format, OneShotCommand as Command};

/// Runs `future` to completion on a small runtime of its own (each command makes a few calls).
/// What a change or a question is about (virsh's `--live`, `--config`, `--current`): the
/// running guest, the definition it starts with next, or (neither: `--current`) the running
/// guest if it runs, else the definition.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Scope {
    /// The running guest.
    #[arg(long)]
    pub live: bool,
    /// The definition (the domain's next start).
    #[arg(long)]
    pub config: bool,
    /// The running guest if it runs, else the definition (the default).
    #[arg(long, conflicts_with_all = ["live", "config"])]
    pub current: bool,
}

pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Runs a one-shot command and returns what it prints on success.
pub fn run(client: &Client, command: Command) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

async fn run_async(client: &Client, command: Command) -> anyhow::Result<String> {
    let output = match command {
        Command::Define { file, cluster } => {
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let defined = if cluster {
                client.define_cluster_domain(&xml).await
            } else {
                client.define_domain(&xml).await
            };
            let domain = defined
                .with_context(|| format!("failed to define domain from {}", file.display()))?;
            format!("Domain '{}' defined from {}\n", domain.name, file.display())
        }
        Command::Undefine {
            domain,
            nvram,
            keep_nvram,
            snapshots_metadata,
            managed_save,
        } => {
            let choice = match (nvram, keep_nvram) {
                (true, _) => Some(NvramOnUndefine::Remove),
                (_, true) => Some(NvramOnUndefine::Keep),
                _ => None,
            };
            let options = UndefineOptions {
                nvram: choice,
                snapshots_metadata,
                managed_save,
            };
            let domain = client
                .undefine_domain_with(&domain.domain, &options)
                .await?;
            format!("Domain '{}' has been undefined\n", domain.name)
        }
        Command::Shutdown { domain, timeout } => {
            // With a timeout the daemon waits for the power-off and answers `timeout` if it
            // does not happen in time.
            let domain = client.shutdown(&domain.domain, timeout).await?;
            let mut out = format!("Domain '{}' is being shutdown\n", domain.name);
            if timeout.is_some() {
                out.push_str(&format!("Domain '{}' is {}\n", domain.name, domain.state));
            }
            out
        }
        Command::Destroy(arg) => {
            let domain = client.destroy(&arg.domain).await?;
            format!("Domain '{}' destroyed\n", domain.name)
        }
        Command::Reboot(arg) => {
            let domain = client.reboot(&arg.domain).await?;
            format!("Domain '{}' is being rebooted\n", domain.name)
        }
        Command::Reset(arg) => {
            let domain = client.reset(&arg.domain).await?;
            format!("Domain '{}' was reset\n", domain.name)
        }
        Command::Suspend(arg) => {
            let domain = client.suspend(&arg.domain).await?;
            format!("Domain '{}' suspended\n", domain.name)
        }
        Command::Resume(arg) => {
            let domain = client.resume(&arg.domain).await?;
            format!("Domain '{}' resumed\n", domain.name)
        }
        Command::List(args) => {
            let domains = client.list_domains().await?;
            format::list(&format::select_domains(domains, args), args)
        }
        Command::Dominfo(arg) => format::dominfo(&client.domain_info(&arg.domain).await?),
        Command::Domstate { domain, reason } => {
            format::domstate(&client.domain_info(&domain.domain).await?, reason)
        }
        Command::Dumpxml { domain, inactive } => {
            if inactive {
                client.domain_inactive_xml(&domain.domain).await?
            } else {
                client.domain_xml(&domain.domain).await?
            }
        }
        Command::Domuuid(arg) => format!("{}\n", client.domain_info(&arg.domain).await?.uuid),
        Command::Domid(arg) => match client.domain_info(&arg.domain).await?.id {
            Some(id) => format!("{id}\n"),
            None => "-\n".to_string(),
        },
        Command::Domname(arg) => format!("{}\n", client.domain_info(&arg.domain).await?.name),
        Command::Autostart { domain, disable } => {
            let domain = client.set_autostart(&domain.domain, !disable).await?;
            if disable {
                format!("Domain '{}' unmarked as autostarted\n", domain.name)
            } else {
                format!("Domain '{}' marked as autostarted\n", domain.name)
            }
        }
        Command::Version => format::version(env!("CARGO_PKG_VERSION"), &client.version().await?),
    };
    Ok(output)
}
