//! KVM's part of the saved machine state: each vCPU's registers, FPU/XSAVE, XCRs, LAPIC, MSRs, events,
//! MP state and debug registers, and the VM's in-kernel PIC/IOAPIC, PIT and clock. Encoded as
//! [`crate::snapshot`] blobs, restored in the order KVM needs (see [`VcpuState::apply`]).

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_msr_entry, kvm_pit_state2, Msrs, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::snapshot::{Decoder, Encoder, StateError};

/// Most MSRs one vCPU's state may list (KVM reports a few hundred at most).
const MAX_MSRS: u32 = 4096;

/// The MSRs to save: what KVM_GET_MSR_INDEX_LIST reports (the MSRs KVM keeps per vCPU and can read and
/// write on the host's behalf), in its order.
pub fn msr_index_list(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(StateError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(list.as_slice().to_vec())
}

/// Reads `indices` from `vcpu`. KVM stops a batch at the first MSR it cannot read (one the vCPU's CPUID
/// does not offer, say): that one is left out and the rest is read on.
fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|index| kvm_msr_entry {
                index: *index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|e| StateError::Device(format!("MSR list: {e:?}")))?;
        let read = vcpu
            .get_msrs(&mut msrs)
            .map_err(StateError::kvm("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..read.min(rest.len())]);
        // Skip the one that failed.
        rest = rest.get(read + 1..).unwrap_or_default();
    }
    Ok(out)
}

/// Writes `entries`; an MSR KVM refuses is reported on stderr and skipped (the rest are written).
fn write_msrs(vcpu: &VcpuFd, index: u32, entries: &[kvm_msr_entry]) -> Result<(), StateError> {
    let mut rest = entries;
    while !rest.is_empty() {
        let msrs =
            Msrs::from_entries(rest).map_err(|e| StateError::Device(format!("MSR list: {e:?}")))?;
        let written = vcpu
            .set_msrs(&msrs)
            .map_err(StateError::kvm(format!("vCPU {index}: KVM_SET_MSRS")))?;
        if let Some(refused) = rest.get(written) {
            eprintln!(
                "oxvirt-vmm: warning: vCPU {index}: KVM refused MSR {:#x} = {:#x}; it keeps its reset value",
                refused.index, refused.data
            );
        }
        rest = rest.get(written + 1..).unwrap_or_default();
    }
    Ok(())
}

/// One vCPU's state as a VCPU section payload. The vCPU must not be running.
pub fn save_vcpu(vcpu: &VcpuFd, index: u32, msr_list: &[u32]) -> Result<Vec<u8>, StateError> {
    let k = |call: &str| StateError::kvm(format!("vCPU {index}: {call}"));
    let mut e = Encoder::default();
    // The MP state first: KVM_GET_MP_STATE settles pending INIT/SIPI events into it.
    e.kvm(&vcpu.get_mp_state().map_err(k("KVM_GET_MP_STATE"))?);
    e.kvm(&vcpu.get_regs().map_err(k("KVM_GET_REGS"))?);
    e.kvm(&vcpu.get_sregs().map_err(k("KVM_GET_SREGS"))?);
    e.kvm(&vcpu.get_xsave().map_err(k("KVM_GET_XSAVE"))?);
    e.kvm(&vcpu.get_xcrs().map_err(k("KVM_GET_XCRS"))?);
    e.kvm(&vcpu.get_debug_regs().map_err(k("KVM_GET_DEBUGREGS"))?);
    e.kvm(&vcpu.get_lapic().map_err(k("KVM_GET_LAPIC"))?);
    let msrs = read_msrs(vcpu, msr_list)?;
    e.u32(msrs.len() as u32);
    for msr in &msrs {
        e.u32(msr.index).u64(msr.data);
    }
    e.kvm(&vcpu.get_vcpu_events().map_err(k("KVM_GET_VCPU_EVENTS"))?);
    // 0 when KVM cannot tell (no KVM_CAP_GET_TSC_KHZ): the restore then leaves the frequency alone.
    e.u32(vcpu.get_tsc_khz().unwrap_or(0));
    Ok(e.0)
}

/// A VCPU section, decoded and checked (sizes, counts) but not applied yet.
pub struct VcpuState {
    mp_state: kvm_bindings::kvm_mp_state,
    regs: kvm_bindings::kvm_regs,
    sregs: kvm_bindings::kvm_sregs,
    xsave: kvm_bindings::kvm_xsave,
    xcrs: kvm_bindings::kvm_xcrs,
    debugregs: kvm_bindings::kvm_debugregs,
    lapic: kvm_bindings::kvm_lapic_state,
    msrs: Vec<kvm_msr_entry>,
    events: kvm_bindings::kvm_vcpu_events,
    tsc_khz: u32,
}

impl VcpuState {
    /// Decodes vCPU `index`'s section payload.
    pub fn decode(payload: &[u8], index: u32) -> Result<VcpuState, StateError> {
        let name = format!("vCPU {index} state");
        let mut d = Decoder::new(payload, &name);
        let mp_state = d.kvm("mp_state")?;
        let regs = d.kvm("regs")?;
        let sregs = d.kvm("sregs")?;
        let xsave = d.kvm("xsave")?;
        let xcrs = d.kvm("xcrs")?;
        let debugregs = d.kvm("debugregs")?;
        let lapic = d.kvm("lapic")?;
        let count = d.u32("MSR count")?;
        if count > MAX_MSRS {
            return Err(StateError::Corrupt(format!(
                "{name} lists {count} MSRs, more than the {MAX_MSRS} it can"
            )));
        }
        let mut msrs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            msrs.push(kvm_msr_entry {
                index: d.u32("MSR index")?,
                data: d.u64("MSR value")?,
                ..Default::default()
            });
        }
        let events = d.kvm("events")?;
        let tsc_khz = d.u32("TSC frequency")?;
        d.end()?;
        Ok(VcpuState {
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            events,
            tsc_khz,
        })
    }

    /// Sets vCPU `index` (created as for a fresh boot, CPUID set) to this state.
    ///
    /// The order matters: registers before the LAPIC (its mode follows APIC_BASE in sregs), MSRs after
    /// the LAPIC (the TSC deadline MSR needs the LAPIC in TSC-deadline mode), events last (they may refer
    /// to an interrupt the LAPIC must already hold).
    pub fn apply(&self, vcpu: &VcpuFd, index: u32) -> Result<(), StateError> {
        let k = |call: &str| StateError::kvm(format!("vCPU {index}: {call}"));
        let tsc_khz = self.tsc_khz;
        if tsc_khz != 0 && vcpu.get_tsc_khz().is_ok_and(|here| here != tsc_khz) {
            vcpu.set_tsc_khz(tsc_khz).map_err(StateError::kvm(format!(
                "vCPU {index}: the guest's TSC ran at {tsc_khz} kHz and KVM cannot set that (KVM_SET_TSC_KHZ)"
            )))?;
        }
        vcpu.set_mp_state(self.mp_state)
            .map_err(k("KVM_SET_MP_STATE"))?;
        vcpu.set_regs(&self.regs).map_err(k("KVM_SET_REGS"))?;
        vcpu.set_sregs(&self.sregs).map_err(k("KVM_SET_SREGS"))?;
        // SAFETY: KVM_SET_XSAVE reads the 4096-byte kvm_xsave given; it reads beyond it only for XSTATE
        // features enabled dynamically (arch_prctl ARCH_REQ_XCOMP_GUEST_PERM), which this VMM never enables.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(k("KVM_SET_XSAVE"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(k("KVM_SET_XCRS"))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(k("KVM_SET_DEBUGREGS"))?;
        vcpu.set_lapic(&self.lapic).map_err(k("KVM_SET_LAPIC"))?;
        write_msrs(vcpu, index, &self.msrs)?;
        vcpu.set_vcpu_events(&self.events)
            .map_err(k("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

fn irqchip(vm: &VmFd, chip_id: u32, name: &str) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(StateError::kvm(format!("KVM_GET_IRQCHIP ({name})")))?;
    Ok(chip)
}

/// The VM's in-kernel devices: PIC master, PIC slave, IOAPIC, PIT, clock.
pub fn save_vm(vm: &VmFd) -> Result<Vec<u8>, StateError> {
    let mut e = Encoder::default();
    e.kvm(&irqchip(vm, KVM_IRQCHIP_PIC_MASTER, "PIC master")?);
    e.kvm(&irqchip(vm, KVM_IRQCHIP_PIC_SLAVE, "PIC slave")?);
    e.kvm(&irqchip(vm, KVM_IRQCHIP_IOAPIC, "IOAPIC")?);
    e.kvm(&vm.get_pit2().map_err(StateError::kvm("KVM_GET_PIT2"))?);
    e.kvm(&vm.get_clock().map_err(StateError::kvm("KVM_GET_CLOCK"))?);
    Ok(e.0)
}

/// Sets the VM's in-kernel devices to a VMST section's state.
pub fn restore_vm(vm: &VmFd, payload: &[u8]) -> Result<(), StateError> {
    let mut d = Decoder::new(payload, "the VM state");
    for (chip_id, name) in [
        (KVM_IRQCHIP_PIC_MASTER, "PIC master"),
        (KVM_IRQCHIP_PIC_SLAVE, "PIC slave"),
        (KVM_IRQCHIP_IOAPIC, "IOAPIC"),
    ] {
        let chip: kvm_irqchip = d.kvm(name)?;
        if chip.chip_id != chip_id {
            return Err(StateError::Corrupt(format!(
                "the {name} state is chip {}, expected {chip_id}",
                chip.chip_id
            )));
        }
        vm.set_irqchip(&chip)
            .map_err(StateError::kvm(format!("KVM_SET_IRQCHIP ({name})")))?;
    }
    let pit: kvm_pit_state2 = d.kvm("PIT")?;
    vm.set_pit2(&pit).map_err(StateError::kvm("KVM_SET_PIT2"))?;
    let mut clock: kvm_clock_data = d.kvm("clock")?;
    d.end()?;
    // The guest's clock goes on from the value it had when saved (as its TSC does, from the MSR):
    // without flags KVM takes the value as "now", not adjusted by the real time that passed.
    clock.flags = 0;
    clock.realtime = 0;
    clock.host_tsc = 0;
    vm.set_clock(&clock)
        .map_err(StateError::kvm("KVM_SET_CLOCK"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A VCPU payload as `save_vcpu` lays it out, from default structures and two MSRs.
    fn payload() -> Vec<u8> {
        let mut e = Encoder::default();
        e.kvm(&kvm_bindings::kvm_mp_state::default())
            .kvm(&kvm_bindings::kvm_regs {
                rip: 0xffff_ffff_8100_0000,
                ..Default::default()
            })
            .kvm(&kvm_bindings::kvm_sregs::default())
            .kvm(&kvm_bindings::kvm_xsave::default())
            .kvm(&kvm_bindings::kvm_xcrs::default())
            .kvm(&kvm_bindings::kvm_debugregs::default())
            .kvm(&kvm_bindings::kvm_lapic_state::default())
            .u32(2)
            .u32(0x10)
            .u64(123_456)
            .u32(0x6e0)
            .u64(0)
            .kvm(&kvm_bindings::kvm_vcpu_events::default())
            .u32(2_000_000);
        e.0
    }

    #[test]
    fn a_vcpu_payload_decodes_and_every_cut_is_refused() {
        let bytes = payload();
        let state = VcpuState::decode(&bytes, 0).unwrap();
        assert_eq!(state.regs.rip, 0xffff_ffff_8100_0000);
        assert_eq!(state.msrs.len(), 2);
        assert_eq!((state.msrs[0].index, state.msrs[0].data), (0x10, 123_456));
        assert_eq!(state.tsc_khz, 2_000_000);
        for len in 0..bytes.len() {
            assert!(VcpuState::decode(&bytes[..len], 0).is_err(), "length {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let Err(err) = VcpuState::decode(&longer, 3) else {
            panic!("a payload with a byte too many was accepted")
        };
        assert!(
            err.to_string()
                .contains("vCPU 3 state has 1 bytes too many"),
            "{err}"
        );
    }

    #[test]
    fn an_msr_count_beyond_the_limit_is_refused_before_reading_them() {
        let mut e = Encoder::default();
        e.kvm(&kvm_bindings::kvm_mp_state::default())
            .kvm(&kvm_bindings::kvm_regs::default())
            .kvm(&kvm_bindings::kvm_sregs::default())
            .kvm(&kvm_bindings::kvm_xsave::default())
            .kvm(&kvm_bindings::kvm_xcrs::default())
            .kvm(&kvm_bindings::kvm_debugregs::default())
            .kvm(&kvm_bindings::kvm_lapic_state::default())
            .u32(u32::MAX);
        let Err(err) = VcpuState::decode(&e.0, 0) else {
            panic!("4 billion MSRs were accepted")
        };
        assert!(err.to_string().contains("more than the 4096"), "{err}");
    }

    proptest! {
        /// Damaged payloads are refused or decoded, never a panic.
        #[test]
        fn damaged_vcpu_payloads_never_panic(
            at in 0usize..9000,
            value in any::<u8>(),
            cut in 0usize..9000,
        ) {
            let mut bytes = payload();
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(cut.max(1));
            let _ = VcpuState::decode(&bytes, 0);
        }
    }
}
