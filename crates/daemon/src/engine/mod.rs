//! The seam between the daemon and whatever runs guests.
//!
//! The daemon only needs to launch a guest, find out whether its process still lives, and hold a
//! control connection that accepts a few commands and reports lifecycle events. [`Engine`] and
//! [`Control`] are exactly that, so the native VMM can slot in next to QEMU.

pub mod native;
pub mod process;
pub mod qemu;
pub mod set;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::Domain;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

/// Lifecycle events of a running guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The machine is shutting down; `guest` is true when the guest itself asked.
    Shutdown { guest: bool },
    /// The machine was reset (it keeps running).
    Reset,
    /// vCPUs stopped.
    Stop,
    /// vCPUs resumed.
    Resume,
    /// The guest reported a kernel panic.
    Panicked,
    /// The guest asked for a reset and its process ended (engines that do not reset in place,
    /// like the native one): the domain's `on_reboot` decides what happens next.
    Rebooted,
    /// An event of the engine's own monitor, whole (QEMU: every QMP event, the ones above
    /// included), for the event stream; it changes nothing.
    Monitor(oxvirt_api::MonitorEvent),
}

/// What the engine says the guest is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    Running,
    Paused,
    /// Created but not yet started (waiting for a resume).
    NotStarted,
    ShutDown,
    Panicked,
    /// Anything else, in the engine's words.
    Other(String),
}

/// An engine failure; `unsupported` marks "this engine cannot do what the definition asks".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: EngineErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    /// The definition asks for something the engine does not support.
    Unsupported,
    /// The definition is inconsistent with the host (a missing file, an overlong path, ...).
    Invalid,
    /// The engine failed (spawn, early exit, protocol, timeout).
    Failed,
}

/// Where a guest's console can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolePaths {
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Accelerator choice for one start, with what the user should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelPlan {
    pub accel: Accel,
    pub warnings: Vec<String>,
}

pub type Events = UnboundedReceiver<EngineEvent>;

/// Where a guest's saved machine state (memory, vCPUs, devices) is written or read: the engine's own
/// stream, in `path` from byte `offset` on (oxvirt's save-image header and the domain XML come before
/// it; see services/saves.rs). The same for `save`/`restore`, managed saves and the native engine's
/// snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    pub path: PathBuf,
    pub offset: u64,
}

/// Where a launched guest's machine state comes from instead of a boot.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// A save image's state stream.
    Saved(&'a StateFile),
    /// A migration's stream: the connection the source oxvirtd made (services/migration.rs):
    /// QEMU's live migration stream, or a native guest's saved state
    /// (`oxvirt_native::migration`), which the native engine restores as [`Incoming::Saved`].
    Stream(std::os::fd::BorrowedFd<'a>),
    /// A live migration's stream that the source may switch to post-copy (`--postcopy`): the
    /// engine's QEMU gets the `postcopy-ram` capability before it loads, and the launch ends
    /// once the guest can run (QEMU's `postcopy-active`), its missing pages coming from the
    /// source as it touches them.
    StreamPostcopy(std::os::fd::BorrowedFd<'a>),
    /// A live migration's stream that also copies the guest's disks (`--copy-storage-*`):
    /// they are served by NBD before the stream is loaded (services/migration_storage.rs).
    StreamCopyingDisks(std::os::fd::BorrowedFd<'a>, NbdServe<'a>),
}

/// The disks a guest receiving a live migration serves over NBD, for the source to copy them
/// into.
#[derive(Debug, Clone, Copy)]
pub struct NbdServe<'a> {
    /// A listening Unix socket oxvirtd bound: the engine serves on it.
    pub listener: std::os::fd::BorrowedFd<'a>,
    /// The targets (`vda`) of the disks to serve, writable, each under its target's name.
    pub disks: &'a [String],
    /// Notified once every disk is served.
    pub ready: &'a tokio::sync::Notify,
}

/// How one disk's copy (an outgoing migration's, `--copy-storage-*`) goes.
pub use oxvirt_qemu::MirrorStats as DiskCopyProgress;

/// How an outgoing live migration is going: the qemu engine's figures (the only engine that
/// migrates so far) are every engine's.
pub use oxvirt_qemu::MigrationStats as MigrationProgress;

fn no_migration() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine has no QEMU migration (the qemu engine has; a native guest's state \
                  goes through oxvirtd's own stream: docs/migration.md, \"The native engine\")"
            .to_string(),
    }
}

fn no_saved_state(what: &str) -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: format!("this engine cannot {what} a guest's machine state"),
    }
}

/// A NIC to hot-plug into a running guest, on a TAP device the daemon prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlug {
    /// Engine-side ids of the host backend and of the guest device (unique in the guest).
    pub netdev_id: String,
    pub device_id: String,
    pub tap: String,
    pub mac: String,
    /// NIC model, e.g. "virtio".
    pub model: String,
    /// PCI slot on bus 0 to plug into, if the definition fixed one.
    pub pci_slot: Option<u8>,
}

/// The value of the secret a network disk's `<auth>` names, for the engine to hand to its
/// process at start (never on a command line). Its Debug form leaves the value out.
pub struct DiskSecret {
    /// The disk's target name.
    pub dev: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for DiskSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DiskSecret {{ dev: {:?}, value: <{} bytes> }}",
            self.dev,
            self.value.len()
        )
    }
}

fn no_hotplug() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine cannot hot-plug network interfaces".to_string(),
    }
}

#[async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Version of the underlying emulator, if known.
    fn version(&self) -> Option<String>;

    /// The accelerator a start of `domain` would use now.
    fn plan_accel(&self, domain: &Domain) -> AccelPlan;

    /// The engine that runs `domain` (differs from [`Engine::kind`] when engines are combined).
    fn kind_of(&self, _domain: &Domain) -> EngineKind {
        self.kind()
    }

    /// Define-time check: `Err(unsupported)` naming what in `domain` this engine cannot run.
    fn check_definition(&self, _domain: &Domain) -> Result<(), EngineError> {
        Ok(())
    }

    /// Start-time check of the host (before any resource is set up for the start).
    fn check_host(&self, _domain: &Domain) -> Result<(), EngineError> {
        Ok(())
    }

    /// Puts the secrets of `domain`'s network disks where [`Engine::launch`] will give them to
    /// the engine's process (in `run_dir`, which exists and is private). Engines without
    /// network disks have none to take.
    fn write_disk_secrets(
        &self,
        _domain: &Domain,
        _run_dir: &Path,
        secrets: &[DiskSecret],
    ) -> Result<(), EngineError> {
        match secrets.first() {
            None => Ok(()),
            Some(secret) => Err(EngineError {
                kind: EngineErrorKind::Unsupported,
                message: format!(
                    "disk '{}': this engine has no network disks to give a secret to",
                    secret.dev
                ),
            }),
        }
    }

    /// The NVRAM file the engine made and keeps for `uuid` (a UEFI guest's variables), if there
    /// is one: undefine asks what to do with it, as libvirt does.
    fn nvram_file(&self, _uuid: &Uuid) -> Option<PathBuf> {
        None
    }

    /// Whether the engine takes internal snapshots of `domain` while it runs
    /// ([`Control::snapshot_job`] and friends, with the images open). An engine that cannot
    /// (the native one) gets them offline: the daemon saves the guest's machine state, ends its
    /// process, works on the closed images and relaunches it from that state
    /// (services/snapshots.rs).
    fn live_internal_snapshots(&self, _domain: &Domain) -> bool {
        false
    }

    /// The domain `uuid` was undefined: remove what the engine keeps for it across starts
    /// (the qemu engine: the NVRAM it made for a UEFI guest, unless `keep_nvram`).
    fn forget_domain(&self, _uuid: &Uuid, _keep_nvram: bool) {}

    /// The process of the guest whose run directory is `run_dir` has ended: remove what the
    /// engine made for that run outside it (the qemu engine: the guest's huge-page directory).
    fn after_exit(&self, _run_dir: &Path) {}

    /// Fills in the files the engine itself chooses for a start of `domain` (QEMU: the UEFI
    /// firmware and the NVRAM it makes), so that the daemon knows every file the guest opens
    /// before it starts. Doing it again is harmless: [`Engine::launch`] does it too.
    fn resolve_files(&self, _domain: &mut Domain) -> Result<(), EngineError> {
        Ok(())
    }

    /// Whether the process of `domain` runs as a user of its own that the daemon chooses and
    /// gives the guest's files to for the run (libvirt's DAC model: services/dac.rs), passed
    /// to [`Engine::launch`] as `user`. The qemu engine's when sandboxed; the native engine
    /// chooses its jail's users itself and opens its files before it drops root.
    fn runs_as_guest_user(&self, _domain: &Domain) -> bool {
        false
    }

    /// Starts the guest with its files in `run_dir`; returns the process id once the control
    /// connection can be made. With `incoming`, the guest does not boot: its machine state is
    /// loaded from that file (written by [`Control::save_state`]) and it stays paused, for the
    /// caller to resume or not. `user`: the uid (and gid) its process runs as, when
    /// [`Engine::runs_as_guest_user`].
    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        accel: Accel,
        incoming: Option<Incoming<'_>>,
        user: Option<u32>,
    ) -> Result<u32, EngineError>;

    /// Whether `pid` is still the process running the guest `uuid` (guards against pid reuse).
    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool;

    /// The pid the guest process recorded in `run_dir`, if any (finds a guest whose start the
    /// daemon did not get to record).
    fn recorded_pid(&self, run_dir: &Path) -> Option<u32>;

    /// Opens the control connection of the guest whose files are in `run_dir`. The event
    /// receiver ends when the connection closes (normally: the guest's process exited).
    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError>;

    fn console_paths(&self, run_dir: &Path) -> ConsolePaths;
}

#[async_trait]
pub trait Control: Send + Sync {
    async fn status(&self) -> Result<GuestStatus, EngineError>;
    async fn pause(&self) -> Result<(), EngineError>;
    async fn resume(&self) -> Result<(), EngineError>;
    /// Presses the ACPI power button.
    async fn power_button(&self) -> Result<(), EngineError>;
    async fn reset(&self) -> Result<(), EngineError>;
    /// Ends the guest's process at once.
    async fn quit(&self) -> Result<(), EngineError>;
    /// Writes the machine state of the paused guest to `state` (the engine's stream from
    /// `state.offset` on); returns once all of it is on disk.
    async fn save_state(&self, _state: &StateFile) -> Result<(), EngineError> {
        Err(no_saved_state("save"))
    }
    /// Starts sending the running guest's machine state into `stream` (a connection to the
    /// destination, which loads it with [`Incoming::Stream`]), at most `bandwidth_mib` MiB/s;
    /// returns once it started: [`Control::migration_progress`] follows it.
    async fn migrate_out(
        &self,
        _stream: std::os::fd::BorrowedFd<'_>,
        _bandwidth_mib: Option<u64>,
    ) -> Result<(), EngineError> {
        Err(no_migration())
    }
    async fn migration_progress(&self) -> Result<MigrationProgress, EngineError> {
        Err(no_migration())
    }
    /// The guest's migration settings: (largest downtime in ms, bandwidth limit in MiB/s).
    async fn migration_parameters(&self) -> Result<(u64, u64), EngineError> {
        Err(no_migration())
    }
    /// Sets the largest downtime its migrations may take, in ms.
    async fn set_max_downtime(&self, _milliseconds: u64) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Sets its migrations' bandwidth limit in MiB/s (0: none), a running one's too.
    async fn set_bandwidth(&self, _mib: u64) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Turns QEMU's migration capabilities (`auto-converge`, `xbzrle`) on or off for the
    /// guest's next outgoing migration.
    async fn set_migration_capabilities(
        &self,
        _capabilities: &[(&str, bool)],
    ) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Writes the running (or paused) guest's state into `stream` as a live migration's stream
    /// (the native engine: `oxvirt_native::migration`'s relay reads the other end), at most
    /// [`Control::set_max_downtime`]'s downtime; returns once the stream is complete. The guest
    /// is then paused with its disks' locks released, for the destination: [`Control::quit`]
    /// once it runs there, [`Control::migrate_cancel`] if it does not. A failure left the guest
    /// as it was, running here. (The qemu engine's live migration is [`Control::migrate_out`].)
    async fn migrate_live(
        &self,
        _stream: std::os::fd::OwnedFd,
    ) -> Result<oxvirt_native::MigrationReport, EngineError> {
        Err(EngineError {
            kind: EngineErrorKind::Unsupported,
            message: "this engine's guests migrate live through QEMU's migration, not a state \
                      stream of the native engine's"
                .to_string(),
        })
    }
    /// Stops the outgoing migration; the guest goes on running here. (Native engine: undoes a
    /// completed [`Control::migrate_live`], the guest running again if it ran.)
    async fn migrate_cancel(&self) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Switches the outgoing migration to post-copy (`migrate-start-postcopy`): the guest
    /// stops here for good and runs on the destination.
    async fn start_postcopy(&self) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Starts copying disk `dev` of the running guest into the NBD export of the same name at
    /// the other end of `connection` (a connected socket); with `shallow`, its top image only.
    async fn copy_disk(
        &self,
        _dev: &str,
        _connection: std::os::fd::BorrowedFd<'_>,
        _shallow: bool,
    ) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// The disk copies [`Control::copy_disk`] started that still exist.
    async fn disk_copies(&self) -> Result<Vec<DiskCopyProgress>, EngineError> {
        Err(no_migration())
    }
    /// Ends the copies of `devs` (a ready one first copies what is left) and closes their
    /// connections.
    async fn end_disk_copies(&self, _devs: &[String]) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Stops serving the disks of an incoming migration ([`Incoming::StreamCopyingDisks`]).
    async fn stop_serving_disks(&self) -> Result<(), EngineError> {
        Err(no_migration())
    }
    /// Internal snapshot `tag` of the running or paused guest, with its memory and device state
    /// in the image of disk `vmstate` and every disk of `disks` (targets, `vmstate` among them)
    /// at the same instant. `Save` takes it (the guest's run state is as before once it
    /// returns); `Load` brings it back and leaves the guest paused, for the caller to resume or
    /// not.
    async fn snapshot_job(
        &self,
        _job: SnapshotJob,
        _tag: &str,
        _vmstate: &str,
        _disks: &[String],
    ) -> Result<(), EngineError> {
        Err(no_snapshots())
    }
    /// Deletes internal snapshot `tag` from `disks`.
    async fn snapshot_delete(&self, _tag: &str, _disks: &[String]) -> Result<(), EngineError> {
        Err(no_snapshots())
    }
    /// External disk snapshots, all or none: each disk's current image becomes the backing
    /// file of its overlay (a qcow2 file the daemon made), which the guest writes to from now on.
    async fn add_overlays(&self, _overlays: &[DiskOverlay]) -> Result<(), EngineError> {
        Err(EngineError {
            kind: EngineErrorKind::Unsupported,
            message: "this engine cannot switch a running guest's disks to overlays: take an \
                      external (--disk-only) snapshot while the domain is shut off"
                .to_string(),
        })
    }
    /// Hot-plugs a NIC backed by an existing TAP device.
    async fn plug_nic(&self, _nic: &NicPlug) -> Result<(), EngineError> {
        Err(no_hotplug())
    }
    /// Hot-unplugs a NIC (the guest must release it) and its backend; returns once both are gone.
    async fn unplug_nic(&self, _device_id: &str, _netdev_id: &str) -> Result<(), EngineError> {
        Err(no_hotplug())
    }
    /// Current size in bytes of the disk with target `dev` (e.g. "vda"), as the guest sees it.
    async fn block_size(&self, _dev: &str) -> Result<u64, EngineError> {
        Err(no_block_resize())
    }
    /// Changes the size of the disk with target `dev` (its image grows; the guest is told).
    async fn block_resize(&self, _dev: &str, _size: u64) -> Result<(), EngineError> {
        Err(no_block_resize())
    }
    /// Where the guest's graphical displays really listen (ports picked at start included).
    async fn displays(&self) -> Result<Vec<DisplayListen>, EngineError> {
        Ok(Vec::new())
    }
    /// Hands the guest's VNC server `client`, one end of a socket pair, as a new client
    /// connection (libvirt's virDomainOpenGraphicsFD): the other end then speaks RFB, whether
    /// the display listens anywhere or not.
    async fn open_vnc(&self, _client: std::os::fd::BorrowedFd<'_>) -> Result<(), EngineError> {
        Err(no_graphics("open a graphical console"))
    }
    /// Writes a PNG of screen `screen` (0: the primary display) to `file`.
    async fn screendump(&self, _file: &Path, _screen: u32) -> Result<(), EngineError> {
        Err(no_graphics("take screenshots"))
    }
    /// Presses `keys` (QNUM codes) together, held `hold_ms` milliseconds (the engine's default
    /// when `None`).
    async fn send_keys(&self, _keys: &[u32], _hold_ms: Option<u32>) -> Result<(), EngineError> {
        Err(no_graphics("send keys"))
    }
    /// Changes the medium of the removable drive with target `dev`: out (`None`) or the file
    /// or block device `medium` in. `force` opens a tray the guest locked.
    async fn change_media(
        &self,
        _dev: &str,
        _medium: Option<&oxvirt_domain::Disk>,
        _force: bool,
    ) -> Result<(), EngineError> {
        Err(no_graphics("change removable media"))
    }
    /// The host thread id of each vCPU, by vCPU number.
    async fn vcpu_threads(&self) -> Result<Vec<u32>, EngineError> {
        Err(EngineError {
            kind: EngineErrorKind::Unsupported,
            message: "this engine does not report its vCPU threads".to_string(),
        })
    }
    /// The guest's IOThreads (`<iothreadids>`), each with its host thread.
    async fn iothreads(&self) -> Result<Vec<IoThreadState>, EngineError> {
        Err(no_iothreads())
    }
    /// Adds IOThread `id` to the running guest.
    async fn add_iothread(&self, _id: u32) -> Result<(), EngineError> {
        Err(no_iothreads())
    }
    /// Removes IOThread `id` (no disk may use it) from the running guest.
    async fn del_iothread(&self, _id: u32) -> Result<(), EngineError> {
        Err(no_iothreads())
    }
    /// Passes `command` to the engine's own monitor as the user wrote it (QEMU: a QMP command
    /// as JSON, or an HMP command line with `hmp`) and returns the monitor's answer as it
    /// wrote it, an error answer included.
    async fn monitor_command(&self, _command: &str, _hmp: bool) -> Result<String, EngineError> {
        Err(EngineError {
            kind: EngineErrorKind::Unsupported,
            message: "this engine has no QEMU monitor".to_string(),
        })
    }
    /// Asks the guest's balloon driver to leave the guest `target_kib` KiB of memory (the rest
    /// goes back to the host); returns once the request is made, not once the guest complied.
    async fn set_balloon(&self, _target_kib: u64) -> Result<(), EngineError> {
        Err(no_balloon())
    }
    /// The balloon device's view of the guest's memory: its current size and the guest
    /// driver's last statistics.
    async fn memory_stats(&self) -> Result<MemoryStats, EngineError> {
        Err(no_balloon())
    }
    /// How often (seconds; 0: never) the guest's balloon driver refreshes its statistics.
    async fn set_memory_stats_period(&self, _seconds: u32) -> Result<(), EngineError> {
        Err(no_balloon())
    }
    /// Each vCPU slot of the guest, by vCPU id (`0..max`): online or not, and whether it was
    /// hot-plugged (only those can be unplugged).
    async fn vcpu_slots(&self) -> Result<Vec<VcpuSlotState>, EngineError> {
        Err(no_vcpu_hotplug())
    }
    /// Hot-plugs vCPU `id` (an offline slot); the guest is told, and onlines it itself.
    async fn plug_vcpu(&self, _id: u32) -> Result<(), EngineError> {
        Err(no_vcpu_hotplug())
    }
    /// Hot-unplugs vCPU `id` (one [`Control::plug_vcpu`] added); returns once the guest has
    /// released it, or fails after a bounded wait.
    async fn unplug_vcpu(&self, _id: u32) -> Result<(), EngineError> {
        Err(no_vcpu_hotplug())
    }
    /// Hot-plugs disk `dev` of `domain` (the running guest's definition with the disk in it,
    /// normalized and resolved as for a start): its block nodes, then its device; neither is
    /// left behind when the device cannot be added.
    async fn plug_disk(&self, _domain: &Domain, _dev: &str) -> Result<(), EngineError> {
        Err(no_disk_hotplug())
    }
    /// Hot-unplugs disk `dev` (the guest must release it) and removes its block nodes.
    async fn unplug_disk(&self, _dev: &str) -> Result<(), EngineError> {
        Err(no_disk_hotplug())
    }
    /// Whether disk `dev` was hot-plugged into the running guest (then the guest did not boot
    /// from it, whatever its place in the definition).
    async fn disk_hot_plugged(&self, _dev: &str) -> Result<bool, EngineError> {
        Ok(false)
    }
    /// I/O counters of each disk of the running guest, by target.
    async fn block_stats(&self) -> Result<Vec<BlockStats>, EngineError> {
        Err(no_disk_hotplug())
    }
    /// The I/O limits of disk `dev` now.
    async fn block_io_tune(&self, _dev: &str) -> Result<IoTune, EngineError> {
        Err(no_disk_hotplug())
    }
    /// Sets the I/O limits of disk `dev` (0: no limit).
    async fn set_block_io_tune(&self, _dev: &str, _tune: &IoTune) -> Result<(), EngineError> {
        Err(no_disk_hotplug())
    }
}

/// One IOThread of a running guest ([`Control::iothreads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoThreadState {
    /// Its id in the definition (`<iothread id>`).
    pub id: u32,
    /// Its host thread.
    pub thread: u32,
}

fn no_iothreads() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine has no IOThreads (each disk has its own worker thread)".to_string(),
    }
}

fn no_disk_hotplug() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine cannot change the disks of a running guest".to_string(),
    }
}

/// One disk's I/O counters (`dev` in `target`), virsh domblkstat's keys.
pub type BlockStats = oxvirt_api::BlockStat;
/// A disk's I/O limits: the definition's `<iotune>` model, which blkdeviotune shows and
/// changes live too.
pub use oxvirt_domain::IoTune;

/// A guest's memory as its balloon device reports it, in virsh dommemstat's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// The memory the guest has now (KiB): its size less what the balloon holds.
    pub actual_kib: u64,
    /// The guest driver's last statistics under virsh's keys, in libvirt's order (`swap_in`,
    /// `swap_out`, `major_fault`, `minor_fault`, `unused`, `available`, `usable`,
    /// `last_update`, `disk_caches`, `hugetlb_pgalloc`, `hugetlb_pgfail`), memory sizes in KiB,
    /// `last_update` in seconds since the epoch; the ones the guest did not report are left out.
    pub guest: Vec<(&'static str, u64)>,
}

fn no_balloon() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this guest has no memory balloon device its engine can drive".to_string(),
    }
}

/// One vCPU slot of a running guest ([`Control::vcpu_slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuSlotState {
    pub online: bool,
    /// Added while the guest ran (not one of the vCPUs it booted with).
    pub hotplugged: bool,
}

fn no_vcpu_hotplug() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine cannot change the vCPUs of a running guest".to_string(),
    }
}

/// A graphical display of a running guest, as its engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayListen {
    /// `vnc` or `spice`.
    pub protocol: &'static str,
    /// The address it listens on.
    pub host: String,
    pub port: u16,
    pub tls_port: Option<u16>,
}

/// What [`Control::snapshot_job`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotJob {
    Save,
    Load,
}

/// One disk's part in an external snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOverlay {
    /// The disk's target (e.g. `vda`).
    pub dev: String,
    /// The new qcow2 image, whose backing file is the disk's current image.
    pub overlay: PathBuf,
}

fn no_snapshots() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine cannot snapshot a running guest".to_string(),
    }
}

fn no_graphics(what: &str) -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: format!("this engine cannot {what}"),
    }
}

fn no_block_resize() -> EngineError {
    EngineError {
        kind: EngineErrorKind::Unsupported,
        message: "this engine cannot resize disks of a running guest".to_string(),
    }
}
