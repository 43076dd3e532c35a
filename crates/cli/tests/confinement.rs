//! Every QEMU oxvirtd starts is confined by default (docs/security.md), and the proof is taken
//! from the confined process itself: what the kernel says of it in /proc, and what happens
//! when QEMU is asked, over its own monitor, to do what the confinement forbids.
//! `oxvirtd --no-sandbox` is the one way back to an unconfined QEMU.
//!
//! QEMU runs as a user of its own (`qemu_user_range`), and the guest's files are that user's
//! while it runs (libvirt's DAC model): proven from /proc/PID/status, from the owners of its
//! files before, during and after the run, and from the guest writing its disk.

#[allow(dead_code)]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oxvirt_testkit::process::ok;
use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{field, guest_xml, make_disk, qemu_pid, Daemon};

const CONFINED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c01";
const UNCONFINED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c02";
const FIRST: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c04";
const SECOND: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c03";
const LABELLED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c05";
const NEIGHBOUR: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c06";
const KEPT: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c07";
const LOST: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c08";
const UNREACHABLE: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c09";
const PRIVATE_DEV: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c0a";
const LOCKED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c0b";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// An owner no account has, to see a file get it back.
const ORIGINAL: (u32, u32) = (1234, 1234);
/// oxvirtd's default qemu_user_range.
const QEMU_USERS: std::ops::RangeInclusive<u32> = 3_002_000..=3_002_999;

/// The value of `key` in /proc/PID/status (e.g. "Seccomp" -> "2").
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_string()
}

/// Defines and starts the test guest `name` on `daemon`; returns its QEMU's pid.
fn start_guest(daemon: &Daemon, name: &str, uuid: &str) -> u32 {
    let disk = make_disk(daemon.dir.path(), &format!("{name}.raw"), 2048);
    start_guest_on(daemon, name, uuid, &disk)
}

/// [`start_guest`] with `disk` as its disk.
fn start_guest_on(daemon: &Daemon, name: &str, uuid: &str, disk: &Path) -> u32 {
    let (_, run) = daemon.define(
        &format!("{name}.xml"),
        &guest_xml(name, uuid, &guest_kit(), disk, 1),
    );
    run.ok();
    daemon.oxvirt(&["start", name]).ok();
    qemu_pid(uuid).expect("the guest's QEMU runs")
}

/// Defines the test guest `name` with `edit` (what to replace, and by what) made to its
/// definition; returns its disk.
fn define_edited(daemon: &Daemon, name: &str, uuid: &str, edit: (&str, &str)) -> PathBuf {
    let disk = make_disk(daemon.dir.path(), &format!("{name}.raw"), 2048);
    let xml = guest_xml(name, uuid, &guest_kit(), &disk, 1).replace(edit.0, edit.1);
    daemon.define(&format!("{name}.xml"), &xml).1.ok();
    disk
}

/// A disk image owned by [`ORIGINAL`].
fn foreign_disk(daemon: &Daemon, name: &str) -> PathBuf {
    let disk = make_disk(daemon.dir.path(), name, 2048);
    std::os::unix::fs::chown(&disk, Some(ORIGINAL.0), Some(ORIGINAL.1)).expect("chown disk");
    disk
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).expect("stat");
    (meta.uid(), meta.gid())
}

/// The user QEMU `pid` runs as: its real, effective, saved and file system uids and gids are
/// all one id of `qemu_user_range`.
fn guest_user(pid: u32) -> u32 {
    let ids = |key: &str| -> Vec<u32> {
        status_field(pid, key)
            .split_whitespace()
            .map(|id| id.parse().expect("an id"))
            .collect()
    };
    let uids = ids("Uid");
    let uid = uids[0];
    assert_eq!(uids, vec![uid; 4], "Uid of {pid}");
    assert_eq!(ids("Gid"), vec![uid; 4], "Gid of {pid}");
    assert!(QEMU_USERS.contains(&uid), "{uid} is not in qemu_user_range");
    uid
}

#[test]
fn qemu_runs_with_no_new_privileges_under_its_seccomp_sandbox() {
    let daemon = Daemon::start();
    let pid = start_guest(&daemon, "confined", CONFINED);

    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // 2: a seccomp filter is installed (QEMU's -sandbox).
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let uid = guest_user(pid);
    let disk = daemon.dir.path().join("confined.raw");
    assert_eq!(owner(&disk), (uid, uid));

    // Asked to spawn a program (a migration to `exec:`), QEMU is stopped by its filter
    // (SIGSYS) rather than running anything: the guest goes down as crashed.
    let reply = daemon.oxvirt(&[
        "qemu-monitor-command",
        "confined",
        r#"{"execute":"migrate","arguments":{"uri":"exec:touch /tmp/oxvirt-confinement-spawned"}}"#,
    ]);
    let gone = wait_for(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || status_field(pid, "State").starts_with('Z')
    });
    assert!(gone, "QEMU survived a spawn: {reply:?}");
    assert!(!std::path::Path::new("/tmp/oxvirt-confinement-spawned").exists());
    let stopped = wait_for(Duration::from_secs(30), || {
        field(&daemon.oxvirt(&["dominfo", "confined"]).ok(), "State:") == "shut off"
    });
    assert!(stopped, "{}", daemon.log());
    // Crashed, it gave its disk back.
    assert_eq!(owner(&disk), (0, 0));
    let log = std::fs::read_to_string(
        daemon
            .dir
            .path()
            .join(format!("state/run/{CONFINED}/qemu.log")),
    )
    .expect("qemu.log");
    assert!(
        log.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ),
        "{log}"
    );
}

/// What QEMU answers when asked over QMP to open `path` (a read-only file node).
fn open_through_qemu(daemon: &Daemon, domain: &str, node: &str, path: &str) -> String {
    let command = format!(
        r#"{{"execute":"blockdev-add","arguments":{{"driver":"file","node-name":"{node}","filename":"{path}","read-only":true}}}}"#
    );
    let run = daemon.oxvirt(&["qemu-monitor-command", domain, &command]);
    format!("{}{}", run.stdout, run.stderr)
}

#[test]
fn qemu_reaches_only_the_files_of_its_own_definition() {
    let daemon = Daemon::start();
    start_guest(&daemon, "first", FIRST);
    start_guest(&daemon, "second", SECOND);
    let kit = guest_kit();

    // Its own kernel, named by its definition, QEMU may open again.
    let own = open_through_qemu(&daemon, "first", "own", &kit.kernel.display().to_string());
    assert!(own.contains(r#""return":{}"#), "{own}");
    // The host's secrets and the other guest's disk it may not, though QEMU runs as root.
    let shadow = open_through_qemu(&daemon, "first", "shadow", "/etc/shadow");
    assert!(shadow.contains("Permission denied"), "{shadow}");
    let other_disk = daemon.dir.path().join("second.raw");
    let other = open_through_qemu(&daemon, "first", "other", &other_disk.display().to_string());
    assert!(other.contains("Permission denied"), "{other}");
    // The other guest still opens its own disk.
    let its_own = open_through_qemu(
        &daemon,
        "second",
        "again",
        &other_disk.display().to_string(),
    );
    assert!(!its_own.contains("Permission denied"), "{its_own}");

    // A disk plugged in later was not in the definition: QEMU gets it open, and the guest
    // sees it.
    let plugged = make_disk(daemon.dir.path(), "plugged.raw", 4096);
    daemon
        .oxvirt(&[
            "attach-disk",
            "first",
            plugged.to_str().expect("utf-8"),
            "vdb",
        ])
        .ok();
    let blocks = daemon
        .oxvirt(&["qemu-monitor-command", "first", "--hmp", "info block"])
        .ok();
    assert!(blocks.contains("/dev/fdset/"), "{blocks}");
}

/// The names in directory `dir`, sorted.
fn names_in(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("listing {dir}: {err}"))
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The file system type mounted at `mount_point` as `/proc/PID/mountinfo` lists it last (the
/// one on top; mountinfo lists mounts in the order they were made).
fn mounted_at(pid: &str, mount_point: &str) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fs = fields.get(dash + 1)?;
            (fields.get(4) == Some(&mount_point)).then(|| fs.to_string())
        })
        .next_back()
}

/// QEMU runs in a mount namespace of its own whose /dev holds only what it needs: no /dev/net/tun
/// (TAPs come as descriptors), none of the host's disks or terminals; the guest still boots,
/// and writes its disk. Its second serial port writes a file in a directory its user cannot
/// even enter, its third serves a socket there and its fourth connects to one: oxvirtd opens
/// the file, binds and connects the sockets and hands them over, and QEMU stays a guest user.
#[test]
fn qemu_has_a_private_dev_with_only_the_nodes_it_needs() {
    let daemon = Daemon::start();
    let logs = daemon.dir.path().join("private-logs");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let serial_file = logs.join("ttyS1.log");
    // A socket QEMU serves (bound by oxvirtd) and one it connects to (the test's listener).
    let served = logs.join("ttyS2.sock");
    let client_of = logs.join("ttyS3.sock");
    let channel = logs.join("channel.sock");
    let listener = std::os::unix::net::UnixListener::bind(&client_of).expect("bind ttyS3.sock");
    let serial = format!(
        "<serial type='file'><source path='{}'/><target port='1'/></serial>
    <serial type='unix'><source mode='bind' path='{}'/><target port='2'/></serial>
    <serial type='unix'><source mode='connect' path='{}'/><target port='3'/></serial>
    <channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='org.example.c'/></channel>\n  </devices>",
        serial_file.display(),
        served.display(),
        client_of.display(),
        channel.display()
    );
    let disk = define_edited(&daemon, "privdev", PRIVATE_DEV, ("</devices>", &serial));
    let mut console = daemon.start_with_console("privdev");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let pid = qemu_pid(PRIVATE_DEV).expect("the guest's QEMU runs");
    guest_user(pid);

    // Its own mount namespace, with a tmpfs on /dev; the host's /dev is as it was.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mnt ns");
    assert_ne!(ns(&pid.to_string()), ns("self"));
    let fs = mounted_at(&pid.to_string(), "/dev").expect("QEMU has a /dev mount");
    assert_eq!(fs, "tmpfs");
    let host_fs = mounted_at("self", "/dev").expect("the host has /dev");
    assert_ne!(host_fs, "tmpfs", "the host's /dev was left alone");
    // Nothing of it shows on the host (the run directory's staging point stays empty).
    let staging = daemon
        .dir
        .path()
        .join(format!("state/run/{PRIVATE_DEV}/dev"));
    assert!(mounted_at("self", &staging.display().to_string()).is_none());

    // Only the minimal set (and /dev/kvm when QEMU uses KVM).
    let accel_kvm = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|argv| String::from_utf8_lossy(&argv).contains("accel=kvm"))
        .unwrap_or(false);
    let mut expected: Vec<&str> = vec![
        "fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero",
    ];
    if accel_kvm {
        expected.push("kvm");
    }
    expected.sort_unstable();
    let seen = names_in(&format!("/proc/{pid}/root/dev"));
    assert_eq!(seen, expected);
    let host = names_in("/dev");
    assert!(
        host.len() > seen.len()
            && host.iter().any(|n| n == "net")
            && host.iter().any(|n| n == "tty"),
        "the host's /dev has more: {host:?}"
    );
    // The nodes are the host's (bind mounts: the same device numbers).
    let rdev = |path: String| std::fs::metadata(path).expect("stat").rdev();
    assert_eq!(
        rdev(format!("/proc/{pid}/root/dev/null")),
        rdev("/dev/null".into())
    );

    // The guest writes its disk as before.
    console.run("dmesg -n 1", 1);
    let wrote = console.run(
        "echo OXVIRT-PRIVATE-DEV | dd of=/dev/vda bs=512 seek=10 conv=fsync 2>/dev/null; echo wrote-$?",
        2,
    );
    assert!(wrote.contains("wrote-0"), "{wrote}");
    let bytes = std::fs::read(&disk).expect("read disk");
    assert!(bytes[5120..].starts_with(b"OXVIRT-PRIVATE-DEV"));

    // The serial file is the guest's output, and stays root's: QEMU only got it open.
    console.run("echo OXVIRT-SERIAL-FILE > /dev/ttyS1", 3);
    let mut text = String::new();
    let written = wait_for(Duration::from_secs(30), || {
        text = std::fs::read_to_string(&serial_file).unwrap_or_default();
        text.contains("OXVIRT-SERIAL-FILE")
    });
    assert!(written, "{text:?}");
    assert_eq!(owner(&serial_file), (0, 0));

    // The serial sockets, in the same directory QEMU's user cannot enter: oxvirtd bound the
    // one and connected the other and handed them over, as libvirt does.
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).expect("QEMU's argv");
    let argv = String::from_utf8_lossy(&argv);
    assert!(
        !argv.contains("private-logs"),
        "QEMU names a path of it: {argv}"
    );
    let mut served_stream = std::os::unix::net::UnixStream::connect(&served).expect("connect");
    let (mut accepted, _) = listener
        .accept()
        .expect("QEMU's connection (made at the start)");
    for (tty, stream) in [("ttyS2", &mut served_stream), ("ttyS3", &mut accepted)] {
        let marker = format!("OXVIRT-SERIAL-SOCKET-{tty}");
        console.run(&format!("echo {marker} > /dev/{tty}"), 3);
        let read = read_until(stream, &marker, Duration::from_secs(30));
        assert!(read.contains(&marker), "{tty}: {read:?}");
    }
    // The channel's socket too (no udev in the kit: its port found by name in sysfs).
    let mut channel_stream = std::os::unix::net::UnixStream::connect(&channel).expect("connect");
    console.run(
        "for p in /sys/class/virtio-ports/*; do \
           [ \"$(cat $p/name)\" = org.example.c ] && echo OXVIRT-CHANNEL-SOCKET > /dev/${p##*/}; \
         done",
        3,
    );
    let read = read_until(
        &mut channel_stream,
        "OXVIRT-CHANNEL-SOCKET",
        Duration::from_secs(30),
    );
    assert!(read.contains("OXVIRT-CHANNEL-SOCKET"), "channel: {read:?}");
    daemon.oxvirt(&["destroy", "privdev"]).ok();
}

/// What `stream` brings until it holds `marker` or `timeout` passes.
fn read_until(
    stream: &mut std::os::unix::net::UnixStream,
    marker: &str,
    timeout: Duration,
) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut text = Vec::new();
    wait_for(timeout, || {
        let mut chunk = [0u8; 4096];
        if let Ok(n) = stream.read(&mut chunk) {
            text.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&text).contains(marker)
    });
    String::from_utf8_lossy(&text).into_owned()
}

/// Whether oxvirtd (root, as this test) may give QEMU an unlimited RLIMIT_MEMLOCK: its own hard
/// limit is unlimited, or it has CAP_SYS_RESOURCE (bit 24), which some containers' root lacks.
fn memlock_can_be_lifted() -> bool {
    let read = |file: &str| std::fs::read_to_string(file).expect("read /proc/self");
    let unlimited = read("/proc/self/limits").lines().any(|l| {
        l.starts_with("Max locked memory")
            && l.split_whitespace().filter(|w| *w == "unlimited").count() == 2
    });
    let caps = read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff");
    unlimited || caps & (1 << 24) != 0
}

/// `<memoryBacking><locked/>` no longer keeps QEMU root where oxvirtd may lift RLIMIT_MEMLOCK:
/// its guest user locks the memory with an unlimited limit. Where oxvirtd may not (no
/// CAP_SYS_RESOURCE), QEMU stays root, sandboxed, and the log says why.
#[test]
fn a_guest_with_locked_memory_starts_sandboxed() {
    let daemon = Daemon::start();
    define_edited(
        &daemon,
        "locked",
        LOCKED,
        (
            "<devices>",
            "<memoryBacking><locked/></memoryBacking>\n  <devices>",
        ),
    );
    daemon.oxvirt(&["start", "locked"]).ok();
    let pid = qemu_pid(LOCKED).expect("the guest's QEMU runs");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    if memlock_can_be_lifted() {
        guest_user(pid);
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let memlock = limits
            .lines()
            .find(|l| l.starts_with("Max locked memory"))
            .unwrap_or_else(|| panic!("{limits}"));
        assert_eq!(
            memlock
                .split_whitespace()
                .filter(|w| *w == "unlimited")
                .count(),
            2,
            "{memlock}"
        );
    } else {
        assert_eq!(
            status_field(pid, "Uid").split_whitespace().next(),
            Some("0")
        );
        assert!(
            daemon.log().contains("lacks CAP_SYS_RESOURCE"),
            "{}",
            daemon.log()
        );
    }
    // Either way the host's secrets stay out of reach (as root: Landlock alone keeps them).
    let reply = open_through_qemu(&daemon, "locked", "shadow", "/etc/shadow");
    assert!(reply.contains("Permission denied"), "{reply}");
    // And its RAM is locked.
    let locked_kib: u64 = status_field(pid, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmLck");
    assert!(locked_kib > 64 * 1024, "VmLck {locked_kib} kB");
    daemon.oxvirt(&["destroy", "locked"]).ok();
}

#[test]
fn no_sandbox_runs_qemu_unconfined_as_before() {
    let daemon = Daemon::start_with(&["--no-sandbox"]);
    let pid = start_guest(&daemon, "unconfined", UNCONFINED);
    assert_eq!(status_field(pid, "NoNewPrivs"), "0");
    assert_eq!(status_field(pid, "Seccomp"), "0");
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    // No DAC model: the disk stays root's, and dominfo says so as virsh does without one.
    assert_eq!(owner(&daemon.dir.path().join("unconfined.raw")), (0, 0));
    let info = daemon.oxvirt(&["dominfo", "unconfined"]).ok();
    assert_eq!(field(&info, "Security model:"), "none");
    assert!(!info.contains("Security label:"), "{info}");
    daemon.oxvirt(&["destroy", "unconfined"]).ok();
}

#[test]
fn qemu_runs_as_a_user_of_its_own_that_holds_the_guests_files_until_it_stops() {
    let daemon = Daemon::start();
    let disk = foreign_disk(&daemon, "labelled.raw");
    let xml = guest_xml("labelled", LABELLED, &guest_kit(), &disk, 1);
    daemon.define("labelled.xml", &xml).1.ok();
    let mut console = daemon.start_with_console("labelled");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let pid = qemu_pid(LABELLED).expect("the guest's QEMU runs");
    let uid = guest_user(pid);
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    // No supplementary group (under TCG it needs not even /dev/kvm's).
    assert_eq!(status_field(pid, "Groups"), "");
    assert_eq!(owner(&disk), (uid, uid), "the disk is the guest user's");
    // The kernel, which every user may read, stays as it was for the other guests.
    assert_eq!(owner(&guest_kit().kernel), (0, 0));

    // The guest writes its disk through its QEMU, as that user.
    console.run("dmesg -n 1", 1);
    let wrote = console.run(
        "echo OXVIRT-DAC-WROTE | dd of=/dev/vda bs=512 seek=10 conv=fsync 2>/dev/null; echo wrote-$?",
        2,
    );
    assert!(wrote.contains("wrote-0"), "{wrote}");
    let bytes = std::fs::read(&disk).expect("read disk");
    assert!(
        bytes[5120..].starts_with(b"OXVIRT-DAC-WROTE"),
        "the guest's write is not in the image"
    );

    let info = daemon.oxvirt(&["dominfo", "labelled"]).ok();
    assert_eq!(field(&info, "Security model:"), "dac");
    assert_eq!(field(&info, "Security DOI:"), "0");
    assert_eq!(
        field(&info, "Security label:"),
        format!("+{uid}:+{uid} (enforcing)")
    );

    // Another guest gets another user, which holds its disk: this QEMU may not open it, nor
    // the host's secrets.
    let neighbour_pid = start_guest(&daemon, "neighbour", NEIGHBOUR);
    let other = guest_user(neighbour_pid);
    assert_ne!(other, uid);
    let neighbour_disk = daemon.dir.path().join("neighbour.raw");
    assert_eq!(owner(&neighbour_disk), (other, other));
    for (node, path) in [
        ("shadow", Path::new("/etc/shadow")),
        ("other", neighbour_disk.as_path()),
    ] {
        let reply = open_through_qemu(&daemon, "labelled", node, &path.display().to_string());
        assert!(reply.contains("Permission denied"), "{reply}");
    }

    // Stopped, the disk has its owner back, and the guest no label.
    daemon.oxvirt(&["destroy", "labelled"]).ok();
    assert_eq!(owner(&disk), ORIGINAL);
    let info = daemon.oxvirt(&["dominfo", "labelled"]).ok();
    assert_eq!(field(&info, "Security model:"), "dac");
    assert!(!info.contains("Security label:"), "{info}");
    daemon.oxvirt(&["destroy", "neighbour"]).ok();
    assert_eq!(owner(&neighbour_disk), (0, 0));
}

#[test]
fn a_daemon_restart_keeps_each_guests_user_and_gives_back_the_files_of_one_that_died() {
    let mut daemon = Daemon::start();
    let kept_disk = foreign_disk(&daemon, "kept.raw");
    let lost_disk = foreign_disk(&daemon, "lost.raw");
    let kept_uid = guest_user(start_guest_on(&daemon, "kept", KEPT, &kept_disk));
    let lost_pid = start_guest_on(&daemon, "lost", LOST, &lost_disk);
    assert_eq!(owner(&lost_disk), {
        let uid = guest_user(lost_pid);
        (uid, uid)
    });

    // While oxvirtd is away, one guest's QEMU dies.
    daemon.kill();
    ok("kill", &["-KILL", &lost_pid.to_string()]);
    let dead = wait_for(Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{lost_pid}")).exists()
            || status_field(lost_pid, "State").starts_with('Z')
    });
    assert!(dead, "QEMU {lost_pid} survived SIGKILL");
    daemon.launch();

    // Its files are back with their owner; the running guest keeps its user and its files.
    assert_eq!(owner(&lost_disk), ORIGINAL, "{}", daemon.log());
    assert_eq!(owner(&kept_disk), (kept_uid, kept_uid));
    let info = daemon.oxvirt(&["dominfo", "kept"]).ok();
    assert_eq!(
        field(&info, "Security label:"),
        format!("+{kept_uid}:+{kept_uid} (enforcing)")
    );
    // That user is not handed out again.
    daemon.oxvirt(&["start", "lost"]).ok();
    let again = guest_user(qemu_pid(LOST).expect("the guest's QEMU runs"));
    assert_ne!(again, kept_uid);

    // A stop after the restart gives the files back too.
    daemon.oxvirt(&["destroy", "kept"]).ok();
    assert_eq!(owner(&kept_disk), ORIGINAL);
    daemon.oxvirt(&["destroy", "lost"]).ok();
    assert_eq!(owner(&lost_disk), ORIGINAL);
}

/// A tmpfs mounted read-only for one test (holding one file made while it was writable),
/// unmounted when dropped.
struct ReadOnlyMount {
    dir: PathBuf,
}

impl ReadOnlyMount {
    /// Mounts it on `dir` with the file `name` (mode `mode`, root's) in it; returns the file.
    fn with_file(dir: &Path, name: &str, mode: u32) -> (ReadOnlyMount, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(dir).expect("mount point");
        let dir_arg = dir.to_str().expect("utf-8");
        ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=8m,mode=0755",
                "oxvirt-test-ro",
                dir_arg,
            ],
        );
        let mount = ReadOnlyMount {
            dir: dir.to_path_buf(),
        };
        let file = make_disk(dir, name, 2048);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        ok("mount", &["-o", "remount,ro", dir_arg]);
        (mount, file)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_disk_its_user_may_not_use_on_a_read_only_file_system_is_refused_with_nothing_changed() {
    let daemon = Daemon::start();
    let (_mount, disk) =
        ReadOnlyMount::with_file(&daemon.dir.path().join("ro"), "locked.raw", 0o600);
    let xml = guest_xml("unreachable", UNREACHABLE, &guest_kit(), &disk, 1);
    daemon.define("unreachable.xml", &xml).1.ok();

    let run = daemon.oxvirt(&["start", "unreachable"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let shown = disk.display().to_string();
    assert!(
        run.stderr.contains(&format!("disk vda {shown}"))
            && run.stderr.contains("Read-only file system")
            && run.stderr.contains("may not read and write it"),
        "{}",
        run.stderr
    );
    assert_eq!(qemu_pid(UNREACHABLE), None, "a QEMU was left");
    assert_eq!(owner(&disk), (0, 0));
    assert_eq!(owner(&guest_kit().kernel), (0, 0));
    let info = daemon.oxvirt(&["dominfo", "unreachable"]).ok();
    assert_eq!(field(&info, "State:"), "shut off");
    assert!(!info.contains("Security label:"), "{info}");
}
