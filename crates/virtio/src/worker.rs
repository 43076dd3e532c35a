//! The per-device worker thread: waits on queue kicks, a stop eventfd and device fds, and calls
//! the device's handler. One thread per activated device; stopped and joined on reset/drop.
//!
//! Devices hold a [`DeviceWorker`], the one implementation of "start the worker on activation
//! (stopping any previous one first), stop and join it on reset or drop"; they only say what the
//! thread does ([`WorkerHandler`]) and what it waits on.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use virtio_queue::Queue;

use crate::{Activation, Error, GuestMemoryHandle, InterruptHandle};

/// What a device does on its worker thread.
pub trait WorkerHandler: Send + 'static {
    /// Called once before waiting: process whatever the driver queued before DRIVER_OK.
    fn start(&mut self) {}
    /// The driver kicked the queue at position `queue` of the kick list given to
    /// [`DeviceWorker::start`].
    fn queue_kicked(&mut self, queue: usize);
    /// An extra fd given to [`DeviceWorker::start`] with `token` is ready.
    fn fd_ready(&mut self, _token: u64, _events: EventSet) {}
}

/// An extra fd to wait on.
pub struct WatchedFd {
    pub fd: RawFd,
    pub token: u64,
    pub events: EventSet,
}

const STOP_TOKEN: u64 = u64::MAX;
const PAUSE_TOKEN: u64 = u64::MAX - 1;
/// How long [`DeviceWorker::pause`] waits for the thread to finish the request it is serving.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);
const KICK_BASE: u64 = 1 << 32;

/// A device's worker thread, if one runs. A device activated again (or reset) gets its old
/// worker stopped and joined first, so at most one thread serves a device's queues; dropping
/// the device stops and joins it too.
#[derive(Default)]
pub struct DeviceWorker(Option<Worker>);

impl DeviceWorker {
    /// Stops any running worker, then starts a thread named `name` running `handler`, woken by
    /// `kicks` (position `i` calls [`WorkerHandler::queue_kicked`] with `i`) and `extra` fds.
    /// `extra` tokens must be below 2^32.
    pub fn start<H: WorkerHandler>(
        &mut self,
        name: &str,
        kicks: Vec<EventFd>,
        extra: Vec<WatchedFd>,
        handler: H,
    ) -> Result<(), Error> {
        self.stop();
        self.0 = Some(Worker::spawn(name, kicks, extra, handler)?);
        Ok(())
    }

    /// For single-queue devices: stops any running worker, then serves the first queue the
    /// driver enabled with the handler `make` builds from guest memory, the queue and its
    /// interrupt. A driver that enabled no queue gets no thread (there is nothing to serve).
    pub fn start_single_queue<H: WorkerHandler>(
        &mut self,
        name: &str,
        activation: Activation,
        make: impl FnOnce(GuestMemoryHandle, Queue, InterruptHandle) -> H,
    ) -> Result<(), Error> {
        self.stop();
        let Some(active) = activation.queues.into_iter().next() else {
            return Ok(());
        };
        let handler = make(activation.mem, active.queue, active.interrupt);
        self.start(name, vec![active.kick], Vec::new(), handler)
    }

    /// Stops and joins the worker, if one runs.
    pub fn stop(&mut self) {
        if let Some(worker) = self.0.take() {
            worker.stop();
        }
    }

    /// Parks the worker between two events: returns once the thread has finished what it was
    /// serving (every chain it took is back in the used ring) and waits for [`Self::resume`].
    /// Kicks and device fds that become ready meanwhile stay pending. No worker: nothing to do.
    pub fn pause(&mut self) -> Result<(), Error> {
        match &self.0 {
            Some(worker) => worker.pause(),
            None => Ok(()),
        }
    }

    /// Lets a paused worker go on.
    pub fn resume(&mut self) {
        if let Some(worker) = &self.0 {
            worker.gate.release();
        }
    }
}

/// Where a paused worker thread waits: `requested` is set by [`DeviceWorker::pause`], `parked`
/// by the thread once it waits.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    requested: bool,
    parked: bool,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On the worker thread: waits while a pause is requested.
    fn park(&self) {
        let mut state = self.lock();
        state.parked = true;
        self.changed.notify_all();
        while state.requested {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.parked = false;
        self.changed.notify_all();
    }

    fn release(&self) {
        self.lock().requested = false;
        self.changed.notify_all();
    }
}

/// A running worker thread.
struct Worker {
    stop: EventFd,
    pause: EventFd,
    gate: Arc<Gate>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start a thread named `name` running `handler`. `extra` tokens must be below 2^32.
    fn spawn<H: WorkerHandler>(
        name: &str,
        kicks: Vec<EventFd>,
        extra: Vec<WatchedFd>,
        mut handler: H,
    ) -> Result<Worker, Error> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let pause = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        let gate = Arc::new(Gate::default());
        let epoll = Epoll::new().map_err(Error::Worker)?;
        let add = |fd: RawFd, token: u64, events: EventSet| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .map_err(Error::Worker)
        };
        add(stop.as_raw_fd(), STOP_TOKEN, EventSet::IN)?;
        add(pause.as_raw_fd(), PAUSE_TOKEN, EventSet::IN)?;
        for (i, kick) in kicks.iter().enumerate() {
            add(kick.as_raw_fd(), KICK_BASE + i as u64, EventSet::IN)?;
        }
        for watched in &extra {
            add(watched.fd, watched.token, watched.events)?;
        }
        let thread_stop = stop.try_clone().map_err(Error::EventFd)?;
        let thread_pause = Paused {
            evt: pause.try_clone().map_err(Error::EventFd)?,
            gate: gate.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                handler.start();
                run(epoll, &thread_stop, &thread_pause, &kicks, &mut handler);
            })
            .map_err(Error::Worker)?;
        Ok(Worker {
            stop,
            pause,
            gate,
            thread: Some(thread),
        })
    }

    fn pause(&self) -> Result<(), Error> {
        let mut state = self.gate.lock();
        state.requested = true;
        self.pause.write(1).map_err(Error::EventFd)?;
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while !state.parked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.requested = false;
                return Err(Error::Worker(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the device worker did not finish its request within {} s",
                        PAUSE_TIMEOUT.as_secs()
                    ),
                )));
            }
            state = self
                .gate
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Ask the thread to stop and wait for it.
    fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(thread) = self.thread.take() {
            // A paused thread must wake up to see the stop request.
            self.gate.release();
            if let Err(e) = self.stop.write(1) {
                tracing::error!("cannot signal device worker to stop: {e}");
                return;
            }
            if thread.join().is_err() {
                tracing::error!("device worker thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The worker thread's side of pausing.
struct Paused {
    evt: EventFd,
    gate: Arc<Gate>,
}

fn run<H: WorkerHandler>(
    epoll: Epoll,
    stop: &EventFd,
    paused: &Paused,
    kicks: &[EventFd],
    handler: &mut H,
) {
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("device worker epoll failed, stopping: {e}");
                return;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == STOP_TOKEN {
                let _ = stop.read();
                return;
            }
            if token == PAUSE_TOKEN {
                let _ = paused.evt.read();
                // Between two handler calls: nothing is in flight.
                paused.gate.park();
                continue;
            }
            if token >= KICK_BASE {
                let queue = (token - KICK_BASE) as usize;
                if let Some(kick) = kicks.get(queue) {
                    // Consume the count first so a kick arriving while we work is not lost.
                    let _ = kick.read();
                    handler.queue_kicked(queue);
                }
            } else {
                handler.fd_ready(token, event.event_set());
            }
        }
    }
}

/// Serve every available chain of `queue` with `handle` (which returns the number of bytes it
/// wrote into the chain), return the chains to the driver, and interrupt it if it wants that.
pub(crate) fn process_queue<F>(
    queue: &mut virtio_queue::Queue,
    mem: &crate::GuestRam,
    interrupt: &crate::InterruptHandle,
    mut handle: F,
) where
    F: FnMut(virtio_queue::DescriptorChain<&crate::GuestRam>) -> u32,
{
    use virtio_queue::QueueT;
    let mut used_any = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let written = handle(chain);
        if let Err(e) = queue.add_used(mem, head, written) {
            tracing::debug!("cannot return descriptor {head} to the driver: {e}");
        }
        used_any = true;
    }
    if used_any && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal();
    }
}
