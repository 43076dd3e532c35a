//! virtio-balloon (virtio 1.x, 5.5): the host asks the guest to give pages back and reads the
//! guest's memory statistics.
//!
//! * Queue 0 (inflate): buffers of little-endian u32 page frame numbers (4 KiB pages) the guest
//!   gave up. Each page is released to the host with `madvise(MADV_DONTNEED)` on guest RAM's
//!   mapping; a PFN outside guest RAM is ignored and logged.
//! * Queue 1 (deflate): PFNs the guest takes back. Nothing to do: the next guest access faults
//!   a fresh zero page in (`VIRTIO_BALLOON_F_MUST_TELL_HOST` is not offered).
//! * Queue 2 (stats, `VIRTIO_BALLOON_F_STATS_VQ`): the driver posts one buffer of
//!   `(le16 tag, le64 value)` entries and the device keeps it; every stats period the device
//!   hands it back and the driver refills and posts it again.
//! * Configuration: `num_pages` (the host's target: pages the balloon should hold) and `actual`
//!   (pages it holds, written by the driver).
//!
//! The VMM drives it through a [`BalloonHandle`]: set the target, read `actual` and the
//! statistics, set the stats period.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryBackend};

use crate::GuestRam;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::msix::copy_out;
use crate::worker::{process_queue, DeviceWorker, WatchedFd, WorkerHandler};
use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle, VirtioDevice};

/// The balloon's page size, whatever the guest's: PFNs are in 4 KiB units (5.5.6).
pub const BALLOON_PAGE_SIZE: u64 = 4096;
const PFN_SHIFT: u32 = 12;

const F_STATS_VQ: u64 = 1 << 1;
const F_DEFLATE_ON_OOM: u64 = 1 << 2;

const INFLATE_QUEUE: usize = 0;
const DEFLATE_QUEUE: usize = 1;
const STATS_QUEUE: usize = 2;
const QUEUE_SIZES: [u16; 3] = [256, 256, 256];

/// Most PFNs read from one inflate/deflate buffer (Linux sends at most 256): bounds the work one
/// guest buffer can cause.
const MAX_PFNS_PER_BUFFER: usize = 4096;
/// One statistics entry on the wire: le16 tag, le64 value, packed.
const STAT_ENTRY_LEN: usize = 10;
/// Most entries read from one statistics buffer (the spec defines 10 tags, Linux 6.x sends up to 16).
const MAX_STATS: usize = 64;

// Offsets in the device configuration (5.5.4).
const CFG_NUM_PAGES: usize = 0;
const CFG_ACTUAL: usize = 4;
const CFG_LEN: usize = 8;

const WAKE_TOKEN: u64 = 1;
const TIMER_TOKEN: u64 = 2;

/// The guest statistics tags of the virtio 1.x spec (5.5.6.3): the name `virsh dommemstat` gives
/// each, and whether its value is a memory size in bytes (the others are counts).
pub const STAT_NAMES: [(u16, &str, bool); 10] = [
    (0, "swap_in", true),
    (1, "swap_out", true),
    (2, "major_fault", false),
    (3, "minor_fault", false),
    (4, "unused", true),
    (5, "available", true),
    (6, "usable", true),
    (7, "disk_caches", true),
    (8, "hugetlb_pgalloc", false),
    (9, "hugetlb_pgfail", false),
];

/// How a balloon is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` (libvirt's `autodeflate='on'`): the guest may take
    /// pages back from the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Seconds between two statistics refreshes; 0: only what the driver sends by itself.
    pub stats_period_s: u32,
}

/// The guest's last statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// `(tag, value)` in the order the guest sent them; memory sizes are in bytes.
    pub entries: Vec<(u16, u64)>,
    /// When the device received them (seconds since the epoch).
    pub received_s: u64,
}

/// What the balloon device and its handle share.
struct Shared {
    state: Mutex<State>,
    /// Tells the worker to re-arm its timer (the period changed).
    wake: EventFd,
    timer: Mutex<TimerFd>,
    /// The statistics queue and the buffer the device holds, while the device is active.
    stats_queue: Mutex<Option<StatsQueue>>,
}

#[derive(Default)]
struct State {
    num_pages: u32,
    actual: u32,
    stats_period_s: u32,
    stats: Option<GuestStats>,
    /// Set while the driver runs the device.
    config_interrupt: Option<InterruptHandle>,
}

/// The device's part of a saved machine state (the queues are the transport's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedState {
    num_pages: u32,
    actual: u32,
    stats_period_s: u32,
}

struct StatsQueue {
    mem: GuestMemoryHandle,
    queue: Queue,
    interrupt: InterruptHandle,
    /// The head of the statistics buffer the device keeps until the next refresh.
    held: Option<u16>,
}

impl StatsQueue {
    /// Gives the held buffer back: the driver refills it and posts it again.
    fn release(&mut self) {
        let Some(head) = self.held.take() else {
            return;
        };
        let mem = self.mem.memory();
        if let Err(e) = self.queue.add_used(&*mem, head, 0) {
            tracing::debug!("balloon: cannot return the statistics buffer: {e}");
            return;
        }
        if self.queue.needs_notification(&*mem).unwrap_or(true) {
            self.interrupt.signal();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The VMM's side of a balloon: target, statistics, period. Cheap to clone.
#[derive(Clone)]
pub struct BalloonHandle(Arc<Shared>);

impl BalloonHandle {
    /// Sets how many 4 KiB pages the balloon should hold and tells the driver (a configuration
    /// change interrupt) if one runs.
    pub fn set_target_pages(&self, pages: u32) {
        let interrupt = {
            let mut state = lock(&self.0.state);
            state.num_pages = pages;
            state.config_interrupt.clone()
        };
        if let Some(interrupt) = interrupt {
            interrupt.signal();
        }
    }

    /// The target (`num_pages`) last set.
    pub fn target_pages(&self) -> u32 {
        lock(&self.0.state).num_pages
    }

    /// Pages the guest says the balloon holds (`actual`).
    pub fn actual_pages(&self) -> u32 {
        lock(&self.0.state).actual
    }

    /// The guest's last statistics, if it sent any.
    pub fn stats(&self) -> Option<GuestStats> {
        lock(&self.0.state).stats.clone()
    }

    /// Seconds between two statistics refreshes (0: none).
    pub fn stats_period(&self) -> u32 {
        lock(&self.0.state).stats_period_s
    }

    /// Sets the statistics period; takes effect at once.
    pub fn set_stats_period(&self, seconds: u32) -> Result<(), Error> {
        lock(&self.0.state).stats_period_s = seconds;
        self.0.wake.write(1).map_err(Error::EventFd)
    }
}

/// A virtio-balloon device.
pub struct BalloonDevice {
    shared: Arc<Shared>,
    features: u64,
    worker: DeviceWorker,
}

impl BalloonDevice {
    /// A balloon and the handle the VMM keeps.
    pub fn new(config: BalloonConfig) -> Result<(BalloonDevice, BalloonHandle), Error> {
        let mut features = (1 << VIRTIO_F_VERSION_1) | F_STATS_VQ;
        if config.deflate_on_oom {
            features |= F_DEFLATE_ON_OOM;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stats_period_s: config.stats_period_s,
                ..State::default()
            }),
            wake: EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?,
            timer: Mutex::new(nonblocking_timer()?),
            stats_queue: Mutex::new(None),
        });
        Ok((
            BalloonDevice {
                shared: shared.clone(),
                features,
                worker: DeviceWorker::default(),
            },
            BalloonHandle(shared),
        ))
    }

    fn config_bytes(&self) -> [u8; CFG_LEN] {
        let state = lock(&self.shared.state);
        let mut c = [0u8; CFG_LEN];
        c[CFG_NUM_PAGES..CFG_NUM_PAGES + 4].copy_from_slice(&state.num_pages.to_le_bytes());
        c[CFG_ACTUAL..CFG_ACTUAL + 4].copy_from_slice(&state.actual.to_le_bytes());
        c
    }
}

impl VirtioDevice for BalloonDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_out(&self.config_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` is the driver's to write; any byte range of it is accepted.
        let mut bytes = self.config_bytes();
        let Some(range) = crate::msix::byte_range(CFG_LEN, offset, data.len()) else {
            return;
        };
        if range.start < CFG_ACTUAL {
            return;
        }
        bytes[range].copy_from_slice(data);
        let actual = u32::from_le_bytes([
            bytes[CFG_ACTUAL],
            bytes[CFG_ACTUAL + 1],
            bytes[CFG_ACTUAL + 2],
            bytes[CFG_ACTUAL + 3],
        ]);
        lock(&self.shared.state).actual = actual;
    }

    fn activate(&mut self, activation: Activation) -> Result<(), Error> {
        self.worker.stop();
        let stats_negotiated = activation.acked_features & F_STATS_VQ != 0;
        let mut page_queues = [None, None];
        let mut kicks = Vec::new();
        let mut stats = None;
        for active in activation.queues {
            match usize::from(active.index) {
                INFLATE_QUEUE | DEFLATE_QUEUE => {
                    page_queues[usize::from(active.index)] = Some((active.queue, active.interrupt));
                    kicks.push((usize::from(active.index), active.kick));
                }
                STATS_QUEUE if stats_negotiated => {
                    stats = Some(StatsQueue {
                        mem: activation.mem.clone(),
                        queue: active.queue,
                        interrupt: active.interrupt,
                        held: None,
                    });
                    kicks.push((STATS_QUEUE, active.kick));
                }
                _ => {}
            }
        }
        *lock(&self.shared.stats_queue) = stats;
        // The worker is told which queue each kick is for by its position in `kick_queues`.
        let (kick_queues, kicks): (Vec<usize>, Vec<EventFd>) = kicks.into_iter().unzip();
        let [inflate, deflate] = page_queues;
        let handler = BalloonWorker {
            mem: activation.mem,
            shared: self.shared.clone(),
            inflate,
            deflate,
            kick_queues,
        };
        let timer_fd = lock(&self.shared.timer).as_raw_fd();
        let extra = vec![
            WatchedFd {
                fd: self.shared.wake.as_raw_fd(),
                token: WAKE_TOKEN,
                events: EventSet::IN,
            },
            WatchedFd {
                fd: timer_fd,
                token: TIMER_TOKEN,
                events: EventSet::IN,
            },
        ];
        self.worker.start("virtio-balloon", kicks, extra, handler)?;
        lock(&self.shared.state).config_interrupt = Some(activation.config_interrupt);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
        *lock(&self.shared.stats_queue) = None;
        let mut state = lock(&self.shared.state);
        state.config_interrupt = None;
        // A driver that goes away has given every page back; the host's target stays.
        state.actual = 0;
    }

    fn pause(&mut self) -> Result<(), Error> {
        self.worker.pause()?;
        // The statistics buffer goes back to the driver, so every chain the device took is in a
        // used ring (what a saved state relies on); the driver posts it again when it runs.
        if let Some(stats) = lock(&self.shared.stats_queue).as_mut() {
            stats.release();
        }
        Ok(())
    }

    fn resume(&mut self) {
        self.worker.resume();
    }

    fn save_state(&self) -> Result<Vec<u8>, Error> {
        let state = lock(&self.shared.state);
        let saved = SavedState {
            num_pages: state.num_pages,
            actual: state.actual,
            stats_period_s: state.stats_period_s,
        };
        serde_json::to_vec(&saved).map_err(|e| Error::State(e.to_string()))
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let saved: SavedState = serde_json::from_slice(bytes)
            .map_err(|e| Error::State(format!("virtio-balloon: {e}")))?;
        let mut state = lock(&self.shared.state);
        state.num_pages = saved.num_pages;
        state.actual = saved.actual;
        state.stats_period_s = saved.stats_period_s;
        Ok(())
    }
}

struct BalloonWorker {
    mem: GuestMemoryHandle,
    shared: Arc<Shared>,
    inflate: Option<(Queue, InterruptHandle)>,
    deflate: Option<(Queue, InterruptHandle)>,
    /// The virtio queue index of each kick position.
    kick_queues: Vec<usize>,
}

impl BalloonWorker {
    fn serve_pages(&mut self, inflate: bool) {
        let slot = if inflate {
            &mut self.inflate
        } else {
            &mut self.deflate
        };
        let Some((queue, interrupt)) = slot else {
            return;
        };
        let mem = self.mem.memory();
        process_queue(queue, &mem, interrupt, |chain| {
            let pfns = read_pfns(&mem, chain);
            if inflate {
                release_pages(&mem, &pfns);
            }
            0
        });
    }

    fn serve_stats(&mut self) {
        let mut guard = lock(&self.shared.stats_queue);
        let Some(stats) = guard.as_mut() else {
            return;
        };
        let mem = stats.mem.memory();
        while let Some(chain) = stats.queue.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            if let Some(entries) = read_stats(&mem, chain) {
                lock(&self.shared.state).stats = Some(GuestStats {
                    entries,
                    received_s: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                });
            }
            // Only one buffer is kept: an older one goes back at once.
            if let Some(older) = stats.held.replace(head) {
                if let Err(e) = stats.queue.add_used(&*mem, older, 0) {
                    tracing::debug!("balloon: cannot return a statistics buffer: {e}");
                }
                stats.interrupt.signal();
            }
        }
    }

    fn arm_timer(&self) {
        let period = lock(&self.shared.state).stats_period_s;
        let mut timer = lock(&self.shared.timer);
        let result = if period == 0 {
            timer.clear()
        } else {
            let every = Duration::from_secs(u64::from(period));
            timer.reset(every, Some(every))
        };
        if let Err(e) = result {
            tracing::warn!("balloon: cannot set the statistics timer: {e}");
        }
    }
}

impl WorkerHandler for BalloonWorker {
    fn start(&mut self) {
        self.arm_timer();
        self.serve_pages(true);
        self.serve_pages(false);
        self.serve_stats();
    }

    fn queue_kicked(&mut self, position: usize) {
        match self.kick_queues.get(position) {
            Some(&INFLATE_QUEUE) => self.serve_pages(true),
            Some(&DEFLATE_QUEUE) => self.serve_pages(false),
            Some(&STATS_QUEUE) => self.serve_stats(),
            _ => {}
        }
    }

    fn fd_ready(&mut self, token: u64, _events: EventSet) {
        match token {
            WAKE_TOKEN => {
                let _ = self.shared.wake.read();
                self.arm_timer();
            }
            TIMER_TOKEN => {
                // Consume the expirations; none (EAGAIN) means the timer was re-armed since.
                if lock(&self.shared.timer).wait().is_err() {
                    return;
                }
                if let Some(stats) = lock(&self.shared.stats_queue).as_mut() {
                    stats.release();
                }
            }
            _ => {}
        }
    }
}

/// A timerfd whose read never blocks: the worker must not wait on a timer re-armed (its
/// expirations cleared) between epoll's report and the read.
fn nonblocking_timer() -> Result<TimerFd, Error> {
    let timer = TimerFd::new().map_err(|e| Error::Worker(e.into()))?;
    let fd = timer.as_raw_fd();
    // SAFETY: fcntl on a descriptor `timer` owns; F_GETFL/F_SETFL only read and set its status flags.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(Error::Worker(std::io::Error::last_os_error()));
    }
    Ok(timer)
}

/// The PFNs of one inflate/deflate buffer (the readable part of the chain, up to
/// [`MAX_PFNS_PER_BUFFER`]); a chain outside guest memory gives none.
fn read_pfns(mem: &GuestRam, chain: DescriptorChain<&GuestRam>) -> Vec<u32> {
    let Ok(mut reader) = Reader::new(mem, chain) else {
        tracing::debug!("balloon: a page buffer outside guest memory, ignored");
        return Vec::new();
    };
    let count = (reader.available_bytes() / 4).min(MAX_PFNS_PER_BUFFER);
    let mut pfns = Vec::with_capacity(count);
    for _ in 0..count {
        match reader.read_obj::<u32>() {
            Ok(pfn) => pfns.push(u32::from_le(pfn)),
            Err(_) => break,
        }
    }
    pfns
}

/// Releases the guest pages `pfns` to the host; runs of consecutive pages go in one call. Pages
/// outside guest RAM are ignored with a log.
fn release_pages(mem: &GuestRam, pfns: &[u32]) {
    let mut i = 0;
    while i < pfns.len() {
        let first = pfns[i];
        let mut run = 1usize;
        while i + run < pfns.len() && u64::from(pfns[i + run]) == u64::from(first) + run as u64 {
            run += 1;
        }
        i += run;
        let start = GuestAddress(u64::from(first) << PFN_SHIFT);
        let len = run * BALLOON_PAGE_SIZE as usize;
        // One region must hold the whole run; a run crossing a hole goes page by page.
        if !release_range(mem, start, len) {
            for page in 0..run as u64 {
                let addr = GuestAddress(start.0 + (page << PFN_SHIFT));
                if !release_range(mem, addr, BALLOON_PAGE_SIZE as usize) {
                    tracing::warn!(
                        "balloon: the guest gave up page {:#x}, which is not guest RAM; ignored",
                        addr.0 >> PFN_SHIFT
                    );
                }
            }
        }
    }
}

/// `madvise(MADV_DONTNEED)` on the host mapping of `[addr, addr + len)`; false when the range is
/// not entirely inside one RAM region.
fn release_range(mem: &GuestRam, addr: GuestAddress, len: usize) -> bool {
    let Ok(slice) = mem.get_slice(addr, len) else {
        return false;
    };
    let ptr = slice.ptr_guard_mut().as_ptr();
    // SAFETY: `ptr..ptr+len` is inside guest RAM's private anonymous mapping (get_slice checked
    // the range against one region), which lives as long as the process. MADV_DONTNEED only drops
    // the pages' contents (the guest gave them up; a later access reads zeros), it never unmaps.
    let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
    if rc == 0 {
        // The pages now read as zeros: a live migration must send them again (the destination
        // may hold what they had), and this write is not one vm-memory or KVM would have seen.
        slice.bitmap().mark_dirty(0, len);
    } else {
        // hugetlbfs RAM cannot drop 4 KiB pieces: the pages stay with the guest's process.
        tracing::debug!(
            "balloon: madvise at {:#x} (+{len}): {}",
            addr.0,
            std::io::Error::last_os_error()
        );
    }
    true
}

/// The entries of one statistics buffer; `None` if the chain is outside guest memory.
fn read_stats(mem: &GuestRam, chain: DescriptorChain<&GuestRam>) -> Option<Vec<(u16, u64)>> {
    let mut reader = Reader::new(mem, chain).ok()?;
    let count = (reader.available_bytes() / STAT_ENTRY_LEN).min(MAX_STATS);
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let mut entry = [0u8; STAT_ENTRY_LEN];
        if std::io::Read::read_exact(&mut reader, &mut entry).is_err() {
            break;
        }
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let mut value = [0u8; 8];
        value.copy_from_slice(&entry[2..]);
        entries.push((tag, u64::from_le_bytes(value)));
    }
    Some(entries)
}

impl GuestStats {
    /// The entries the spec defines, under `virsh dommemstat`'s names, memory sizes in KiB
    /// (tags it does not define are left out; a tag sent twice counts once, the last value).
    pub fn virsh_terms(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for (tag, value) in &self.entries {
            let Some((_, name, bytes)) = STAT_NAMES.iter().find(|(t, _, _)| t == tag) else {
                continue;
            };
            let value = if *bytes { value / 1024 } else { *value };
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = value,
                None => out.push((name, value)),
            }
        }
        out
    }
}
