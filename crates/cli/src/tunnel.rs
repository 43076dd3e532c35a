//! `oxvirt tunnel-socket SOCKET` (hidden plumbing): what an `oxvirt+ssh://` connection runs on
//! the destination host through ssh (docs/migration.md, "Over SSH"), as libvirt's `nc -U` or
//! virt-ssh-helper: it copies its stdin to oxvirtd's socket and the socket's replies to its
//! stdout, so the source's HTTP reaches that socket. It reads nothing itself: oxvirtd checks
//! what comes, and whoever ssh logged in as must be able to open the socket.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context;

/// Runs until oxvirtd closes the connection (after the caller's stdin ended, or on its own).
pub fn run(socket: &Path) -> anyhow::Result<()> {
    let to_daemon = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to oxvirtd at {}", socket.display()))?;
    let from_daemon = to_daemon
        .try_clone()
        .context("cannot use the socket's connection twice")?;
    // stdin -> socket on a thread of its own: its end (EOF) is passed on as a shutdown of the
    // socket's write side, so oxvirtd sees the end of the stream while it may still answer.
    std::thread::spawn(move || {
        let mut to_daemon = to_daemon;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_daemon);
        let _ = to_daemon.shutdown(Shutdown::Write);
    });
    let mut from_daemon = from_daemon;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // (Not io::copy: each chunk goes out at once, stdout's buffer would hold replies back.)
        let n = match from_daemon.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("reading from oxvirtd"),
        };
        stdout
            .write_all(&buf[..n])
            .and_then(|()| stdout.flush())
            .context("writing to the ssh connection")?;
    }
    Ok(())
}
