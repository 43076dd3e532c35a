//! vCPU placement against a private oxvirtd running a real QEMU (TCG) guest: `<cputune>`'s pins
//! are on QEMU's threads when the guest starts, `vcpupin`/`emulatorpin` move them live and in
//! the definition, as the kernel shows (`/proc/PID/task/TID/status`); the tables print as
//! Debian's virsh prints them for the same definition; bad pins are refused and change nothing.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "3e5f7a9b-1c2d-4e6f-8a0b-2c4d6e8f0a1b";

/// The host's CPUs as the kernel lists them, e.g. "0-1".
fn host_cpus() -> (u32, String) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let last: u32 = online
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (last, online.trim().to_string())
}

/// The allowed CPUs of a thread, as /proc shows them.
fn allowed(pid: u32, tid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// QEMU's pid (the process whose command line names our domain's uuid) and its vCPU threads,
/// as QEMU reports them through `qemu-monitor-command`.
fn qemu_threads(daemon: &Daemon) -> (u32, Vec<u32>) {
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(UUID))
                .unwrap_or(false)
        })
        .expect("the guest's QEMU");
    let answer = daemon
        .oxvirt(&[
            "qemu-monitor-command",
            "pin",
            "--return-value",
            r#"{"execute":"query-cpus-fast"}"#,
        ])
        .ok();
    let cpus: Vec<serde_json::Value> = serde_json::from_str(answer.trim()).unwrap();
    let mut threads: Vec<(u64, u32)> = cpus
        .iter()
        .map(|c| {
            (
                c["cpu-index"].as_u64().unwrap(),
                c["thread-id"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    threads.sort_unstable();
    (pid, threads.into_iter().map(|(_, t)| t).collect())
}

fn pinned_xml(disk: &std::path::Path, last: u32) -> String {
    guest_xml("pin", UUID, &guest_kit(), disk, 2).replace(
        "<os>",
        &format!("<cputune><vcpupin vcpu='1' cpuset='0'/><emulatorpin cpuset='{last}'/></cputune>\n  <os>"),
    )
}

#[test]
fn pins_reach_qemus_threads_live_and_from_the_definition() {
    let (last, all) = host_cpus();
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "pin.img", 2048);
    daemon.define("pin.xml", &pinned_xml(&disk, last)).1.ok();

    // As virsh prints the same definition's pins (libvirt's embedded driver, no daemon).
    let libvirt_root = daemon.dir.path().join("libvirt");
    let theirs = support::virsh_embedded(
        &libvirt_root,
        &format!(
            "define {}; vcpupin pin --config; emulatorpin pin --config; vcpupin pin 1 --config",
            daemon.dir.path().join("pin.xml").display()
        ),
    );
    let ours = [
        daemon.oxvirt(&["vcpupin", "pin", "--config"]).ok(),
        daemon.oxvirt(&["emulatorpin", "pin", "--config"]).ok(),
        daemon.oxvirt(&["vcpupin", "pin", "1", "--config"]).ok(),
    ]
    .concat();
    let theirs = theirs
        .split_once("\n\n")
        .map(|(_, queries)| queries.to_string())
        .unwrap();
    assert_eq!(ours, theirs);

    // At start, before the guest runs: the definition's pins on QEMU's threads.
    let mut console = daemon.start_with_console("pin");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let (pid, vcpus) = qemu_threads(&daemon);
    assert_eq!(vcpus.len(), 2);
    assert_eq!(allowed(pid, vcpus[0]), all);
    assert_eq!(allowed(pid, vcpus[1]), "0");
    assert_eq!(
        allowed(pid, pid),
        last.to_string(),
        "the emulator's main thread"
    );

    // Live: the thread moves, the live definition says so, the stored one does not.
    daemon
        .oxvirt(&["vcpupin", "pin", "0", &last.to_string(), "--live"])
        .ok();
    assert_eq!(allowed(pid, vcpus[0]), last.to_string());
    let table = daemon.oxvirt(&["vcpupin", "pin"]).ok();
    assert_eq!(
        table,
        format!(" VCPU   CPU Affinity\n----------------------\n 0      {last}\n 1      0\n\n")
    );
    let live_xml = daemon.oxvirt(&["dumpxml", "pin"]).ok();
    assert!(
        live_xml.contains(&format!("<vcpupin vcpu='0' cpuset='{last}'/>")),
        "{live_xml}"
    );
    let stored = daemon.oxvirt(&["dumpxml", "--inactive", "pin"]).ok();
    assert!(!stored.contains("<vcpupin vcpu='0'"), "{stored}");
    let info = daemon.oxvirt(&["vcpuinfo", "pin"]).ok();
    let map: String = (0..=last)
        .map(|c| if c == last { 'y' } else { '-' })
        .collect();
    assert!(info.contains(&format!("CPU Affinity:   {map}\n")), "{info}");
    daemon.oxvirt(&["emulatorpin", "pin", "0", "--live"]).ok();
    assert_eq!(allowed(pid, pid), "0");
    assert_eq!(
        daemon.oxvirt(&["emulatorpin", "pin"]).ok(),
        "emulator: CPU Affinity\n----------------------------------\n       *: 0\n\n"
    );

    // Bad pins: refused with virsh's words, nothing moves or changes.
    let err = daemon.oxvirt(&["vcpupin", "pin", "0", "999"]).error();
    assert!(
        err.contains("CPU 999 in cpulist '999' exceed the maxcpu"),
        "{err}"
    );
    let err = daemon
        .oxvirt(&["vcpupin", "pin", "5", "0", "--live"])
        .error();
    assert!(
        err.contains("vcpu 5 is out of range of live cpu count 2"),
        "{err}"
    );
    assert_eq!(allowed(pid, vcpus[0]), last.to_string());
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "pin"]).ok(),
        live_xml.replace(
            &format!("<emulatorpin cpuset='{last}'/>"),
            "<emulatorpin cpuset='0'/>"
        )
    );

    // --config while it runs: for the next start, which then pins from it.
    daemon
        .oxvirt(&["vcpupin", "pin", "0", "0", "--config"])
        .ok();
    assert_eq!(
        allowed(pid, vcpus[0]),
        last.to_string(),
        "--config leaves the running guest"
    );
    drop(console);
    daemon.oxvirt(&["destroy", "pin"]).ok();
    daemon.oxvirt(&["start", "pin"]).ok();
    let (pid, vcpus) = qemu_threads(&daemon);
    assert_eq!(allowed(pid, vcpus[0]), "0");
    assert_eq!(allowed(pid, vcpus[1]), "0");
    assert_eq!(allowed(pid, pid), last.to_string());
    daemon.oxvirt(&["destroy", "pin"]).ok();

    // A pin to a CPU the host lacks: the start is refused naming it; nothing runs.
    let bad = pinned_xml(&disk, last).replace(
        "<vcpupin vcpu='1' cpuset='0'/>",
        "<vcpupin vcpu='1' cpuset='999'/>",
    );
    daemon.define("pin.xml", &bad).1.ok();
    let err = daemon.oxvirt(&["start", "pin"]).error();
    assert!(
        err.contains("CPU 999 in <vcpupin vcpu='1'> exceed the maxcpu"),
        "{err}"
    );
    assert_eq!(daemon.oxvirt(&["domstate", "pin"]).ok(), "shut off\n\n");
}
