//! ACPI fixed-hardware power management (PM1a event and control blocks, see the FADT in [`crate::acpi`]).
//!
//! * Power button: [`Pm::press_power_button`] sets PWRBTN_STS; while status & enable is non-zero the SCI
//!   line is high. The guest's ACPI driver clears the status (write 1 to clear) and reports the key press.
//! * Poweroff: the guest writes SLP_TYP = S5 with SLP_EN to PM1 control; the VM stops with
//!   [`ExitReason::GuestPoweroff`].

use std::sync::Arc;

use super::{IrqLine, PioDevice};
use crate::acpi::S5_SLEEP_TYPE;
use crate::control::{ExitReason, VmControl};

const PWRBTN: u16 = 1 << 8;
const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;

/// The PM registers (also what the saved machine state holds of the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmState {
    status: u16,
    enable: u16,
    control: u16,
}

pub struct Pm {
    regs: PmState,
    sci: Arc<dyn IrqLine>,
    vm: Arc<VmControl>,
}

impl Pm {
    pub fn new(sci: Arc<dyn IrqLine>, vm: Arc<VmControl>) -> Self {
        Pm {
            regs: PmState {
                status: 0,
                enable: 0,
                control: SCI_EN,
            },
            sci,
            vm,
        }
    }

    fn update_sci(&self) {
        self.sci.set_level(self.regs.status & self.regs.enable != 0);
    }

    pub fn state(&self) -> PmState {
        self.regs
    }

    /// Takes back saved registers; the SCI line follows them (the IOAPIC's saved state has it too).
    pub fn restore(&mut self, state: PmState) {
        self.regs = state;
        self.update_sci();
    }

    pub fn press_power_button(&mut self) {
        self.regs.status |= PWRBTN;
        self.update_sci();
    }

    /// Whether the guest enabled the power button event (an ACPI-aware OS does at boot).
    pub fn power_button_enabled(&self) -> bool {
        self.regs.enable & PWRBTN != 0
    }
}

fn le16(data: &[u8]) -> u16 {
    let mut b = [0u8; 2];
    for (dst, src) in b.iter_mut().zip(data) {
        *dst = *src;
    }
    u16::from_le_bytes(b)
}

impl PioDevice for Pm {
    /// Offsets: 0 = PM1a_STS, 2 = PM1a_EN (the event block), 4 = PM1a_CNT (the control block).
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let regs = [
            self.regs.status.to_le_bytes(),
            self.regs.enable.to_le_bytes(),
            self.regs.control.to_le_bytes(),
        ]
        .concat();
        for (i, b) in data.iter_mut().enumerate() {
            *b = regs.get(usize::from(offset) + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let value = le16(data);
        match (offset, data.len()) {
            (0, _) => {
                self.regs.status &= !value;
                self.update_sci();
            }
            (2, _) => {
                self.regs.enable = value;
                self.update_sci();
            }
            // A 4-byte write at 0 covers status and enable.
            (4, _) => {
                self.regs.control = (value & !SLP_EN) | SCI_EN;
                let sleep_type = (value >> SLP_TYP_SHIFT) & 7;
                if value & SLP_EN != 0 && sleep_type == u16::from(S5_SLEEP_TYPE) {
                    self.vm.request_exit(ExitReason::GuestPoweroff);
                }
            }
            _ => {}
        }
        if offset == 0 && data.len() == 4 {
            self.regs.enable = u16::from_le_bytes([data[2], data[3]]);
            self.update_sci();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Line(AtomicBool);
    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    #[test]
    fn power_button_raises_sci_until_acknowledged() {
        let line = Arc::new(Line::default());
        let vm = Arc::new(VmControl::new(1).unwrap());
        let mut pm = Pm::new(line.clone(), vm);
        pm.write(2, &PWRBTN.to_le_bytes());
        pm.press_power_button();
        assert!(line.0.load(Ordering::SeqCst));
        let mut sts = [0u8; 2];
        pm.read(0, &mut sts);
        assert_eq!(u16::from_le_bytes(sts) & PWRBTN, PWRBTN);
        pm.write(0, &PWRBTN.to_le_bytes());
        assert!(!line.0.load(Ordering::SeqCst));
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let vm = Arc::new(VmControl::new(1).unwrap());
        let mut pm = Pm::new(Arc::new(Line::default()), vm.clone());
        let mut cnt = [0u8; 2];
        pm.read(4, &mut cnt);
        assert_eq!(
            u16::from_le_bytes(cnt) & SCI_EN,
            SCI_EN,
            "always in ACPI mode"
        );
        pm.write(
            4,
            &((u16::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes(),
        );
        assert_eq!(vm.exit_reason(), Some(ExitReason::GuestPoweroff));
    }
}
