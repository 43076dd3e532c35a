//! virtio-blk over a guest disk opened by `oxvirt-images` ([`oxvirt_images::Disk`]: raw or
//! qcow2, locked like QEMU locks it, direct I/O for raw; this crate opens no image itself).
//!
//! Supported requests: IN (read), OUT (write), FLUSH, GET_ID. Every guest-supplied value is
//! checked: a request that is malformed, misaligned or out of range completes with
//! `VIRTIO_BLK_S_IOERR`, an unknown type with `VIRTIO_BLK_S_UNSUPP`; a chain without room for
//! the status byte is returned unused. Data is copied in bounded chunks, so a huge request
//! costs time, not host memory. Errors from the image (including one found corrupt) fail that
//! request and are logged at debug level, never a panic.
//!
//! Each device counts the requests it completed ([`BlockStats`], read through a
//! [`BlockStatsHandle`]): what `virsh domblkstat` shows of a disk.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use oxvirt_images::{Disk, ImageError};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{DescriptorChain, Queue, Reader, Writer};
use vm_memory::GuestAddressSpace;

use crate::{GuestRam, RamSlice};

use crate::msix::copy_out;
use crate::worker::{process_queue, DeviceWorker, WorkerHandler};
use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle, VirtioDevice};

/// Bytes per virtio-blk sector (fixed by the spec, whatever the disk's block size).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const SERIAL_LEN: usize = 20;
const QUEUE_SIZE: u16 = 256;
/// Data moves between guest memory and the disk in chunks of this size.
const CHUNK: usize = 128 * 1024;

/// How to open a virtio-blk disk.
#[derive(Clone, Debug)]
pub struct BlockConfig {
    pub path: PathBuf,
    /// Open read-only and offer `VIRTIO_BLK_F_RO`; writes fail with IOERR.
    pub readonly: bool,
    /// `cache=none`: direct I/O (`O_DIRECT`, raw disks only; the file size must then be a
    /// multiple of 4 KiB). See [`oxvirt_images::CacheMode::Direct`].
    pub direct: bool,
    /// GET_ID answer (at most 20 bytes are used).
    pub serial: Option<String>,
}

/// A virtio-blk device's I/O counters since the device was created (a restored VM's start
/// from 0), by kind of request: what `virsh domblkstat` shows of a disk. A failed request is
/// not counted (QEMU counts those apart, and domblkstat does not show them); GET_ID is no I/O
/// and is not counted either. The VMM's control API sends them as they are (`block-stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockStats {
    pub read: RequestStats,
    pub write: RequestStats,
    /// Flushes move no data: their `bytes` stay 0.
    pub flush: RequestStats,
}

/// The requests of one kind that succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestStats {
    pub requests: u64,
    /// Their data bytes.
    pub bytes: u64,
    /// Nanoseconds the device spent on them: the disk I/O and the copies to and from guest
    /// memory.
    pub total_ns: u64,
}

/// The VMM's view of one virtio-blk device's [`BlockStats`]. Cheap to clone; it stays valid
/// across resets and re-activations of the device (the counters go on).
#[derive(Clone, Debug, Default)]
pub struct BlockStatsHandle(Arc<Mutex<BlockStats>>);

impl BlockStatsHandle {
    /// The counters now.
    pub fn get(&self) -> BlockStats {
        *lock_stats(&self.0)
    }

    /// Counts one request of `kind` that succeeded, with `bytes` of data, begun at `started`.
    fn count(&self, kind: Counted, bytes: u64, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut stats = lock_stats(&self.0);
        let counted = match kind {
            Counted::Read => &mut stats.read,
            Counted::Write => &mut stats.write,
            Counted::Flush => &mut stats.flush,
        };
        // Wrapping, as any counter that runs long enough: never a panic.
        counted.requests = counted.requests.wrapping_add(1);
        counted.bytes = counted.bytes.wrapping_add(bytes);
        counted.total_ns = counted.total_ns.wrapping_add(ns);
    }
}

/// The kinds of request the counters tell apart.
#[derive(Clone, Copy)]
enum Counted {
    Read,
    Write,
    Flush,
}

/// The counters are plain numbers: a panic while they are held leaves nothing half-done that
/// matters, so a poisoned lock is used as is.
fn lock_stats(stats: &Mutex<BlockStats>) -> MutexGuard<'_, BlockStats> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The virtio-blk device model.
pub struct BlockDevice {
    disk: SharedDisk,
    stats: BlockStatsHandle,
    readonly: bool,
    serial: [u8; SERIAL_LEN],
    config: [u8; 36],
    worker: DeviceWorker,
}

impl BlockDevice {
    /// A device serving `disk`. `readonly` offers `VIRTIO_BLK_F_RO` and fails writes before
    /// they reach the disk; `serial` answers GET_ID (20 bytes at most).
    pub fn new(disk: Disk, readonly: bool, serial: Option<&str>) -> Self {
        let mut id = [0u8; SERIAL_LEN];
        if let Some(serial) = serial {
            let bytes = serial.as_bytes();
            let n = bytes.len().min(SERIAL_LEN);
            id[..n].copy_from_slice(&bytes[..n]);
        }
        let mut config = [0u8; 36];
        let sectors = disk.size() / SECTOR_SIZE;
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        // seg_max: the whole queue minus header and status descriptors.
        config[12..16].copy_from_slice(&(u32::from(QUEUE_SIZE) - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        BlockDevice {
            disk: Arc::new(Mutex::new(disk)),
            stats: BlockStatsHandle::default(),
            readonly,
            serial: id,
            config,
            worker: DeviceWorker::default(),
        }
    }

    /// The handle the VMM reads this device's I/O counters through.
    pub fn stats(&self) -> BlockStatsHandle {
        self.stats.clone()
    }

    /// The handle the VMM hands this device's image over through at a live migration's end.
    pub fn image_locks(&self) -> ImageLocks {
        ImageLocks(self.disk.clone())
    }
}

/// A disk's image locks, as the VMM releases them once a live migration's state is complete
/// (the destination's VMM opens the same images) and takes them back if it failed. Only with
/// the device paused: nothing writes the image meanwhile.
#[derive(Clone)]
pub struct ImageLocks(SharedDisk);

impl ImageLocks {
    pub fn release(&self) -> Result<(), ImageError> {
        lock_disk(&self.0).release_locks()
    }

    pub fn take(&self) -> Result<(), ImageError> {
        lock_disk(&self.0).take_locks()
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut features = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if self.readonly {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_out(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), Error> {
        let capacity = lock_disk(&self.disk).size() / SECTOR_SIZE * SECTOR_SIZE;
        let requests = RequestHandler {
            disk: self.disk.clone(),
            stats: self.stats.clone(),
            capacity,
            readonly: self.readonly,
            serial: self.serial,
            chunk: vec![0u8; CHUNK],
        };
        self.worker
            .start_single_queue("virtio-blk", activation, |mem, queue, interrupt| {
                BlockWorker {
                    mem,
                    queue,
                    interrupt,
                    requests,
                }
            })
    }

    fn reset(&mut self) {
        self.worker.stop();
    }

    fn pause(&mut self) -> Result<(), Error> {
        self.worker.pause()?;
        // What the guest wrote reaches the disk before its saved state does (as QEMU flushes
        // every disk before saving a VM): a saved guest survives the host's crash too.
        lock_disk(&self.disk).flush().map_err(Error::Image)
    }

    fn resume(&mut self) {
        self.worker.resume();
    }
}

type SharedDisk = Arc<Mutex<Disk>>;

/// Lock the disk. A panic while holding it cannot leave the file in a state the next request
/// cannot handle, so a poisoned lock is used as is.
fn lock_disk(disk: &SharedDisk) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct BlockWorker {
    mem: GuestMemoryHandle,
    queue: Queue,
    interrupt: InterruptHandle,
    requests: RequestHandler,
}

impl BlockWorker {
    fn serve(&mut self) {
        let mem = self.mem.memory();
        let requests = &mut self.requests;
        process_queue(&mut self.queue, &mem, &self.interrupt, |chain| {
            requests.handle(&mem, chain)
        });
    }
}

impl WorkerHandler for BlockWorker {
    fn start(&mut self) {
        self.serve();
    }

    fn queue_kicked(&mut self, _queue: usize) {
        self.serve();
    }
}

/// Why a request failed (logged at debug level; the guest sees only the status byte).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("{len} bytes at sector {sector} are outside the disk")]
    OutOfRange { sector: u64, len: usize },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("I/O error: {0}")]
    Io(io::Error),
    #[error("{0}")]
    Disk(ImageError),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// Executes virtio-blk requests against the disk.
pub(crate) struct RequestHandler {
    disk: SharedDisk,
    stats: BlockStatsHandle,
    /// Usable bytes: whole sectors only.
    capacity: u64,
    readonly: bool,
    serial: [u8; SERIAL_LEN],
    chunk: Vec<u8>,
}

impl RequestHandler {
    /// Serve one chain; returns the bytes written into its device-writable part.
    fn handle(&mut self, mem: &GuestRam, chain: DescriptorChain<&GuestRam>) -> u32 {
        let reader = Reader::new(mem, chain.clone());
        let writer = Writer::new(mem, chain);
        let (mut reader, mut data) = match (reader, writer) {
            (Ok(r), Ok(w)) => (r, w),
            _ => {
                // Buffers outside guest memory: nowhere safe to put a status.
                tracing::debug!("virtio-blk: chain with buffers outside guest memory");
                return 0;
            }
        };
        let writable = data.available_bytes();
        if writable == 0 {
            tracing::debug!("virtio-blk: chain without a status byte");
            return 0;
        }
        let Ok(mut status) = data.split_at(writable - 1) else {
            return 0;
        };
        let status_byte = match self.execute(&mut reader, &mut data) {
            Ok(()) => VIRTIO_BLK_S_OK as u8,
            Err(e) => {
                tracing::debug!("virtio-blk request failed: {e}");
                e.status()
            }
        };
        if status.write_all(&[status_byte]).is_err() {
            return data.bytes_written() as u32;
        }
        (data.bytes_written() + 1) as u32
    }

    fn execute(
        &mut self,
        reader: &mut Reader<'_, RamSlice<'_>>,
        data: &mut Writer<'_, RamSlice<'_>>,
    ) -> Result<(), RequestError> {
        let mut header = [0u8; 16];
        reader
            .read_exact(&mut header)
            .map_err(|_| RequestError::Malformed("request header shorter than 16 bytes"))?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let started = Instant::now();
        match request_type {
            VIRTIO_BLK_T_IN => {
                let len = data.available_bytes();
                let offset = self.checked_range(sector, len)?;
                self.read(offset, len, data)?;
                self.stats.count(Counted::Read, len as u64, started);
                Ok(())
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(RequestError::ReadOnly);
                }
                let len = reader.available_bytes();
                let offset = self.checked_range(sector, len)?;
                self.write(offset, len, reader)?;
                self.stats.count(Counted::Write, len as u64, started);
                Ok(())
            }
            VIRTIO_BLK_T_FLUSH => {
                lock_disk(&self.disk).flush().map_err(RequestError::Disk)?;
                self.stats.count(Counted::Flush, 0, started);
                Ok(())
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data.available_bytes().min(SERIAL_LEN);
                data.write_all(&self.serial[..n]).map_err(RequestError::Io)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Byte offset of `sector` if `len` bytes from there are whole sectors inside the disk.
    fn checked_range(&self, sector: u64, len: usize) -> Result<u64, RequestError> {
        if len as u64 % SECTOR_SIZE != 0 {
            return Err(RequestError::Malformed(
                "data length is not a multiple of 512",
            ));
        }
        sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|offset| Some((offset, offset.checked_add(len as u64)?)))
            .filter(|(_, end)| *end <= self.capacity)
            .map(|(offset, _)| offset)
            .ok_or(RequestError::OutOfRange { sector, len })
    }

    fn read(
        &mut self,
        offset: u64,
        len: usize,
        data: &mut Writer<'_, RamSlice<'_>>,
    ) -> Result<(), RequestError> {
        let mut disk = lock_disk(&self.disk);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.chunk.len());
            let buf = &mut self.chunk[..n];
            disk.read_at(buf, offset + done as u64)
                .map_err(RequestError::Disk)?;
            data.write_all(buf).map_err(RequestError::Io)?;
            done += n;
        }
        Ok(())
    }

    fn write(
        &mut self,
        offset: u64,
        len: usize,
        reader: &mut Reader<'_, RamSlice<'_>>,
    ) -> Result<(), RequestError> {
        let mut disk = lock_disk(&self.disk);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.chunk.len());
            let buf = &mut self.chunk[..n];
            reader.read_exact(buf).map_err(RequestError::Io)?;
            disk.write_at(buf, offset + done as u64)
                .map_err(RequestError::Disk)?;
            done += n;
        }
        Ok(())
    }
}
