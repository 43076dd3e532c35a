//! oxvirtd: the oxvirt daemon. Keeps domain definitions, runs guests through an engine, and
//! serves the oxvirt API (JSON over HTTP/1.1) on a Unix socket.

mod daemon;
mod engine;
mod engine_set;
mod http;
mod native_engine;
mod net_http;
mod networks;
mod pool_http;
mod pools;
mod process;
mod qemu_engine;
mod store;

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::daemon::Daemon;
use crate::networks::Networks;
use crate::qemu_engine::QemuEngine;
use crate::store::{DbFile, Store, StoreError};

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level '{}'", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    create_private_dir(&args.state_dir)?;
    create_private_dir(&args.state_dir.join("run"))?;
    // Held for the daemon's lifetime: one oxvirtd per state directory.
    let _lock = lock_state_dir(&args.state_dir)?;

    let db_path = args.state_dir.join(store::DATABASE_FILE);
    check_database(&db_path)?;
    let listener = bind_socket(&args.socket)?;
    let store = Store::open(&db_path)?;
    tracing::info!(
        database = %store.path().display(),
        schema_version = store.schema_version()?,
        "state database open"
    );
    // QEMU by default; the native engine for domains that ask for it (<oxvirt:engine>).
    let engine = Arc::new(engine_set::EngineSet::new(
        Arc::new(QemuEngine::probe().await),
        Arc::new(native_engine::NativeEngine::probe()),
    ));
    let network_dir = args
        .network_dir
        .clone()
        .unwrap_or_else(|| networks::default_network_dir(&args.state_dir));
    let networks = Networks::new(network_dir, !args.no_default_network).await?;
    let daemon = Arc::new(Daemon::new(store, engine, args.state_dir.clone(), networks));
    // Pools before autostart domains, whose disks may be volumes.
    daemon.start_pools()?;
    daemon
        .recover()
        .await
        .context("reattaching to running guests")?;
    // Networks before autostart domains, which may need them.
    daemon.start_networking().await;
    {
        let daemon = daemon.clone();
        tokio::spawn(async move { daemon.autostart().await });
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
    axum::serve(listener, http::router(daemon))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

/// Before the daemon takes its database: refuse one that is not usable as it is (the operator
/// decides what happens to it). A missing database is a first start.
fn check_database(db_path: &Path) -> anyhow::Result<()> {
    match store::check_database_file(db_path) {
        Ok(DbFile::Missing) => {
            tracing::info!(database = %db_path.display(), "no state database yet: first start");
            Ok(())
        }
        Ok(DbFile::Healthy(db)) => {
            tracing::debug!(
                database = %db_path.display(),
                schema_version = db.schema_version()?,
                "state database passed quick_check"
            );
            Ok(())
        }
        Err(err) if err.is_unusable_file() => Err(anyhow!(refusal(&err, db_path))),
        Err(err) => Err(err.into()),
    }
}

/// The message of a refused database: what is wrong and the way on.
fn refusal(err: &StoreError, db_path: &Path) -> String {
    format!(
        "{err}\n\
         oxvirtd does not start on it: every domain, network and pool it defined would look gone. \
         The file is left as it is. To start empty on purpose, move {db} (and {db}-wal, {db}-shm \
         if present) out of the way first",
        db = db_path.display(),
    )
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Takes an exclusive flock on `STATE_DIR/oxvirtd.lock`, or explains who holds it.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<File> {
    let path = state_dir.join("oxvirtd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "another oxvirtd is running with state directory {} (it holds {})",
                state_dir.display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
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
