use std::process::ExitCode;

use clap::Parser;
use oxvirt_vmm::api::ApiServer;
use oxvirt_vmm::cli::Cli;
use oxvirt_vmm::jail::{self, Limits};
use oxvirt_vmm::protocol::{ExitReason, ExitRecordWriter, VmConfig};
use oxvirt_vmm::resources::HostResources;
use oxvirt_vmm::vm::{self, Vm};

/// The config, validated; a problem names the config file when there is one.
fn validated(cli: &Cli, config: &VmConfig) -> anyhow::Result<()> {
    config.validate().map_err(|err| match cli.config_file() {
        Some(path) => err.in_file(path).into(),
        None => err.into(),
    })
}

/// Runs the VM until it ends: everything of the host it uses opened, the jail entered (if
/// configured), then the VM built and run. One order with or without a jail.
fn run(cli: &Cli, config: &VmConfig) -> anyhow::Result<ExitReason> {
    validated(cli, config)?;
    let mut host = HostResources::open(config)?;
    if let Some(jail) = &config.jail {
        jail::enter(jail, Limits::of(config, &host))?;
    }
    let api = host.api.take();
    let vm = Vm::build(config, host)?;
    let handle = vm.handle();
    // The API answers once every vCPU thread exists (a launcher finds them then).
    vm.run(move || match (api, &config.api_socket) {
        (Some(socket), Some(path)) => socket
            .listen()
            .and_then(|listener| ApiServer::start(listener, path, handle))
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot serve the API socket: {e}")),
        _ => Ok(None),
    })
}

fn print_cpu_flags(cli: &Cli, config: &VmConfig) -> anyhow::Result<()> {
    validated(cli, config)?;
    println!("{}", vm::cpu_flags(config)?.join(" "));
    Ok(())
}

/// One line: the error and its causes (a cause already quoted by its parent is not repeated).
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if !msg.ends_with(&cause) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&cause);
        }
    }
    msg.replace('\n', " ")
}

fn fail(err: anyhow::Error) -> ExitCode {
    eprintln!("oxvirt-vmm: error: {}", one_line(&err));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.vm_config() {
        Ok(config) => config,
        Err(err) => return fail(err.into()),
    };
    if cli.print_cpu_flags {
        return match print_cpu_flags(&cli, &config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(err),
        };
    }
    // Prepared before anything else: whatever happens from here on, the record says so.
    // A jailed VMM cannot rename in the record's directory: it writes the record in place.
    let prepare = match config.jail {
        Some(_) => ExitRecordWriter::prepare_in_place,
        None => ExitRecordWriter::prepare,
    };
    let record = match config.exit_record.as_deref().map(prepare) {
        Some(Ok(writer)) => Some(writer),
        Some(Err(err)) => return fail(err.into()),
        None => None,
    };
    let reason = run(&cli, &config).unwrap_or_else(|err| ExitReason::Error {
        message: one_line(&err),
    });
    // The log is for people; the exit record and the exit status are for programs.
    match &reason {
        ExitReason::Error { message } => eprintln!("oxvirt-vmm: error: {message}"),
        ExitReason::GuestReset => eprintln!(
            "oxvirt-vmm: the guest requested a reset; exiting with status {}",
            reason.exit_status()
        ),
        ExitReason::GuestPoweroff | ExitReason::HostStop => {}
    }
    if let Some(record) = record {
        if let Err(err) = record.write(&reason) {
            eprintln!("oxvirt-vmm: error: {err}");
        }
    }
    ExitCode::from(reason.exit_status())
}
