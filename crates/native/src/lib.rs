//! oxvirt-native: the `native` engine, which runs a libvirt domain on `oxvirt-vmm`, oxvirt's own
//! VMM (see docs/native-vmm.md). The peer of `oxvirt-qemu`.
//!
//! - [`plan`]: the domain as the VMM's [`VmConfig`]; anything the engine cannot honour is a
//!   refusal naming the element and its line ([`NativeError::Unsupported`]), never dropped. The plan is the
//!   support check: [`check_definition`] is the same planner, at define time.
//! - [`Supervisor::launch`]: write the plan to `RUN/vm.json`, start `oxvirt-vmm --config
//!   RUN/vm.json` detached from the caller, return once its API answers (the guest held before its
//!   first instruction until [`VmmClient::resume`], so its threads can be placed first).
//! - [`Supervisor::launch_restoring`]: the same from a machine state [`VmmClient::save_state`]
//!   wrote (the VMM starts paused).
//! - [`migration`]: that state over a migration's connection (the source sends what it saved,
//!   the destination spools it and restores from it).
//! - [`Supervisor::connect`]: a [`VmmClient`] (status, pause, resume, power button, stop, save, the balloon,
//!   the disks' I/O counters) and
//!   the VM's [`VmEnd`], reported once the VMM has gone.
//! - [`is_alive`], [`read_pid_file`]: recognise a running VMM again by pid and uuid;
//!   [`vcpu_threads`]: its vCPU threads, for pinning.
//!
//! Process contract with the daemon:
//! - The VMM runs in its own session (`setsid`), so it outlives the daemon, even a SIGKILLed
//!   one. With a [`Sandbox`] ([`Supervisor::with_sandbox`], oxvirtd's default) it is started as
//!   the first process of a new PID namespace (`spawn.rs`) and jails itself
//!   (`VmConfig::jail`: its own root `RUN/root`, a user id of its own, see docs/security.md);
//!   its machine state is saved through a descriptor passed on the API socket
//!   (`save-fd`), since it can name no file of the host. While the daemon that launched it runs, the VMM is its child and the engine reaps it
//!   (a thread per VMM waits for it). A restarted daemon re-attaches through the run directory
//!   ([`RunPaths`]): [`read_pid_file`], [`is_alive`] (the VMM's argv names the run directory,
//!   and so the uuid: a recycled pid is never taken for the VM), [`Supervisor::connect`]; the
//!   VMM is then not its child, init reaps it, and a pidfd tells when it ended.
//! - The VMM's stdout and stderr go to `vmm.log` (for people): through a log writer that rotates
//!   it ([`Supervisor::with_log_writer`], what oxvirtd does), else straight into the file. Programs learn how the VM ended
//!   from the exit record `vmm-exit.json`, which the VMM writes atomically before it exits.
//! - The VMM's serial socket has a single client and drops output while none is connected, so
//!   the engine keeps a console relay on it: everything the guest prints is appended to
//!   `console.log`, and `console.sock` serves any number of console clients. Output produced
//!   while no daemon runs reaches neither.
//!
//! Lifecycle contract with the daemon:
//! - Guest poweroff: the VMM exits 0 with the record `guest-poweroff`:
//!   [`VmEnd::PoweredOff`] `{ by_guest: true }` (`on_poweroff` is the daemon's to apply).
//! - Guest reboot: the VMM cannot reset in place; it exits 3 with `guest-reset`:
//!   [`VmEnd::Rebooted`], and the daemon applies `on_reboot` (restart = a new launch).
//! - [`VmmClient::stop`] (destroy): `host-stop`, [`VmEnd::PoweredOff`] `{ by_guest: false }`;
//!   after a stop, a guest reset or poweroff racing with it counts as the stop too.
//! - An error record, a kill, or an end without a record: [`VmEnd::Crashed`] (`on_crash`).
//! - Network interfaces need a TAP device the daemon's network layer created and named in
//!   `<target dev=>`; volume disks must be resolved to files before a launch.
//! - Disks: `Disk::backing_chain` is carried into the config when the daemon resolved one: the
//!   VMM then opens the disk only if its qcow2 headers name exactly that chain. An empty chain
//!   leaves the VMM to follow the headers (stated backing formats only), as before chains were
//!   resolved.

mod console;
mod control;
mod error;
pub mod migration;
mod paths;
mod plan;
mod process;
mod sandbox;
mod spawn;

pub use control::VmmClient;
pub use error::{NativeError, Refusal};
pub use oxvirt_vmm::protocol::{
    BalloonReport, BlockStats, DiskStats, LiveProgress, MigrationReport, RequestStats,
    RestoreSource, RunState, VmConfig, DEFAULT_MAX_DOWNTIME_MS,
};
pub use paths::RunPaths;
pub use plan::{check_definition, plan};
pub use process::{find_vmm, is_alive, read_pid_file, vcpu_threads, Supervisor, VmEnd};
pub use sandbox::Sandbox;

/// The VMM's executable name (found next to the daemon, or in PATH).
pub const VMM_BINARY: &str = "oxvirt-vmm";
