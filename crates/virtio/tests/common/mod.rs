//! A test-side virtio-pci driver that talks to a `VirtioPciDevice` the way Linux's
//! `virtio_pci_modern` driver does: it finds the capabilities in config space, sizes and places
//! BAR 0, enables MSI-X, resets the device, negotiates features, sets the queues up through the
//! common configuration, sets DRIVER_OK, then posts split-ring descriptor chains in guest memory
//! and kicks the notify region.

#![allow(dead_code)] // Each test binary uses a different part of the driver.

pub mod blk;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use oxvirt_virtio::GuestRam;
use oxvirt_virtio::{msi_fn, GuestMemoryHandle, MsiMessage, PciFunction, VirtioPciDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};

pub const MEM_SIZE: usize = 4 << 20;
pub const BAR0_ADDRESS: u64 = 0xfe00_0000;
pub const MSI_ADDRESS: u64 = 0xfee0_0000;
/// Rings of queue `q` live at `RING_BASE + q * RING_STRIDE`.
pub const RING_BASE: u64 = 0x1_0000;
pub const RING_STRIDE: u64 = 0x1_0000;
/// Free for test buffers.
pub const DATA_BASE: u64 = 0x10_0000;
pub const WAIT: Duration = Duration::from_secs(10);

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;

pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;

/// Records every MSI the device sends.
#[derive(Default)]
pub struct MsiLog {
    messages: Mutex<Vec<MsiMessage>>,
    changed: Condvar,
}

impl MsiLog {
    pub fn count_for(&self, data: u32) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.data == data)
            .count()
    }

    /// Wait until `cond` holds, re-checking whenever an MSI arrives (and at least every 50 ms,
    /// for conditions that do not come with an interrupt).
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut guard = self.messages.lock().unwrap();
        loop {
            drop(guard);
            if cond() {
                return;
            }
            guard = self.messages.lock().unwrap();
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            let timeout = (deadline - now).min(Duration::from_millis(50));
            guard = self.changed.wait_timeout(guard, timeout).unwrap().0;
        }
    }
}

/// Where the capabilities said the regions are (offsets in BAR 0).
#[derive(Debug, Default, Clone, Copy)]
pub struct Layout {
    pub common: u64,
    pub notify: u64,
    pub notify_multiplier: u32,
    pub isr: u64,
    pub device: u64,
    pub msix_cap: u16,
    pub msix_table: u64,
    pub msix_pba: u64,
    pub msix_vectors: u16,
}

/// Driver-side state of one split virtqueue.
pub struct DriverQueue {
    pub index: u16,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub avail_idx: u16,
    pub last_used: u16,
    next_desc: u16,
    pub vector: u16,
}

/// One descriptor the test wants in a chain.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

impl Buf {
    pub fn out(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            device_writes: false,
        }
    }
    pub fn input(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            device_writes: true,
        }
    }
}

pub struct Driver {
    pub dev: VirtioPciDevice,
    pub mem: GuestRam,
    pub msi: Arc<MsiLog>,
    pub layout: Layout,
    pub queues: Vec<DriverQueue>,
    pub device_features: u64,
}

pub fn guest_memory() -> (GuestRam, GuestMemoryHandle) {
    let mem = GuestRam::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let handle = GuestMemoryAtomic::new(mem.clone());
    (mem, handle)
}

pub fn msi_log() -> (Arc<MsiLog>, Arc<dyn oxvirt_virtio::MsiInterrupt>) {
    let log = Arc::new(MsiLog::default());
    let sink_log = log.clone();
    let sink = msi_fn(move |msg| {
        sink_log.messages.lock().unwrap().push(msg);
        sink_log.changed.notify_all();
        Ok(())
    });
    (log, sink)
}

impl Driver {
    /// Wrap `device` in the transport and probe it like Linux, up to (not including) feature
    /// negotiation.
    pub fn probe(device: Box<dyn oxvirt_virtio::VirtioDevice>) -> Driver {
        let (mem, handle) = guest_memory();
        let (msi, sink) = msi_log();
        let dev = VirtioPciDevice::new(device, handle, sink).unwrap();
        let mut driver = Driver {
            dev,
            mem,
            msi,
            layout: Layout::default(),
            queues: Vec::new(),
            device_features: 0,
        };
        driver.pci_setup();
        driver
    }

    // ---- PCI config space ----

    pub fn cfg_read8(&mut self, off: u16) -> u8 {
        let mut b = [0u8; 1];
        self.dev.config_read(off, &mut b);
        b[0]
    }
    pub fn cfg_read16(&mut self, off: u16) -> u16 {
        let mut b = [0u8; 2];
        self.dev.config_read(off, &mut b);
        u16::from_le_bytes(b)
    }
    pub fn cfg_read32(&mut self, off: u16) -> u32 {
        let mut b = [0u8; 4];
        self.dev.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }
    pub fn cfg_write16(&mut self, off: u16, v: u16) {
        self.dev.config_write(off, &v.to_le_bytes());
    }
    pub fn cfg_write32(&mut self, off: u16, v: u32) -> Option<oxvirt_virtio::BarMoved> {
        self.dev.config_write(off, &v.to_le_bytes())
    }

    fn pci_setup(&mut self) {
        assert_eq!(self.cfg_read16(0), 0x1af4, "vendor id");
        assert_eq!(self.cfg_read16(6) & 0x10, 0x10, "capability list bit");

        // BAR sizing as the PCI core does it, then placement (firmware role).
        let orig_low = self.cfg_read32(0x10);
        assert_eq!(orig_low & 0x7, 0x4, "BAR 0 is a 64-bit memory BAR");
        assert!(self.cfg_write32(0x10, 0xffff_ffff).is_none());
        assert!(self.cfg_write32(0x14, 0xffff_ffff).is_none());
        let size_low = self.cfg_read32(0x10) & !0xf;
        let size_high = self.cfg_read32(0x14);
        let size = !((u64::from(size_high) << 32) | u64::from(size_low)) + 1;
        assert_eq!(size, self.dev.bars()[0].size, "BAR size from sizing");
        assert!(self.cfg_write32(0x10, orig_low).is_none());
        assert!(self.cfg_write32(0x14, 0).is_none());
        let moved = self.cfg_write32(0x10, BAR0_ADDRESS as u32 | 0x4).unwrap();
        assert_eq!(moved.new_address, BAR0_ADDRESS);
        assert_eq!(self.dev.bar_address(0), Some(BAR0_ADDRESS));
        self.cfg_write16(4, 0x6); // memory space + bus master

        // Walk the capability list.
        let mut layout = Layout::default();
        let mut cap = u16::from(self.cfg_read8(0x34));
        let mut seen = 0;
        while cap != 0 {
            seen += 1;
            assert!(seen < 48, "capability list loops");
            let id = self.cfg_read8(cap);
            let next = u16::from(self.cfg_read8(cap + 1));
            match id {
                0x09 => {
                    let cfg_type = self.cfg_read8(cap + 3);
                    assert_eq!(self.cfg_read8(cap + 4), 0, "regions are in BAR 0");
                    let offset = u64::from(self.cfg_read32(cap + 8));
                    let length = self.cfg_read32(cap + 12);
                    match cfg_type {
                        1 => {
                            assert!(length >= 0x38, "common cfg too short: {length}");
                            layout.common = offset;
                        }
                        2 => {
                            layout.notify = offset;
                            layout.notify_multiplier = self.cfg_read32(cap + 16);
                        }
                        3 => layout.isr = offset,
                        4 => layout.device = offset,
                        other => panic!("unexpected virtio cap type {other}"),
                    }
                }
                0x11 => {
                    layout.msix_cap = cap;
                    layout.msix_vectors = (self.cfg_read16(cap + 2) & 0x7ff) + 1;
                    let table = self.cfg_read32(cap + 4);
                    let pba = self.cfg_read32(cap + 8);
                    assert_eq!(table & 7, 0, "table in BAR 0");
                    assert_eq!(pba & 7, 0, "PBA in BAR 0");
                    layout.msix_table = u64::from(table & !7);
                    layout.msix_pba = u64::from(pba & !7);
                }
                other => panic!("unexpected capability {other:#x}"),
            }
            cap = next;
        }
        assert!(layout.notify_multiplier > 0 && layout.msix_vectors > 0);
        self.layout = layout;

        // MSI-X: program vector v to send data 0x40 + v, unmask, enable.
        for v in 0..layout.msix_vectors {
            let entry = layout.msix_table + u64::from(v) * 16;
            self.bar_write32(entry, MSI_ADDRESS as u32);
            self.bar_write32(entry + 4, 0);
            self.bar_write32(entry + 8, 0x40 + u32::from(v));
            self.bar_write32(entry + 12, 0);
        }
        let control = self.cfg_read16(layout.msix_cap + 2);
        self.cfg_write16(layout.msix_cap + 2, control | 0x8000);
        assert_eq!(self.cfg_read16(layout.msix_cap + 2) & 0x8000, 0x8000);
    }

    // ---- BAR 0 ----

    pub fn bar_read(&mut self, off: u64, data: &mut [u8]) {
        self.dev.bar_read(0, off, data);
    }
    pub fn bar_read8(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.dev.bar_read(0, off, &mut b);
        b[0]
    }
    pub fn bar_read16(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.bar_read(0, off, &mut b);
        u16::from_le_bytes(b)
    }
    pub fn bar_read32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar_read(0, off, &mut b);
        u32::from_le_bytes(b)
    }
    pub fn bar_write8(&mut self, off: u64, v: u8) {
        self.dev.bar_write(0, off, &[v]);
    }
    pub fn bar_write16(&mut self, off: u64, v: u16) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    pub fn bar_write32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    /// 64-bit registers are written as two 32-bit halves, like `vp_iowrite64_twopart`.
    pub fn bar_write64(&mut self, off: u64, v: u64) {
        self.bar_write32(off, v as u32);
        self.bar_write32(off + 4, (v >> 32) as u32);
    }

    pub fn status(&mut self) -> u8 {
        self.bar_read8(self.layout.common + 0x14)
    }
    pub fn set_status(&mut self, status: u8) {
        self.bar_write8(self.layout.common + 0x14, status);
    }

    pub fn device_config(&mut self, off: u64, data: &mut [u8]) {
        let at = self.layout.device + off;
        self.dev.bar_read(0, at, data);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, read features; returns the device's features.
    pub fn begin(&mut self) -> u64 {
        self.set_status(0);
        assert_eq!(self.status(), 0, "reset completes synchronously");
        self.set_status(STATUS_ACKNOWLEDGE);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let c = self.layout.common;
        self.bar_write32(c, 0);
        let low = self.bar_read32(c + 4);
        self.bar_write32(c, 1);
        let high = self.bar_read32(c + 4);
        self.device_features = (u64::from(high) << 32) | u64::from(low);
        self.device_features
    }

    /// Write driver features and set FEATURES_OK; returns whether the device accepted them.
    pub fn negotiate(&mut self, features: u64) -> bool {
        let c = self.layout.common;
        self.bar_write32(c + 0x08, 0);
        self.bar_write32(c + 0x0c, features as u32);
        self.bar_write32(c + 0x08, 1);
        self.bar_write32(c + 0x0c, (features >> 32) as u32);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        self.status() & STATUS_FEATURES_OK != 0
    }

    /// Set up `count` queues with size `size` (or the device maximum when smaller), vector
    /// 0 for config and `1 + q` for queue q; then DRIVER_OK.
    pub fn setup_queues_and_start(&mut self, count: u16, size: u16) {
        let c = self.layout.common;
        self.bar_write16(c + 0x10, 0);
        assert_eq!(self.bar_read16(c + 0x10), 0, "config vector accepted");
        assert!(self.bar_read16(c + 0x12) >= count, "num_queues");
        for q in 0..count {
            self.bar_write16(c + 0x16, q);
            let max = self.bar_read16(c + 0x18);
            assert!(max > 0, "queue {q} exists");
            let size = size.min(max);
            self.bar_write16(c + 0x18, size);
            let base = RING_BASE + u64::from(q) * RING_STRIDE;
            let (desc, avail, used) = (base, base + 0x4000, base + 0x8000);
            self.bar_write64(c + 0x20, desc);
            self.bar_write64(c + 0x28, avail);
            self.bar_write64(c + 0x30, used);
            let vector = q + 1;
            self.bar_write16(c + 0x1a, vector);
            assert_eq!(self.bar_read16(c + 0x1a), vector, "queue vector accepted");
            let notify_off = self.bar_read16(c + 0x1e);
            assert_eq!(notify_off, q);
            // Zero the rings like a fresh allocation.
            self.mem
                .write_slice(&vec![0u8; RING_STRIDE as usize], GuestAddress(base))
                .unwrap();
            self.bar_write16(c + 0x1c, 1);
            assert_eq!(self.bar_read16(c + 0x1c), 1);
            self.queues.push(DriverQueue {
                index: q,
                size,
                desc,
                avail,
                used,
                avail_idx: 0,
                last_used: 0,
                next_desc: 0,
                vector,
            });
        }
        let status = self.status();
        self.set_status(status | STATUS_DRIVER_OK);
        assert_eq!(
            self.status() & STATUS_NEEDS_RESET,
            0,
            "device accepted the queues"
        );
    }

    /// The whole Linux-style bring-up with `features` (VERSION_1 is added).
    pub fn start(
        device: Box<dyn oxvirt_virtio::VirtioDevice>,
        features: u64,
        queues: u16,
    ) -> Driver {
        let mut d = Driver::probe(device);
        let offered = d.begin();
        assert_ne!(offered & (1 << 32), 0, "device offers VIRTIO_F_VERSION_1");
        let wanted = (features | (1 << 32)) & offered;
        assert!(d.negotiate(wanted), "features {wanted:#x} accepted");
        d.setup_queues_and_start(queues, 256);
        d
    }

    // ---- virtqueues ----

    /// Write a chain of descriptors (consecutive table slots) and return its head index.
    pub fn write_chain(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let queue = &mut self.queues[q];
        let head = queue.next_desc;
        for (i, buf) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % queue.size;
            let next = (idx + 1) % queue.size;
            let mut flags = if buf.device_writes {
                VIRTQ_DESC_F_WRITE
            } else {
                0
            };
            if i + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            write_desc(&self.mem, queue.desc, idx, buf.addr, buf.len, flags, next);
        }
        queue.next_desc = (head + bufs.len() as u16) % queue.size;
        head
    }

    /// Put `head` on the available ring (does not kick).
    pub fn make_available(&mut self, q: usize, head: u16) {
        let queue = &mut self.queues[q];
        let slot = queue.avail + 4 + 2 * u64::from(queue.avail_idx % queue.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        queue.avail_idx = queue.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(queue.avail_idx, GuestAddress(queue.avail + 2))
            .unwrap();
    }

    /// Kick queue `q` through the notify region.
    pub fn kick(&mut self, q: usize) {
        let off = self.layout.notify
            + u64::from(self.queues[q].index) * u64::from(self.layout.notify_multiplier);
        let index = self.queues[q].index;
        self.bar_write16(off, index);
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.queues[q].used + 2))
            .unwrap()
    }

    /// Used ring entries not seen yet, as (id, len).
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let idx = self.used_idx(q);
        let queue = &mut self.queues[q];
        let mut out = Vec::new();
        while queue.last_used != idx {
            let slot = queue.used + 4 + 8 * u64::from(queue.last_used % queue.size);
            let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
            out.push((id, len));
            queue.last_used = queue.last_used.wrapping_add(1);
        }
        out
    }

    /// Post a chain, kick, and wait for its used entry (and the queue's MSI); returns the used
    /// length.
    pub fn submit(&mut self, q: usize, bufs: &[Buf]) -> u32 {
        let head = self.write_chain(q, bufs);
        self.submit_head(q, head)
    }

    pub fn submit_head(&mut self, q: usize, head: u16) -> u32 {
        let vector_data = 0x40 + u32::from(self.queues[q].vector);
        let irqs_before = self.msi.count_for(vector_data);
        self.make_available(q, head);
        self.kick(q);
        let msi = self.msi.clone();
        msi.wait_until("the queue interrupt", || {
            msi.count_for(vector_data) > irqs_before
        });
        let mut found = None;
        let msi = self.msi.clone();
        msi.wait_until("the used entry", || {
            for (id, len) in self.take_used(q) {
                if id == u32::from(head) {
                    found = Some(len);
                }
            }
            found.is_some()
        });
        found.unwrap()
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

pub fn write_desc(
    mem: &GuestRam,
    table: u64,
    idx: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let at = table + 16 * u64::from(idx);
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&d, GuestAddress(at)).unwrap();
}
