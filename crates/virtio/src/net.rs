//! virtio-net over a TAP interface.
//!
//! The TAP is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a 12-byte vnet header
//! (`virtio_net_hdr_v1`, the virtio 1.x header), so frames pass between the TAP and the guest
//! unchanged apart from `num_buffers`. No offloads are offered to the guest and none are enabled
//! on the TAP (`TUNSETOFFLOAD 0`: the host kernel completes checksums and segments before handing
//! us a frame). One worker thread serves the TX queue on kicks and moves frames from the TAP to
//! the RX queue as they arrive (edge-triggered epoll on the TAP; a frame that finds no RX buffer
//! waits in the device until the driver adds buffers).
//!
//! The interface is not brought up or attached to a bridge here: that is host network setup,
//! done by whoever owns it (the daemon).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;

use crate::msix::copy_out;
use crate::worker::{process_queue, DeviceWorker, WatchedFd, WorkerHandler};
use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle, VirtioDevice};

/// Size of `virtio_net_hdr_v1` (with `num_buffers`), used on the TAP and in the queues.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame (vnet header + Ethernet frame) moved in either direction; bigger ones are
/// dropped. Without offloads the guest cannot produce more than a 64 KiB MTU frame.
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + 14 + 65535;
const QUEUE_SIZES: [u16; 2] = [256, 256];
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const TAP_TOKEN: u64 = 1;

// <linux/if_tun.h>
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// How to create a virtio-net device.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// TAP interface to attach to; created (non-persistent) if it does not exist.
    pub tap_name: String,
    /// The guest's MAC address (`VIRTIO_NET_F_MAC`).
    pub mac: [u8; 6],
}

/// `struct ifreq` as TUNSETIFF uses it (name, flags, padding to 40 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP queue.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Open (creating if needed) the TAP interface `name`, non-blocking, with a 12-byte vnet
    /// header and no offloads.
    pub fn open(name: &str) -> Result<Tap, Error> {
        let bytes = name.as_bytes();
        if bytes.is_empty()
            || bytes.len() >= libc::IFNAMSIZ
            || bytes
                .iter()
                .any(|b| *b == b'/' || *b == 0 || b.is_ascii_whitespace())
        {
            return Err(Error::TapName(name.to_string()));
        }
        let tap_err = |context, source| Error::Tap {
            name: name.to_string(),
            context,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| tap_err("open /dev/net/tun", e))?;
        let mut ifr = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        ifr.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `ifr` has its size and layout
        // and lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(tap_err("TUNSETIFF", io::Error::last_os_error()));
        }
        let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(tap_err("TUNSETVNETHDRSZ", io::Error::last_os_error()));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is touched.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, 0 as libc::c_ulong) };
        if rc < 0 {
            return Err(tap_err("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The virtio-net device model.
pub struct NetDevice {
    tap: Arc<Tap>,
    config: [u8; 6],
    worker: DeviceWorker,
}

impl NetDevice {
    pub fn new(config: NetConfig) -> Result<Self, Error> {
        Ok(Self::with_tap(Tap::open(&config.tap_name)?, config.mac))
    }

    pub fn with_tap(tap: Tap, mac: [u8; 6]) -> Self {
        NetDevice {
            tap: Arc::new(tap),
            config: mac,
            worker: DeviceWorker::default(),
        }
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_NET_F_MAC)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_out(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), Error> {
        // Stop the old worker first (`start` would too, but later): it reads the same TAP, and
        // must not put frames into queues the driver is setting up anew.
        self.reset();
        let mut kicks = Vec::new();
        let mut kick_queues = Vec::new();
        let mut rx = None;
        let mut tx = None;
        for active in activation.queues {
            match active.index {
                RX_QUEUE => rx = Some((active.queue, active.interrupt)),
                TX_QUEUE => tx = Some((active.queue, active.interrupt)),
                _ => continue,
            }
            kicks.push(active.kick);
            kick_queues.push(active.index);
        }
        let watched = vec![WatchedFd {
            fd: self.tap.file.as_raw_fd(),
            token: TAP_TOKEN,
            events: EventSet::IN | EventSet::EDGE_TRIGGERED,
        }];
        let handler = NetWorker {
            mem: activation.mem,
            tap: self.tap.clone(),
            rx,
            tx,
            kick_queues,
            tap_readable: true,
            pending_len: None,
            rx_frame: vec![0u8; MAX_FRAME_LEN],
            tx_frame: vec![0u8; MAX_FRAME_LEN],
        };
        self.worker.start("virtio-net", kicks, watched, handler)
    }

    fn reset(&mut self) {
        self.worker.stop();
    }

    fn pause(&mut self) -> Result<(), Error> {
        self.worker.pause()
    }

    fn resume(&mut self) {
        self.worker.resume();
    }
}

struct NetWorker {
    mem: GuestMemoryHandle,
    tap: Arc<Tap>,
    rx: Option<(Queue, InterruptHandle)>,
    tx: Option<(Queue, InterruptHandle)>,
    /// Queue index of each kick position.
    kick_queues: Vec<u16>,
    /// The TAP may have frames (edge-triggered: true until a read says EAGAIN).
    tap_readable: bool,
    /// Length of a frame in `rx_frame` that found no RX buffer yet.
    pending_len: Option<usize>,
    rx_frame: Vec<u8>,
    tx_frame: Vec<u8>,
}

impl NetWorker {
    /// Move frames from the TAP into RX buffers while both are available.
    fn process_rx(&mut self) {
        let Some((queue, interrupt)) = self.rx.as_mut() else {
            return;
        };
        let mem = self.mem.memory();
        let mut used_any = false;
        loop {
            let len = match self.pending_len {
                Some(len) => len,
                None => {
                    if !self.tap_readable {
                        break;
                    }
                    match (&self.tap.file).read(&mut self.rx_frame) {
                        Ok(len) if len >= VNET_HDR_LEN => len,
                        Ok(_) => continue, // Nothing usable; look for the next frame.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.tap_readable = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::warn!("TAP {}: read failed: {e}", self.tap.name);
                            self.tap_readable = false;
                            break;
                        }
                    }
                }
            };
            self.pending_len = Some(len);
            let Some(chain) = queue.pop_descriptor_chain(&*mem) else {
                break; // No RX buffer: keep the frame until the driver adds some.
            };
            self.pending_len = None;
            let head = chain.head_index();
            // One buffer per frame (no VIRTIO_NET_F_MRG_RXBUF): num_buffers is 1.
            self.rx_frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            let written = match Writer::new(&*mem, chain) {
                Ok(mut writer) if writer.available_bytes() >= len => {
                    match writer.write_all(&self.rx_frame[..len]) {
                        Ok(()) => len as u32,
                        Err(_) => 0,
                    }
                }
                // Too small or outside guest memory: the frame is dropped.
                _ => 0,
            };
            if let Err(e) = queue.add_used(&*mem, head, written) {
                tracing::debug!("virtio-net RX: cannot return descriptor {head}: {e}");
            }
            used_any = true;
        }
        if used_any && queue.needs_notification(&*mem).unwrap_or(true) {
            interrupt.signal();
        }
    }

    /// Send every frame the driver queued for transmission.
    fn process_tx(&mut self) {
        let Some((queue, interrupt)) = self.tx.as_mut() else {
            return;
        };
        let mem = self.mem.memory();
        let tap = &self.tap;
        let frame = &mut self.tx_frame;
        process_queue(queue, &mem, interrupt, |chain| {
            let Ok(mut reader) = Reader::new(&*mem, chain) else {
                return 0;
            };
            let len = reader.available_bytes();
            if !(VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&len) {
                tracing::debug!("virtio-net TX: dropping a {len}-byte buffer");
                return 0;
            }
            if reader.read_exact(&mut frame[..len]).is_err() {
                return 0;
            }
            // A full TAP queue (EAGAIN) drops the frame, like a busy wire would.
            if let Err(e) = (&tap.file).write(&frame[..len]) {
                tracing::debug!("TAP {}: frame dropped: {e}", tap.name);
            }
            0
        });
    }
}

impl WorkerHandler for NetWorker {
    fn start(&mut self) {
        self.process_tx();
        self.process_rx();
    }

    fn queue_kicked(&mut self, position: usize) {
        match self.kick_queues.get(position).copied() {
            Some(RX_QUEUE) => self.process_rx(),
            Some(TX_QUEUE) => self.process_tx(),
            _ => {}
        }
    }

    fn fd_ready(&mut self, token: u64, _events: EventSet) {
        if token == TAP_TOKEN {
            self.tap_readable = true;
            self.process_rx();
        }
    }
}
