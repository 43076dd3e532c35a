//! Where a running VM keeps its sockets, logs and pid file.

use std::path::{Path, PathBuf};

use crate::QemuError;

/// The per-VM run directory. Everything QEMU creates for one VM lives in it, under fixed names,
/// so a restarted daemon finds a running guest again from the directory alone: what QEMU
/// itself makes (its sockets and pid file) in the subdirectory [`RunPaths::qemu_dir`], which a
/// QEMU running as a guest user owns, the rest (logs, the daemon's own files) beside it, out
/// of that user's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
    /// Whether QEMU's console log goes through a log writer's FIFO ([`RunPaths::with_log_pipes`]).
    log_pipes: bool,
}

/// The log files' names in the run directory (the log writer is given names, not paths).
pub(crate) const CONSOLE_LOG: &str = "console.log";
pub(crate) const CONSOLE_LOG_PIPE: &str = "console.pipe";
pub(crate) const QEMU_LOG: &str = "qemu.log";

/// `sun_path` in `struct sockaddr_un` holds 108 bytes including the terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 107;

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunPaths {
            dir: dir.into(),
            log_pipes: false,
        }
    }

    /// Where QEMU makes its sockets and pid file: owned by the guest's user when QEMU runs as
    /// one (the run directory itself stays root's).
    pub fn qemu_dir(&self) -> PathBuf {
        self.dir.join("qemu")
    }

    /// Where QEMU makes the file of huge-page guest RAM (`<hugepages/>`, not memfd): a
    /// directory of its own on the hugetlbfs mount, named as the run directory is, that a QEMU
    /// running as a guest user owns (the mount's root is root's).
    pub fn hugepages_dir(&self) -> PathBuf {
        let name = self.dir.file_name().unwrap_or_else(|| "vm".as_ref());
        Path::new(crate::cmdline::HUGEPAGES_MOUNT)
            .join("oxvirt")
            .join(name)
    }

    /// Where a sandboxed QEMU's private /dev is put together before it moves onto /dev in
    /// QEMU's mount namespace (`devns`): an empty directory, root's, on the host.
    pub fn dev_staging(&self) -> PathBuf {
        self.dir.join("dev")
    }

    /// QMP (control monitor) socket; QEMU listens on it.
    pub fn qmp_socket(&self) -> PathBuf {
        self.qemu_dir().join("qmp.sock")
    }

    /// Serial console socket; QEMU listens, one console client at a time.
    pub fn console_socket(&self) -> PathBuf {
        self.qemu_dir().join("console.sock")
    }

    /// Everything the guest wrote on its serial console (appended across restarts).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join(CONSOLE_LOG)
    }

    /// The same paths, for a QEMU whose logs go through a log writer (`launch_with_logs`): its
    /// console log is then written into [`RunPaths::console_log_pipe`].
    pub fn with_log_pipes(mut self) -> Self {
        self.log_pipes = true;
        self
    }

    /// The FIFO the log writer reads the console log from (it writes `console.log`); removed
    /// once QEMU has opened it, so only during a start does it exist.
    pub fn console_log_pipe(&self) -> PathBuf {
        self.dir.join(CONSOLE_LOG_PIPE)
    }

    /// What QEMU's console chardev writes its log into (`logfile=`): `console.log` itself, or
    /// the log writer's FIFO.
    pub fn console_log_target(&self) -> PathBuf {
        if self.log_pipes {
            self.console_log_pipe()
        } else {
            self.console_log()
        }
    }

    /// QEMU's own stdout and stderr (appended across restarts).
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join(QEMU_LOG)
    }

    /// QEMU writes its pid here.
    pub fn pid_file(&self) -> PathBuf {
        self.qemu_dir().join("qemu.pid")
    }

    /// VNC server socket, used when a `<graphics type='vnc'>` has a socket listen (or none at all).
    pub fn vnc_socket(&self) -> PathBuf {
        self.qemu_dir().join("vnc.sock")
    }

    /// The value of the secret a network disk's `<auth>` names, for QEMU's `secret` object
    /// (`-object secret,file=`): written by the daemon at start (mode 0600), read once by
    /// QEMU. A file keeps the value out of QEMU's command line, which every user can read in
    /// /proc. `dev` is the disk's target name.
    pub fn disk_secret_file(&self, dev: &str) -> PathBuf {
        self.dir.join(format!("secret-{dev}"))
    }

    /// The sockets QEMU listens on must fit in `sockaddr_un`; say so clearly rather than let QEMU fail.
    pub(crate) fn check_socket_path(path: &Path) -> Result<(), QemuError> {
        let len = path.as_os_str().len();
        if len > UNIX_SOCKET_PATH_MAX {
            return Err(QemuError::invalid_run_dir(
                format!(
                    "socket path {} is {len} bytes, longer than the {UNIX_SOCKET_PATH_MAX} a UNIX socket allows",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_socket_paths(&self) -> Result<(), QemuError> {
        Self::check_socket_path(&self.qmp_socket())?;
        Self::check_socket_path(&self.console_socket())?;
        Self::check_socket_path(&self.vnc_socket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_inside_the_dir() {
        let run = RunPaths::new("/run/oxvirt/vm1");
        assert_eq!(run.qmp_socket(), Path::new("/run/oxvirt/vm1/qemu/qmp.sock"));
        assert_eq!(
            run.console_socket(),
            Path::new("/run/oxvirt/vm1/qemu/console.sock")
        );
        assert_eq!(run.console_log(), Path::new("/run/oxvirt/vm1/console.log"));
        assert_eq!(run.qemu_log(), Path::new("/run/oxvirt/vm1/qemu.log"));
        assert_eq!(run.pid_file(), Path::new("/run/oxvirt/vm1/qemu/qemu.pid"));
    }

    #[test]
    fn overlong_socket_path_is_an_error() {
        let run = RunPaths::new(format!("/tmp/{}", "x".repeat(120)));
        let err = run.check_socket_paths().unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        assert!(RunPaths::new("/tmp/short").check_socket_paths().is_ok());
    }
}
