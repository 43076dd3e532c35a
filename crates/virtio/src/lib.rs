//! Virtio 1.x devices and the modern virtio-pci transport for `oxvirt-vmm`.
//!
//! This crate never touches KVM. It sees guest memory ([`GuestMemoryHandle`]), eventfds, and an
//! interrupt sink ([`MsiInterrupt`]) that the VMM implements (normally with `VmFd::signal_msi`).
//!
//! # How the VMM plugs a device in
//!
//! ```text
//! let dev = oxvirt_virtio::block_device_from_image(BlockConfig { path, readonly, direct, serial }, Format::Qcow2)?;
//! let mut pci = VirtioPciDevice::new(dev, guest_memory.clone(), msi_sink)?;   // impl PciFunction
//! for bar in pci.bars() { pci.set_bar_address(bar.index, allocate(bar.size)); }
//! for n in pci.notify_eventfds() { vm.register_ioevent(&n.eventfd, &Mmio(bar_addr + n.offset), NoDatamatch) }
//! // then route config-space accesses to config_read/config_write and MMIO in the BAR to
//! // bar_read/bar_write; on `Some(BarMoved)` from config_write, move the MMIO range and re-register
//! // the notify ioeventfds at the new address.
//! ```
//!
//! # Transport layout (one function, one BAR)
//!
//! * PCI vendor `0x1af4`, device `0x1040 + virtio type`, revision 1 (modern only: the device offers
//!   `VIRTIO_F_VERSION_1` and refuses FEATURES_OK without it). Subsystem vendor `0x1af4`,
//!   subsystem id `0x0040`.
//! * Config space is 4 KiB (PCIe-sized, so MMCONFIG works); bytes past 0x100 read as zero, i.e.
//!   no extended capabilities. The capability list has the virtio common/notify/ISR/device
//!   configuration capabilities and an MSI-X capability.
//! * BAR 0 is a 64-bit, non-prefetchable memory BAR of [`pci::BAR0_SIZE`] bytes holding, at fixed
//!   offsets, the common configuration, ISR, device configuration, notify region (one 4-byte slot
//!   per queue, `notify_off_multiplier` 4), the MSI-X table and the MSI-X PBA. See [`pci`] for the
//!   offsets.
//! * Interrupts are MSI-X only: one vector per queue plus one for configuration changes. The
//!   interrupt pin is 0; INTx is not implemented (Linux's virtio-pci uses MSI-X whenever the
//!   capability is present). The ISR register is still maintained for completeness.
//! * The `VIRTIO_PCI_CAP_PCI_CFG` window capability is not provided (Linux does not use it).
//!
//! # Devices and the features they offer
//!
//! | device | queues | features besides `VERSION_1` and `RING_INDIRECT_DESC` |
//! |--------|--------|--------------------------------------------------------|
//! | virtio-blk ([`block_device_from_image`]: raw or qcow2, opened by `oxvirt-images`; [`block_device_with_stats`] with its I/O counters) | 1 × 256 | `SEG_MAX`, `BLK_SIZE` (512), `FLUSH`, `RO` if read-only |
//! | virtio-net ([`net_device`]) | RX, TX × 256 | `MAC` (no offloads, no mergeable RX buffers, no control queue) |
//! | virtio-rng ([`rng_device`]) | 1 × 256 | none |
//! | virtio-balloon ([`balloon_device`]) | inflate, deflate, stats × 256 | `STATS_VQ`, `DEFLATE_ON_OOM` if asked |
//!
//! `RING_EVENT_IDX` is not offered: the driver notifies on every kick (cheap with ioeventfd) and
//! the device interrupts unless the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
//!
//! Every value the guest controls (register offsets and widths, queue addresses and sizes,
//! descriptor addresses/lengths/flags/next indexes, request headers, sector numbers) is checked:
//! bad input gives an error status, a dropped buffer, or NEEDS_RESET, never a panic or an access
//! outside guest memory. `tests/fuzz.rs` feeds random chains and register traffic to check that.
//!
//! # Threading
//!
//! Each activated device runs one worker thread, started and stopped by its
//! [`worker::DeviceWorker`]. Queue notifications are eventfds ("kicks"), one per queue, created
//! with the transport and stable for its lifetime: the VMM should register them as KVM
//! ioeventfds at the notify addresses so a guest kick never leaves the kernel; if it does not, a
//! guest write to the notify region reaching
//! [`PciFunction::bar_write`] signals the same eventfd, so both paths behave the same. The worker
//! waits (epoll) on the kicks, on a stop eventfd, and on device fds (the TAP for virtio-net, so
//! received frames flow without any guest exit). Completion interrupts are sent from the worker
//! thread through [`MsiInterrupt::signal`]. vCPU threads only take the transport's lock for
//! register accesses; a reset or a new activation stops and joins the worker first.

// The only unsafe code is system calls (TAP ioctls, getrandom); each block is small and says
// why it is sound.

pub mod balloon;
pub mod block;
pub mod msix;
pub mod net;
pub mod pci;
pub mod rng;
pub mod worker;

use std::io;
use std::sync::Arc;

use oxvirt_images::{CacheMode, Disk, DiskOptions, Format};
use virtio_queue::Queue;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub use balloon::{BalloonConfig, BalloonHandle, GuestStats};
pub use block::{BlockConfig, BlockStats, BlockStatsHandle, ImageLocks, RequestStats};
pub use msix::InterruptHandle;
pub use net::NetConfig;
pub use pci::VirtioPciDevice;

/// Guest memory as the devices see it. The VMM wraps its `GuestRam` once with
/// `GuestMemoryAtomic::new` and hands clones to every device.
pub type GuestMemoryHandle = GuestMemoryAtomic<GuestRam>;

/// Guest RAM: mappings with a dirty bitmap that every write through `vm-memory` (the devices' writes
/// into descriptor buffers, the used rings) marks, so a live migration sends again what the devices
/// wrote as well as what KVM's dirty log says the vCPUs wrote.
pub type GuestRam = GuestMemoryMmap<AtomicBitmap>;

/// A piece of [`GuestRam`] as descriptor readers and writers see it (with its bitmap's part).
pub(crate) type RamSlice<'a> = vm_memory::bitmap::BS<'a, AtomicBitmap>;

/// PCI vendor id of all virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern virtio-pci device ids are this plus the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;

/// One MSI message: what the guest programmed into an MSI-X table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Where the transport sends interrupts. The VMM implements it with `VmFd::signal_msi`
/// (`kvm_msi { address_lo, address_hi, data }`). Called from device worker threads and from
/// vCPU threads (when the guest unmasks a vector with a pending interrupt, inside
/// `config_write`/`bar_write`).
///
/// It must not block on anything the VMM holds while calling into a [`PciFunction`] (such as
/// the lock around the function): a device reset joins the worker thread from inside
/// `bar_write`, and that worker may be in the middle of `signal`.
pub trait MsiInterrupt: Send + Sync {
    fn signal(&self, msg: MsiMessage) -> io::Result<()>;
}

/// One memory BAR a function wants placed in guest physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR register index (0..=5). A 64-bit BAR also uses register `index + 1`.
    pub index: u8,
    /// Size in bytes, a power of two; the address must be aligned to it.
    pub size: u64,
    pub prefetchable: bool,
    pub is_64bit: bool,
}

/// The guest reprogrammed a BAR (through config space): the VMM must move the MMIO range
/// (and the notify ioeventfds, see [`PciFunction::notify_eventfds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMoved {
    pub index: u8,
    pub old_address: u64,
    pub new_address: u64,
}

/// A queue-notify eventfd and where the guest writes to kick it: `bar address + offset`, any
/// access width, no data match.
#[derive(Debug)]
pub struct NotifyEventFd {
    pub bar_index: u8,
    pub offset: u64,
    pub eventfd: EventFd,
}

/// A PCI function (type 0 header) as the VMM's PCI host bridge sees it.
///
/// Offsets and data come straight from the guest: implementations must accept any offset and
/// length (out-of-range reads return all ones or zero, writes are ignored) and never panic.
pub trait PciFunction: Send {
    /// (vendor id, device id).
    fn vendor_device(&self) -> (u16, u16);
    /// The memory BARs to place.
    fn bars(&self) -> Vec<BarInfo>;
    /// Set a BAR's address (the VMM acts as firmware at creation).
    fn set_bar_address(&mut self, index: u8, address: u64);
    /// The BAR's current address (as last set by the VMM or the guest).
    fn bar_address(&self, index: u8) -> Option<u64>;
    /// Read config space (4 KiB; anything past the header's capabilities reads as zero).
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// Write config space, including the BAR sizing protocol. Returns `Some` when the guest
    /// moved a BAR.
    fn config_write(&mut self, offset: u16, data: &[u8]) -> Option<BarMoved>;
    /// MMIO read inside a BAR (`offset` relative to the BAR's base).
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]);
    /// MMIO write inside a BAR.
    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]);
    /// Eventfds the VMM may register as KVM ioeventfds (default: none).
    fn notify_eventfds(&self) -> Vec<NotifyEventFd> {
        Vec::new()
    }
    /// Saved machine state, step 1 (the vCPUs are paused): finish the requests in flight and
    /// take no new ones until [`Self::snapshot_resume`]. Default: nothing runs on its own.
    fn snapshot_pause(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Serve the queues again after [`Self::snapshot_pause`].
    fn snapshot_resume(&mut self) {}
    /// The function's state as bytes, for [`Self::restore_state`] in another process (paused).
    /// Default: a function with no state of its own (its config space is constant).
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    /// Takes back the state [`Self::save_state`] returned, on a function built from the same
    /// configuration. A running device is not started yet: see [`Self::start_restored`].
    fn restore_state(&mut self, state: &[u8]) -> Result<(), Error> {
        no_state(state, "function")
    }
    /// Starts serving the queues of a restored device that the driver had started. Called on
    /// the thread whose seccomp filter the device workers should inherit (a vCPU thread).
    fn start_restored(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryHandle,
    /// Features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub acked_features: u64,
    /// The queues the driver enabled, in queue-index order. Queues the driver left disabled are
    /// absent (check [`ActiveQueue::index`]).
    pub queues: Vec<ActiveQueue>,
    /// For configuration-change interrupts.
    pub config_interrupt: InterruptHandle,
}

/// One enabled virtqueue, ready to use.
pub struct ActiveQueue {
    pub index: u16,
    pub queue: Queue,
    /// Signalled on every guest kick of this queue.
    pub kick: EventFd,
    /// Sends this queue's used-buffer interrupt.
    pub interrupt: InterruptHandle,
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// Feature bits the device offers. Must include `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Read the device-specific configuration. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write the device-specific configuration (ignored by devices with read-only config).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Start serving the queues (normally with a [`worker::DeviceWorker`]).
    fn activate(&mut self, activation: Activation) -> Result<(), Error>;
    /// Stop serving (join any worker) and return to the pre-activation state.
    fn reset(&mut self);
    /// Finish the requests in flight and wait (see [`worker::DeviceWorker::pause`]); every chain
    /// the device took from its queues is back in their used rings when this returns.
    fn pause(&mut self) -> Result<(), Error>;
    /// Go on after [`Self::pause`].
    fn resume(&mut self);
    /// The device's own state for a saved machine state (the queues are the transport's).
    /// Default: none (its configuration is fixed at creation).
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    /// Takes back what [`Self::save_state`] returned, on a device built from the same
    /// configuration and not activated.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), Error> {
        no_state(state, "device")
    }
}

/// The default `restore_state` of something (`what`) without state of its own: only nothing fits.
fn no_state(state: &[u8], what: &str) -> Result<(), Error> {
    if state.is_empty() {
        Ok(())
    } else {
        Err(Error::State(format!(
            "{} bytes of state for a {what} that has none",
            state.len()
        )))
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or locking a disk image failed (the message names the file).
    #[error(transparent)]
    Image(oxvirt_images::ImageError),
    #[error("TAP device {name}: {context}: {source}")]
    Tap {
        name: String,
        context: &'static str,
        source: io::Error,
    },
    #[error("invalid TAP interface name {0:?} (1 to 15 bytes, no '/', NUL or whitespace)")]
    TapName(String),
    #[error("eventfd: {0}")]
    EventFd(io::Error),
    #[error("cannot start the device worker thread: {0}")]
    Worker(io::Error),
    #[error("queue {index}: {reason}")]
    InvalidQueue { index: u16, reason: String },
    /// Saved state that does not fit this device.
    #[error("saved device state: {0}")]
    State(String),
    #[error("device {device_type} declares {count} queues; the transport supports 1 to {max}")]
    QueueCount {
        device_type: u32,
        count: usize,
        max: usize,
    },
}

/// Returns a virtio-blk device over a raw file (same as [`block_device_from_image`] with
/// [`Format::Raw`]).
pub fn block_device(config: BlockConfig) -> Result<Box<dyn VirtioDevice>, Error> {
    block_device_from_image(config, Format::Raw)
}

/// Returns a virtio-blk device over a disk image in `format` (raw or qcow2, never probed),
/// opened by `oxvirt-images` ([`oxvirt_images::Disk::open`], which documents the rules). The
/// image and its backing files are locked like QEMU locks them for as long as the device
/// exists. `direct` is refused for qcow2; `readonly` opens the image read-only, offers
/// `VIRTIO_BLK_F_RO` and fails writes.
pub fn block_device_from_image(
    config: BlockConfig,
    format: Format,
) -> Result<Box<dyn VirtioDevice>, Error> {
    block_device_with_stats(config, format).map(|(device, _)| device)
}

/// [`block_device_from_image`], and the handle its I/O counters are read through
/// ([`BlockStats`]: `virsh domblkstat`'s figures).
pub fn block_device_with_stats(
    config: BlockConfig,
    format: Format,
) -> Result<(Box<dyn VirtioDevice>, BlockStatsHandle), Error> {
    let options = DiskOptions {
        format,
        readonly: config.readonly,
        cache: if config.direct {
            CacheMode::Direct
        } else {
            CacheMode::Writeback
        },
    };
    let disk = Disk::open(&config.path, options).map_err(Error::Image)?;
    let device = block::BlockDevice::new(disk, config.readonly, config.serial.as_deref());
    let stats = device.stats();
    Ok((Box::new(device), stats))
}

/// Returns a virtio-net device over a TAP interface (created if absent).
pub fn net_device(config: NetConfig) -> Result<Box<dyn VirtioDevice>, Error> {
    Ok(Box::new(net::NetDevice::new(config)?))
}

/// Returns a virtio-rng device fed by the host's `getrandom`.
pub fn rng_device() -> Box<dyn VirtioDevice> {
    Box::new(rng::RngDevice::new())
}

/// Returns a virtio-balloon device and the handle the VMM drives it with.
pub fn balloon_device(
    config: BalloonConfig,
) -> Result<(Box<dyn VirtioDevice>, BalloonHandle), Error> {
    let (device, handle) = balloon::BalloonDevice::new(config)?;
    Ok((Box::new(device), handle))
}

/// Convenience for tests and the VMM: an `Arc<dyn MsiInterrupt>` from a closure.
pub fn msi_fn<F>(f: F) -> Arc<dyn MsiInterrupt>
where
    F: Fn(MsiMessage) -> io::Result<()> + Send + Sync + 'static,
{
    struct FnSink<F>(F);
    impl<F: Fn(MsiMessage) -> io::Result<()> + Send + Sync> MsiInterrupt for FnSink<F> {
        fn signal(&self, msg: MsiMessage) -> io::Result<()> {
            (self.0)(msg)
        }
    }
    Arc::new(FnSink(f))
}
