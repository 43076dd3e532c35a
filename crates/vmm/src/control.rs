//! Run state shared by the vCPU threads, the devices, the API server and the main thread.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::lock;

/// Why the VM stopped: the exit record's reason (one type from the vCPU exit to the file).
pub use crate::protocol::ExitReason;

#[derive(Debug, Default)]
struct State {
    exit: Option<ExitReason>,
    paused: bool,
    /// Paused before the guest's first instruction (`start_paused`), until the first resume.
    created: bool,
    parked: usize,
}

pub struct VmControl {
    state: Mutex<State>,
    changed: Condvar,
    /// Signalled once when an exit is requested; the main thread waits on it.
    pub exit_evt: EventFd,
    vcpus: usize,
}

impl VmControl {
    pub fn new(vcpus: usize) -> std::io::Result<Self> {
        Ok(VmControl {
            state: Mutex::default(),
            changed: Condvar::new(),
            exit_evt: EventFd::new(0)?,
            vcpus,
        })
    }

    /// Records the first exit reason and wakes everybody. Later requests keep the first reason.
    pub fn request_exit(&self, reason: ExitReason) {
        let mut s = lock(&self.state);
        if s.exit.is_none() {
            s.exit = Some(reason);
            let _ = self.exit_evt.write(1);
        }
        self.changed.notify_all();
    }

    pub fn exit_reason(&self) -> Option<ExitReason> {
        lock(&self.state).exit.clone()
    }

    pub fn is_paused(&self) -> bool {
        lock(&self.state).paused
    }

    /// Called by a vCPU thread between runs: blocks while paused. Returns true when the VM is stopping.
    pub fn park_while_paused(&self) -> bool {
        let mut s = lock(&self.state);
        while s.paused && s.exit.is_none() {
            s.parked += 1;
            self.changed.notify_all();
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            s.parked -= 1;
        }
        s.exit.is_some()
    }

    /// Pauses the vCPUs: sets the flag, then kicks them out of KVM_RUN (`kick`) until all have parked.
    pub fn pause(&self, kick: impl Fn()) -> Result<(), String> {
        lock(&self.state).paused = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            kick();
            let s = lock(&self.state);
            if s.parked == self.vcpus || s.exit.is_some() {
                return Ok(());
            }
            let (s, _) = self
                .changed
                .wait_timeout(s, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner());
            if s.parked == self.vcpus || s.exit.is_some() {
                return Ok(());
            }
            drop(s);
            if Instant::now() > deadline {
                return Err("vCPUs did not stop within 5 s".into());
            }
        }
    }

    /// Before the vCPU threads start: they park at once, until [`Self::resume`] (a restored VM).
    pub fn start_paused(&self) {
        lock(&self.state).paused = true;
    }

    /// Before the vCPU threads start: they park at once, before the guest's first instruction,
    /// until [`Self::resume`]; [`Self::is_created`] says so meanwhile (`VmConfig::start_paused`).
    pub fn start_created(&self) {
        let mut s = lock(&self.state);
        s.paused = true;
        s.created = true;
    }

    /// Whether the guest has not run yet: started paused and never resumed.
    pub fn is_created(&self) -> bool {
        lock(&self.state).created
    }

    /// Whether every vCPU is parked (paused and out of KVM_RUN).
    pub fn all_parked(&self) -> bool {
        let s = lock(&self.state);
        s.paused && s.parked == self.vcpus
    }

    pub fn resume(&self) {
        let mut s = lock(&self.state);
        s.paused = false;
        s.created = false;
        drop(s);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_exit_reason_wins() {
        let c = VmControl::new(1).unwrap();
        c.request_exit(ExitReason::GuestReset);
        c.request_exit(ExitReason::GuestPoweroff);
        assert_eq!(c.exit_reason(), Some(ExitReason::GuestReset));
        assert_eq!(c.exit_evt.read().unwrap(), 1);
    }

    #[test]
    fn pause_waits_for_every_vcpu_to_park_and_resume_releases_them() {
        let c = Arc::new(VmControl::new(2).unwrap());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !c.park_while_paused() {
                        rounds += 1;
                        std::thread::yield_now();
                    }
                    rounds
                })
            })
            .collect();
        c.pause(|| {}).unwrap();
        assert!(c.is_paused());
        c.resume();
        c.request_exit(ExitReason::HostStop);
        for t in threads {
            t.join().unwrap();
        }
    }

    /// `start_paused`: the vCPU parks before its first run, and only the first resume ends
    /// "created"; a later pause is an ordinary one.
    #[test]
    fn a_created_vm_runs_nothing_until_resumed() {
        let c = Arc::new(VmControl::new(1).unwrap());
        c.start_created();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vcpu = {
            let (c, ran) = (c.clone(), ran.clone());
            std::thread::spawn(move || {
                while !c.park_while_paused() {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    std::thread::yield_now();
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.all_parked() {
            assert!(Instant::now() < deadline, "the vCPU never parked");
            std::thread::yield_now();
        }
        assert!(c.is_created() && c.is_paused());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        c.resume();
        assert!(!c.is_created());
        c.pause(|| {}).unwrap();
        assert!(c.is_paused() && !c.is_created());
        c.request_exit(ExitReason::HostStop);
        vcpu.join().unwrap();
    }
}
