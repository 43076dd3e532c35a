//! [`Engine`] on top of `oxvirt-native`, which runs a domain on `oxvirt-vmm` (docs/native-vmm.md,
//! "Native engine in oxvirtd"). This adapter only maps: the daemon's calls to the engine's,
//! [`NativeError`] to [`EngineError`], and how a VM ended ([`VmEnd`]) to [`EngineEvent`]s.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::Domain;
use oxvirt_native::{NativeError, RunPaths, RunState, Supervisor, VmEnd, VmmClient};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    AccelPlan, BlockStats, ConsolePaths, Control, Engine, EngineError, EngineErrorKind,
    EngineEvent, Events, GuestStatus, Incoming, MemoryStats, MigrationProgress, StateFile,
};

pub struct NativeEngine {
    /// `Err(reason)` when this host has no hardware KVM.
    kvm: Result<(), String>,
    supervisor: Supervisor,
}

impl NativeEngine {
    /// Probes the host once for hardware KVM (the native engine cannot emulate). Console logs
    /// rotate as `guest_logs` says; each VMM's vmm.log is written by `log_writer`; each VMM is
    /// jailed as one of `sandbox`'s users (none: `oxvirtd --no-sandbox`).
    pub fn probe(
        guest_logs: oxvirt_logfile::Rotation,
        log_writer: oxvirt_logfile::writer::WriterProgram,
        sandbox: Option<oxvirt_native::Sandbox>,
    ) -> NativeEngine {
        let probe = oxvirt_qemu::probe_accel();
        let kvm = match probe.accel {
            oxvirt_qemu::Accel::Kvm => Ok(()),
            oxvirt_qemu::Accel::Tcg => Err(probe
                .reason
                .strip_suffix(": using TCG")
                .unwrap_or(&probe.reason)
                .to_string()),
        };
        NativeEngine {
            kvm,
            supervisor: {
                let supervisor =
                    Supervisor::with_log_rotation(guest_logs).with_log_writer(log_writer);
                match sandbox {
                    Some(sandbox) => supervisor.with_sandbox(sandbox),
                    None => supervisor,
                }
            },
        }
    }

    /// The host-side precondition of a start: hardware KVM.
    fn check_host(&self) -> Result<(), EngineError> {
        match &self.kvm {
            Ok(()) => Ok(()),
            Err(reason) => Err(engine_error(NativeError::NoHardwareKvm {
                reason: reason.clone(),
            })),
        }
    }
}

fn engine_error(err: NativeError) -> EngineError {
    EngineError {
        kind: if err.is_unsupported() {
            EngineErrorKind::Unsupported
        } else {
            EngineErrorKind::Failed
        },
        message: err.to_string(),
    }
}

/// The engine events that the end of a VM means.
fn events_of(end: &VmEnd) -> Vec<EngineEvent> {
    match end {
        VmEnd::PoweredOff { by_guest } => vec![EngineEvent::Shutdown { guest: *by_guest }],
        VmEnd::Rebooted => vec![EngineEvent::Rebooted],
        // No event: the supervisor sees the stream end without a shutdown, which is a crash.
        VmEnd::Crashed { .. } => Vec::new(),
    }
}

#[async_trait]
impl Engine for NativeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Native
    }

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_string())
    }

    fn plan_accel(&self, _domain: &Domain) -> AccelPlan {
        AccelPlan {
            accel: Accel::Kvm,
            warnings: match &self.kvm {
                Ok(()) => Vec::new(),
                Err(reason) => vec![format!(
                    "no hardware KVM here ({reason}): the native engine cannot start this domain"
                )],
            },
        }
    }

    fn check_definition(&self, domain: &Domain) -> Result<(), EngineError> {
        oxvirt_native::check_definition(domain).map_err(engine_error)
    }

    fn check_host(&self, _domain: &Domain) -> Result<(), EngineError> {
        NativeEngine::check_host(self)
    }

    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        _accel: Accel,
        incoming: Option<Incoming<'_>>,
        // The jail's user is the native supervisor's choice (oxvirt_native::Sandbox).
        _user: Option<u32>,
    ) -> Result<u32, EngineError> {
        self.check_host()?;
        let run = RunPaths::new(run_dir);
        match incoming {
            // A guest's state, sent by the source (services/migration_native.rs: saved while
            // paused, or streamed live): spooled into the run directory, then restored as a
            // saved state is.
            Some(Incoming::Stream(stream)) => {
                let spool = run.incoming_state();
                // A leftover of an earlier attempt that died with oxvirtd.
                let _ = std::fs::remove_file(&spool);
                let limit = oxvirt_native::migration::state_limit(domain.memory_kib);
                let launched =
                    match oxvirt_native::migration::receive_from(stream, &spool, limit).await {
                        Ok(_) => {
                            let source = oxvirt_native::RestoreSource {
                                path: spool.clone(),
                                offset: 0,
                            };
                            self.supervisor.launch_restoring(domain, &run, source).await
                        }
                        Err(err) => Err(err),
                    };
                // The VMM has read all of it once its API answers (or it failed).
                if let Err(err) = std::fs::remove_file(&spool) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("cannot remove {}: {err}", spool.display());
                    }
                }
                launched
            }
            Some(Incoming::StreamPostcopy(_)) => {
                return Err(EngineError {
                    kind: EngineErrorKind::Unsupported,
                    message: "the native engine has no post-copy migration (--postcopy): its \
                              guests' memory goes before they run on the destination (pre-copy)"
                        .to_string(),
                })
            }
            Some(Incoming::StreamCopyingDisks(..)) => {
                return Err(EngineError {
                    kind: EngineErrorKind::Unsupported,
                    message: "the native engine cannot copy a guest's disks in a migration \
                              (--copy-storage-*): its disks must be on shared storage"
                        .to_string(),
                })
            }
            Some(Incoming::Saved(state)) => {
                let source = oxvirt_native::RestoreSource {
                    path: state.path.clone(),
                    offset: state.offset,
                };
                self.supervisor.launch_restoring(domain, &run, source).await
            }
            None => self.supervisor.launch(domain, &run).await,
        }
        .map_err(engine_error)
    }

    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool {
        oxvirt_native::is_alive(pid, uuid).await
    }

    fn recorded_pid(&self, run_dir: &Path) -> Option<u32> {
        oxvirt_native::read_pid_file(&RunPaths::new(run_dir))
    }

    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError> {
        let (client, end) = self
            .supervisor
            .connect(&RunPaths::new(run_dir))
            .await
            .map_err(engine_error)?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // An end that cannot be observed reports nothing; the stream still ends.
            let Ok(end) = end.await else { return };
            if let VmEnd::Crashed { reason } = &end {
                tracing::warn!("oxvirt-vmm: {reason}");
            }
            for event in events_of(&end) {
                if events_tx.send(event).is_err() {
                    return;
                }
            }
            // Dropping the sender ends the event stream: the supervisor sees the guest gone.
        });
        Ok((
            Arc::new(VmmControl {
                client,
                run: RunPaths::new(run_dir),
                max_downtime_ms: std::sync::atomic::AtomicU64::new(
                    oxvirt_native::DEFAULT_MAX_DOWNTIME_MS,
                ),
                migrating: std::sync::atomic::AtomicBool::new(false),
            }),
            events_rx,
        ))
    }

    fn console_paths(&self, run_dir: &Path) -> ConsolePaths {
        let paths = RunPaths::new(run_dir);
        ConsolePaths {
            socket: paths.console_socket(),
            log: paths.console_log(),
        }
    }
}

struct VmmControl {
    client: VmmClient,
    /// Where the VMM's pid file is (its vCPU threads are found from the pid).
    run: RunPaths,
    /// The downtime the guest's live migrations aim at (`migrate-setmaxdowntime`): the
    /// daemon's, sent with each migration's request and to the one under way (the VMM keeps
    /// none between them); back to the default when oxvirtd reconnects to the VMM (a restart).
    max_downtime_ms: std::sync::atomic::AtomicU64,
    /// Set while [`Control::migrate_live`] waits for the VMM's stream.
    migrating: std::sync::atomic::AtomicBool,
}

/// The balloon report as the daemon's [`MemoryStats`]: the VMM already uses virsh's names and
/// units; they are put in libvirt's order (`last_update`, which the VMM reports apart, among
/// them) and matched to the static set the daemon knows (others are dropped).
fn memory_stats_of(report: oxvirt_native::BalloonReport) -> MemoryStats {
    const LIBVIRT_ORDER: [&str; 11] = [
        "swap_in",
        "swap_out",
        "major_fault",
        "minor_fault",
        "unused",
        "available",
        "usable",
        "last_update",
        "disk_caches",
        "hugetlb_pgalloc",
        "hugetlb_pgfail",
    ];
    let guest = LIBVIRT_ORDER
        .iter()
        .filter_map(|key| {
            let value = if *key == "last_update" {
                report.last_update
            } else {
                report
                    .guest
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, value)| *value)
            };
            value.map(|value| (*key, value))
        })
        .collect();
    MemoryStats {
        actual_kib: report.actual_kib,
        guest,
    }
}

/// The VMM's disk counters as the daemon's [`BlockStats`] (virsh's keys), each under its disk's
/// target (the `id` the plan gave it; a disk without one is not a disk of the domain's and is
/// left out).
fn block_stats_of(disks: Vec<oxvirt_native::DiskStats>) -> Vec<BlockStats> {
    disks
        .into_iter()
        .filter_map(|disk| {
            let oxvirt_native::BlockStats { read, write, flush } = disk.counters;
            Some(BlockStats {
                target: disk.id?,
                rd_req: read.requests,
                rd_bytes: read.bytes,
                wr_req: write.requests,
                wr_bytes: write.bytes,
                flush_operations: flush.requests,
                rd_total_times: read.total_ns,
                wr_total_times: write.total_ns,
                flush_total_times: flush.total_ns,
            })
        })
        .collect()
}

#[async_trait]
impl Control for VmmControl {
    async fn status(&self) -> Result<GuestStatus, EngineError> {
        Ok(match self.client.status().await.map_err(engine_error)? {
            // Launched, held before its first instruction until the start resumes it.
            RunState::Created => GuestStatus::NotStarted,
            RunState::Running => GuestStatus::Running,
            RunState::Paused => GuestStatus::Paused,
            RunState::Stopping => GuestStatus::ShutDown,
        })
    }

    async fn pause(&self) -> Result<(), EngineError> {
        self.client.pause().await.map_err(engine_error)
    }

    async fn save_state(&self, state: &StateFile) -> Result<(), EngineError> {
        self.client
            .save_state(&state.path, state.offset)
            .await
            .map_err(engine_error)
    }

    async fn resume(&self) -> Result<(), EngineError> {
        self.client.resume().await.map_err(engine_error)
    }

    async fn migrate_live(
        &self,
        stream: std::os::fd::OwnedFd,
    ) -> Result<oxvirt_native::MigrationReport, EngineError> {
        use std::sync::atomic::Ordering;
        let downtime = self.max_downtime_ms.load(Ordering::SeqCst);
        self.migrating.store(true, Ordering::SeqCst);
        let sent = self.client.migrate_send(stream, downtime).await;
        self.migrating.store(false, Ordering::SeqCst);
        sent.map_err(engine_error)
    }

    /// The live migration under way, as the VMM last saw it (its passes, the pages the guest
    /// wrote during the last one and how fast): `transferred` is the RAM its passes sent.
    async fn migration_progress(&self) -> Result<MigrationProgress, EngineError> {
        let live = self.client.migrate_status().await.map_err(engine_error)?;
        Ok(MigrationProgress {
            status: "active".to_string(),
            transferred: live.ram_bytes,
            remaining: live.dirty_bytes,
            dirty_rate: live.dirty_rate,
            passes: u64::from(live.passes),
            ..MigrationProgress::default()
        })
    }

    async fn migrate_cancel(&self) -> Result<(), EngineError> {
        self.client.migrate_cancel().await.map_err(engine_error)
    }

    /// (max downtime, 0): a native guest has no bandwidth limit of its own; `migrate
    /// --bandwidth` sets one for that migration.
    async fn migration_parameters(&self) -> Result<(u64, u64), EngineError> {
        let downtime = self
            .max_downtime_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        Ok((downtime, 0))
    }

    /// For the live migration under way (from its next pass's end on) and those after it.
    async fn set_max_downtime(&self, milliseconds: u64) -> Result<(), EngineError> {
        use std::sync::atomic::Ordering;
        self.max_downtime_ms.store(milliseconds, Ordering::SeqCst);
        if !self.migrating.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.client.migrate_set_downtime(milliseconds).await {
            Ok(()) => Ok(()),
            // It ended meanwhile: the next one aims at it.
            Err(_) if !self.migrating.load(Ordering::SeqCst) => Ok(()),
            Err(err) => Err(engine_error(err)),
        }
    }

    async fn set_bandwidth(&self, _mib: u64) -> Result<(), EngineError> {
        Err(EngineError {
            kind: EngineErrorKind::Unsupported,
            message: "a native guest has no migration bandwidth limit of its own: migrate \
                      --bandwidth sets one for that migration"
                .to_string(),
        })
    }

    async fn power_button(&self) -> Result<(), EngineError> {
        self.client.power_button().await.map_err(engine_error)
    }

    async fn reset(&self) -> Result<(), EngineError> {
        Err(engine_error(NativeError::ResetUnsupported))
    }

    async fn quit(&self) -> Result<(), EngineError> {
        self.client.stop().await.map_err(engine_error)
    }

    async fn vcpu_threads(&self) -> Result<Vec<u32>, EngineError> {
        let pid = oxvirt_native::read_pid_file(&self.run).ok_or_else(|| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("no VMM pid in {}", self.run.pid_file().display()),
        })?;
        let threads = oxvirt_native::vcpu_threads(pid);
        if threads.is_empty() {
            return Err(EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("the VMM (pid {pid}) has no vCPU threads"),
            });
        }
        Ok(threads)
    }

    async fn set_balloon(&self, target_kib: u64) -> Result<(), EngineError> {
        self.client
            .set_balloon(target_kib)
            .await
            .map_err(engine_error)
    }

    async fn memory_stats(&self) -> Result<MemoryStats, EngineError> {
        self.client
            .balloon_stats()
            .await
            .map(memory_stats_of)
            .map_err(engine_error)
    }

    async fn set_memory_stats_period(&self, seconds: u32) -> Result<(), EngineError> {
        self.client
            .set_balloon_stats_period(seconds)
            .await
            .map_err(engine_error)
    }

    async fn block_stats(&self) -> Result<Vec<BlockStats>, EngineError> {
        self.client
            .block_stats()
            .await
            .map(block_stats_of)
            .map_err(engine_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_vm_becomes_these_events() {
        assert_eq!(
            events_of(&VmEnd::PoweredOff { by_guest: true }),
            vec![EngineEvent::Shutdown { guest: true }]
        );
        assert_eq!(
            events_of(&VmEnd::PoweredOff { by_guest: false }),
            vec![EngineEvent::Shutdown { guest: false }]
        );
        assert_eq!(events_of(&VmEnd::Rebooted), vec![EngineEvent::Rebooted]);
        assert_eq!(
            events_of(&VmEnd::Crashed {
                reason: "killed by signal 9".into()
            }),
            vec![]
        );
    }

    #[test]
    fn a_balloon_report_becomes_memory_stats() {
        let report = oxvirt_native::BalloonReport {
            actual_kib: 131072,
            target_kib: 131072,
            stats_period_s: 0,
            // In the order the guest sent them, which is not libvirt's.
            guest: vec![
                ("disk_caches".to_string(), 300),
                ("available".to_string(), 2000),
                ("something_new".to_string(), 1),
                ("unused".to_string(), 1000),
                ("swap_in".to_string(), 0),
            ],
            last_update: Some(1_780_000_000),
        };
        assert_eq!(
            memory_stats_of(report),
            MemoryStats {
                actual_kib: 131072,
                guest: vec![
                    ("swap_in", 0),
                    ("unused", 1000),
                    ("available", 2000),
                    ("last_update", 1_780_000_000),
                    ("disk_caches", 300),
                ],
            }
        );
    }

    #[test]
    fn disk_counters_go_under_their_targets() {
        use oxvirt_native::{BlockStats as Counters, DiskStats, RequestStats};
        let kind = |requests, bytes, total_ns| RequestStats {
            requests,
            bytes,
            total_ns,
        };
        let vda = DiskStats {
            index: 0,
            id: Some("vda".into()),
            counters: Counters {
                read: kind(1, 2, 3),
                write: kind(4, 5, 6),
                flush: kind(7, 0, 8),
            },
        };
        let unnamed = DiskStats {
            index: 1,
            ..Default::default()
        };
        let stats = block_stats_of(vec![vda, unnamed]);
        assert_eq!(stats.len(), 1, "{stats:?}");
        let s = &stats[0];
        assert_eq!(s.target, "vda");
        // virsh's order: rd_req rd_bytes wr_req wr_bytes flush_operations, then the times.
        let values = [
            s.rd_req,
            s.rd_bytes,
            s.wr_req,
            s.wr_bytes,
            s.flush_operations,
        ];
        assert_eq!(values, [1, 2, 4, 5, 7]);
        let times = [s.rd_total_times, s.wr_total_times, s.flush_total_times];
        assert_eq!(times, [3, 6, 8]);
    }

    #[test]
    fn refusals_are_unsupported_and_failures_failed() {
        let no_kvm = engine_error(NativeError::NoHardwareKvm {
            reason: "kvm_pvm is loaded".into(),
        });
        assert_eq!(no_kvm.kind, EngineErrorKind::Unsupported);
        assert!(
            no_kvm.message.contains("needs hardware KVM"),
            "{}",
            no_kvm.message
        );
        assert_eq!(
            engine_error(NativeError::ResetUnsupported).kind,
            EngineErrorKind::Unsupported
        );
        assert_eq!(
            engine_error(NativeError::NoTap { index: 0 }).kind,
            EngineErrorKind::Failed
        );
        assert_eq!(
            engine_error(NativeError::EarlyExit {
                message: "x".into()
            })
            .kind,
            EngineErrorKind::Failed
        );
    }
}
