//! The saved-state stream: one running microVM's whole machine state (guest RAM, every vCPU's KVM state,
//! the in-kernel interrupt controllers, PIT and clock, the platform devices, every PCI function), written
//! by the control request `save` and read back by a VMM started with [`crate::protocol::RestoreSource`].
//!
//! This module owns the format; what each section holds is captured and restored where that state lives
//! ([`crate::kvm_state`] for KVM, each device module for its device, `oxvirt-virtio` for the transport).
//!
//! ```text
//! header   "OXVMSTAT" (8 bytes), version u32 LE (1; 2: a live migration's), reserved u32 (0)
//! section  tag (4 ASCII bytes), length u64 LE, payload of `length` bytes
//!          MACH  JSON: what the VM was built from (memory size, vCPUs, devices); must match the config
//!          RAM   guest RAM (see below); in version 2 instead any number of
//!          RAMP  pages of guest RAM, each later one over what came before (see below)
//!          VMST  in-kernel irqchip (PIC master, PIC slave, IOAPIC), PIT, KVM clock
//!          VCPU  one per vCPU, in index order
//!          DEVS  JSON: serial, CMOS, PM, i8042, the PCI configuration address latch
//!          PCIF  one per PCI slot, in slot order: that function's own bytes
//!          END.  length 0: the stream is complete
//! RAM      u32 region count; per region: guest address u64, size u64, a bitmap of its 4 KiB pages
//!          (u64 words, bit set = page stored), then the stored pages in address order. Pages that are
//!          all zero are not stored: the new VM's RAM starts zeroed.
//! RAMP     runs, each: guest address u64 (page-aligned), page count u32, kind u32 (0: the pages'
//!          bytes follow; 1: the pages are all zero, no bytes follow); at most 4 MiB of bytes
//! ```
//!
//! Version 2 is what a live migration writes (`migrate-send-fd`): RAM goes while the guest runs,
//! all of it once, then the pages written since, pass after pass, so a page can come several times
//! and the last one counts; the sections after the last RAMP are written with the guest paused.
//!
//! Reading checks everything: a foreign file, another version, a truncated stream, a length beyond the
//! file or beyond what the configuration allows are errors naming what is wrong, never a panic.

use std::io::{self, Read, Write};

use oxvirt_virtio::GuestRam;
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// The first bytes of a stream.
pub const MAGIC: [u8; 8] = *b"OXVMSTAT";
/// The format version of a saved state (`save`).
pub const VERSION: u32 = 1;
/// The format version of a live migration's stream: RAM as RAMP sections.
pub const VERSION_LIVE: u32 = 2;
/// Guest page size for the zero-page bitmap.
pub const PAGE: u64 = 4096;
const ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];
/// Largest section other than RAM: JSON device state and KVM structures are kilobytes.
const MAX_SMALL_SECTION: u64 = 16 << 20;

/// A section's tag.
pub type Tag = [u8; 4];
pub const TAG_MACHINE: Tag = *b"MACH";
pub const TAG_RAM: Tag = *b"RAM ";
pub const TAG_PAGES: Tag = *b"RAMP";
pub const TAG_VM: Tag = *b"VMST";
pub const TAG_VCPU: Tag = *b"VCPU";
pub const TAG_DEVICES: Tag = *b"DEVS";
pub const TAG_PCI: Tag = *b"PCIF";
pub const TAG_END: Tag = *b"END.";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an oxvirt-vmm state stream (it starts with {0:02x?}, expected \"OXVMSTAT\")")]
    Foreign([u8; 8]),
    #[error(
        "state stream version {found}; this oxvirt-vmm reads versions {VERSION} and {VERSION_LIVE}"
    )]
    Version { found: u32 },
    #[error("the state stream is truncated: {0} is incomplete")]
    Truncated(String),
    #[error("the state stream is corrupt: {0}")]
    Corrupt(String),
    #[error("the saved machine does not match this configuration: {0}")]
    Mismatch(String),
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        source: kvm_ioctls::Error,
    },
    #[error("{0}")]
    Device(String),
}

impl StateError {
    pub fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
        let what = what.into();
        move |source| StateError::Kvm { what, source }
    }
}

fn tag_name(tag: Tag) -> String {
    String::from_utf8_lossy(&tag).trim_end().to_string()
}

/// Reads exactly `buf.len()` bytes; running out is [`StateError::Truncated`] naming `what`.
fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), StateError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => StateError::Truncated(what.to_string()),
        _ => StateError::Io(e),
    })
}

/// Writes a stream: the header at creation, then sections.
pub struct StreamWriter<W: Write> {
    out: W,
}

impl<W: Write> StreamWriter<W> {
    /// A saved state's stream (version 1).
    pub fn new(out: W) -> Result<Self, StateError> {
        Self::with_version(out, VERSION)
    }

    /// A live migration's stream (version 2: RAM in [`Self::pages`] sections).
    pub fn live(out: W) -> Result<Self, StateError> {
        Self::with_version(out, VERSION_LIVE)
    }

    fn with_version(mut out: W, version: u32) -> Result<Self, StateError> {
        out.write_all(&MAGIC)?;
        out.write_all(&version.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(StreamWriter { out })
    }

    /// RAMP sections with the pages of `set`, read from `mem` while the guest may be writing
    /// them (a page written meanwhile is in the next pass's set). Pages that are all zero are
    /// left out with [`ZeroPages::Omit`] (the destination's RAM starts zeroed: the first pass)
    /// and sent as zero runs with [`ZeroPages::Send`] (a page the destination has may have been
    /// zeroed since). Returns how many bytes the sections took.
    pub fn pages(
        &mut self,
        mem: &GuestRam,
        set: &PageSet,
        zero: ZeroPages,
    ) -> Result<u64, StateError> {
        let mut payload = Vec::with_capacity(SECTION_PAGES as usize * (PAGE as usize + 16));
        let mut buf = vec![0u8; (SECTION_PAGES * PAGE) as usize];
        let mut written = 0u64;
        for region in &set.regions {
            let pages = region.size.div_ceil(PAGE);
            for run in stored_runs(pages, |n| region.contains(n)) {
                let mut first = run.start;
                while first < run.end {
                    let count = (run.end - first).min(SECTION_PAGES);
                    let bytes = page_range(first..first + count, region.size);
                    let len = bytes.len();
                    let start = region.start + first * PAGE;
                    let slice = mem.get_slice(GuestAddress(start), len).map_err(|e| {
                        StateError::Device(format!("cannot read guest RAM at {start:#x}: {e}"))
                    })?;
                    // A volatile copy: the vCPUs may be writing these pages right now.
                    slice.copy_to(&mut buf[..len]);
                    let zero_page = |n: u64| {
                        let at = ((n - first) * PAGE) as usize;
                        let page = &buf[at..(at + PAGE as usize).min(len)];
                        page == &ZERO_PAGE[..page.len()]
                    };
                    let mut n = first;
                    while n < first + count {
                        let zero_run = zero_page(n);
                        let mut end = n + 1;
                        while end < first + count && zero_page(end) == zero_run {
                            end += 1;
                        }
                        let address = region.start + n * PAGE;
                        let run_pages = (end - n) as u32;
                        if !zero_run {
                            payload.extend_from_slice(&address.to_le_bytes());
                            payload.extend_from_slice(&run_pages.to_le_bytes());
                            payload.extend_from_slice(&PAGES_DATA.to_le_bytes());
                            let at = ((n - first) * PAGE) as usize;
                            let until = (((end - first) * PAGE) as usize).min(len);
                            payload.extend_from_slice(&buf[at..until]);
                        } else if zero == ZeroPages::Send {
                            payload.extend_from_slice(&address.to_le_bytes());
                            payload.extend_from_slice(&run_pages.to_le_bytes());
                            payload.extend_from_slice(&PAGES_ZERO.to_le_bytes());
                        }
                        n = end;
                    }
                    if payload.len() as u64 >= SECTION_PAGES * PAGE {
                        written += 12 + payload.len() as u64;
                        self.section(TAG_PAGES, &payload)?;
                        payload.clear();
                    }
                    first += count;
                }
            }
        }
        if !payload.is_empty() {
            written += 12 + payload.len() as u64;
            self.section(TAG_PAGES, &payload)?;
        }
        Ok(written)
    }

    /// Pushes what is buffered to the output (a live stream's reader sees each pass whole).
    pub fn flush(&mut self) -> Result<(), StateError> {
        Ok(self.out.flush()?)
    }

    pub fn section(&mut self, tag: Tag, payload: &[u8]) -> Result<(), StateError> {
        self.out.write_all(&tag)?;
        self.out.write_all(&(payload.len() as u64).to_le_bytes())?;
        self.out.write_all(payload)?;
        Ok(())
    }

    /// The RAM section: every region of `mem`, all-zero pages left out. Nothing may change RAM
    /// meanwhile (vCPUs parked, device workers paused).
    pub fn ram(&mut self, mem: &GuestRam) -> Result<(), StateError> {
        // First pass: which pages hold data, so the section's length is known before it is written.
        let mut regions = Vec::new();
        let mut length = 4u64;
        for (start, size, host) in crate::memory::host_regions(mem) {
            let bytes = ram_slice(host, size);
            let pages = size.div_ceil(PAGE);
            let mut bitmap = vec![0u64; pages.div_ceil(64) as usize];
            let mut stored = 0u64;
            for (n, page) in bytes.chunks(PAGE as usize).enumerate() {
                // A slice comparison is one memcmp, fast in any build.
                if page != &ZERO_PAGE[..page.len()] {
                    bitmap[n / 64] |= 1 << (n % 64);
                    stored += 1;
                }
            }
            length += 16 + bitmap.len() as u64 * 8 + stored * PAGE;
            regions.push((start, size, bytes, bitmap));
        }
        self.out.write_all(&TAG_RAM)?;
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(&(regions.len() as u32).to_le_bytes())?;
        for (start, size, bytes, bitmap) in &regions {
            self.out.write_all(&start.to_le_bytes())?;
            self.out.write_all(&size.to_le_bytes())?;
            let words: Vec<u8> = bitmap.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.out.write_all(&words)?;
            for run in stored_runs(size.div_ceil(PAGE), |n| {
                bitmap[(n / 64) as usize] & (1 << (n % 64)) != 0
            }) {
                self.out.write_all(&bytes[page_range(run, *size)])?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, StateError> {
        self.section(TAG_END, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Page bytes in one RAMP section at most (its payload is built in memory).
const SECTION_PAGES: u64 = 1024;
/// A RAMP run's kind: its pages' bytes follow.
const PAGES_DATA: u32 = 0;
/// A RAMP run's kind: its pages are all zero.
const PAGES_ZERO: u32 = 1;

/// Whether [`StreamWriter::pages`] sends pages that are all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPages {
    Omit,
    Send,
}

/// A set of guest RAM pages: per region of guest RAM (in [`crate::memory::host_regions`]'
/// order), a bitmap of its 4 KiB pages in KVM's dirty log layout (bit `n % 64` of word `n / 64`
/// is page `n`).
#[derive(Clone, Debug)]
pub struct PageSet {
    regions: Vec<PageBits>,
}

#[derive(Clone, Debug)]
struct PageBits {
    start: u64,
    size: u64,
    words: Vec<u64>,
}

impl PageBits {
    fn contains(&self, page: u64) -> bool {
        self.words
            .get((page / 64) as usize)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }
}

impl PageSet {
    /// No page of `mem`.
    pub fn empty(mem: &GuestRam) -> PageSet {
        PageSet {
            regions: crate::memory::host_regions(mem)
                .into_iter()
                .map(|(start, size, _)| PageBits {
                    start,
                    size,
                    words: vec![0; size.div_ceil(PAGE).div_ceil(64) as usize],
                })
                .collect(),
        }
    }

    /// Every page of `mem`.
    pub fn all(mem: &GuestRam) -> PageSet {
        let mut set = PageSet::empty(mem);
        for region in &mut set.regions {
            let pages = region.size.div_ceil(PAGE);
            for (i, word) in region.words.iter_mut().enumerate() {
                let left = pages - i as u64 * 64;
                *word = if left >= 64 {
                    u64::MAX
                } else {
                    (1 << left) - 1
                };
            }
        }
        set
    }

    /// Adds the pages set in `words` (a dirty log of region `region`) to the set.
    pub fn add(&mut self, region: usize, words: &[u64]) {
        if let Some(bits) = self.regions.get_mut(region) {
            for (mine, theirs) in bits.words.iter_mut().zip(words) {
                *mine |= theirs;
            }
        }
    }

    /// Adds every page of `other` (a set of the same RAM).
    pub fn merge(&mut self, other: &PageSet) {
        for (i, region) in other.regions.iter().enumerate() {
            self.add(i, &region.words);
        }
    }

    /// How many pages are in the set.
    pub fn count(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|r| &r.words)
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }
}

/// Runs of consecutive stored pages (`stored(n)`) among `pages` pages, as page index ranges.
fn stored_runs(
    pages: u64,
    stored: impl Fn(u64) -> bool,
) -> impl Iterator<Item = std::ops::Range<u64>> {
    let mut n = 0;
    std::iter::from_fn(move || {
        while n < pages && !stored(n) {
            n += 1;
        }
        if n == pages {
            return None;
        }
        let first = n;
        while n < pages && stored(n) {
            n += 1;
        }
        Some(first..n)
    })
}

/// The bytes of pages `run` in a region of `size` bytes.
fn page_range(run: std::ops::Range<u64>, size: u64) -> std::ops::Range<usize> {
    (run.start * PAGE) as usize..(run.end * PAGE).min(size) as usize
}

/// A RAM region (from [`crate::memory::host_regions`]) as bytes.
///
/// Callers use it only while nothing else touches RAM: saving with every vCPU parked and every device
/// worker paused, restoring before any of them started.
fn ram_slice<'a>(host: u64, size: u64) -> &'a mut [u8] {
    // SAFETY: `host`..`host + size` is one whole guest RAM mapping (memory.rs maps it readable and writable and
    // never unmaps it), so the slice stays valid; nothing else reads or writes it while the slice is used (see
    // above), so it is not aliased.
    unsafe { std::slice::from_raw_parts_mut(host as *mut u8, size as usize) }
}

/// Reads a stream, checking every length against what is left of it.
pub struct StreamReader<R: Read> {
    input: R,
    /// Bytes of the stream not read yet (the file's size minus the offset, minus what was read).
    left: u64,
    /// The header's version: RAMP sections only in [`VERSION_LIVE`].
    version: u32,
    /// A section header read past the last RAMP section, for the next call.
    pending: Option<(Tag, u64)>,
}

impl<R: Read> StreamReader<R> {
    /// Checks the header. `len` is how many bytes the stream can have at most (what the file holds).
    pub fn new(mut input: R, len: u64) -> Result<Self, StateError> {
        let mut header = [0u8; 16];
        if len < 16 {
            return Err(StateError::Truncated("the header".into()));
        }
        read_exact(&mut input, &mut header, "the header")?;
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&header[..8]);
        if magic != MAGIC {
            return Err(StateError::Foreign(magic));
        }
        let found = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if found != VERSION && found != VERSION_LIVE {
            return Err(StateError::Version { found });
        }
        Ok(StreamReader {
            input,
            left: len - 16,
            version: found,
            pending: None,
        })
    }

    /// The next section's tag and length; the length is checked against what the stream has left.
    pub fn next_section(&mut self) -> Result<(Tag, u64), StateError> {
        if let Some(pending) = self.pending.take() {
            return Ok(pending);
        }
        let mut head = [0u8; 12];
        if self.left < 12 {
            return Err(StateError::Truncated("a section header".into()));
        }
        read_exact(&mut self.input, &mut head, "a section header")?;
        self.left -= 12;
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&head[..4]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[4..]);
        let len = u64::from_le_bytes(len);
        if len > self.left {
            return Err(StateError::Truncated(format!(
                "section {} ({len} bytes, {} left in the file)",
                tag_name(tag),
                self.left
            )));
        }
        Ok((tag, len))
    }

    /// The next section, which must be `tag`; its payload (small sections only).
    pub fn expect(&mut self, tag: Tag) -> Result<Vec<u8>, StateError> {
        let (found, len) = self.next_section()?;
        if found != tag {
            return Err(StateError::Corrupt(format!(
                "expected section {}, found {}",
                tag_name(tag),
                tag_name(found)
            )));
        }
        if len > MAX_SMALL_SECTION {
            return Err(StateError::Corrupt(format!(
                "section {} is {len} bytes, more than the {MAX_SMALL_SECTION} it can be",
                tag_name(tag)
            )));
        }
        let mut payload = vec![0u8; len as usize];
        read_exact(&mut self.input, &mut payload, &tag_name(tag))?;
        self.left -= len;
        Ok(payload)
    }

    /// Guest RAM into `mem`: the RAM section, whose regions must be exactly the saved ones, or
    /// (version 2) the RAMP sections up to the next other one.
    pub fn ram(&mut self, mem: &GuestRam) -> Result<(), StateError> {
        let (tag, len) = self.next_section()?;
        if tag == TAG_PAGES && self.version == VERSION_LIVE {
            let mut len = len;
            loop {
                self.pages(mem, len)?;
                let (next, next_len) = self.next_section()?;
                if next != TAG_PAGES {
                    self.pending = Some((next, next_len));
                    return Ok(());
                }
                len = next_len;
            }
        }
        if tag != TAG_RAM {
            return Err(StateError::Corrupt(format!(
                "expected section RAM, found {}",
                tag_name(tag)
            )));
        }
        let mut section = Limited {
            input: &mut self.input,
            left: len,
        };
        let mut word = [0u8; 8];
        let mut count = [0u8; 4];
        read_exact(&mut section, &mut count, "the RAM section")?;
        let count = u32::from_le_bytes(count) as usize;
        let ours = crate::memory::host_regions(mem);
        if count != ours.len() {
            return Err(StateError::Mismatch(format!(
                "the saved RAM has {count} regions, this VM has {}",
                ours.len()
            )));
        }
        for (start, size, host) in ours {
            read_exact(&mut section, &mut word, "the RAM section")?;
            let saved_start = u64::from_le_bytes(word);
            read_exact(&mut section, &mut word, "the RAM section")?;
            let saved_size = u64::from_le_bytes(word);
            if saved_start != start || saved_size != size {
                return Err(StateError::Mismatch(format!(
                    "saved RAM region {saved_start:#x}+{saved_size:#x}, this VM has {start:#x}+{size:#x} \
                     (is the memory size the same?)"
                )));
            }
            let pages = size.div_ceil(PAGE);
            let mut bitmap = vec![0u8; (pages.div_ceil(64) * 8) as usize];
            read_exact(&mut section, &mut bitmap, "the RAM page bitmap")?;
            let bytes = ram_slice(host, size);
            // Runs of stored pages go straight from the file into RAM.
            for run in stored_runs(pages, |n| bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0) {
                read_exact(
                    &mut section,
                    &mut bytes[page_range(run, size)],
                    "the RAM pages",
                )?;
            }
        }
        if section.left != 0 {
            return Err(StateError::Corrupt(format!(
                "{} bytes left over at the end of the RAM section",
                section.left
            )));
        }
        self.left -= len;
        Ok(())
    }

    /// One RAMP section of `len` bytes, into `mem`: every run must lie inside one region of RAM.
    fn pages(&mut self, mem: &GuestRam, len: u64) -> Result<(), StateError> {
        if len > MAX_SMALL_SECTION {
            return Err(StateError::Corrupt(format!(
                "section RAMP is {len} bytes, more than the {MAX_SMALL_SECTION} it can be"
            )));
        }
        let mut payload = vec![0u8; len as usize];
        read_exact(&mut self.input, &mut payload, "RAMP")?;
        self.left -= len;
        let mut runs = Decoder::new(&payload, "section RAMP");
        while !runs.bytes.is_empty() {
            let address = runs.u64("a run's address")?;
            let count = runs.u32("a run's page count")?;
            let kind = runs.u32("a run's kind")?;
            let bytes = u64::from(count) * PAGE;
            if address % PAGE != 0 || count == 0 {
                return Err(StateError::Corrupt(format!(
                    "section RAMP has a run of {count} pages at {address:#x} (not a page boundary, or empty)"
                )));
            }
            let slice = usize::try_from(bytes)
                .ok()
                .and_then(|len| mem.get_slice(GuestAddress(address), len).ok())
                .ok_or_else(|| {
                    StateError::Mismatch(format!(
                        "section RAMP has {count} pages at {address:#x}, not inside one region \
                         of this VM's RAM (is the memory size the same?)"
                    ))
                })?;
            match kind {
                PAGES_DATA => slice.copy_from(runs.take(bytes as usize, "a run's pages")?),
                PAGES_ZERO => {
                    for at in (0..bytes).step_by(PAGE as usize) {
                        if let Ok(page) = slice.subslice(at as usize, PAGE as usize) {
                            page.copy_from(&ZERO_PAGE[..]);
                        }
                    }
                }
                other => {
                    return Err(StateError::Corrupt(format!(
                        "section RAMP has a run of kind {other} (0: data, 1: zero pages)"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The END section: the stream is complete.
    pub fn finish(mut self) -> Result<(), StateError> {
        let end = self.expect(TAG_END)?;
        if !end.is_empty() {
            return Err(StateError::Corrupt("the END section is not empty".into()));
        }
        Ok(())
    }
}

/// A reader that ends after `left` bytes (a section's payload).
struct Limited<'a, R: Read> {
    input: &'a mut R,
    left: u64,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.input.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Builds a binary payload: fixed-width little-endian numbers and length-prefixed blobs.
#[derive(Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.0.extend_from_slice(bytes);
        self
    }
    /// A KVM structure, as its bytes.
    pub fn kvm<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, v: &T) -> &mut Self {
        self.blob(v.as_bytes())
    }
}

/// Reads what [`Encoder`] built; running out or a blob of the wrong size is an error naming `what`.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8], what: &'a str) -> Self {
        Decoder { bytes, what }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], StateError> {
        if self.bytes.len() < n {
            return Err(StateError::Truncated(format!("{} ({field})", self.what)));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u32(&mut self, field: &str) -> Result<u32, StateError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, field: &str) -> Result<u64, StateError> {
        let b = self.take(8, field)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    pub fn blob(&mut self, field: &str) -> Result<&'a [u8], StateError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// A KVM structure; its blob must be exactly the structure's size.
    pub fn kvm<T: zerocopy::FromBytes>(&mut self, field: &str) -> Result<T, StateError> {
        let blob = self.blob(field)?;
        T::read_from_bytes(blob).map_err(|_| {
            StateError::Corrupt(format!(
                "{} ({field}): {} bytes, expected {}",
                self.what,
                blob.len(),
                std::mem::size_of::<T>()
            ))
        })
    }

    /// Nothing may be left.
    pub fn end(self) -> Result<(), StateError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StateError::Corrupt(format!(
                "{} has {} bytes too many",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, MemoryOptions};
    use vm_memory::{Bytes, GuestAddress};

    fn sample(mem: &GuestRam) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        w.section(TAG_MACHINE, b"{\"vcpus\":1}").unwrap();
        w.ram(mem).unwrap();
        let mut e = Encoder::default();
        e.u32(7).u64(u64::MAX).kvm(&kvm_bindings::kvm_regs {
            rip: 0x1234,
            ..Default::default()
        });
        w.section(TAG_VCPU, &e.0).unwrap();
        w.finish().unwrap()
    }

    fn memory() -> GuestRam {
        let mem = create_guest_memory(32, MemoryOptions::default()).unwrap();
        mem.write_slice(b"first page", GuestAddress(0)).unwrap();
        mem.write_obj(0xfeed_u64, GuestAddress(5 * PAGE + 8))
            .unwrap();
        mem.write_obj(0xbeef_u64, GuestAddress((32 << 20) - 8))
            .unwrap();
        mem
    }

    fn read_all(bytes: &[u8], mem: &GuestRam) -> Result<(), StateError> {
        let mut r = StreamReader::new(bytes, bytes.len() as u64)?;
        assert_eq!(r.expect(TAG_MACHINE)?, b"{\"vcpus\":1}");
        r.ram(mem)?;
        let vcpu = r.expect(TAG_VCPU)?;
        let mut d = Decoder::new(&vcpu, "vCPU 0");
        assert_eq!(d.u32("a")?, 7);
        assert_eq!(d.u64("b")?, u64::MAX);
        let regs: kvm_bindings::kvm_regs = d.kvm("regs")?;
        assert_eq!(regs.rip, 0x1234);
        d.end()?;
        r.finish()
    }

    #[test]
    fn round_trip_restores_ram_and_leaves_zero_pages_out() {
        let mem = memory();
        let bytes = sample(&mem);
        // Three pages hold data: the stream is far smaller than the 32 MiB of RAM.
        assert!(bytes.len() < 4 * PAGE as usize + 4096, "{}", bytes.len());
        let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
        read_all(&bytes, &copy).unwrap();
        let mut a = vec![0u8; 32 << 20];
        let mut b = vec![0u8; 32 << 20];
        mem.read_slice(&mut a, GuestAddress(0)).unwrap();
        copy.read_slice(&mut b, GuestAddress(0)).unwrap();
        assert!(a == b);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mem = memory();
        let bytes = sample(&mem);
        let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
        for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            let err = read_all(&bytes[..len], &copy).unwrap_err();
            assert!(
                matches!(err, StateError::Truncated(_)),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn foreign_data_and_other_versions_are_refused() {
        let mem = memory();
        let mut bytes = sample(&mem);
        let mut foreign = bytes.clone();
        foreign[..8].copy_from_slice(b"QEVM\0\0\0\x03");
        let err = read_all(&foreign, &mem).unwrap_err();
        assert!(
            err.to_string().contains("not an oxvirt-vmm state stream"),
            "{err}"
        );
        bytes[8] = 3;
        let err = read_all(&bytes, &mem).unwrap_err();
        assert!(matches!(err, StateError::Version { found: 3 }), "{err}");
        assert!(err.to_string().contains("reads versions 1 and 2"), "{err}");
    }

    #[test]
    fn lengths_beyond_the_file_or_the_limits_are_refused() {
        let mem = memory();
        let bytes = sample(&mem);
        // The MACH section's length says 1 TiB.
        let mut long = bytes.clone();
        long[20..28].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = read_all(&long, &mem).unwrap_err();
        assert!(err.to_string().contains("left in the file"), "{err}");
        // A KVM structure's blob claims more bytes than the section has.
        let mut e = Encoder::default();
        e.u32(u32::MAX);
        let mut d = Decoder::new(&e.0, "vCPU 0");
        assert!(matches!(
            d.kvm::<kvm_bindings::kvm_regs>("regs"),
            Err(StateError::Truncated(_))
        ));
        // The right length for another structure.
        let mut e = Encoder::default();
        e.blob(&[0u8; 8]);
        let mut d = Decoder::new(&e.0, "vCPU 0");
        let err = d.kvm::<kvm_bindings::kvm_regs>("regs").unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
    }

    proptest::proptest! {
        // Each case maps and scans 64 MiB of RAM.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A damaged stream (a byte changed, cut anywhere) is read or refused, never a panic.
        #[test]
        fn damaged_streams_never_panic(
            at in 0usize..1 << 16,
            value in proptest::prelude::any::<u8>(),
            cut in 0usize..1 << 16,
        ) {
            let mem = memory();
            let mut bytes = sample(&mem);
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(cut.max(1));
            let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
            let mut r = match StreamReader::new(&bytes[..], bytes.len() as u64) {
                Ok(r) => r,
                Err(_) => return Ok(()),
            };
            let _ = r.expect(TAG_MACHINE).and_then(|_| r.ram(&copy));
        }
    }

    /// A live stream: all pages once, then page 0 zeroed and pages 5 and 6 rewritten, as a
    /// second pass sends them; then a vCPU section.
    fn live_sample(mem: &GuestRam) -> Vec<u8> {
        let mut w = StreamWriter::live(Vec::new()).unwrap();
        w.section(TAG_MACHINE, b"{\"vcpus\":1}").unwrap();
        w.pages(mem, &PageSet::all(mem), ZeroPages::Omit).unwrap();
        mem.write_slice(&[0u8; 16], GuestAddress(0)).unwrap();
        mem.write_slice(&[0x5a; 2 * PAGE as usize], GuestAddress(5 * PAGE))
            .unwrap();
        let mut again = PageSet::empty(mem);
        again.add(0, &[0b110_0001]);
        assert_eq!(again.count(), 3);
        w.pages(mem, &again, ZeroPages::Send).unwrap();
        let mut e = Encoder::default();
        e.u32(7).u64(u64::MAX).kvm(&kvm_bindings::kvm_regs {
            rip: 0x1234,
            ..Default::default()
        });
        w.section(TAG_VCPU, &e.0).unwrap();
        w.finish().unwrap()
    }

    fn same_ram(a: &GuestRam, b: &GuestRam) -> bool {
        let mut x = vec![0u8; 32 << 20];
        let mut y = vec![0u8; 32 << 20];
        a.read_slice(&mut x, GuestAddress(0)).unwrap();
        b.read_slice(&mut y, GuestAddress(0)).unwrap();
        x == y
    }

    #[test]
    fn a_live_stream_restores_the_last_version_of_every_page() {
        let mem = memory();
        let bytes = live_sample(&mem);
        // Three stored pages in the first pass, two in the second, one zero run.
        assert!(bytes.len() < 6 * PAGE as usize + 4096, "{}", bytes.len());
        // The destination's RAM is not always zero where the source's became zero.
        let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
        copy.write_slice(b"stale", GuestAddress(0)).unwrap();
        read_all(&bytes, &copy).unwrap();
        assert!(same_ram(&mem, &copy));
        let mut first = [0u8; 10];
        copy.read_slice(&mut first, GuestAddress(0)).unwrap();
        assert_eq!(first, [0u8; 10]);
        for len in (0..bytes.len()).step_by(331).chain([bytes.len() - 1]) {
            let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
            let err = read_all(&bytes[..len], &copy).unwrap_err();
            assert!(
                matches!(err, StateError::Truncated(_)),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn page_sections_only_in_a_live_stream_and_only_inside_ram() {
        let mem = memory();
        let mut bytes = live_sample(&mem);
        let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
        // The same sections under a saved state's version.
        let mut saved = bytes.clone();
        saved[8] = 1;
        let err = read_all(&saved, &copy).unwrap_err();
        assert!(
            err.to_string().contains("expected section RAM, found RAMP"),
            "{err}"
        );
        // The first run's address (after the header, MACH and RAMP's own header) moved past RAM.
        let run = 16 + 12 + 11 + 12;
        assert_eq!(&bytes[run..run + 8], &0u64.to_le_bytes());
        bytes[run..run + 8].copy_from_slice(&(32u64 << 20).to_le_bytes());
        let err = read_all(&bytes, &copy).unwrap_err();
        assert!(matches!(err, StateError::Mismatch(_)), "{err}");
        assert!(err.to_string().contains("not inside one region"), "{err}");
        bytes[run..run + 8].copy_from_slice(&100u64.to_le_bytes());
        let err = read_all(&bytes, &copy).unwrap_err();
        assert!(err.to_string().contains("not a page boundary"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A damaged live stream is read or refused, never a panic.
        #[test]
        fn damaged_live_streams_never_panic(
            at in 0usize..1 << 16,
            value in proptest::prelude::any::<u8>(),
            cut in 0usize..1 << 16,
        ) {
            let mem = memory();
            let mut bytes = live_sample(&mem);
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(cut.max(1));
            let copy = create_guest_memory(32, MemoryOptions::default()).unwrap();
            let mut r = match StreamReader::new(&bytes[..], bytes.len() as u64) {
                Ok(r) => r,
                Err(_) => return Ok(()),
            };
            let _ = r
                .expect(TAG_MACHINE)
                .and_then(|_| r.ram(&copy))
                .and_then(|_| r.expect(TAG_VCPU))
                .and_then(|_| r.finish());
        }
    }

    #[test]
    fn ram_of_another_size_is_a_mismatch() {
        let mem = memory();
        let bytes = sample(&mem);
        let other = create_guest_memory(64, MemoryOptions::default()).unwrap();
        let err = read_all(&bytes, &other).unwrap_err();
        assert!(matches!(err, StateError::Mismatch(_)), "{err}");
    }
}
