//! `oxvirt host`: what this machine can do for guests (no daemon needed). `validate` is
//! virt-host-validate's report, with the checks it lacks (see `oxvirt_host::validate`).

use clap::{Args, Subcommand, ValueEnum};
use oxvirt_host::kvm_probe;
use oxvirt_host::validate::{self, HostView};

#[derive(Args, Debug)]
pub struct HostArgs {
    #[command(subcommand)]
    command: HostCommand,
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Check that this host can run guests, and how well (virt-host-validate's checks, a test
    /// of /dev/kvm, nested virtualization, huge pages, KSM, aio limits). Exit status 1 when a
    /// check fails.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ValidateOutput::Text)]
        output: ValidateOutput,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ValidateOutput {
    Text,
    Json,
}

/// Runs the command; exits the process with status 1 when a check failed (as
/// virt-host-validate), after the whole report is printed.
pub fn run(args: HostArgs) -> anyhow::Result<()> {
    let HostCommand::Validate { output } = args.command;
    let host = HostView::this_host();
    let probe = kvm_probe::probe(&host.cpu_flags());
    let checks = validate::validate(&host, &probe);
    match output {
        ValidateOutput::Text => {
            for check in &checks {
                println!("{}", check.line());
            }
        }
        ValidateOutput::Json => {
            let rows: Vec<serde_json::Value> = checks
                .iter()
                .map(|check| {
                    serde_json::json!({
                        "section": check.section,
                        "check": check.what,
                        "verdict": check.verdict.word(),
                        "advice": check.verdict.advice(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    if !validate::all_passed(&checks) {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(1);
    }
    Ok(())
}
