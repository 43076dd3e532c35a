//! [`Engine`] on top of `oxvirt-qemu`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::{Domain, DomainType};
use oxvirt_qemu::{throttle, QemuError, Qmp, QmpEvent, QmpEventMessage, RunPaths, RunState};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    AccelPlan, BlockStats, ConsolePaths, Control, DiskOverlay, DiskSecret, DisplayListen, Engine,
    EngineError, EngineErrorKind, EngineEvent, Events, GuestStatus, Incoming, IoThreadState,
    IoTune, MemoryStats, MigrationProgress, NicPlug, SnapshotJob, StateFile, VcpuSlotState,
};

pub struct QemuEngine {
    version: Option<String>,
    probe: oxvirt_qemu::AccelProbe,
    /// Where UEFI guests' NVRAM files live (`STATE_DIR/nvram/UUID_VARS.fd`): unlike the run
    /// directory, it outlives a start.
    nvram_dir: PathBuf,
    /// Writes each guest's qemu.log and console.log, rotated (guest_log_max_size/-backups).
    log_writer: oxvirt_qemu::WriterProgram,
    /// Whether each QEMU runs confined (`oxvirt_qemu::confine`; off: `oxvirtd --no-sandbox`).
    sandbox: bool,
}

impl QemuEngine {
    /// Probes the host once: the emulator's version and whether hardware KVM is usable.
    pub async fn probe(
        nvram_dir: PathBuf,
        log_writer: oxvirt_qemu::WriterProgram,
        sandbox: bool,
    ) -> QemuEngine {
        QemuEngine {
            version: emulator_version().await,
            probe: oxvirt_qemu::probe_accel(),
            nvram_dir,
            log_writer,
            sandbox,
        }
    }
}

/// "7.2.22" from `qemu-system-x86_64 --version` ("QEMU emulator version 7.2.22 (Debian ...)").
async fn emulator_version() -> Option<String> {
    let output = tokio::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<String> {
    let rest = text.split("version ").nth(1)?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

fn engine_error(err: QemuError) -> EngineError {
    let kind = match err {
        QemuError::Unsupported { .. } => EngineErrorKind::Unsupported,
        QemuError::Invalid { .. } => EngineErrorKind::Invalid,
        _ => EngineErrorKind::Failed,
    };
    EngineError {
        kind,
        message: err.to_string(),
    }
}

#[async_trait]
impl Engine for QemuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Qemu
    }

    fn version(&self) -> Option<String> {
        self.version.clone()
    }

    /// A dry run of the command line a start builds, so a define refuses what a start would,
    /// naming the element and its line (host-dependent checks stay at start).
    fn check_definition(&self, domain: &Domain) -> Result<(), EngineError> {
        oxvirt_qemu::check(domain).map_err(engine_error)
    }

    /// `<hugepages/>`: the host's pool must hold all of the guest's memory, or QEMU would die
    /// while preallocating it; the refusal names the page size and both counts.
    fn check_host(&self, domain: &Domain) -> Result<(), EngineError> {
        oxvirt_qemu::check_hugepages(domain).map_err(engine_error)
    }

    fn plan_accel(&self, domain: &Domain) -> AccelPlan {
        match domain.domain_type {
            // <domain type='qemu'> asks for emulation.
            DomainType::Qemu => AccelPlan {
                accel: Accel::Tcg,
                warnings: Vec::new(),
            },
            DomainType::Kvm => match self.probe.accel {
                oxvirt_qemu::Accel::Kvm => AccelPlan {
                    accel: Accel::Kvm,
                    warnings: Vec::new(),
                },
                oxvirt_qemu::Accel::Tcg => AccelPlan {
                    accel: Accel::Tcg,
                    warnings: vec![format!(
                        "TCG: no hardware KVM here ({})",
                        self.probe
                            .reason
                            .strip_suffix(": using TCG")
                            .unwrap_or(&self.probe.reason)
                    )],
                },
            },
        }
    }

    /// The NVRAM made for a UEFI guest that named none (a path the definition gives is the
    /// operator's file and stays, as with libvirt's `undefine --keep-nvram`).
    /// QEMU's `snapshot-save`/`snapshot-load` jobs work on the images it holds open.
    fn live_internal_snapshots(&self, _domain: &Domain) -> bool {
        true
    }

    /// UEFI: the firmware the host's descriptors offer, and the domain's NVRAM (made from its
    /// template the first time).
    fn resolve_files(&self, domain: &mut Domain) -> Result<(), EngineError> {
        let descriptor_dirs: Vec<&Path> = oxvirt_qemu::firmware::FIRMWARE_DESCRIPTOR_DIRS
            .iter()
            .map(Path::new)
            .collect();
        oxvirt_qemu::firmware::resolve_uefi(domain, &descriptor_dirs, &self.nvram_dir)
            .map_err(engine_error)
    }

    /// A sandboxed QEMU runs as a guest user (`qemu_user_range`), reaching only the files
    /// given to it; as root (still sandboxed) when it needs what only root may open
    /// ([`oxvirt_qemu::confine::needs_root`]).
    fn runs_as_guest_user(&self, domain: &Domain) -> bool {
        if !self.sandbox {
            return false;
        }
        match oxvirt_qemu::confine::needs_root(domain) {
            None => true,
            Some(reason) => {
                tracing::info!(domain = %domain.name, "QEMU runs as root, sandboxed: {reason}");
                false
            }
        }
    }

    fn nvram_file(&self, uuid: &Uuid) -> Option<PathBuf> {
        let path = oxvirt_qemu::firmware::nvram_file(&self.nvram_dir, uuid);
        path.is_file().then_some(path)
    }

    fn forget_domain(&self, uuid: &Uuid, keep_nvram: bool) {
        if keep_nvram {
            return;
        }
        let path = oxvirt_qemu::firmware::nvram_file(&self.nvram_dir, uuid);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("removed NVRAM {}", path.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!("cannot remove NVRAM {}: {err}", path.display()),
        }
    }

    fn after_exit(&self, run_dir: &Path) {
        oxvirt_qemu::after_exit(&RunPaths::new(run_dir));
    }

    /// Each secret goes to the file QEMU's `secret` object of that disk reads
    /// (`RunPaths::disk_secret_file`), created with mode 0600. The files are removed once QEMU
    /// runs ([`Engine::launch`]): it read them while starting.
    fn write_disk_secrets(
        &self,
        _domain: &Domain,
        run_dir: &Path,
        secrets: &[DiskSecret],
    ) -> Result<(), EngineError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let run = RunPaths::new(run_dir);
        for secret in secrets {
            let path = run.disk_secret_file(&secret.dev);
            // A file left by an earlier start is replaced, never appended to or followed.
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(&secret.value))
                .map_err(|err| EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!("cannot write {}: {err}", path.display()),
                })?;
        }
        Ok(())
    }

    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        accel: Accel,
        incoming: Option<Incoming<'_>>,
        user: Option<u32>,
    ) -> Result<u32, EngineError> {
        let pass_on = |fd: std::os::fd::BorrowedFd<'_>, what: &str| {
            fd.try_clone_to_owned().map_err(|err| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("cannot pass the {what} on: {err}"),
            })
        };
        let mut nbd_exports = None;
        let postcopy = matches!(incoming, Some(Incoming::StreamPostcopy(_)));
        let incoming = incoming
            .map(|incoming| match incoming {
                Incoming::Saved(state) => open_state_file(state, false),
                // QEMU reads the connection as it reads a file (`migrate-incoming fd:`).
                Incoming::Stream(fd) | Incoming::StreamPostcopy(fd) => {
                    pass_on(fd, "migration stream").map(std::fs::File::from)
                }
                Incoming::StreamCopyingDisks(fd, serve) => {
                    nbd_exports = Some(oxvirt_qemu::NbdExports {
                        listener: pass_on(serve.listener, "NBD listening socket")?,
                        disks: serve.disks.to_vec(),
                        ready: Some(serve.ready),
                    });
                    pass_on(fd, "migration stream").map(std::fs::File::from)
                }
            })
            .transpose()?;
        let accel = match accel {
            Accel::Kvm => oxvirt_qemu::Accel::Kvm,
            Accel::Tcg => oxvirt_qemu::Accel::Tcg,
        };
        let run = RunPaths::new(run_dir);
        let mut domain = domain.clone();
        self.resolve_files(&mut domain)?;
        let domain = &domain;
        let options = oxvirt_qemu::LaunchOptions {
            writer: Some(&self.log_writer),
            incoming,
            nbd_exports,
            postcopy,
            sandbox: self.sandbox,
            user,
        };
        let launched = oxvirt_qemu::launch_with(domain, &run, accel, options).await;
        // QEMU read its disks' secrets while starting (or failed to start): none stays on disk.
        for disk in &domain.devices.disks {
            if disk.auth.is_some() {
                let _ = std::fs::remove_file(run.disk_secret_file(&disk.target.dev));
            }
        }
        let launched = launched.map_err(engine_error)?;
        for warning in &launched.warnings {
            tracing::warn!(domain = %domain.name, "{warning}");
        }
        u32::try_from(launched.pid).map_err(|_| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("QEMU reported an invalid pid {}", launched.pid),
        })
    }

    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool {
        match i32::try_from(pid) {
            Ok(pid) => oxvirt_qemu::is_alive(pid, uuid).await,
            Err(_) => false,
        }
    }

    fn recorded_pid(&self, run_dir: &Path) -> Option<u32> {
        oxvirt_qemu::read_pid_file(&RunPaths::new(run_dir)).and_then(|pid| u32::try_from(pid).ok())
    }

    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError> {
        let socket = RunPaths::new(run_dir).qmp_socket();
        let (qmp, mut qmp_events) = Qmp::connect(&socket).await.map_err(engine_error)?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        // Translate QMP events; this task ends with the QMP connection. Every event also goes
        // on whole (its name, timestamp and data) for the event stream (services/events.rs).
        tokio::spawn(async move {
            while let Some(message) = qmp_events.recv().await {
                let whole = EngineEvent::Monitor(monitor_event(&message));
                let event = match message.event {
                    QmpEvent::Shutdown { guest, .. } => Some(EngineEvent::Shutdown { guest }),
                    QmpEvent::Reset { .. } => Some(EngineEvent::Reset),
                    QmpEvent::Stop => Some(EngineEvent::Stop),
                    QmpEvent::Resume => Some(EngineEvent::Resume),
                    QmpEvent::GuestPanicked => Some(EngineEvent::Panicked),
                    QmpEvent::Other { name, .. } => {
                        tracing::debug!("QMP event {name}");
                        None
                    }
                };
                if events_tx.send(whole).is_err()
                    || event.is_some_and(|event| events_tx.send(event).is_err())
                {
                    break;
                }
            }
        });
        Ok((
            Arc::new(QmpControl {
                qmp,
                unplug_marker: run_dir.join(TCG_VCPU_UNPLUGGED),
                qemu_dir: RunPaths::new(run_dir).qemu_dir(),
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

/// A QMP event as the event stream carries it: its data compact, in QEMU's member order, as
/// libvirt passes it on.
fn monitor_event(message: &QmpEventMessage) -> oxvirt_api::MonitorEvent {
    oxvirt_api::MonitorEvent {
        event: message.name.clone(),
        seconds: message.seconds,
        microseconds: u32::try_from(message.microseconds).unwrap_or(0),
        data: oxvirt_api::json_text::top_level_member(&message.line, "data")
            .map(oxvirt_api::json_text::compact),
    }
}

/// The state file, open for QEMU to read (`write`: to write) and positioned where the engine's
/// stream starts.
fn open_state_file(state: &StateFile, write: bool) -> Result<std::fs::File, EngineError> {
    use std::io::{Seek as _, SeekFrom};
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(&state.path)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(state.offset))?;
            Ok(file)
        })
        .map_err(|err| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("cannot open {}: {err}", state.path.display()),
        })
}

struct QmpControl {
    qmp: Qmp,
    /// RUN/[`TCG_VCPU_UNPLUGGED`]: present once a vCPU was unplugged from a QEMU that then
    /// crashes on its next `device_add`.
    unplug_marker: PathBuf,
    /// RUN/qemu ([`RunPaths::qemu_dir`]): owned by the user QEMU runs as.
    qemu_dir: PathBuf,
}

impl QmpControl {
    /// Runs the QMP command `run`; when it fails, `undo` (whose own failure is moot: the first
    /// error is the one to report), so that nothing half-done stays in QEMU.
    async fn execute_or_undo(
        &self,
        run: (&str, serde_json::Value),
        undo: (&str, serde_json::Value),
    ) -> Result<(), EngineError> {
        if let Err(err) = self.qmp.execute(run.0, Some(run.1)).await {
            let _ = self.qmp.execute(undo.0, Some(undo.1)).await;
            return Err(engine_error(err));
        }
        Ok(())
    }
}

/// The marker, in the guest's run directory, that a vCPU was unplugged from its QEMU 7 under
/// TCG. Debian 12's QEMU 7.2 under TCG crashes (SIGSEGV) on the next `device_add`, of any
/// device, after a vCPU unplug; libvirt's QEMU does too (found by benches/live.sh). oxvirt refuses
/// those hot-plugs instead of losing the guest. A file, not a flag in memory, so that it outlives
/// an oxvirtd restart; the run directory, and the marker with it, goes when the QEMU process ends.
const TCG_VCPU_UNPLUGGED: &str = "tcg-vcpu-unplugged";

/// How long a snapshot job (`snapshot-save`, `-load`, `-delete`) may take: it writes or reads
/// the guest's whole memory, which under TCG and on slow disks takes a while.
const SNAPSHOT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a running job's state is asked for.
const JOB_POLL: Duration = Duration::from_millis(50);

/// Whether `qdev` (from `query-block`) is the device oxvirt gave id `dev`: QEMU names a
/// virtio disk by its QOM path (`/machine/peripheral/vda/virtio-backend`), others by id.
fn qdev_is(qdev: &str, dev: &str) -> bool {
    let peripheral = format!("/machine/peripheral/{dev}");
    qdev == dev || qdev == peripheral || qdev.starts_with(&format!("{peripheral}/"))
}

impl QmpControl {
    /// Whether this QEMU crashes on a `device_add` after a vCPU unplug: QEMU 7 (seen with 7.2)
    /// under TCG. Newer versions have not been tried here.
    async fn crashes_on_device_add_after_vcpu_unplug(&self) -> Result<bool, EngineError> {
        let kvm = self
            .qmp
            .execute("query-kvm", None)
            .await
            .map_err(engine_error)?;
        if kvm.get("enabled").and_then(serde_json::Value::as_bool) == Some(true) {
            return Ok(false);
        }
        let version = self
            .qmp
            .execute("query-version", None)
            .await
            .map_err(engine_error)?;
        let major = version
            .pointer("/qemu/major")
            .and_then(serde_json::Value::as_u64);
        Ok(major.is_some_and(|major| major <= 7))
    }

    /// Leaves [`TCG_VCPU_UNPLUGGED`] before a vCPU unplug of a QEMU that crashes on the next
    /// `device_add` (before, so that a failed or slow unplug is covered too).
    async fn note_vcpu_unplug(&self) {
        match self.crashes_on_device_add_after_vcpu_unplug().await {
            Ok(false) => {}
            Ok(true) => {
                if let Err(err) = std::fs::write(&self.unplug_marker, b"") {
                    tracing::warn!(path = %self.unplug_marker.display(), "cannot leave the vCPU unplug marker: {err}");
                }
            }
            Err(err) => tracing::warn!(
                "cannot tell whether QEMU survives a hot-plug after a vCPU unplug: {}",
                err.message
            ),
        }
    }

    fn refuse_device_add_after_vcpu_unplug(&self, what: &str) -> Result<(), EngineError> {
        if self.unplug_marker.exists() {
            return Err(EngineError {
                kind: EngineErrorKind::Unsupported,
                message: format!(
                    "cannot hot-plug {what}: a vCPU was unplugged from this guest, and its QEMU (7.x under TCG) crashes on the next device_add after that; restart the guest first"
                ),
            });
        }
        Ok(())
    }

    /// The node QEMU reads and writes disk `dev` through now: the top of its chain (an
    /// external snapshot puts an overlay above the node the command line made).
    async fn top_node(&self, dev: &str) -> Result<String, EngineError> {
        let blocks = self
            .qmp
            .execute("query-block", None)
            .await
            .map_err(engine_error)?;
        blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|block| block["qdev"].as_str().is_some_and(|q| qdev_is(q, dev)))
            .and_then(|block| block["inserted"]["node-name"].as_str())
            .map(str::to_string)
            .ok_or_else(|| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("QEMU reports no medium in disk {dev}"),
            })
    }

    async fn top_nodes(&self, disks: &[String]) -> Result<Vec<String>, EngineError> {
        let mut nodes = Vec::with_capacity(disks.len());
        for dev in disks {
            nodes.push(self.top_node(dev).await?);
        }
        Ok(nodes)
    }

    /// Jobs an earlier oxvirtd started and never saw end (it was killed meanwhile): concluded
    /// ones are dismissed; one still running means QEMU is busy with it, said as such.
    async fn dismiss_leftover_jobs(&self) -> Result<(), EngineError> {
        let jobs = self
            .qmp
            .execute("query-jobs", None)
            .await
            .map_err(engine_error)?;
        for job in jobs.as_array().into_iter().flatten() {
            let Some(id) = job["id"].as_str().filter(|id| id.starts_with("oxvirt-")) else {
                continue;
            };
            if job["status"] == "concluded" {
                tracing::warn!(job = %id, error = ?job["error"].as_str(), "dismissing a job an earlier oxvirtd left behind");
                let _ = self
                    .qmp
                    .execute("job-dismiss", Some(serde_json::json!({ "id": id })))
                    .await;
            } else {
                return Err(EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!(
                        "QEMU still runs job {id}, which an earlier oxvirtd started; try again when it ends"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs a job command to its end and dismisses it; its error is QEMU's own words.
    async fn run_job(
        &self,
        command: &str,
        mut arguments: serde_json::Value,
    ) -> Result<(), EngineError> {
        static NEXT_JOB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.dismiss_leftover_jobs().await?;
        // The daemon's pid in the id: QEMU outlives a restarted oxvirtd, whose counter starts
        // over, and a job id must be new to QEMU.
        let job = format!(
            "oxvirt-{command}-{}-{}",
            std::process::id(),
            NEXT_JOB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        arguments["job-id"] = serde_json::json!(job);
        // QEMU may run the whole job before it answers the command (snapshot-save does).
        tracing::info!(job = %job, "starting QEMU job");
        self.qmp
            .execute(command, Some(arguments))
            .await
            .map_err(engine_error)?;
        let deadline = tokio::time::Instant::now() + SNAPSHOT_JOB_TIMEOUT;
        loop {
            let jobs = self
                .qmp
                .execute("query-jobs", None)
                .await
                .map_err(engine_error)?;
            let this = jobs
                .as_array()
                .into_iter()
                .flatten()
                .find(|j| j["id"] == job.as_str())
                .cloned();
            let Some(this) = this else {
                return Err(EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!("QEMU lost job {job} ({command})"),
                });
            };
            if this["status"] == "concluded" {
                let _ = self
                    .qmp
                    .execute("job-dismiss", Some(serde_json::json!({ "id": job })))
                    .await;
                return match this["error"].as_str() {
                    Some(error) => Err(EngineError {
                        kind: EngineErrorKind::Failed,
                        message: format!("{command}: {error}"),
                    }),
                    None => Ok(()),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!(
                        "{command} did not finish in {} s",
                        SNAPSHOT_JOB_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(JOB_POLL).await;
        }
    }
}

#[async_trait]
impl Control for QmpControl {
    async fn status(&self) -> Result<GuestStatus, EngineError> {
        let state = self.qmp.query_status().await.map_err(engine_error)?;
        Ok(match state {
            RunState::Running => GuestStatus::Running,
            // Paused either way: a guest whose migration's destination did not take it is
            // resumed from there (services/migration.rs).
            RunState::Paused | RunState::PostMigrate => GuestStatus::Paused,
            RunState::Prelaunch => GuestStatus::NotStarted,
            RunState::Shutdown => GuestStatus::ShutDown,
            RunState::GuestPanicked => GuestStatus::Panicked,
            other => GuestStatus::Other(format!("{other:?}").to_lowercase()),
        })
    }

    async fn pause(&self) -> Result<(), EngineError> {
        self.qmp.stop().await.map_err(engine_error)
    }

    async fn resume(&self) -> Result<(), EngineError> {
        self.qmp.cont().await.map_err(engine_error)
    }

    async fn power_button(&self) -> Result<(), EngineError> {
        self.qmp.system_powerdown().await.map_err(engine_error)
    }

    async fn reset(&self) -> Result<(), EngineError> {
        self.qmp.system_reset().await.map_err(engine_error)
    }

    async fn quit(&self) -> Result<(), EngineError> {
        self.qmp.quit().await.map_err(engine_error)
    }

    async fn snapshot_job(
        &self,
        job: SnapshotJob,
        tag: &str,
        vmstate: &str,
        disks: &[String],
    ) -> Result<(), EngineError> {
        let command = match job {
            SnapshotJob::Save => "snapshot-save",
            SnapshotJob::Load => {
                // The job resumes a guest that ran before it; the caller decides that.
                self.qmp.stop().await.map_err(engine_error)?;
                "snapshot-load"
            }
        };
        let arguments = serde_json::json!({
            "tag": tag,
            "vmstate": self.top_node(vmstate).await?,
            "devices": self.top_nodes(disks).await?,
        });
        self.run_job(command, arguments).await
    }

    async fn snapshot_delete(&self, tag: &str, disks: &[String]) -> Result<(), EngineError> {
        // No job when no disk holds the tag (the common case of a create clearing leftovers).
        let blocks = self
            .qmp
            .execute("query-block", None)
            .await
            .map_err(engine_error)?;
        let holds_tag = blocks.as_array().into_iter().flatten().any(|block| {
            block["qdev"]
                .as_str()
                .is_some_and(|q| disks.iter().any(|dev| qdev_is(q, dev)))
                && block["inserted"]["image"]["snapshots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|snapshot| snapshot["name"] == tag)
        });
        if !holds_tag {
            return Ok(());
        }
        let arguments = serde_json::json!({
            "tag": tag,
            "devices": self.top_nodes(disks).await?,
        });
        self.run_job("snapshot-delete", arguments).await
    }

    async fn add_overlays(&self, overlays: &[DiskOverlay]) -> Result<(), EngineError> {
        static NEXT_OVERLAY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut added: Vec<String> = Vec::new();
        let mut actions = Vec::new();
        let result = async {
            for overlay in overlays {
                let top = self.top_node(&overlay.dev).await?;
                let filename = overlay.overlay.to_str().ok_or_else(|| EngineError {
                    kind: EngineErrorKind::Invalid,
                    message: format!("overlay path {} is not UTF-8", overlay.overlay.display()),
                })?;
                let node = format!(
                    "ovl-{}-{}",
                    overlay.dev,
                    NEXT_OVERLAY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                // No backing yet: blockdev-snapshot attaches the current top as its backing.
                oxvirt_qemu::blockdev_add(
                    &self.qmp,
                    serde_json::json!({
                        "driver": "qcow2",
                        "node-name": node,
                        "file": { "driver": "file", "filename": filename },
                        "backing": null,
                    }),
                )
                .await
                .map_err(engine_error)?;
                added.push(node.clone());
                actions.push(serde_json::json!({
                    "type": "blockdev-snapshot",
                    "data": { "node": top, "overlay": node },
                }));
            }
            // One transaction: every disk switches at the same instant, or none does.
            self.qmp
                .execute(
                    "transaction",
                    Some(serde_json::json!({ "actions": actions })),
                )
                .await
                .map_err(engine_error)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            for node in added {
                let _ = self
                    .qmp
                    .execute(
                        "blockdev-del",
                        Some(serde_json::json!({ "node-name": node })),
                    )
                    .await;
            }
        }
        result
    }

    async fn save_state(&self, state: &StateFile) -> Result<(), EngineError> {
        let file = open_state_file(state, true)?;
        oxvirt_qemu::save_state(&self.qmp, &file)
            .await
            .map_err(engine_error)
    }

    async fn migrate_out(
        &self,
        stream: std::os::fd::BorrowedFd<'_>,
        bandwidth_mib: Option<u64>,
    ) -> Result<(), EngineError> {
        oxvirt_qemu::migrate_to_stream(&self.qmp, stream, bandwidth_mib)
            .await
            .map_err(engine_error)
    }

    async fn migration_progress(&self) -> Result<MigrationProgress, EngineError> {
        oxvirt_qemu::migration_stats(&self.qmp)
            .await
            .map_err(engine_error)
    }

    async fn migration_parameters(&self) -> Result<(u64, u64), EngineError> {
        oxvirt_qemu::migration_parameters(&self.qmp)
            .await
            .map_err(engine_error)
    }

    async fn set_max_downtime(&self, milliseconds: u64) -> Result<(), EngineError> {
        oxvirt_qemu::set_max_downtime(&self.qmp, milliseconds)
            .await
            .map_err(engine_error)
    }

    async fn set_bandwidth(&self, mib: u64) -> Result<(), EngineError> {
        oxvirt_qemu::set_bandwidth(&self.qmp, mib)
            .await
            .map_err(engine_error)
    }

    async fn set_migration_capabilities(
        &self,
        capabilities: &[(&str, bool)],
    ) -> Result<(), EngineError> {
        let list: Vec<serde_json::Value> = capabilities
            .iter()
            .map(|(name, on)| serde_json::json!({ "capability": name, "state": on }))
            .collect();
        self.qmp
            .execute(
                "migrate-set-capabilities",
                Some(serde_json::json!({ "capabilities": list })),
            )
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn migrate_cancel(&self) -> Result<(), EngineError> {
        self.qmp
            .execute("migrate_cancel", None)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    async fn start_postcopy(&self) -> Result<(), EngineError> {
        oxvirt_qemu::start_postcopy(&self.qmp)
            .await
            .map_err(engine_error)
    }

    async fn copy_disk(
        &self,
        dev: &str,
        connection: std::os::fd::BorrowedFd<'_>,
        shallow: bool,
    ) -> Result<(), EngineError> {
        let node = self.top_node(dev).await?;
        oxvirt_qemu::mirror_to_nbd(&self.qmp, dev, &node, connection, shallow)
            .await
            .map_err(engine_error)
    }

    async fn disk_copies(&self) -> Result<Vec<super::DiskCopyProgress>, EngineError> {
        oxvirt_qemu::mirrors(&self.qmp).await.map_err(engine_error)
    }

    async fn end_disk_copies(&self, devs: &[String]) -> Result<(), EngineError> {
        oxvirt_qemu::end_mirrors(&self.qmp, devs)
            .await
            .map_err(engine_error)
    }

    async fn stop_serving_disks(&self) -> Result<(), EngineError> {
        oxvirt_qemu::stop_nbd_server(&self.qmp)
            .await
            .map_err(engine_error)
    }

    async fn plug_nic(&self, nic: &NicPlug) -> Result<(), EngineError> {
        self.refuse_device_add_after_vcpu_unplug("a NIC")?;
        let driver = oxvirt_qemu::nic_driver(&nic.model).ok_or_else(|| EngineError {
            kind: EngineErrorKind::Unsupported,
            message: format!("NIC model '{}' is not supported", nic.model),
        })?;
        // Opened here and handed over (QMP getfd), as at start: a confined QEMU has no
        // /dev/net/tun. The TAP is given to the user QEMU runs as (its directory's owner).
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&self.qemu_dir).map_err(|err| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("cannot read {}: {err}", self.qemu_dir.display()),
            })?,
        );
        let tap_error = |reason: String| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("cannot open TAP device '{}': {reason}", nic.tap),
        };
        let tap = oxvirt_net::tap::open_tap(&nic.tap, 1, Some(owner))
            .map_err(|err| tap_error(err.to_string()))?
            .pop()
            .ok_or_else(|| tap_error("no descriptor for its queue".into()))?;
        self.qmp
            .pass_fd(&nic.netdev_id, tap.as_fd())
            .await
            .map_err(engine_error)?;
        let netdev = serde_json::json!({
            "type": "tap",
            "id": nic.netdev_id,
            "fd": nic.netdev_id,
        });
        // The named descriptor is QEMU's until a netdev takes it: close it there on failure.
        self.execute_or_undo(
            ("netdev_add", netdev),
            ("closefd", serde_json::json!({ "fdname": nic.netdev_id })),
        )
        .await?;
        let mut device = serde_json::json!({
            "driver": driver,
            "netdev": nic.netdev_id,
            "id": nic.device_id,
            "mac": nic.mac,
        });
        if let Some(slot) = nic.pci_slot {
            device["bus"] = serde_json::json!("pci.0");
            device["addr"] = serde_json::json!(format!("{slot:#x}"));
        }
        // Leave no half-plugged backend behind.
        self.execute_or_undo(
            ("device_add", device),
            ("netdev_del", serde_json::json!({ "id": nic.netdev_id })),
        )
        .await
    }

    async fn block_size(&self, dev: &str) -> Result<u64, EngineError> {
        let node = self.top_node(dev).await?;
        let nodes = self
            .qmp
            .execute(
                "query-named-block-nodes",
                Some(serde_json::json!({ "flat": true })),
            )
            .await
            .map_err(engine_error)?;
        nodes
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["node-name"] == node.as_str()))
            .and_then(|n| n["image"]["virtual-size"].as_u64())
            .ok_or_else(|| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("QEMU does not report block node {node} (disk {dev})"),
            })
    }

    async fn block_resize(&self, dev: &str, size: u64) -> Result<(), EngineError> {
        self.qmp
            .execute(
                "block_resize",
                Some(serde_json::json!({ "node-name": self.top_node(dev).await?, "size": size })),
            )
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    /// QEMU's own answer (`query-vnc`, `query-spice`): the port an automatic display got.
    async fn displays(&self) -> Result<Vec<DisplayListen>, EngineError> {
        let mut displays = Vec::new();
        // A QEMU without that display answers with an error or `enabled: false`.
        if let Ok(vnc) = self.qmp.execute("query-vnc", None).await {
            let port = vnc["service"].as_str().and_then(|p| p.parse::<u16>().ok());
            if let (true, Some(host), Some(port)) =
                (vnc["enabled"] == true, vnc["host"].as_str(), port)
            {
                displays.push(DisplayListen {
                    protocol: "vnc",
                    host: host.to_string(),
                    port,
                    tls_port: None,
                });
            }
        }
        if let Ok(spice) = self.qmp.execute("query-spice", None).await {
            let port = spice["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            if let (true, Some(host), Some(port)) =
                (spice["enabled"] == true, spice["host"].as_str(), port)
            {
                displays.push(DisplayListen {
                    protocol: "spice",
                    host: host.to_string(),
                    port,
                    tls_port: spice["tls-port"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok()),
                });
            }
        }
        Ok(displays)
    }

    /// QMP `getfd` then `add_client`, as libvirt does. Each descriptor gets a name of its own:
    /// a second `getfd` under the same name would close the first before its `add_client`.
    async fn open_vnc(&self, client: std::os::fd::BorrowedFd<'_>) -> Result<(), EngineError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "oxvirt-vnc-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.qmp
            .pass_fd(&name, client)
            .await
            .map_err(engine_error)?;
        let added = self
            .qmp
            .execute(
                "add_client",
                Some(serde_json::json!({ "protocol": "vnc", "fdname": name, "skipauth": false })),
            )
            .await;
        if let Err(err) = added {
            // QEMU still holds the descriptor under its name.
            let _ = self
                .qmp
                .execute("closefd", Some(serde_json::json!({ "fdname": name })))
                .await;
            return Err(engine_error(err));
        }
        Ok(())
    }

    async fn screendump(&self, file: &Path, screen: u32) -> Result<(), EngineError> {
        let filename = file.to_str().ok_or_else(|| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("screenshot path {} is not UTF-8", file.display()),
        })?;
        let mut arguments = serde_json::json!({ "filename": filename, "format": "png" });
        if screen > 0 {
            // Heads of the primary video device (the only one libvirt numbers screens of).
            arguments["device"] = serde_json::json!("video0");
            arguments["head"] = serde_json::json!(screen);
        }
        self.qmp
            .execute("screendump", Some(arguments))
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    async fn vcpu_threads(&self) -> Result<Vec<u32>, EngineError> {
        let cpus = self
            .qmp
            .execute("query-cpus-fast", None)
            .await
            .map_err(engine_error)?;
        let mut threads: Vec<(u64, u32)> = cpus
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|cpu| {
                let index = cpu["cpu-index"].as_u64()?;
                let thread = u32::try_from(cpu["thread-id"].as_u64()?).ok()?;
                Some((index, thread))
            })
            .collect();
        threads.sort_unstable();
        Ok(threads.into_iter().map(|(_, thread)| thread).collect())
    }

    async fn iothreads(&self) -> Result<Vec<IoThreadState>, EngineError> {
        let threads = self
            .qmp
            .execute("query-iothreads", None)
            .await
            .map_err(engine_error)?;
        // Objects named otherwise are not the definition's (a user's object-add through
        // qemu-monitor-command): they are left out, as libvirt leaves them out.
        Ok(threads
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|thread| {
                let id = thread["id"].as_str()?;
                let id = id.strip_prefix("iothread")?.parse().ok()?;
                let thread = u32::try_from(thread["thread-id"].as_u64()?).ok()?;
                Some(IoThreadState { id, thread })
            })
            .collect())
    }

    async fn add_iothread(&self, id: u32) -> Result<(), EngineError> {
        self.qmp
            .execute("object-add", Some(oxvirt_qemu::iothread_object(id)))
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    async fn del_iothread(&self, id: u32) -> Result<(), EngineError> {
        self.qmp
            .execute(
                "object-del",
                Some(serde_json::json!({ "id": oxvirt_qemu::iothread_qom_id(id) })),
            )
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    async fn monitor_command(&self, command: &str, hmp: bool) -> Result<String, EngineError> {
        if hmp {
            // HMP's answer is text, errors included ("unknown command: ...").
            let answer = self
                .qmp
                .execute(
                    "human-monitor-command",
                    Some(serde_json::json!({ "command-line": command })),
                )
                .await
                .map_err(engine_error)?;
            return Ok(answer.as_str().unwrap_or_default().to_string());
        }
        let invalid = |message: String| EngineError {
            kind: EngineErrorKind::Invalid,
            message,
        };
        let request: serde_json::Value = serde_json::from_str(command)
            .map_err(|err| invalid(format!("the QMP command is not JSON: {err}")))?;
        let Some(name) = request.get("execute").and_then(serde_json::Value::as_str) else {
            return Err(invalid(
                "a QMP command is an object with \"execute\" (a command name) and, optionally, \"arguments\"; with --hmp, a human monitor command line"
                    .to_string(),
            ));
        };
        // Arguments of the wrong shape go to QEMU too: its refusal is the answer, as in libvirt.
        self.qmp
            .execute_verbatim(name, request.get("arguments").cloned())
            .await
            .map_err(engine_error)
    }

    async fn send_keys(&self, keys: &[u32], hold_ms: Option<u32>) -> Result<(), EngineError> {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|code| serde_json::json!({ "type": "number", "data": code }))
            .collect();
        let mut arguments = serde_json::json!({ "keys": keys });
        if let Some(hold) = hold_ms {
            arguments["hold-time"] = serde_json::json!(hold);
        }
        self.qmp
            .execute("send-key", Some(arguments))
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    /// As libvirt does with -blockdev: open the tray, take the medium out and delete its nodes,
    /// add the new medium's nodes and insert them, close the tray.
    async fn change_media(
        &self,
        dev: &str,
        medium: Option<&oxvirt_domain::Disk>,
        force: bool,
    ) -> Result<(), EngineError> {
        let new_nodes = medium
            .map(oxvirt_qemu::medium_blockdevs)
            .transpose()
            .map_err(engine_error)?;
        let id = serde_json::json!({ "id": dev });
        self.qmp
            .execute(
                "blockdev-open-tray",
                Some(serde_json::json!({ "id": dev, "force": force })),
            )
            .await
            .map_err(engine_error)?;
        // A guest that locked the tray is asked to eject; the tray opens when it agrees.
        let deadline = tokio::time::Instant::now() + TRAY_TIMEOUT;
        while !self.tray_open(dev).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!(
                        "the guest keeps the tray of {dev} locked (--force opens it anyway)"
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.qmp
            .execute("blockdev-remove-medium", Some(id.clone()))
            .await
            .map_err(engine_error)?;
        for node in oxvirt_qemu::medium_node_names(dev) {
            match self
                .qmp
                .execute(
                    "blockdev-del",
                    Some(serde_json::json!({ "node-name": node })),
                )
                .await
            {
                Ok(_) => {}
                // A node the drive never had (no copy-on-read filter, an empty tray).
                Err(QemuError::Command { class, .. }) if class == "GenericError" => {}
                Err(err) => return Err(engine_error(err)),
            }
        }
        if let Some(nodes) = new_nodes {
            for node in &nodes {
                oxvirt_qemu::blockdev_add(&self.qmp, node.clone())
                    .await
                    .map_err(engine_error)?;
            }
            let top = nodes
                .last()
                .and_then(|node| node["node-name"].as_str())
                .unwrap_or_default()
                .to_string();
            self.qmp
                .execute(
                    "blockdev-insert-medium",
                    Some(serde_json::json!({ "id": dev, "node-name": top })),
                )
                .await
                .map_err(engine_error)?;
        }
        self.qmp
            .execute("blockdev-close-tray", Some(id))
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    /// QMP `balloon` takes the guest's new size in bytes.
    async fn set_balloon(&self, target_kib: u64) -> Result<(), EngineError> {
        let bytes = target_kib.checked_mul(1024).ok_or_else(|| EngineError {
            kind: EngineErrorKind::Invalid,
            message: format!("{target_kib} KiB is more than QEMU can be asked for"),
        })?;
        self.qmp
            .execute("balloon", Some(serde_json::json!({ "value": bytes })))
            .await
            .map_err(balloon_error)?;
        Ok(())
    }

    /// `query-balloon` for the size, the balloon device's `guest-stats` property for the rest
    /// (libvirt's way: an error there, such as "guest hasn't updated any stats yet", leaves
    /// the size alone).
    async fn memory_stats(&self) -> Result<MemoryStats, EngineError> {
        let balloon = self
            .qmp
            .execute("query-balloon", None)
            .await
            .map_err(balloon_error)?;
        let actual = balloon["actual"].as_u64().ok_or_else(|| EngineError {
            kind: EngineErrorKind::Failed,
            message: format!("QEMU's query-balloon answer has no size: {balloon}"),
        })?;
        let guest = match self
            .qmp
            .execute(
                "qom-get",
                Some(serde_json::json!({
                    "path": oxvirt_qemu::BALLOON_QOM_PATH,
                    "property": "guest-stats",
                })),
            )
            .await
        {
            Ok(stats) => guest_memory_stats(&stats),
            Err(QemuError::Command { desc, .. }) => {
                tracing::debug!("no balloon statistics: {desc}");
                Vec::new()
            }
            Err(err) => return Err(engine_error(err)),
        };
        Ok(MemoryStats {
            actual_kib: actual / 1024,
            guest,
        })
    }

    async fn set_memory_stats_period(&self, seconds: u32) -> Result<(), EngineError> {
        self.qmp
            .execute(
                "qom-set",
                Some(serde_json::json!({
                    "path": oxvirt_qemu::BALLOON_QOM_PATH,
                    "property": "guest-stats-polling-interval",
                    "value": seconds,
                })),
            )
            .await
            .map_err(balloon_error)?;
        Ok(())
    }

    async fn vcpu_slots(&self) -> Result<Vec<VcpuSlotState>, EngineError> {
        Ok(self
            .hotpluggable_cpus()
            .await?
            .iter()
            .map(|cpu| {
                let path = cpu["qom-path"].as_str();
                VcpuSlotState {
                    online: path.is_some(),
                    hotplugged: path.is_some_and(|p| p.starts_with("/machine/peripheral/")),
                }
            })
            .collect())
    }

    /// `device_add` of the slot's CPU type at its socket/die/core/thread, with libvirt's id.
    async fn plug_vcpu(&self, id: u32) -> Result<(), EngineError> {
        self.refuse_device_add_after_vcpu_unplug("a vCPU")?;
        let cpus = self.hotpluggable_cpus().await?;
        let slot = cpus
            .get(id as usize)
            .ok_or_else(|| vcpu_failure(id, "QEMU has no such slot"))?;
        if slot.get("qom-path").is_some() {
            return Err(vcpu_failure(id, "it is online already"));
        }
        let mut device = slot["props"].clone();
        let Some(props) = device.as_object_mut() else {
            return Err(vcpu_failure(id, "QEMU reports no properties for its slot"));
        };
        // `node-id` comes from -numa and is not a property the device takes again.
        props.remove("node-id");
        props.insert("driver".to_string(), slot["type"].clone());
        props.insert("id".to_string(), serde_json::json!(vcpu_device_id(id)));
        self.qmp
            .execute("device_add", Some(device))
            .await
            .map_err(engine_error)?;
        Ok(())
    }

    /// `device_del`, then the slot is watched until QEMU reports it empty: that is when QEMU
    /// emitted DEVICE_DELETED (the guest ejected the CPU through ACPI).
    async fn unplug_vcpu(&self, id: u32) -> Result<(), EngineError> {
        self.note_vcpu_unplug().await;
        self.delete_if_present("device_del", &vcpu_device_id(id))
            .await?;
        let deadline = tokio::time::Instant::now() + VCPU_UNPLUG_TIMEOUT;
        loop {
            let cpus = self.hotpluggable_cpus().await?;
            if cpus
                .get(id as usize)
                .is_none_or(|cpu| cpu.get("qom-path").is_none())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(vcpu_failure(
                    id,
                    &format!(
                        "the guest did not release it within {} s (does it handle ACPI CPU hot-unplug?)",
                        VCPU_UNPLUG_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn unplug_nic(&self, device_id: &str, netdev_id: &str) -> Result<(), EngineError> {
        self.delete_device(device_id, "NIC").await?;
        self.delete_if_present("netdev_del", netdev_id).await
    }

    /// As libvirt with -blockdev: a SCSI disk's controller if the guest lacks it, then
    /// `blockdev-add` of each node (deepest first), then `device_add`; a failure deletes the
    /// nodes already added, newest first, and the controller if it came for this disk.
    async fn plug_disk(&self, domain: &Domain, dev: &str) -> Result<(), EngineError> {
        self.refuse_device_add_after_vcpu_unplug(&format!("disk {dev}"))?;
        let plug = oxvirt_qemu::hotplug_disk(domain, dev).map_err(engine_error)?;
        let controller = self.plug_disk_controller(&plug).await?;
        let result = self.plug_disk_nodes_and_device(&plug).await;
        if let (Err(_), Some(id)) = (&result, controller) {
            if let Err(err) = self.delete_device(&id, "SCSI controller").await {
                tracing::warn!(controller = %id, "cannot unplug the controller after a failed hot-plug: {err}");
            }
        }
        result
    }

    /// QEMU's own record: a device's `hotplugged` property is true when it came by device_add.
    async fn disk_hot_plugged(&self, dev: &str) -> Result<bool, EngineError> {
        let hotplugged = self
            .qmp
            .execute(
                "qom-get",
                Some(serde_json::json!({
                    "path": format!("/machine/peripheral/{dev}"),
                    "property": "hotplugged",
                })),
            )
            .await
            .map_err(engine_error)?;
        Ok(hotplugged.as_bool() == Some(true))
    }

    async fn unplug_disk(&self, dev: &str) -> Result<(), EngineError> {
        self.delete_device(dev, "disk").await?;
        // The disk's nodes (its format and protocol nodes, backing images, a copy-on-read
        // filter, external snapshots' overlays) all have names that start with its node's; a
        // node still used by another is deleted on a later pass, once that one is gone.
        let node = oxvirt_qemu::disk_node(dev);
        let listed = self
            .qmp
            .execute(
                "query-named-block-nodes",
                Some(serde_json::json!({ "flat": true })),
            )
            .await
            .map_err(engine_error)?;
        let mut left: Vec<String> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["node-name"].as_str())
            .filter(|name| *name == node || name.starts_with(&format!("{node}-")))
            .map(str::to_string)
            .collect();
        left.dedup();
        // The device lets go of its nodes a moment after it leaves the peripherals.
        let deadline = tokio::time::Instant::now() + UNPLUG_TIMEOUT;
        while !left.is_empty() {
            let before = left.len();
            let mut still = Vec::new();
            let mut last_error = String::new();
            for name in left {
                if let Err(err) = self
                    .qmp
                    .execute(
                        "blockdev-del",
                        Some(serde_json::json!({ "node-name": name })),
                    )
                    .await
                {
                    last_error = err.to_string();
                    still.push(name);
                }
            }
            if still.len() == before {
                if tokio::time::Instant::now() >= deadline {
                    return Err(EngineError {
                        kind: EngineErrorKind::Failed,
                        message: format!(
                            "disk {dev} was unplugged but its block nodes {} cannot be deleted: {last_error}",
                            still.join(", ")
                        ),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            left = still;
        }
        Ok(())
    }

    async fn block_stats(&self) -> Result<Vec<BlockStats>, EngineError> {
        let answer = self
            .qmp
            .execute("query-blockstats", None)
            .await
            .map_err(engine_error)?;
        let number = |stats: &serde_json::Value, key: &str| stats[key].as_u64().unwrap_or(0);
        Ok(answer
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                // A -blockdev disk is named by its device's QOM path.
                let qdev = entry["qdev"].as_str()?;
                let dev = qdev
                    .strip_prefix("/machine/peripheral/")
                    .unwrap_or(qdev)
                    .split('/')
                    .next()?
                    .to_string();
                let stats = &entry["stats"];
                Some(BlockStats {
                    target: dev,
                    rd_req: number(stats, "rd_operations"),
                    rd_bytes: number(stats, "rd_bytes"),
                    wr_req: number(stats, "wr_operations"),
                    wr_bytes: number(stats, "wr_bytes"),
                    flush_operations: number(stats, "flush_operations"),
                    rd_total_times: number(stats, "rd_total_time_ns"),
                    wr_total_times: number(stats, "wr_total_time_ns"),
                    flush_total_times: number(stats, "flush_total_time_ns"),
                })
            })
            .filter(|stats| !stats.target.is_empty())
            .collect())
    }

    async fn block_io_tune(&self, dev: &str) -> Result<IoTune, EngineError> {
        let block = self.block_of(dev).await?;
        Ok(throttle::io_tune_of(&block["inserted"]))
    }

    async fn set_block_io_tune(&self, dev: &str, tune: &IoTune) -> Result<(), EngineError> {
        // block_set_io_throttle names the device by the qdev QEMU reports for it (a virtio
        // disk's backend, below the PCI device oxvirt named `dev`).
        let block = self.block_of(dev).await?;
        let qdev = block["qdev"].as_str().unwrap_or(dev);
        self.qmp
            .execute(
                "block_set_io_throttle",
                Some(throttle::throttle_arguments(qdev, tune)),
            )
            .await
            .map_err(engine_error)?;
        Ok(())
    }
}

impl QmpControl {
    /// Hot-unplugs device `id` (`what`: its kind, for the error) and waits until the guest
    /// released it. device_del only asks the guest to release the device (ACPI or PCIe native
    /// eject); it is gone when QEMU no longer lists it among the peripherals.
    /// `device_add` of the SCSI controller `plug` names, unless the guest has it; its id if
    /// it was added.
    async fn plug_disk_controller(
        &self,
        plug: &oxvirt_qemu::DiskPlug,
    ) -> Result<Option<String>, EngineError> {
        let Some(controller) = &plug.controller else {
            return Ok(None);
        };
        let id = controller["id"].as_str().unwrap_or_default().to_string();
        if self.peripheral_present(&id).await? {
            return Ok(None);
        }
        self.qmp
            .execute("device_add", Some(controller.clone()))
            .await
            .map_err(engine_error)?;
        Ok(Some(id))
    }

    async fn plug_disk_nodes_and_device(
        &self,
        plug: &oxvirt_qemu::DiskPlug,
    ) -> Result<(), EngineError> {
        let mut added: Vec<String> = Vec::new();
        let mut result = Ok(());
        for node in &plug.blockdevs {
            if let Err(err) = oxvirt_qemu::blockdev_add(&self.qmp, node.clone()).await {
                result = Err(engine_error(err));
                break;
            }
            added.push(node["node-name"].as_str().unwrap_or_default().to_string());
        }
        if result.is_ok() {
            if let Err(err) = self
                .qmp
                .execute("device_add", Some(plug.device.clone()))
                .await
            {
                result = Err(engine_error(err));
            }
        }
        if result.is_err() {
            for node in added.iter().rev() {
                if let Err(err) = self
                    .qmp
                    .execute(
                        "blockdev-del",
                        Some(serde_json::json!({ "node-name": node })),
                    )
                    .await
                {
                    tracing::warn!(
                        node,
                        "cannot delete block node after a failed hot-plug: {err}"
                    );
                }
            }
        }
        result
    }

    /// Whether the guest has the device with id `id` (QEMU's `/machine/peripheral`).
    async fn peripheral_present(&self, id: &str) -> Result<bool, EngineError> {
        let listed = self
            .qmp
            .execute(
                "qom-list",
                Some(serde_json::json!({ "path": "/machine/peripheral" })),
            )
            .await
            .map_err(engine_error)?;
        Ok(listed
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item["name"] == id)))
    }

    async fn delete_device(&self, id: &str, what: &str) -> Result<(), EngineError> {
        self.delete_if_present("device_del", id).await?;
        let deadline = tokio::time::Instant::now() + UNPLUG_TIMEOUT;
        loop {
            if !self.peripheral_present(id).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError {
                    kind: EngineErrorKind::Failed,
                    message: format!(
                        "the guest did not release {what} {id} within {} s (does it handle hot-unplug?)",
                        UNPLUG_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `query-block`'s entry of the disk with target `dev`.
    async fn block_of(&self, dev: &str) -> Result<serde_json::Value, EngineError> {
        let blocks = self
            .qmp
            .execute("query-block", None)
            .await
            .map_err(engine_error)?;
        blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|block| block["qdev"].as_str().is_some_and(|q| qdev_is(q, dev)))
            .cloned()
            .ok_or_else(|| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("QEMU reports no disk {dev}"),
            })
    }

    /// Whether the tray of the drive with device id `dev` is open (`query-block`).
    async fn tray_open(&self, dev: &str) -> Result<bool, EngineError> {
        let devices = self
            .qmp
            .execute("query-block", None)
            .await
            .map_err(engine_error)?;
        let drive = devices
            .as_array()
            .and_then(|list| list.iter().find(|d| d["qdev"] == dev))
            .ok_or_else(|| EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("QEMU does not report a drive {dev}"),
            })?;
        Ok(drive["tray_open"] == true)
    }
}

/// QEMU's words for "no balloon" (`DeviceNotActive`, or no object at the balloon's QOM path)
/// become the engine's "this guest has no balloon" refusal.
fn balloon_error(err: QemuError) -> EngineError {
    match &err {
        QemuError::Command { class, desc, .. }
            if class == "DeviceNotActive" || class == "DeviceNotFound" =>
        {
            EngineError {
                kind: EngineErrorKind::Unsupported,
                message: format!("the guest has no memory balloon device ({desc})"),
            }
        }
        _ => engine_error(err),
    }
}

/// QEMU's balloon statistics (the `guest-stats` property: `stats` by QEMU's names in bytes or
/// counts, `last-update` in seconds) under virsh's keys and units, in libvirt's order; a
/// statistic the guest never reported (QEMU keeps -1 for it) is left out, as libvirt does.
fn guest_memory_stats(value: &serde_json::Value) -> Vec<(&'static str, u64)> {
    // (QEMU's name, virsh's key, divisor: bytes to KiB, or 1 for counts)
    const STATS: [(&str, &str, u64); 11] = [
        ("stat-swap-in", "swap_in", 1024),
        ("stat-swap-out", "swap_out", 1024),
        ("stat-major-faults", "major_fault", 1),
        ("stat-minor-faults", "minor_fault", 1),
        ("stat-free-memory", "unused", 1024),
        ("stat-total-memory", "available", 1024),
        ("stat-available-memory", "usable", 1024),
        ("last-update", "last_update", 1),
        ("stat-disk-caches", "disk_caches", 1024),
        ("stat-htlb-pgalloc", "hugetlb_pgalloc", 1),
        ("stat-htlb-pgfail", "hugetlb_pgfail", 1),
    ];
    STATS
        .iter()
        .filter_map(|(qemu, key, divisor)| {
            let field = if *qemu == "last-update" {
                &value[qemu]
            } else {
                &value["stats"][qemu]
            };
            // -1 (unset) comes as u64::MAX, or as a negative number from other QEMUs.
            let number = field.as_u64().filter(|n| *n != u64::MAX)?;
            Some((*key, number / divisor))
        })
        .collect()
}

impl QmpControl {
    /// `command` (`device_del`, `netdev_del`) on `id`; one QEMU no longer has is gone
    /// already: not an error (a device the guest released after an earlier, timed-out
    /// request). `device_del` only asks the guest to release the device (ACPI eject): the
    /// caller waits until it is gone.
    async fn delete_if_present(&self, command: &str, id: &str) -> Result<(), EngineError> {
        match self
            .qmp
            .execute(command, Some(serde_json::json!({ "id": id })))
            .await
        {
            Ok(_) => Ok(()),
            Err(QemuError::Command { class, .. }) if class == "DeviceNotFound" => Ok(()),
            Err(err) => Err(engine_error(err)),
        }
    }

    /// QEMU's `query-hotpluggable-cpus`, in vCPU id order: by socket, die, core, thread (QEMU
    /// lists them the other way round), which is the order QEMU numbers CPUs in.
    async fn hotpluggable_cpus(&self) -> Result<Vec<serde_json::Value>, EngineError> {
        let answer = self
            .qmp
            .execute("query-hotpluggable-cpus", None)
            .await
            .map_err(engine_error)?;
        let mut cpus = answer.as_array().cloned().unwrap_or_default();
        let key = |cpu: &serde_json::Value| {
            ["socket-id", "die-id", "core-id", "thread-id"]
                .map(|prop| cpu["props"][prop].as_u64().unwrap_or(0))
        };
        cpus.sort_by_key(key);
        Ok(cpus)
    }
}

/// The device id of hot-plugged vCPU `id`, libvirt's alias.
fn vcpu_device_id(id: u32) -> String {
    format!("vcpu{id}")
}

fn vcpu_failure(id: u32, why: &str) -> EngineError {
    EngineError {
        kind: EngineErrorKind::Failed,
        message: format!("vCPU {id}: {why}"),
    }
}

/// How long a vCPU hot-unplug waits for the guest to offline and eject the CPU.
/// TCG on a busy host makes the guest's CPU offlining (a stop_machine across its vCPUs) slow.
const VCPU_UNPLUG_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a media change waits for a guest to unlock and open the tray.
const TRAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a hot-unplug waits for the guest to release the device.
const UNPLUG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::{guest_memory_stats, parse_version};

    #[test]
    fn balloon_statistics_take_virsh_keys_and_kib() {
        let stats = serde_json::json!({
            "stats": {
                "stat-swap-in": 4096,
                "stat-swap-out": 0,
                "stat-major-faults": 12,
                "stat-minor-faults": 3456,
                "stat-free-memory": 104_857_600,
                "stat-total-memory": 134_217_728,
                "stat-available-memory": 110_100_480,
                "stat-disk-caches": 2_097_152,
                "stat-htlb-pgalloc": 0,
                "stat-htlb-pgfail": u64::MAX,
                "stat-oom-kills": 0,
            },
            "last-update": 1_764_730_000,
        });
        assert_eq!(
            guest_memory_stats(&stats),
            vec![
                ("swap_in", 4),
                ("swap_out", 0),
                ("major_fault", 12),
                ("minor_fault", 3456),
                ("unused", 102_400),
                ("available", 131_072),
                ("usable", 107_520),
                ("last_update", 1_764_730_000),
                ("disk_caches", 2048),
                ("hugetlb_pgalloc", 0),
            ]
        );
        assert_eq!(guest_memory_stats(&serde_json::json!({})), vec![]);
    }

    #[test]
    fn version_is_the_number_after_version() {
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright"),
            Some("7.2.22".to_string())
        );
        assert_eq!(parse_version("garbage"), None);
    }
}
