//! virtio-rng: fills the driver's buffers from the host's `getrandom(2)`.

use std::io::Write;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{Queue, Writer};
use vm_memory::GuestAddressSpace;

use crate::worker::{process_queue, DeviceWorker, WorkerHandler};
use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle, VirtioDevice};

const QUEUE_SIZES: [u16; 1] = [256];
/// Most bytes given per request: bounds the work one guest buffer can cause.
const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

pub struct RngDevice {
    worker: DeviceWorker,
}

impl RngDevice {
    pub fn new() -> Self {
        RngDevice {
            worker: DeviceWorker::default(),
        }
    }
}

impl Default for RngDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), Error> {
        self.worker
            .start_single_queue("virtio-rng", activation, |mem, queue, interrupt| {
                RngWorker {
                    mem,
                    queue,
                    interrupt,
                }
            })
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

struct RngWorker {
    mem: GuestMemoryHandle,
    queue: Queue,
    interrupt: InterruptHandle,
}

impl RngWorker {
    fn fill_queue(&mut self) {
        let mem = self.mem.memory();
        let mut random = vec![0u8; MAX_BYTES_PER_REQUEST];
        process_queue(&mut self.queue, &mem, &self.interrupt, |chain| {
            let Ok(mut writer) = Writer::new(&*mem, chain) else {
                return 0; // Buffers outside guest memory: give nothing.
            };
            let len = writer.available_bytes().min(MAX_BYTES_PER_REQUEST);
            if fill_random(&mut random[..len]).is_err() {
                return 0;
            }
            match writer.write_all(&random[..len]) {
                Ok(()) => len as u32,
                Err(_) => writer.bytes_written() as u32,
            }
        });
    }
}

impl WorkerHandler for RngWorker {
    fn start(&mut self) {
        self.fill_queue();
    }

    fn queue_kicked(&mut self, _queue: usize) {
        self.fill_queue();
    }
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the valid, exclusively
        // borrowed buffer `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}
