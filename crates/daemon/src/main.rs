//! oxvirtd: the oxvirt daemon. Keeps domain definitions, runs guests through an engine, and
//! serves the oxvirt API (JSON over HTTP/1.1) on a Unix socket.

mod api;
mod engine;
mod services;
mod store;

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::engine::{native::NativeEngine, qemu::QemuEngine, set::EngineSet};
use crate::services::Services;
use crate::store::{BackupOutcome, DbFile, Store, StoreError};

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
    create_private_dir(&args.state_dir)?;
    create_private_dir(&args.state_dir.join("run"))?;
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
        Arc::new(QemuEngine::probe().await),
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

/// Before the daemon takes its database: refuse one that is not usable as it is (the operator
/// chooses between a backup and an empty start), and back up a healthy one before migrations
/// touch it. A missing database is a first start.
fn check_and_back_up(state_dir: &Path, db_path: &Path, keep: usize) -> anyhow::Result<()> {
    let backups = state_dir.join(store::BACKUPS_DIR);
    match store::check_database_file(db_path) {
        Ok(DbFile::Missing) => {
            tracing::info!(database = %db_path.display(), "no state database yet: first start");
            Ok(())
        }
        Ok(DbFile::Healthy(db)) => {
            match store::write_backup(&db, &backups, keep) {
                Ok(BackupOutcome::Written(path)) => {
                    tracing::info!(backup = %path.display(), "state database backed up at start")
                }
                Ok(BackupOutcome::Unchanged(path)) => tracing::info!(
                    backup = %path.display(),
                    "state database unchanged since its newest backup"
                ),
                // The backups are a safety net; the daemon can serve without a new one.
                Err(err) => tracing::warn!("no backup of the state database at start: {err}"),
            }
            Ok(())
        }
        Err(err) if err.is_unusable_file() => {
            Err(anyhow!(refusal(&err, state_dir, db_path, &backups)))
        }
        Err(err) => Err(err.into()),
    }
}

/// The message of a refused database: what is wrong and the two ways on.
fn refusal(err: &StoreError, state_dir: &Path, db_path: &Path, backups: &Path) -> String {
    let newest = match store::list_backups(backups) {
        Ok(list) => match list.last() {
            Some(newest) => format!(
                "the newest of its {} backups, {}",
                list.len(),
                newest.display()
            ),
            None => format!("a backup (there is none in {} yet)", backups.display()),
        },
        Err(err) => format!("a backup ({err})"),
    };
    format!(
        "{err}\n\
         oxvirtd does not start on it: every domain, network and pool it defined would look gone. \
         The file is left as it is. Either:\n\
         - restore {newest}, moving this file aside: oxvirtd --state-dir {state} --restore-backup [FILE]\n\
         - or start empty on purpose: move {db} (and {db}-wal, {db}-shm if present) out of the way first",
        state = state_dir.display(),
        db = db_path.display(),
    )
}

/// Takes a backup if the store changed since the last one, off the async workers.
async fn backup_if_changed(store: &Arc<Store>, backups: &Path, keep: usize, when: &str) {
    let store = store.clone();
    let dir = backups.to_path_buf();
    let result = tokio::task::spawn_blocking(move || store.backup_if_changed(&dir, keep)).await;
    match result {
        Ok(Ok(Some(BackupOutcome::Written(path)))) => {
            tracing::info!(backup = %path.display(), "state database backed up ({when})")
        }
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!("state database backup ({when}) failed: {err}"),
        Err(err) => tracing::warn!("state database backup ({when}) did not run: {err}"),
    }
}

/// `oxvirtd --restore-backup [FILE]`: installs a backup while no daemon runs, says what it did.
fn restore_backup(state_dir: &Path, file: Option<&Path>) -> anyhow::Result<()> {
    // Not created: a mistyped --state-dir should fail, not become a new state directory.
    if !state_dir.is_dir() {
        bail!("state directory {} does not exist", state_dir.display());
    }
    let _lock = lock_state_dir(state_dir)
        .context("cannot restore a backup while oxvirtd runs: stop it first")?;
    let backups = state_dir.join(store::BACKUPS_DIR);
    let backup = match file {
        Some(file) => file.to_path_buf(),
        None => store::list_backups(&backups)?.pop().ok_or_else(|| {
            anyhow!(
                "no backups in {}: nothing to restore (name one: --restore-backup FILE)",
                backups.display()
            )
        })?,
    };
    let restored = store::restore_backup(&state_dir.join(store::DATABASE_FILE), &backup)?;
    let domains = match restored.domains {
        Some(n) => format!("{n} domain definition(s)"),
        None => "no domains table".to_string(),
    };
    println!(
        "Checked backup {}: quick_check ok, schema version {}, {domains}.",
        restored.backup.display(),
        restored.schema_version
    );
    for (from, to) in &restored.moved_aside {
        println!("Moved {} aside to {}.", from.display(), to.display());
    }
    for removed in &restored.removed {
        println!(
            "Removed {} (SQLite's index of the write-ahead log, rebuilt on open).",
            removed.display()
        );
    }
    println!(
        "Installed the backup as {}. Start oxvirtd to use it.",
        restored.database.display()
    );
    Ok(())
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
