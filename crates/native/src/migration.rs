//! A paused guest's machine state over a migration's connection (docs/migration.md, "The native
//! engine"). The VMM saves into a seekable file only (its save seeks and syncs), so the source
//! sends the state stream of the file it saved ([`crate::VmmClient::save_state`], in oxvirtd's
//! save image: from an offset), and the destination spools it into a file of its own that
//! [`crate::Supervisor::launch_restoring`] restores from, as from any save.
//!
//! ```text
//! "OXVMMIG1" (8 bytes), the state's length u64 LE, then that many bytes of the state stream
//! ```
//!
//! The length makes a cut connection an error here ("ended after N of M bytes") rather than a
//! truncated state for the VMM to find.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::NativeError;

/// The first bytes of the connection.
pub const MAGIC: [u8; 8] = *b"OXVMMIG1";
/// How much goes in one write (and between two looks at the abort flag).
const CHUNK: usize = 1 << 20;
/// How long the destination waits for the next bytes before it gives up on the source.
pub const RECEIVE_IDLE: Duration = Duration::from_secs(60);
/// What the state holds beside the guest's RAM: the page bitmap, vCPUs, devices (kilobytes to
/// a few MiB; this bound only refuses a length no save of this guest could have).
const STATE_OVERHEAD: u64 = 64 << 20;

/// How a [`send_state`] goes, shared with whoever follows it (`domjobinfo`) or aborts it.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Bytes of the state sent so far.
    pub sent: AtomicU64,
    /// The state's length, once known.
    pub total: AtomicU64,
    /// Set to stop the transfer at the next chunk.
    pub abort: AtomicBool,
}

/// The largest state a guest of `memory_kib` KiB can have.
pub fn state_limit(memory_kib: u64) -> u64 {
    memory_kib
        .saturating_mul(1024)
        .saturating_add(STATE_OVERHEAD)
}

/// Sends the `len` bytes of state stream at `offset` in the file `state` into `out`, at most
/// `bytes_per_second` if given, counting in `transfer`.
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
    let sending = |e| NativeError::io("cannot send the machine state to the destination", e);
    out.write_all(&MAGIC).map_err(sending)?;
    out.write_all(&total.to_le_bytes()).map_err(sending)?;
    let started = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < total {
        if transfer.abort.load(Ordering::SeqCst) {
            return Err(NativeError::io(
                "the machine state's transfer",
                std::io::Error::new(std::io::ErrorKind::Interrupted, "aborted"),
            ));
        }
        let n = file
            .read(&mut buf)
            .map_err(|e| NativeError::io(format!("cannot read {}", state.display()), e))?;
        if n == 0 {
            return Err(NativeError::io(
                format!("cannot read {}", state.display()),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("it ended after {sent} of {total} bytes"),
                ),
            ));
        }
        out.write_all(&buf[..n]).map_err(sending)?;
        sent += n as u64;
        transfer.sent.store(sent, Ordering::SeqCst);
        if let Some(rate) = bytes_per_second.filter(|rate| *rate > 0) {
            // Sleep until the bytes sent fit the rate: the limit holds over the whole transfer.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    out.flush().map_err(sending)
}

/// Receives a state [`send_state`] sent from `input` into the new file `into` (mode 0600),
/// refusing one longer than `limit` bytes; returns its length. A short stream is an error naming
/// how much came; `into` is left for the caller to remove either way.
pub fn receive_state(input: &mut impl Read, into: &Path, limit: u64) -> Result<u64, NativeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let receiving = |e| NativeError::io("cannot receive the machine state from the source", e);
    let mut header = [0u8; 16];
    input.read_exact(&mut header).map_err(receiving)?;
    if header[..8] != MAGIC {
        return Err(NativeError::io(
            "the migration stream",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "it starts with {:02x?}, not a native guest's state (\"OXVMMIG1\")",
                    &header[..8]
                ),
            ),
        ));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[8..]);
    let total = u64::from_le_bytes(length);
    if total > limit {
        return Err(NativeError::io(
            "the migration stream",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("its state is {total} bytes, more than this guest's can be ({limit})"),
            ),
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(into)
        .map_err(|e| NativeError::io(format!("cannot create {}", into.display()), e))?;
    let copied = std::io::copy(&mut input.take(total), &mut file).map_err(receiving)?;
    if copied != total {
        return Err(NativeError::io(
            "cannot receive the machine state from the source",
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the stream ended after {copied} of {total} bytes"),
            ),
        ));
    }
    file.sync_all()
        .map_err(|e| NativeError::io(format!("cannot write {}", into.display()), e))?;
    Ok(total)
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
/// writes of [`send_state`] and [`receive_state`] on a thread of their own.
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
        drop(a);
        assert_eq!(receiver.join().unwrap().unwrap(), bytes.len() as u64);
        assert_eq!(std::fs::read(&into).unwrap(), bytes);
        assert_eq!(transfer.sent.load(Ordering::SeqCst), bytes.len() as u64);
        assert_eq!(transfer.total.load(Ordering::SeqCst), bytes.len() as u64);
    }

    #[test]
    fn a_cut_stream_a_foreign_one_and_an_oversized_one_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // The length says 1000, 10 bytes come.
        let mut cut = MAGIC.to_vec();
        cut.extend_from_slice(&1000u64.to_le_bytes());
        cut.extend_from_slice(&[1; 10]);
        let err = receive_state(&mut cut.as_slice(), &dir.path().join("a"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ended after 10 of 1000 bytes"), "{err}");

        let foreign = b"QEVM\0\0\0\x03xxxxxxxx".to_vec();
        let err = receive_state(&mut foreign.as_slice(), &dir.path().join("b"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a native guest's state"), "{err}");
        assert!(!dir.path().join("b").exists());

        let mut big = MAGIC.to_vec();
        big.extend_from_slice(&(2u64 << 20).to_le_bytes());
        let err = receive_state(&mut big.as_slice(), &dir.path().join("c"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than this guest's can be"), "{err}");
    }

    #[test]
    fn an_abort_stops_the_sending_and_the_rate_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = state_file(dir.path(), 2 * CHUNK);
        let transfer = Transfer::default();
        transfer.abort.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        let len = 2 * CHUNK as u64;
        let err = send_state(&path, 0, len, &mut out, None, &transfer).unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        assert_eq!(out.len(), 16, "only the header went");

        // 2 MiB at 4 MiB/s: about half a second, not at once.
        let transfer = Transfer::default();
        let started = Instant::now();
        let mut out = Vec::new();
        send_state(&path, 0, len, &mut out, Some(4 << 20), &transfer).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.len(), 16 + 2 * CHUNK);

        // From an offset: what follows a save image's header.
        let transfer = Transfer::default();
        let mut out = Vec::new();
        send_state(&path, 100, 50, &mut out, None, &transfer).unwrap();
        assert_eq!(&out[16..], &std::fs::read(&path).unwrap()[100..150]);
        assert_eq!(&out[8..16], &50u64.to_le_bytes());
    }
}
