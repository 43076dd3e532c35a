//! Host process helpers: reaping, killing and CPU time of guest processes.

use std::time::Duration;

use uuid::Uuid;

use super::Engine;

/// Collects `pid`'s exit status if it is our exited child (after a daemon restart it is not
/// our child any more, and init reaps it).
pub fn reap(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG only reads/writes `status`, a valid local.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// SIGKILLs `pid` if it still is the guest `uuid` (never a recycled pid).
pub async fn kill(pid: u32, uuid: &Uuid, engine: &dyn Engine) {
    if !engine.is_alive(pid, uuid).await {
        return;
    }
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; the pid was just checked to be the guest's.
    unsafe {
        libc::kill(raw, libc::SIGKILL);
    }
}

/// Kills a guest that failed to start properly and waits (bounded) until it is gone.
pub async fn kill_and_reap(pid: u32, uuid: &Uuid, engine: &dyn Engine) {
    kill(pid, uuid, engine).await;
    for _ in 0..100 {
        reap(pid);
        if !engine.is_alive(pid, uuid).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(pid, "guest process still alive after SIGKILL");
}

/// utime + stime of `pid` from /proc/PID/stat, in nanoseconds.
pub fn cpu_time_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks_from_stat(&stat).map(|ticks| ticks.saturating_mul(ns_per_tick()))
}

fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// Fields 14 and 15 (utime, stime) of a stat line; the command name (field 2) may contain
/// spaces and parentheses, so count from the last ')'.
fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_ticks_from_stat(stat), Some(300));
        assert_eq!(cpu_ticks_from_stat("garbage"), None);
    }

    #[test]
    fn own_process_cpu_time_is_readable() {
        assert!(cpu_time_ns(std::process::id()).is_some());
        assert_eq!(cpu_time_ns(u32::MAX), None);
    }
}
