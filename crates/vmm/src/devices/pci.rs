//! PCI host side: bus 0 behind configuration mechanism #1 (ports 0xcf8/0xcfc) and MMCONFIG (ECAM, announced
//! by the MCFG table), a host bridge at 00:00.0, BAR placement in the 32-bit MMIO hole, and dispatch of MMIO
//! exits to the function owning the BAR. Functions implement [`oxvirt_virtio::PciFunction`].

use std::io;
use std::sync::{Arc, Mutex};

use oxvirt_virtio::{BarMoved, NotifyEventFd, PciFunction};
use vmm_sys_util::eventfd::EventFd;

use super::lock;
use crate::control::VmControl;
use crate::layout;

/// Registers queue-notify eventfds with KVM (implemented on `VmFd`; a no-op in unit tests).
pub trait IoEventRegistrar: Send + Sync {
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("no free PCI slot (bus 0 has 32)")]
    NoSlot,
    #[error("the 32-bit PCI MMIO window is full (BAR of {size} bytes)")]
    NoMmioSpace { size: u64 },
    #[error("cannot register a queue-notify ioeventfd at {addr:#x}: {source}")]
    IoEvent { addr: u64, source: io::Error },
}

struct Slot {
    function: Mutex<Box<dyn PciFunction>>,
    /// (bar index, offset, eventfd, registered address).
    notify: Mutex<Vec<(NotifyEventFd, Option<u64>)>>,
}

/// Bus 0.
pub struct PciBus {
    /// The latched CONFIG_ADDRESS register of mechanism #1 (one per machine, shared by all vCPUs).
    config_address: Mutex<u32>,
    slots: Vec<Arc<Slot>>,
    next_bar: u64,
    ioevents: Arc<dyn IoEventRegistrar>,
    vm: Arc<VmControl>,
}

impl PciBus {
    pub fn new(ioevents: Arc<dyn IoEventRegistrar>, vm: Arc<VmControl>) -> Self {
        let mut bus = PciBus {
            config_address: Mutex::new(0),
            slots: Vec::new(),
            next_bar: layout::PCI_MMIO_START,
            ioevents,
            vm,
        };
        // Slot 0: the host bridge has no BARs, so this cannot fail.
        let _ = bus.add(Box::new(HostBridge::default()));
        bus
    }

    /// Plugs a function into the next free slot, places its BARs and registers its notify eventfds.
    /// Returns the device number.
    pub fn add(&mut self, mut function: Box<dyn PciFunction>) -> Result<u8, PciError> {
        if self.slots.len() >= 32 {
            return Err(PciError::NoSlot);
        }
        for bar in function.bars() {
            let addr = self.next_bar.div_ceil(bar.size.max(1)) * bar.size.max(1);
            if addr + bar.size > layout::PCI_MMIO_END {
                return Err(PciError::NoMmioSpace { size: bar.size });
            }
            function.set_bar_address(bar.index, addr);
            self.next_bar = addr + bar.size;
        }
        let mut notify = Vec::new();
        for n in function.notify_eventfds() {
            let addr = function.bar_address(n.bar_index).map(|b| b + n.offset);
            if let Some(a) = addr {
                self.ioevents
                    .register(&n.eventfd, a)
                    .map_err(|source| PciError::IoEvent { addr: a, source })?;
            }
            notify.push((n, addr));
        }
        self.slots.push(Arc::new(Slot {
            function: Mutex::new(function),
            notify: Mutex::new(notify),
        }));
        Ok((self.slots.len() - 1) as u8)
    }

    fn config_access(&self, device: u8, function: u8) -> Option<&Arc<Slot>> {
        if function != 0 {
            return None;
        }
        self.slots.get(usize::from(device))
    }

    fn config_read(&self, bus: u8, device: u8, function: u8, offset: u16, data: &mut [u8]) {
        match self.config_access(device, function).filter(|_| bus == 0) {
            Some(slot) => lock(&slot.function).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn config_write(&self, bus: u8, device: u8, function: u8, offset: u16, data: &[u8]) {
        let Some(slot) = self.config_access(device, function).filter(|_| bus == 0) else {
            return;
        };
        let moved = lock(&slot.function).config_write(offset, data);
        if let Some(moved) = moved {
            self.bar_moved(slot, moved);
        }
    }

    /// Follows a BAR the guest reprogrammed: notify eventfds move with it.
    fn bar_moved(&self, slot: &Slot, moved: BarMoved) {
        let mut notify = lock(&slot.notify);
        for (n, registered) in notify
            .iter_mut()
            .filter(|(n, _)| n.bar_index == moved.index)
        {
            if let Some(old) = registered.take() {
                let _ = self.ioevents.unregister(&n.eventfd, old);
            }
            let new = moved.new_address + n.offset;
            // An address in the MMIO window is a real placement; anything else (sizing) stays unregistered and
            // reaches the function through MMIO exits, if at all.
            if (layout::PCI_MMIO_START..layout::PCI_MMIO_END).contains(&new)
                && self.ioevents.register(&n.eventfd, new).is_ok()
            {
                *registered = Some(new);
            }
        }
    }

    /// How many functions are plugged in (the host bridge included).
    pub fn function_count(&self) -> usize {
        self.slots.len()
    }

    /// The CONFIG_ADDRESS latch, for the saved machine state.
    pub fn config_address(&self) -> u32 {
        *lock(&self.config_address)
    }

    pub fn set_config_address(&self, value: u32) {
        *lock(&self.config_address) = value;
    }

    /// Saving: every function finishes its requests in flight and takes no new ones (see
    /// [`PciFunction::snapshot_pause`]); on failure the ones already paused go on.
    pub fn snapshot_pause(&self) -> Result<(), String> {
        for (i, slot) in self.slots.iter().enumerate() {
            if let Err(e) = lock(&slot.function).snapshot_pause() {
                self.snapshot_resume();
                return Err(format!("PCI device {i}: {e}"));
            }
        }
        Ok(())
    }

    pub fn snapshot_resume(&self) {
        for slot in &self.slots {
            lock(&slot.function).snapshot_resume();
        }
    }

    /// Every function's saved state, in slot order.
    pub fn save_functions(&self) -> Result<Vec<Vec<u8>>, String> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                lock(&slot.function)
                    .save_state()
                    .map_err(|e| format!("PCI device {i}: {e}"))
            })
            .collect()
    }

    /// Gives each function its saved state (one per slot, in order) and moves the notify ioeventfds
    /// to the BAR addresses the guest had programmed.
    pub fn restore_functions(&self, states: &[Vec<u8>]) -> Result<(), String> {
        if states.len() != self.slots.len() {
            return Err(format!(
                "the saved machine has {} PCI functions, this one {} (are the disks, NICs and rng the same?)",
                states.len(),
                self.slots.len()
            ));
        }
        for (i, (slot, state)) in self.slots.iter().zip(states).enumerate() {
            let mut f = lock(&slot.function);
            let before: Vec<_> = f
                .bars()
                .iter()
                .map(|b| (b.index, f.bar_address(b.index)))
                .collect();
            f.restore_state(state)
                .map_err(|e| format!("PCI device {i}: {e}"))?;
            for (index, old) in before {
                let new = f.bar_address(index);
                if let (Some(old_address), Some(new_address)) = (old, new) {
                    if old_address != new_address {
                        drop(f);
                        self.bar_moved(
                            slot,
                            BarMoved {
                                index,
                                old_address,
                                new_address,
                            },
                        );
                        f = lock(&slot.function);
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts the restored devices the guest's drivers had started (on a vCPU thread: the device
    /// workers inherit its seccomp filter).
    pub fn start_restored(&self) -> Result<(), String> {
        for (i, slot) in self.slots.iter().enumerate() {
            lock(&slot.function)
                .start_restored()
                .map_err(|e| format!("PCI device {i}: {e}"))?;
        }
        Ok(())
    }

    /// Port I/O at 0xcf8..=0xcff. Returns false for ports it does not own.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        match port {
            0xcf8 if data.len() == 4 => {
                data.copy_from_slice(&lock(&self.config_address).to_le_bytes())
            }
            0xcfc..=0xcff => {
                let address = *lock(&self.config_address);
                if address & 0x8000_0000 == 0 {
                    data.fill(0xff);
                    return;
                }
                let (bus, dev, func, reg) = decode_config_address(address);
                self.config_read(bus, dev, func, reg + (port - 0xcfc), data);
            }
            _ => data.fill(0xff),
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) {
        match port {
            0xcf8 if data.len() == 4 => {
                *lock(&self.config_address) =
                    u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            // Reset control register (FADT reset register and Linux's "reboot=pci").
            0xcf9 if data.len() == 1 => super::reset::reset_control_write(&self.vm, data[0]),
            0xcfc..=0xcff => {
                let address = *lock(&self.config_address);
                if address & 0x8000_0000 == 0 {
                    return;
                }
                let (bus, dev, func, reg) = decode_config_address(address);
                self.config_write(bus, dev, func, reg + (port - 0xcfc), data);
            }
            _ => {}
        }
    }

    fn find_bar(&self, addr: u64) -> Option<(&Arc<Slot>, u8, u64)> {
        for slot in &self.slots {
            let f = lock(&slot.function);
            for bar in f.bars() {
                if let Some(base) = f.bar_address(bar.index) {
                    if addr >= base && addr < base.saturating_add(bar.size) {
                        return Some((slot, bar.index, addr - base));
                    }
                }
            }
        }
        None
    }

    /// MMIO: MMCONFIG and BARs. Returns whether anything claimed the address.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        if let Some((dev, func, reg)) = decode_mmconfig(addr) {
            self.config_read(0, dev, func, reg, data);
            return true;
        }
        match self.find_bar(addr) {
            Some((slot, index, offset)) => {
                lock(&slot.function).bar_read(index, offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        if let Some((dev, func, reg)) = decode_mmconfig(addr) {
            self.config_write(0, dev, func, reg, data);
            return true;
        }
        match self.find_bar(addr) {
            Some((slot, index, offset)) => {
                lock(&slot.function).bar_write(index, offset, data);
                true
            }
            None => false,
        }
    }
}

/// (bus, device, function, register) of a mechanism-#1 CONFIG_ADDRESS value.
fn decode_config_address(a: u32) -> (u8, u8, u8, u16) {
    (
        ((a >> 16) & 0xff) as u8,
        ((a >> 11) & 0x1f) as u8,
        ((a >> 8) & 0x7) as u8,
        (a & 0xfc) as u16,
    )
}

/// (device, function, register) of an MMCONFIG address on bus 0.
fn decode_mmconfig(addr: u64) -> Option<(u8, u8, u16)> {
    let off = addr
        .checked_sub(layout::PCI_MMCONFIG_START)
        .filter(|o| *o < layout::PCI_MMCONFIG_SIZE)?;
    Some((
        ((off >> 15) & 0x1f) as u8,
        ((off >> 12) & 0x7) as u8,
        (off & 0xfff) as u16,
    ))
}

/// 00:00.0, a PCI host bridge with no BARs.
pub struct HostBridge {
    config: [u8; 256],
}

impl Default for HostBridge {
    fn default() -> Self {
        let mut config = [0u8; 256];
        // Vendor 0x1b36 / device 0x0008: the generic PCIe host bridge id.
        config[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        config[2..4].copy_from_slice(&0x0008u16.to_le_bytes());
        // Class 06 (bridge), subclass 00 (host bridge).
        config[0x0b] = 0x06;
        HostBridge { config }
    }
}

impl PciFunction for HostBridge {
    fn vendor_device(&self) -> (u16, u16) {
        (0x1b36, 0x0008)
    }
    fn bars(&self) -> Vec<oxvirt_virtio::BarInfo> {
        Vec::new()
    }
    fn set_bar_address(&mut self, _index: u8, _address: u64) {}
    fn bar_address(&self, _index: u8) -> Option<u64> {
        None
    }
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self
                .config
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0);
        }
    }
    fn config_write(&mut self, _offset: u16, _data: &[u8]) -> Option<BarMoved> {
        None
    }
    fn bar_read(&mut self, _index: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _index: u8, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_virtio::BarInfo;

    struct NoIoEvents;
    impl IoEventRegistrar for NoIoEvents {
        fn register(&self, _fd: &EventFd, _addr: u64) -> io::Result<()> {
            Ok(())
        }
        fn unregister(&self, _fd: &EventFd, _addr: u64) -> io::Result<()> {
            Ok(())
        }
    }

    /// A function with one 16 KiB BAR that remembers the last MMIO write.
    #[derive(Default)]
    struct Fake {
        bar: Option<u64>,
        last_write: Option<(u64, Vec<u8>)>,
    }
    impl PciFunction for Fake {
        fn vendor_device(&self) -> (u16, u16) {
            (0x1af4, 0x1042)
        }
        fn bars(&self) -> Vec<BarInfo> {
            vec![BarInfo {
                index: 0,
                size: 0x4000,
                prefetchable: false,
                is_64bit: true,
            }]
        }
        fn set_bar_address(&mut self, _index: u8, address: u64) {
            self.bar = Some(address);
        }
        fn bar_address(&self, _index: u8) -> Option<u64> {
            self.bar
        }
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            let id = [0xf4u8, 0x1a, 0x42, 0x10];
            for (i, b) in data.iter_mut().enumerate() {
                *b = id.get(usize::from(offset) + i).copied().unwrap_or(0);
            }
        }
        fn config_write(&mut self, _offset: u16, _data: &[u8]) -> Option<BarMoved> {
            None
        }
        fn bar_read(&mut self, _index: u8, _offset: u64, data: &mut [u8]) {
            data.fill(0xab);
        }
        fn bar_write(&mut self, _index: u8, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn bus() -> PciBus {
        PciBus::new(Arc::new(NoIoEvents), Arc::new(VmControl::new(1).unwrap()))
    }

    fn cf8_read32(bus: &PciBus, dev: u32, reg: u32) -> u32 {
        bus.pio_write(0xcf8, &(0x8000_0000 | (dev << 11) | reg).to_le_bytes());
        let mut d = [0u8; 4];
        bus.pio_read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_and_devices_are_visible_through_both_config_mechanisms() {
        let mut bus = bus();
        let dev = bus.add(Box::<Fake>::default()).unwrap();
        assert_eq!(dev, 1);
        assert_eq!(cf8_read32(&bus, 0, 0), 0x0008_1b36);
        assert_eq!(cf8_read32(&bus, 1, 0), 0x1042_1af4);
        assert_eq!(cf8_read32(&bus, 2, 0), 0xffff_ffff, "empty slot");
        let mut d = [0u8; 4];
        assert!(bus.mmio_read(layout::PCI_MMCONFIG_START + (1 << 15), &mut d));
        assert_eq!(u32::from_le_bytes(d), 0x1042_1af4);
        // Byte access at an offset through 0xcfe.
        bus.pio_write(0xcf8, &(0x8000_0000u32 | (1 << 11)).to_le_bytes());
        let mut b = [0u8; 1];
        bus.pio_read(0xcfe, &mut b);
        assert_eq!(b[0], 0x42);
    }

    #[test]
    fn bars_are_placed_aligned_in_the_hole_and_receive_mmio() {
        let mut bus = bus();
        bus.add(Box::<Fake>::default()).unwrap();
        bus.add(Box::<Fake>::default()).unwrap();
        let base0 = layout::PCI_MMIO_START;
        let base1 = base0 + 0x4000;
        let mut d = [0u8; 4];
        assert!(bus.mmio_read(base1 + 8, &mut d));
        assert_eq!(d, [0xab; 4]);
        assert!(bus.mmio_write(base1 + 0x10, &[1, 2]));
        assert!(!bus.mmio_write(base1 + 0x4000, &[1]), "past the last BAR");
        let slot = &bus.slots[2];
        assert_eq!(
            lock(&slot.function).bar_address(0),
            Some(base1),
            "second device's BAR follows the first, aligned to its size"
        );
    }

    #[test]
    fn reset_control_port_requests_a_reset() {
        let vm = Arc::new(VmControl::new(1).unwrap());
        let bus = PciBus::new(Arc::new(NoIoEvents), vm.clone());
        bus.pio_write(0xcf9, &[0x06]);
        assert_eq!(
            vm.exit_reason(),
            Some(crate::control::ExitReason::GuestReset)
        );
    }
}
