//! oxvirtd: the oxvirt daemon. Keeps domain definitions, runs guests through an engine, and
//! serves the oxvirt API (JSON over HTTP/1.1) on a Unix socket.

mod api;
mod engine;
mod services;
mod state_dir;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::engine::{native::NativeEngine, qemu::QemuEngine, set::EngineSet};
use crate::services::Services;
use crate::state_dir::{
    backup_if_changed, check_and_back_up, create_private_dir, lock_state_dir, restore_backup,
};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(name = "oxvirtd", version, about = "The oxvirt daemon")]
struct Args {
    /// Unix socket to serve the API on.
    #[arg(long, default_value = oxvirt_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory for the state database and the guests' run directories.
    #[arg(long, default_value = "/var/lib/oxvirt")]
    state_dir: PathBuf,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive list).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Do not define libvirt's `default` NAT network on the first start (test suites that run
    /// the daemon in the host's own network namespace use this).
    #[arg(long, env = "OXVIRTD_NO_DEFAULT_NETWORK")]
    no_default_network: bool,
    /// Directory for the networks' dnsmasq files and leases (default: the state directory's
    /// path with `-network` appended, e.g. /var/lib/oxvirt-network). dnsmasq drops its
    /// privileges, so this directory, unlike the state directory, must be reachable by others.
    #[arg(long)]
    network_dir: Option<PathBuf>,
    /// Seconds between backups of the state database while oxvirtd runs, each taken only if
    /// something changed since the last one; 0 keeps only the backups taken at start and at a
    /// clean stop. Backups go to STATE_DIR/backups (see docs/store.md).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    backup_interval: u64,
    /// How many backups STATE_DIR/backups keeps (the oldest are deleted first).
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    backup_keep: u64,
    /// Install a backup as the state database and exit: FILE, or without it the newest backup
    /// in STATE_DIR/backups. Refused while an oxvirtd runs on the state directory. The database
    /// it replaces is moved aside (oxvirt.db.broken-TIME), never deleted.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    restore_backup: Option<Option<PathBuf>>,
}

fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line an operator can act on (`{:#}`: the error and its causes), never a
            // backtrace: a refusal to start is an answer, not a crash.
            eprintln!("oxvirtd: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level '{}'", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(file) = &args.restore_backup {
        return restore_backup(&args.state_dir, file.as_deref());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    for dir in [args.state_dir.clone(), args.state_dir.join("run")] {
        create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Held for the daemon's lifetime: one oxvirtd per state directory.
    let _lock = lock_state_dir(&args.state_dir)?;

    let db_path = args.state_dir.join(store::DATABASE_FILE);
    let backups = args.state_dir.join(store::BACKUPS_DIR);
    let keep = args.backup_keep as usize;
    check_and_back_up(&args.state_dir, &db_path, keep)?;
    let listener = bind_socket(&args.socket)?;
    let store = Store::open(&db_path)?;
    tracing::info!(
        database = %store.path().display(),
        schema_version = store.schema_version()?,
        "state database open"
    );
    // QEMU by default; the native engine for domains that ask for it (<oxvirt:engine>).
    let engine = Arc::new(EngineSet::new(
        Arc::new(QemuEngine::probe(args.state_dir.join("nvram")).await),
        Arc::new(NativeEngine::probe()),
    ));
    let network_dir = args
        .network_dir
        .clone()
        .unwrap_or_else(|| services::networks::default_network_dir(&args.state_dir));
    let services = Services::new(
        Arc::new(store),
        engine,
        args.state_dir.clone(),
        network_dir,
        !args.no_default_network,
    )
    .await?;
    services.start().await?;
    if args.backup_interval > 0 {
        let store = services.store.clone();
        let every = Duration::from_secs(args.backup_interval);
        let backups = backups.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            // The first tick is immediate; the start backup was just taken.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                backup_if_changed(&store, &backups, keep, "periodic").await;
            }
        });
    }

    tracing::info!(socket = %args.socket.display(), state_dir = %args.state_dir.display(), "oxvirtd listening");
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("stopping; running guests keep running");
    };
    axum::serve(listener, api::router(services.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    let _ = std::fs::remove_file(&args.socket);
    backup_if_changed(&services.store, &backups, keep, "at stop").await;
    Ok(())
}

/// Binds the API socket (mode 0600), replacing a stale socket file but never a live daemon's.
fn bind_socket(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "another oxvirtd is already listening on {}",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", socket.display()))?;
    Ok(listener)
}
