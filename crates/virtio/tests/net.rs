//! virtio-net against a real TAP inside a network namespace this test creates. Frames are
//! exchanged with an AF_PACKET socket bound to the TAP in that namespace; no address is
//! configured anywhere and no traffic leaves the namespace.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Buf, Driver, DATA_BASE};
use oxvirt_virtio::{net_device, NetConfig};

const F_MAC: u64 = 1 << 5;
const TAP: &str = "oxvtap0";
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const ETHERTYPE: u16 = 0x88b5; // IEEE local experimental
const HDR: usize = 12;
const RX_BUF_LEN: u32 = 2048;
const RX_BUFS: u64 = 16;
const TX_ADDR: u64 = DATA_BASE + 0x10_0000;

/// A network namespace, deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(tag: &str) -> NetNs {
        let name = format!("oxv-{tag}-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        // Keep the kernel's own IPv6 chatter (router solicitations, MLD) off the wire.
        run(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// Run `f` on a thread that has entered this namespace (setns affects only that thread).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                // SAFETY: plain syscall on a valid fd; it changes only this thread's namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed: {status}");
}

/// An AF_PACKET socket bound to one interface (in the namespace it was created in).
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn bind(ifname: &str) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: `name` is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval; pointer and length match.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0);
        PacketSocket { fd, ifindex }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Wait for a frame the interface received (not one we sent) for which `want` holds.
    fn receive_matching(&self, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: zeroed sockaddr_ll is valid output storage.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buffer and address storage are valid for the given lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                continue; // timeout tick
            }
            let frame = &buf[..n as usize];
            if from.sll_pkttype != libc::PACKET_OUTGOING && want(frame) {
                return frame.to_vec();
            }
        }
        panic!("no matching frame arrived on {TAP}");
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn post_rx_buffers(d: &mut Driver) {
    for i in 0..RX_BUFS {
        let head = d.write_chain(
            0,
            &[Buf::input(
                DATA_BASE + i * u64::from(RX_BUF_LEN),
                RX_BUF_LEN,
            )],
        );
        d.make_available(0, head);
    }
    d.kick(0);
}

/// Wait for an RX buffer holding a frame that contains `payload`; returns (vnet header, frame).
fn receive_in_guest(d: &mut Driver, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut found = None;
    let msi = d.msi.clone();
    msi.wait_until("the frame in an RX buffer", || {
        for (id, len) in d.take_used(0) {
            let addr = DATA_BASE + u64::from(id) * u64::from(RX_BUF_LEN);
            let data = d.read_mem(addr, len as usize);
            if data.len() > HDR && data.windows(payload.len()).any(|w| w == payload) {
                found = Some((data[..HDR].to_vec(), data[HDR..].to_vec()));
            }
        }
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn frames_flow_between_guest_and_tap_in_a_namespace() {
    let ns = NetNs::new("net");
    let (device, socket) = ns.enter(|| {
        let device = net_device(NetConfig {
            tap_name: TAP.into(),
            mac: GUEST_MAC,
        })
        .unwrap();
        run(&["ip", "-n", &ns.name, "link", "set", TAP, "up"]);
        (device, PacketSocket::bind(TAP))
    });
    let mut d = Driver::start(device, F_MAC, 2);
    assert_ne!(d.device_features & F_MAC, 0);
    let mut mac = [0u8; 6];
    d.device_config(0, &mut mac);
    assert_eq!(mac, GUEST_MAC);

    // Host -> guest, sent before the guest has any RX buffer: the frame waits in the device.
    let host_mac = [0x02, 0, 0, 0, 0, 0x01];
    let early = frame(GUEST_MAC, host_mac, b"early frame from the host namespace");
    socket.send(&early);
    post_rx_buffers(&mut d);
    let (hdr, got) = receive_in_guest(&mut d, b"early frame from the host namespace");
    assert_eq!(got[..early.len()], early[..]);
    assert_eq!(hdr[..10], [0u8; 10], "no offload flags, no GSO");
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");

    // Host -> guest with buffers ready.
    let hello = frame(GUEST_MAC, host_mac, b"hello guest, from the TAP side");
    socket.send(&hello);
    let (_, got) = receive_in_guest(&mut d, b"hello guest, from the TAP side");
    assert_eq!(got[..hello.len()], hello[..]);

    // Guest -> host: header + frame in two descriptors, as Linux lays out a TX skb.
    let out = frame([0xff; 6], GUEST_MAC, b"hello TAP, from the guest side");
    d.write_mem(TX_ADDR, &[0u8; HDR]);
    d.write_mem(TX_ADDR + 0x100, &out);
    d.submit(
        1,
        &[
            Buf::out(TX_ADDR, HDR as u32),
            Buf::out(TX_ADDR + 0x100, out.len() as u32),
        ],
    );
    let seen = socket.receive_matching(|f| {
        f.windows(9).any(|w| w == b"from the ".as_slice()) && f[6..12] == GUEST_MAC
    });
    assert_eq!(seen[..out.len()], out[..]);

    // Garbage TX buffers (too short; outside memory) are dropped without stopping the device.
    d.submit(1, &[Buf::out(TX_ADDR, 4)]);
    d.submit(1, &[Buf::out(1 << 40, 64)]);
    let again = frame([0xff; 6], GUEST_MAC, b"still alive after garbage");
    d.write_mem(TX_ADDR, &[0u8; HDR]);
    d.write_mem(TX_ADDR + HDR as u64, &again);
    d.submit(1, &[Buf::out(TX_ADDR, (HDR + again.len()) as u32)]);
    socket.receive_matching(|f| f.windows(11).any(|w| w == b"still alive".as_slice()));
}

#[test]
fn invalid_tap_names_are_refused() {
    for name in ["", "a/b", "with space", "sixteen-chars-xx"] {
        let err = net_device(NetConfig {
            tap_name: name.into(),
            mac: GUEST_MAC,
        })
        .err()
        .unwrap_or_else(|| panic!("{name:?} accepted"));
        assert!(err.to_string().contains("TAP"), "{err}");
    }
}

#[test]
fn net_device_shape() {
    let ns = NetNs::new("shape");
    let device = ns.enter(|| {
        net_device(NetConfig {
            tap_name: "oxvtap1".into(),
            mac: GUEST_MAC,
        })
        .unwrap()
    });
    assert_eq!(device.device_type(), 1);
    assert_eq!(device.queue_max_sizes().len(), 2);
    assert_ne!(device.features() & (1 << 32), 0);
}

#[test]
fn frames_larger_than_the_rx_buffer_are_dropped_not_truncated() {
    let ns = NetNs::new("small");
    let (device, socket) = ns.enter(|| {
        let device = net_device(NetConfig {
            tap_name: "oxvtap2".into(),
            mac: GUEST_MAC,
        })
        .unwrap();
        run(&["ip", "-n", &ns.name, "link", "set", "oxvtap2", "up"]);
        (device, PacketSocket::bind("oxvtap2"))
    });
    let mut d = Driver::start(device, F_MAC, 2);
    // One 100-byte buffer: too small for a 12-byte header plus a 300-byte frame.
    d.write_mem(DATA_BASE, &[0xee; 100]);
    let small = d.write_chain(0, &[Buf::input(DATA_BASE, 100)]);
    d.make_available(0, small);
    d.kick(0);
    let host_mac = [0x02, 0, 0, 0, 0, 0x02];
    let mut big_payload = b"too big for the buffer ".to_vec();
    big_payload.resize(300, b'x');
    socket.send(&frame(GUEST_MAC, host_mac, &big_payload));
    let msi = d.msi.clone();
    let mut used = Vec::new();
    msi.wait_until("the small buffer back", || {
        used.extend(d.take_used(0));
        !used.is_empty()
    });
    assert_eq!(used, vec![(u32::from(small), 0)], "returned empty");
    assert_eq!(
        d.read_mem(DATA_BASE, 100),
        vec![0xee; 100],
        "nothing written into it"
    );
    // A frame that fits arrives normally afterwards.
    let head = d.write_chain(0, &[Buf::input(DATA_BASE + 0x1000, 2048)]);
    d.make_available(0, head);
    d.kick(0);
    let fits = frame(GUEST_MAC, host_mac, b"this one fits");
    socket.send(&fits);
    msi.wait_until("the fitting frame", || {
        d.take_used(0)
            .iter()
            .any(|(id, len)| *id == u32::from(head) && *len as usize >= HDR + fits.len())
    });
    assert_eq!(
        d.read_mem(DATA_BASE + 0x1000 + HDR as u64, fits.len()),
        fits
    );
}
