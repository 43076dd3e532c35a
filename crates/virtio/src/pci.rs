//! The modern (virtio 1.x) virtio-pci transport: PCI config space with the virtio and MSI-X
//! capabilities, and BAR 0 holding every register region.
//!
//! BAR 0 layout (offsets from the BAR base):
//!
//! | offset   | region                      | size                     |
//! |----------|-----------------------------|--------------------------|
//! | `0x0000` | common configuration        | `0x38` (Linux's minimum) |
//! | `0x1000` | ISR status                  | 1                        |
//! | `0x2000` | device-specific config      | device's                 |
//! | `0x3000` | notify (queue n at `4 * n`) | `4 * queues`             |
//! | `0x4000` | MSI-X table                 | `16 * vectors`           |
//! | `0x5000` | MSI-X PBA                   | `8 * ceil(vectors / 64)` |

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestAddressSpace};
use vmm_sys_util::eventfd::EventFd;

use serde::{Deserialize, Serialize};

use crate::msix::{
    copy_out, InterruptHandle, Msix, MsixState, MSIX_ENABLE, MSIX_FUNCTION_MASK, NO_VECTOR,
};
use crate::{
    Activation, ActiveQueue, BarInfo, BarMoved, Error, GuestMemoryHandle, MsiInterrupt,
    NotifyEventFd, PciFunction, VirtioDevice, VIRTIO_PCI_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};

/// Size of BAR 0.
pub const BAR0_SIZE: u64 = 0x8000;
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Length of the common configuration structure we implement (up to `queue_device`).
pub const COMMON_CFG_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
const REGION_SIZE: u64 = 0x1000;

/// Most queues a device may have here (one MSI-X vector each, plus one for config).
pub const MAX_QUEUES: usize = 64;

/// Config space size (PCIe).
pub const CONFIG_SPACE_SIZE: usize = 4096;
const HEADER_SIZE: usize = 256;

// Type 0 header offsets.
const PCI_COMMAND: usize = 0x04;
const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
const PCI_BAR0: usize = 0x10;
const PCI_BAR1: usize = 0x14;
const PCI_INTERRUPT_LINE: usize = 0x3c;
/// Memory space, bus master, INTx disable (I/O space is meaningless here: no I/O BAR).
const COMMAND_WRITABLE: u16 = 0x0002 | 0x0004 | 0x0400;
const BAR_MEM_64BIT: u32 = 0b100;

// Capability list.
const CAP_MSIX: usize = 0x40;
const CAP_COMMON: usize = 0x4c;
const CAP_NOTIFY: usize = 0x5c;
const CAP_ISR: usize = 0x70;
const CAP_DEVICE: usize = 0x80;
const PCI_CAP_ID_MSIX: u8 = 0x11;
const PCI_CAP_ID_VNDR: u8 = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;

// Common configuration field offsets (virtio 1.x, 4.1.4.3).
const CC_DEVICE_FEATURE_SELECT: usize = 0x00;
const CC_DEVICE_FEATURE: usize = 0x04;
const CC_DRIVER_FEATURE_SELECT: usize = 0x08;
const CC_DRIVER_FEATURE: usize = 0x0c;
const CC_MSIX_CONFIG: usize = 0x10;
const CC_NUM_QUEUES: usize = 0x12;
const CC_DEVICE_STATUS: usize = 0x14;
const CC_CONFIG_GENERATION: usize = 0x15;
const CC_QUEUE_SELECT: usize = 0x16;
const CC_QUEUE_SIZE: usize = 0x18;
const CC_QUEUE_MSIX_VECTOR: usize = 0x1a;
const CC_QUEUE_ENABLE: usize = 0x1c;
const CC_QUEUE_NOTIFY_OFF: usize = 0x1e;
const CC_QUEUE_DESC: usize = 0x20;
const CC_QUEUE_DRIVER: usize = 0x28;
const CC_QUEUE_DEVICE: usize = 0x30;

/// What the driver programmed for one queue before DRIVER_OK, and where the device starts
/// serving it (0 on a fresh start; a restored device goes on where it was saved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct QueueSetup {
    max_size: u16,
    size: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
    next_avail: u16,
    next_used: u16,
}

impl QueueSetup {
    fn new(max_size: u16) -> Self {
        QueueSetup {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
            next_avail: 0,
            next_used: 0,
        }
    }
}

/// The transport's saved state (see [`PciFunction::save_state`]): PCI header registers, the
/// virtio common configuration, every queue's setup and position, and MSI-X.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportState {
    device_id: u16,
    device_features: u64,
    registers: Registers,
    queues: Vec<QueueSetup>,
    /// Whether the device was serving its queues (the driver had set DRIVER_OK).
    active: bool,
    msix: MsixState,
    /// The device's own state ([`VirtioDevice::save_state`]); absent for devices without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    device_state: Vec<u8>,
}

/// The registers the guest writes: PCI header and virtio common configuration (saved as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registers {
    // PCI header.
    command: u16,
    interrupt_line: u8,
    bar0_address: u64,
    bar0_sizing_low: bool,
    bar0_sizing_high: bool,
    // Virtio common configuration.
    driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    status: u8,
    queue_select: u16,
}

/// A virtio device behind the modern virtio-pci transport. Implements [`PciFunction`].
pub struct VirtioPciDevice {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryHandle,
    msix: Msix,
    device_id: u16,
    class_code: u32,
    device_features: u64,
    regs: Registers,
    queues: Vec<QueueSetup>,
    kicks: Vec<EventFd>,
    active: bool,
    /// Paused for a snapshot ([`PciFunction::snapshot_pause`]).
    paused: bool,
    /// Restored as active, waiting for [`PciFunction::start_restored`].
    restored_active: bool,
}

impl VirtioPciDevice {
    /// Wraps `device`; interrupts go to `msi`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryHandle,
        msi: Arc<dyn MsiInterrupt>,
    ) -> Result<Self, Error> {
        let device_type = device.device_type();
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.is_empty() || max_sizes.len() > MAX_QUEUES {
            return Err(Error::QueueCount {
                device_type,
                count: max_sizes.len(),
                max: MAX_QUEUES,
            });
        }
        let kicks = max_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        // One vector per queue plus one for configuration changes; fits: MAX_QUEUES < u16::MAX.
        let vectors = u16::try_from(max_sizes.len() + 1).unwrap_or(u16::MAX);
        let class_code = match device_type {
            virtio_bindings::virtio_ids::VIRTIO_ID_NET => 0x02_00_00,
            virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK => 0x01_80_00,
            // "Other memory controller", as QEMU's virtio-balloon-pci.
            virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON => 0x05_80_00,
            _ => 0xff_00_00,
        };
        let device_id = VIRTIO_PCI_DEVICE_ID_BASE.wrapping_add(device_type as u16);
        Ok(VirtioPciDevice {
            device_features: device.features() | (1 << VIRTIO_F_VERSION_1),
            device,
            mem,
            msix: Msix::new(vectors, max_sizes.len(), msi),
            device_id,
            class_code,
            regs: Registers::default(),
            queues: max_sizes.into_iter().map(QueueSetup::new).collect(),
            kicks,
            active: false,
            paused: false,
            restored_active: false,
        })
    }

    /// The virtio device status register (for diagnostics and tests).
    pub fn device_status(&self) -> u8 {
        self.regs.status
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for kick in &self.kicks {
            // Drop any kick left over from before the reset; EAGAIN just means none.
            let _ = kick.read();
        }
        for q in &mut self.queues {
            *q = QueueSetup::new(q.max_size);
        }
        self.msix.reset();
        self.regs.driver_features = 0;
        self.regs.device_feature_select = 0;
        self.regs.driver_feature_select = 0;
        self.regs.queue_select = 0;
        self.regs.status = 0;
    }

    // ---- config space ----

    fn header(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        put16(&mut h, 0x00, VIRTIO_PCI_VENDOR_ID);
        put16(&mut h, 0x02, self.device_id);
        put16(&mut h, PCI_COMMAND, self.regs.command);
        put16(&mut h, 0x06, PCI_STATUS_CAP_LIST);
        // Revision 1 (modern), then the 24-bit class code.
        put32(&mut h, 0x08, (self.class_code << 8) | 1);
        let bar0_low = if self.regs.bar0_sizing_low {
            !(BAR0_SIZE - 1) as u32
        } else {
            self.regs.bar0_address as u32
        };
        put32(&mut h, PCI_BAR0, bar0_low | BAR_MEM_64BIT);
        let bar0_high = if self.regs.bar0_sizing_high {
            (!(BAR0_SIZE - 1) >> 32) as u32
        } else {
            (self.regs.bar0_address >> 32) as u32
        };
        put32(&mut h, PCI_BAR1, bar0_high);
        put16(&mut h, 0x2c, VIRTIO_PCI_VENDOR_ID);
        put16(&mut h, 0x2e, 0x0040);
        h[0x34] = CAP_MSIX as u8;
        h[PCI_INTERRUPT_LINE] = self.regs.interrupt_line;
        // Interrupt pin 0: no INTx.

        // MSI-X: table size is N-1; table and PBA in BAR 0.
        h[CAP_MSIX] = PCI_CAP_ID_MSIX;
        h[CAP_MSIX + 1] = CAP_COMMON as u8;
        let control = (self.msix.vector_count() - 1) | self.msix.control_bits();
        put16(&mut h, CAP_MSIX + 2, control);
        put32(&mut h, CAP_MSIX + 4, MSIX_TABLE_OFFSET as u32);
        put32(&mut h, CAP_MSIX + 8, MSIX_PBA_OFFSET as u32);

        let notify_len = NOTIFY_OFF_MULTIPLIER * self.queues.len() as u32;
        virtio_cap(
            &mut h,
            CAP_COMMON,
            CAP_NOTIFY,
            VIRTIO_PCI_CAP_COMMON_CFG,
            16,
            COMMON_CFG_OFFSET,
            COMMON_CFG_LEN as u32,
        );
        virtio_cap(
            &mut h,
            CAP_NOTIFY,
            CAP_ISR,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            20,
            NOTIFY_OFFSET,
            notify_len,
        );
        put32(&mut h, CAP_NOTIFY + 16, NOTIFY_OFF_MULTIPLIER);
        virtio_cap(
            &mut h,
            CAP_ISR,
            CAP_DEVICE,
            VIRTIO_PCI_CAP_ISR_CFG,
            16,
            ISR_OFFSET,
            1,
        );
        virtio_cap(
            &mut h,
            CAP_DEVICE,
            0,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            16,
            DEVICE_CFG_OFFSET,
            DEVICE_CFG_LEN as u32,
        );
        h
    }

    /// Apply a full dword write to config register `reg` (dword-aligned).
    fn config_write_dword(&mut self, reg: usize, value: u32) -> Option<BarMoved> {
        match reg {
            PCI_COMMAND => {
                // Status (upper half) is write-one-to-clear with nothing to clear.
                self.regs.command = (value as u16) & COMMAND_WRITABLE;
                None
            }
            PCI_BAR0 => {
                let old = self.regs.bar0_address;
                if value == u32::MAX {
                    self.regs.bar0_sizing_low = true;
                    return None;
                }
                self.regs.bar0_sizing_low = false;
                let low = u64::from(value) & !(BAR0_SIZE - 1) & 0xffff_ffff;
                self.regs.bar0_address = (old & !0xffff_ffff) | low;
                self.bar_moved(old)
            }
            PCI_BAR1 => {
                let old = self.regs.bar0_address;
                if value == u32::MAX {
                    self.regs.bar0_sizing_high = true;
                    return None;
                }
                self.regs.bar0_sizing_high = false;
                self.regs.bar0_address = (old & 0xffff_ffff) | (u64::from(value) << 32);
                self.bar_moved(old)
            }
            PCI_INTERRUPT_LINE => {
                self.regs.interrupt_line = value as u8;
                None
            }
            CAP_MSIX => {
                let control = (value >> 16) as u16;
                self.msix
                    .set_control_bits(control & (MSIX_ENABLE | MSIX_FUNCTION_MASK));
                None
            }
            _ => None,
        }
    }

    fn bar_moved(&self, old: u64) -> Option<BarMoved> {
        (old != self.regs.bar0_address).then_some(BarMoved {
            index: 0,
            old_address: old,
            new_address: self.regs.bar0_address,
        })
    }

    // ---- common configuration ----

    fn selected_queue(&self) -> Option<&QueueSetup> {
        self.queues.get(usize::from(self.regs.queue_select))
    }

    fn common_cfg_snapshot(&self) -> [u8; COMMON_CFG_LEN as usize] {
        let mut c = [0u8; COMMON_CFG_LEN as usize];
        put32(
            &mut c,
            CC_DEVICE_FEATURE_SELECT,
            self.regs.device_feature_select,
        );
        let device_feature = match self.regs.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        put32(&mut c, CC_DEVICE_FEATURE, device_feature);
        put32(
            &mut c,
            CC_DRIVER_FEATURE_SELECT,
            self.regs.driver_feature_select,
        );
        let driver_feature = match self.regs.driver_feature_select {
            0 => self.regs.driver_features as u32,
            1 => (self.regs.driver_features >> 32) as u32,
            _ => 0,
        };
        put32(&mut c, CC_DRIVER_FEATURE, driver_feature);
        let (config_vector, queue_vector) = {
            let state = self.msix.lock();
            let qv = state
                .queue_vectors
                .get(usize::from(self.regs.queue_select))
                .copied()
                .unwrap_or(NO_VECTOR);
            (state.config_vector, qv)
        };
        put16(&mut c, CC_MSIX_CONFIG, config_vector);
        put16(&mut c, CC_NUM_QUEUES, self.queues.len() as u16);
        c[CC_DEVICE_STATUS] = self.regs.status;
        c[CC_CONFIG_GENERATION] = 0;
        put16(&mut c, CC_QUEUE_SELECT, self.regs.queue_select);
        if let Some(q) = self.selected_queue() {
            // A queue that does not exist reads as size 0 ("not available").
            put16(&mut c, CC_QUEUE_SIZE, q.size);
            put16(&mut c, CC_QUEUE_MSIX_VECTOR, queue_vector);
            put16(&mut c, CC_QUEUE_ENABLE, u16::from(q.enabled));
            put16(&mut c, CC_QUEUE_NOTIFY_OFF, self.regs.queue_select);
            put64(&mut c, CC_QUEUE_DESC, q.desc);
            put64(&mut c, CC_QUEUE_DRIVER, q.driver);
            put64(&mut c, CC_QUEUE_DEVICE, q.device);
        } else {
            put16(&mut c, CC_QUEUE_MSIX_VECTOR, NO_VECTOR);
        }
        c
    }

    fn common_cfg_write(&mut self, offset: u64, data: &[u8]) {
        let mut snapshot = self.common_cfg_snapshot();
        let Some(range) = crate::msix::byte_range(snapshot.len(), offset, data.len()) else {
            return;
        };
        let touched = |field: usize, len: usize| range.start < field + len && field < range.end;
        snapshot[range.clone()].copy_from_slice(data);
        let c = &snapshot;

        if touched(CC_DEVICE_FEATURE_SELECT, 4) {
            self.regs.device_feature_select = get32(c, CC_DEVICE_FEATURE_SELECT);
        }
        if touched(CC_DRIVER_FEATURE_SELECT, 4) {
            self.regs.driver_feature_select = get32(c, CC_DRIVER_FEATURE_SELECT);
        }
        if touched(CC_DRIVER_FEATURE, 4)
            && self.regs.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 == 0
        {
            let value = u64::from(get32(c, CC_DRIVER_FEATURE));
            match self.regs.driver_feature_select {
                0 => self.regs.driver_features = (self.regs.driver_features & !0xffff_ffff) | value,
                1 => {
                    self.regs.driver_features =
                        (self.regs.driver_features & 0xffff_ffff) | (value << 32)
                }
                _ => {}
            }
        }
        if touched(CC_MSIX_CONFIG, 2) {
            let vector = self.checked_vector(get16(c, CC_MSIX_CONFIG));
            self.msix.lock().config_vector = vector;
        }
        if touched(CC_QUEUE_SELECT, 2) {
            self.regs.queue_select = get16(c, CC_QUEUE_SELECT);
        }
        let setup_allowed = self.regs.status & VIRTIO_CONFIG_S_DRIVER_OK as u8 == 0;
        let qi = usize::from(self.regs.queue_select);
        if touched(CC_QUEUE_MSIX_VECTOR, 2) && qi < self.queues.len() {
            let vector = self.checked_vector(get16(c, CC_QUEUE_MSIX_VECTOR));
            self.msix.lock().queue_vectors[qi] = vector;
        }
        if setup_allowed {
            if let Some(q) = self.queues.get_mut(qi) {
                if touched(CC_QUEUE_SIZE, 2) {
                    q.size = get16(c, CC_QUEUE_SIZE);
                }
                if touched(CC_QUEUE_ENABLE, 2) && get16(c, CC_QUEUE_ENABLE) == 1 {
                    q.enabled = true;
                }
                if touched(CC_QUEUE_DESC, 8) {
                    q.desc = get64(c, CC_QUEUE_DESC);
                }
                if touched(CC_QUEUE_DRIVER, 8) {
                    q.driver = get64(c, CC_QUEUE_DRIVER);
                }
                if touched(CC_QUEUE_DEVICE, 8) {
                    q.device = get64(c, CC_QUEUE_DEVICE);
                }
            }
        }
        if touched(CC_DEVICE_STATUS, 1) {
            self.write_status(c[CC_DEVICE_STATUS]);
        }
    }

    /// A vector register value as the device stores it: out-of-range vectors become NO_VECTOR,
    /// which tells the driver the assignment failed.
    fn checked_vector(&self, vector: u16) -> u16 {
        if vector < self.msix.vector_count() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let features_ok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        let driver_ok = VIRTIO_CONFIG_S_DRIVER_OK as u8;
        let mut new = value | (self.regs.status & VIRTIO_CONFIG_S_NEEDS_RESET as u8);
        if new & features_ok != 0
            && self.regs.status & features_ok == 0
            && !self.features_acceptable()
        {
            // The driver reads status back and gives up when FEATURES_OK did not stick.
            new &= !features_ok;
        }
        let start = new & driver_ok != 0
            && self.regs.status & driver_ok == 0
            && new & features_ok != 0
            && new & VIRTIO_CONFIG_S_FAILED as u8 == 0;
        self.regs.status = new;
        if start {
            if let Err(e) = self.activate() {
                tracing::warn!(
                    "virtio device {:#x}: activation failed: {e}",
                    self.device_id
                );
                self.regs.status |= VIRTIO_CONFIG_S_NEEDS_RESET as u8;
                InterruptHandle::for_config(self.msix.clone()).signal();
            }
        }
    }

    fn features_acceptable(&self) -> bool {
        self.regs.driver_features & !self.device_features == 0
            && self.regs.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn activate(&mut self) -> Result<(), Error> {
        let event_idx = self.regs.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::new();
        {
            let mem = self.mem.memory();
            for (i, setup) in self.queues.iter().enumerate() {
                if !setup.enabled {
                    continue;
                }
                let index = i as u16;
                let invalid = |reason: String| Error::InvalidQueue { index, reason };
                let mut queue = Queue::new(setup.max_size)
                    .map_err(|e| invalid(format!("max size {}: {e}", setup.max_size)))?;
                queue
                    .try_set_size(setup.size)
                    .map_err(|e| invalid(format!("size {}: {e}", setup.size)))?;
                queue
                    .try_set_desc_table_address(GuestAddress(setup.desc))
                    .map_err(|e| invalid(format!("descriptor table {:#x}: {e}", setup.desc)))?;
                queue
                    .try_set_avail_ring_address(GuestAddress(setup.driver))
                    .map_err(|e| invalid(format!("driver area {:#x}: {e}", setup.driver)))?;
                queue
                    .try_set_used_ring_address(GuestAddress(setup.device))
                    .map_err(|e| invalid(format!("device area {:#x}: {e}", setup.device)))?;
                queue.set_event_idx(event_idx);
                queue.set_next_avail(setup.next_avail);
                queue.set_next_used(setup.next_used);
                queue.set_ready(true);
                if !queue.is_valid(&*mem) {
                    return Err(invalid("rings are not inside guest memory".to_string()));
                }
                let kick = self.kicks[i].try_clone().map_err(Error::EventFd)?;
                queues.push(ActiveQueue {
                    index,
                    queue,
                    kick,
                    interrupt: InterruptHandle::for_queue(self.msix.clone(), index),
                });
            }
        }
        self.device.activate(Activation {
            mem: self.mem.clone(),
            acked_features: self.regs.driver_features,
            queues,
            config_interrupt: InterruptHandle::for_config(self.msix.clone()),
        })?;
        self.active = true;
        Ok(())
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}

impl PciFunction for VirtioPciDevice {
    fn vendor_device(&self) -> (u16, u16) {
        (VIRTIO_PCI_VENDOR_ID, self.device_id)
    }

    fn bars(&self) -> Vec<BarInfo> {
        vec![BarInfo {
            index: 0,
            size: BAR0_SIZE,
            prefetchable: false,
            is_64bit: true,
        }]
    }

    fn set_bar_address(&mut self, index: u8, address: u64) {
        if index == 0 {
            self.regs.bar0_address = address & !(BAR0_SIZE - 1);
        }
    }

    fn bar_address(&self, index: u8) -> Option<u64> {
        (index == 0).then_some(self.regs.bar0_address)
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let offset = usize::from(offset);
        if offset >= CONFIG_SPACE_SIZE {
            data.fill(0xff);
            return;
        }
        copy_out(&self.header(), offset as u64, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> Option<BarMoved> {
        let offset = usize::from(offset);
        // Accesses are 1, 2 or 4 bytes inside one dword; anything else is ignored.
        if data.is_empty() || data.len() > 4 || offset % 4 + data.len() > 4 {
            return None;
        }
        if offset >= HEADER_SIZE {
            return None;
        }
        let reg = offset & !3;
        let header = self.header();
        let mut dword = [0u8; 4];
        dword.copy_from_slice(&header[reg..reg + 4]);
        dword[offset % 4..offset % 4 + data.len()].copy_from_slice(data);
        self.config_write_dword(reg, u32::from_le_bytes(dword))
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if index != 0 || offset >= BAR0_SIZE {
            return;
        }
        let region = offset & !(REGION_SIZE - 1);
        let within = offset - region;
        match region {
            COMMON_CFG_OFFSET => copy_out(&self.common_cfg_snapshot(), within, data),
            ISR_OFFSET if within == 0 && !data.is_empty() => {
                // Reading the ISR acknowledges it.
                let mut state = self.msix.lock();
                data[0] = state.isr;
                state.isr = 0;
            }
            DEVICE_CFG_OFFSET => self.device.read_config(within, data),
            MSIX_TABLE_OFFSET => self.msix.table_read(within, data),
            MSIX_PBA_OFFSET => self.msix.pba_read(within, data),
            _ => {}
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        if index != 0 || offset >= BAR0_SIZE {
            return;
        }
        let region = offset & !(REGION_SIZE - 1);
        let within = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_cfg_write(within, data),
            DEVICE_CFG_OFFSET => self.device.write_config(within, data),
            NOTIFY_OFFSET => {
                let queue = within / u64::from(NOTIFY_OFF_MULTIPLIER);
                if let Some(kick) = usize::try_from(queue).ok().and_then(|q| self.kicks.get(q)) {
                    if let Err(e) = kick.write(1) {
                        tracing::warn!("queue {queue} kick: {e}");
                    }
                }
            }
            MSIX_TABLE_OFFSET => self.msix.table_write(within, data),
            _ => {}
        }
    }

    fn snapshot_pause(&mut self) -> Result<(), Error> {
        if self.active && !self.paused {
            self.device.pause()?;
        }
        self.paused = true;
        Ok(())
    }

    fn snapshot_resume(&mut self) {
        if self.active && self.paused {
            self.device.resume();
        }
        self.paused = false;
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        if self.active && !self.paused {
            return Err(Error::State(
                "the device is serving its queues: pause it first".to_string(),
            ));
        }
        let mut queues = self.queues.clone();
        if self.active {
            // Every chain the device took is back in the used ring (it is paused between two
            // requests, blk, net and rng return a chain in the call that takes it, and the balloon
            // gives its statistics buffer back when it pauses), so the
            // used ring's index is where both the device's avail and used positions are.
            use vm_memory::Bytes;
            let mem = self.mem.memory();
            for q in queues.iter_mut().filter(|q| q.enabled) {
                let at = q.device.checked_add(2).map(GuestAddress);
                let used = at
                    .and_then(|at| mem.read_obj::<u16>(at).ok())
                    .ok_or_else(|| {
                        Error::State(format!(
                            "the used ring at {:#x} is outside guest memory",
                            q.device
                        ))
                    })?;
                q.next_avail = used;
                q.next_used = used;
            }
        }
        let state = TransportState {
            device_id: self.device_id,
            device_features: self.device_features,
            registers: self.regs.clone(),
            queues,
            active: self.active,
            msix: self.msix.save(),
            device_state: self.device.save_state()?,
        };
        serde_json::to_vec(&state).map_err(|e| Error::State(e.to_string()))
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let state: TransportState =
            serde_json::from_slice(bytes).map_err(|e| Error::State(e.to_string()))?;
        let mismatch = |what: &str, saved: String, here: String| {
            Err(Error::State(format!(
                "virtio device {:#x}: the saved {what} is {saved}, this device has {here}",
                self.device_id
            )))
        };
        if state.device_id != self.device_id {
            return mismatch(
                "device",
                format!("{:#x}", state.device_id),
                format!("{:#x}", self.device_id),
            );
        }
        if state.device_features != self.device_features {
            return mismatch(
                "feature set",
                format!("{:#x}", state.device_features),
                format!("{:#x}", self.device_features),
            );
        }
        let max_sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        let saved_sizes: Vec<u16> = state.queues.iter().map(|q| q.max_size).collect();
        if saved_sizes != max_sizes {
            return mismatch(
                "queue layout",
                format!("{saved_sizes:?}"),
                format!("{max_sizes:?}"),
            );
        }
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.device.restore_state(&state.device_state)?;
        self.msix.restore(&state.msix)?;
        self.regs = state.registers;
        // As a guest write would leave them.
        self.regs.command &= COMMAND_WRITABLE;
        self.regs.bar0_address &= !(BAR0_SIZE - 1);
        self.queues = state.queues;
        self.restored_active = state.active;
        self.paused = false;
        Ok(())
    }

    fn start_restored(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.restored_active) {
            self.activate()?;
        }
        Ok(())
    }

    fn notify_eventfds(&self) -> Vec<NotifyEventFd> {
        self.kicks
            .iter()
            .enumerate()
            .filter_map(|(i, kick)| {
                let eventfd = kick
                    .try_clone()
                    .map_err(|e| tracing::warn!("cannot clone kick eventfd: {e}"))
                    .ok()?;
                Some(NotifyEventFd {
                    bar_index: 0,
                    offset: NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
                    eventfd,
                })
            })
            .collect()
    }
}

fn virtio_cap(
    h: &mut [u8],
    at: usize,
    next: usize,
    cfg_type: u8,
    len: u8,
    offset: u64,
    length: u32,
) {
    h[at] = PCI_CAP_ID_VNDR;
    h[at + 1] = next as u8;
    h[at + 2] = len;
    h[at + 3] = cfg_type;
    h[at + 4] = 0; // BAR 0
    put32(h, at + 8, offset as u32);
    put32(h, at + 12, length);
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from(get32(b, at)) | (u64::from(get32(b, at + 4)) << 32)
}
