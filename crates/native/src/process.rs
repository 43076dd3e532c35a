//! The VMM process: launch in its own session, the exit watch, recognising it again by pid, and
//! reading how it ended.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_domain::{Domain, Uuid};
use oxvirt_host::lock;
use oxvirt_logfile::writer::WriterProgram;
use oxvirt_logfile::RotatingFile;
use oxvirt_vmm::protocol::{ExitReason, JailConfig, RestoreSource, VmConfig};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::console::Relays;
use crate::control::VmmClient;
use crate::error::NativeError;
use crate::paths::RunPaths;
use crate::plan::plan;
use crate::sandbox::Sandbox;
use crate::VMM_BINARY;

/// How long a start waits for the VMM's API socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A restoring VMM reads all of the saved RAM before its API answers.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a failed start waits for the log writer to have written the VMM's last words (it
/// ends by itself once the VMM's output pipe closes, that is right after the VMM).
const WRITER_DRAIN: Duration = Duration::from_secs(2);
/// The log writer's output file in the run directory (`RunPaths::vmm_log`).
const VMM_LOG: &str = "vmm.log";

/// Waits (at most `limit`) until the process `pid` (not our child) has ended.
async fn wait_for_exit(pid: i32, limit: Duration) {
    let Ok(pid) = u32::try_from(pid) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline && oxvirt_host::is_running(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a VM ended, as its manager needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The VM is off: the guest powered it off (`by_guest`), or the host stopped it.
    PoweredOff { by_guest: bool },
    /// The guest asked for a reset; the VMM does not reset in place, so it ended
    /// (libvirt's `on_reboot` decides what follows).
    Rebooted,
    /// The VMM failed, or was killed; `reason` is what is known.
    Crashed { reason: String },
}

/// How the VMM process ended, as far as the exit watch could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessExit {
    Status(i32),
    Signal(i32),
    /// Not our child (the daemon restarted since the launch): no status.
    NotOurChild,
}

/// Exit tracking of one VMM process.
#[derive(Clone)]
struct ExitWatch {
    exit: watch::Receiver<Option<ProcessExit>>,
    /// A `stop` was sent: an exit is the host's doing.
    stop_sent: Arc<AtomicBool>,
}

/// Runs domains on `oxvirt-vmm` and watches the VMMs it launched or attached to. One per daemon.
#[derive(Clone, Default)]
pub struct Supervisor {
    /// Exit tracking by VMM pid, until the end has been reported.
    exits: Arc<Mutex<HashMap<u32, ExitWatch>>>,
    relays: Relays,
    /// Writes each VMM's vmm.log, rotated; without one the VMM writes the file itself.
    log_writer: Option<WriterProgram>,
    /// Jails each VMM (`oxvirt_vmm::jail`) as one of these users; none: VMMs run as started.
    sandbox: Option<Sandbox>,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// A supervisor whose guests' console logs rotate as `rotation` says.
    pub fn with_log_rotation(rotation: oxvirt_logfile::Rotation) -> Supervisor {
        Supervisor {
            exits: Arc::default(),
            relays: Relays::new(rotation),
            log_writer: None,
            sandbox: None,
        }
    }

    /// This supervisor, jailing every VMM it launches as a user of `sandbox` (docs/security.md).
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Supervisor {
        self.sandbox = Some(sandbox);
        self
    }

    /// This supervisor, with each VMM's stdout and stderr (`vmm.log`) written by a log writer
    /// (`oxvirt_logfile::writer`) started just before the VMM, in its own session too: the file
    /// rotates as `writer.rotation` says and keeps filling while oxvirtd restarts.
    pub fn with_log_writer(mut self, writer: WriterProgram) -> Supervisor {
        self.log_writer = Some(writer);
        self
    }

    /// Starts `domain` (the launched copy: TAPs created, volumes resolved) with its files in
    /// `run`: writes the plan to `vm.json` and runs `oxvirt-vmm --config vm.json` in its own
    /// session. Returns the VMM's pid once its console relay is connected and its API answers:
    /// every vCPU thread exists then, held before the guest's first instruction until
    /// [`crate::VmmClient::resume`] (its status is [`crate::RunState::Created`] meanwhile).
    pub async fn launch(&self, domain: &Domain, run: &RunPaths) -> Result<u32, NativeError> {
        self.launch_with(domain, run, None).await
    }

    /// Like [`Self::launch`], but the VM starts from the machine state saved at `source` (by
    /// [`crate::VmmClient::save_state`] of the same domain) instead of booting, and stays paused
    /// until [`crate::VmmClient::resume`]. Counts as started once the restored VMM's API answers.
    pub async fn launch_restoring(
        &self,
        domain: &Domain,
        run: &RunPaths,
        source: RestoreSource,
    ) -> Result<u32, NativeError> {
        self.launch_with(domain, run, Some(source)).await
    }

    async fn launch_with(
        &self,
        domain: &Domain,
        run: &RunPaths,
        restore: Option<RestoreSource>,
    ) -> Result<u32, NativeError> {
        let mut config = plan(domain, run)?;
        let timeout = match restore {
            Some(_) => RESTORE_TIMEOUT,
            None => START_TIMEOUT,
        };
        // A boot waits for its launcher's resume, so the guest's first instruction comes after
        // its threads are in their cgroups and pinned (the daemon resumes a `created` VM); a
        // restored VM starts paused anyway.
        config.start_paused = restore.is_none();
        config.restore = restore;
        let user = match &self.sandbox {
            Some(sandbox) => Some(sandbox.take().ok_or(NativeError::NoFreeUser {
                first: *sandbox.range().start(),
                last: *sandbox.range().end(),
            })?),
            None => None,
        };
        let launched = self.launch_config(domain, run, config, user, timeout).await;
        if let (Err(_), Some(sandbox), Some(user)) = (&launched, &self.sandbox, user) {
            sandbox.release(user);
        }
        launched
    }

    /// Launches the VMM of `config`, jailed as `user` if there is one.
    async fn launch_config(
        &self,
        domain: &Domain,
        run: &RunPaths,
        mut config: VmConfig,
        user: Option<u32>,
        timeout: Duration,
    ) -> Result<u32, NativeError> {
        if let Some(user) = user {
            let root = run.jail_root();
            std::fs::create_dir_all(&root)
                .map_err(|e| NativeError::io(format!("cannot create {}", root.display()), e))?;
            config.jail = Some(JailConfig {
                root,
                uid: user,
                gid: user,
                pid_namespace: true,
                net_namespace: true,
            });
        }
        let vmm = find_vmm().ok_or(NativeError::VmmNotFound)?;
        for stale in run.stale_files() {
            let _ = std::fs::remove_file(stale);
        }
        let config_file = run.config_file();
        std::fs::write(&config_file, config.to_json())
            .map_err(|e| NativeError::io(format!("cannot write {}", config_file.display()), e))?;
        let (output, writer_pid) = self.open_output(run)?;
        let error_output = output
            .try_clone()
            .map_err(|e| NativeError::io("cannot duplicate the VMM log descriptor", e))?;
        // The spawn consumes our copies of the output descriptors: with a writer, the VMM's pipe
        // must have no other write end, or the writer would never see it close. Its own
        // session: it outlives the daemon (and its terminal). The exit status is collected by
        // the exit watch.
        let pid = crate::spawn::spawn(
            &vmm,
            &["--config".as_ref(), config_file.as_os_str()],
            OwnedFd::from(output),
            OwnedFd::from(error_output),
            config.jail.is_some(),
        )
        .map_err(|source| NativeError::Spawn {
            vmm: vmm.clone(),
            source,
        })?;
        let watch = spawn_exit_watch(pid, true);
        lock(&self.exits).insert(pid, watch.clone());
        if let Err(err) = std::fs::write(run.pid_file(), format!("{pid}\n")) {
            tracing::warn!(pid, "cannot record the VMM pid: {err}");
        }
        tracing::info!(
            domain = %domain.name,
            pid,
            vmm = %vmm.display(),
            user = ?config.jail.as_ref().map(|j| j.uid),
            "oxvirt-vmm started"
        );

        // Wait for the console (so the relay sees the boot) and the API socket.
        let result = self
            .wait_until_started(run, pid, &watch, writer_pid, timeout)
            .await;
        if result.is_err() {
            if watch.exit.borrow().is_none() {
                // Never leave a VMM behind that the daemon will not know about; the exit watch
                // reaps it.
                // SAFETY: kill(2) has no memory effects; `pid` is our child and not reaped yet
                // (its exit watch has not seen it end), so it cannot have been recycled.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            lock(&self.exits).remove(&pid);
        }
        result
    }

    /// Waits until the VMM of a launch serves its API socket, with the console relay connected
    /// first so it sees the guest's whole boot.
    async fn wait_until_started(
        &self,
        run: &RunPaths,
        pid: u32,
        watch: &ExitWatch,
        writer_pid: Option<i32>,
        timeout: Duration,
    ) -> Result<u32, NativeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exit = watch.exit.clone();
        loop {
            if self.relays.try_start(run).await
                && UnixStream::connect(run.api_socket()).await.is_ok()
            {
                return Ok(pid);
            }
            if exit.borrow().is_some() {
                // What the VMM said last passes through the log writer, which ends once it
                // has all of it.
                if let Some(writer) = writer_pid {
                    wait_for_exit(writer, WRITER_DRAIN).await;
                }
                return Err(NativeError::EarlyExit {
                    message: start_failure(run),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NativeError::StartTimeout {
                    pid,
                    seconds: timeout.as_secs(),
                });
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), exit.changed()).await;
        }
    }

    /// The VMM's stdout and stderr for a start: vmm.log emptied (it holds one start's output,
    /// as it always has), then either the file itself or the pipe of a log writer that fills it
    /// (with the writer's pid).
    fn open_output(&self, run: &RunPaths) -> Result<(std::fs::File, Option<i32>), NativeError> {
        let log_path = run.vmm_log();
        let log = std::fs::File::create(&log_path)
            .map_err(|e| NativeError::io(format!("cannot create {}", log_path.display()), e))?;
        let Some(writer) = &self.log_writer else {
            return Ok((log, None));
        };
        drop(log);
        // A previous start's backups are not this start's.
        for n in 1..=writer.rotation.max_backups {
            let _ = std::fs::remove_file(RotatingFile::backup_path(&log_path, n));
        }
        let started = writer
            .start(&run.dir, VMM_LOG, &[])
            .map_err(|e| NativeError::io("cannot start the VMM's log writer", e))?;
        Ok((std::fs::File::from(started.output), Some(started.pid)))
    }

    /// Attaches to the running VMM of `run` (just launched, or found again after a daemon
    /// restart): its control client, and the VM's end, reported once the VMM has gone.
    pub async fn connect(
        &self,
        run: &RunPaths,
    ) -> Result<(VmmClient, oneshot::Receiver<VmEnd>), NativeError> {
        let pid = read_pid_file(run).ok_or_else(|| NativeError::NoPid {
            path: run.pid_file(),
        })?;
        // The VMM must answer before we call it connected.
        VmmClient::new(run.api_socket(), Arc::default())
            .status()
            .await?;
        let watch = self.exit_watch(pid);
        let client = VmmClient::new(run.api_socket(), watch.stop_sent.clone());
        self.relays.ensure(run).await;
        let (end_tx, end_rx) = oneshot::channel();
        let exits = self.exits.clone();
        let record = run.exit_record();
        // The user a jailed VMM runs as stays taken until it has gone (also after a restart).
        let user = VmConfig::read_file(&run.config_file())
            .ok()
            .and_then(|config| config.jail)
            .map(|jail| jail.uid);
        let sandbox = self.sandbox.clone();
        if let (Some(sandbox), Some(user)) = (&sandbox, user) {
            sandbox.hold(user);
        }
        tokio::spawn(async move {
            let mut exit = watch.exit;
            let ended = match exit.wait_for(|e| e.is_some()).await {
                Ok(ended) => *ended,
                Err(_) => None,
            };
            let Some(ended) = ended else { return };
            lock(&exits).remove(&pid);
            if let (Some(sandbox), Some(user)) = (&sandbox, user) {
                sandbox.release(user);
            }
            let reason = match ExitReason::read(&record) {
                Ok(reason) => reason,
                Err(err) => {
                    tracing::warn!(pid, "{err}");
                    None
                }
            };
            let end = interpret(reason, ended, watch.stop_sent.load(Ordering::SeqCst));
            tracing::info!(pid, ?ended, ?end, "oxvirt-vmm ended");
            // Nobody waiting any more is fine: the VM is gone either way.
            let _ = end_tx.send(end);
        });
        Ok((client, end_rx))
    }

    /// Exit tracking of `pid`: the launch's if it is our child, else a new pidfd watch.
    fn exit_watch(&self, pid: u32) -> ExitWatch {
        let mut exits = lock(&self.exits);
        if let Some(watch) = exits.get(&pid) {
            return watch.clone();
        }
        let watch = spawn_exit_watch(pid, false);
        exits.insert(pid, watch.clone());
        watch
    }
}

/// What a VMM that ended during its start said: its exit record, else the last line it logged.
fn start_failure(run: &RunPaths) -> String {
    if let Ok(Some(ExitReason::Error { message })) = ExitReason::read(&run.exit_record()) {
        return message;
    }
    let log = std::fs::read_to_string(run.vmm_log()).unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)")
        .to_string()
}

/// How the VM ended: the exit record decides; without one (the VMM was killed, or could not
/// write it), the exit status if we saw it.
pub(crate) fn interpret(record: Option<ExitReason>, exit: ProcessExit, stop_sent: bool) -> VmEnd {
    // The host asked for the stop: a reset racing with it must not restart the guest.
    let guest_reset = || {
        if stop_sent {
            VmEnd::PoweredOff { by_guest: false }
        } else {
            VmEnd::Rebooted
        }
    };
    match record {
        Some(ExitReason::GuestReset) => guest_reset(),
        Some(ExitReason::GuestPoweroff) => VmEnd::PoweredOff {
            by_guest: !stop_sent,
        },
        Some(ExitReason::HostStop) => VmEnd::PoweredOff { by_guest: false },
        Some(ExitReason::Error { message }) => VmEnd::Crashed { reason: message },
        None => match exit {
            ProcessExit::Status(0) => VmEnd::PoweredOff {
                by_guest: !stop_sent,
            },
            ProcessExit::Status(status) if status == oxvirt_vmm::EXIT_STATUS_RESET => guest_reset(),
            ProcessExit::Status(status) => VmEnd::Crashed {
                reason: format!("{VMM_BINARY} exited with status {status} and no exit record"),
            },
            ProcessExit::Signal(signal) => VmEnd::Crashed {
                reason: format!("{VMM_BINARY} was killed by signal {signal}"),
            },
            ProcessExit::NotOurChild => VmEnd::Crashed {
                reason: format!("{VMM_BINARY} ended without an exit record"),
            },
        },
    }
}

/// Waits for `pid` to end: `waitpid` for our child (which gives the exit status), a pidfd
/// otherwise.
fn spawn_exit_watch(pid: u32, child: bool) -> ExitWatch {
    let (tx, rx) = watch::channel(None);
    std::thread::Builder::new()
        .name(format!("vmm-exit-{pid}"))
        .spawn(move || {
            let exit = if child {
                wait_child(pid)
            } else {
                wait_foreign(pid);
                ProcessExit::NotOurChild
            };
            let _ = tx.send(Some(exit));
        })
        .map_err(|err| tracing::error!(pid, "cannot start the exit watch: {err}"))
        .ok();
    ExitWatch {
        exit: rx,
        stop_sent: Arc::new(AtomicBool::new(false)),
    }
}

fn wait_child(pid: u32) -> ProcessExit {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return ProcessExit::NotOurChild;
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`, a valid local.
        let rc = unsafe { libc::waitpid(raw, &mut status, 0) };
        if rc == raw {
            if libc::WIFEXITED(status) {
                return ProcessExit::Status(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return ProcessExit::Signal(libc::WTERMSIG(status));
            }
            continue;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // Someone else reaped it (ECHILD): the exit record must tell.
        wait_foreign(pid);
        return ProcessExit::NotOurChild;
    }
}

/// Blocks until `pid` has ended (pidfd; polling /proc if pidfds are unavailable).
fn wait_foreign(pid: u32) {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor we own (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) } as libc::c_int;
    if fd >= 0 {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd; a pidfd becomes readable when the process ends.
            let rc = unsafe { libc::poll(&mut pollfd, 1, -1) };
            if rc > 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // SAFETY: closing the descriptor opened above, once.
        unsafe { libc::close(fd) };
        return;
    }
    while oxvirt_host::is_running(pid) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether an argv is `oxvirt-vmm` running the guest `uuid` (its run directory, which is named
/// after the uuid, is in its arguments: `--config RUN/vm.json`).
fn runs_vm(argv: &[String], uuid: &Uuid) -> bool {
    let program = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p));
    if program != Some(VMM_BINARY) {
        return false;
    }
    let uuid = uuid.to_string();
    argv[1..].iter().any(|arg| arg.contains(&uuid))
}

/// Whether a process' NUL-separated argv is `oxvirt-vmm` running the guest `uuid`.
#[cfg(test)]
fn argv_is_vmm_of(cmdline: &[u8], uuid: &Uuid) -> bool {
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    runs_vm(&argv, uuid)
}

/// Whether `pid` is a live (not zombie) `oxvirt-vmm` running the guest `uuid`, so a recycled
/// pid is never taken for the VM.
pub async fn is_alive(pid: u32, uuid: &Uuid) -> bool {
    let uuid = *uuid;
    tokio::task::spawn_blocking(move || {
        oxvirt_host::Process::of(pid).is_some_and(|p| p.is_running() && runs_vm(&p.argv, &uuid))
    })
    .await
    .unwrap_or(false)
}

/// The pid the launch recorded in `run`, if readable.
pub fn read_pid_file(run: &RunPaths) -> Option<u32> {
    read_pid(&run.pid_file())
}

/// The host thread ids of the VMM `pid`'s vCPU threads, in vCPU order (they are named
/// [`oxvirt_vmm::protocol::VCPU_THREAD_PREFIX`] and their index).
pub fn vcpu_threads(pid: u32) -> Vec<u32> {
    let mut vcpus: Vec<(u32, u32)> = oxvirt_host::affinity::threads(pid)
        .into_iter()
        .filter_map(|tid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let index = vcpu_index(&comm)?;
            Some((index, tid))
        })
        .collect();
    vcpus.sort_unstable();
    vcpus.into_iter().map(|(_, tid)| tid).collect()
}

/// The vCPU index a thread name (`comm`, with its newline) stands for, if it is a vCPU's.
fn vcpu_index(comm: &str) -> Option<u32> {
    comm.trim_end()
        .strip_prefix(oxvirt_vmm::protocol::VCPU_THREAD_PREFIX)?
        .parse()
        .ok()
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `oxvirt-vmm` next to the running program (oxvirtd), else in PATH.
pub fn find_vmm() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(VMM_BINARY)))
        .filter(|path| path.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(VMM_BINARY))
                .find(|candidate| candidate.is_file())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_record_tells_what_happened() {
        let error = ExitReason::Error {
            message: "vCPU 0: KVM_RUN failed".into(),
        };
        // While the VMM is our child.
        assert_eq!(
            interpret(
                Some(ExitReason::GuestPoweroff),
                ProcessExit::Status(0),
                false
            ),
            VmEnd::PoweredOff { by_guest: true }
        );
        assert_eq!(
            interpret(Some(ExitReason::HostStop), ProcessExit::Status(0), true),
            VmEnd::PoweredOff { by_guest: false }
        );
        assert_eq!(
            interpret(Some(ExitReason::GuestReset), ProcessExit::Status(3), false),
            VmEnd::Rebooted
        );
        assert!(matches!(
            interpret(Some(error.clone()), ProcessExit::Status(1), false),
            VmEnd::Crashed { .. }
        ));
        // After a daemon restart there is no status: the record alone decides.
        assert_eq!(
            interpret(
                Some(ExitReason::GuestReset),
                ProcessExit::NotOurChild,
                false
            ),
            VmEnd::Rebooted
        );
        assert_eq!(
            interpret(Some(error), ProcessExit::NotOurChild, false),
            VmEnd::Crashed {
                reason: "vCPU 0: KVM_RUN failed".into()
            }
        );
        assert_eq!(
            interpret(
                Some(ExitReason::GuestPoweroff),
                ProcessExit::NotOurChild,
                false
            ),
            VmEnd::PoweredOff { by_guest: true }
        );
        // The host's stop wins over a guest reset or poweroff racing with it.
        assert_eq!(
            interpret(Some(ExitReason::GuestReset), ProcessExit::Status(3), true),
            VmEnd::PoweredOff { by_guest: false }
        );
        assert_eq!(
            interpret(
                Some(ExitReason::GuestPoweroff),
                ProcessExit::Status(0),
                true
            ),
            VmEnd::PoweredOff { by_guest: false }
        );
    }

    #[test]
    fn without_a_record_the_status_or_nothing_decides() {
        assert_eq!(
            interpret(None, ProcessExit::Status(0), false),
            VmEnd::PoweredOff { by_guest: true }
        );
        assert_eq!(
            interpret(None, ProcessExit::Status(0), true),
            VmEnd::PoweredOff { by_guest: false }
        );
        assert_eq!(
            interpret(None, ProcessExit::Status(3), false),
            VmEnd::Rebooted
        );
        for exit in [
            ProcessExit::Status(1),
            ProcessExit::Signal(9),
            ProcessExit::NotOurChild,
        ] {
            assert!(
                matches!(interpret(None, exit, false), VmEnd::Crashed { .. }),
                "{exit:?}"
            );
        }
    }

    #[test]
    fn only_the_vmm_of_this_uuid_counts_as_alive() {
        let uuid: Uuid = "8c3a0b8e-5f3e-4c7e-9d2a-1b2c3d4e5f60".parse().unwrap();
        let other: Uuid = "00000000-5f3e-4c7e-9d2a-1b2c3d4e5f60".parse().unwrap();
        let argv = format!("/usr/bin/oxvirt-vmm\0--config\0/var/lib/oxvirt/run/{uuid}/vm.json\0");
        assert!(argv_is_vmm_of(argv.as_bytes(), &uuid));
        assert!(!argv_is_vmm_of(argv.as_bytes(), &other));
        let flags = format!(
            "/usr/bin/oxvirt-vmm\0--kernel\0/k\0--api-socket\0/var/lib/oxvirt/run/{uuid}/vmm-api.sock\0"
        );
        assert!(argv_is_vmm_of(flags.as_bytes(), &uuid));
        let qemu = format!("qemu-system-x86_64\0-uuid\0{uuid}\0");
        assert!(!argv_is_vmm_of(qemu.as_bytes(), &uuid));
        assert!(!argv_is_vmm_of(b"", &uuid));
    }

    /// The output plumbing of a start with a log writer: vmm.log and the last start's backups
    /// emptied, the VMM's output going through the writer's pipe, and a failure's message read
    /// once the writer has finished. The writer here is a shell's `cat`, given the arguments
    /// oxvirtd's writer mode gets (`MAX_SIZE MAX_BACKUPS OUTPUT_LOG`).
    #[tokio::test]
    async fn vmm_output_goes_through_the_log_writer() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let run = RunPaths::new(dir.path());
        std::fs::write(run.vmm_log(), "the last start\n").unwrap();
        let old_backup = RotatingFile::backup_path(&run.vmm_log(), 1);
        std::fs::write(&old_backup, "old").unwrap();
        let supervisor = Supervisor::new().with_log_writer(WriterProgram {
            program: "/bin/sh".into(),
            // Slow on purpose: the failure's message must wait for the writer.
            args: vec![
                "-c".into(),
                r#"sleep 0.3; cat >> "$3""#.into(),
                "writer".into(),
            ],
            rotation: oxvirt_logfile::Rotation {
                max_size: 1000,
                max_backups: 2,
            },
        });
        let (mut output, writer_pid) = supervisor.open_output(&run).unwrap();
        let writer_pid = writer_pid.expect("a writer was started");
        assert!(!old_backup.exists());
        assert_eq!(std::fs::read_to_string(run.vmm_log()).unwrap(), "");
        output
            .write_all(b"oxvirt-vmm: error: kernel: /k does not exist\n")
            .unwrap();
        // The VMM exits: the pipe's last write end closes.
        drop(output);
        wait_for_exit(writer_pid, Duration::from_secs(10)).await;
        assert!(!oxvirt_host::is_running(writer_pid as u32));
        assert_eq!(
            start_failure(&run),
            "oxvirt-vmm: error: kernel: /k does not exist"
        );
    }

    #[test]
    fn a_vmm_that_fails_at_start_is_reported_from_its_exit_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunPaths::new(dir.path());
        std::fs::write(
            run.vmm_log(),
            "oxvirt-vmm: error: kernel: /k does not exist\n",
        )
        .unwrap();
        assert_eq!(
            start_failure(&run),
            "oxvirt-vmm: error: kernel: /k does not exist"
        );
        std::fs::write(
            run.exit_record(),
            r#"{"reason":"error","message":"kernel: /k does not exist or is not a file"}"#,
        )
        .unwrap();
        assert_eq!(
            start_failure(&run),
            "kernel: /k does not exist or is not a file"
        );
    }

    #[test]
    fn vcpu_threads_are_known_by_their_names() {
        assert_eq!(vcpu_index("vcpu 0\n"), Some(0));
        assert_eq!(vcpu_index("vcpu 12\n"), Some(12));
        assert_eq!(vcpu_index("api-client\n"), None);
        assert_eq!(vcpu_index("vcpu x\n"), None);
        // This test process has no vCPU threads; one named like a vCPU is found.
        let named = std::thread::Builder::new()
            .name("vcpu 3".into())
            .spawn(|| {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as u32;
                let found = vcpu_threads(std::process::id());
                (tid, found)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(named.1, vec![named.0]);
    }
}
