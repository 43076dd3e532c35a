//! IOThreads against a private oxvirtd running a real QEMU (TCG) guest whose disk runs its I/O
//! in IOThread 1: `<iothreadpin>` is on that IOThread's host thread when the guest starts (as
//! the kernel shows it: `/proc/PID/task/TID/status`, the thread QEMU's `query-iothreads`
//! names); `iothreadinfo` prints it as Debian's virsh does; `iothreadpin --live` moves the
//! thread, `iothreadadd`/`iothreaddel --live` make and end threads; `--config` changes the
//! definition as virsh's do (compared with libvirt's embedded driver) and the next start pins
//! from it; bad input and deleting the disk's IOThread are refused and change nothing.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{allowed_cpus, guest_xml, host_cpus, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "5a7c9e1b-3d5f-4a7c-9e1b-3d5f7a9c1e3b";

/// The threads of `pid` QEMU named `IO iothreadN` (`-name debug-threads=on`), by N.
fn named_iothreads(pid: u32) -> Vec<(u32, u32)> {
    let mut threads: Vec<(u32, u32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let id = comm.trim().strip_prefix("IO iothread")?.parse().ok()?;
            Some((id, tid))
        })
        .collect();
    threads.sort_unstable();
    threads
}

fn qemu_pid() -> u32 {
    support::qemu_pid(UUID).expect("the guest's QEMU")
}

/// QEMU's IOThreads through `qemu-monitor-command` (`query-iothreads`): (N of iothreadN, thread).
fn qmp_iothreads(daemon: &Daemon) -> Vec<(u32, u32)> {
    let answer = daemon
        .oxvirt(&[
            "qemu-monitor-command",
            "iot",
            "--return-value",
            r#"{"execute":"query-iothreads"}"#,
        ])
        .ok();
    let threads: Vec<serde_json::Value> = serde_json::from_str(answer.trim()).unwrap();
    let mut out: Vec<(u32, u32)> = threads
        .iter()
        .map(|t| {
            let id = t["id"].as_str().unwrap();
            (
                id.strip_prefix("iothread").unwrap().parse().unwrap(),
                t["thread-id"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    out.sort_unstable();
    out
}

fn thread_of(threads: &[(u32, u32)], id: u32) -> u32 {
    threads
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, tid)| *tid)
        .unwrap_or_else(|| panic!("no IOThread {id} in {threads:?}"))
}

/// The definition's IOThread part, as dumpxml prints it: `<iothreads>` up to `<os>`.
fn iothread_part(xml: &str) -> String {
    let start = xml.find("  <iothreads>").expect("an <iothreads> element");
    let end = xml.find("  <os>").expect("an <os> element");
    xml[start..end].to_string()
}

#[test]
fn iothreads_are_made_pinned_and_removed_on_qemus_threads() {
    let (last, all) = host_cpus();
    assert!(last >= 1, "the test needs a host with two CPUs");
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "iot.img", 2048);
    let xml = guest_xml("iot", UUID, &guest_kit(), &disk, 1)
        .replace(
            "<os>",
            "<iothreads>2</iothreads>\n  <cputune>\n    <iothreadpin iothread='1' cpuset='0'/>\n  </cputune>\n  <os>",
        )
        .replace(
            "<driver name='qemu' type='raw'/>",
            "<driver name='qemu' type='raw' iothread='1'/>",
        );
    let (xml_path, define) = daemon.define("iot.xml", &xml);
    define.ok();

    // As virsh prints the same definition's IOThreads, and what its --config verbs make of
    // it (libvirt's embedded driver, no daemon).
    let libvirt_root = daemon.dir.path().join("libvirt");
    let theirs = support::virsh_embedded(
        &libvirt_root,
        &format!(
            "define {}; iothreadinfo iot --config; iothreadadd iot 4 --config; \
             iothreadpin iot 4 {last} --config; iothreaddel iot 2 --config; dumpxml iot --inactive",
            xml_path.display()
        ),
    );
    let ours = daemon.oxvirt(&["iothreadinfo", "iot", "--config"]).ok();
    assert_eq!(
        ours,
        format!(" IOThread ID   CPU Affinity\n-----------------------------\n 1             0\n 2             {all}\n\n")
    );
    let (_, after_define) = theirs.split_once("\n\n").unwrap();
    assert!(after_define.starts_with(&ours), "virsh: {theirs}");
    let their_changes = iothread_part(&theirs);

    // At start: IOThread 1 (the disk's) on CPU 0, IOThread 2 anywhere; the guest reads the disk
    // through it.
    let mut console = daemon.start_with_console("iot");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    assert_eq!(
        console.run("head -c 4096 /dev/vda | wc -c", 1).trim(),
        "4096"
    );
    let pid = qemu_pid();
    let threads = qmp_iothreads(&daemon);
    assert_eq!(
        threads,
        named_iothreads(pid),
        "query-iothreads names QEMU's threads"
    );
    assert_eq!(threads.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
    let (io1, io2) = (thread_of(&threads, 1), thread_of(&threads, 2));
    assert_eq!(allowed_cpus(pid, io1), "0");
    assert_eq!(allowed_cpus(pid, io2), all);
    assert_eq!(
        daemon.oxvirt(&["iothreadinfo", "iot"]).ok(),
        format!(" IOThread ID   CPU Affinity\n-----------------------------\n 1             0\n 2             {all}\n\n")
    );

    // Live pin: the thread moves; the live definition says so, the stored one does not.
    daemon
        .oxvirt(&["iothreadpin", "iot", "2", &last.to_string(), "--live"])
        .ok();
    assert_eq!(allowed_cpus(pid, io2), last.to_string());
    assert_eq!(allowed_cpus(pid, io1), "0");
    let live = daemon.oxvirt(&["dumpxml", "iot"]).ok();
    assert!(
        live.contains(&format!("<iothreadpin iothread='2' cpuset='{last}'/>")),
        "{live}"
    );
    let stored = daemon.oxvirt(&["dumpxml", "--inactive", "iot"]).ok();
    assert!(!stored.contains("<iothreadpin iothread='2'"), "{stored}");

    // Live add: QEMU gets a new thread, named as libvirt names it.
    daemon.oxvirt(&["iothreadadd", "iot", "3", "--live"]).ok();
    let threads = qmp_iothreads(&daemon);
    assert_eq!(threads.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(threads, named_iothreads(pid));
    let live = daemon.oxvirt(&["dumpxml", "iot"]).ok();
    assert!(
        live.contains("<iothreads>3</iothreads>") && live.contains("<iothread id='3'/>"),
        "{live}"
    );
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "--inactive", "iot"]).ok(),
        stored
    );

    // The disk's IOThread cannot go; bad pins and ids are refused: nothing changes.
    let err = daemon.oxvirt(&["iothreaddel", "iot", "1"]).error();
    assert!(err.contains("disk 'vda' uses it"), "{err}");
    let err = daemon.oxvirt(&["iothreadpin", "iot", "1", "999"]).error();
    assert!(
        err.contains("CPU 999 in cpulist '999' exceed the maxcpu"),
        "{err}"
    );
    let err = daemon.oxvirt(&["iothreadpin", "iot", "9", "0"]).error();
    assert!(err.contains("IOThread 9 does not exist"), "{err}");
    let err = daemon.oxvirt(&["iothreadadd", "iot", "0"]).error();
    assert!(err.contains("0 is not one"), "{err}");
    let err = daemon
        .oxvirt(&["iothreadadd", "iot", "2", "--live"])
        .error();
    assert!(err.contains("IOThread 2 already exists"), "{err}");
    let err = daemon
        .oxvirt(&["iothreaddel", "iot", "7", "--config"])
        .error();
    assert!(
        err.contains("IOThread 7 does not exist in the definition"),
        "{err}"
    );
    assert_eq!(qmp_iothreads(&daemon), threads);
    assert_eq!(allowed_cpus(pid, io1), "0");
    assert_eq!(allowed_cpus(pid, io2), last.to_string());
    assert_eq!(daemon.oxvirt(&["dumpxml", "iot"]).ok(), live);
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "--inactive", "iot"]).ok(),
        stored
    );

    // Live delete of an unused one: its thread ends.
    daemon.oxvirt(&["iothreaddel", "iot", "3", "--live"]).ok();
    assert!(
        wait_for(Duration::from_secs(10), || named_iothreads(pid).len() == 2),
        "{:?}",
        named_iothreads(pid)
    );
    assert_eq!(qmp_iothreads(&daemon).len(), 2);

    // --config while it runs: the running guest stays, the definition changes as virsh's does.
    daemon.oxvirt(&["iothreadadd", "iot", "4", "--config"]).ok();
    daemon
        .oxvirt(&["iothreadpin", "iot", "4", &last.to_string(), "--config"])
        .ok();
    daemon.oxvirt(&["iothreaddel", "iot", "2", "--config"]).ok();
    assert_eq!(qmp_iothreads(&daemon).len(), 2);
    let stored = daemon.oxvirt(&["dumpxml", "--inactive", "iot"]).ok();
    assert_eq!(iothread_part(&stored), their_changes, "virsh: {theirs}");
    assert_eq!(
        daemon.oxvirt(&["iothreadinfo", "iot", "--config"]).ok(),
        format!(" IOThread ID   CPU Affinity\n-----------------------------\n 1             0\n 4             {last}\n\n")
    );

    // The next start pins from it.
    drop(console);
    daemon.oxvirt(&["destroy", "iot"]).ok();
    daemon.oxvirt(&["start", "iot"]).ok();
    let pid = qemu_pid();
    let threads = qmp_iothreads(&daemon);
    assert_eq!(threads.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 4]);
    assert_eq!(allowed_cpus(pid, thread_of(&threads, 1)), "0");
    assert_eq!(allowed_cpus(pid, thread_of(&threads, 4)), last.to_string());
    daemon.oxvirt(&["destroy", "iot"]).ok();
}
