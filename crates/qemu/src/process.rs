//! Starting QEMU so that it outlives the daemon, and recognising it again later.
//!
//! Process model: `launch` double-forks. The child std spawns calls `setsid()` (QEMU gets its own
//! session, so signals aimed at the daemon's session or process group do not reach it), forks
//! again, reports the grandchild's pid through a pipe and exits at once; the grandchild execs
//! QEMU. QEMU's parent is therefore init (or the nearest `PR_SET_CHILD_SUBREAPER` ancestor),
//! which reaps it when it exits: the daemon never has to, and a daemon restart (even SIGKILL)
//! leaves guests running. A daemon that makes itself a subreaper takes over that duty.
//!
//! QEMU's stdin is /dev/null; stdout and stderr are appended to `qemu.log`. With
//! [`launch_with_logs`] (what oxvirtd does), a log writer (`oxvirt_logfile::writer`) started
//! just before QEMU, in its own session too, writes `qemu.log` and `console.log` as rotated
//! files: QEMU's stdout and stderr are its stdin pipe and the console chardev's `logfile=` is
//! its FIFO (`console.pipe`). `launch` returns once
//! QEMU answers on its QMP socket (the connection is closed again: QMP serves one client at a
//! time, and that is the daemon's); if QEMU dies first, the error carries the end of what it
//! wrote to qemu.log during this start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oxvirt_domain::{
    CpuSet, DiskType, Domain, InterfaceDriverName, InterfaceType, MemBalloonModel, SourceLine,
    Uuid, Vcpu,
};
use serde_json::json;

use crate::cmdline::{
    assign_spice_ports, build_command_line, BALLOON_QOM_PATH, HUGEPAGES_MOUNT, INCOMING_ARGS,
};
use crate::confine::{self, GuestUser, SANDBOX_ARGS};
use crate::devns::PrivateDev;
use crate::migration::load_state;
use crate::paths::{CONSOLE_LOG, CONSOLE_LOG_PIPE, QEMU_LOG};
use crate::{throttle, Accel, NicIds, QemuError, Qmp, RunPaths};
use landlock::RulesetCreated;
use oxvirt_logfile::writer::WriterProgram;

/// The QEMU binary for x86_64 guests when the definition names none.
pub const DEFAULT_EMULATOR: &str = "qemu-system-x86_64";
/// How long QEMU may take from exec to a listening QMP socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of qemu.log an error carries.
const LOG_TAIL_BYTES: u64 = 4096;

/// A started QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// QEMU's pid (also in `RunPaths::pid_file`).
    pub pid: i32,
    /// Where the VM differs from its definition (see [`crate::QemuCommandLine::warnings`]).
    pub warnings: Vec<String>,
}

/// The emulator to run: `<emulator>` if given, else `qemu-system-x86_64` from `PATH` (the bare
/// name if it is not in `PATH`, so the spawn error names it).
pub fn emulator_path(domain: &Domain) -> PathBuf {
    if let Some(emulator) = &domain.devices.emulator {
        return PathBuf::from(emulator);
    }
    default_emulator()
}

/// [`DEFAULT_EMULATOR`] as found on PATH (the bare name when it is not there, so the error
/// of running it names it).
pub fn default_emulator() -> PathBuf {
    find_in_path(DEFAULT_EMULATOR).unwrap_or_else(|| PathBuf::from(DEFAULT_EMULATOR))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Start QEMU for `domain` in `run.dir` and return once it answers on its QMP socket.
///
/// Everything that can be checked before spawning is: the translation, the emulator, and the
/// files the definition names (kernel, initrd, disk sources, RNG source).
pub async fn launch(domain: &Domain, run: &RunPaths, accel: Accel) -> Result<Launched, QemuError> {
    launch_with_logs(domain, run, accel, None).await
}

/// [`launch`], with QEMU's output and console log written by `writer` (rotated, see the module
/// documentation) rather than appended by QEMU itself without bound.
pub async fn launch_with_logs(
    domain: &Domain,
    run: &RunPaths,
    accel: Accel,
    writer: Option<&WriterProgram>,
) -> Result<Launched, QemuError> {
    let options = LaunchOptions {
        writer,
        incoming: None,
        nbd_exports: None,
        postcopy: false,
        sandbox: false,
        user: None,
    };
    launch_with(domain, run, accel, options).await
}

/// How a start goes beyond what the definition says.
#[derive(Debug, Default)]
pub struct LaunchOptions<'a> {
    /// Writes QEMU's output and console log (see [`launch_with_logs`]).
    pub writer: Option<&'a WriterProgram>,
    /// Load the guest's machine state from this file, from its current position on (written
    /// by [`crate::save_state`]), instead of booting. The guest is paused when the launch
    /// returns.
    pub incoming: Option<File>,
    /// With `incoming`: disks to export over NBD before the state is loaded (a live
    /// migration that copies them, see [`crate::NbdExports`]).
    pub nbd_exports: Option<crate::NbdExports<'a>>,
    /// With `incoming`: the source may switch to post-copy (QEMU's `postcopy-ram` capability
    /// is set before the load); the launch then returns once the guest can run, while the
    /// rest of its memory still comes.
    pub postcopy: bool,
    /// Run QEMU sandboxed (see [`crate::confine`]); false runs it with all of oxvirtd's
    /// rights.
    pub sandbox: bool,
    /// With `sandbox`: the uid (and gid) QEMU runs as, one of the guest's own; its files must
    /// be that user's already (the daemon's DAC labels). None keeps root's.
    pub user: Option<u32>,
}

/// [`launch`] with `options`.
pub async fn launch_with(
    domain: &Domain,
    run: &RunPaths,
    accel: Accel,
    options: LaunchOptions<'_>,
) -> Result<Launched, QemuError> {
    let LaunchOptions {
        writer,
        incoming,
        nbd_exports,
        postcopy,
        sandbox,
        user,
    } = options;
    let user = user.filter(|_| sandbox).map(|uid| GuestUser {
        uid,
        groups: device_groups(accel),
        // <locked/>: root may lock memory without a limit, its guest user only up to
        // RLIMIT_MEMLOCK, raised for it while it still may (libvirt raises it too).
        lock_memory: domain.memory_backing.as_ref().is_some_and(|m| m.locked),
    });
    let piped;
    let run = match writer {
        Some(_) => {
            piped = run.clone().with_log_pipes();
            &piped
        }
        None => run,
    };
    // QEMU has no automatic SPICE port: pick the free ones now, as libvirt does at start.
    let with_ports = assign_spice_ports(domain)?;
    let domain = with_ports.as_ref().unwrap_or(domain);
    let line = build_command_line(domain, run, accel)?;
    let emulator = emulator_path(domain);
    preflight(domain, &emulator)?;
    if let Some(pid) = read_pid_file(run) {
        if is_alive(pid, &domain.uuid).await {
            return Err(QemuError::invalid_run_dir(format!(
                "{} already holds this VM's running QEMU (pid {pid})",
                run.dir.display()
            )));
        }
    }
    prepare_run_dir(run)?;
    hand_over_run_dir(run, domain, user.as_ref().map(|u| u.uid))?;

    let log_path = run.qemu_log();
    let vcpu = domain.vcpu.clone();
    let mut args = line.args.clone();
    if incoming.is_some() {
        args.extend(INCOMING_ARGS.map(str::to_string));
    }
    let confinement = if sandbox {
        args.extend(SANDBOX_ARGS.map(str::to_string));
        let ruleset = confine::landlock_ruleset(domain, run, &emulator)?;
        if ruleset.is_none() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("this kernel has no Landlock: QEMU's file system is not confined")
            });
        }
        Some(ChildSandbox {
            dev: PrivateDev::plan(domain, run, accel)?,
            user: user.clone(),
            ruleset,
        })
    } else {
        None
    };
    // Disk limits are QMP settings: the guest waits for them (as under libvirt, which always
    // starts paused), so they hold from its first I/O on.
    let paused_for_settings = incoming.is_none()
        && domain
            .devices
            .disks
            .iter()
            .any(|disk| throttle::throttled_at_start(disk).is_some());
    if paused_for_settings {
        args.push("-S".to_string());
    }
    let spawn_emulator = emulator.clone();
    let mut passed_files = open_nic_fds(domain, user.as_ref().map_or(0, |u| u.uid))?;
    passed_files.extend(open_char_files(domain, incoming.is_some())?);
    let sockets = crate::cmdline::char_sockets(domain)
        .into_iter()
        .chain(crate::cmdline::nbd_sockets(domain));
    passed_files.extend(open_sockets(sockets)?);
    let writer = writer.cloned();
    let run_dir = run.dir.clone();
    let console_pipe = run.console_log_pipe();
    let (pid, log_start, writer_pid) = tokio::task::spawn_blocking(move || {
        let (log, log_start) = open_log(&log_path, &spawn_emulator, &args)?;
        let (output, writer_pid) = match &writer {
            None => (log, None),
            Some(writer) => {
                // The header above is in the file; from here on only the writer writes it.
                drop(log);
                let started = writer
                    .start(&run_dir, QEMU_LOG, &[(CONSOLE_LOG_PIPE, CONSOLE_LOG)])
                    .map_err(|err| QemuError::io("starting the guest's log writer", err))?;
                // QEMU opens the FIFO by name: as the guest's user, it must be that user's.
                if let Some(user) = &user {
                    std::os::unix::fs::chown(&console_pipe, Some(user.uid), Some(user.uid))
                        .map_err(|err| {
                            QemuError::io(format!("handing {} over", console_pipe.display()), err)
                        })?;
                }
                (File::from(started.output), Some(started.pid))
            }
        };
        let pid = spawn_detached(
            &spawn_emulator,
            &args,
            output,
            &vcpu,
            &passed_files,
            confinement,
        )?;
        Ok::<_, QemuError>((pid, log_start, writer_pid))
    })
    .await
    .map_err(|err| QemuError::Spawn {
        emulator: emulator.clone(),
        reason: err.to_string(),
    })??;
    tracing::info!(pid, name = %domain.name, "QEMU started");

    let qmp = wait_until_ready(pid, &domain.uuid, run, log_start, writer_pid).await?;
    if writer_pid.is_some() {
        // QEMU has opened its console log (chardevs exist before QMP answers) and the writer
        // holds the other end: the FIFO needs no name any more. Without one, nothing else can
        // open it and take the guest's output from the writer (or block reading it).
        let _ = std::fs::remove_file(run.console_log_pipe());
    }
    if let Some(file) = &incoming {
        let uuid = domain.uuid;
        // The exports serve before the stream is loaded: the source copies the disks first.
        let served = match &nbd_exports {
            Some(exports) => crate::storage_migration::serve_disks(&qmp, exports).await,
            None => Ok(()),
        };
        let loaded = match served {
            Ok(()) => load_state(&qmp, file, postcopy, || is_alive(pid, &uuid)).await,
            Err(err) => Err(err),
        };
        if let Err(err) = loaded {
            // Half a machine is no guest: end it, and say what QEMU said.
            kill_now(pid);
            if let Some(writer) = writer_pid {
                wait_for_exit(writer, Duration::from_secs(2)).await;
            }
            return Err(match err {
                QemuError::Migration { what, reason } => QemuError::Migration {
                    what,
                    reason: format!(
                        "{reason}; end of qemu.log:\n{}",
                        log_tail(&run.qemu_log(), log_start)
                    ),
                },
                other => other,
            });
        }
    }
    let applied = match apply_runtime_settings(domain, &qmp).await {
        Ok(()) if paused_for_settings => qmp.cont().await,
        other => other,
    };
    if let Err(err) = applied {
        // Started but not as defined: do not leave a half-configured guest running.
        kill_now(pid);
        return Err(err);
    }
    Ok(Launched {
        pid,
        warnings: line.warnings,
    })
}

/// True if `pid` is a live (not zombie) QEMU started for the VM `uuid` (its command line has
/// `-uuid UUID`), so a recycled pid is never mistaken for the VM.
pub async fn is_alive(pid: i32, uuid: &Uuid) -> bool {
    process_is(pid, uuid, running_vm).await
}

/// Whether the process `pid` exists and `test` says yes to it (read from /proc off the async
/// threads).
async fn process_is(pid: i32, uuid: &Uuid, test: fn(&oxvirt_host::Process, &Uuid) -> bool) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    let uuid = *uuid;
    tokio::task::spawn_blocking(move || {
        oxvirt_host::Process::of(pid).is_some_and(|p| test(&p, &uuid))
    })
    .await
    .unwrap_or(false)
}

fn running_vm(process: &oxvirt_host::Process, uuid: &Uuid) -> bool {
    process.is_running() && runs_vm(&process.argv, uuid)
}

/// Whether `/proc/PID/stat` and `cmdline` show a live QEMU of the VM `uuid`.
#[cfg(test)]
fn process_matches(stat: &[u8], cmdline: &[u8], uuid: &Uuid) -> bool {
    oxvirt_host::Process::parse(stat, cmdline).is_some_and(|p| running_vm(&p, uuid))
}

/// [`is_alive`] for the QEMU [`spawn`] just started: also while its exec is still under way.
/// The spawn returns once the kernel closed the new program's close-on-exec descriptors, but
/// the kernel sets up its command line only after that: for a moment `/proc/PID/cmdline` is
/// empty, and [`is_alive`] alone took that for "QEMU exited during start-up" (with nothing in
/// qemu.log; CI saw it). The pid is our own grandchild's, a moment old: an empty command line
/// is that exec, not another process.
async fn is_starting_or_alive(pid: i32, uuid: &Uuid) -> bool {
    process_is(pid, uuid, starting_or_running_vm).await
}

fn starting_or_running_vm(process: &oxvirt_host::Process, uuid: &Uuid) -> bool {
    process.is_running() && (process.argv.is_empty() || runs_vm(&process.argv, uuid))
}

/// Whether QEMU's argv names the VM `uuid` (`-uuid UUID`).
fn runs_vm(argv: &[String], uuid: &Uuid) -> bool {
    argv.windows(2).any(|pair| {
        pair[0] == "-uuid" && Uuid::parse_str(&pair[1]).is_ok_and(|found| found == *uuid)
    })
}

/// The pid QEMU wrote to `run.pid_file()`, if readable.
pub fn read_pid_file(run: &RunPaths) -> Option<i32> {
    std::fs::read_to_string(run.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid: &i32| *pid > 0)
}

/// Stop a QEMU the hard way: SIGTERM, then SIGKILL if it is still there after `grace`.
/// Does nothing if `pid` is not (any more) the QEMU of `uuid`. Prefer QMP `quit` when QMP works.
pub async fn terminate(pid: i32, uuid: &Uuid, grace: Duration) -> Result<(), QemuError> {
    for (signal, wait) in [
        (libc::SIGTERM, grace),
        (libc::SIGKILL, Duration::from_secs(10)),
    ] {
        if !is_alive(pid, uuid).await {
            return Ok(());
        }
        // SAFETY: kill() has no memory-safety preconditions; pid was just checked to be our QEMU.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !is_alive(pid, uuid).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err(QemuError::Timeout {
        what: format!("QEMU pid {pid} to exit after SIGKILL"),
        seconds: grace.as_secs() + 10,
        log_tail: None,
    })
}

fn kill_now(pid: i32) {
    // SAFETY: kill() has no memory-safety preconditions; pid is the QEMU we just started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

// ----- before spawning ---------------------------------------------------------------------------

fn preflight(domain: &Domain, emulator: &Path) -> Result<(), QemuError> {
    if !is_executable(emulator) {
        return Err(QemuError::Spawn {
            emulator: emulator.to_path_buf(),
            reason: "not found or not executable (install qemu-system-x86, or set <emulator>)"
                .into(),
        });
    }
    let os = &domain.os;
    for (element, path, line) in [
        ("os/kernel", &os.kernel, os.kernel_line),
        ("os/initrd", &os.initrd, os.initrd_line),
    ] {
        if let Some(path) = path {
            require_file(element, line, path, true)?;
        }
    }
    for disk in &domain.devices.disks {
        if let Some(source) = &disk.source {
            let element = format!("devices/disk[target@dev='{}']/source", disk.target.dev);
            require_file(
                &element,
                disk.source_line,
                source,
                disk.disk_type == DiskType::File,
            )?;
        }
    }
    for (index, rng) in domain.devices.rngs.iter().enumerate() {
        require_file(
            &format!("devices/rng[{index}]/backend"),
            rng.line,
            &rng.backend_random,
            false,
        )?;
    }
    // (memfd huge pages come from the kernel's pool, not from a hugetlbfs mount.)
    let hugepages = domain
        .memory_backing
        .as_ref()
        .filter(|b| b.source != Some(oxvirt_domain::MemorySource::Memfd))
        .and_then(|b| b.hugepages.as_ref());
    if let Some(hugepages) = hugepages.filter(|_| !Path::new(HUGEPAGES_MOUNT).is_dir()) {
        return Err(QemuError::invalid(
            "memoryBacking/hugepages",
            hugepages.line,
            format!(
                "{HUGEPAGES_MOUNT} is not mounted (mount -t hugetlbfs hugetlbfs {HUGEPAGES_MOUNT})"
            ),
        ));
    }
    require_host_numa_nodes(domain)?;
    require_vhost_net(domain, Path::new(VHOST_NET))
}

/// `<numatune>` binds guest memory to host NUMA nodes: they must exist (QEMU's mbind would
/// fail later with a less clear message; libvirt says "NUMA node N is unavailable").
fn require_host_numa_nodes(domain: &Domain) -> Result<(), QemuError> {
    let Some(tune) = &domain.numatune else {
        return Ok(());
    };
    let memory = tune
        .memory
        .iter()
        .filter_map(|m| Some(("numatune/memory", m.line, m.nodeset.as_ref()?)));
    let memnodes = tune
        .memnodes
        .iter()
        .map(|m| ("numatune/memnode", m.line, &m.nodeset));
    for (element, line, nodeset) in memory.chain(memnodes) {
        for node in nodeset.iter() {
            if !Path::new(&format!("/sys/devices/system/node/node{node}")).is_dir() {
                return Err(QemuError::invalid(
                    format!("{element}@nodeset"),
                    line,
                    format!("host NUMA node {node} is unavailable"),
                ));
            }
        }
    }
    Ok(())
}

const VHOST_NET: &str = "/dev/vhost-net";

/// `<driver name='vhost'>` needs the host's vhost-net device; without it QEMU would only fail at start-up
/// with a less direct message, so say what is missing and what to do instead.
fn require_vhost_net(domain: &Domain, device: &Path) -> Result<(), QemuError> {
    for (index, interface) in domain.devices.interfaces.iter().enumerate() {
        if interface.driver_name == Some(InterfaceDriverName::Vhost) && !device.exists() {
            return Err(QemuError::unsupported(
                format!("devices/interface[{index}]/driver@name"),
                interface.driver_line,
                format!(
                    "vhost needs {}, which this host does not have: load it (modprobe vhost_net) \
                     or use <driver name='qemu'> for QEMU's own virtio-net backend",
                    device.display()
                ),
            ));
        }
    }
    Ok(())
}

fn require_file(
    element: &str,
    line: SourceLine,
    path: &str,
    regular: bool,
) -> Result<(), QemuError> {
    match std::fs::metadata(path) {
        Ok(meta) if regular && !meta.is_file() => Err(QemuError::invalid(
            element,
            line,
            format!("{path} is not a regular file"),
        )),
        Ok(_) => Ok(()),
        Err(err) => Err(QemuError::invalid(element, line, format!("{path}: {err}"))),
    }
}

fn prepare_run_dir(run: &RunPaths) -> Result<(), QemuError> {
    std::fs::create_dir_all(run.qemu_dir()).map_err(|err| {
        QemuError::io(
            format!("creating run directory {}", run.qemu_dir().display()),
            err,
        )
    })?;
    // Leftovers of an earlier run would make the readiness checks below see the old QEMU.
    for stale in [
        run.qmp_socket(),
        run.console_socket(),
        run.vnc_socket(),
        run.pid_file(),
    ] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(QemuError::io(
                    format!("removing stale {}", stale.display()),
                    err,
                ))
            }
        }
    }
    Ok(())
}

/// The supplementary groups QEMU keeps as a guest user: that of /dev/kvm when it uses KVM (the
/// node is usually root:kvm 0660), no other.
fn device_groups(accel: Accel) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    match accel {
        Accel::Kvm => std::fs::metadata("/dev/kvm")
            .map(|meta| vec![meta.gid()])
            .unwrap_or_default(),
        Accel::Tcg => Vec::new(),
    }
}

/// What a run of QEMU left outside its run directory, removed once it has ended: its huge-page
/// directory (RAM files QEMU unlinks as soon as it has mapped them, so the directory is empty),
/// and the staging point of its private /dev.
pub fn after_exit(run: &RunPaths) {
    for dir in [run.hugepages_dir(), run.dev_staging()] {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!("cannot remove {}: {err}", dir.display()),
        }
    }
}

/// With a guest user `uid`: the run directory searchable by it and no more (0711: its logs and
/// the daemon's files, the live definition among them, stay out of its reach), the `qemu`
/// subdirectory its own (0700) for the sockets and pid file QEMU makes, and the files QEMU
/// reads by name from the run directory (network disks' secrets, 0600) its own. Without one,
/// the subdirectory is root's again.
fn hand_over_run_dir(run: &RunPaths, domain: &Domain, uid: Option<u32>) -> Result<(), QemuError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |path: &Path, err| QemuError::io(format!("handing {} over", path.display()), err);
    let owner = uid.unwrap_or(0);
    let qemu_dir = run.qemu_dir();
    std::os::unix::fs::chown(&qemu_dir, Some(owner), Some(owner))
        .and_then(|()| std::fs::set_permissions(&qemu_dir, PermissionsExt::from_mode(0o700)))
        .map_err(|err| fail(&qemu_dir, err))?;
    // Huge-page RAM is a file QEMU makes in a directory of its own on the hugetlbfs mount.
    let hugepages = domain
        .memory_backing
        .as_ref()
        .filter(|b| b.source != Some(oxvirt_domain::MemorySource::Memfd))
        .and_then(|b| b.hugepages.as_ref());
    if hugepages.is_some() {
        let dir = run.hugepages_dir();
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::os::unix::fs::chown(&dir, Some(owner), Some(owner)))
            .and_then(|()| std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700)))
            .map_err(|err| fail(&dir, err))?;
    }
    let Some(uid) = uid else {
        return Ok(());
    };
    std::fs::set_permissions(&run.dir, PermissionsExt::from_mode(0o711))
        .map_err(|err| fail(&run.dir, err))?;
    for disk in domain.devices.disks.iter().filter(|d| d.auth.is_some()) {
        let secret = run.disk_secret_file(&disk.target.dev);
        match std::os::unix::fs::chown(&secret, Some(uid), Some(uid)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(fail(&secret, err)),
        }
    }
    Ok(())
}

/// Open qemu.log for appending, write a header for this start, and return the file and the
/// offset where this start's output begins.
fn open_log(path: &Path, emulator: &Path, args: &[String]) -> Result<(File, u64), QemuError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| QemuError::io(format!("opening {}", path.display()), err))?;
    let mut header = format!("---- oxvirt: starting {}", emulator.display());
    for arg in args {
        header.push(' ');
        header.push_str(arg);
    }
    header.push('\n');
    log.write_all(header.as_bytes())
        .map_err(|err| QemuError::io(format!("writing {}", path.display()), err))?;
    let start = log
        .seek(SeekFrom::End(0))
        .map_err(|err| QemuError::io(format!("seeking {}", path.display()), err))?;
    Ok((log, start))
}

/// The descriptors of each interface QEMU's command line names ([`crate::nic_fds`]), opened here
/// with the number each gets in QEMU: a direct interface's macvtap (`/dev/tapN` of the device the
/// daemon made, named in `<target dev>`), a TAP interface's device once per queue (given to
/// `owner`, the uid QEMU runs as, unless it is the host's own: managed='no'), and /dev/vhost-net
/// once per queue for vhost.
fn open_nic_fds(domain: &Domain, owner: u32) -> Result<Vec<(File, i32)>, QemuError> {
    let mut out = Vec::new();
    let interfaces = &domain.devices.interfaces;
    for ((index, iface), fds) in interfaces
        .iter()
        .enumerate()
        .zip(crate::cmdline::nic_fds(interfaces))
    {
        let element = format!("devices/interface[{index}]");
        let files = match iface.interface_type {
            InterfaceType::User => continue,
            InterfaceType::Direct => vec![open_macvtap(iface, &element)?],
            InterfaceType::Network | InterfaceType::Bridge | InterfaceType::Ethernet => {
                let Some(dev) = &iface.target_dev else {
                    return Err(QemuError::invalid(
                        element,
                        iface.line,
                        "no TAP device was made for it",
                    ));
                };
                let owner = (iface.target_managed != Some(false)).then_some(owner);
                let queues = u32::try_from(fds.taps.len()).unwrap_or(u32::MAX);
                oxvirt_net::tap::open_tap(dev, queues, owner)
                    .map_err(|err| {
                        QemuError::invalid(
                            format!("{element}/target@dev"),
                            iface.target_line,
                            format!("cannot open TAP device '{dev}': {err}"),
                        )
                    })?
                    .into_iter()
                    .map(File::from)
                    .collect()
            }
        };
        out.extend(files.into_iter().zip(fds.taps.iter().copied()));
        for &target in &fds.vhosts {
            let vhost = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(VHOST_NET)
                .map_err(|err| {
                    QemuError::invalid(
                        format!("{element}/driver@name"),
                        iface.driver_line,
                        format!("vhost needs {VHOST_NET}, which cannot be opened: {err}"),
                    )
                })?;
            out.push((vhost, target));
        }
    }
    Ok(out)
}

/// The files of the serial ports that write to one ([`crate::cmdline::char_files`]), made if
/// missing (0600, as libvirt makes them), emptied unless appended to, with the number each
/// gets in QEMU.
fn open_char_files(domain: &Domain, incoming: bool) -> Result<Vec<(File, i32)>, QemuError> {
    crate::cmdline::char_files(domain)
        .into_iter()
        .map(|file| {
            // A guest that goes on (restored, or migrated in) goes on writing its log: on a path
            // the source shares, truncating would erase what the source's QEMU wrote and leave a
            // hole of zeros where it writes next.
            let append = file.append || incoming;
            let opened = OpenOptions::new()
                .write(true)
                .create(true)
                .append(append)
                .truncate(!append)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
                .open(&file.path)
                .map_err(|err| QemuError::io(format!("opening {} for QEMU", file.path), err))?;
            Ok((opened, file.fd))
        })
        .collect()
}

/// The Unix sockets QEMU gets open ([`crate::cmdline::PassedSocket`]: serial ports', channels',
/// NBD servers'), bound (a stale socket at the path replaced, as QEMU itself would) or connected
/// by oxvirtd, with the number each gets in QEMU.
fn open_sockets(
    sockets: impl IntoIterator<Item = crate::cmdline::PassedSocket>,
) -> Result<Vec<(File, i32)>, QemuError> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    sockets
        .into_iter()
        .map(|socket| {
            let (path, what) = (&socket.path, &socket.what);
            let fd = if socket.bind {
                let stale =
                    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
                if stale {
                    std::fs::remove_file(path).map_err(|err| {
                        QemuError::io(format!("removing the old socket of {what} at {path}"), err)
                    })?;
                }
                let listener = UnixListener::bind(path)
                    .map_err(|err| QemuError::io(format!("binding {what} at {path}"), err))?;
                OwnedFd::from(listener)
            } else {
                let stream = UnixStream::connect(path)
                    .map_err(|err| QemuError::io(format!("connecting to {what} at {path}"), err))?;
                OwnedFd::from(stream)
            };
            Ok((File::from(fd), socket.fd))
        })
        .collect()
}

/// The `/dev/tapN` of a direct interface's macvtap device.
fn open_macvtap(iface: &oxvirt_domain::Interface, element: &str) -> Result<File, QemuError> {
    let Some(dev) = &iface.target_dev else {
        return Err(QemuError::invalid(
            element,
            iface.line,
            "no macvtap device was made for it",
        ));
    };
    let ifindex = std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            QemuError::invalid(
                format!("{element}/target@dev"),
                iface.target_line,
                format!("macvtap device '{dev}' does not exist"),
            )
        })?;
    let path = format!("/dev/tap{ifindex}");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|err| {
            QemuError::invalid(
                format!("{element}/target@dev"),
                iface.target_line,
                format!("cannot open {path} of macvtap '{dev}': {err}"),
            )
        })
}

/// What the child does to sandbox QEMU before exec: it enters its private /dev ([`PrivateDev`]),
/// then takes its guest user and enforces the Landlock ruleset, if the kernel has Landlock
/// ([`confine::apply_in_child`]).
struct ChildSandbox {
    dev: PrivateDev,
    user: Option<GuestUser>,
    ruleset: Option<RulesetCreated>,
}

/// Spawn `emulator args` detached (see the module documentation) and return its pid.
fn spawn_detached(
    emulator: &Path,
    args: &[String],
    log: File,
    vcpu: &Vcpu,
    inherited: &[(File, i32)],
    sandbox: Option<ChildSandbox>,
) -> Result<i32, QemuError> {
    let spawn_error = |reason: String| QemuError::Spawn {
        emulator: emulator.to_path_buf(),
        reason,
    };
    // (source descriptor, the number QEMU expects it at) for QEMU's process. The sources are
    // copies above every target first, so moving one never overwrites another.
    let floor = inherited
        .iter()
        .map(|(_, target)| *target + 1)
        .max()
        .unwrap_or(0);
    let mut copies = Vec::new();
    for (file, target) in inherited {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an open descriptor this function borrows.
        let copy = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
        if copy < 0 {
            return Err(spawn_error(format!(
                "duplicating a network descriptor: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
        copies.push((unsafe { OwnedFd::from_raw_fd(copy) }, *target));
    }
    let moves: Vec<(libc::c_int, libc::c_int)> = copies
        .iter()
        .map(|(fd, target)| (fd.as_raw_fd(), *target))
        .collect();
    // <vcpu cpuset> is QEMU's CPU affinity.
    let cpu_mask = vcpu
        .cpuset
        .as_ref()
        .map(|cpus| cpu_set_of(cpus, vcpu.line))
        .transpose()?;
    let (pid_reader, pid_writer) =
        cloexec_pipe().map_err(|err| spawn_error(format!("pipe: {err}")))?;
    let pid_writer_fd = pid_writer.as_raw_fd();
    let stdout = log
        .try_clone()
        .map_err(|err| spawn_error(format!("duplicating log fd: {err}")))?;

    let mut command = Command::new(emulator);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    // The child takes the sandbox out of the closure to apply it (its copy of the closure's
    // state: a move, no allocation).
    let mut sandbox = sandbox;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (setsid, dup2, fcntl, sched_setaffinity, fork, write, _exit, devns' unshare, mount,
    // mkdir, open, close and symlink, and confine's setrlimit, setgroups, setgid, setuid, prctl
    // and landlock_restrict_self) on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }

            if let Some(mask) = &cpu_mask {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), mask) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    // The grandchild goes on to exec QEMU, with the descriptors its command
                    // line names (fd=N) at their numbers; dup2 leaves them open across exec.
                    // (Sources are above every target, so none is overwritten.)
                    for &(source, target) in &moves {
                        if libc::dup2(source, target) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    match sandbox.take() {
                        Some(ChildSandbox { dev, user, ruleset }) => {
                            // Its own /dev first, while it is root.
                            dev.enter()?;
                            confine::apply_in_child(user.as_ref(), ruleset)
                        }
                        None => Ok(()),
                    }
                }
                grandchild => {
                    let bytes = grandchild.to_ne_bytes();
                    let written = libc::write(pid_writer_fd, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(if written == bytes.len() as isize {
                        0
                    } else {
                        1
                    });
                }
            }
        });
    }
    // Returns once the grandchild has exec'd (or reports its exec error).
    let mut intermediate = command
        .spawn()
        .map_err(|err| spawn_error(err.to_string()))?;
    drop(pid_writer);
    let status = intermediate
        .wait()
        .map_err(|err| spawn_error(format!("waiting for the forking child: {err}")))?;
    if !status.success() {
        return Err(spawn_error(format!("the forking child failed ({status})")));
    }
    let mut bytes = [0u8; 4];
    File::from(pid_reader)
        .read_exact(&mut bytes)
        .map_err(|err| spawn_error(format!("reading QEMU's pid: {err}")))?;
    Ok(i32::from_ne_bytes(bytes))
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds points to two writable c_ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The affinity mask of `cpus`. The command line builder already refused CPUs beyond the
/// mask (so a define does); this keeps the `CPU_SET` below in bounds on its own.
fn cpu_set_of(cpus: &CpuSet, line: SourceLine) -> Result<libc::cpu_set_t, QemuError> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for cpu in cpus.iter() {
        if cpu as usize >= capacity {
            return Err(QemuError::invalid(
                "vcpu@cpuset",
                line,
                format!("host CPU {cpu} is beyond {capacity}"),
            ));
        }
        // SAFETY: cpu was checked to be inside the set just above.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    Ok(set)
}

// ----- after spawning ----------------------------------------------------------------------------

/// Wait until QEMU serves QMP, and return that connection. A listening socket alone is not
/// enough: QEMU creates it before it builds the machine, and can still fail after that (an
/// unknown CPU model, say). QEMU greets on QMP only from its main loop, that is once the machine
/// exists; so a greeting plus a `query-status` answer means QEMU really started.
async fn wait_until_ready(
    pid: i32,
    uuid: &Uuid,
    run: &RunPaths,
    log_start: u64,
    writer_pid: Option<i32>,
) -> Result<Qmp, QemuError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let socket = run.qmp_socket();
    let early_exit = || async {
        // What QEMU said last passes through the log writer, which ends once it has all.
        if let Some(writer) = writer_pid {
            wait_for_exit(writer, Duration::from_secs(2)).await;
        }
        QemuError::EarlyExit {
            log_tail: log_tail(&run.qemu_log(), log_start),
        }
    };
    loop {
        if !is_starting_or_alive(pid, uuid).await {
            return Err(early_exit().await);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            kill_now(pid);
            return Err(QemuError::Timeout {
                what: format!("QEMU to answer on {}", socket.display()),
                seconds: START_TIMEOUT.as_secs(),
                log_tail: Some(log_tail(&run.qemu_log(), log_start)),
            });
        }
        if socket.exists() {
            if let Ok(Ok((qmp, _events))) =
                tokio::time::timeout(remaining, Qmp::connect(&socket)).await
            {
                match qmp.query_status().await {
                    Ok(_) => return Ok(qmp),
                    Err(_) if !is_starting_or_alive(pid, uuid).await => {
                        return Err(early_exit().await)
                    }
                    Err(err) => tracing::debug!("QEMU not ready yet: {err}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most `limit`) until the process `pid` has ended.
async fn wait_for_exit(pid: i32, limit: Duration) {
    let Ok(pid) = u32::try_from(pid) else {
        return;
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && oxvirt_host::Process::of(pid).is_some_and(|p| p.is_running())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What qemu.log gained since `start` (its last [`LOG_TAIL_BYTES`]).
fn log_tail(path: &Path, start: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let end = file.seek(SeekFrom::End(0)).unwrap_or(start);
    // A file shorter than `start` was rotated meanwhile: this start's output is all of it.
    let start = if end < start { 0 } else { start };
    let from = start.max(end.saturating_sub(LOG_TAIL_BYTES));
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).trim_end().to_string()
}

/// Settings QEMU takes only over QMP, applied right after start.
fn runtime_settings(domain: &Domain) -> Vec<(&'static str, serde_json::Value)> {
    // QEMU limits migrations to 32 MiB/s by default; libvirt lifts the limit at start (its
    // `migrate-getspeed` then says 8796093022207 MiB/s), and so does oxvirt: a guest dirtying
    // its memory faster than 32 MiB/s never converged without --bandwidth or --auto-converge.
    let mut commands = vec![(
        "migrate-set-parameters",
        json!({ "max-bandwidth": i64::MAX }),
    )];
    let balloon = domain
        .devices
        .memballoon
        .as_ref()
        .filter(|b| b.model == MemBalloonModel::Virtio);
    if domain.current_memory_kib < domain.memory_kib && balloon.is_some() {
        commands.push((
            "balloon",
            json!({"value": domain.current_memory_kib * 1024}),
        ));
    }
    if let Some(period) = balloon.and_then(|b| b.stats_period) {
        commands.push((
            "qom-set",
            json!({"path": BALLOON_QOM_PATH, "property": "guest-stats-polling-interval", "value": period}),
        ));
    }
    for (index, interface) in domain.devices.interfaces.iter().enumerate() {
        if interface.link_up == Some(false) {
            commands.push((
                "set_link",
                json!({"name": NicIds::at_start(index).device, "up": false}),
            ));
        }
    }
    for disk in &domain.devices.disks {
        if let Some(tune) = throttle::throttled_at_start(disk) {
            commands.push((
                "block_set_io_throttle",
                throttle::throttle_arguments(&throttle::disk_qom_name(disk), tune),
            ));
        }
    }
    if let Some(graphics) = domain.devices.graphics.first() {
        if let Some(password) = &graphics.passwd {
            if graphics.spice.is_some() {
                commands.push((
                    "set_password",
                    json!({"protocol": "spice", "password": password}),
                ));
            } else {
                commands.push(("change-vnc-password", json!({"password": password})));
            }
        }
    }
    commands
}

async fn apply_runtime_settings(domain: &Domain, qmp: &Qmp) -> Result<(), QemuError> {
    for (command, arguments) in runtime_settings(domain) {
        qmp.execute(command, Some(arguments)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";

    #[test]
    fn disk_limits_are_set_over_qmp_for_disks_with_a_medium() {
        let domain = oxvirt_domain::parse_domain_xml(
            "<domain type='qemu'><name>v</name><memory>131072</memory><os><type>hvm</type></os>\
             <devices><disk type='file'><source file='/a'/><target dev='vdb' bus='virtio'/>\
             <iotune><total_iops_sec>50</total_iops_sec><group_name>g</group_name></iotune></disk>\
             <disk type='file' device='cdrom'><target dev='sda' bus='sata'/>\
             <iotune><read_bytes_sec>5</read_bytes_sec></iotune></disk>\
             <disk type='file'><source file='/b'/><target dev='sdb' bus='sata'/>\
             <iotune><write_bytes_sec>7</write_bytes_sec></iotune></disk></devices></domain>",
        )
        .unwrap();
        let throttles: Vec<_> = runtime_settings(&domain)
            .into_iter()
            .filter(|(command, _)| *command == "block_set_io_throttle")
            .map(|(_, arguments)| arguments)
            .collect();
        // The empty CD-ROM drive is left out (QEMU cannot throttle it; libvirt skips it).
        assert_eq!(throttles.len(), 2, "{throttles:?}");
        assert_eq!(throttles[0]["id"], "/machine/peripheral/vdb/virtio-backend");
        assert_eq!(throttles[0]["iops"], 50);
        assert_eq!(throttles[0]["group"], "g");
        assert_eq!(throttles[1]["id"], "sdb");
        assert_eq!(throttles[1]["bps_wr"], 7);
    }

    #[test]
    fn vhost_is_refused_up_front_when_the_host_has_no_vhost_net_device() {
        let nic = |driver: &str| {
            oxvirt_domain::parse_domain_xml(&format!(
                "<domain type='qemu'><name>v</name><memory>131072</memory><os><type>hvm</type></os>\
                 <devices><interface type='bridge'><source bridge='br0'/><model type='virtio'/>{driver}\
                 </interface></devices></domain>"
            ))
            .unwrap()
        };
        let present = tempfile::NamedTempFile::new().unwrap();
        let missing = Path::new("/nonexistent/vhost-net");

        let vhost = nic("<driver name='vhost'/>");
        assert!(require_vhost_net(&vhost, present.path()).is_ok());
        let err = require_vhost_net(&vhost, missing).unwrap_err().to_string();
        assert!(
            err.contains("devices/interface[0]/driver@name")
                && err.contains("/nonexistent/vhost-net")
                && err.contains("<driver name='qemu'>"),
            "{err}"
        );
        // QEMU's own backend, or no driver element, never needs the device.
        assert!(require_vhost_net(&nic("<driver name='qemu'/>"), missing).is_ok());
        assert!(require_vhost_net(&nic(""), missing).is_ok());
    }

    #[test]
    fn recognises_our_qemu_only() {
        let uuid = Uuid::parse_str(UUID).unwrap();
        let cmdline = format!("qemu-system-x86_64\0-name\0guest=x\0-uuid\0{UUID}\0");
        let running = b"1234 (qemu-system-x86) S 1 1234";
        assert!(process_matches(running, cmdline.as_bytes(), &uuid));
        let zombie = b"1234 (qemu-system-x86) Z 1 1234";
        assert!(!process_matches(zombie, cmdline.as_bytes(), &uuid));
        let other = Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap();
        assert!(!process_matches(running, cmdline.as_bytes(), &other));
        // A command name with ") Z" inside must not fool the state parser.
        let tricky = b"1234 (a) Z (b) S 1 1234";
        assert!(process_matches(tricky, cmdline.as_bytes(), &uuid));
        assert!(!process_matches(b"", b"", &uuid));
        // Mid-exec (the command line not set up yet) counts as starting, for the start-up
        // wait only; a zombie or another program does not.
        let starting = |stat: &[u8], cmdline: &[u8]| {
            oxvirt_host::Process::parse(stat, cmdline)
                .is_some_and(|p| starting_or_running_vm(&p, &uuid))
        };
        assert!(starting(running, b""));
        assert!(!process_matches(running, b"", &uuid));
        assert!(starting(running, cmdline.as_bytes()));
        assert!(!starting(zombie, b""));
        assert!(!starting(running, b"oxvirtd\0--socket\0/x\0"));
    }

    #[tokio::test]
    async fn a_recycled_pid_is_not_our_vm() {
        let uuid = Uuid::parse_str(UUID).unwrap();
        // Our own process is alive but is not a QEMU for this uuid.
        assert!(!is_alive(std::process::id() as i32, &uuid).await);
        assert!(!is_alive(0, &uuid).await);
        assert!(!is_alive(-1, &uuid).await);
    }

    #[test]
    fn log_tail_is_only_this_start_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qemu.log");
        std::fs::write(&path, "old run\n").unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&vec![b'x'; 10_000]).unwrap();
        file.write_all(b"\nqemu: bad option\n").unwrap();
        let tail = log_tail(&path, start);
        assert!(tail.ends_with("qemu: bad option"));
        assert!(!tail.contains("old run"));
        assert!(tail.len() as u64 <= LOG_TAIL_BYTES);
    }
}
