//! Seccomp filters: each VMM thread may only make the system calls its role needs.
//!
//! Filters are compiled once, before any guest code runs ([`Filters::compile`]), and each thread installs
//! the one for its role when it starts ([`Filters::apply`]): vCPU threads before their first `KVM_RUN`, the
//! API and serial-input threads before they accept input, the main thread once every thread is started.
//! Everything the guest can influence (opening files, mapping memory, creating the TAP device) is done
//! before; afterwards no thread can open a file, create a socket or run a program.
//!
//! Filters are per thread and inherited by the threads a filtered thread creates, and stacked filters all
//! have to allow a call. Virtio device workers are started by the vCPU thread that writes DRIVER_OK, so
//! they inherit the vCPU filter: that is why the vCPU role includes what the workers do (disk and TAP I/O,
//! epoll, getrandom for virtio-rng) and may start threads (`clone` with `CLONE_THREAD` only; `clone3`,
//! whose flags a filter cannot read, fails with ENOSYS so the C library falls back to `clone`).
//!
//! The one exception is the API thread's `save` request: it opens the existing state file its caller
//! names, for writing only (never creating or truncating a file, never reading one), and reads the KVM
//! state of the paused vCPUs and the VM. `save-fd` (what a jailed VMM is given, `crate::jail`) writes
//! into a descriptor received with the request instead, and opens nothing.
//!
//! Opening files is refused with EACCES rather than killing: glibc's allocator opens
//! `/proc/sys/vm/overcommit_memory` once, lazily, the first time a thread arena shrinks, and copes with the
//! failure. Every other call outside the list kills the process.
//!
//! Rules are x86-64 only (the VMM is x86-64 only). `ioctl` is restricted by request number.

use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

pub use crate::protocol::SeccompMode;

/// `--seccomp on|log|off`.
impl std::str::FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(SeccompMode::On),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            _ => Err(format!("invalid --seccomp {s:?}: use on, log or off")),
        }
    }
}

/// The thread roles, each with its own list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// Runs KVM_RUN and handles exits; starts (and so shares its filter with) the virtio device workers.
    Vcpu,
    /// Waits for the exit request, kicks and joins the vCPUs, tears everything down.
    Main,
    /// The control API listener and its per-client threads.
    Api,
    /// Feeds console input (stdin or the serial socket's client) to the UART.
    SerialInput,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter for {role:?} threads: {source}")]
    Build {
        role: ThreadRole,
        source: seccompiler::BackendError,
    },
    #[error("cannot build the seccomp filter refusing {calls}: {source}")]
    BuildRefusal {
        calls: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("cannot install the seccomp filter for {role:?} threads: {source}")]
    Install {
        role: ThreadRole,
        source: seccompiler::Error,
    },
}

/// Compiled filters for every role (empty when seccomp is off).
pub struct Filters {
    /// Installed first on every thread but the API's: `open`/`openat` fail with EACCES (see the module docs).
    no_open: Option<BpfProgram>,
    /// The API thread's: the same, except `openat` of an existing file for writing only (`save`).
    no_open_but_save: Option<BpfProgram>,
    /// Installed first on threads that may start threads: turns `clone3` into ENOSYS.
    no_clone3: Option<BpfProgram>,
    vcpu: Option<BpfProgram>,
    main: Option<BpfProgram>,
    api: Option<BpfProgram>,
    serial_input: Option<BpfProgram>,
}

impl Filters {
    /// Compiles every role's filter for `mode`.
    pub fn compile(mode: SeccompMode) -> Result<Arc<Filters>, SeccompError> {
        let mismatch = match mode {
            SeccompMode::Off => return Ok(Arc::new(Filters::disabled())),
            SeccompMode::On => SeccompAction::KillProcess,
            SeccompMode::Log => SeccompAction::Log,
        };
        let build = |role| build_filter(role, mismatch.clone()).map(Some);
        let refusal = |name, calls: &[libc::c_long], errno| {
            refusal_filter(calls, errno)
                .map(Some)
                .map_err(|source| SeccompError::BuildRefusal {
                    calls: name,
                    source,
                })
        };
        Ok(Arc::new(Filters {
            no_open: refusal("open", &[libc::SYS_open, libc::SYS_openat], libc::EACCES)?,
            no_open_but_save: save_open_filter().map(Some).map_err(|source| {
                SeccompError::BuildRefusal {
                    calls: "open except for saving",
                    source,
                }
            })?,
            no_clone3: refusal("clone3", &[libc::SYS_clone3], libc::ENOSYS)?,
            vcpu: build(ThreadRole::Vcpu)?,
            main: build(ThreadRole::Main)?,
            api: build(ThreadRole::Api)?,
            serial_input: build(ThreadRole::SerialInput)?,
        }))
    }

    /// No filters at all (`--seccomp off`, and tests of other modules).
    pub fn disabled() -> Filters {
        Filters {
            no_open: None,
            no_open_but_save: None,
            no_clone3: None,
            vcpu: None,
            main: None,
            api: None,
            serial_input: None,
        }
    }

    /// Installs `role`'s filter on the calling thread (and so on every thread it starts later).
    pub fn apply(&self, role: ThreadRole) -> Result<(), SeccompError> {
        let program = match role {
            ThreadRole::Vcpu => &self.vcpu,
            ThreadRole::Main => &self.main,
            ThreadRole::Api => &self.api,
            ThreadRole::SerialInput => &self.serial_input,
        };
        let Some(program) = program else {
            return Ok(());
        };
        let install = |program: &BpfProgram| {
            seccompiler::apply_filter(program)
                .map_err(|source| SeccompError::Install { role, source })
        };
        let no_open = match role {
            ThreadRole::Api => &self.no_open_but_save,
            _ => &self.no_open,
        };
        if let Some(no_open) = no_open {
            install(no_open)?;
        }
        if role_starts_threads(role) {
            if let Some(no_clone3) = &self.no_clone3 {
                install(no_clone3)?;
            }
        }
        install(program)
    }
}

fn role_starts_threads(role: ThreadRole) -> bool {
    matches!(role, ThreadRole::Vcpu | ThreadRole::Api)
}

// ioctl request numbers (`_IO`/`_IOW` of <linux/kvm.h>), computed from the argument structures' sizes.
const fn ioc(dir: u32, nr: u32, size: usize) -> u64 {
    const KVMIO: u32 = 0xae;
    ((dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr) as u64
}
const IOC_WRITE: u32 = 1;
pub(crate) const KVM_RUN: u64 = ioc(0, 0x80, 0);
pub(crate) const KVM_IRQ_LINE: u64 = ioc(
    IOC_WRITE,
    0x61,
    std::mem::size_of::<kvm_bindings::kvm_irq_level>(),
);
pub(crate) const KVM_SIGNAL_MSI: u64 = ioc(
    IOC_WRITE,
    0xa5,
    std::mem::size_of::<kvm_bindings::kvm_msi>(),
);
pub(crate) const KVM_IOEVENTFD: u64 = ioc(
    IOC_WRITE,
    0x79,
    std::mem::size_of::<kvm_bindings::kvm_ioeventfd>(),
);
const IOC_READ: u32 = 2;
const fn ior<T>(nr: u32) -> u64 {
    ioc(IOC_READ, nr, std::mem::size_of::<T>())
}
/// What saving the machine state reads (crate::kvm_state): each vCPU's state, then the VM's.
pub(crate) const KVM_SAVE_IOCTLS: [u64; 13] = [
    ior::<kvm_bindings::kvm_mp_state>(0x98),
    ior::<kvm_bindings::kvm_regs>(0x81),
    ior::<kvm_bindings::kvm_sregs>(0x83),
    ior::<kvm_bindings::kvm_xsave>(0xa4),
    ior::<kvm_bindings::kvm_xcrs>(0xa6),
    ior::<kvm_bindings::kvm_debugregs>(0xa1),
    ior::<kvm_bindings::kvm_lapic_state>(0x8e),
    ioc(
        IOC_READ | IOC_WRITE,
        0x88,
        std::mem::size_of::<kvm_bindings::kvm_msrs>(),
    ),
    ior::<kvm_bindings::kvm_vcpu_events>(0x9f),
    ioc(0, 0xa3, 0), // KVM_GET_TSC_KHZ
    ioc(
        IOC_READ | IOC_WRITE,
        0x62,
        std::mem::size_of::<kvm_bindings::kvm_irqchip>(),
    ),
    ior::<kvm_bindings::kvm_pit_state2>(0x9f),
    ior::<kvm_bindings::kvm_clock_data>(0x7c),
];

/// What a live migration's source adds (`migrate-send-fd`): the RAM slots' dirty logging turned on
/// and off, and the log read.
pub(crate) const KVM_DIRTY_LOG_IOCTLS: [u64; 2] = [
    ioc(
        IOC_WRITE,
        0x46,
        std::mem::size_of::<kvm_bindings::kvm_userspace_memory_region>(),
    ),
    ioc(
        IOC_WRITE,
        0x42,
        std::mem::size_of::<kvm_bindings::kvm_dirty_log>(),
    ),
];

/// Rules for one system call: unconditional, or "any of these rules".
type Rules = Vec<(libc::c_long, Vec<SeccompRule>)>;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Argument indexes and lengths are constants below 6; `new` only fails on invalid indexes.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .unwrap_or_else(|e| unreachable!("invalid seccomp condition on argument {arg}: {e}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions)
        .unwrap_or_else(|e| unreachable!("a seccomp rule needs at least one condition: {e}"))
}

/// `ioctl(fd, request, ...)` for the listed requests only.
fn ioctls(requests: &[u64]) -> (libc::c_long, Vec<SeccompRule>) {
    (
        libc::SYS_ioctl,
        requests
            .iter()
            .map(|r| rule(vec![cond(1, SeccompCmpOp::Eq, *r)]))
            .collect(),
    )
}

fn always(calls: &[libc::c_long]) -> Rules {
    calls.iter().map(|c| (*c, Vec::new())).collect()
}

/// What every thread does: memory allocation (never executable), locks, signal delivery (the vCPU kick
/// and the SIGTERM handler may run on any thread: they write an eventfd and return), time, thread exit,
/// and writing to already-open descriptors (stderr, eventfds, the console).
fn common_rules() -> Rules {
    let no_exec = |arg| {
        rule(vec![cond(
            arg,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )])
    };
    let mut rules = always(&[
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_read,
        libc::SYS_close,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_getpid,
        libc::SYS_gettid,
        // std's hash maps seed themselves per thread.
        libc::SYS_getrandom,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // Answered EACCES by the no-open filter stacked before this one.
        libc::SYS_open,
        libc::SYS_openat,
    ]);
    rules.push((libc::SYS_mmap, vec![no_exec(2)]));
    // Descriptor flags (std checks a descriptor with F_GETFD before closing it in debug builds), duplicating
    // (`try_clone`), and the OFD locks disk images hold.
    rules.push((
        libc::SYS_fcntl,
        [
            libc::F_GETFD,
            libc::F_SETFD,
            libc::F_GETFL,
            libc::F_SETFL,
            libc::F_DUPFD_CLOEXEC,
            libc::F_OFD_GETLK,
            libc::F_OFD_SETLK,
            libc::F_OFD_SETLKW,
        ]
        .iter()
        .map(|cmd| rule(vec![cond(1, SeccompCmpOp::Eq, *cmd as u64)]))
        .collect(),
    ));
    rules.push((libc::SYS_mprotect, vec![no_exec(2)]));
    // pthread_kill (vCPU kicks) and abort(): signals to threads of this process only.
    rules.push((
        libc::SYS_tgkill,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            u64::from(std::process::id()),
        )])],
    ));
    rules
}

/// Starting threads: `clone` for threads only (no new processes), and what a new thread does before
/// running its code (robust futex list, rseq, naming itself, reading its stack attributes).
fn thread_start_rules() -> Rules {
    let mut rules = always(&[
        libc::SYS_clone3, // answered ENOSYS by the no-clone3 filter stacked before this one
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_getaffinity,
    ]);
    let clone_thread = libc::CLONE_THREAD as u64;
    rules.push((
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(clone_thread),
            clone_thread,
        )])],
    ));
    rules.push((
        libc::SYS_prctl,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::PR_SET_NAME as u64,
        )])],
    ));
    rules
}

fn role_rules(role: ThreadRole) -> Rules {
    let mut rules = common_rules();
    match role {
        ThreadRole::Vcpu => {
            rules.extend(thread_start_rules());
            rules.push(ioctls(&[
                KVM_RUN,
                // The PM device's SCI line, written by the guest's PM register accesses.
                KVM_IRQ_LINE,
                // MSI-X messages (vCPU: unmasking a pending vector; device workers: used buffers).
                KVM_SIGNAL_MSI,
                // Queue notification addresses move with the BAR the guest programs.
                KVM_IOEVENTFD,
            ]));
            // The guest's serial output goes to the console socket's client from the vCPU that
            // wrote the UART register; std's UnixStream sends with send(MSG_NOSIGNAL) = sendto.
            rules.extend(always(&[libc::SYS_sendto]));
            // Device activation on DRIVER_OK (worker setup) and the device workers themselves.
            rules.extend(always(&[
                libc::SYS_eventfd2,
                libc::SYS_epoll_create1,
                libc::SYS_epoll_ctl,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_readv,
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_preadv2,
                libc::SYS_pwritev2,
                libc::SYS_lseek,
                libc::SYS_fsync,
                libc::SYS_fdatasync,
                libc::SYS_ftruncate,
                libc::SYS_fallocate,
                libc::SYS_fstat,
                libc::SYS_newfstatat,
                libc::SYS_statx,
                // The balloon worker's statistics timer (created at build, re-armed by the worker).
                libc::SYS_timerfd_settime,
            ]));
        }
        ThreadRole::Main => {
            rules.extend(always(&[
                // Removing the API socket at exit.
                libc::SYS_unlink,
                libc::SYS_unlinkat,
                // Publishing the exit record: its file was created before the filters, and is
                // renamed into place once written (protocol/exit.rs).
                libc::SYS_rename,
                libc::SYS_renameat,
                libc::SYS_renameat2,
                // Tearing devices down: disk backends may flush on drop.
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_fsync,
                libc::SYS_fdatasync,
            ]));
            // Restoring the terminal (tcsetattr) at exit.
            rules.push(ioctls(&[
                libc::TCGETS,
                libc::TCSETS,
                libc::TCSETSW,
                libc::TCSETSF,
            ]));
        }
        ThreadRole::Api => {
            rules.extend(thread_start_rules());
            rules.extend(always(&[
                libc::SYS_accept4,
                libc::SYS_recvfrom,
                // Requests are read with recvmsg: `save-fd`'s file comes as SCM_RIGHTS.
                libc::SYS_recvmsg,
                libc::SYS_sendto,
                libc::SYS_shutdown,
            ]));
            // "poweroff" raises the SCI line; "save" reads the KVM state; "balloon" sends the
            // balloon's configuration-change MSI, and pausing it for "save" the statistics queue's.
            let mut requests = vec![KVM_IRQ_LINE, KVM_SIGNAL_MSI];
            requests.extend(KVM_SAVE_IOCTLS);
            requests.extend(KVM_DIRTY_LOG_IOCTLS);
            rules.push(ioctls(&requests));
            // "save": into the file opened (see `save_open_filter`) at its offset, then synced;
            // the disks are flushed first (virtio-blk's pause).
            rules.extend(always(&[
                libc::SYS_lseek,
                libc::SYS_fsync,
                libc::SYS_fdatasync,
            ]));
        }
        ThreadRole::SerialInput => {
            rules.extend(always(&[
                libc::SYS_accept4,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
            ]));
        }
    }
    rules
}

fn build_filter(role: ThreadRole, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut map = std::collections::BTreeMap::<i64, Vec<SeccompRule>>::new();
        for (call, rules) in role_rules(role) {
            map.entry(call).or_default().extend(rules);
        }
        let filter = SeccompFilter::new(map, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
        filter.try_into()
    };
    build().map_err(|source| SeccompError::Build { role, source })
}

/// A filter failing `calls` with `errno` and allowing everything else (the allowlist stacked after it
/// decides about the rest).
fn refusal_filter(
    calls: &[libc::c_long],
    errno: libc::c_int,
) -> Result<BpfProgram, seccompiler::BackendError> {
    let map = calls.iter().map(|c| (*c, Vec::new())).collect();
    SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )?
    .try_into()
}

/// The API thread's open filter: like [`refusal_filter`] for `open` and `openat`, except that `openat` of
/// an existing file for writing only (O_WRONLY without O_CREAT or O_TRUNC: how `save` opens the state
/// file) goes on to the allowlist.
fn save_open_filter() -> Result<BpfProgram, seccompiler::BackendError> {
    let flags = |mask: libc::c_int, value: libc::c_int| {
        rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(mask as u64),
            value as u64,
        )])
    };
    let refused_openat = vec![
        flags(libc::O_ACCMODE, libc::O_RDONLY),
        flags(libc::O_ACCMODE, libc::O_RDWR),
        flags(libc::O_CREAT, libc::O_CREAT),
        flags(libc::O_TRUNC, libc::O_TRUNC),
    ];
    let map = [
        (libc::SYS_open, Vec::new()),
        (libc::SYS_openat, refused_openat),
    ]
    .into_iter()
    .collect();
    SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )?
    .try_into()
}

/// Test-only hook for the lab: when the VMM starts with this variable set to `vcpu`, vCPU 0 makes a
/// forbidden system call (`socket`) right after installing its filter, to prove the filter kills the
/// process. It can only make the VMM die; it is read once at start.
pub const SELFTEST_ENV: &str = "OXVIRT_VMM_TEST_SECCOMP_VIOLATION";

/// Whether the test-only violation was requested (see [`SELFTEST_ENV`]).
pub fn selftest_requested() -> bool {
    std::env::var_os(SELFTEST_ENV).is_some_and(|v| v == "vcpu")
}

/// Makes the forbidden call of the self-test.
pub fn selftest_violate() {
    // SAFETY: socket(2) with constant arguments; the result (if the filter lets it through) is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const ROLES: [ThreadRole; 4] = [
        ThreadRole::Vcpu,
        ThreadRole::Main,
        ThreadRole::Api,
        ThreadRole::SerialInput,
    ];

    #[test]
    fn every_role_compiles_in_both_enforcing_modes_and_off_has_none() {
        for mode in [SeccompMode::On, SeccompMode::Log] {
            let filters = Filters::compile(mode).unwrap();
            for program in [
                &filters.vcpu,
                &filters.main,
                &filters.api,
                &filters.serial_input,
                &filters.no_clone3,
                &filters.no_open,
            ] {
                let len = program.as_ref().map_or(0, |p| p.len());
                // BPF programs are limited to 4096 instructions.
                assert!(len > 0 && len < 4096, "{mode:?}: {len} instructions");
            }
        }
        let off = Filters::compile(SeccompMode::Off).unwrap();
        assert!(off.vcpu.is_none() && off.main.is_none() && off.api.is_none());
        assert!(off.apply(ThreadRole::Vcpu).is_ok());
    }

    #[test]
    fn mode_parses_from_the_command_line_words() {
        assert_eq!("on".parse::<SeccompMode>(), Ok(SeccompMode::On));
        assert_eq!("log".parse::<SeccompMode>(), Ok(SeccompMode::Log));
        assert_eq!("off".parse::<SeccompMode>(), Ok(SeccompMode::Off));
        assert!("yes"
            .parse::<SeccompMode>()
            .unwrap_err()
            .contains("on, log or off"));
    }

    #[test]
    fn ioctl_numbers_match_linux_kvm_h() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_IRQ_LINE, 0x4008_ae61);
        assert_eq!(KVM_SIGNAL_MSI, 0x4020_aea5);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        // <linux/kvm.h> on x86-64: KVM_GET_REGS, KVM_GET_MSRS, KVM_GET_IRQCHIP, KVM_GET_CLOCK.
        assert!(KVM_SAVE_IOCTLS.contains(&0x8090_ae81));
        assert!(KVM_SAVE_IOCTLS.contains(&0xc008_ae88));
        assert!(KVM_SAVE_IOCTLS.contains(&0xc208_ae62));
        assert!(KVM_SAVE_IOCTLS.contains(&0x8030_ae7c));
        // KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG.
        assert_eq!(KVM_DIRTY_LOG_IOCTLS, [0x4020_ae46, 0x4010_ae42]);
    }

    #[test]
    fn no_role_may_create_sockets_or_run_programs() {
        let forbidden = [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_bind,
        ];
        for role in ROLES {
            let calls: BTreeSet<_> = role_rules(role).into_iter().map(|(c, _)| c).collect();
            for call in forbidden {
                assert!(!calls.contains(&call), "{role:?} allows syscall {call}");
            }
        }
        // Only threads that start device workers or API clients may clone.
        for role in [ThreadRole::Main, ThreadRole::SerialInput] {
            assert!(!role_rules(role)
                .iter()
                .any(|(c, _)| *c == libc::SYS_clone || *c == libc::SYS_clone3));
        }
    }

    /// Runs `body` in a forked child with `role`'s filter installed (enforcing); returns how it ended.
    fn in_filtered_child(role: ThreadRole, body: impl FnOnce()) -> libc::c_int {
        let filters = Filters::compile(SeccompMode::On).unwrap();
        // SAFETY: the child only installs the filter, runs `body` and leaves with _exit; the parent waits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                if filters.apply(role).is_err() {
                    libc::_exit(2);
                }
                body();
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    /// What a vCPU thread and the device workers it starts do, on this host's kernel and C library.
    /// `file` stands for a disk image, opened before the filter like the VMM does.
    fn vcpu_and_worker_work(file: std::fs::File) {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::FileExt;
        let worker = std::thread::Builder::new()
            .name("virtio-blk".into())
            .spawn(move || {
                let mut file = file;
                let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
                let epoll = vmm_sys_util::epoll::Epoll::new().unwrap();
                let clone = evt.try_clone().unwrap();
                use std::os::fd::AsRawFd;
                epoll
                    .ctl(
                        vmm_sys_util::epoll::ControlOperation::Add,
                        clone.as_raw_fd(),
                        vmm_sys_util::epoll::EpollEvent::new(vmm_sys_util::epoll::EventSet::IN, 1),
                    )
                    .unwrap();
                evt.write(1).unwrap();
                let mut events = [vmm_sys_util::epoll::EpollEvent::default(); 4];
                assert_eq!(epoll.wait(-1, &mut events).unwrap(), 1);
                file.write_all_at(b"sector", 512).unwrap();
                let mut buf = [0u8; 6];
                file.read_exact_at(&mut buf, 512).unwrap();
                assert_eq!(&buf, b"sector");
                file.sync_data().unwrap();
                file.sync_all().unwrap();
                assert!(file.metadata().unwrap().len() >= 518);
                file.rewind().unwrap();
                file.write_all(b"x").unwrap();
                let mut rest = Vec::new();
                file.read_to_end(&mut rest).unwrap();
                let mut random = [0u8; 16];
                // SAFETY: getrandom writes at most the buffer's length into it.
                let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
                assert_eq!(got, 16);
                let map: std::collections::HashMap<u32, Vec<u8>> =
                    (0..100).map(|i| (i, vec![0u8; 100_000])).collect();
                assert_eq!(map.len(), 100);
            })
            .unwrap_or_else(|_| {
                // SAFETY: leaving the forked child at once, without running its parent's exit
                // handlers.
                unsafe { libc::_exit(4) }
            });
        if worker.join().is_err() {
            // SAFETY: leaving the child process.
            unsafe { libc::_exit(5) };
        }
    }

    #[test]
    fn vcpu_filter_lets_device_work_through_on_this_host() {
        let image = tempfile::tempfile().unwrap();
        let status = in_filtered_child(ThreadRole::Vcpu, || vcpu_and_worker_work(image));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x} (signal {})",
            libc::WTERMSIG(status)
        );
    }

    #[test]
    fn forbidden_calls_kill_the_process_with_sigsys() {
        fn run_program() {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: execve with a constant path and a NULL-terminated argv; the child is killed first.
            unsafe {
                libc::execve(argv[0], argv.as_ptr(), std::ptr::null());
            }
        }
        fn spawn_process() {
            // SAFETY: a raw fork-like clone without CLONE_THREAD; if allowed the grandchild leaves at once.
            unsafe {
                if libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) == 0 {
                    libc::_exit(0);
                }
            }
        }
        fn raw_ioctl() {
            // KVM_CREATE_VM on stdin: not in the list, whatever the descriptor.
            // SAFETY: the call is refused before the kernel looks at the descriptor.
            unsafe {
                libc::ioctl(0, 0xae01, 0);
            }
        }
        let cases: [(ThreadRole, fn()); 6] = [
            (ThreadRole::Vcpu, selftest_violate),
            (ThreadRole::Vcpu, run_program),
            (ThreadRole::Api, run_program),
            (ThreadRole::Vcpu, spawn_process),
            (ThreadRole::Vcpu, raw_ioctl),
            (ThreadRole::Main, spawn_process),
        ];
        for (role, body) in cases {
            let status = in_filtered_child(role, body);
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                "{role:?}: status {status:#x}"
            );
        }
    }

    #[test]
    fn opening_files_fails_with_eacces_in_every_role() {
        fn open_file() {
            // SAFETY: openat with a constant path; a descriptor it returns is never used.
            let fd =
                unsafe { libc::openat(libc::AT_FDCWD, c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            let refused =
                fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES);
            // SAFETY: leaving the child process with the verdict as status.
            unsafe { libc::_exit(if refused { 0 } else { 1 }) };
        }
        for role in ROLES {
            let status = in_filtered_child(role, open_file);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{role:?}: status {status:#x}"
            );
        }
    }

    #[test]
    fn the_api_thread_may_open_an_existing_file_for_writing_only() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("state");
        std::fs::write(&existing, b"header").unwrap();
        let missing = dir.path().join("missing");
        let status = in_filtered_child(ThreadRole::Api, || {
            use std::io::{Seek, Write};
            let refused = |r: std::io::Result<std::fs::File>| {
                r.is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
            };
            let mut file = match std::fs::OpenOptions::new().write(true).open(&existing) {
                Ok(file) => file,
                // SAFETY: leaving the child process with the verdict as status.
                Err(_) => unsafe { libc::_exit(1) },
            };
            let wrote = file.seek(std::io::SeekFrom::Start(6)).is_ok()
                && file.write_all(b"state").is_ok()
                && file.sync_all().is_ok();
            let others_refused = refused(std::fs::File::open(&existing))
                && refused(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&existing),
                )
                && refused(std::fs::File::create(&existing))
                && refused(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&missing),
                );
            // SAFETY: leaving the child process with the verdict as status.
            unsafe { libc::_exit(if wrote && others_refused { 0 } else { 2 }) };
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        assert_eq!(std::fs::read(&existing).unwrap(), b"headerstate");
    }
}
