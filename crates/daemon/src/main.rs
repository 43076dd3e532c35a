//! oxvirtd: the oxvirt daemon. Keeps domain definitions, runs guests through an engine, and
//! serves the oxvirt API (JSON over HTTP/1.1) on a Unix socket, and with `--listen` over TLS
//! (remote.rs).

mod api;
mod clients;
mod config;
mod engine;
mod logging;
mod manpages;
mod remote;
mod services;
mod settings;
mod state_dir;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::clients::{Clients, CountedListener};
use crate::engine::{native::NativeEngine, qemu::QemuEngine, set::EngineSet};
use crate::services::Services;
use crate::settings::{Args, Settings};
use crate::state_dir::{
    backup_if_changed, check_and_back_up, create_private_dir, lock_state_dir, restore_backup,
};
use crate::store::Store;

/// The hidden mode in which oxvirtd is each guest's log writer (`oxvirt_logfile::writer`,
/// started by the qemu engine with the guest, outliving oxvirtd as the guest does):
/// `oxvirtd __guest-log-writer MAX_SIZE MAX_BACKUPS OUTPUT_LOG [FIFO LOG]...`.
const GUEST_LOG_WRITER: &str = "__guest-log-writer";

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|mode| mode == GUEST_LOG_WRITER)
    {
        let args: Option<Vec<String>> = std::env::args_os()
            .skip(2)
            .map(|arg| arg.into_string().ok())
            .collect();
        let status = args.map_or(2, |args| oxvirt_logfile::writer::run(&args));
        return std::process::ExitCode::from(status as u8);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|mode| mode == manpages::MAN_PAGES)
    {
        let Some(dir) = std::env::args_os().nth(2) else {
            eprintln!("usage: oxvirtd {} DIR", manpages::MAN_PAGES);
            return std::process::ExitCode::FAILURE;
        };
        return match manpages::write(Path::new(&dir)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("oxvirtd: error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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
    let settings = Settings::resolve(&args)?;
    if args.check_config {
        settings.check()?;
        println!("oxvirtd: configuration is valid");
        return Ok(());
    }
    settings.init_logging()?;
    if let Some(file) = &args.restore_backup {
        return restore_backup(&settings.state_dir, file.as_deref());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(settings))
}

async fn run(args: Settings) -> anyhow::Result<()> {
    for dir in [args.state_dir.clone(), args.state_dir.join("run")] {
        create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if args.sandbox {
        state_dir::open_to_guest_users(&args.state_dir)?;
    }
    // Held for the daemon's lifetime: one oxvirtd per state directory.
    let _lock = lock_state_dir(&args.state_dir)?;

    let db_path = args.state_dir.join(store::DATABASE_FILE);
    let backups = args.state_dir.join(store::BACKUPS_DIR);
    let keep = args.backup_keep as usize;
    check_and_back_up(&args.state_dir, &db_path, keep)?;
    // The TLS listener before the socket: a port in use or an unreadable certificate stops
    // oxvirtd before it answers anywhere.
    let tls = match args.listen {
        Some(address) => Some(
            remote::TlsListener::bind(address, args.tls_files.as_ref(), &args.state_dir).await?,
        ),
        None => None,
    };
    let listener = bind_socket(&args.socket, args.socket_mode, args.socket_gid)?;
    let store = Store::open(&db_path)?;
    tracing::info!(
        database = %store.path().display(),
        schema_version = store.schema_version()?,
        "state database open"
    );
    // QEMU by default; the native engine for domains that ask for it (<oxvirt:engine>).
    // Each guest's logs rotate: QEMU's output and console log and the VMM's output through a
    // log writer, this very binary in its hidden mode; the native engine's console log through
    // its console relay here in oxvirtd.
    let log_writer = oxvirt_qemu::WriterProgram {
        program: std::env::current_exe().context("finding oxvirtd's own executable")?,
        args: vec![GUEST_LOG_WRITER.to_string()],
        rotation: args.guest_logs,
    };
    let engine = Arc::new(EngineSet::new(
        Arc::new(
            QemuEngine::probe(
                args.state_dir.join("nvram"),
                log_writer.clone(),
                args.sandbox,
            )
            .await,
        ),
        Arc::new(NativeEngine::probe(
            args.guest_logs,
            log_writer,
            args.sandbox
                .then(|| oxvirt_native::Sandbox::new(args.native_users.clone())),
        )),
    ));
    let host_cpu = args.read_host_cpu()?;
    let network_dir = args
        .network_dir
        .clone()
        .unwrap_or_else(|| services::networks::default_network_dir(&args.state_dir));
    let services = Services::new(
        Arc::new(store),
        engine,
        services::ServicesConfig {
            state_dir: args.state_dir.clone(),
            network_dir,
            define_default_network: args.default_network,
            qemu_users: args.sandbox.then(|| args.qemu_users.clone()),
            cluster: args.cluster.clone(),
            host_cpu,
            migration_ports: args.migration_ports.clone(),
        },
    )
    .await?;
    if args.host_cpu_file.is_some() {
        // A description QEMU's models cannot read stops oxvirtd now, not at the first use.
        services
            .advertised_cpu()
            .map_err(|err| anyhow::anyhow!("key 'host_cpu_file': {err}"))?;
    }
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
    // Every API connection is counted while open, and refused beyond max_clients.
    let clients = Clients::new(args.max_clients);
    if let Some(tls) = tls {
        let auth = api::auth::Auth::new(services.users.clone());
        let app = api::router(services.clone(), clients.clone(), Some(auth));
        let address = tls.local_addr().context("the TLS listener's address")?;
        tracing::info!(%address, cert = %tls.cert.display(), "oxvirtd listening over TLS");
        tokio::spawn(tls.serve(app, clients.clone()));
    }
    let listener = CountedListener::new(listener, clients.clone());
    axum::serve(listener, api::router(services.clone(), clients, None))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    let _ = std::fs::remove_file(&args.socket);
    backup_if_changed(&services.store, &backups, keep, "at stop").await;
    Ok(())
}

/// Binds the API socket (mode 0600), replacing a stale socket file but never a live daemon's.
fn bind_socket(socket: &Path, mode: u32, gid: Option<u32>) -> anyhow::Result<UnixListener> {
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
    if let Some(gid) = gid {
        std::os::unix::fs::chown(socket, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid}", socket.display()))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    Ok(listener)
}
