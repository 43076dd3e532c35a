//! The saved-state stream: one running microVM's whole machine state (guest RAM, every vCPU's KVM state,
//! the in-kernel interrupt controllers, PIT and clock, the platform devices, every PCI function), written
//! by the control request `save` and read back by a VMM started with [`crate::protocol::RestoreSource`].
//!
//! This module owns the format; what each section holds is captured and restored where that state lives
//! ([`crate::kvm_state`] for KVM, each device module for its device, `oxvirt-virtio` for the transport).
//!
//! ```text
//! header   "OXVMSTAT" (8 bytes), version u32 LE (1), reserved u32 (0)
//! section  tag (4 ASCII bytes), length u64 LE, payload of `length` bytes
//!          MACH  JSON: what the VM was built from (memory size, vCPUs, devices); must match the config
//!          RAM   guest RAM (see below)
//!          VMST  in-kernel irqchip (PIC master, PIC slave, IOAPIC), PIT, KVM clock
//!          VCPU  one per vCPU, in index order
//!          DEVS  JSON: serial, CMOS, PM, i8042, the PCI configuration address latch
//!          PCIF  one per PCI slot, in slot order: that function's own bytes
//!          END.  length 0: the stream is complete
//! RAM      u32 region count; per region: guest address u64, size u64, a bitmap of its 4 KiB pages
//!          (u64 words, bit set = page stored), then the stored pages in address order. Pages that are
//!          all zero are not stored: the new VM's RAM starts zeroed.
//! ```
//!
//! Reading checks everything: a foreign file, another version, a truncated stream, a length beyond the
//! file or beyond what the configuration allows are errors naming what is wrong, never a panic.

use std::io::{self, Read, Write};

use oxvirt_virtio::GuestRam;

/// The first bytes of a stream.
pub const MAGIC: [u8; 8] = *b"OXVMSTAT";
/// The format version this VMM writes and reads.
pub const VERSION: u32 = 1;
/// Guest page size for the zero-page bitmap.
pub const PAGE: u64 = 4096;
const ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];
/// Largest section other than RAM: JSON device state and KVM structures are kilobytes.
const MAX_SMALL_SECTION: u64 = 16 << 20;

/// A section's tag.
pub type Tag = [u8; 4];
pub const TAG_MACHINE: Tag = *b"MACH";
pub const TAG_RAM: Tag = *b"RAM ";
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
    #[error("state stream version {found}; this oxvirt-vmm reads version {VERSION}")]
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
    pub fn new(mut out: W) -> Result<Self, StateError> {
        out.write_all(&MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(StreamWriter { out })
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
        if found != VERSION {
            return Err(StateError::Version { found });
        }
        Ok(StreamReader {
            input,
            left: len - 16,
        })
    }

    /// The next section's tag and length; the length is checked against what the stream has left.
    pub fn next_section(&mut self) -> Result<(Tag, u64), StateError> {
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

    /// The RAM section, into `mem`, whose regions must be exactly the saved ones.
    pub fn ram(&mut self, mem: &GuestRam) -> Result<(), StateError> {
        let (tag, len) = self.next_section()?;
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
        bytes[8] = 2;
        let err = read_all(&bytes, &mem).unwrap_err();
        assert!(matches!(err, StateError::Version { found: 2 }), "{err}");
        assert!(err.to_string().contains("reads version 1"), "{err}");
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

    #[test]
    fn ram_of_another_size_is_a_mismatch() {
        let mem = memory();
        let bytes = sample(&mem);
        let other = create_guest_memory(64, MemoryOptions::default()).unwrap();
        let err = read_all(&bytes, &other).unwrap_err();
        assert!(matches!(err, StateError::Mismatch(_)), "{err}");
    }
}
