//! oxvirt-qemu: the engine that runs a domain as a `qemu-system-x86_64` process and controls it
//! over QMP.
//!
//! - [`probe_accel`]: hardware KVM or TCG, with the reason.
//! - [`command_line`] / [`build_command_line`]: the domain as QEMU arguments (plus warnings);
//!   anything the engine cannot honour is [`QemuError::Unsupported`], never dropped. Errors
//!   about the definition name the element (an XML path) and its line.
//! - [`check`]: the define-time check, a dry run of the same builder with placeholders for
//!   what only a start provides.
//! - [`NicIds`], [`disk_node`], [`nic_driver`]: the names this engine gives devices and block
//!   nodes, for the daemon's QMP commands (hot-plug, resize).
//! - [`firmware`]: UEFI firmware for `<os firmware='efi'>` from QEMU's firmware descriptors,
//!   as libvirt picks it, and the domain's NVRAM ([`firmware::resolve_uefi`], at start).
//! - [`launch`]: start QEMU detached from the caller (it outlives the daemon; init reaps it),
//!   wait until QMP listens; [`is_alive`] recognises the process later by pid and uuid. It first
//!   gives SPICE displays with `autoport` a free TCP port ([`assign_spice_ports`]), as libvirt
//!   does at start: QEMU has no automatic SPICE port.
//! - [`Qmp`]: commands and the event stream ([`QmpEvent`]).
//! - [`save_state`] and [`LaunchOptions::incoming`]: a guest's machine state into a file and,
//!   at a later start, out of it (QEMU's migration stream over a descriptor passed on QMP).
//! - [`cpu_models`]: the named CPU models this QEMU offers and their features, asked of a
//!   short-lived QEMU over QMP (`oxvirt cpu-models`, `hypervisor-cpu-baseline`/`-compare`).
//! - [`throttle`]: a disk's I/O limits (`<iotune>`, blkdeviotune) over QMP, set at start
//!   before the guest runs and live.
//! - [`machines`]: the machine types this QEMU offers (`query-machines`, on the same kind of
//!   short-lived QEMU: `qmp_probe.rs`); [`domcaps`]: what the engine accepts in a definition,
//!   found by running libvirt's vocabulary through the parser and [`check`]
//!   (`oxvirt domcapabilities`).
//! - [`keycodes`]: `send-key`'s code sets and key names, translated to QEMU's QNUM codes.
//! - [`check_hugepages`]: before a start, whether the host's huge page pool holds a
//!   `<hugepages/>` guest ([`HugepagePool`]); [`BALLOON_QOM_PATH`]: the balloon device's QOM
//!   path, for its statistics.
//!
//! Process contract with the daemon:
//! - `launch` double-forks: QEMU runs in its own session with init as its parent, so it outlives
//!   the daemon (even a SIGKILLed one) and init reaps it. A daemon that makes itself a child
//!   subreaper must reap orphaned QEMUs itself. A restarted daemon re-attaches through the run
//!   directory: [`read_pid_file`], [`is_alive`] (pid + uuid, so a recycled pid is never taken for
//!   the VM), [`Qmp::connect`] on [`RunPaths::qmp_socket`].
//! - QMP serves one client at a time; `launch` closes its own connection before returning.
//! - The serial console is a socket ([`RunPaths::console_socket`]) mirrored to `console.log`
//!   (with [`launch_with_logs`], through a log writer that rotates it and `qemu.log`; the writer
//!   outlives the daemon as QEMU does and ends when QEMU's output pipe closes).
//!   A connected client must keep reading: QEMU holds back serial output for a client that does
//!   not, and a guest printing to its console then waits too. Without a client output is only
//!   logged.
//!
//! Lifecycle contract with the daemon:
//! - Guest poweroff: QMP emits `SHUTDOWN {guest: true}` and QEMU exits (no `-no-shutdown`),
//!   which ends the event stream. `on_poweroff='restart'` is the daemon's job (start again);
//!   `'preserve'` adds `-no-shutdown` (QEMU stays, status `shutdown`).
//! - `on_reboot='destroy'` adds `-no-reboot`: a guest reboot becomes
//!   `SHUTDOWN {reason: "guest-reset"}` and an exit.
//! - Every VM has a pvpanic device; `on_crash='destroy'` makes QEMU shut down on a guest panic
//!   (`-action panic=shutdown`); `'preserve'` and `'restart'` pause it (`panic=pause`), and for
//!   `'restart'` the daemon resets and continues the VM when it sees [`QmpEvent::GuestPanicked`].
//! - Network interfaces of type network/bridge need a TAP device the daemon's network layer
//!   created and named in `<target dev=>`; QEMU opens it by name (`script=no`).

mod accel;
mod cmdline;
pub mod confine;
pub mod cpu_models;
mod devns;
pub mod domcaps;
mod error;
pub mod firmware;
mod hugepages;
pub mod keycodes;
pub mod machines;
mod migration;
mod paths;
mod process;
mod qmp;
mod qmp_probe;
mod storage_migration;
pub mod throttle;

pub use accel::{probe_accel, Accel, AccelProbe};
pub use cmdline::{
    assign_spice_ports, build_command_line, check, command_line, disk_node, effective_accel,
    hotplug_disk, iothread_object, iothread_qom_id, medium_blockdevs, medium_node_names,
    nic_driver, nic_fds, DiskPlug, NicFds, NicIds, QemuCommandLine, BALLOON_QOM_PATH,
};
pub use confine::{blockdev_add, landlock_abi};
pub use error::QemuError;
pub use hugepages::{check_hugepages, HugepagePool};
pub use migration::{
    migrate_to_stream, migration_parameters, migration_stats, save_state, set_bandwidth,
    set_max_downtime, start_postcopy, MigrationStats,
};
pub use oxvirt_domain::{Domain, Uuid};
pub use oxvirt_logfile::{writer::WriterProgram, Rotation};
pub use paths::RunPaths;
pub use process::{
    after_exit, default_emulator, emulator_path, is_alive, launch, launch_with, launch_with_logs,
    read_pid_file, terminate, LaunchOptions, Launched, DEFAULT_EMULATOR,
};
pub use qmp::{Qmp, QmpEvent, QmpEventMessage, RunState};
pub use storage_migration::{
    end_mirrors, mirror_to_nbd, mirrors, stop_nbd_server, MirrorStats, NbdExports,
};
