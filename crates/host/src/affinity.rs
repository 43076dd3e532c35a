//! Which host CPUs a thread may run on (`sched_setaffinity`), and what `/proc` says about a
//! thread: the CPU it last ran on and its CPU time. For `vcpupin`, `emulatorpin` and
//! `vcpuinfo`: a guest's vCPUs and its engine's other threads are threads of one process.

use std::collections::BTreeSet;
use std::path::Path;

use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The host's online CPUs (`/sys/devices/system/cpu/online`, e.g. `0-3,6`).
pub fn online_cpus() -> BTreeSet<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|text| cpu_list(text.trim()))
        .unwrap_or_default()
}

/// `0-3,6` as a set (the kernel's list format; malformed parts are skipped).
pub(crate) fn cpu_list(text: &str) -> BTreeSet<u32> {
    let mut cpus = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => {
                if let Ok(cpu) = part.parse() {
                    cpus.insert(cpu);
                }
            }
        }
    }
    cpus
}

fn pid(tid: u32) -> std::io::Result<Pid> {
    i32::try_from(tid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "thread id 0"))
}

/// Lets thread `tid` run only on `cpus`.
pub fn set_affinity(tid: u32, cpus: &BTreeSet<u32>) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if cpu as usize >= CpuSet::MAX_CPU {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "CPU {cpu} is beyond the {} an affinity mask holds",
                    CpuSet::MAX_CPU
                ),
            ));
        }
        set.set(cpu as usize);
    }
    sched_setaffinity(Some(pid(tid)?), &set)?;
    Ok(())
}

/// The CPUs thread `tid` may run on.
pub fn affinity(tid: u32) -> std::io::Result<BTreeSet<u32>> {
    let set = sched_getaffinity(Some(pid(tid)?))?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .map(|cpu| cpu as u32)
        .collect())
}

/// The threads of process `pid` (its task ids, the main thread's equal to `pid`).
pub fn threads(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> =
        std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// What `/proc/PID/task/TID/stat` says of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStat {
    /// The CPU it last ran on.
    pub cpu: u32,
    /// User and system time, in nanoseconds.
    pub cpu_time_ns: u64,
}

/// Thread `tid` of process `pid`, or `None` if it is gone.
pub fn thread_stat(pid: u32, tid: u32) -> Option<ThreadStat> {
    let stat = std::fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_thread_stat(&stat)
}

/// How long thread `tid` of process `pid` has waited on a run queue so far, in nanoseconds
/// (the second field of `/proc/PID/task/TID/schedstat`: what libvirt reports as a vCPU's delay).
pub fn thread_delay_ns(pid: u32, tid: u32) -> Option<u64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

fn parse_thread_stat(stat: &[u8]) -> Option<ThreadStat> {
    let fields = crate::StatFields::of(stat)?;
    Some(ThreadStat {
        // "processor", the line's field 39.
        cpu: u32::try_from(fields.number(36)?).ok()?,
        cpu_time_ns: fields.cpu_ticks()?.saturating_mul(crate::ns_per_tick()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cpu_lists() {
        assert_eq!(cpu_list("0-3,6"), BTreeSet::from([0, 1, 2, 3, 6]));
        assert_eq!(cpu_list("0"), BTreeSet::from([0]));
    }

    #[test]
    fn a_thread_stat_gives_its_cpu_and_time() {
        // A real line shape: name with a space and a parenthesis.
        let stat = b"1234 (qemu (x) 1) S 1 1234 1234 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 -1 1 0 0 0 0 0";
        let parsed = parse_thread_stat(stat).unwrap();
        assert_eq!(parsed.cpu, 1);
        assert_eq!(parsed.cpu_time_ns, 300 * crate::ns_per_tick());
    }

    #[test]
    fn this_threads_affinity_reads_back() {
        let me = std::process::id();
        let mine = affinity(me).unwrap();
        assert!(!mine.is_empty());
        set_affinity(me, &mine).unwrap();
        assert_eq!(affinity(me).unwrap(), mine);
        assert!(threads(me).contains(&me));
    }
}
