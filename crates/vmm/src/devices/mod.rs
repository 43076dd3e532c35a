//! Emulated platform devices and the buses that route vCPU exits to them.
//!
//! Port I/O goes through [`IoBus`] (fixed ranges). MMIO goes to the PCI BARs through [`pci::PciBus`]; the
//! interrupt controllers, PIT and LAPIC are KVM's in-kernel ones and never exit to us.

pub mod cmos;
pub mod pci;
pub mod pm;
pub mod reset;
pub mod serial;

use std::sync::{Arc, Mutex};

/// A device on the port-I/O bus. `offset` is relative to the start of the device's range. Data comes from
/// the guest: any offset/length must be handled without panicking.
pub trait PioDevice: Send {
    fn read(&mut self, offset: u16, data: &mut [u8]);
    fn write(&mut self, offset: u16, data: &[u8]);
}

struct PioRange {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Fixed port-I/O ranges. Accesses to unclaimed ports read as all ones and writes are dropped, as on a
/// real ISA bus.
#[derive(Default)]
pub struct IoBus {
    ranges: Vec<PioRange>,
}

#[derive(Debug, thiserror::Error)]
#[error("port range {base:#x}+{len} overlaps an existing device")]
pub struct OverlapError {
    pub base: u16,
    pub len: u16,
}

impl IoBus {
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), OverlapError> {
        let end = u32::from(base) + u32::from(len);
        if self.ranges.iter().any(|r| {
            u32::from(base) < u32::from(r.base) + u32::from(r.len) && u32::from(r.base) < end
        }) {
            return Err(OverlapError { base, len });
        }
        self.ranges.push(PioRange { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&PioRange, u16)> {
        self.ranges
            .iter()
            .find(|r| port >= r.base && u32::from(port) < u32::from(r.base) + u32::from(r.len))
            .map(|r| (r, port - r.base))
    }

    /// Returns whether a device claimed the port.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
            Some((range, offset)) => {
                lock(&range.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
            Some((range, offset)) => {
                lock(&range.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device mutex; a device that panicked while holding it keeps serving (its state is plain data).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A level-triggered interrupt line into the in-kernel IOAPIC/PIC.
pub trait IrqLine: Send + Sync {
    fn set_level(&self, high: bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(Vec<u8>);
    impl PioDevice for Scratch {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.0.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = self.0.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
        }
    }

    #[test]
    fn routes_by_range_and_floats_unclaimed_ports() {
        let mut bus = IoBus::default();
        bus.insert(0x100, 4, Arc::new(Mutex::new(Scratch(vec![0; 4]))))
            .unwrap();
        assert!(bus
            .insert(0x102, 4, Arc::new(Mutex::new(Scratch(vec![0; 4]))))
            .is_err());
        assert!(bus.write(0x102, &[7]));
        let mut b = [0u8; 1];
        assert!(bus.read(0x102, &mut b));
        assert_eq!(b, [7]);
        let mut w = [0u8; 2];
        assert!(!bus.read(0x200, &mut w));
        assert_eq!(w, [0xff, 0xff]);
    }
}
