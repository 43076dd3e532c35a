//! `oxvirt`: the virsh-like command line of oxvirt.
//!
//! Every domain command talks to `oxvirtd` over its Unix socket (`--socket`, `OXVIRT_SOCKET`, or
//! [`oxvirt_api::DEFAULT_SOCKET`]), or to a remote one over TLS (`--connect`, src/remote.rs), and
//! prints what virsh prints for the same command, including the
//! blank line virsh adds after each command's output. `oxvirt img` works on image files directly and
//! needs no daemon.
//!
//! Exit status: 0 on success, 1 on any error, reported as one `error: <message>` line on stderr.
//!
//! With no command (or `oxvirt shell`) it is virsh's interactive shell (src/shell.rs); `oxvirt
//! completion` and the man pages (src/generate.rs) are generated from the same clap definition.

// Everything here is parsing, printing and talking to oxvirtd or image files through safe APIs.
#![forbid(unsafe_code)]

mod admin;
mod bench;
mod builder;
mod capabilities;
mod clone;
mod cluster;
mod commands;
mod complete;
mod console;
mod disks;
mod display;
mod edit;
mod events;
mod format;
mod generate;
mod host;
mod img;
mod install;
mod iothreads;
mod limits;
mod memory;
mod migrate;
mod monitor;
mod net;
mod node;
mod pool;
mod remote;
mod save;
mod secret;
mod shell;
mod snapshot;
mod stats;
mod tuning;
mod tunnel;
mod users;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "oxvirt",
    version,
    about = "Manage oxvirt virtual machines (virsh-like)",
    after_long_help = "With no command, oxvirt opens its interactive shell (see `oxvirt shell --help`)."
)]
pub(crate) struct Cli {
    /// oxvirtd's API socket.
    #[arg(long, global = true, env = "OXVIRT_SOCKET", default_value = oxvirt_api::DEFAULT_SOCKET)]
    socket: PathBuf,

    #[command(flatten)]
    connect: remote::ConnectArgs,

    /// None: the interactive shell, as virsh with no command.
    #[command(subcommand)]
    command: Option<Command>,
}

/// A domain, by name or UUID.
#[derive(Args, Debug)]
struct DomainArg {
    /// Domain name or UUID.
    domain: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    OneShot(OneShotCommand),
    #[command(flatten)]
    Net(net::NetCommand),
    #[command(flatten)]
    Pool(pool::PoolCommand),
    #[command(flatten)]
    Secret(secret::SecretCommand),
    #[command(flatten)]
    Display(display::DisplayCommand),
    #[command(flatten)]
    Snapshot(snapshot::SnapshotCommand),
    #[command(flatten)]
    Monitor(monitor::MonitorVerb),
    #[command(flatten)]
    Events(events::EventCommand),
    #[command(flatten)]
    Tuning(tuning::TuningCommand),
    #[command(flatten)]
    IoThreads(iothreads::IoThreadCommand),
    #[command(flatten)]
    Disk(disks::DiskCommand),
    #[command(flatten)]
    Node(node::NodeCommand),
    #[command(flatten)]
    Cluster(cluster::ClusterCommand),
    #[command(flatten)]
    Limits(limits::LimitsCommand),
    #[command(flatten)]
    Memory(memory::MemoryCommand),
    #[command(flatten)]
    Capabilities(capabilities::CapabilitiesCommand),
    #[command(flatten)]
    Save(save::SaveCommand),
    #[command(flatten)]
    Migrate(migrate::MigrateCommand),
    /// Start a defined, inactive domain.
    Start {
        #[command(flatten)]
        domain: DomainArg,
        /// Attach to the console right after starting, so no early output is missed.
        #[arg(long)]
        console: bool,
    },
    /// Edit a domain's XML definition with $EDITOR.
    Edit(DomainArg),
    Domstats(stats::DomstatsArgs),
    /// Connect to a domain's serial console (Ctrl-] detaches).
    Console(DomainArg),
    /// Create, inspect and convert disk images (no daemon needed).
    Img(img::ImgArgs),
    /// Build a bootable Debian disk image from Debian's packages (virt-builder's role; no daemon needed).
    Builder(builder::BuilderArgs),
    /// What this machine can do for guests: `host validate` (virt-host-validate's role; no daemon
    /// needed).
    Host(host::HostArgs),
    /// What virtualization costs: fio and sysbench on the host and in a guest, as tables, JSON and a chart.
    Bench(bench::BenchArgs),
    /// Interactive shell (also `oxvirt` with no command).
    #[command(long_about = shell::LONG_ABOUT)]
    Shell,
    /// Print a shell completion script (bash, zsh and fish complete domain, network, pool and volume names).
    #[command(
        after_long_help = "bash: source <(oxvirt completion bash), or install it as \
                           /usr/share/bash-completion/completions/oxvirt"
    )]
    Completion {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the names of one kind of object, one a line (for the completion scripts).
    #[command(name = "__complete-names", hide = true)]
    CompleteNames {
        /// What to name.
        #[arg(required_unless_present = "line")]
        kind: Option<complete::NameKind>,
        /// Volumes of this pool only (default: of every pool).
        #[arg(long)]
        pool: Option<String>,
        /// Instead of KIND: a command line up to the cursor (without `oxvirt`); prints the names
        /// completing its last word, if a name goes there.
        #[arg(long, conflicts_with = "kind")]
        line: Option<String>,
    },
    /// Copy stdin to oxvirtd's socket and its replies to stdout: what `migrate` to an
    /// `oxvirt+ssh://` destination runs on that host through ssh (as libvirt's `nc -U`).
    #[command(name = "tunnel-socket", hide = true)]
    TunnelSocket {
        /// oxvirtd's API socket on this host.
        socket: PathBuf,
    },
    /// Write the man pages (oxvirt.1 and one oxvirt-VERB.1 per verb) into DIR.
    #[command(name = "__man-pages", hide = true)]
    ManPages {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// Create a domain and install or import its OS (virt-install's job and flags).
    Install(Box<install::InstallArgs>),
    /// Finish a detached install: wait for the first instance to end, remove its files.
    #[command(name = "__install-finish", hide = true)]
    InstallFinish {
        domain: String,
        /// Files to remove then (the seed ISO, the installer's kernel).
        #[arg(long)]
        remove: Vec<PathBuf>,
    },
    /// Copy a domain: new name, UUID and MACs, its disks copied (virt-clone's job and flags);
    /// with --to, onto another oxvirtd.
    Clone(Box<clone::CloneArgs>),
    /// Write a domain's definition and disk images into a tar file (for `oxvirt import`).
    Export(clone::ExportArgs),
    /// Define a domain from an `oxvirt export` file, its disks as new volumes of a pool.
    Import(clone::ImportArgs),
    /// Administer oxvirtd itself (virt-admin's daemon-log-filters, daemon-log-outputs,
    /// server-list, server-clients-info, server-clients-set).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Users of the remote API (oxvirtd --listen): add, passwd, del, list.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Tokens of the remote API, for scripts: create, list, revoke.
    #[command(subcommand)]
    Token(users::TokenCommand),
}

/// Commands that make a few API calls and print one result.
#[derive(Subcommand, Debug)]
enum OneShotCommand {
    /// Define (but don't start) a domain from an XML file.
    Define {
        /// File with the domain XML.
        file: PathBuf,
        /// Define it in the cluster (etcd) rather than on this host: any member can then start
        /// it, `start` placing it on a host (docs/cluster.md).
        #[arg(long)]
        cluster: bool,
    },
    /// Undefine an inactive domain.
    Undefine {
        #[command(flatten)]
        domain: DomainArg,
        /// Also remove the UEFI guest's NVRAM file (a domain that has one needs this or
        /// --keep-nvram, as in virsh).
        #[arg(long, conflicts_with = "keep_nvram")]
        nvram: bool,
        /// Keep the UEFI guest's NVRAM file.
        #[arg(long)]
        keep_nvram: bool,
        /// Also forget the domain's snapshots (their data stays in the images); a domain with
        /// snapshots needs it, as in virsh.
        #[arg(long)]
        snapshots_metadata: bool,
        /// Also remove the domain's managed save (a domain that has one needs this, as in
        /// virsh).
        #[arg(long)]
        managed_save: bool,
    },
    /// Gracefully shut down a domain (ACPI power button).
    Shutdown {
        #[command(flatten)]
        domain: DomainArg,
        /// Wait up to this many seconds for the domain to power off; fail if it does not.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Immediately stop a domain (pull the plug).
    Destroy(DomainArg),
    /// Reboot a domain.
    Reboot(DomainArg),
    /// Reset a domain (press the reset button).
    Reset(DomainArg),
    /// Pause a running domain.
    Suspend(DomainArg),
    /// Resume a paused domain.
    Resume(DomainArg),
    /// List domains.
    List(ListArgs),
    /// Show domain information.
    Dominfo(DomainArg),
    /// Show a domain's state.
    Domstate {
        #[command(flatten)]
        domain: DomainArg,
        /// Also show the reason for the state.
        #[arg(long)]
        reason: bool,
    },
    /// Print a domain's XML definition.
    Dumpxml {
        #[command(flatten)]
        domain: DomainArg,
        /// The definition for the next start (what `define` gave while it ran).
        #[arg(long)]
        inactive: bool,
    },
    /// Print a domain's UUID (given its name or UUID).
    Domuuid(DomainArg),
    /// Print a running domain's id ("-" when it is inactive).
    Domid(DomainArg),
    /// Print a domain's name (given its UUID or name).
    Domname(DomainArg),
    /// Mark a domain to start when oxvirtd starts (or unmark it with --disable).
    Autostart {
        #[command(flatten)]
        domain: DomainArg,
        /// Unmark the domain instead.
        #[arg(long)]
        disable: bool,
    },
    /// Show the versions of oxvirt, oxvirtd and QEMU.
    Version,
}

/// `list`'s filters and output modes, as virsh names them.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ListArgs {
    /// List active and inactive domains.
    #[arg(long)]
    pub all: bool,
    /// List only inactive domains.
    #[arg(long)]
    pub inactive: bool,
    /// List only domains marked for autostart.
    #[arg(long, conflicts_with = "no_autostart")]
    pub autostart: bool,
    /// List only domains not marked for autostart.
    #[arg(long)]
    pub no_autostart: bool,
    /// Print only names, one a line.
    #[arg(long)]
    pub name: bool,
    /// Print only UUIDs, one a line (with --name: "UUID NAME").
    #[arg(long)]
    pub uuid: bool,
    /// List only domains with a managed save.
    #[arg(long, conflicts_with = "without_managed_save")]
    pub with_managed_save: bool,
    /// List only domains without a managed save.
    #[arg(long)]
    pub without_managed_save: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and --version are not errors; usage errors exit 1 like every other error.
            let code = if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let _ = err.print();
            return code;
        }
    };
    if cli.connect.is_remote() && matches!(cli.command, None | Some(Command::Shell)) {
        report_error(&anyhow::anyhow!(
            "the interactive shell talks to the local oxvirtd; give --connect to each of its \
             lines, or run the commands one by one"
        ));
        return ExitCode::FAILURE;
    }
    let Some(command) = cli.command else {
        return shell::run(&cli.socket);
    };
    if matches!(command, Command::Shell) {
        return shell::run(&cli.socket);
    }
    match remote::client(&cli.connect, &cli.socket).and_then(|client| run(&client, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// Runs one command: from the command line, or one line of the shell.
fn run(client: &oxvirt_api::Client, command: Command) -> anyhow::Result<()> {
    let client = client.clone();
    match command {
        Command::Shell => anyhow::bail!("already in the oxvirt shell"),
        Command::Completion { shell } => generate::completion(shell),
        Command::CompleteNames { kind, pool, line } => {
            generate::print_names(&client, kind, pool.as_deref(), line.as_deref())
        }
        Command::ManPages { dir } => generate::man_pages(&dir),
        Command::TunnelSocket { socket } => tunnel::run(&socket),
        Command::Img(args) => img::run(args),
        Command::Builder(args) => builder::run(args),
        Command::Host(args) => host::run(args),
        Command::Bench(args) => bench::run(&client, args),
        Command::Install(args) => install::run(&client, *args),
        Command::Clone(args) => clone::run(&client, *args),
        Command::Export(args) => clone::export(&client, args),
        Command::Import(args) => clone::import(&client, args),
        Command::InstallFinish { domain, remove } => install::finish(&client, &domain, &remove),
        Command::Console(arg) => console::run(&client, &arg.domain),
        Command::Start { domain, console } => {
            let started = commands::block_on(client.start(&domain.domain))??;
            let message = format!("Domain '{}' started\n", started.name);
            if console {
                let mut stdout = std::io::stdout();
                stdout.write_all(message.as_bytes())?;
                stdout.flush()?;
                console::run(&client, &started.uuid)
            } else {
                print_virsh_output(&message)
            }
        }
        Command::Edit(arg) => print_virsh_output(&edit::run(&client, &arg.domain)?),
        Command::Net(command) => print_virsh_output(&net::run(&client, command)?),
        Command::Pool(command) => print_virsh_output(&pool::run(&client, command)?),
        Command::Secret(command) => print_virsh_output(&secret::run(&client, command)?),
        Command::Display(command) => print_virsh_output(&display::run(&client, command)?),
        Command::Snapshot(command) => {
            let output = snapshot::run(&client, command)?;
            print_output(&output)
        }
        Command::Save(command) => print_virsh_output(&save::run(&client, command)?),
        Command::Migrate(command) => print_virsh_output(&migrate::run(&client, command)?),
        Command::Tuning(command) => print_virsh_output(&tuning::run(&client, command)?),
        Command::IoThreads(command) => print_virsh_output(&iothreads::run(&client, command)?),
        Command::Disk(command) => print_virsh_output(&disks::run(&client, command)?),
        Command::Node(command) => print_virsh_output(&node::run(&client, command)?),
        Command::Cluster(command) => print_virsh_output(&cluster::run(&client, command)?),
        Command::Domstats(args) => print_virsh_output(&stats::run(&client, args)?),
        Command::Limits(command) => print_virsh_output(&limits::run(&client, command)?),
        Command::Memory(command) => print_virsh_output(&memory::run(&client, command)?),
        Command::Capabilities(command) => print_virsh_output(&capabilities::run(&client, command)?),
        Command::Monitor(command) => {
            let output = monitor::run(&client, command)?;
            print_output(&output)
        }
        Command::Events(command) => events::run(&client, command),
        Command::Admin(command) => print_virsh_output(&admin::run(&client, command)?),
        Command::User(command) => print_virsh_output(&users::run_user(&client, command)?),
        Command::Token(command) => print_virsh_output(&users::run_token(&client, command)?),
        Command::OneShot(command) => {
            let output = commands::run(&client, command)?;
            print_virsh_output(&output)
        }
    }
}

/// Prints a command's output followed by the blank line virsh prints after every command.
fn print_virsh_output(output: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    if !output.is_empty() && !output.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// A verb's text as it is, with virsh's blank line after it or not (the few verbs that print none).
fn print_output(output: &format::Output) -> anyhow::Result<()> {
    if output.blank_line {
        return print_virsh_output(&output.text);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// One `error: ...` line on stderr.
fn report_error(err: &anyhow::Error) {
    // virsh's event wait that received nothing fails without a message.
    if err.is::<events::NoEvents>() {
        return;
    }
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr(), "error: {}", one_line(err));
}

/// The whole cause chain on one line, with any line breaks in messages flattened.
fn one_line(err: &anyhow::Error) -> String {
    let message = format!("{err:#}");
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_comes_from_the_option_or_the_default() {
        let cli = Cli::try_parse_from(["oxvirt", "--socket", "/tmp/x.sock", "list", "--all"])
            .expect("valid command line");
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert!(matches!(
            cli.command,
            Some(Command::OneShot(OneShotCommand::List(ListArgs {
                all: true,
                ..
            })))
        ));
        // The option is global: it may follow the subcommand too.
        let cli = Cli::try_parse_from(["oxvirt", "dominfo", "vm", "--socket", "/tmp/y.sock"])
            .expect("valid command line");
        assert_eq!(cli.socket, PathBuf::from("/tmp/y.sock"));
    }

    #[test]
    fn shutdown_timeout_and_domstate_reason_parse() {
        let cli = Cli::try_parse_from(["oxvirt", "shutdown", "--timeout", "60", "vm"])
            .expect("valid command line");
        match cli.command {
            Some(Command::OneShot(OneShotCommand::Shutdown { domain, timeout })) => {
                assert_eq!(domain.domain, "vm");
                assert_eq!(timeout, Some(60));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["oxvirt", "shutdown", "--timeout", "soon", "vm"]).is_err());
        assert!(Cli::try_parse_from(["oxvirt", "domstate", "--reason", "vm"]).is_ok());
    }

    #[test]
    fn error_chains_print_on_one_line() {
        let err = anyhow::anyhow!("malformed XML at line 3,\n  column 1: unexpected end")
            .context("failed to define domain from vm.xml");
        assert_eq!(
            one_line(&err),
            "failed to define domain from vm.xml: malformed XML at line 3, column 1: unexpected end"
        );
    }
}
