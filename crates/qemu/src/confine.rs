//! Least privilege for QEMU (docs/security.md, "QEMU (qemu engine)").
//!
//! A confined QEMU gets, from its first instruction on:
//! - `NoNewPrivs` (`prctl(PR_SET_NO_NEW_PRIVS)` before exec): nothing it execs can gain
//!   privileges, and the seccomp filter below needs no CAP_SYS_ADMIN to stay;
//! - QEMU's own seccomp filter ([`SANDBOX_ARGS`]): no obsolete system calls, no set*uid, no
//!   fork/exec, no scheduler or priority changes (oxvirtd pins QEMU's threads from outside);
//! - when [`Confinement::user`] names one, an unprivileged uid/gid of its own and no other
//!   groups but those listed: the files it needs are lent to that user for the run (the
//!   daemon's relabeling), everything else of the host is as closed to it as to any user.

/// QEMU's seccomp sandbox as a confined QEMU runs it. `resourcecontrol=deny` blocks
/// sched_setaffinity and setpriority inside QEMU: `<vcpupin>`, `<emulatorpin>` and
/// `<iothreadpin>` are applied by oxvirtd from outside, and QEMU's own `thread-context`
/// objects are not used.
pub const SANDBOX_ARGS: [&str; 2] = [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

/// How a QEMU is confined (see the module documentation). Without one
/// ([`crate::LaunchOptions::confinement`] `None`, oxvirtd's `--no-sandbox`) QEMU runs as
/// oxvirtd's user with no sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// The user QEMU runs as; `None` keeps oxvirtd's (root's).
    pub user: Option<GuestUser>,
}

/// An unprivileged identity for one QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. /dev/kvm's, the group of shareable disks); all others go.
    pub groups: Vec<u32>,
}

/// Applies `confinement` to the calling process: meant for the forked child just before it
/// execs QEMU, so it only makes async-signal-safe system calls on data prepared before the
/// fork.
pub(crate) fn apply_in_child(confinement: &Confinement) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(user) = &confinement.user {
        // Groups first: once the uid is dropped, nothing can be changed any more.
        // SAFETY: `groups` is a live slice and its length is passed with it.
        if unsafe { libc::setgroups(user.groups.len(), user.groups.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: setresgid and setresuid take integers only.
        if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } != 0
            || unsafe { libc::setresuid(user.uid, user.uid, user.uid) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
