//! Saved machine states: `save`, `restore`, `save-image-dumpxml`, `managedsave`,
//! `managedsave-remove`, with virsh's arguments and messages. Files are paths on oxvirtd's host
//! (as libvirt's); a relative one is made absolute against the current directory first.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use oxvirt_api::{Client, ManagedSaveRequest, RestoreRequest, RunAfter, SaveRequest};

use crate::commands::block_on;

/// virsh's `--running` / `--paused`.
#[derive(Args, Debug, Clone, Copy, Default)]
#[command(group(ArgGroup::new("state").args(["running", "paused"])))]
pub struct RunAfterArgs {
    /// The guest runs after it is restored.
    #[arg(long)]
    running: bool,
    /// The guest stays paused after it is restored.
    #[arg(long)]
    paused: bool,
}

impl RunAfterArgs {
    fn after(self) -> Option<RunAfter> {
        match (self.running, self.paused) {
            (true, _) => Some(RunAfter::Running),
            (_, true) => Some(RunAfter::Paused),
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SaveCommand {
    /// Save a running or paused domain's state (memory, CPUs, devices) to a file; the domain
    /// is then shut off, and `restore` resumes it.
    Save {
        /// Domain name or UUID.
        domain: String,
        /// Where to write the state (a path on oxvirtd's host).
        file: PathBuf,
        #[command(flatten)]
        after: RunAfterArgs,
    },
    /// Start a domain from a file `save` wrote, where it left off.
    Restore {
        /// The saved state (a path on oxvirtd's host).
        file: PathBuf,
        #[command(flatten)]
        after: RunAfterArgs,
    },
    /// Print the domain XML inside a file `save` wrote.
    SaveImageDumpxml {
        /// The saved state (a path on oxvirtd's host).
        file: PathBuf,
    },
    /// Save a running or paused domain's state where oxvirtd keeps it; the domain is then shut
    /// off, and its next `start` resumes it.
    Managedsave {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        after: RunAfterArgs,
    },
    /// Discard a domain's managed save: its next start boots.
    #[command(name = "managedsave-remove")]
    ManagedsaveRemove {
        /// Domain name or UUID.
        domain: String,
    },
}

pub fn run(client: &Client, command: SaveCommand) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

/// `file` as the daemon needs it: absolute.
fn host_path(file: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(file)
        .with_context(|| format!("cannot make {} an absolute path", file.display()))?;
    absolute
        .to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", absolute.display()))
}

async fn run_async(client: &Client, command: SaveCommand) -> anyhow::Result<String> {
    Ok(match command {
        SaveCommand::Save {
            domain,
            file,
            after,
        } => {
            let request = SaveRequest {
                file: host_path(&file)?,
                after: after.after(),
            };
            let saved = client
                .save_domain(&domain, &request)
                .await
                .with_context(|| {
                    format!("Failed to save domain '{domain}' to {}", file.display())
                })?;
            format!("\nDomain '{}' saved to {}\n", saved.name, file.display())
        }
        SaveCommand::Restore { file, after } => {
            let request = RestoreRequest {
                file: host_path(&file)?,
                after: after.after(),
            };
            client
                .restore(&request)
                .await
                .with_context(|| format!("Failed to restore domain from {}", file.display()))?;
            format!("Domain restored from {}\n", file.display())
        }
        SaveCommand::SaveImageDumpxml { file } => client.save_image_xml(&host_path(&file)?).await?,
        SaveCommand::Managedsave { domain, after } => {
            let request = ManagedSaveRequest {
                after: after.after(),
            };
            let saved = client
                .managed_save(&domain, &request)
                .await
                .with_context(|| format!("Failed to save domain '{domain}' state"))?;
            format!("\nDomain '{}' state saved by libvirt\n", saved.name)
        }
        SaveCommand::ManagedsaveRemove { domain } => {
            let info = client.domain_info(&domain).await?;
            if info.managed_save {
                client.managed_save_remove(&info.uuid).await?;
                format!("Removed managedsave image for domain '{}'\n", info.name)
            } else {
                format!(
                    "Domain '{}' has no manage save image; removal skipped\n",
                    info.name
                )
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_and_paused_exclude_each_other() {
        assert_eq!(RunAfterArgs::default().after(), None);
        assert_eq!(
            RunAfterArgs {
                running: false,
                paused: true
            }
            .after(),
            Some(RunAfter::Paused)
        );
    }

    #[test]
    fn relative_files_become_absolute() {
        let path = host_path(Path::new("vm.save")).unwrap();
        assert!(Path::new(&path).is_absolute(), "{path}");
        assert!(path.ends_with("/vm.save"), "{path}");
    }
}
