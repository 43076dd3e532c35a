//! Builds and runs a VM: KVM setup, guest memory, boot, devices, vCPU threads, and the stop path.

use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context};
use kvm_bindings::{
    kvm_msi, kvm_pit_config, kvm_userspace_memory_region, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};
use oxvirt_virtio::GuestRam;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiConfig};
use crate::boot::{self, BootCpuState, KernelEntry};
use crate::control::{ExitReason, VmControl};
use crate::cpuid::{self, Topology};
use crate::devices::cmos::{Cmos, CmosState};
use crate::devices::pci::{IoEventRegistrar, PciBus};
use crate::devices::pm::{Pm, PmState};
use crate::devices::reset::{I8042State, I8042};
use crate::devices::serial::{Console, RawTerminal, SerialPort, UartState};
use crate::devices::{lock, IoBus, IrqLine};
use crate::kvm_state;
use crate::layout;
use crate::memory;
use crate::protocol::{CpusConfig, RestoreSource, VmConfig};
use crate::protocol::{LiveProgress, MigrationReport};
use crate::resources::{open_kvm, HostResources};
use crate::seccomp::{self, Filters, ThreadRole};
use crate::snapshot::{self, PageSet, StateError, StreamReader, StreamWriter, ZeroPages};

/// Address KVM needs for the TSS and the identity map on Intel (three pages below the BIOS area).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

struct KvmLine {
    vm: Arc<VmFd>,
    irq: u32,
}

impl IrqLine for KvmLine {
    fn set_level(&self, high: bool) {
        let _ = self.vm.set_irq_line(self.irq, high);
    }
}

struct KvmIoEvents(Arc<VmFd>);

impl IoEventRegistrar for KvmIoEvents {
    fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(std::io::Error::from)
    }
    fn unregister(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.0
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(std::io::Error::from)
    }
}

/// Everything a vCPU thread needs to handle exits.
struct ExitHandlers {
    io: IoBus,
    pci: PciBus,
    control: Arc<VmControl>,
}

impl ExitHandlers {
    fn io_in(&self, port: u16, data: &mut [u8]) {
        if (0xcf8..=0xcff).contains(&port) {
            self.pci.pio_read(port, data);
        } else {
            self.io.read(port, data);
        }
    }

    fn io_out(&self, port: u16, data: &[u8]) {
        if (0xcf8..=0xcff).contains(&port) {
            self.pci.pio_write(port, data);
        } else {
            self.io.write(port, data);
        }
    }
}

/// The running machine as the control API sees it.
pub struct VmHandle {
    pub control: Arc<VmControl>,
    pm: Arc<Mutex<Pm>>,
    /// pthread ids of the vCPU threads while they run; `None` once they are being joined.
    vcpu_threads: Mutex<Option<Vec<libc::pthread_t>>>,
    pub vcpus: u32,
    /// Seccomp filters, installed by each thread when it starts.
    pub seccomp: Arc<Filters>,
    /// What saving the machine state reads; none in tests of the control paths.
    machine: Option<Arc<Machine>>,
    /// Held while the state is saved, so a `resume` waits until it is written.
    saving: Mutex<()>,
    /// The virtio-balloon device, if the VM has one.
    balloon: Option<oxvirt_virtio::BalloonHandle>,
    /// Guest RAM in KiB, what the balloon's target is measured against.
    memory_kib: u64,
    /// Each disk's id (from its config) and I/O counters, in `VmConfig::disks` order.
    disks: Vec<(Option<String>, oxvirt_virtio::BlockStatsHandle)>,
    /// Each disk's image locks, released at a live migration's end.
    image_locks: Vec<oxvirt_virtio::ImageLocks>,
    /// Set while a live migration's stream is complete and its outcome not known: the VM is
    /// paused and its images' locks are released (`migrate-cancel` or `stop` ends it).
    outgoing: Mutex<Option<Outgoing>>,
    /// The live migration streaming now, if one does: what `migrate-status` and
    /// `migrate-set-downtime` (other connections) see and change.
    live: LiveMigration,
}

/// A live migration while it streams, shared between `migrate-send-fd`'s thread (which writes
/// its progress and reads its downtime at each pass's end) and the API's other requests.
#[derive(Default)]
struct LiveMigration {
    active: AtomicBool,
    max_downtime_ms: AtomicU64,
    passes: AtomicU32,
    ram_bytes: AtomicU64,
    dirty_bytes: AtomicU64,
    dirty_rate: AtomicU64,
}

impl LiveMigration {
    /// One begins, aiming at `max_downtime_ms`.
    fn begin(&self, max_downtime_ms: u64) {
        self.max_downtime_ms
            .store(max_downtime_ms, Ordering::SeqCst);
        self.passes.store(0, Ordering::SeqCst);
        self.ram_bytes.store(0, Ordering::SeqCst);
        self.dirty_bytes.store(0, Ordering::SeqCst);
        self.dirty_rate.store(0, Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
    }

    fn end(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    /// A pass ended: `passes` so far sent `ram_bytes`; the guest wrote `dirty_bytes` during
    /// it, at `dirty_rate` bytes/s.
    fn pass_done(&self, passes: u32, ram_bytes: u64, dirty_bytes: u64, dirty_rate: u64) {
        self.passes.store(passes, Ordering::SeqCst);
        self.ram_bytes.store(ram_bytes, Ordering::SeqCst);
        self.dirty_bytes.store(dirty_bytes, Ordering::SeqCst);
        self.dirty_rate.store(dirty_rate, Ordering::SeqCst);
    }

    fn max_downtime(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_downtime_ms.load(Ordering::SeqCst))
    }

    fn progress(&self) -> Result<LiveProgress, String> {
        if !self.active.load(Ordering::SeqCst) {
            return Err(NO_LIVE_MIGRATION.into());
        }
        Ok(LiveProgress {
            passes: self.passes.load(Ordering::SeqCst),
            ram_bytes: self.ram_bytes.load(Ordering::SeqCst),
            dirty_bytes: self.dirty_bytes.load(Ordering::SeqCst),
            dirty_rate: self.dirty_rate.load(Ordering::SeqCst),
            max_downtime_ms: self.max_downtime_ms.load(Ordering::SeqCst),
        })
    }

    fn set_max_downtime(&self, max_downtime_ms: u64) -> Result<(), String> {
        if !self.active.load(Ordering::SeqCst) {
            return Err(NO_LIVE_MIGRATION.into());
        }
        self.max_downtime_ms
            .store(max_downtime_ms, Ordering::SeqCst);
        Ok(())
    }
}

/// The refusal of `migrate-status` and `migrate-set-downtime` when no live migration streams.
const NO_LIVE_MIGRATION: &str = "no live migration is under way (migrate-send-fd)";

/// What `migrate-cancel` undoes.
#[derive(Clone, Copy, Debug)]
struct Outgoing {
    /// The guest ran when the migration paused it for its last pass.
    was_running: bool,
}

/// A live migration's passes over RAM before the one with the guest paused, at most.
const MAX_PASSES: u32 = 30;
/// A live migration stops iterating before the RAM it sent (the first pass and those after it)
/// would exceed this many times the guest's RAM: a guest that writes faster than the stream goes
/// is then paused for the last pass, whatever is left (the destination's bound: 4 x RAM in all).
const MAX_RAM_SENT: u64 = 3;

impl VmHandle {
    /// Interrupts every vCPU's KVM_RUN so it notices a state change.
    pub fn kick_vcpus(&self) {
        if let Some(threads) = lock(&self.vcpu_threads).as_ref() {
            for t in threads {
                // SAFETY: the thread ids belong to live vCPU threads (cleared under this lock before they are
                // joined); the signal has a no-op handler installed, so delivery only interrupts KVM_RUN.
                unsafe {
                    libc::pthread_kill(*t, vmm_sys_util::signal::SIGRTMIN());
                }
            }
        }
    }

    pub fn pause(&self) -> Result<(), String> {
        self.control.pause(|| self.kick_vcpus())
    }

    /// Resumes the guest; refused while a live migration's outcome is not known (its images
    /// are the destination's until `migrate-cancel`).
    pub fn resume(&self) -> Result<(), String> {
        let _saved = lock(&self.saving);
        if lock(&self.outgoing).is_some() {
            return Err(
                "the VM's state went to a live migration and its disks were handed \
                        over: migrate-cancel takes them back and resumes it"
                    .into(),
            );
        }
        self.control.resume();
        Ok(())
    }

    /// Writes the paused VM's machine state into the existing file `path` from byte `offset` on, then
    /// syncs the file. Refused while the VM runs.
    pub fn save(&self, path: &std::path::Path, offset: u64) -> Result<(), String> {
        self.saveable()?;
        // The file exists (its owner wrote its own header before `offset`): never created or
        // truncated.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot save the machine state to {}: {e}", path.display()))?;
        self.save_into(file, &path.display().to_string(), offset)
    }

    /// [`Self::save`] into an open file (`what` names it in messages).
    pub fn save_into(&self, file: std::fs::File, what: &str, offset: u64) -> Result<(), String> {
        let _saving = lock(&self.saving);
        let machine = self.saveable()?;
        let started = std::time::Instant::now();
        let written = machine
            .save(file, offset)
            .map_err(|e| format!("cannot save the machine state to {what}: {e}"))?;
        eprintln!(
            "oxvirt-vmm: saved the machine state ({} MiB) to {what} in {} ms",
            written >> 20,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Live migration's source side: see [`crate::protocol::Request::MigrateSendFd`]. `out` is
    /// the descriptor the stream goes into (a socket or pipe); any failure leaves the guest as
    /// it was (running if it ran) with its images locked.
    pub fn migrate_send(
        &self,
        out: std::fs::File,
        max_downtime_ms: u64,
    ) -> Result<crate::protocol::MigrationReport, String> {
        let _saving = lock(&self.saving);
        if self.control.exit_reason().is_some() {
            return Err("the VM is stopping".into());
        }
        if self.control.is_created() {
            return Err("the VM has not started yet".into());
        }
        if lock(&self.outgoing).is_some() {
            return Err("a live migration's state was sent already: migrate-cancel or stop".into());
        }
        let machine = self
            .machine
            .as_ref()
            .ok_or_else(|| "this VM cannot migrate".to_string())?;
        let started = std::time::Instant::now();
        let mut was_running = None;
        let pause = || {
            was_running = Some(!self.control.is_paused());
            self.pause()?;
            if self.control.exit_reason().is_some() {
                return Err("the VM stopped during the migration".to_string());
            }
            Ok(())
        };
        let limits = LiveLimits {
            live: &self.live,
            max_ram_bytes: (self.memory_kib << 10).saturating_mul(MAX_RAM_SENT),
        };
        let released = std::cell::Cell::new(false);
        // Before the stream's end: the destination's VMM opens the same images once it has it.
        let hand_over = || {
            for (i, locks) in self.image_locks.iter().enumerate() {
                if let Err(e) = locks.release() {
                    for locks in &self.image_locks[..i] {
                        let _ = locks.take();
                    }
                    return Err(format!("cannot hand disk {i} over: {e}"));
                }
            }
            released.set(true);
            Ok(())
        };
        self.live.begin(max_downtime_ms);
        let result = machine
            .send_live(
                std::io::BufWriter::with_capacity(1 << 20, out),
                limits,
                pause,
                hand_over,
            )
            .map_err(|e| format!("cannot send the machine state: {e}"));
        self.live.end();
        if result.is_err() && released.get() {
            // The stream did not end: the destination has not opened them.
            for locks in &self.image_locks {
                if let Err(e) = locks.take() {
                    eprintln!("oxvirt-vmm: cannot take a disk's image locks back: {e}");
                }
            }
        }
        match result {
            Ok(report) => {
                *lock(&self.outgoing) = Some(Outgoing {
                    was_running: was_running.unwrap_or(false),
                });
                eprintln!(
                    "oxvirt-vmm: sent the machine state live ({} MiB in {} passes, {} KiB in the \
                     last) in {} ms, paused for {} ms",
                    report.bytes >> 20,
                    report.passes,
                    report.last_pass_bytes >> 10,
                    started.elapsed().as_millis(),
                    report.paused_ms
                );
                Ok(report)
            }
            Err(error) => {
                // Paused for the last pass: it runs on as before.
                if was_running == Some(true) {
                    self.control.resume();
                }
                Err(error)
            }
        }
    }

    /// How far the live migration under way went: see [`crate::protocol::Request::MigrateStatus`].
    pub fn migrate_status(&self) -> Result<LiveProgress, String> {
        self.live.progress()
    }

    /// See [`crate::protocol::Request::MigrateSetDowntime`].
    pub fn migrate_set_downtime(&self, max_downtime_ms: u64) -> Result<(), String> {
        self.live.set_max_downtime(max_downtime_ms)
    }

    /// Undoes a completed [`Self::migrate_send`]: see [`crate::protocol::Request::MigrateCancel`].
    pub fn migrate_cancel(&self) -> Result<(), String> {
        let _saving = lock(&self.saving);
        let mut outgoing = lock(&self.outgoing);
        let Some(migration) = *outgoing else {
            return Err("no live migration's state was sent: nothing to cancel".into());
        };
        for (i, locks) in self.image_locks.iter().enumerate() {
            if let Err(e) = locks.take() {
                for locks in &self.image_locks[..i] {
                    let _ = locks.release();
                }
                return Err(format!(
                    "cannot take disk {i} back (does the destination still hold it?): {e}"
                ));
            }
        }
        *outgoing = None;
        if migration.was_running {
            self.control.resume();
        }
        Ok(())
    }

    /// The machine to save, unless the VM is in no state to be saved.
    fn saveable(&self) -> Result<&Arc<Machine>, String> {
        if self.control.exit_reason().is_some() {
            return Err("the VM is stopping".into());
        }
        if !self.control.all_parked() {
            return Err("the VM is running: pause it before saving its state".into());
        }
        self.machine
            .as_ref()
            .ok_or_else(|| "this VM cannot save its state".to_string())
    }

    fn balloon(&self) -> Result<&oxvirt_virtio::BalloonHandle, String> {
        self.balloon
            .as_ref()
            .ok_or_else(|| "this VM has no balloon device".to_string())
    }

    /// Asks the guest to keep `target_kib` KiB of RAM (at most all of it): the balloon's target
    /// is the rest, in 4 KiB pages.
    pub fn set_balloon_target(&self, target_kib: u64) -> Result<(), String> {
        let balloon = self.balloon()?;
        if target_kib > self.memory_kib {
            return Err(format!(
                "the balloon target {target_kib} KiB is above the guest's memory ({} KiB)",
                self.memory_kib
            ));
        }
        let pages =
            (self.memory_kib - target_kib) / (oxvirt_virtio::balloon::BALLOON_PAGE_SIZE / 1024);
        // Guest RAM is at most the host's, far below 2^32 pages of 4 KiB (16 TiB).
        let pages =
            u32::try_from(pages).map_err(|_| "the balloon target is too large".to_string())?;
        balloon.set_target_pages(pages);
        Ok(())
    }

    /// The balloon's view of guest memory.
    pub fn balloon_report(&self) -> Result<crate::protocol::BalloonReport, String> {
        let balloon = self.balloon()?;
        let page_kib = oxvirt_virtio::balloon::BALLOON_PAGE_SIZE / 1024;
        let stats = balloon.stats();
        Ok(crate::protocol::BalloonReport {
            actual_kib: self
                .memory_kib
                .saturating_sub(u64::from(balloon.actual_pages()) * page_kib),
            target_kib: self
                .memory_kib
                .saturating_sub(u64::from(balloon.target_pages()) * page_kib),
            stats_period_s: balloon.stats_period(),
            guest: stats
                .as_ref()
                .map(|s| {
                    s.virsh_terms()
                        .into_iter()
                        .map(|(name, value)| (name.to_string(), value))
                        .collect()
                })
                .unwrap_or_default(),
            last_update: stats.map(|s| s.received_s),
        })
    }

    /// Each disk's I/O counters, in `VmConfig::disks` order.
    pub fn block_stats(&self) -> Vec<crate::protocol::DiskStats> {
        self.disks
            .iter()
            .enumerate()
            .map(|(index, (id, stats))| crate::protocol::DiskStats {
                index,
                id: id.clone(),
                counters: stats.get(),
            })
            .collect()
    }

    /// Sets how often the guest refreshes its statistics (0: never).
    pub fn set_balloon_stats_period(&self, seconds: u32) -> Result<(), String> {
        self.balloon()?
            .set_stats_period(seconds)
            .map_err(|e| format!("cannot set the statistics period: {e}"))
    }

    /// Presses the ACPI power button. Fails if the guest has not enabled the event (no ACPI-aware OS).
    pub fn power_button(&self) -> Result<(), String> {
        let mut pm = lock(&self.pm);
        if !pm.power_button_enabled() {
            return Err(
                "the guest has not enabled the ACPI power button (still booting, or no ACPI?)"
                    .into(),
            );
        }
        pm.press_power_button();
        Ok(())
    }

    /// A handle with no vCPU threads and a PM device on a dummy SCI line, for tests of the control paths.
    #[cfg(test)]
    pub(crate) fn detached(vcpus: u32) -> VmHandle {
        struct NoLine;
        impl IrqLine for NoLine {
            fn set_level(&self, _high: bool) {}
        }
        let control = Arc::new(VmControl::new(0).expect("eventfd"));
        VmHandle {
            pm: Arc::new(Mutex::new(Pm::new(Arc::new(NoLine), control.clone()))),
            control,
            vcpu_threads: Mutex::new(None),
            vcpus,
            seccomp: Arc::new(Filters::disabled()),
            machine: None,
            saving: Mutex::new(()),
            balloon: None,
            memory_kib: 0,
            disks: Vec::new(),
            image_locks: Vec::new(),
            outgoing: Mutex::new(None),
            live: LiveMigration::default(),
        }
    }

    /// Stops the VM at once (like pulling the plug).
    pub fn stop(&self) {
        self.control.request_exit(ExitReason::HostStop);
        self.kick_vcpus();
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The exit eventfd's descriptor, for the SIGTERM/SIGINT handler (-1 until the VM runs).
static TERMINATE_FD: AtomicI32 = AtomicI32::new(-1);
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn terminate_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    TERMINATED.store(true, Ordering::SeqCst);
    let fd = TERMINATE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; it writes 8 bytes from a live local to the eventfd, which
        // stays open for the whole run (the handler is only armed while it is).
        unsafe {
            libc::write(fd, (&one as *const u64).cast(), 8);
        }
    }
}

fn create_vcpu(
    vm: &VmFd,
    index: u32,
    base_cpuid: &[kvm_bindings::kvm_cpuid_entry2],
    topo: Topology,
    entry: Option<KernelEntry>,
) -> anyhow::Result<VcpuFd> {
    let vcpu = vm
        .create_vcpu(u64::from(topo.apic_id(index)))
        .with_context(|| format!("cannot create vCPU {index}"))?;
    let cpuid = cpuid::for_vcpu(base_cpuid, index, topo)?;
    vcpu.set_cpuid2(&cpuid)
        .with_context(|| format!("KVM rejected the CPUID of vCPU {index}"))?;
    // What firmware leaves behind: MTRRs enabled with write-back as the default type (Linux otherwise
    // disables PAT), and fast string operations enabled in IA32_MISC_ENABLE (Linux otherwise clears ERMS).
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    let msr = |index, data| kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let msrs = Msrs::from_entries(&[
        msr(MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
        msr(MSR_IA32_MISC_ENABLE, 1),
    ])
    .map_err(|e| anyhow!("MSR list: {e:?}"))?;
    let written = vcpu.set_msrs(&msrs).context("cannot set vCPU MSRs")?;
    if written != msrs.as_slice().len() {
        bail!(
            "KVM accepted only {written} of {} boot MSRs of vCPU {index}",
            msrs.as_slice().len()
        );
    }
    // Start with XCR0 = every state component the CPUID offers. KVM derives CPUID.(0xd,0):EBX (the XSAVE
    // area size) from its copy of XCR0; when XSETBV is not intercepted (seen with nested SVM under TCG), that
    // copy never changes and the guest finds EBX inconsistent and disables XSAVE. Linux enables all
    // offered components anyway, so starting there keeps both views equal.
    if let Some(xcr0) = cpuid::xcr0_mask(base_cpuid) {
        let mut xcrs = kvm_bindings::kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        vcpu.set_xcrs(&xcrs)
            .with_context(|| format!("cannot set XCR0 of vCPU {index}"))?;
    }
    // LAPIC: LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware leaves them.
    let mut lapic = vcpu.get_lapic().context("cannot read the LAPIC")?;
    let mut set = |offset: usize, value: u32| {
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as libc::c_char;
        }
    };
    set(0x350, 0x700);
    set(0x360, 0x400);
    vcpu.set_lapic(&lapic).context("cannot set the LAPIC")?;
    if let (0, Some(entry)) = (index, entry) {
        vcpu.set_regs(&BootCpuState::regs(entry))
            .context("cannot set boot registers")?;
        let sregs = vcpu.get_sregs().context("cannot read special registers")?;
        vcpu.set_sregs(&BootCpuState::sregs(sregs))
            .context("cannot set special registers")?;
        vcpu.set_fpu(&BootCpuState::fpu())
            .context("cannot set FPU state")?;
    }
    Ok(vcpu)
}

fn vcpu_loop(index: u32, vcpu: &Mutex<VcpuFd>, handlers: Arc<ExitHandlers>) {
    let control = &handlers.control;
    loop {
        if control.park_while_paused() {
            return;
        }
        // Held for one run and its exit only: a parked vCPU leaves its state to the `save` request.
        let mut vcpu = lock(vcpu);
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => handlers.io_in(port, data),
            Ok(VcpuExit::IoOut(port, data)) => handlers.io_out(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                handlers.pci.mmio_read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                handlers.pci.mmio_write(addr, data);
            }
            Ok(VcpuExit::Hlt) => {}
            // Triple fault: a reset as far as the guest is concerned.
            Ok(VcpuExit::Shutdown) => control.request_exit(ExitReason::GuestReset),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    control.request_exit(ExitReason::GuestReset)
                }
                _ => control.request_exit(ExitReason::GuestPoweroff),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => control.request_exit(ExitReason::Error {
                message: format!("vCPU {index}: KVM entry failed (reason {reason:#x}, cpu {cpu})"),
            }),
            Ok(VcpuExit::InternalError) => control.request_exit(ExitReason::Error {
                message: format!("vCPU {index}: KVM internal error (emulation failure)"),
            }),
            Ok(other) => {
                control.request_exit(ExitReason::Error {
                    message: format!("vCPU {index}: unexpected exit {other:?}"),
                });
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => control.request_exit(ExitReason::Error {
                message: format!("vCPU {index}: KVM_RUN failed: {e}"),
            }),
        }
    }
}

/// A VM that is built and ready to start.
pub struct Vm {
    handle: Arc<VmHandle>,
    /// Test-only (see [`seccomp::SELFTEST_ENV`]): vCPU 0 makes a forbidden call after its filter is on.
    seccomp_selftest: bool,
    /// Restored from a saved state: vCPU 0 starts the device workers the guest's drivers had started.
    restored: bool,
    machine: Arc<Machine>,
    console: Console,
}

/// What the saved machine state is made of; the VM's memory and KVM objects live as long as this.
struct Machine {
    vm: Arc<VmFd>,
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    // KVM memory slots point into it.
    memory: GuestRam,
    handlers: Arc<ExitHandlers>,
    serial: Arc<Mutex<SerialPort>>,
    cmos: Arc<Mutex<Cmos>>,
    i8042: Arc<Mutex<I8042>>,
    pm: Arc<Mutex<Pm>>,
    /// The MSRs each vCPU's state lists (KVM_GET_MSR_INDEX_LIST, read once at build).
    msr_list: Vec<u32>,
    shape: MachineShape,
}

/// What a saved state must be restored into: the parts of the configuration that decide the machine's
/// layout (RAM regions, vCPUs, PCI functions). The MACH section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineShape {
    memory_mib: u64,
    /// vCPU count, topology and CPU model: the guest was booted with their CPUID.
    cpus: CpusConfig,
    disks: usize,
    nets: usize,
    rng: bool,
    /// Absent in states saved before balloons existed: none then.
    #[serde(default)]
    balloon: bool,
}

impl MachineShape {
    fn of(config: &VmConfig) -> MachineShape {
        MachineShape {
            memory_mib: config.memory.size_mib,
            cpus: config.cpus.clone(),
            disks: config.disks.len(),
            nets: config.nets.len(),
            rng: config.rng,
            balloon: config.balloon.is_some(),
        }
    }

    /// What differs between a saved machine (`self`) and a configured one, for the refusal.
    fn differences(&self, here: &MachineShape) -> String {
        let mut diffs = Vec::new();
        let mut compare = |what: &str, saved: String, configured: String| {
            if saved != configured {
                diffs.push(format!("{what}: saved {saved}, configured {configured}"));
            }
        };
        compare(
            "memory",
            format!("{} MiB", self.memory_mib),
            format!("{} MiB", here.memory_mib),
        );
        compare(
            "CPUs",
            format!("{:?}", self.cpus),
            format!("{:?}", here.cpus),
        );
        compare("disks", self.disks.to_string(), here.disks.to_string());
        compare("NICs", self.nets.to_string(), here.nets.to_string());
        compare("rng", self.rng.to_string(), here.rng.to_string());
        compare(
            "balloon",
            self.balloon.to_string(),
            here.balloon.to_string(),
        );
        diffs.join("; ")
    }
}

/// The platform devices' state: the DEVS section.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformState {
    serial: UartState,
    cmos: CmosState,
    pm: PmState,
    i8042: I8042State,
    pci_config_address: u32,
}

/// When a live migration stops iterating.
struct LiveLimits<'a> {
    /// What the last pass may take at the rate the stream went so far (its downtime target,
    /// read at each pass's end: `migrate-set-downtime` changes it), and where its progress goes.
    live: &'a LiveMigration,
    /// RAM bytes the passes before the last one may send in all.
    max_ram_bytes: u64,
}

/// A writer that counts what went through it.
struct Counted<W: std::io::Write> {
    out: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Machine {
    /// Turns KVM's dirty page logging of every RAM slot on or off (the slots as `Vm::build`
    /// registered them, with the flag changed).
    fn log_dirty_pages(&self, on: bool) -> Result<(), StateError> {
        for (slot, (guest, size, host)) in
            memory::host_regions(&self.memory).into_iter().enumerate()
        {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
                guest_phys_addr: guest,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: the same live mapping owned by `memory` that the slot already has; only
            // its flags change.
            unsafe { self.vm.set_user_memory_region(region) }.map_err(StateError::kvm(
                "cannot change the dirty logging of guest RAM",
            ))?;
        }
        Ok(())
    }

    /// The pages written since the last call (or since logging began), both reset: what KVM
    /// logged of the vCPUs' writes and what vm-memory's bitmap has of the VMM's own (devices).
    fn dirty_pages(&self) -> Result<PageSet, StateError> {
        let mut set = PageSet::empty(&self.memory);
        for (slot, (_, size, _)) in memory::host_regions(&self.memory).into_iter().enumerate() {
            let log = self
                .vm
                .get_dirty_log(slot as u32, size as usize)
                .map_err(StateError::kvm("cannot read KVM's dirty page log"))?;
            set.add(slot, &log);
        }
        for (i, region) in self.memory.iter().enumerate() {
            let mapping: &vm_memory::MmapRegion<AtomicBitmap> = region;
            set.add(i, &mapping.bitmap().get_and_reset());
        }
        Ok(set)
    }

    /// Writes a live migration's stream into `out` while the guest runs (see
    /// `Request::MigrateSendFd`): all of RAM, the pages written meanwhile pass after pass until
    /// the rest fits `limits`, then `pause`, the last pass with the devices' state, `hand_over`
    /// (the images' locks) and the stream's end. Logging
    /// is off again and the device workers running again when it returns, in every path.
    fn send_live<W: std::io::Write>(
        &self,
        out: W,
        limits: LiveLimits<'_>,
        pause: impl FnOnce() -> Result<(), String>,
        hand_over: impl FnOnce() -> Result<(), String>,
    ) -> Result<MigrationReport, StateError> {
        use std::time::Instant;
        self.log_dirty_pages(true)?;
        let result = (|| -> Result<MigrationReport, StateError> {
            // From here on every write is logged: what the first pass reads is sent again if
            // it changes.
            self.dirty_pages()?;
            let mut w = StreamWriter::live(Counted { out, bytes: 0 })?;
            w.section(snapshot::TAG_MACHINE, &to_json(&self.shape)?)?;
            let mut pass = PageSet::all(&self.memory);
            let mut zero = ZeroPages::Omit;
            let mut passes = 0u32;
            let mut ram_sent = 0u64;
            loop {
                let started = Instant::now();
                let sent = w.pages(&self.memory, &pass, zero)?;
                w.flush()?;
                ram_sent += sent;
                passes += 1;
                // The rate the reader took this pass at (it sets the pace: the descriptor
                // blocks when full).
                let took = started.elapsed().as_secs_f64().max(1e-3);
                let rate = sent as f64 / took;
                zero = ZeroPages::Send;
                pass = self.dirty_pages()?;
                let left = pass.count() * snapshot::PAGE;
                limits
                    .live
                    .pass_done(passes, ram_sent, left, (left as f64 / took) as u64);
                let fits = (left as f64) <= rate * limits.live.max_downtime().as_secs_f64();
                if fits
                    || passes >= MAX_PASSES
                    || ram_sent.saturating_add(left) > limits.max_ram_bytes
                {
                    break;
                }
            }
            pause().map_err(StateError::Device)?;
            let paused = Instant::now();
            let pci = &self.handlers.pci;
            pci.snapshot_pause().map_err(StateError::Device)?;
            let last = (|| {
                pass.merge(&self.dirty_pages()?);
                let last_pass_bytes = w.pages(&self.memory, &pass, ZeroPages::Send)?;
                self.write_devices(&mut w)?;
                hand_over().map_err(StateError::Device)?;
                let out = w.finish()?;
                Ok::<_, StateError>((last_pass_bytes, out.bytes))
            })();
            pci.snapshot_resume();
            let (last_pass_bytes, bytes) = last?;
            Ok(MigrationReport {
                passes: passes + 1,
                bytes,
                last_pass_bytes,
                paused_ms: paused.elapsed().as_millis() as u64,
            })
        })();
        let off = self.log_dirty_pages(false);
        let report = result?;
        off?;
        Ok(report)
    }

    /// The sections after RAM: KVM's VM and vCPU state, the platform devices, the PCI functions
    /// (all vCPUs parked, device workers paused).
    fn write_devices<W: std::io::Write>(&self, w: &mut StreamWriter<W>) -> Result<(), StateError> {
        let pci = &self.handlers.pci;
        w.section(snapshot::TAG_VM, &kvm_state::save_vm(&self.vm)?)?;
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let state = kvm_state::save_vcpu(&lock(vcpu), i as u32, &self.msr_list)?;
            w.section(snapshot::TAG_VCPU, &state)?;
        }
        let platform = PlatformState {
            serial: lock(&self.serial).state(),
            cmos: lock(&self.cmos).state(),
            pm: lock(&self.pm).state(),
            i8042: lock(&self.i8042).state(),
            pci_config_address: pci.config_address(),
        };
        w.section(snapshot::TAG_DEVICES, &to_json(&platform)?)?;
        for function in pci.save_functions().map_err(StateError::Device)? {
            w.section(snapshot::TAG_PCI, &function)?;
        }
        Ok(())
    }

    /// Writes the stream (all vCPUs parked); returns its length.
    fn save(&self, mut file: std::fs::File, offset: u64) -> Result<u64, StateError> {
        use std::io::{Seek, SeekFrom};
        let pci = &self.handlers.pci;
        // Device workers finish what they serve and wait: queues and RAM hold still from here on.
        pci.snapshot_pause().map_err(StateError::Device)?;
        let result = (|| {
            file.seek(SeekFrom::Start(offset))?;
            let mut w = StreamWriter::new(std::io::BufWriter::with_capacity(1 << 20, &mut file))?;
            w.section(snapshot::TAG_MACHINE, &to_json(&self.shape)?)?;
            w.ram(&self.memory)?;
            self.write_devices(&mut w)?;
            w.finish()?
                .into_inner()
                .map_err(|e| StateError::Io(e.into_error()))?;
            let end = file.stream_position()?;
            file.sync_all()?;
            Ok(end - offset)
        })();
        pci.snapshot_resume();
        result
    }

    /// Reads the stream (in `file`, opened from `source`) into this freshly built (not yet
    /// running) machine.
    fn restore(&self, mut file: std::fs::File, source: &RestoreSource) -> Result<(), StateError> {
        use std::io::{Seek, SeekFrom};
        let len = file.metadata()?.len();
        if source.offset > len {
            return Err(StateError::Truncated(format!(
                "the file ({len} bytes) ends before the offset {}",
                source.offset
            )));
        }
        file.seek(SeekFrom::Start(source.offset))?;
        let input = std::io::BufReader::with_capacity(1 << 20, file);
        let mut r = StreamReader::new(input, len - source.offset)?;
        let saved: MachineShape = from_json(&r.expect(snapshot::TAG_MACHINE)?, "MACH")?;
        if saved != self.shape {
            return Err(StateError::Mismatch(saved.differences(&self.shape)));
        }
        r.ram(&self.memory)?;
        kvm_state::restore_vm(&self.vm, &r.expect(snapshot::TAG_VM)?)?;
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let state = kvm_state::VcpuState::decode(&r.expect(snapshot::TAG_VCPU)?, i as u32)?;
            state.apply(&lock(vcpu), i as u32)?;
        }
        let platform: PlatformState = from_json(&r.expect(snapshot::TAG_DEVICES)?, "DEVS")?;
        lock(&self.serial)
            .restore(&platform.serial)
            .map_err(StateError::Device)?;
        lock(&self.cmos)
            .restore(&platform.cmos)
            .map_err(StateError::Device)?;
        lock(&self.pm).restore(platform.pm);
        lock(&self.i8042).restore(platform.i8042);
        let pci = &self.handlers.pci;
        pci.set_config_address(platform.pci_config_address);
        let functions = (0..pci.function_count())
            .map(|_| r.expect(snapshot::TAG_PCI))
            .collect::<Result<Vec<_>, _>>()?;
        pci.restore_functions(&functions)
            .map_err(StateError::Device)?;
        r.finish()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], section: &str) -> Result<T, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::Corrupt(format!("section {section}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| StateError::Device(e.to_string()))
}

/// What `--print-cpu-flags` prints: the Linux flag names of the CPUID the guest of `config` would get.
pub fn cpu_flags(config: &VmConfig) -> anyhow::Result<Vec<&'static str>> {
    let kvm = open_kvm()?;
    let cpus = &config.cpus;
    let base = cpuid::build_cpuid(&supported_cpuid(&kvm)?, &cpus.mode, &cpus.features)?;
    Ok(cpuid::linux_flags(&base).into_iter().collect())
}

/// What KVM can give a guest: KVM_GET_SUPPORTED_CPUID, plus the TSC-deadline timer, which the in-kernel LAPIC
/// emulates but KVM reports as a capability instead of a CPUID bit.
fn supported_cpuid(kvm: &Kvm) -> anyhow::Result<Vec<kvm_bindings::kvm_cpuid_entry2>> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .context("KVM_GET_SUPPORTED_CPUID failed")?;
    let mut entries = supported.as_slice().to_vec();
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        if let Some(leaf1) = entries.iter_mut().find(|e| e.function == 1) {
            leaf1.ecx |= 1 << 24;
        }
    }
    Ok(entries)
}

impl Vm {
    /// Builds the VM `config` describes on its host resources, opened by
    /// [`HostResources::open`] (its settings validated again here: a library caller may not
    /// have; its files were checked when they were opened).
    pub fn build(config: &VmConfig, host: HostResources) -> anyhow::Result<Vm> {
        config.validate_settings()?;
        let HostResources {
            kvm,
            boot: boot_files,
            disks,
            taps,
            console,
            api: _,
            restore: restore_file,
            memory,
        } = host;
        let vcpu_count = config.cpus.count;
        let topo = config.cpus.topology();
        // Compiled first: a filter that cannot be built stops the VMM before anything is set up.
        let filters = Filters::compile(config.seccomp)?;
        let max_vcpus = kvm.get_max_vcpus();
        if vcpu_count as usize > max_vcpus {
            bail!(
                "{vcpu_count} vCPUs requested but KVM supports at most {max_vcpus} (KVM_CAP_MAX_VCPUS)"
            );
        }
        let apic_ids: Vec<u32> = (0..vcpu_count).map(|i| topo.apic_id(i)).collect();
        if apic_ids.iter().any(|id| *id >= 255) {
            bail!("this topology needs APIC ids above 254, which the xAPIC MADT cannot describe");
        }
        let base_cpuid = cpuid::build_cpuid(
            &supported_cpuid(&kvm)?,
            &config.cpus.mode,
            &config.cpus.features,
        )?;

        let mem_size = config.memory.size_mib << 20;

        // A restored VM gets its RAM (tables, kernel and all) from the saved state instead.
        let entry = match &config.restore {
            Some(_) => None,
            None => {
                let rsdp = acpi::write_tables(
                    &memory,
                    &AcpiConfig {
                        apic_ids: apic_ids.iter().map(|i| *i as u8).collect(),
                    },
                )?;
                Some(boot::load_linux(
                    &memory,
                    boot_files,
                    &config.cmdline,
                    mem_size,
                    rsdp,
                )?)
            }
        };

        // The VM is created only now that every boot file has been read and placed: an input error never
        // gets as far as KVM (and a refused start costs no VM setup and teardown).
        let vm = Arc::new(kvm.create_vm().context("KVM_CREATE_VM failed")?);
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .context("cannot set the identity map address")?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .context("cannot set the TSS address")?;
        vm.create_irq_chip()
            .context("cannot create the in-kernel interrupt controllers")?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .context("cannot create the in-kernel PIT")?;
        for (slot, (guest, size, host)) in memory::host_regions(&memory).into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: guest,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: the region is a live mapping owned by `memory`, which the Vm keeps until KVM is gone.
            unsafe { vm.set_user_memory_region(region) }
                .context("cannot register guest memory with KVM")?;
        }

        let control = Arc::new(
            VmControl::new(vcpu_count as usize).context("cannot create the exit eventfd")?,
        );
        let mut io = IoBus::default();
        let serial_irq =
            EventFd::new(libc::EFD_NONBLOCK).context("cannot create the serial eventfd")?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .context("cannot register the serial irqfd")?;
        let console = Console::new(console, serial_irq);
        io.insert(layout::SERIAL_PORT, 8, console.port.clone())?;
        let cmos = Arc::new(Mutex::new(Cmos::default()));
        io.insert(layout::CMOS_PORT, 2, cmos.clone())?;
        let i8042 = Arc::new(Mutex::new(I8042::new(control.clone())));
        io.insert(layout::I8042_PORT, 5, i8042.clone())?;
        let pm = Arc::new(Mutex::new(Pm::new(
            Arc::new(KvmLine {
                vm: vm.clone(),
                irq: layout::SCI_IRQ,
            }),
            control.clone(),
        )));
        io.insert(
            layout::PM1_EVENT_PORT,
            u16::from(layout::PM1_EVENT_LEN + layout::PM1_CONTROL_LEN),
            pm.clone(),
        )?;

        let mut pci = PciBus::new(Arc::new(KvmIoEvents(vm.clone())), control.clone());
        let VirtioHandles {
            balloon,
            disks,
            image_locks,
        } = add_virtio_devices(config, &memory, &vm, &mut pci, disks, taps)?;

        let vcpus = (0..vcpu_count)
            .map(|i| create_vcpu(&vm, i, &base_cpuid, topo, entry).map(|v| Arc::new(Mutex::new(v))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let msr_list = kvm_state::msr_index_list(&kvm)?;

        let machine = Arc::new(Machine {
            vm,
            vcpus,
            memory,
            handlers: Arc::new(ExitHandlers {
                io,
                pci,
                control: control.clone(),
            }),
            serial: console.port.clone(),
            cmos,
            i8042,
            pm: pm.clone(),
            msr_list,
            shape: MachineShape::of(config),
        });
        if let (Some(source), Some(file)) = (&config.restore, restore_file) {
            let started = std::time::Instant::now();
            machine.restore(file, source).with_context(|| {
                format!(
                    "cannot restore the machine state from {} (offset {})",
                    source.path.display(),
                    source.offset
                )
            })?;
            control.start_paused();
            eprintln!(
                "oxvirt-vmm: restored the machine state from {} in {} ms; paused until resumed",
                source.path.display(),
                started.elapsed().as_millis()
            );
        } else if config.start_paused {
            control.start_created();
        }

        let handle = Arc::new(VmHandle {
            control: control.clone(),
            pm,
            vcpu_threads: Mutex::new(None),
            vcpus: vcpu_count,
            seccomp: filters,
            machine: Some(machine.clone()),
            saving: Mutex::new(()),
            balloon,
            memory_kib: config.memory.size_mib * 1024,
            disks,
            image_locks,
            outgoing: Mutex::new(None),
            live: LiveMigration::default(),
        });
        Ok(Vm {
            handle,
            seccomp_selftest: seccomp::selftest_requested(),
            restored: config.restore.is_some(),
            machine,
            console,
        })
    }

    pub fn handle(&self) -> Arc<VmHandle> {
        self.handle.clone()
    }

    /// Runs the guest until it powers off, resets, fails, or is stopped through the handle.
    /// `once_started` runs when every vCPU thread exists (the control API starts there, so that
    /// whoever it answers finds them: oxvirtd places them in cgroups and pins them); what it
    /// returns is kept until the VM has ended, and its error ends the VM.
    pub fn run<T>(
        mut self,
        once_started: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<ExitReason> {
        vmm_sys_util::signal::register_signal_handler(
            vmm_sys_util::signal::SIGRTMIN(),
            kick_handler,
        )
        .context("cannot install the vCPU kick signal handler")?;
        let _raw = self.console.is_stdio().then(RawTerminal::enable_if_tty);
        self.console
            .start_input(self.handle.seccomp.clone(), self.handle.control.clone())
            .context("cannot start the console input thread")?;
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (i, vcpu) in self.machine.vcpus.iter().cloned().enumerate() {
            let handlers = self.machine.handlers.clone();
            let filters = self.handle.seccomp.clone();
            let selftest = self.seccomp_selftest && i == 0;
            let start_restored = self.restored && i == 0;
            let t = std::thread::Builder::new()
                .name(format!("{}{i}", crate::protocol::VCPU_THREAD_PREFIX))
                .spawn(move || {
                    // Before the first KVM_RUN: guest code never runs unfiltered.
                    if let Err(e) = filters.apply(ThreadRole::Vcpu) {
                        handlers.control.request_exit(ExitReason::Error {
                            message: format!("vCPU {i}: {e}"),
                        });
                        return;
                    }
                    if selftest {
                        seccomp::selftest_violate();
                    }
                    if start_restored {
                        if let Err(e) = handlers.pci.start_restored() {
                            handlers.control.request_exit(ExitReason::Error {
                                message: format!("restoring the devices: {e}"),
                            });
                            return;
                        }
                    }
                    vcpu_loop(i as u32, &vcpu, handlers)
                })
                .context("cannot start a vCPU thread")?;
            threads.push(t);
        }
        *lock(&self.handle.vcpu_threads) = Some(threads.iter().map(|t| t.as_pthread_t()).collect());

        let control = &self.handle.control;
        let _started = match once_started() {
            Ok(kept) => Some(kept),
            Err(e) => {
                control.request_exit(ExitReason::Error {
                    message: format!("{e:#}"),
                });
                None
            }
        };
        // SIGTERM / SIGINT stop the VM like the API's "stop" (the terminal is raw, so ^C goes to the guest).
        TERMINATE_FD.store(control.exit_evt.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            vmm_sys_util::signal::register_signal_handler(sig, terminate_handler)
                .context("cannot install the termination signal handler")?;
        }
        // Every thread is started: from here the main thread only waits, kicks, joins and tears down.
        if let Err(e) = self.handle.seccomp.apply(ThreadRole::Main) {
            control.request_exit(ExitReason::Error {
                message: e.to_string(),
            });
        }
        while control.exit_reason().is_none() {
            // Blocks until a device, a vCPU, the API or a termination signal requests the exit.
            let _ = control.exit_evt.read();
            if TERMINATED.load(Ordering::SeqCst) {
                control.request_exit(ExitReason::HostStop);
            }
        }
        TERMINATE_FD.store(-1, Ordering::SeqCst);
        // Kick until every vCPU has left KVM_RUN and returned.
        while threads.iter().any(|t| !t.is_finished()) {
            self.handle.kick_vcpus();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        *lock(&self.handle.vcpu_threads) = None;
        for t in threads {
            let _ = t.join();
        }
        // The loop above only ends once a reason is recorded.
        Ok(control.exit_reason().unwrap_or(ExitReason::HostStop))
    }
}

/// What the VMM keeps of its virtio devices to drive or read them later.
#[derive(Default)]
struct VirtioHandles {
    balloon: Option<oxvirt_virtio::BalloonHandle>,
    /// Each disk's id and counters, in `VmConfig::disks` order.
    disks: Vec<(Option<String>, oxvirt_virtio::BlockStatsHandle)>,
    /// Each disk's image locks, in the same order.
    image_locks: Vec<oxvirt_virtio::ImageLocks>,
}

fn add_virtio_devices(
    config: &VmConfig,
    memory: &GuestRam,
    vm: &Arc<VmFd>,
    pci: &mut PciBus,
    disks: Vec<oxvirt_images::Disk>,
    taps: Vec<oxvirt_virtio::net::Tap>,
) -> anyhow::Result<VirtioHandles> {
    use oxvirt_virtio::{GuestMemoryHandle, VirtioPciDevice};
    if config.disks.is_empty() && config.nets.is_empty() && !config.rng && config.balloon.is_none()
    {
        return Ok(VirtioHandles::default());
    }
    let mem_handle = GuestMemoryHandle::new(memory.clone());
    let msi_vm = vm.clone();
    let msi = oxvirt_virtio::msi_fn(move |m| {
        let msi = kvm_msi {
            address_lo: m.address as u32,
            address_hi: (m.address >> 32) as u32,
            data: m.data,
            ..Default::default()
        };
        msi_vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(std::io::Error::from)
    });
    let mut devices: Vec<Box<dyn oxvirt_virtio::VirtioDevice>> = Vec::new();
    let mut handles = VirtioHandles::default();
    for (i, (config, disk)) in config.disks.iter().zip(disks).enumerate() {
        let serial = format!("oxvirt-disk{i}");
        let device = oxvirt_virtio::block::BlockDevice::new(disk, config.readonly, Some(&serial));
        handles.disks.push((config.id.clone(), device.stats()));
        handles.image_locks.push(device.image_locks());
        devices.push(Box::new(device));
    }
    for (i, (net, tap)) in config.nets.iter().zip(taps).enumerate() {
        // Locally administered, derived from the index, unless given.
        let mac = net
            .mac
            .map_or([0x52, 0x54, 0x00, 0x0a, 0x00, i as u8], |mac| mac.0);
        devices.push(Box::new(oxvirt_virtio::net::NetDevice::with_tap(tap, mac)));
    }
    if config.rng {
        devices.push(oxvirt_virtio::rng_device());
    }
    if let Some(settings) = config.balloon {
        let (device, handle) = oxvirt_virtio::balloon_device(oxvirt_virtio::BalloonConfig {
            deflate_on_oom: settings.deflate_on_oom,
            stats_period_s: settings.stats_period_s,
        })?;
        if let Some(target_kib) = settings.target_kib {
            // Validated: at most all of RAM.
            let pages = (config.memory.size_mib * 1024).saturating_sub(target_kib)
                / (oxvirt_virtio::balloon::BALLOON_PAGE_SIZE / 1024);
            handle.set_target_pages(u32::try_from(pages).unwrap_or(u32::MAX));
        }
        devices.push(device);
        handles.balloon = Some(handle);
    }
    for dev in devices {
        let pci_dev = VirtioPciDevice::new(dev, mem_handle.clone(), msi.clone())?;
        pci.add(Box::new(pci_dev))?;
    }
    Ok(handles)
}
