//! The jail: what `oxvirt-vmm` does to itself once it has opened everything of the host its VM
//! uses ([`crate::resources`]) and before it sets up the VM (`VmConfig::jail`,
//! docs/native-vmm.md "The jail"):
//!
//! 1. checks it is the first process of a new PID namespace (only a launcher can put a process
//!    there: oxvirtd's native engine starts it so), and that it has no thread yet (namespaces
//!    and mounts below would apply to the calling thread only);
//! 2. new mount and IPC namespaces, and a new, empty network namespace (its TAPs are open);
//! 3. an empty read-only tmpfs on the jail directory becomes its root (`pivot_root`), the old
//!    root is detached: no file of the host is left to name, no device node either;
//! 4. resource limits: open files, and the largest file it may write (its disks may grow, its
//!    saved state is as large as guest RAM); a write beyond fails (`SIGXFSZ` is ignored);
//! 5. no supplementary groups, the jail's gid and uid (real, effective and saved, so no way
//!    back), then no new privileges;
//!
//! and then the VM is built, and each thread installs its seccomp filter (`crate::seccomp`) as
//! before. This runs before any KVM setup or parsing of a saved state, so a guest's data is only
//! ever handled by the confined process. Like Firecracker's jailer in purpose; unlike it, the
//! VMM jails itself, because only it knows what it must open first.

use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::protocol::{DiskConfig, JailConfig, VmConfig};
use crate::resources::HostResources;

/// Open descriptors a jailed VMM may have: far above what the largest VM needs (a few per
/// vCPU, per virtio queue and per API client), far below the host's default hard limit.
pub const MAX_OPEN_FILES: u64 = 1024;
/// Room above the data a file may legitimately reach: qcow2 metadata, the saved state's
/// device sections and its manager's header before it.
const FILE_SIZE_SLACK: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: {0}")]
    Refused(String),
    #[error("jail: {step}: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

fn check(step: &'static str, rc: libc::c_int) -> Result<(), JailError> {
    if rc < 0 {
        return Err(JailError::Step {
            step,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The resource limits of a jailed VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`: the largest file the VM may write, its saved state or one of its disks.
    pub file_size: u64,
}

impl Limits {
    /// The limits of the VM `config` with its disks opened (their sizes decide).
    pub fn of(config: &VmConfig, resources: &HostResources) -> Limits {
        let state = (config.memory.size_mib << 20).saturating_add(FILE_SIZE_SLACK);
        let disks = config
            .disks
            .iter()
            .zip(&resources.disks)
            .filter(|(d, _)| !d.readonly)
            .map(|(d, disk)| disk_file_limit(d, disk.size()))
            .max()
            .unwrap_or(0);
        Limits {
            open_files: MAX_OPEN_FILES,
            file_size: state.max(disks),
        }
    }
}

/// What a writable disk's file may grow to: what it holds now plus all of its virtual size
/// (a qcow2 image allocates as the guest writes), with a 1/64 margin for qcow2's tables.
fn disk_file_limit(disk: &DiskConfig, virtual_size: u64) -> u64 {
    let now = std::fs::metadata(&disk.path).map_or(0, |m| m.len());
    now.saturating_add(virtual_size)
        .saturating_add(virtual_size / 64)
        .saturating_add(FILE_SIZE_SLACK)
}

/// Enters the jail (the steps of the module's description). On error the process is in an
/// unknown state of confinement: the caller must not start the VM.
pub fn enter(jail: &JailConfig, limits: Limits) -> Result<(), JailError> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if jail.pid_namespace && pid != 1 {
        return Err(JailError::Refused(format!(
            "oxvirt-vmm (pid {pid}) is not the first process of a new PID namespace: its \
             launcher must create one (oxvirtd does; by hand: unshare --pid --fork oxvirt-vmm ...)"
        )));
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|source| JailError::Step {
            step: "reading /proc/self/task",
            source,
        })?
        .count();
    if threads != 1 {
        return Err(JailError::Refused(format!(
            "the VMM has {threads} threads already; it must enter the jail before it starts any"
        )));
    }
    let root = path_c(&jail.root)?;

    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
    if jail.net_namespace {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare takes flags only; the process is single-threaded (checked above).
    check("unshare", unsafe { libc::unshare(flags) })?;
    // Nothing mounted from here on may reach the host's mount namespace.
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    mount(
        Some(c"oxvirt-jail"),
        &root,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"size=4k,nr_inodes=16,mode=0555"),
    )?;
    // SAFETY: chdir reads a NUL-terminated path that lives across the call.
    check("chdir to the jail", unsafe { libc::chdir(root.as_ptr()) })?;
    change_root()?;
    mount(
        None,
        c"/",
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;

    // A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the VMM.
    // SAFETY: installing SIG_IGN runs no code of ours.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(JailError::Step {
            step: "ignoring SIGXFSZ",
            source: io::Error::last_os_error(),
        });
    }
    set_limit(libc::RLIMIT_NOFILE, limits.open_files, "RLIMIT_NOFILE")?;
    set_limit(libc::RLIMIT_FSIZE, limits.file_size, "RLIMIT_FSIZE")?;

    // SAFETY: an empty list: the pointer is not read.
    check("setgroups", unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain integers.
    check("setresgid", unsafe {
        libc::setresgid(jail.gid, jail.gid, jail.gid)
    })?;
    // SAFETY: plain integers.
    check("setresuid", unsafe {
        libc::setresuid(jail.uid, jail.uid, jail.uid)
    })?;
    // SAFETY: plain integers.
    check("no_new_privs", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    Ok(())
}

/// Makes the current directory (the jail's tmpfs) the root, with the host's tree out of reach.
fn change_root() -> Result<(), JailError> {
    // pivot_root(".", "."): the old root ends up stacked on the new one, and is detached next
    // (pivot_root(2)'s own recipe); no directory for it is needed in the read-only root.
    // SAFETY: pivot_root reads two NUL-terminated paths; no memory of ours is kept.
    let pivoted = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } == 0;
    if pivoted {
        // SAFETY: umount2 reads a NUL-terminated path.
        check("detaching the old root", unsafe {
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
        })?;
    } else {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(JailError::Step {
                step: "pivot_root",
                source: err,
            });
        }
        // The root is the initial ramfs (a host running from its initramfs, as the nested
        // lab's L1 does), which pivot_root cannot move (pivot_root(2)): the jail's tmpfs is
        // moved over it instead and becomes the root by chroot. The tree below stays out of
        // reach: going back needs CAP_SYS_CHROOT or CAP_SYS_ADMIN, which the drop of uid
        // takes away.
        mount(Some(c"."), c"/", None, libc::MS_MOVE, None)?;
        // SAFETY: chroot reads a NUL-terminated path.
        check("chroot", unsafe { libc::chroot(c".".as_ptr()) })?;
    }
    // SAFETY: chdir reads a NUL-terminated path.
    check("chdir to /", unsafe { libc::chdir(c"/".as_ptr()) })
}

fn set_limit(
    resource: libc::__rlimit_resource_t,
    value: u64,
    step: &'static str,
) -> Result<(), JailError> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads one valid rlimit.
    check(step, unsafe { libc::setrlimit(resource, &limit) })
}

fn path_c(path: &Path) -> Result<CString, JailError> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| JailError::Refused(format!("{} has a NUL byte", path.display())))
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> Result<(), JailError> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: mount reads NUL-terminated strings (or null where allowed) that live across the
    // call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check("mount", rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_disk_may_grow_by_its_virtual_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.qcow2");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let disk = DiskConfig::new(&path);
        assert_eq!(
            disk_file_limit(&disk, 64 << 30),
            4096 + (64 << 30) + (1 << 30) + FILE_SIZE_SLACK
        );
    }

    #[test]
    fn outside_a_new_pid_namespace_the_jail_is_refused_before_anything_changes() {
        let jail = JailConfig {
            root: "/nonexistent".into(),
            uid: 1000,
            gid: 1000,
            pid_namespace: true,
            net_namespace: true,
        };
        let limits = Limits {
            open_files: 16,
            file_size: 1,
        };
        let err = enter(&jail, limits).unwrap_err().to_string();
        assert!(
            err.contains("not the first process of a new PID namespace"),
            "{err}"
        );
    }
}
