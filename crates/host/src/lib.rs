//! oxvirt-host: what the host's kernel says about a process, read from `/proc`, in one place;
//! its resident memory ([`resident_kib`]);
//! host devices for passthrough as sysfs shows them ([`devices`]); and the one mutex helper
//! the engines and the daemon share ([`lock`]); `oxvirt host validate`'s checks ([`validate`])
//! and its test of `/dev/kvm` ([`kvm_probe`]); the pools of user ids confined guest processes run
//! as ([`ids`]).
//!
//! Both engines must recognise their own guest processes again after a daemon restart (by pid
//! and by what the process' command line says), without mistaking a recycled pid or a zombie
//! for a live VM; the daemon reports their CPU time. [`Process::of`] reads `/proc/PID/stat` and
//! `/proc/PID/cmdline` once; each engine states its own rule over the result
//! (`oxvirt_qemu::is_alive`, `oxvirt_native::is_alive`).

// Only the KVM probe needs unsafe code (guest memory, a memory region); it allows it itself.
#![deny(unsafe_code)]

pub mod affinity;
pub mod cgroup;
pub mod devices;
pub mod ids;
#[allow(unsafe_code)]
pub mod kvm_probe;
pub mod node;
pub mod topology;
pub mod tune;
pub mod validate;
mod view;

pub use view::HostView;

use std::path::Path;

/// A process as `/proc` shows it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The state letter of `/proc/PID/stat` (R, S, D, Z, X, ...).
    pub state: char,
    /// User and system time, in clock ticks (`None` if the line is cut short).
    pub cpu_ticks: Option<u64>,
    /// Its arguments, argv\[0\] first (lossily decoded: only compared against ASCII).
    pub argv: Vec<String>,
}

impl Process {
    /// The process `pid`, or `None` if there is none (or `/proc` cannot be read).
    pub fn of(pid: u32) -> Option<Process> {
        if pid == 0 {
            return None;
        }
        let dir = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read(dir.join("stat")).ok()?;
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        Process::parse(&stat, &cmdline)
    }

    /// `stat` is `/proc/PID/stat`: the fields after the parenthesised command name, which may
    /// itself contain spaces and parentheses, so they are counted from the last `)`.
    /// `cmdline` is the NUL-separated argv.
    pub fn parse(stat: &[u8], cmdline: &[u8]) -> Option<Process> {
        let fields = StatFields::of(stat)?;
        let state = fields.0.first()?.chars().next()?;
        let argv = cmdline
            .split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        Some(Process {
            state,
            cpu_ticks: fields.cpu_ticks(),
            argv,
        })
    }

    /// Alive: neither a zombie nor dead (`Z`, `X`, `x`).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// The file name of argv\[0\] (`qemu-system-x86_64` for `/usr/bin/qemu-system-x86_64`).
    pub fn program(&self) -> Option<&str> {
        self.argv.first().map(|p| p.rsplit('/').next().unwrap_or(p))
    }

    /// CPU time in nanoseconds, if the kernel said.
    pub fn cpu_time_ns(&self) -> Option<u64> {
        self.cpu_ticks.map(|t| t.saturating_mul(ns_per_tick()))
    }
}

/// The fields of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line after the
/// parenthesised command name, which may itself hold spaces and parentheses, so they are
/// counted from the last `)`: index 0 is the state (the line's field 3).
pub(crate) struct StatFields(Vec<String>);

impl StatFields {
    pub(crate) fn of(stat: &[u8]) -> Option<StatFields> {
        let close = stat.iter().rposition(|&b| b == b')')?;
        let after = String::from_utf8_lossy(&stat[close + 1..]);
        Some(StatFields(
            after.split_whitespace().map(str::to_string).collect(),
        ))
    }

    /// The number at `index` (field `index + 3` of the line).
    pub(crate) fn number(&self, index: usize) -> Option<u64> {
        self.0.get(index).and_then(|f| f.parse().ok())
    }

    /// User and system time (fields 14 and 15), in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> Option<u64> {
        Some(self.number(11)?.saturating_add(self.number(12)?))
    }
}

/// Locks `mutex` even if a thread panicked while holding it. Every mutex this is used for guards
/// plain field or map updates that a panic cannot leave half done, so the data is still whole.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `pid` is a process that has not ended (a zombie has).
pub fn is_running(pid: u32) -> bool {
    Process::of(pid).is_some_and(|p| p.is_running())
}

/// The resident memory of process `pid` in KiB (`VmRSS:` of `/proc/PID/status`, what
/// virsh dommemstat calls `rss`); `None` if it has ended or the kernel does not say.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    node::meminfo_value(&status, "VmRSS")
}

/// The real user and group ids of process `pid` (`Uid:` and `Gid:` of `/proc/PID/status`,
/// their first field), or `None` if it has ended.
pub fn real_ids(pid: u32) -> Option<(u32, u32)> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let first_id = |key: &str| -> Option<u32> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.split_whitespace().next()?.parse().ok()
    };
    Some((first_id("Uid:")?, first_id("Gid:")?))
}

/// The user and the system time of process `pid` so far, in nanoseconds (`/proc/PID/stat`'s
/// utime and stime), or `None` if it is gone.
pub fn user_and_system_ns(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    let fields = StatFields::of(&stat)?;
    let tick = ns_per_tick();
    Some((
        fields.number(11)?.saturating_mul(tick),
        fields.number(12)?.saturating_mul(tick),
    ))
}

/// Nanoseconds per clock tick of `/proc` (the kernel's USER_HZ, what sysconf(_SC_CLK_TCK) says).
fn ns_per_tick() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 10_000_000,
        hz => 1_000_000_000 / hz,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = b"1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        let p = Process::parse(stat, b"/usr/bin/qemu-system-x86_64\0-uuid\0abc\0").unwrap();
        assert_eq!(p.state, 'S');
        assert_eq!(p.cpu_ticks, Some(300));
        assert_eq!(p.argv, ["/usr/bin/qemu-system-x86_64", "-uuid", "abc"]);
        assert_eq!(p.program(), Some("qemu-system-x86_64"));
        assert!(p.is_running());
        assert_eq!(Process::parse(b"garbage", b""), None);
        let zombie = b"7 (x) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0";
        assert!(!Process::parse(zombie, b"").unwrap().is_running());
        assert_eq!(Process::parse(b"1 (x) S 1", b"").unwrap().cpu_ticks, None);
    }

    #[test]
    fn resident_memory_is_vmrss() {
        assert_eq!(
            node::meminfo_value(
                "Name:\tqemu\nVmPeak:\t  900 kB\nVmRSS:\t   123456 kB\n",
                "VmRSS"
            ),
            Some(123456)
        );
        assert_eq!(node::meminfo_value("Name:\tkthreadd\n", "VmRSS"), None);
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn this_process_is_seen_and_a_missing_one_is_not() {
        let me = Process::of(std::process::id()).expect("our own /proc entry");
        assert!(me.is_running());
        assert!(!me.argv.is_empty());
        assert!(Process::of(u32::MAX).is_none());
        assert!(!is_running(0));
    }

    #[test]
    fn real_ids_are_the_kernels() {
        let (uid, gid) = real_ids(std::process::id()).expect("our own /proc entry");
        assert_eq!(uid, rustix::process::getuid().as_raw());
        assert_eq!(gid, rustix::process::getgid().as_raw());
        assert_eq!(real_ids(u32::MAX), None);
    }
}
