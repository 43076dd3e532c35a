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
    oxvirt_host::Process::of(pid)?.cpu_time_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_time_is_readable() {
        assert!(cpu_time_ns(std::process::id()).is_some());
        assert_eq!(cpu_time_ns(u32::MAX), None);
    }
}
