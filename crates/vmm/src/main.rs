use std::process::ExitCode;

use clap::Parser;
use oxvirt_vmm::api::ApiServer;
use oxvirt_vmm::config::Cli;
use oxvirt_vmm::control::ExitReason;
use oxvirt_vmm::vm::{self, Vm};

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.print_cpu_flags {
        println!("{}", vm::cpu_flags(&cli)?.join(" "));
        return Ok(ExitCode::SUCCESS);
    }
    let vm = Vm::build(&cli)?;
    let _api =
        match &cli.api_socket {
            Some(path) => Some(ApiServer::start(path, vm.handle()).map_err(|e| {
                anyhow::anyhow!("cannot listen on API socket {}: {e}", path.display())
            })?),
            None => None,
        };
    match vm.run()? {
        ExitReason::Poweroff => Ok(ExitCode::SUCCESS),
        ExitReason::Reset => {
            eprintln!(
                "oxvirt-vmm: the guest requested a reset; exiting with status {}",
                oxvirt_vmm::EXIT_STATUS_RESET
            );
            Ok(ExitCode::from(oxvirt_vmm::EXIT_STATUS_RESET as u8))
        }
        ExitReason::Error(e) => Err(anyhow::anyhow!(e)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes (a cause already quoted by its parent is not repeated).
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.ends_with(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("oxvirt-vmm: error: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
