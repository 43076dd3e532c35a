//! The per-guest log writer, virtlogd's job: one small process per running guest that copies
//! the guest's output from pipes into [`RotatingFile`]s.
//!
//! Why a process of its own: the files must keep filling while oxvirtd restarts (a restart
//! never stops a guest, nor its logging), and the VM's process (QEMU) must not write them
//! itself, or nothing could cap them. So the engine starts the writer just before the VM, in
//! its own session (double fork, as the VM), and gives the VM pipes instead of files:
//!
//! - the VM's stdout and stderr: an anonymous pipe, the writer's stdin. When every write end is
//!   closed, that is when the VM has exited, the writer drains the rest and exits;
//! - any number of FIFOs (QEMU's `-chardev ...,logfile=` is a path it opens for writing): the
//!   writer holds each open read-write, so it never sees an end of file there and QEMU's open
//!   never waits.
//!
//! The program is whatever the caller says (oxvirtd runs itself in a hidden mode, see
//! `oxvirtd __guest-log-writer`); [`run`] is that mode's body.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{RotatingFile, Rotation};

/// How to run the log writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterProgram {
    /// The executable, and the arguments that put it in writer mode (before [`run`]'s own).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub rotation: Rotation,
}

/// A started writer.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    /// The write end of the writer's stdin pipe, for the VM's stdout and stderr (close-on-exec;
    /// `Command::stdout` makes the VM's copy inheritable). Drop it once the VM is spawned.
    pub output: OwnedFd,
}

impl WriterProgram {
    /// Starts a writer in its own session, in the directory `dir` (a guest's run directory):
    /// what is written to [`Started::output`] goes to the file `output_log`; for each
    /// `(fifo, log)`, the FIFO is made (a stale file of that name is replaced) and what is
    /// written into it goes to the file `log`. The names are relative to `dir`, so the
    /// writer's command line names no guest: a search for the processes whose command line
    /// names a guest (its UUID, its run directory) finds its VM alone.
    pub fn start(
        &self,
        dir: &Path,
        output_log: &str,
        fifos: &[(&str, &str)],
    ) -> std::io::Result<Started> {
        for name in [output_log]
            .into_iter()
            .chain(fifos.iter().flat_map(|(fifo, log)| [*fifo, *log]))
        {
            if name.is_empty() || name.contains('/') {
                return Err(std::io::Error::other(format!(
                    "log writer file '{name}' is not a plain name"
                )));
            }
        }
        for (fifo, _) in fifos {
            make_fifo(&dir.join(fifo))?;
        }
        let mut args = self.args.clone();
        args.push(self.rotation.max_size.to_string());
        args.push(self.rotation.max_backups.to_string());
        args.push(output_log.to_string());
        for (fifo, log) in fifos {
            args.push(fifo.to_string());
            args.push(log.to_string());
        }
        let (reader, writer) = cloexec_pipe()?;
        let (pid_reader, pid_writer) = cloexec_pipe()?;
        let pid_writer_fd = pid_writer.as_raw_fd();
        let mut command = Command::new(&self.program);
        command
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::from(reader))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (setsid, fork, write, _exit) on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    // The grandchild execs the writer; its parent is init (or a subreaper).
                    0 => Ok(()),
                    grandchild => {
                        let bytes = grandchild.to_ne_bytes();
                        let written =
                            libc::write(pid_writer_fd, bytes.as_ptr().cast(), bytes.len());
                        libc::_exit(if written == bytes.len() as isize {
                            0
                        } else {
                            1
                        });
                    }
                }
            });
        }
        let status = command.spawn()?.wait()?;
        drop(pid_writer);
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "starting the log writer {}: the forking child failed ({status})",
                self.program.display()
            )));
        }
        let mut bytes = [0u8; 4];
        File::from(pid_reader).read_exact(&mut bytes)?;
        Ok(Started {
            pid: i32::from_ne_bytes(bytes),
            output: writer,
        })
    }
}

fn make_fifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a FIFO path with a NUL byte"))?;
    // SAFETY: mkfifo reads a NUL-terminated path and touches nothing else.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds points to two writable c_ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One input and the file it fills.
struct Input {
    fd: OwnedFd,
    file: RotatingFile,
}

/// The writer mode: `MAX_SIZE MAX_BACKUPS OUTPUT_LOG [FIFO LOG]...` (as
/// [`WriterProgram::start`] passes them), stdin being the VM's output pipe. Returns the exit
/// status: 0 once the VM's output pipe closed and everything was written, 2 on bad arguments
/// or files that cannot be opened (the VM then finds its FIFO without a reader: QEMU's open
/// of it waits, and the engine's start times out naming the VM, not silently logging nowhere).
pub fn run(args: &[String]) -> i32 {
    match setup(args) {
        Ok(mut inputs) => {
            copy(&mut inputs);
            0
        }
        Err(err) => {
            eprintln!("oxvirt log writer: {err}");
            2
        }
    }
}

fn setup(args: &[String]) -> Result<Vec<Input>, String> {
    let usage = "usage: MAX_SIZE MAX_BACKUPS OUTPUT_LOG [FIFO LOG]...";
    let [max_size, max_backups, output_log, fifos @ ..] = args else {
        return Err(usage.into());
    };
    if fifos.len() % 2 != 0 {
        return Err(usage.into());
    }
    let rotation = Rotation {
        max_size: max_size
            .parse()
            .map_err(|_| format!("bad size '{max_size}'"))?,
        max_backups: max_backups
            .parse()
            .map_err(|_| format!("bad backup count '{max_backups}'"))?,
    };
    // SAFETY: signal() with SIG_IGN installs no handler code; a hang-up of a terminal this
    // process never had must not end it.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let open = |path: &str| {
        RotatingFile::open(Path::new(path), rotation).map_err(|e| format!("opening {path}: {e}"))
    };
    // SAFETY: fd 0 is this process's stdin, which the launcher made the VM's output pipe;
    // nothing else in this process owns it.
    let stdin = unsafe { OwnedFd::from_raw_fd(0) };
    set_nonblocking(&stdin).map_err(|e| format!("stdin: {e}"))?;
    let mut inputs = vec![Input {
        fd: stdin,
        file: open(output_log)?,
    }];
    for pair in fifos.chunks(2) {
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&pair[0])
            .map_err(|e| format!("opening FIFO {}: {e}", pair[0]))?;
        inputs.push(Input {
            fd: fifo.into(),
            file: open(&pair[1])?,
        });
    }
    Ok(inputs)
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process owns, with integer arguments only.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What one read found.
enum Got {
    Data,
    Empty,
    End,
}

fn read_into(input: &mut Input, buf: &mut [u8]) -> Got {
    // SAFETY: buf is a valid writable buffer of buf.len() bytes; the descriptor is owned.
    let n = unsafe { libc::read(input.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => Got::End,
        n if n > 0 => {
            input.file.write_stream(&buf[..n as usize]);
            if let Some(err) = input.file.take_error() {
                input
                    .file
                    .write_stream(format!("\noxvirt log writer: {err}\n").as_bytes());
            }
            Got::Data
        }
        _ => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Got::Empty,
            // Anything else: treat the input as ended rather than spin on it.
            _ => Got::End,
        },
    }
}

/// Copies until the VM's output pipe (input 0) ends, then drains the FIFOs.
fn copy(inputs: &mut [Input]) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut open: Vec<bool> = vec![true; inputs.len()];
    loop {
        let mut polls: Vec<libc::pollfd> = inputs
            .iter()
            .zip(&open)
            .filter(|(_, open)| **open)
            .map(|(input, _)| libc::pollfd {
                fd: input.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polls is a valid array of polls.len() pollfd structs.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        polls.retain(|p| p.revents != 0);
        for poll in polls {
            let Some(index) = inputs.iter().position(|i| i.fd.as_raw_fd() == poll.fd) else {
                continue;
            };
            // Read what is there now (a few reads at most per round, so no input starves).
            for _ in 0..16 {
                match read_into(&mut inputs[index], &mut buf) {
                    Got::Data => continue,
                    Got::Empty => break,
                    Got::End => {
                        open[index] = false;
                        break;
                    }
                }
            }
        }
        if !open[0] {
            break;
        }
    }
    // The VM is gone: what it wrote into the FIFOs before it exited is still buffered there.
    for input in inputs.iter_mut().skip(1) {
        while let Got::Data = read_into(input, &mut buf) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The writer mode run in a thread of the test, fed as a VM would feed it.
    #[test]
    fn copies_pipe_and_fifo_until_the_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.pipe");
        make_fifo(&fifo).unwrap();
        let out_log = dir.path().join("qemu.log");
        let console_log = dir.path().join("console.log");
        let (reader, writer) = cloexec_pipe().unwrap();
        let rotation = Rotation {
            max_size: 200,
            max_backups: 2,
        };
        set_nonblocking(&reader).unwrap();
        let mut inputs = vec![
            Input {
                fd: reader,
                file: RotatingFile::open(&out_log, rotation).unwrap(),
            },
            Input {
                fd: std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo)
                    .unwrap()
                    .into(),
                file: RotatingFile::open(&console_log, rotation).unwrap(),
            },
        ];
        let thread = std::thread::spawn(move || copy(&mut inputs));
        let mut console = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut output = File::from(writer);
        for i in 0..100 {
            console
                .write_all(format!("line {i:04}\n").as_bytes())
                .unwrap();
        }
        output.write_all(b"qemu: warning\n").unwrap();
        drop(output);
        thread.join().unwrap();
        assert_eq!(std::fs::read(&out_log).unwrap(), b"qemu: warning\n");
        let text = String::from_utf8(crate::read_all(&console_log, 2).unwrap()).unwrap();
        let numbers: Vec<u32> = text
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().unwrap())
            .collect();
        let first = numbers[0];
        assert!(first > 0);
        assert_eq!(numbers, (first..100).collect::<Vec<_>>());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(run(&[]), 2);
        assert_eq!(run(&["x".into(), "1".into(), "/tmp/x".into()]), 2);
    }
}
