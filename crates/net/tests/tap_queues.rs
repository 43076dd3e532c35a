//! Multiqueue TAP devices (`<driver queues='N'/>`), inside a network namespace made for each test (see
//! `common`): the device is created with IFF_MULTI_QUEUE, so N files can attach to it the way QEMU's
//! `-netdev tap,ifname=..,queues=N` does; a single-queue TAP stays as it was.

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use common::{in_fresh_netns, run, runtime};
use oxvirt_net::{NetError, NetworkManager, TapRequest};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Attaches a new file to the existing TAP `name` with `flags`, as QEMU does for each queue.
fn attach_queue(name: &str, flags: libc::c_short) -> std::io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _union_rest: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is an open /dev/net/tun descriptor; `request` is a complete, initialized `struct ifreq`
    // that outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut request as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun)
}

/// The TUN flags the kernel reports for `tap` (`/sys/class/net/TAP/tun_flags`, e.g. `0x5902`).
fn tun_flags(tap: &str) -> u32 {
    let text = std::fs::read_to_string(format!("/sys/class/net/{tap}/tun_flags"))
        .unwrap_or_else(|e| panic!("tun_flags of {tap}: {e}"));
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("tun_flags of {tap} '{text}': {e}"))
}

#[test]
fn multiqueue_taps_take_one_file_per_queue() {
    in_fresh_netns("multiqueue_taps_take_one_file_per_queue", 0, |_| {
        let state = tempfile::tempdir().unwrap();
        let rt = runtime();
        let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
        run("ip", &["link", "add", "brq", "type", "bridge"]);
        run("ip", &["link", "set", "brq", "up"]);
        let create = |name: &'static str, queues: u32| {
            rt.block_on(nets.create_tap(&TapRequest {
                name: Some(name),
                bridge: "brq",
                guest_mac: None,
                owner: "vm",
                queues,
            }))
        };
        let qemu_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

        // Four queues: the device is multiqueue, and four files attach to it as QEMU's queues would.
        assert_eq!(create("mq4", 4).unwrap(), "mq4");
        assert_ne!(tun_flags("mq4") & 0x0100, 0, "{:#x}", tun_flags("mq4"));
        let queues: Vec<File> = (0..4)
            .map(|q| {
                attach_queue("mq4", qemu_flags | IFF_MULTI_QUEUE)
                    .unwrap_or_else(|e| panic!("queue {q} of mq4: {e}"))
            })
            .collect();
        // Still on the bridge and up with its queues attached.
        let details = run("ip", &["-d", "link", "show", "mq4"]);
        assert!(details.contains("master brq"), "{details}");
        assert!(details.contains("multi_queue numqueues 4 "), "{details}");
        // A single-queue open of a multiqueue device is refused by the kernel.
        let err = attach_queue("mq4", qemu_flags).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        drop(queues);

        // One queue: as before, no IFF_MULTI_QUEUE; a plain open works, a multiqueue one is refused (the
        // error QEMU reported before TAPs were created multiqueue).
        assert_eq!(create("sq1", 1).unwrap(), "sq1");
        assert_eq!(tun_flags("sq1") & 0x0100, 0, "{:#x}", tun_flags("sq1"));
        let single = attach_queue("sq1", qemu_flags).expect("single-queue attach");
        drop(single);
        let err = attach_queue("sq1", qemu_flags | IFF_MULTI_QUEUE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

        // Queue counts the kernel cannot give are refused up front, and leave nothing behind.
        for bad in [0, 257] {
            let err = create("bad0", bad).unwrap_err();
            assert!(matches!(err, NetError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains(&format!("{bad} queues")), "{err}");
            assert!(matches!(
                rt.block_on(nets.device("bad0")),
                Err(NetError::NoSuchDevice { .. })
            ));
        }

        rt.block_on(nets.remove_tap("mq4")).unwrap();
        rt.block_on(nets.remove_tap("sq1")).unwrap();
        assert!(rt.block_on(nets.taps()).unwrap().is_empty());
    });
}
