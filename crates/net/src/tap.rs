//! Persistent TAP devices through `/dev/net/tun`: the network layer creates them, and oxvirtd opens
//! them for QEMU ([`open_tap`]) and hands over the descriptors (`-netdev tap,fd=N`, or `fds=` and
//! QMP `getfd` when plugged in), as libvirt does: a confined QEMU has no /dev/net/tun.
//!
//! A multiqueue device (`IFF_MULTI_QUEUE`) is one the kernel lets several files attach to, one per queue pair;
//! the flag is fixed when the device is created and every later attach must give it too (else TUNSETIFF fails
//! with EINVAL). So a guest NIC with `<driver queues='N'/>`, N > 1, needs its TAP created multiqueue: QEMU then
//! gets it opened N times (`-netdev tap,fds=A:B:...`).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::NetError;

/// `_IOW('T', 202, int)`: attach the file to a (new or existing) TUN/TAP device.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 203, int)`: keep the device when the file is closed.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// `_IOW('T', 204, int)`: only this uid (or CAP_NET_ADMIN) may attach to the device.
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// The kernel's limit on the queues of one TUN/TAP device (`MAX_TAP_QUEUES`).
pub const MAX_TAP_QUEUES: u32 = 256;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags at the start of the 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Creates a persistent TAP device named `name`, which may contain one `%d` for the kernel to number it
/// (`oxtap%d`), for `queues` queue pairs (1: an ordinary single-queue TAP; more: a multiqueue one). Returns the
/// device's real name. The device is down and not attached to anything.
pub fn create_persistent_tap(name: &str, queues: u32) -> Result<String, NetError> {
    check_request(name, queues)?;
    let (tun, request) = attach(name, queues, || format!("creating TAP device '{name}'"))?;
    // SAFETY: plain integer-argument ioctl on the descriptor attached above.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(NetError::Io {
            what: format!("making TAP device '{name}' persistent (TUNSETPERSIST)"),
            source: std::io::Error::last_os_error(),
        });
    }
    let end = request
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(libc::IFNAMSIZ);
    Ok(String::from_utf8_lossy(&request.name[..end]).into_owned())
    // Closing `tun` here leaves the persistent device behind, for `open_tap` to open for the guest.
}

/// A TAP name (1..=15 bytes) and a queue count a TAP can have.
fn check_request(name: &str, queues: u32) -> Result<(), NetError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(NetError::Invalid {
            reason: format!("TAP name '{name}' must be 1..=15 bytes"),
        });
    }
    if !(1..=MAX_TAP_QUEUES).contains(&queues) {
        return Err(NetError::Invalid {
            reason: format!("TAP '{name}': {queues} queues; a TAP has 1 to {MAX_TAP_QUEUES}"),
        });
    }
    Ok(())
}

/// Opens `/dev/net/tun` and attaches it to the TAP `name` (made if missing) for `queues` queue
/// pairs (multiqueue when more than one). Returns the open file and the request as the kernel
/// left it (the device's real name). `what`: the action, for the error.
fn attach(name: &str, queues: u32, what: impl Fn() -> String) -> Result<(File, IfReq), NetError> {
    let multi_queue = if queues > 1 { IFF_MULTI_QUEUE } else { 0 };
    let fail = |source| NetError::Io {
        what: format!("{} (TUNSETIFF)", what()),
        source,
    };
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(fail)?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | multi_queue,
        _union_rest: [0; 22],
    };
    let len = name.len().min(libc::IFNAMSIZ - 1);
    request.name[..len].copy_from_slice(&name.as_bytes()[..len]);
    // SAFETY: `tun` is an open /dev/net/tun descriptor and `request` is a properly sized, initialized
    // `struct ifreq` that lives across the call; the kernel writes at most IFNAMSIZ bytes of name back into it.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut request as *mut IfReq) };
    if rc < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok((tun, request))
}

/// Opens the existing TAP device `name` `queues` times (one file per queue pair; more than one needs a
/// multiqueue device), for a VMM to get as descriptors instead of opening the root-only `/dev/net/tun`
/// itself. `owner`: the uid that alone (besides CAP_NET_ADMIN) may attach to the device from now on
/// (TUNSETOWNER). A TAP with neither owner nor group lets every user who can open /dev/net/tun attach
/// to it; with an owner, a process of another guest's user cannot listen on this guest's network.
pub fn open_tap(name: &str, queues: u32, owner: Option<u32>) -> Result<Vec<OwnedFd>, NetError> {
    check_request(name, queues)?;
    // TUNSETIFF would quietly make a new, unconnected device of that name. (Asked of the
    // caller's network namespace, which /sys/class/net may not show.)
    let c_name = std::ffi::CString::new(name).map_err(|_| NetError::Invalid {
        reason: format!("TAP name '{name}' has a NUL byte"),
    })?;
    // SAFETY: if_nametoindex reads a NUL-terminated string that lives across the call.
    if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
        return Err(NetError::NoSuchDevice {
            device: name.to_string(),
        });
    }
    let mut files = Vec::new();
    for queue in 0..queues {
        let (tun, _) = attach(name, queues, || {
            format!("opening queue {queue} of TAP device '{name}'")
        })?;
        if queue == 0 {
            if let Some(uid) = owner {
                // SAFETY: plain integer-argument ioctl on the descriptor attached above.
                let rc =
                    unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETOWNER, libc::c_ulong::from(uid)) };
                if rc < 0 {
                    return Err(NetError::Io {
                        what: format!("giving TAP device '{name}' to uid {uid} (TUNSETOWNER)"),
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
        }
        files.push(OwnedFd::from(tun));
    }
    Ok(files)
}
