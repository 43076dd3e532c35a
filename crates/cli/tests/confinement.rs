//! Every QEMU oxvirtd starts is confined by default (docs/security.md), and the proof is taken
//! from the confined process itself: what the kernel says of it in /proc, and what happens
//! when QEMU is asked, over its own monitor, to do what the confinement forbids.
//! `oxvirtd --no-sandbox` is the one way back to an unconfined QEMU.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for};
use support::{field, guest_xml, make_disk, qemu_pid, Daemon};

const CONFINED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c01";
const UNCONFINED: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c02";
const FIRST: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c04";
const SECOND: &str = "5c0f1a4e-7d2b-4c1e-9a36-0b8e7f1d2c03";

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
    let kit = guest_kit();
    let disk = make_disk(daemon.dir.path(), &format!("{name}.raw"), 2048);
    let (_, run) = daemon.define(
        &format!("{name}.xml"),
        &guest_xml(name, uuid, &kit, &disk, 1),
    );
    run.ok();
    daemon.oxvirt(&["start", name]).ok();
    qemu_pid(uuid).expect("the guest's QEMU runs")
}

#[test]
fn qemu_runs_with_no_new_privileges_under_its_seccomp_sandbox() {
    let daemon = Daemon::start();
    let pid = start_guest(&daemon, "confined", CONFINED);

    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // 2: a seccomp filter is installed (QEMU's -sandbox).
    assert_eq!(status_field(pid, "Seccomp"), "2");

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
    daemon.oxvirt(&["destroy", "unconfined"]).ok();
}
