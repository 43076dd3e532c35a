//! The `nested` target: the workloads in an L2 guest under KVM inside an L1 guest. L1 is a guest of oxvirtd's
//! qemu engine (`<cpu mode='maximum'/>`: QEMU's `-cpu max`, which has SVM under TCG), booted from the bench
//! kit's nested part (`scripts/bench-kit.sh --nested`): the guest kit's kernel, and an initramfs whose
//! `/lab/run.sh` (scripts/nested/bench-l1.sh) loads kvm-amd and boots the bench kit under oxvirt-vmm as L2,
//! with L1's `vda` (the run's data disk) as L2's disk. L1 then reads one workload per line from its console,
//! types it at L2's shell and relays L2's output: this module writes those lines and reads the figures from
//! the relayed text with the same parser `bench import-console` uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use oxvirt_api::Client;

use super::guest::Guest;
use super::workloads::{Profile, Workload};

/// L1 is ready for the next workload (after relaying the previous one's output).
const NEXT: &str = "BENCH-L1-NEXT";
/// L1 cannot go on; the rest of the line says why.
const FATAL: &str = "BENCH-FATAL";
/// The guest kit's init prints this after /lab/run.sh ended (scripts/guest-kit.sh).
const LAB_EXIT: &str = "OXVIRT-LAB-EXIT=";
/// L1 boots under TCG, then L2 under KVM emulated by TCG (the bench kit's 40 MB initramfs unpacked there):
/// minutes on a loaded machine. L1's own wait for L2's prompt is 1200 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1500);
/// Beyond a workload's run time: L2's tool starting and reporting through two emulated layers, and L1's
/// relay of the output. L1 gives up on a workload after 600 s by its own clock, well within this, so that its
/// reason, with what it saw of the stall (scripts/nested/bench-l1.sh `stall_report`), reaches the host.
const COMMAND_SLACK: Duration = Duration::from_secs(960);

/// How many times L2 prints a workload's output before a garbled one is an error.
const PRINTS: u32 = 3;

/// How long L1's vCPU may use no CPU time at all before L1 counts as [`L1Wedged`]. L1 is never idle that
/// long while it is waited for: its script polls L2's console every second.
const WEDGED_AFTER: Duration = Duration::from_secs(60);

/// L1 stopped running: its vCPU used no CPU time for [`WEDGED_AFTER`]. Seen under QEMU 7.2's TCG after L1
/// ran L2 under its KVM for a while: L1's CPU sits in its idle loop's HLT with interrupts enabled and the
/// timer interrupt pending in its local APIC, and neither that nor an NMI wakes it (the emulated global
/// interrupt flag left clear, by the look of it). Nothing in L1 can get out of that; the caller may start
/// L1 again (docs/bench.md).
#[derive(Debug)]
pub struct L1Wedged {
    name: String,
    doing: String,
}

impl std::fmt::Display for L1Wedged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "L1 '{}' stopped running while {}: its vCPU used no CPU time for {} s (QEMU's TCG left it halted \
             with interrupts blocked; docs/bench.md)",
            self.name,
            self.doing,
            WEDGED_AFTER.as_secs()
        )
    }
}

impl std::error::Error for L1Wedged {}

/// The nested part of the bench kit.
#[derive(Debug, Clone)]
pub struct Kit {
    pub kernel: PathBuf,
    pub l1_initramfs: PathBuf,
}

impl Kit {
    /// The nested part of the kit in `dir` (scripts/bench-kit.sh --nested writes it).
    pub fn open(dir: &Path) -> anyhow::Result<Kit> {
        let kit = Kit {
            kernel: dir.join("vmlinuz"),
            l1_initramfs: dir.join("l1-initramfs.img"),
        };
        for file in [&kit.kernel, &kit.l1_initramfs] {
            if !file.is_file() {
                bail!(
                    "the bench kit has no {} (the nested target needs scripts/bench-kit.sh --nested, or point \
                     --kit at such a kit)",
                    file.display()
                );
            }
        }
        Ok(kit)
    }
}

/// L1's definition: 2 GiB (L2 gets 768 MiB; L1's initramfs carries L2's files), one vCPU (the nested lab's
/// L1 locked up now and then with two), `-cpu max` with SVM, the data disk as the qemu target has it.
/// `svm: false` gives L1 QEMU's kvm64 model, which has no SVM: what a host without nested virtualization
/// gives (for tests of that error). (`-cpu max,svm=off` is no such CPU: QEMU 7.2's TCG then breaks static
/// glibc programs, busybox among them, at start.)
fn l1_xml(name: &str, kit: &Kit, disk: &Path, svm: bool) -> String {
    let cpu = if svm {
        "<cpu mode='maximum'/>"
    } else {
        "<cpu mode='custom' match='exact'><model>kvm64</model></cpu>"
    };
    super::guest::domain_xml(
        name,
        2048,
        (&kit.kernel, &kit.l1_initramfs),
        cpu,
        Some(disk),
    )
}

/// A running L1 with L2 at its shell; dropping it destroys and undefines L1 (and L2 with it).
pub struct Nested {
    l1: Guest,
}

impl Nested {
    /// Defines and starts L1 and waits until L2 is up. Where L1 has no usable KVM (no SVM, kvm-amd not
    /// loading), the error says so.
    pub fn boot(client: &Client, kit: &Kit, disk: &Path, svm: bool) -> anyhow::Result<Nested> {
        let name = format!("oxvirt-bench-nested-{}", std::process::id());
        let mut nested = Nested {
            l1: Guest::start(client, &name, &l1_xml(&name, kit, disk, svm))?,
        };
        nested.next(BOOT_TIMEOUT, "booting L2")?;
        Ok(nested)
    }

    /// Runs `w` in L2 and returns its figure. L2's serial output under this nested KVM garbles a byte now and
    /// then (a character printed twice), so output that does not read is printed again from L2's copy, up
    /// to [`PRINTS`] times: the workload itself runs once.
    pub fn run(&mut self, w: &Workload, profile: Profile) -> anyhow::Result<f64> {
        let command = w.argv(profile, "/dev/vda").join(" ");
        let mut line = format!("{} {command}\n", w.id);
        let mut timeout = Duration::from_secs(profile.seconds().into()) + COMMAND_SLACK;
        let mut print = 1;
        loop {
            self.l1.console()?.send(&line)?;
            let relayed = self.next(timeout, w.id)?;
            let text = "\n".to_string() + &relayed.replace('\r', "");
            match super::figure_from_console(&text, w, "nested") {
                Ok(value) => return Ok(value),
                Err(e) if print == PRINTS => return Err(e),
                Err(_) => {}
            }
            print += 1;
            line = format!("BENCH-L1-AGAIN {}\n", w.id);
            timeout = COMMAND_SLACK;
        }
    }

    /// Waits until L1 asks for the next workload and returns what it printed before; an error when L1
    /// reports a fatal condition, its script ended, or `timeout` passed while it was `doing` something.
    fn next(&mut self, timeout: Duration, doing: &str) -> anyhow::Result<String> {
        let name = self.l1.name().to_string();
        let clock = self.l1.vcpu_clock();
        let mut last = clock.cpu_time_ns()?;
        let still_running = || {
            let now = clock.cpu_time_ns()?;
            if now == last {
                return Err(anyhow::Error::new(L1Wedged {
                    name: name.clone(),
                    doing: doing.to_string(),
                }));
            }
            last = now;
            Ok(())
        };
        let console = self.l1.console()?;
        let (which, text) = console
            .wait_for_any_checked(
                &[NEXT, FATAL, LAB_EXIT],
                timeout,
                WEDGED_AFTER,
                still_running,
            )
            .with_context(|| format!("nested target, L1 '{name}': {doing}"))?;
        match which {
            0 => Ok(text),
            1 => {
                let reason = console
                    .wait_for("\n", Duration::from_secs(30))
                    .unwrap_or_default();
                bail!(
                    "the nested target cannot run on this host: {} (in L1 '{name}')",
                    reason.trim()
                )
            }
            _ => bail!("L1's bench script ended unexpectedly; its console:\n{text}"),
        }
    }
}
