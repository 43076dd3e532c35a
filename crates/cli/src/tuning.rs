//! vCPUs: where they run (`vcpuinfo`, `vcpupin`, `emulatorpin`) and how many there are
//! (`vcpucount`, `setvcpus`), with virsh's arguments and output.

use clap::Subcommand;
use oxvirt_api::{Client, PinRequest, SetVcpus, VcpuCounts, VcpuInfo};

use crate::commands::{block_on, Scope};
use crate::format::table;

#[derive(Subcommand, Debug)]
pub enum TuningCommand {
    /// Show each vCPU of a running domain: the host CPU it ran on last, its CPU time and the
    /// host CPUs it may run on.
    Vcpuinfo {
        /// Domain name or UUID.
        domain: String,
    },
    /// Show or set which host CPUs a domain's vCPUs run on.
    Vcpupin {
        /// Domain name or UUID.
        domain: String,
        /// The vCPU (all of them, when showing, without it).
        vcpu: Option<u32>,
        /// Host CPUs, as libvirt writes them (0-2,^1); without it, show.
        cpulist: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show or set which host CPUs a domain's emulator threads (all but its vCPUs) run on.
    Emulatorpin {
        /// Domain name or UUID.
        domain: String,
        /// Host CPUs, as libvirt writes them (0-2,^1); without it, show.
        cpulist: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Change the number of vCPUs: hot-plug or unplug them in the running guest (--live) or
    /// set the count, or with --maximum the maximum, the domain starts with (--config).
    Setvcpus {
        /// Domain name or UUID.
        domain: String,
        /// The number of vCPUs.
        count: u32,
        /// Set the maximum the domain starts with next (only with --config).
        #[arg(long)]
        maximum: bool,
        #[command(flatten)]
        scope: Scope,
        /// Through a guest agent (oxvirt has none: refused).
        #[arg(long)]
        guest: bool,
    },
    /// Show a domain's vCPU counts: all of them as a table, or the one the options pick.
    Vcpucount {
        /// Domain name or UUID.
        domain: String,
        /// The maximum.
        #[arg(long, conflicts_with = "active")]
        maximum: bool,
        /// The vCPUs online.
        #[arg(long)]
        active: bool,
        /// The running guest.
        #[arg(long, conflicts_with = "config")]
        live: bool,
        /// The definition (the domain's next start).
        #[arg(long)]
        config: bool,
        /// The running guest if it runs, else the definition.
        #[arg(long, conflicts_with_all = ["live", "config"])]
        current: bool,
        /// As the guest counts them (needs a guest agent, which oxvirt does not have).
        #[arg(long)]
        guest: bool,
    },
}

pub fn run(client: &Client, command: TuningCommand) -> anyhow::Result<String> {
    match command {
        TuningCommand::Vcpuinfo { domain } => {
            Ok(vcpu_info_text(&block_on(client.vcpu_info(&domain))??))
        }
        TuningCommand::Vcpupin {
            domain,
            vcpu,
            cpulist,
            scope,
        } => {
            let asking = cpulist.is_none();
            let request = PinRequest {
                vcpu,
                cpulist,
                live: scope.live,
                config: scope.config,
            };
            let pins = block_on(client.vcpu_pin(&domain, &request))??;
            if !asking {
                return Ok(String::new());
            }
            let rows: Vec<Vec<String>> = pins
                .pins
                .into_iter()
                .map(|pin| vec![pin.vcpu.unwrap_or(0).to_string(), pin.cpulist])
                .collect();
            Ok(table(&["VCPU", "CPU Affinity"], &rows))
        }
        TuningCommand::Emulatorpin {
            domain,
            cpulist,
            scope,
        } => {
            let asking = cpulist.is_none();
            let request = PinRequest {
                vcpu: None,
                cpulist,
                live: scope.live,
                config: scope.config,
            };
            let pins = block_on(client.emulator_pin(&domain, &request))??;
            if !asking {
                return Ok(String::new());
            }
            let cpus = pins
                .pins
                .into_iter()
                .next()
                .map(|p| p.cpulist)
                .unwrap_or_default();
            Ok(format!(
                "emulator: CPU Affinity\n----------------------------------\n       *: {cpus}\n"
            ))
        }
        TuningCommand::Setvcpus {
            domain,
            count,
            maximum,
            scope,
            guest,
        } => {
            let request = SetVcpus {
                count,
                live: scope.live,
                config: scope.config,
                maximum,
                guest,
            };
            block_on(client.set_vcpus(&domain, &request))??;
            Ok(String::new())
        }
        TuningCommand::Vcpucount {
            domain,
            maximum,
            active,
            live,
            config,
            current,
            guest,
        } => {
            if guest {
                anyhow::bail!(
                    "--guest counts the vCPUs through a guest agent, which oxvirt does not have"
                );
            }
            let all = !(maximum || active || live || config || current);
            let counts = block_on(client.vcpu_count(&domain))??;
            vcpu_count_text(&counts, &domain, maximum, live, config, all)
        }
    }
}

/// virsh's `vcpucount`: the table of every count known (the live ones while the domain
/// runs), or the one count asked for.
fn vcpu_count_text(
    counts: &VcpuCounts,
    domain: &str,
    maximum: bool,
    live: bool,
    config: bool,
    all: bool,
) -> anyhow::Result<String> {
    if all {
        let rows = [
            ("maximum", "config", Some(counts.config_maximum)),
            ("maximum", "live", counts.live_maximum),
            ("current", "config", Some(counts.config_current)),
            ("current", "live", counts.live_current),
        ];
        return Ok(rows
            .iter()
            .filter_map(|(which, state, count)| {
                count.map(|count| format!("{which:<12} {state:<12} {count:>3}\n"))
            })
            .collect());
    }
    let running = counts.live_maximum.is_some();
    let from_live = live || (!config && running);
    let count = if from_live {
        let (Some(max), Some(current)) = (counts.live_maximum, counts.live_current) else {
            anyhow::bail!("domain '{domain}' is not running (--live is the running guest)");
        };
        if maximum {
            max
        } else {
            current
        }
    } else if maximum {
        counts.config_maximum
    } else {
        counts.config_current
    };
    Ok(format!("{count}\n"))
}

/// virsh's blocks, one a vCPU; "CPU time" only when the kernel counted some, as virsh prints it.
fn vcpu_info_text(info: &VcpuInfo) -> String {
    let blocks: Vec<String> = info
        .vcpus
        .iter()
        .map(|vcpu| {
            let mut block = format!(
                "{:<15} {}\n{:<15} {}\n{:<15} {}\n",
                "VCPU:", vcpu.vcpu, "CPU:", vcpu.cpu, "State:", "running"
            );
            if vcpu.cpu_time_ns != 0 {
                block.push_str(&format!(
                    "{:<15} {:.1}s\n",
                    "CPU time:",
                    vcpu.cpu_time_ns as f64 / 1e9
                ));
            }
            let map: String = (0..info.host_cpus)
                .map(|cpu| {
                    if vcpu.affinity.contains(&cpu) {
                        'y'
                    } else {
                        '-'
                    }
                })
                .collect();
            block.push_str(&format!("{:<15} {map}\n", "CPU Affinity:"));
            block
        })
        .collect();
    blocks.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::VcpuState;

    #[test]
    fn vcpuinfo_prints_as_virsh() {
        let info = VcpuInfo {
            host_cpus: 2,
            vcpus: vec![
                VcpuState {
                    vcpu: 0,
                    cpu: 1,
                    cpu_time_ns: 40_000_000,
                    affinity: vec![1],
                },
                VcpuState {
                    vcpu: 1,
                    cpu: 0,
                    cpu_time_ns: 0,
                    affinity: vec![0, 1],
                },
            ],
        };
        assert_eq!(
            vcpu_info_text(&info),
            "VCPU:           0\nCPU:            1\nState:          running\nCPU time:       0.0s\nCPU Affinity:   -y\n\
             \nVCPU:           1\nCPU:            0\nState:          running\nCPU Affinity:   yy\n"
        );
    }

    #[test]
    fn vcpucount_prints_as_virsh() {
        let stopped = VcpuCounts {
            config_maximum: 4,
            config_current: 1,
            live_maximum: None,
            live_current: None,
        };
        assert_eq!(
            vcpu_count_text(&stopped, "d", false, false, false, true).unwrap(),
            "maximum      config         4\ncurrent      config         1\n"
        );
        assert_eq!(
            vcpu_count_text(&stopped, "d", true, false, false, false).unwrap(),
            "4\n"
        );
        let err = vcpu_count_text(&stopped, "d", false, true, false, false).unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
        let running = VcpuCounts {
            live_maximum: Some(4),
            live_current: Some(3),
            ..stopped
        };
        assert_eq!(
            vcpu_count_text(&running, "d", false, false, false, false).unwrap(),
            "3\n"
        );
        assert_eq!(
            vcpu_count_text(&running, "d", false, false, true, false).unwrap(),
            "1\n"
        );
    }
}
