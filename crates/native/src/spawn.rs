//! Starting the VMM process: fork and exec by hand, because the jail (`oxvirt_vmm::jail`) needs
//! the VMM to be the first process of a new PID namespace, which only its creator can arrange
//! (`clone` with `CLONE_NEWPID`; `unshare` would move only the children of the caller), and
//! std's `Command` offers no clone flags. The VMM stays the daemon's child with the pid the
//! daemon records: its exit status, its vCPU threads, its CPU time and its cgroups are all
//! found from that pid, as without a jail.
//!
//! The rest of the jail is the VMM's own doing: only it knows what it must open before.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// What the child failed at, as a byte after the errno on the status pipe.
const FAILED_DUP: u8 = 1;
const FAILED_SETSID: u8 = 2;
const FAILED_EXEC: u8 = 3;

/// Runs `program args` with stdin on /dev/null, stdout and stderr on the given descriptors, in
/// its own session (so it outlives the daemon and its terminal), and, with
/// `new_pid_namespace`, as PID 1 of a new PID namespace. Returns its pid once it has been
/// exec'd (an exec failure is this call's error).
pub(crate) fn spawn(
    program: &Path,
    args: &[&std::ffi::OsStr],
    stdout: OwnedFd,
    stderr: OwnedFd,
    new_pid_namespace: bool,
) -> io::Result<u32> {
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
    };
    // Everything the child uses is made here: between clone and exec only async-signal-safe
    // calls on memory prepared before are allowed (the daemon has other threads).
    let path = cstring(program.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for arg in args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let null = std::fs::File::open("/dev/null")?;
    let (status_read, status_write) = pipe_cloexec()?;

    let mut flags = libc::SIGCHLD as libc::c_long;
    if new_pid_namespace {
        flags |= libc::CLONE_NEWPID as libc::c_long;
    }
    // SAFETY: clone without CLONE_VM and without a stack is fork: the child gets a copy of this
    // address space. It then only makes the async-signal-safe calls below on memory prepared
    // above, and execs or exits.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child of the clone above: async-signal-safe calls only, then exec or
        // _exit; the pointers are to the argv, environment and descriptors prepared before.
        unsafe {
            child(
                &path,
                &argv_ptrs,
                [null.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
                status_write.as_raw_fd(),
            )
        }
    }
    drop(status_write);
    drop(null);
    drop(stdout);
    drop(stderr);
    // The child's end closes at exec (CLOEXEC): nothing read means it has exec'd.
    let mut report = [0u8; 5];
    let read = read_full(&status_read, &mut report)?;
    let pid = pid as u32;
    if read == 0 {
        return Ok(pid);
    }
    // It failed before exec and exits: reap it here, nobody else will.
    let mut status = 0;
    // SAFETY: waitpid writes only `status`, a valid local; `pid` is our unreaped child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    let errno = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let step = match report[4] {
        FAILED_DUP => "redirecting its output",
        FAILED_SETSID => "setsid",
        _ => "exec",
    };
    let source = io::Error::from_raw_os_error(errno);
    Err(io::Error::new(source.kind(), format!("{step}: {source}")))
}

/// The child's side: descriptors 0-2, a new session, a clean signal mask, exec.
///
/// # Safety
/// Only in the child of a fork-like clone; `argv` is NULL-terminated.
unsafe fn child(
    path: &CString,
    argv: &[*const libc::c_char],
    stdio: [libc::c_int; 3],
    status: libc::c_int,
) -> ! {
    let fail = |step: u8| -> ! {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 5];
        report[..4].copy_from_slice(&errno.to_ne_bytes());
        report[4] = step;
        libc::write(status, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    };
    for (target, fd) in stdio.iter().enumerate() {
        // dup2 clears CLOEXEC on the copy; the originals close at exec.
        if libc::dup2(*fd, target as libc::c_int) < 0 {
            fail(FAILED_DUP);
        }
    }
    if libc::setsid() < 0 {
        fail(FAILED_SETSID);
    }
    // The daemon's mask and ignored signals are not the VMM's (std's Command resets them too).
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    libc::execve(path.as_ptr(), argv.as_ptr(), environ);
    fail(FAILED_EXEC)
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or end of file; the count read.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads into the unfilled part of `buf`, which is valid for that length.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> (std::fs::File, OwnedFd, OwnedFd) {
        let file = tempfile::tempfile().unwrap();
        let out = OwnedFd::from(file.try_clone().unwrap());
        let err = OwnedFd::from(file.try_clone().unwrap());
        (file, out, err)
    }

    fn wait(pid: u32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`; `pid` is this test's child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_child_is_pid_1_of_its_namespace() {
        use std::io::{Read, Seek};
        let (mut file, out, err) = output();
        let script = "echo pid=$$; echo to-stderr >&2; exit 7";
        let pid = spawn(
            Path::new("/bin/sh"),
            &["-c".as_ref(), script.as_ref()],
            out,
            err,
            true,
        )
        .unwrap();
        assert_eq!(wait(pid), 7);
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        assert!(text.contains("pid=1\n"), "{text}");
        assert!(text.contains("to-stderr"), "{text}");
    }

    #[test]
    fn an_exec_failure_is_the_callers_error() {
        let (_file, out, err) = output();
        let error = spawn(Path::new("/nonexistent/oxvirt-vmm"), &[], out, err, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        assert!(error.to_string().starts_with("exec:"), "{error}");
    }
}
