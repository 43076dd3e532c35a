//! MSI-X state (table, pending bits, enable/mask) and interrupt delivery.
//!
//! The table lives in guest-visible MMIO (BAR 0), written by the driver on vCPU threads, while
//! interrupts are raised by device worker threads. Both go through one mutex, held only for a
//! few field accesses and at most one `MsiInterrupt::signal` call.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::{Error, MsiInterrupt, MsiMessage};

/// "No vector" value of the virtio `msix_config` / `queue_msix_vector` registers.
pub const NO_VECTOR: u16 = 0xffff;

const ENTRY_SIZE: usize = 16;
const ENTRY_VECTOR_CONTROL: usize = 12;
const VECTOR_MASKED: u32 = 1;

/// Message control bits of the MSI-X capability.
pub const MSIX_ENABLE: u16 = 1 << 15;
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The ISR status bits (virtio 1.x, 4.1.4.5).
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// Also what the VMM's saved machine state holds of MSI-X (the transport's `save_state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MsixState {
    enabled: bool,
    function_masked: bool,
    /// Raw table bytes, `ENTRY_SIZE` per vector, exactly as the guest wrote them.
    table: Vec<u8>,
    pending: Vec<bool>,
    /// The virtio vector registers: per queue, and for configuration changes.
    pub(crate) queue_vectors: Vec<u16>,
    pub(crate) config_vector: u16,
    pub(crate) isr: u8,
}

impl MsixState {
    fn new(vectors: u16, queues: usize) -> Self {
        let mut table = vec![0u8; usize::from(vectors) * ENTRY_SIZE];
        // Entries start masked (PCI spec).
        for entry in table.chunks_exact_mut(ENTRY_SIZE) {
            entry[ENTRY_VECTOR_CONTROL..].copy_from_slice(&VECTOR_MASKED.to_le_bytes());
        }
        MsixState {
            enabled: false,
            function_masked: false,
            table,
            pending: vec![false; usize::from(vectors)],
            queue_vectors: vec![NO_VECTOR; queues],
            config_vector: NO_VECTOR,
            isr: 0,
        }
    }

    fn vector_count(&self) -> usize {
        self.pending.len()
    }

    fn entry_word(&self, vector: usize, word: usize) -> u32 {
        let at = vector * ENTRY_SIZE + word;
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.table[at..at + 4]);
        u32::from_le_bytes(bytes)
    }

    fn entry_masked(&self, vector: usize) -> bool {
        self.entry_word(vector, ENTRY_VECTOR_CONTROL) & VECTOR_MASKED != 0
    }

    fn message(&self, vector: usize) -> MsiMessage {
        let low = u64::from(self.entry_word(vector, 0));
        let high = u64::from(self.entry_word(vector, 4));
        MsiMessage {
            address: (high << 32) | low,
            data: self.entry_word(vector, 8),
        }
    }

    /// Messages for pending vectors that are no longer masked; clears their pending bits.
    fn take_deliverable(&mut self) -> Vec<MsiMessage> {
        if !self.enabled || self.function_masked {
            return Vec::new();
        }
        let mut out = Vec::new();
        for vector in 0..self.vector_count() {
            if self.pending[vector] && !self.entry_masked(vector) {
                self.pending[vector] = false;
                out.push(self.message(vector));
            }
        }
        out
    }
}

/// MSI-X for one function, shared by the transport and its device's interrupt handles.
#[derive(Clone)]
pub struct Msix {
    state: Arc<Mutex<MsixState>>,
    sink: Arc<dyn MsiInterrupt>,
}

impl Msix {
    pub(crate) fn new(vectors: u16, queues: usize, sink: Arc<dyn MsiInterrupt>) -> Self {
        Msix {
            state: Arc::new(Mutex::new(MsixState::new(vectors, queues))),
            sink,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, MsixState> {
        // A panic elsewhere while holding this lock leaves plain data behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn vector_count(&self) -> u16 {
        u16::try_from(self.lock().vector_count()).unwrap_or(u16::MAX)
    }

    fn deliver(&self, messages: Vec<MsiMessage>) {
        for msg in messages {
            // Debug level: the guest chooses the message, so it can make delivery fail at will.
            if let Err(e) = self.sink.signal(msg) {
                tracing::debug!("MSI delivery to {:#x} failed: {e}", msg.address);
            }
        }
    }

    /// The capability's message control bits that the guest can change.
    pub(crate) fn control_bits(&self) -> u16 {
        let state = self.lock();
        let mut bits = 0;
        if state.enabled {
            bits |= MSIX_ENABLE;
        }
        if state.function_masked {
            bits |= MSIX_FUNCTION_MASK;
        }
        bits
    }

    pub(crate) fn set_control_bits(&self, control: u16) {
        let deliverable = {
            let mut state = self.lock();
            state.enabled = control & MSIX_ENABLE != 0;
            state.function_masked = control & MSIX_FUNCTION_MASK != 0;
            state.take_deliverable()
        };
        self.deliver(deliverable);
    }

    pub(crate) fn table_read(&self, offset: u64, data: &mut [u8]) {
        let state = self.lock();
        copy_out(&state.table, offset, data);
    }

    pub(crate) fn table_write(&self, offset: u64, data: &[u8]) {
        let deliverable = {
            let mut state = self.lock();
            let Some(range) = byte_range(state.table.len(), offset, data.len()) else {
                return;
            };
            state.table[range].copy_from_slice(data);
            state.take_deliverable()
        };
        self.deliver(deliverable);
    }

    pub(crate) fn pba_read(&self, offset: u64, data: &mut [u8]) {
        let state = self.lock();
        let mut bytes = vec![0u8; state.vector_count().div_ceil(64) * 8];
        for (vector, pending) in state.pending.iter().enumerate() {
            if *pending {
                bytes[vector / 8] |= 1 << (vector % 8);
            }
        }
        copy_out(&bytes, offset, data);
    }

    /// Raise `vector` (setting `isr_bits` in the ISR first).
    fn trigger(&self, vector: u16, isr_bits: u8) {
        let message = {
            let mut state = self.lock();
            state.isr |= isr_bits;
            let v = usize::from(vector);
            if vector == NO_VECTOR || v >= state.vector_count() || !state.enabled {
                // No vector assigned, or MSI-X off (INTx is not implemented): nothing to send.
                return;
            }
            if state.function_masked || state.entry_masked(v) {
                state.pending[v] = true;
                return;
            }
            state.message(v)
        };
        self.deliver(vec![message]);
    }

    pub(crate) fn save(&self) -> MsixState {
        self.lock().clone()
    }

    /// Takes back [`Self::save`]'s state; sizes must match this function's.
    pub(crate) fn restore(&self, saved: &MsixState) -> Result<(), Error> {
        let mut state = self.lock();
        if saved.table.len() != state.table.len()
            || saved.pending.len() != state.pending.len()
            || saved.queue_vectors.len() != state.queue_vectors.len()
        {
            return Err(Error::State(format!(
                "the saved MSI-X state ({} vectors, {} queues) does not fit this device ({} vectors, {} queues)",
                saved.pending.len(),
                saved.queue_vectors.len(),
                state.pending.len(),
                state.queue_vectors.len()
            )));
        }
        state.clone_from(saved);
        Ok(())
    }

    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        let vectors = u16::try_from(state.vector_count()).unwrap_or(u16::MAX);
        let queues = state.queue_vectors.len();
        // The MSI-X table belongs to PCI, not to virtio: a virtio reset keeps it and the
        // enable bits, but forgets vector assignments, pending bits and the ISR.
        state.pending = vec![false; usize::from(vectors)];
        state.queue_vectors = vec![NO_VECTOR; queues];
        state.config_vector = NO_VECTOR;
        state.isr = 0;
    }
}

/// Sends one kind of interrupt of one device: a queue's used-buffer notification, or the
/// configuration-change notification. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct InterruptHandle {
    msix: Msix,
    source: InterruptSource,
}

#[derive(Clone, Copy, Debug)]
enum InterruptSource {
    Queue(u16),
    Config,
}

impl InterruptHandle {
    pub(crate) fn for_queue(msix: Msix, queue: u16) -> Self {
        InterruptHandle {
            msix,
            source: InterruptSource::Queue(queue),
        }
    }

    pub(crate) fn for_config(msix: Msix) -> Self {
        InterruptHandle {
            msix,
            source: InterruptSource::Config,
        }
    }

    /// Raise the interrupt through the vector the driver assigned (none if it assigned none).
    pub fn signal(&self) {
        let (vector, isr) = {
            let state = self.msix.lock();
            match self.source {
                InterruptSource::Queue(q) => (
                    state
                        .queue_vectors
                        .get(usize::from(q))
                        .copied()
                        .unwrap_or(NO_VECTOR),
                    ISR_QUEUE,
                ),
                InterruptSource::Config => (state.config_vector, ISR_CONFIG),
            }
        };
        self.msix.trigger(vector, isr);
    }
}

/// The in-bounds range `offset..offset+len` of a buffer of `size` bytes, if it fits entirely.
pub(crate) fn byte_range(size: usize, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

/// Copy `src[offset..]` into `data`; bytes past the end of `src` read as zero.
pub(crate) fn copy_out(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - start);
    data[..n].copy_from_slice(&src[start..start + n]);
}
