//! Reset paths: the i8042 controller's "pulse reset line" command (0xfe to port 0x64) and the reset control
//! register at port 0xcf9 (the FADT's reset register). Both end the VM with [`ExitReason::GuestReset`].

use std::sync::Arc;

use super::PioDevice;
use crate::control::{ExitReason, VmControl};

/// The controller's registers (also what the saved machine state holds of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I8042State {
    command_byte: u8,
    pending_read: Option<u8>,
    expect_command_byte: bool,
}

/// Ports 0x60..=0x64. Reads as an empty, idle controller; the only command honoured is reset.
pub struct I8042 {
    vm: Arc<VmControl>,
    regs: I8042State,
}

const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const CMD_WRITE_COMMAND_BYTE: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_PULSE_RESET: u8 = 0xfe;
const STATUS_OUTPUT_FULL: u8 = 1;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;

impl I8042 {
    pub fn new(vm: Arc<VmControl>) -> Self {
        I8042 {
            vm,
            regs: I8042State::default(),
        }
    }
}

impl I8042 {
    pub fn state(&self) -> I8042State {
        self.regs
    }

    pub fn restore(&mut self, state: I8042State) {
        self.regs = state;
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = match offset {
            0 => self.regs.pending_read.take().unwrap_or(0),
            4 => {
                STATUS_SYSTEM_FLAG
                    | if self.regs.pending_read.is_some() {
                        STATUS_OUTPUT_FULL
                    } else {
                        0
                    }
            }
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = value;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 if self.regs.expect_command_byte => {
                self.regs.command_byte = value;
                self.regs.expect_command_byte = false;
            }
            4 => match value {
                CMD_PULSE_RESET => self.vm.request_exit(ExitReason::GuestReset),
                CMD_READ_COMMAND_BYTE => self.regs.pending_read = Some(self.regs.command_byte),
                CMD_WRITE_COMMAND_BYTE => self.regs.expect_command_byte = true,
                CMD_SELF_TEST => self.regs.pending_read = Some(0x55),
                _ => {}
            },
            _ => {}
        }
    }
}

/// Handles a byte write to the reset control register (0xcf9): bit 2 starts a reset.
pub fn reset_control_write(vm: &VmControl, value: u8) {
    if value & 0x04 != 0 {
        vm.request_exit(ExitReason::GuestReset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulse_reset_command_resets_the_vm() {
        let vm = Arc::new(VmControl::new(1).unwrap());
        let mut kbd = I8042::new(vm.clone());
        kbd.write(4, &[CMD_SELF_TEST]);
        let mut b = [0u8];
        kbd.read(0, &mut b);
        assert_eq!(b[0], 0x55);
        assert_eq!(vm.exit_reason(), None);
        kbd.write(4, &[CMD_PULSE_RESET]);
        assert_eq!(vm.exit_reason(), Some(ExitReason::GuestReset));
    }
}
