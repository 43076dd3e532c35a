//! vCPU placement: `vcpuinfo`, `vcpupin`, `emulatorpin`, with virsh's arguments and output.

use clap::Subcommand;
use oxvirt_api::{Client, PinRequest, VcpuInfo};

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
    }
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
}
