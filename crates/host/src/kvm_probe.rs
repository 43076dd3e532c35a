//! Does `/dev/kvm` run guests as hardware KVM? Its existence says little: a paravirtual KVM
//! (`kvm_pvm`) also creates VMs and runs guest code, but emulates supervisor code and hides
//! CPU features, so stock kernels do not boot on it. The probe runs a few real-mode
//! instructions in a one-page VM (the guest writes a byte to an I/O port) and compares what
//! KVM offers guests (`KVM_GET_SUPPORTED_CPUID`) with what the host CPU has.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit};

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// No `/dev/kvm`.
    Missing,
    /// `/dev/kvm` exists but a VM could not be made or run: the step and the error.
    Failed(String),
    /// The test program ran. `hidden`: features the host CPU has that KVM does not offer
    /// guests (names as `/proc/cpuinfo` spells them).
    Ran { hidden: Vec<&'static str> },
}

/// Guest-physical address of the probe's code (any page-aligned address below 1 MiB).
const CODE_ADDRESS: u64 = 0x1000;
const PAGE: usize = 0x1000;
const PORT: u16 = 0x10;
const VALUE: u8 = 0x42;
/// `mov al, 0x42; out 0x10, al; hlt`
const CODE: [u8; 5] = [0xb0, VALUE, 0xe6, PORT as u8, 0xf4];

/// CPUID leaf 1 ECX bits that a hardware KVM passes on when the host has them, with the name
/// `/proc/cpuinfo` gives each.
const LEAF1_ECX: [(u32, &str); 4] = [(0, "pni"), (9, "ssse3"), (19, "sse4_1"), (20, "sse4_2")];

/// Runs the probe; `host_flags` are the host CPU's `/proc/cpuinfo` flags.
pub fn probe(host_flags: &[String]) -> KvmProbe {
    if !std::path::Path::new("/dev/kvm").exists() {
        return KvmProbe::Missing;
    }
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(err) => return KvmProbe::Failed(format!("opening /dev/kvm: {err}")),
    };
    match run_test_program(&kvm) {
        Err(failure) => KvmProbe::Failed(failure),
        Ok(()) => KvmProbe::Ran {
            hidden: hidden_features(&kvm, host_flags),
        },
    }
}

fn run_test_program(kvm: &Kvm) -> Result<(), String> {
    // Made first, so it is dropped (unmapped) after the VM.
    let memory = GuestPage::new().map_err(|err| format!("mapping guest memory: {err}"))?;
    memory.write(&CODE);
    let vm = kvm
        .create_vm()
        .map_err(|err| format!("KVM_CREATE_VM: {err}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: CODE_ADDRESS,
        memory_size: PAGE as u64,
        userspace_addr: memory.address(),
        flags: 0,
    };
    // SAFETY: the region is the one page `memory` mapped, which outlives the VM (declared
    // before it, so dropped after it): KVM never sees it unmapped.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|err| format!("KVM_SET_USER_MEMORY_REGION: {err}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|err| format!("KVM_CREATE_VCPU: {err}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|err| format!("KVM_GET_SREGS: {err}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|err| format!("KVM_SET_SREGS: {err}"))?;
    let mut regs = vcpu
        .get_regs()
        .map_err(|err| format!("KVM_GET_REGS: {err}"))?;
    regs.rip = CODE_ADDRESS;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)
        .map_err(|err| format!("KVM_SET_REGS: {err}"))?;
    let mut wrote = false;
    // Two exits are expected (the port write, then hlt); a few more are tolerated.
    for _ in 0..4 {
        match vcpu.run().map_err(|err| format!("KVM_RUN: {err}"))? {
            VcpuExit::IoOut(port, data) if port == PORT && data == [VALUE] => wrote = true,
            VcpuExit::Hlt if wrote => return Ok(()),
            VcpuExit::Hlt => return Err("the guest halted without writing its byte".into()),
            other => return Err(format!("unexpected exit {other:?}")),
        }
    }
    Err("the guest did not halt".into())
}

fn hidden_features(kvm: &Kvm, host_flags: &[String]) -> Vec<&'static str> {
    let Ok(cpuid) = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) else {
        return Vec::new();
    };
    let leaf1_ecx = cpuid
        .as_slice()
        .iter()
        .find(|entry| entry.function == 1)
        .map_or(0, |entry| entry.ecx);
    LEAF1_ECX
        .iter()
        .filter(|(bit, name)| {
            host_flags.iter().any(|flag| flag == name) && leaf1_ecx & (1 << bit) == 0
        })
        .map(|(_, name)| *name)
        .collect()
}

/// One page of anonymous memory for the probe's guest, unmapped on drop.
struct GuestPage(*mut std::ffi::c_void);

impl GuestPage {
    fn new() -> std::io::Result<GuestPage> {
        use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous private mapping, at an address the kernel picks: it
        // aliases nothing.
        let address = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        Ok(GuestPage(address))
    }

    fn write(&self, bytes: &[u8]) {
        let len = bytes.len().min(PAGE);
        // SAFETY: the page is PAGE bytes, mapped writable, and only this struct holds it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.cast::<u8>(), len) };
    }

    fn address(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of PAGE bytes; nothing uses it after the drop.
        let _ = unsafe { rustix::mm::munmap(self.0, PAGE) };
    }
}
