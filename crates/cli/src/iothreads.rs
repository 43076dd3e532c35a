//! IOThreads (`iothreadinfo`, `iothreadpin`, `iothreadadd`, `iothreaddel`), with virsh's
//! arguments and output.

use clap::Subcommand;
use oxvirt_api::{Client, IoThreadInfo, IoThreadPinRequest, IoThreadRequest, IoThreadScope};

use crate::commands::{block_on, Scope};
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum IoThreadCommand {
    /// Show a domain's IOThreads and the host CPUs each may run on.
    Iothreadinfo {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Set which host CPUs one of a domain's IOThreads runs on.
    Iothreadpin {
        /// Domain name or UUID.
        domain: String,
        /// The IOThread's id.
        iothread: u32,
        /// Host CPUs, as libvirt writes them (0-2,^1).
        cpulist: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Add an IOThread to a domain.
    Iothreadadd {
        /// Domain name or UUID.
        domain: String,
        /// The new IOThread's id (above 0, not in use).
        id: u32,
        #[command(flatten)]
        scope: Scope,
    },
    /// Remove an IOThread no disk uses from a domain.
    Iothreaddel {
        /// Domain name or UUID.
        domain: String,
        /// The IOThread's id.
        id: u32,
        #[command(flatten)]
        scope: Scope,
    },
}

pub fn run(client: &Client, command: IoThreadCommand) -> anyhow::Result<String> {
    match command {
        IoThreadCommand::Iothreadinfo { domain, scope } => {
            let scope = IoThreadScope {
                live: scope.live,
                config: scope.config,
            };
            Ok(info_text(&block_on(
                client.iothread_info(&domain, &scope),
            )??))
        }
        IoThreadCommand::Iothreadpin {
            domain,
            iothread,
            cpulist,
            scope,
        } => {
            let request = IoThreadPinRequest {
                iothread,
                cpulist,
                live: scope.live,
                config: scope.config,
            };
            block_on(client.iothread_pin(&domain, &request))??;
            Ok(String::new())
        }
        IoThreadCommand::Iothreadadd { domain, id, scope } => {
            block_on(client.iothread_add(&domain, &request(id, &scope)))??;
            Ok(String::new())
        }
        IoThreadCommand::Iothreaddel { domain, id, scope } => {
            block_on(client.iothread_del(&domain, &request(id, &scope)))??;
            Ok(String::new())
        }
    }
}

fn request(iothread: u32, scope: &Scope) -> IoThreadRequest {
    IoThreadRequest {
        iothread,
        live: scope.live,
        config: scope.config,
    }
}

/// virsh's `iothreadinfo` table, or its words when there is none.
fn info_text(info: &IoThreadInfo) -> String {
    if info.iothreads.is_empty() {
        return "No IOThreads found for the domain\n".to_string();
    }
    let rows: Vec<Vec<String>> = info
        .iothreads
        .iter()
        .map(|t| vec![t.id.to_string(), t.cpulist.clone()])
        .collect();
    table(&["IOThread ID", "CPU Affinity"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::IoThreadAffinity;

    #[test]
    fn info_is_virshs_table() {
        let info = IoThreadInfo {
            iothreads: vec![
                IoThreadAffinity {
                    id: 2,
                    cpulist: "0-1".into(),
                },
                IoThreadAffinity {
                    id: 5,
                    cpulist: "0".into(),
                },
            ],
        };
        // What Debian's virsh 9.0 printed for the same IOThreads.
        assert_eq!(
            info_text(&info),
            " IOThread ID   CPU Affinity\n-----------------------------\n 2             0-1\n 5             0\n"
        );
    }
}
