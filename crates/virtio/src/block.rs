//! virtio-blk over a [`BlockBackend`]: a raw file here, qcow2 (and raw) images from
//! `oxvirt-images` in [`crate::disk`].
//!
//! Supported requests: IN (read), OUT (write), FLUSH, GET_ID. Every guest-supplied value is
//! checked: a request that is malformed, misaligned or out of range completes with
//! `VIRTIO_BLK_S_IOERR`, an unknown type with `VIRTIO_BLK_S_UNSUPP`; a chain without room for
//! the status byte is returned unused. Data is copied in bounded chunks, so a huge request
//! costs time, not host memory.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use oxvirt_images::lock::{lock_image, LockMode};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{DescriptorChain, Queue, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use crate::msix::copy_out;
use crate::worker::{process_queue, Worker, WorkerHandler};
use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle, VirtioDevice};

/// Bytes per virtio-blk sector (fixed by the spec, whatever the backend's block size).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const SERIAL_LEN: usize = 20;
const QUEUE_SIZE: u16 = 256;
/// Data moves between guest memory and the backend in chunks of this size.
const CHUNK: usize = 128 * 1024;
/// Alignment of offsets, lengths and buffers for `O_DIRECT` (covers 512 and 4096 byte devices).
pub const DIRECT_ALIGN: usize = 4096;

/// Storage behind a virtio-blk device. Offsets and lengths are in bytes; callers never pass a
/// range past [`BlockBackend::size`].
pub trait BlockBackend: Send {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;
    /// Fill all of `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Make completed writes durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// How to open a virtio-blk disk.
#[derive(Clone, Debug)]
pub struct BlockConfig {
    pub path: PathBuf,
    /// Open read-only and offer `VIRTIO_BLK_F_RO`; writes fail with IOERR.
    pub readonly: bool,
    /// `cache=none`: open with `O_DIRECT` (I/O goes through 4 KiB-aligned bounce buffers; the
    /// file size must then be a multiple of 4 KiB).
    pub direct: bool,
    /// GET_ID answer (at most 20 bytes are used).
    pub serial: Option<String>,
}

/// A raw image file (or block device), locked like QEMU locks it (see [`crate::disk`]).
pub struct RawFileBackend {
    file: File,
    size: u64,
    /// Present with `O_DIRECT`.
    bounce: Option<AlignedBuffer>,
}

impl RawFileBackend {
    /// Opens `path`; fails with [`Error::Image`] (`ImageError::Locked`) if QEMU, `qemu-img` or
    /// `oxvirt img` holds a conflicting lock on it.
    pub fn open(path: &std::path::Path, readonly: bool, direct: bool) -> Result<Self, Error> {
        let open_err = |source| Error::OpenDisk {
            path: path.to_path_buf(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(!readonly);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let mut file = options.open(path).map_err(|source| {
            if direct && source.raw_os_error() == Some(libc::EINVAL) {
                Error::BadDisk {
                    path: path.to_path_buf(),
                    reason: "its file system does not support O_DIRECT (cache=none)".to_string(),
                }
            } else {
                open_err(source)
            }
        })?;
        let lock_mode = if readonly {
            LockMode::Read
        } else {
            LockMode::Write
        };
        lock_image(&file, path, lock_mode).map_err(Error::Image)?;
        // Seeking works for block devices too, where the metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        if direct && size % DIRECT_ALIGN as u64 != 0 {
            return Err(Error::BadDisk {
                path: path.to_path_buf(),
                reason: format!(
                    "size {size} is not a multiple of {DIRECT_ALIGN}, required for direct (cache=none) I/O"
                ),
            });
        }
        Ok(RawFileBackend {
            file,
            size,
            bounce: direct.then(|| AlignedBuffer::new(CHUNK)),
        })
    }
}

impl BlockBackend for RawFileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let Some(bounce) = self.bounce.as_mut() else {
            return self.file.read_exact_at(buf, offset);
        };
        // Read whole aligned windows into the bounce buffer and copy the wanted part out.
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let window_start = align_down(pos);
            let skip = (pos - window_start) as usize;
            let want = (buf.len() - done).min(bounce.len() - skip);
            let window_len = align_up(skip + want);
            let window = &mut bounce.as_mut_slice()[..window_len];
            self.file.read_exact_at(window, window_start)?;
            buf[done..done + want].copy_from_slice(&window[skip..skip + want]);
            done += want;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let Some(bounce) = self.bounce.as_mut() else {
            return self.file.write_all_at(buf, offset);
        };
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let window_start = align_down(pos);
            let skip = (pos - window_start) as usize;
            let want = (buf.len() - done).min(bounce.len() - skip);
            let window_len = align_up(skip + want);
            let window = &mut bounce.as_mut_slice()[..window_len];
            if skip != 0 || want != window_len {
                // Partial block at either end: read-modify-write (one worker per device, so no
                // other write can interleave).
                self.file.read_exact_at(window, window_start)?;
            }
            window[skip..skip + want].copy_from_slice(&buf[done..done + want]);
            self.file.write_all_at(window, window_start)?;
            done += want;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn align_down(v: u64) -> u64 {
    v & !(DIRECT_ALIGN as u64 - 1)
}

fn align_up(v: usize) -> usize {
    v.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
}

/// A heap buffer aligned to [`DIRECT_ALIGN`], as `O_DIRECT` requires.
struct AlignedBuffer {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned heap memory; nothing is tied to the creating thread.
unsafe impl Send for AlignedBuffer {}

impl AlignedBuffer {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, DIRECT_ALIGN)
            .unwrap_or_else(|_| unreachable!("constant non-zero size and power-of-two alignment"));
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuffer { ptr, layout }
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` initialized (zeroed) bytes that we own, and
        // the returned borrow is tied to `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The virtio-blk device model.
pub struct BlockDevice {
    backend: SharedBackend,
    readonly: bool,
    serial: [u8; SERIAL_LEN],
    config: [u8; 36],
    worker: Option<Worker>,
}

impl BlockDevice {
    /// Open a raw file as configured.
    pub fn open(config: BlockConfig) -> Result<Self, Error> {
        let backend = RawFileBackend::open(&config.path, config.readonly, config.direct)?;
        Ok(Self::with_backend(
            Box::new(backend),
            config.readonly,
            config.serial.as_deref(),
        ))
    }

    /// A device over any backend (e.g. qcow2 from the images crate).
    pub fn with_backend(
        backend: Box<dyn BlockBackend>,
        readonly: bool,
        serial: Option<&str>,
    ) -> Self {
        let mut id = [0u8; SERIAL_LEN];
        if let Some(serial) = serial {
            let bytes = serial.as_bytes();
            let n = bytes.len().min(SERIAL_LEN);
            id[..n].copy_from_slice(&bytes[..n]);
        }
        let mut config = [0u8; 36];
        let sectors = backend.size() / SECTOR_SIZE;
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        // seg_max: the whole queue minus header and status descriptors.
        config[12..16].copy_from_slice(&(u32::from(QUEUE_SIZE) - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        BlockDevice {
            backend: Arc::new(Mutex::new(backend)),
            readonly,
            serial: id,
            config,
            worker: None,
        }
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
        self.reset();
        let Some(active) = activation.queues.into_iter().next() else {
            return Ok(());
        };
        let capacity = lock_backend(&self.backend).size() / SECTOR_SIZE * SECTOR_SIZE;
        let handler = BlockWorker {
            mem: activation.mem,
            queue: active.queue,
            interrupt: active.interrupt,
            requests: RequestHandler {
                backend: self.backend.clone(),
                capacity,
                readonly: self.readonly,
                serial: self.serial,
                chunk: vec![0u8; CHUNK],
            },
        };
        self.worker = Some(Worker::spawn(
            "virtio-blk",
            vec![active.kick],
            Vec::new(),
            handler,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

type SharedBackend = Arc<Mutex<Box<dyn BlockBackend>>>;

/// Lock the backend. A panic while holding it cannot leave the file in a state the next request
/// cannot handle, so a poisoned lock is used as is.
fn lock_backend(backend: &SharedBackend) -> MutexGuard<'_, Box<dyn BlockBackend>> {
    backend
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// Executes virtio-blk requests against the backend.
pub(crate) struct RequestHandler {
    backend: SharedBackend,
    /// Usable bytes: whole sectors only.
    capacity: u64,
    readonly: bool,
    serial: [u8; SERIAL_LEN],
    chunk: Vec<u8>,
}

impl RequestHandler {
    /// Serve one chain; returns the bytes written into its device-writable part.
    fn handle(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
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
        reader: &mut Reader<'_>,
        data: &mut Writer<'_>,
    ) -> Result<(), RequestError> {
        let mut header = [0u8; 16];
        reader
            .read_exact(&mut header)
            .map_err(|_| RequestError::Malformed("request header shorter than 16 bytes"))?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        match request_type {
            VIRTIO_BLK_T_IN => {
                let len = data.available_bytes();
                let offset = self.checked_range(sector, len)?;
                self.read(offset, len, data)
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(RequestError::ReadOnly);
                }
                let len = reader.available_bytes();
                let offset = self.checked_range(sector, len)?;
                self.write(offset, len, reader)
            }
            VIRTIO_BLK_T_FLUSH => lock_backend(&self.backend)
                .flush()
                .map_err(RequestError::Io),
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

    fn read(&mut self, offset: u64, len: usize, data: &mut Writer<'_>) -> Result<(), RequestError> {
        let mut backend = lock_backend(&self.backend);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.chunk.len());
            let buf = &mut self.chunk[..n];
            backend
                .read_at(offset + done as u64, buf)
                .map_err(RequestError::Io)?;
            data.write_all(buf).map_err(RequestError::Io)?;
            done += n;
        }
        Ok(())
    }

    fn write(
        &mut self,
        offset: u64,
        len: usize,
        reader: &mut Reader<'_>,
    ) -> Result<(), RequestError> {
        let mut backend = lock_backend(&self.backend);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.chunk.len());
            let buf = &mut self.chunk[..n];
            reader.read_exact(buf).map_err(RequestError::Io)?;
            backend
                .write_at(offset + done as u64, buf)
                .map_err(RequestError::Io)?;
            done += n;
        }
        Ok(())
    }
}
