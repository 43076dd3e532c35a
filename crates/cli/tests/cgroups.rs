//! A guest's cgroups against a private oxvirtd running a real QEMU (TCG) guest: at start its
//! QEMU is in a group of its own with `<cputune>`'s shares and quota and `<memtune>`'s limit
//! in the kernel's files (read from this host's cgroup mounts, v1 or v2), its vCPU thread in a
//! group of its own; a busy loop in the guest gets about the quota of one CPU (measured from the
//! group's CPU time); the groups go when the guest stops.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{cgroup_mount as mount_of, guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "7c1e3a5b-9d2f-4b6a-8e0c-4a6b8c0d2e4f";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_reach_the_guests_cgroups_and_hold() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "cg.img", 2048);
    let xml = guest_xml("cg", UUID, &guest_kit(), &disk, 1).replace(
        "<os>",
        "<memtune><hard_limit unit='MiB'>1024</hard_limit></memtune>\n  \
         <cputune><shares>512</shares><period>100000</period><quota>20000</quota></cputune>\n  <os>",
    );
    daemon.define("cg.xml", &xml).1.ok();
    let stored = daemon.oxvirt(&["dumpxml", "cg"]).ok();
    assert!(
        stored.contains("<memtune>\n    <hard_limit unit='KiB'>1048576</hard_limit>\n  </memtune>"),
        "{stored}"
    );
    // The definition's limits as Debian's virsh prints the same definition's (embedded driver).
    let libvirt_root = daemon.dir.path().join("libvirt");
    let theirs = support::virsh_embedded(
        &libvirt_root,
        &format!(
            "define {}; schedinfo cg --config; memtune cg --config",
            daemon.dir.path().join("cg.xml").display()
        ),
    );
    let ours = [
        daemon.oxvirt(&["schedinfo", "cg", "--config"]).ok(),
        daemon.oxvirt(&["memtune", "cg", "--config"]).ok(),
    ]
    .concat();
    assert_eq!(ours, theirs.split_once("\n\n").unwrap().1);

    let mut console = daemon.start_with_console("cg");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let pid = support::qemu_pid(UUID).expect("the guest's QEMU");

    // The kernel's view: QEMU in its own groups, the limits in their files.
    let (cpu_root, v2) = mount_of("cpu");
    let (memory_root, _) = mount_of("memory");
    let (acct_root, _) = mount_of("cpuacct");
    let group = |root: &Path| root.join("oxvirt").join(UUID);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("/oxvirt/{UUID}")), "{own}");
    let vcpu0 = group(&cpu_root).join("vcpu0");
    if v2 {
        assert_eq!(read(&group(&cpu_root).join("cpu.weight")), "20");
        assert_eq!(read(&vcpu0.join("cpu.max")), "20000 100000");
        assert_eq!(read(&group(&memory_root).join("memory.max")), "1073741824");
    } else {
        assert_eq!(read(&group(&cpu_root).join("cpu.shares")), "512");
        assert_eq!(read(&vcpu0.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(&vcpu0.join("cpu.cfs_period_us")), "100000");
        assert_eq!(
            read(&group(&memory_root).join("memory.limit_in_bytes")),
            "1073741824"
        );
    }
    let vcpu_threads = read(&vcpu0.join(if v2 { "cgroup.threads" } else { "tasks" }));
    assert_eq!(
        vcpu_threads.lines().count(),
        1,
        "one vCPU thread: {vcpu_threads}"
    );

    // A busy loop in the guest: its vCPU gets about a fifth of a CPU (loose bound: the quota
    // is enforced per period, TCG adds the translator's own time to the thread).
    let usage = || -> u64 {
        let acct = group(&acct_root).join("vcpu0");
        if v2 {
            read(&acct.join("cpu.stat"))
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .unwrap()
                .parse::<u64>()
                .unwrap()
                * 1000
        } else {
            read(&acct.join("cpuacct.usage")).parse().unwrap()
        }
    };
    console.send_line("while :; do :; done &");
    // Let the loop start, then measure a window of a few seconds.
    let start_usage = usage();
    assert!(wait_for(Duration::from_secs(10), || usage()
        > start_usage + 50_000_000));
    let (before, since) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let used = (usage() - before) as f64 / since.elapsed().as_nanos() as f64;
    println!(
        "vCPU 0 used {:.1}% of a CPU under a 20% quota",
        used * 100.0
    );
    assert!(used > 0.05, "the busy loop ran: {used}");
    assert!(used < 0.4, "the quota holds: {used}");

    // Live changes reach the kernel's files and the live definition; the stored one keeps its.
    daemon
        .oxvirt(&["schedinfo", "cg", "--live", "--set", "vcpu_quota=50000"])
        .ok();
    daemon
        .oxvirt(&["memtune", "cg", "--live", "--hard-limit", "2G"])
        .ok();
    if v2 {
        assert_eq!(read(&vcpu0.join("cpu.max")), "50000 100000");
        assert_eq!(read(&group(&memory_root).join("memory.max")), "2147483648");
    } else {
        assert_eq!(read(&vcpu0.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(
            read(&group(&memory_root).join("memory.limit_in_bytes")),
            "2147483648"
        );
    }
    let sched = daemon.oxvirt(&["schedinfo", "cg"]).ok();
    assert!(sched.contains("vcpu_quota     : 50000\n"), "{sched}");
    assert!(sched.contains("emulator_quota : -1\n"), "{sched}");
    let mem = daemon.oxvirt(&["memtune", "cg"]).ok();
    assert!(mem.starts_with("hard_limit     : 2097152\n"), "{mem}");
    let stored = daemon.oxvirt(&["dumpxml", "--inactive", "cg"]).ok();
    assert!(stored.contains("<quota>20000</quota>"), "{stored}");

    // Bad values: refused, nothing changes.
    let err = daemon
        .oxvirt(&["schedinfo", "cg", "--set", "vcpu_quota=5"])
        .error();
    assert!(err.contains("out of range"), "{err}");
    let err = daemon
        .oxvirt(&["schedinfo", "cg", "--set", "nonsense=5"])
        .error();
    assert!(err.contains("has no parameter 'nonsense'"), "{err}");
    assert_eq!(daemon.oxvirt(&["schedinfo", "cg"]).ok(), sched);

    // Stopped: the groups are gone.
    daemon.oxvirt(&["destroy", "cg"]).ok();
    assert!(wait_for(Duration::from_secs(10), || !group(&cpu_root).exists()));
    assert!(!group(&memory_root).exists());
}
