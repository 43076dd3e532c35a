//! Live migrations in progress, in memory (held by [`super::domains::Domains`], driven by
//! [`super::migration`]): the outgoing jobs `domjobinfo` shows and `domjobabort` stops, and the
//! incoming migrations this oxvirtd prepared.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxvirt_api::JobInfo;
use oxvirt_host::lock;
use tokio::sync::Notify;
use uuid::Uuid;

use super::error::{invalid_state, DaemonError, DaemonResult, ErrorKind};
use crate::engine::MigrationProgress;

/// The migrations of one oxvirtd: outgoing jobs (source side) and prepared incoming ones
/// (destination side).
#[derive(Default)]
pub struct Migrations {
    /// By domain: the running or last outgoing job.
    pub(super) jobs: Mutex<HashMap<Uuid, Arc<Job>>>,
    /// By id: the incoming migrations prepared here and not yet finished or aborted.
    pub(super) incoming: Mutex<HashMap<String, Arc<IncomingMigration>>>,
    /// The domains migrating out or in now (from the migrate call, or the prepare, until it
    /// ended): the cluster's reconcile leaves their local copies alone (services/cluster.rs).
    moving: Mutex<std::collections::HashSet<Uuid>>,
    /// The ports incoming migrations from other hosts listen on (migration_port_range).
    ports: std::sync::OnceLock<std::ops::RangeInclusive<u16>>,
}

/// One outgoing migration.
pub(super) struct Job {
    pub(super) started: Instant,
    pub(super) info: Mutex<JobInfo>,
    /// `domjobabort` (a permit is kept until the job looks).
    pub(super) abort: Notify,
    pub(super) running: std::sync::atomic::AtomicBool,
    /// The domain's name, for messages and logs.
    pub(super) domain: String,
    /// The migration may switch to post-copy (`--postcopy`: both QEMUs have `postcopy-ram`).
    pub(super) postcopy: bool,
    /// It switched: the guest runs on the destination, and cannot come back here.
    pub(super) switched: std::sync::atomic::AtomicBool,
    /// The limit `migrate-setspeed` set while it runs (MiB/s, 0: none), over the one it began with.
    pub(super) bandwidth_set: Mutex<Option<u64>>,
}

/// One prepared incoming migration.
pub(super) struct IncomingMigration {
    pub(super) uuid: Uuid,
    pub(super) name: String,
    /// The guest ran on the source: it runs here (else it stays paused).
    pub(super) running: bool,
    /// The Unix socket it listens on for the stream (none on TCP: nothing to remove).
    pub(super) socket: Option<PathBuf>,
    /// Stops waiting for the source's connection.
    pub(super) cancel: Notify,
    /// `--tunnelled`: where the stream route hands the stream over (taken by the first one).
    pub(super) tunnel: Mutex<Option<super::migration_tunnel::TunnelSender>>,
    /// The disks created and served here for the source to copy (`--copy-storage-*`).
    pub(super) storage: Option<IncomingStorage>,
    /// A cluster guest's lock, taken over from the source before the guest resumes here.
    pub(super) lock: Option<Arc<dyn super::migration_lock::DestinationLock>>,
    /// The task that accepts the stream and loads it; its result once done.
    pub(super) task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<DaemonResult<()>>>>,
}

impl IncomingMigration {
    /// The load's result, waiting at most `timeout`.
    pub(super) async fn wait(&self, timeout: Duration) -> DaemonResult<()> {
        let mut task = self.task.lock().await;
        let Some(handle) = task.as_mut() else {
            return Err(invalid_state("the migration already ended"));
        };
        let result = match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(super::error::internal("the incoming migration", join)),
            Err(_) => {
                return Err(DaemonError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the guest's state was not loaded within {} s",
                        timeout.as_secs()
                    ),
                ))
            }
        };
        *task = None;
        result
    }
}

impl Migrations {
    /// Sets migration_port_range (once, at start).
    pub(super) fn set_ports(&self, ports: std::ops::RangeInclusive<u16>) {
        let _ = self.ports.set(ports);
    }

    /// migration_port_range, or its default.
    pub(super) fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.ports
            .get()
            .cloned()
            .unwrap_or(super::migration_tcp::DEFAULT_PORTS)
    }

    /// Marks `uuid` as migrating (false when it already was).
    pub(super) fn mark_moving(&self, uuid: Uuid) -> bool {
        lock(&self.moving).insert(uuid)
    }

    pub(super) fn unmark_moving(&self, uuid: &Uuid) {
        lock(&self.moving).remove(uuid);
    }

    pub(super) fn is_moving(&self, uuid: &Uuid) -> bool {
        lock(&self.moving).contains(uuid)
    }

    pub(super) fn begin_job(&self, uuid: Uuid, domain: &str, postcopy: bool) -> Arc<Job> {
        let job = Arc::new(Job {
            started: Instant::now(),
            info: Mutex::new(JobInfo {
                job_type: "Unbounded".to_string(),
                operation: Some("Outgoing migration".to_string()),
                ..JobInfo::default()
            }),
            abort: Notify::new(),
            running: std::sync::atomic::AtomicBool::new(true),
            domain: domain.to_string(),
            postcopy,
            switched: std::sync::atomic::AtomicBool::new(false),
            bandwidth_set: Mutex::new(None),
        });
        lock(&self.jobs).insert(uuid, Arc::clone(&job));
        job
    }

    pub(super) fn job_info(&self, uuid: &Uuid) -> JobInfo {
        match lock(&self.jobs).get(uuid) {
            Some(job) => {
                let mut info = lock(&job.info).clone();
                if job.running.load(std::sync::atomic::Ordering::SeqCst) {
                    info.time_elapsed_ms = elapsed_ms(job.started);
                }
                info
            }
            None => JobInfo {
                job_type: "None".to_string(),
                ..JobInfo::default()
            },
        }
    }

    /// The prepared incoming migration `id`, left in place.
    pub(super) fn incoming(&self, id: &str) -> DaemonResult<Arc<IncomingMigration>> {
        lock(&self.incoming)
            .get(id)
            .cloned()
            .ok_or_else(|| no_incoming(id))
    }

    pub(super) fn take_incoming(&self, id: &str) -> DaemonResult<Arc<IncomingMigration>> {
        lock(&self.incoming)
            .remove(id)
            .ok_or_else(|| no_incoming(id))
    }
}

fn no_incoming(id: &str) -> DaemonError {
    DaemonError::new(
        ErrorKind::NotFound,
        format!("no incoming migration '{id}' here"),
    )
}

/// A job stopped by `domjobabort` ([`Job::end`] records it "Cancelled" by these words).
pub(super) fn aborted() -> DaemonError {
    DaemonError::new(
        ErrorKind::InvalidState,
        "the migration was aborted (domjobabort)",
    )
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Job {
    pub(super) fn update(&self, progress: &MigrationProgress, bandwidth_mib: Option<u64>) {
        let mut info = lock(&self.info);
        info.time_elapsed_ms = elapsed_ms(self.started);
        info.memory_processed = progress.transferred;
        info.memory_remaining = progress.remaining;
        info.memory_total = progress.total;
        // Data: memory and the disks' copy (whose figures `update_disks` keeps) together.
        info.data_processed = progress.transferred.saturating_add(info.disk_processed);
        info.data_remaining = progress.remaining.saturating_add(info.disk_remaining);
        info.data_total = progress.total.saturating_add(info.disk_total);
        info.dirty_rate = progress.dirty_rate;
        info.memory_iteration = progress.passes;
        info.bandwidth_mib = lock(&self.bandwidth_set).or(bandwidth_mib).unwrap_or(0);
        info.downtime_ms = progress.downtime_ms;
        info.phase = Some(progress.status.clone());
        info.postcopy_requests = progress.postcopy_requests;
    }

    /// `migrate-setspeed` while it runs: `domjobinfo` shows `mib` from now on.
    pub(super) fn set_bandwidth(&self, mib: u64) {
        *lock(&self.bandwidth_set) = Some(mib);
        lock(&self.info).bandwidth_mib = mib;
    }

    /// The disks' copy (`--copy-storage-*`), before and while the memory goes.
    pub(super) fn update_disks(&self, copies: &[crate::engine::DiskCopyProgress]) {
        let mut info = lock(&self.info);
        info.time_elapsed_ms = elapsed_ms(self.started);
        info.disk_processed = copies.iter().map(|copy| copy.offset).sum();
        info.disk_total = copies.iter().map(|copy| copy.len).sum();
        info.disk_remaining = info.disk_total.saturating_sub(info.disk_processed);
        info.data_processed = info.memory_processed.saturating_add(info.disk_processed);
        info.data_remaining = info.memory_remaining.saturating_add(info.disk_remaining);
        info.data_total = info.memory_total.saturating_add(info.disk_total);
    }

    /// The downtime the migration measured (ms), when the engine's progress has none (a native
    /// guest's: services/migration_native.rs).
    pub(super) fn set_downtime(&self, milliseconds: u64) {
        lock(&self.info).downtime_ms = Some(milliseconds);
    }

    pub(super) fn complete(&self) {
        let mut info = lock(&self.info);
        info.job_type = "Completed".to_string();
        info.time_elapsed_ms = elapsed_ms(self.started);
        info.memory_remaining = 0;
        info.disk_remaining = 0;
        info.data_remaining = 0;
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn end(&self, err: &DaemonError) {
        let mut info = lock(&self.info);
        info.job_type = if err.message.contains("domjobabort") {
            "Cancelled"
        } else {
            "Failed"
        }
        .to_string();
        info.time_elapsed_ms = elapsed_ms(self.started);
        info.error = Some(err.message.clone());
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// (Destination) What an incoming migration that copies disks made here
/// (services/migration_storage.rs): kept with the migration, removed if it fails.
#[derive(Default)]
pub(super) struct IncomingStorage {
    /// The disk files created for the copy.
    created: Vec<PathBuf>,
    /// The NBD socket's names.
    sockets: Vec<PathBuf>,
    /// A remote source's way to the NBD socket (services/migration_tcp.rs).
    relay: Option<Arc<super::migration_tcp::NbdRelay>>,
}

impl IncomingStorage {
    pub(super) fn new(
        created: Vec<PathBuf>,
        sockets: Vec<PathBuf>,
        relay: Option<Arc<super::migration_tcp::NbdRelay>>,
    ) -> IncomingStorage {
        IncomingStorage {
            created,
            sockets,
            relay,
        }
    }

    /// The copy is over (the guest runs here): the socket (and port) go, the disks stay.
    pub(super) fn served(&self) {
        self.stop_relay();
        remove_files(&self.sockets);
    }

    /// The migration did not end here: the disks created for it go too.
    pub(super) fn discard(&self) {
        self.stop_relay();
        remove_files(&self.sockets);
        remove_files(&self.created);
    }

    fn stop_relay(&self) {
        if let Some(relay) = &self.relay {
            relay.stop();
        }
    }
}

/// Removes `paths`; one already gone is no error.
pub(super) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        if let Err(err) = std::fs::remove_file(path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::error!("cannot remove {}: {err}", path.display());
            }
        }
    }
}

/// (Source) Asks the destination to drop what it prepared for migration `prepared` of domain
/// `name`; a destination that cannot is logged, the migration's own error is what the caller reports.
pub(super) async fn abort_destination(
    destination: &oxvirt_api::Client,
    prepared: &oxvirt_api::PreparedMigration,
    name: &str,
) {
    if let Err(abort) = destination.abort_migration(&prepared.id).await {
        tracing::warn!(domain = %name, "the destination could not abort: {abort}");
    }
}
