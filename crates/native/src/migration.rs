//! A native guest's machine state over a migration's connection (docs/migration.md, "The native
//! engine"), one framing for both ways it is made:
//! - paused: the VMM saves into a seekable file only (its save seeks and syncs), so the source
//!   sends the state stream of the file it saved ([`crate::VmmClient::save_state`], in oxvirtd's
//!   save image: from an offset) with [`send_state`];
//! - live: the VMM writes the stream into a socket while the guest runs
//!   ([`crate::VmmClient::migrate_send`]), and the source relays what comes out of the socket's
//!   other end with [`relay_state`], its length unknown until it ends.
//!
//! The destination spools it into a file of its own that [`crate::Supervisor::launch_restoring`]
//! restores from, as from any save.
//!
//! ```text
//! "OXVMMIG2" (8 bytes), then chunks: a length u32 LE and that many bytes of the state stream;
//! a chunk of length 0 ends it
//! ```
//!
//! The end chunk makes a cut connection an error here ("ended after N bytes, before its end")
//! rather than a truncated state for the VMM to find; the source sends it only once the state
//! is whole (a live stream: once the VMM said so).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::NativeError;

/// The first bytes of the connection.
pub const MAGIC: [u8; 8] = *b"OXVMMIG2";
/// How much goes in one chunk (and between two looks at the abort flag).
const CHUNK: usize = 1 << 20;
/// How long the destination waits for the next bytes before it gives up on the source.
pub const RECEIVE_IDLE: Duration = Duration::from_secs(60);
/// What the state holds beside the guest's RAM: the page bitmap, vCPUs, devices (kilobytes to
/// a few MiB; this bound only refuses a length no save of this guest could have).
const STATE_OVERHEAD: u64 = 64 << 20;
/// How many times its RAM a guest's state may be. A saved state holds RAM once; a live one
/// holds every pass over it, but the VMM stops iterating before its passes while the guest runs
/// would have sent more than 3 x RAM, and the last (paused) pass sends RAM at most once more.
const RAM_PASSES: u64 = 4;

/// How a [`send_state`] or [`relay_state`] goes, shared with whoever follows it (`domjobinfo`)
/// or aborts it.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Bytes of the state sent so far.
    pub sent: AtomicU64,
    /// The state's length, once known (0: not known, as a live stream's until it ended).
    pub total: AtomicU64,
    /// Set to stop the transfer at the next chunk.
    pub abort: AtomicBool,
}

/// The largest state a guest of `memory_kib` KiB can have: 4 x RAM + 64 MiB (see
/// [`RAM_PASSES`]).
pub fn state_limit(memory_kib: u64) -> u64 {
    memory_kib
        .saturating_mul(1024)
        .saturating_mul(RAM_PASSES)
        .saturating_add(STATE_OVERHEAD)
}

/// The error of a transfer stopped by [`Transfer::abort`].
fn aborted() -> NativeError {
    NativeError::io(
        "the machine state's transfer",
        std::io::Error::new(std::io::ErrorKind::Interrupted, "aborted"),
    )
}

fn sending(e: std::io::Error) -> NativeError {
    NativeError::io("cannot send the machine state to the destination", e)
}

/// Writes the chunks of one transfer into `out`: at most `bytes_per_second` if given, counted
/// in `transfer`, stopped by its abort flag.
struct ChunkWriter<'a, W: Write> {
    out: &'a mut W,
    bytes_per_second: Option<u64>,
    transfer: &'a Transfer,
    started: Instant,
    sent: u64,
}

impl<'a, W: Write> ChunkWriter<'a, W> {
    /// Writes the magic.
    fn start(
        out: &'a mut W,
        bytes_per_second: Option<u64>,
        transfer: &'a Transfer,
    ) -> Result<Self, NativeError> {
        out.write_all(&MAGIC).map_err(sending)?;
        Ok(ChunkWriter {
            out,
            bytes_per_second: bytes_per_second.filter(|rate| *rate > 0),
            transfer,
            started: Instant::now(),
            sent: 0,
        })
    }

    /// One chunk of `bytes` (not empty, at most [`CHUNK`]).
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), NativeError> {
        if self.transfer.abort.load(Ordering::SeqCst) {
            return Err(aborted());
        }
        let len = u32::try_from(bytes.len())
            .map_err(|_| sending(std::io::Error::other("a chunk longer than 4 GiB")))?;
        self.out.write_all(&len.to_le_bytes()).map_err(sending)?;
        self.out.write_all(bytes).map_err(sending)?;
        self.sent += bytes.len() as u64;
        self.transfer.sent.store(self.sent, Ordering::SeqCst);
        if let Some(rate) = self.bytes_per_second {
            // Sleep until the bytes sent fit the rate: the limit holds over the whole transfer.
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    }
}

/// Writes the end chunk into `out` (the connection to the destination), once the state sent
/// into it is whole: [`send_state`] does it itself, a live stream's relay ([`relay_state`])
/// leaves it to its caller, who knows when the VMM completed the stream.
pub fn end_state(out: &mut impl Write) -> Result<(), NativeError> {
    out.write_all(&0u32.to_le_bytes()).map_err(sending)?;
    out.flush().map_err(sending)
}

/// Sends the `total` bytes of state stream at `offset` in the file `state` into `out`, then its
/// end, at most `bytes_per_second` if given, counting in `transfer`.
pub fn send_state(
    state: &Path,
    offset: u64,
    total: u64,
    out: &mut impl Write,
    bytes_per_second: Option<u64>,
    transfer: &Transfer,
) -> Result<(), NativeError> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(state)
        .map_err(|e| NativeError::io(format!("cannot open {}", state.display()), e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| NativeError::io(format!("cannot read {}", state.display()), e))?;
    let mut file = file.take(total);
    transfer.total.store(total, Ordering::SeqCst);
    let mut writer = ChunkWriter::start(out, bytes_per_second, transfer)?;
    let mut buf = vec![0u8; CHUNK];
    while writer.sent < total {
        let n = file
            .read(&mut buf)
            .map_err(|e| NativeError::io(format!("cannot read {}", state.display()), e))?;
        if n == 0 {
            return Err(NativeError::io(
                format!("cannot read {}", state.display()),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("it ended after {} of {total} bytes", writer.sent),
                ),
            ));
        }
        writer.chunk(&buf[..n])?;
    }
    end_state(out)
}

/// Relays a live state stream: what comes out of `input` (the VMM's socket, until it closes)
/// goes into `out` in chunks, at most `bytes_per_second` if given, counting in `transfer`;
/// returns the bytes relayed. The end chunk is not written: only the VMM's answer says whether
/// the stream is whole ([`end_state`] then ends it); a destination that does not get it
/// refuses the state.
pub fn relay_state(
    input: &mut impl Read,
    out: &mut impl Write,
    bytes_per_second: Option<u64>,
    transfer: &Transfer,
) -> Result<u64, NativeError> {
    let mut writer = ChunkWriter::start(out, bytes_per_second, transfer)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(writer.sent),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(NativeError::io(
                    "cannot read the machine state from the VMM",
                    e,
                ))
            }
        };
        writer.chunk(&buf[..n])?;
    }
}

/// Receives a state [`send_state`] or [`relay_state`] sent from `input` into the new file
/// `into` (mode 0600), refusing one longer than `limit` bytes; returns its length. A stream
/// that stops before its end chunk is an error naming how much came; `into` is left for the
/// caller to remove either way.
pub fn receive_state(input: &mut impl Read, into: &Path, limit: u64) -> Result<u64, NativeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let receiving = |e| NativeError::io("cannot receive the machine state from the source", e);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(receiving)?;
    if magic != MAGIC {
        return Err(NativeError::io(
            "the migration stream",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it starts with {magic:02x?}, not a native guest's state (\"OXVMMIG2\")"),
            ),
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(into)
        .map_err(|e| NativeError::io(format!("cannot create {}", into.display()), e))?;
    let cut = |received: u64| {
        NativeError::io(
            "cannot receive the machine state from the source",
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the stream ended after {received} bytes of state, before its end"),
            ),
        )
    };
    let mut received = 0u64;
    loop {
        let mut length = [0u8; 4];
        match input.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(cut(received)),
            Err(e) => return Err(receiving(e)),
        }
        let len = u64::from(u32::from_le_bytes(length));
        if len == 0 {
            break;
        }
        if received.saturating_add(len) > limit {
            return Err(NativeError::io(
                "the migration stream",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "its state goes past {limit} bytes, more than this guest's can be \
                         ({received} came, then a chunk of {len})"
                    ),
                ),
            ));
        }
        let copied = std::io::copy(&mut input.by_ref().take(len), &mut file).map_err(receiving)?;
        received += copied;
        if copied != len {
            return Err(cut(received));
        }
    }
    file.sync_all()
        .map_err(|e| NativeError::io(format!("cannot write {}", into.display()), e))?;
    Ok(received)
}

/// Receives the state from the connection `stream` into `into` (see [`receive_state`]) on a
/// blocking thread; the source silent for [`RECEIVE_IDLE`] fails it.
pub async fn receive_from(
    stream: BorrowedFd<'_>,
    into: &Path,
    limit: u64,
) -> Result<u64, NativeError> {
    let owned = stream
        .try_clone_to_owned()
        .map_err(|e| NativeError::io("cannot duplicate the migration connection", e))?;
    set_receive_timeout(&owned, RECEIVE_IDLE)
        .map_err(|e| NativeError::io("cannot set the migration connection's timeout", e))?;
    // The daemon's async side made it non-blocking (the flag is the connection's, shared by
    // the duplicate); nothing else reads it any more.
    set_blocking(&owned)
        .map_err(|e| NativeError::io("cannot make the migration connection blocking", e))?;
    let into = into.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // read(2) on the socket: a File is the plain descriptor, whatever kind of socket it is.
        let mut input = std::fs::File::from(owned);
        receive_state(&mut input, &into, limit)
    })
    .await
    .map_err(|e| NativeError::io("the migration's receiving thread", std::io::Error::other(e)))?
}

/// Clears O_NONBLOCK on `fd` (a connection an async runtime made), for the blocking reads and
/// writes of [`send_state`], [`relay_state`] and [`receive_state`] on a thread of their own.
pub fn set_blocking(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: fcntl's F_GETFL/F_SETFL read and set the descriptor's flags; no memory involved.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SO_RCVTIMEO on the socket `fd`.
fn set_receive_timeout(fd: &impl AsRawFd, timeout: Duration) -> std::io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from `value`, which lives across
    // the call; a descriptor that is not a socket is an error, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&value as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.join("out.state");
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    /// The framing of `chunks` (their lengths and bytes), with the end chunk if `end`.
    fn framed(chunks: &[&[u8]], end: bool) -> Vec<u8> {
        let mut stream = MAGIC.to_vec();
        for chunk in chunks {
            stream.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            stream.extend_from_slice(chunk);
        }
        if end {
            stream.extend_from_slice(&0u32.to_le_bytes());
        }
        stream
    }

    #[test]
    fn the_state_arrives_whole_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = state_file(dir.path(), 3 * CHUNK + 123);
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let transfer = Transfer::default();
        let into = dir.path().join("in.state");
        let receiver = {
            let into = into.clone();
            std::thread::spawn(move || receive_state(&mut b, &into, 1 << 30))
        };
        let len = bytes.len() as u64;
        send_state(&path, 0, len, &mut a, None, &transfer).unwrap();
        // The end chunk, not the connection's end, completes it: `a` is still open here.
        assert_eq!(receiver.join().unwrap().unwrap(), bytes.len() as u64);
        assert_eq!(std::fs::read(&into).unwrap(), bytes);
        assert_eq!(transfer.sent.load(Ordering::SeqCst), bytes.len() as u64);
        assert_eq!(transfer.total.load(Ordering::SeqCst), bytes.len() as u64);
        drop(a);
    }

    #[test]
    fn a_live_stream_is_relayed_as_it_comes_and_ends_only_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..2 * CHUNK + 77).map(|i| (i % 253) as u8).collect();
        // The VMM's socket: written in odd pieces, its length known to nobody up front.
        let (mut vmm, mut from_vmm) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = {
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                for piece in bytes.chunks(300_001) {
                    vmm.write_all(piece).unwrap();
                }
            })
        };
        let (mut to_d, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
        let into = dir.path().join("in.state");
        let receiver = {
            let into = into.clone();
            std::thread::spawn(move || receive_state(&mut d, &into, 1 << 30))
        };
        let transfer = Transfer::default();
        let relayed = relay_state(&mut from_vmm, &mut to_d, None, &transfer).unwrap();
        writer.join().unwrap();
        assert_eq!(relayed, bytes.len() as u64);
        assert_eq!(transfer.sent.load(Ordering::SeqCst), relayed);
        assert_eq!(
            transfer.total.load(Ordering::SeqCst),
            0,
            "no total is made up"
        );
        end_state(&mut to_d).unwrap();
        assert_eq!(receiver.join().unwrap().unwrap(), relayed);
        assert_eq!(std::fs::read(&into).unwrap(), bytes);

        // The VMM gave up midway (its socket closed, no end chunk): the destination refuses
        // what came, naming how much.
        let (mut to_d, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
        let receiver = {
            let into = dir.path().join("cut.state");
            std::thread::spawn(move || receive_state(&mut d, &into, 1 << 30))
        };
        let relayed =
            relay_state(&mut &bytes[..5000], &mut to_d, None, &Transfer::default()).unwrap();
        assert_eq!(relayed, 5000);
        drop(to_d);
        let err = receiver.join().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("ended after 5000 bytes of state, before its end"),
            "{err}"
        );
    }

    #[test]
    fn a_cut_stream_a_foreign_one_and_an_oversized_one_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A chunk of 1000 announced, 10 bytes come.
        let mut cut = framed(&[&[2; 20]], false);
        cut.extend_from_slice(&1000u32.to_le_bytes());
        cut.extend_from_slice(&[1; 10]);
        let err = receive_state(&mut cut.as_slice(), &dir.path().join("a"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended after 30 bytes of state"), "{err}");
        // Cut between two chunks, and within a length.
        let between = framed(&[&[2; 20]], false);
        let err = receive_state(&mut between.as_slice(), &dir.path().join("a2"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended after 20 bytes of state"), "{err}");
        let mut within = framed(&[&[2; 20]], false);
        within.extend_from_slice(&[5, 0]);
        let err = receive_state(&mut within.as_slice(), &dir.path().join("a3"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended after 20 bytes of state"), "{err}");

        let foreign = b"QEVM\0\0\0\x03xxxxxxxx".to_vec();
        let err = receive_state(&mut foreign.as_slice(), &dir.path().join("b"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a native guest's state"), "{err}");
        assert!(!dir.path().join("b").exists());
        // The paused migration's framing of before is foreign too.
        let old = b"OXVMMIG1\x10\0\0\0\0\0\0\0".to_vec();
        let err = receive_state(&mut old.as_slice(), &dir.path().join("b2"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a native guest's state"), "{err}");

        // Chunks adding up past the limit: refused at the chunk that would pass it.
        let big = framed(&[&[3; 600], &[4; 600]], true);
        let err = receive_state(&mut big.as_slice(), &dir.path().join("c"), 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than this guest's can be"), "{err}");
        assert!(err.contains("600 came, then a chunk of 600"), "{err}");
        // Exactly the limit is fine.
        let full = framed(&[&[3; 600], &[4; 400]], true);
        assert_eq!(
            receive_state(&mut full.as_slice(), &dir.path().join("d"), 1000).unwrap(),
            1000
        );
    }

    #[test]
    fn the_limit_is_four_times_ram_and_some() {
        assert_eq!(state_limit(256 << 10), (4 << 30) / 4 + (64 << 20));
        assert_eq!(state_limit(u64::MAX), u64::MAX);
    }

    #[test]
    fn an_abort_stops_the_sending_and_the_rate_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = state_file(dir.path(), 2 * CHUNK);
        let transfer = Transfer::default();
        transfer.abort.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        let len = 2 * CHUNK as u64;
        let err = send_state(&path, 0, len, &mut out, None, &transfer).unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        assert_eq!(out.len(), 8, "only the magic went");
        let mut out = Vec::new();
        let err = relay_state(&mut bytes.as_slice(), &mut out, None, &transfer).unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        assert_eq!(out.len(), 8, "only the magic went");

        // 2 MiB at 4 MiB/s: about half a second, not at once; the same for a relay.
        let transfer = Transfer::default();
        let started = Instant::now();
        let mut out = Vec::new();
        send_state(&path, 0, len, &mut out, Some(4 << 20), &transfer).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.len(), 8 + 2 * (4 + CHUNK) + 4);
        let started = Instant::now();
        let mut out = Vec::new();
        relay_state(
            &mut bytes.as_slice(),
            &mut out,
            Some(4 << 20),
            &Transfer::default(),
        )
        .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );

        // From an offset: what follows a save image's header.
        let transfer = Transfer::default();
        let mut out = Vec::new();
        send_state(&path, 100, 50, &mut out, None, &transfer).unwrap();
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(out, framed(&[&whole[100..150]], true));
    }
}
