//! `<blkiotune>` and `blkiotune` against a private oxvirtd running a real QEMU (TCG) guest
//! whose second disk is a host block device (a loop device over a temporary file, opened by
//! QEMU with cache='none' so the guest's reads reach the device): at start the guest's blkio
//! group has the weight, the device's weight and its read throttle in the kernel's files; the
//! guest reading its disk gets no more than the throttle's rate, and `blkiotune --live` changes
//! it; bad input is refused and changes nothing; a device path that is not a block device
//! refuses the start. On a kernel without the BFQ scheduler (no weight files), the weights
//! refuse the start, naming the files, and the rest runs with the throttle alone.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oxvirt_testkit::process::{ok, LoopDevice};
use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{cgroup_mount, guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "3b8f0d2a-6c4e-4f1a-9b7d-2e5c8a0f4b61";
const MIB: u64 = 1 << 20;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .trim()
        .to_string()
}

/// Whether the kernel offers the BFQ I/O scheduler for `device`. Block I/O weights need it: a
/// kernel built without it (CONFIG_IOSCHED_BFQ unset, no module to load) has no weight files in
/// its blkio/io groups at all, and oxvirtd must then refuse a weight at start, naming them.
fn offers_bfq(device: &Path) -> bool {
    let name = device.file_name().expect("device name");
    read(&Path::new("/sys/block").join(name).join("queue/scheduler"))
        .split_whitespace()
        .any(|s| s.trim_matches(['[', ']']) == "bfq")
}

/// The loop device's I/O scheduler set to BFQ (per-device weights need it), put back to what
/// it was on drop: the device node outlives the test.
struct Scheduler {
    file: PathBuf,
    before: String,
}

impl Scheduler {
    fn bfq(device: &Path) -> Scheduler {
        let name = device.file_name().expect("device name");
        let file = Path::new("/sys/block").join(name).join("queue/scheduler");
        let text = read(&file);
        let before = text
            .split_whitespace()
            .find_map(|s| s.strip_prefix('[')?.strip_suffix(']'))
            .expect("the current scheduler")
            .to_string();
        std::fs::write(&file, "bfq").expect("select BFQ");
        Scheduler { file, before }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.before);
    }
}

/// The guest reads `mib` MiB of vdb from `skip_mib` on with direct I/O; the rate the host saw,
/// in bytes per second (the console's round trip only makes it lower).
fn guest_read_rate(
    console: &mut support::ConsoleSession,
    tag: u32,
    skip_mib: u64,
    mib: u64,
) -> f64 {
    let begin = Instant::now();
    let out = console.run(
        &format!(
            "dd if=/dev/vdb of=/dev/null bs=64k skip={} count={} iflag=direct 2>&1",
            skip_mib * 16,
            mib * 16
        ),
        tag,
    );
    let elapsed = begin.elapsed().as_secs_f64();
    assert!(out.contains(&format!("{}+0 records in", mib * 16)), "{out}");
    let rate = (mib * MIB) as f64 / elapsed;
    println!("read {mib} MiB at {:.2} MiB/s", rate / MIB as f64);
    rate
}

/// The group's read throttle (bytes/s) of device `number` as the kernel lists it: v1's
/// `MAJ:MIN N` line, v2's `rbps=N` (`max`, or no line: none).
fn read_throttle(group: &Path, v2: bool, number: &str) -> Option<u64> {
    let file = if v2 {
        "io.max"
    } else {
        "blkio.throttle.read_bps_device"
    };
    let text = read(&group.join(file));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{number} ")))?;
    let value = if v2 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("rbps="))?
    } else {
        line
    };
    value.parse().ok()
}

#[test]
fn blkiotune_reaches_the_guests_blkio_group_and_throttles_its_reads() {
    // The device outlives the daemon (declared first, dropped last): QEMU is gone when it is
    // detached, also when the test fails.
    let backing_dir = tempfile::tempdir().expect("tempdir");
    let backing = make_disk(backing_dir.path(), "device.img", 64 * MIB / 512);
    let device = LoopDevice::attach(&backing);
    let bfq = offers_bfq(device.path());
    let _scheduler = bfq.then(|| Scheduler::bfq(device.path()));
    let dev = device.path().to_str().expect("utf-8").to_string();
    // MAJ:MIN as util-linux prints it.
    let number = ok("lsblk", &["-ndo", "MAJ:MIN", &dev]).trim().to_string();

    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "bt.img", 2048);
    let xml = guest_xml("bt", UUID, &guest_kit(), &disk, 1)
        .replace(
            "<vcpu>",
            &format!(
                "<blkiotune>\n    <weight>300</weight>\n    <device>\n      <path>{dev}</path>\n      \
                 <weight>400</weight>\n      <read_bytes_sec>{}</read_bytes_sec>\n    </device>\n  \
                 </blkiotune>\n  <vcpu>",
                MIB
            ),
        )
        .replace(
            "    <serial type='pty'>",
            &format!(
                "    <disk type='block' device='disk'>\n      <driver name='qemu' type='raw' cache='none'/>\n      \
                 <source dev='{dev}'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n    <serial type='pty'>"
            ),
        );
    daemon.define("bt.xml", &xml).1.ok();

    // The definition as libvirt prints it, and blkiotune's lines as Debian's virsh prints them
    // for the same definition (embedded driver).
    let stored = daemon.oxvirt(&["dumpxml", "bt"]).ok();
    let expected = format!(
        "  <blkiotune>\n    <weight>300</weight>\n    <device>\n      <path>{dev}</path>\n      \
         <weight>400</weight>\n      <read_bytes_sec>1048576</read_bytes_sec>\n    </device>\n  </blkiotune>\n"
    );
    assert!(stored.contains(&expected), "{stored}");
    let theirs = support::virsh_embedded(
        &daemon.dir.path().join("libvirt"),
        &format!(
            "define {}; blkiotune bt --config",
            daemon.dir.path().join("bt.xml").display()
        ),
    );
    let config = daemon.oxvirt(&["blkiotune", "bt", "--config"]).ok();
    assert_eq!(config, theirs.split_once("\n\n").expect("two outputs").1);
    assert!(
        config.contains(&format!("device_read_bytes_sec: {dev},1048576\n")),
        "{config}"
    );
    let config = if bfq {
        config
    } else {
        // No weight files on this kernel: the start is refused naming them, nothing runs; the
        // rest goes on with the throttle alone.
        let err = daemon.oxvirt(&["start", "bt"]).error();
        let files = if cgroup_mount("blkio").1 {
            "io.bfq.weight or io.weight"
        } else {
            "blkio.bfq.weight or blkio.weight"
        };
        assert!(
            err.contains("domain 'bt'") && err.contains(files) && err.contains("BFQ"),
            "{err}"
        );
        assert_eq!(support::qemu_pid(UUID), None, "no QEMU was left running");
        let throttle_only = xml
            .replace("<weight>300</weight>\n    ", "")
            .replace("<weight>400</weight>\n      ", "");
        assert_ne!(throttle_only, xml);
        daemon.define("bt.xml", &throttle_only).1.ok();
        daemon.oxvirt(&["blkiotune", "bt", "--config"]).ok()
    };

    let mut console = daemon.start_with_console("bt");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let pid = support::qemu_pid(UUID).expect("the guest's QEMU");

    // The kernel's view: QEMU in the guest's blkio group, the settings in its files.
    let (root, v2) = cgroup_mount("blkio");
    let group = root.join("oxvirt").join(UUID);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let line = own
        .lines()
        .find(|l| match l.split(':').nth(1) {
            Some(controllers) if !v2 => controllers.split(',').any(|c| c == "blkio"),
            Some(controllers) => controllers.is_empty(),
            None => false,
        })
        .expect("QEMU's blkio line");
    assert!(line.ends_with(&format!("/oxvirt/{UUID}")), "{own}");
    if !bfq {
        // Checked above: weights refuse the start on this kernel.
    } else if v2 {
        let weights = read(&group.join("io.bfq.weight"));
        assert!(weights.contains("default 300"), "{weights}");
        assert!(weights.contains(&format!("{number} 400")), "{weights}");
    } else {
        assert_eq!(read(&group.join("blkio.bfq.weight")), "300");
        let weights = read(&group.join("blkio.bfq.weight_device"));
        assert!(weights.contains(&format!("{number} 400")), "{weights}");
    }
    assert_eq!(read_throttle(&group, v2, &number), Some(MIB));

    // The guest reads 4 MiB of its disk: no faster than 1 MiB/s (loose bound: blk-throttle
    // lets a first slice through early), and the bytes went through the guest's group.
    let rate = guest_read_rate(&mut console, 1, 0, 4);
    assert!(rate < 1.4 * MIB as f64, "the throttle holds: {rate} B/s");
    if !v2 {
        let served = read(&group.join("blkio.throttle.io_service_bytes"));
        let read_bytes: u64 = served
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{number} Read ")))
            .expect("the device's read bytes")
            .parse()
            .expect("a number");
        assert!(read_bytes >= 4 * MIB, "{served}");
    }

    // Live: a faster throttle reaches the kernel's file and the live definition, not the
    // stored one, and the guest reads faster than the old limit, within the new one.
    let set_read_throttle = |bytes: u64| {
        let list = format!("{dev},{bytes}");
        let args = [
            "blkiotune",
            "bt",
            "--live",
            "--device-read-bytes-sec",
            &list,
        ];
        daemon.oxvirt(&args).ok();
    };
    set_read_throttle(8 * MIB);
    assert_eq!(read_throttle(&group, v2, &number), Some(8 * MIB));
    let rate = guest_read_rate(&mut console, 2, 8, 16);
    assert!(rate > 1.5 * MIB as f64, "the old limit is gone: {rate} B/s");
    assert!(rate < 10.0 * MIB as f64, "the new limit holds: {rate} B/s");
    let live = daemon.oxvirt(&["blkiotune", "bt"]).ok();
    let expected_live = if bfq {
        format!(
            "weight         : 300\ndevice_weight  : {dev},400\ndevice_read_iops_sec: \n\
             device_write_iops_sec: \ndevice_read_bytes_sec: {dev},8388608\ndevice_write_bytes_sec: \n\n"
        )
    } else {
        config.replace(&format!("{dev},1048576"), &format!("{dev},8388608"))
    };
    assert_ne!(expected_live, config);
    assert_eq!(live, expected_live);
    assert_eq!(daemon.oxvirt(&["blkiotune", "bt", "--config"]).ok(), config);

    // Bad input: refused with exit status 1, nothing changes (files, live, stored).
    let files = |group: &Path| -> String {
        let names: &[&str] = if !bfq {
            &[if v2 {
                "io.max"
            } else {
                "blkio.throttle.read_bps_device"
            }]
        } else if v2 {
            &["io.bfq.weight", "io.max"]
        } else {
            &[
                "blkio.bfq.weight",
                "blkio.bfq.weight_device",
                "blkio.throttle.read_bps_device",
            ]
        };
        names
            .iter()
            .map(|n| read(&group.join(n)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = files(&group);
    let weight_5 = format!("{dev},5");
    let malformed = format!("{dev},x");
    let refused: [(&[&str], String); 6] = [
        (
            &["--live", "--config", "--weight", "5000"],
            "I/O weight 5000 is out of range [10, 1000]".to_string(),
        ),
        (
            &["--live", "--device-read-bytes-sec", "/dev/oxvirt-none,1000"],
            "Path '/dev/oxvirt-none' is not accessible".to_string(),
        ),
        (
            &["--config", "--device-weights", "/etc/hostname,500"],
            "Path '/etc/hostname' must be a block device".to_string(),
        ),
        (
            &["--device-weights", &weight_5],
            format!("I/O weight 5 of device '{dev}' is out of range [10, 1000]"),
        ),
        (
            &["--weight", "0"],
            "Invalid value of 0 for I/O weight".to_string(),
        ),
        (
            &["--device-read-iops-sec", &malformed],
            "invalid value 'x' for parameter 'device_read_iops_sec'".to_string(),
        ),
    ];
    for (args, expected) in refused {
        let err = daemon
            .oxvirt(&[&["blkiotune", "bt"][..], args].concat())
            .error();
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
    assert_eq!(files(&group), before);
    assert_eq!(daemon.oxvirt(&["blkiotune", "bt"]).ok(), live);
    assert_eq!(daemon.oxvirt(&["blkiotune", "bt", "--config"]).ok(), config);

    // A device value of 0 removes that setting live (the kernel's file loses the device).
    set_read_throttle(0);
    assert_eq!(read_throttle(&group, v2, &number), None);
    let live = daemon.oxvirt(&["blkiotune", "bt"]).ok();
    assert!(live.contains("device_read_bytes_sec: \n"), "{live}");

    // Stopped: the groups are gone.
    daemon.oxvirt(&["destroy", "bt"]).ok();
    assert!(wait_for(Duration::from_secs(10), || !group.exists()));
}

#[test]
fn a_blkiotune_path_that_is_no_block_device_refuses_the_start() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "nb.img", 2048);
    let uuid = "9d4e2f6a-1b3c-4d5e-8f70-a1b2c3d4e5f6";
    let xml = guest_xml("nb", uuid, &guest_kit(), &disk, 1).replace(
        "<vcpu>",
        "<blkiotune>\n    <device>\n      <path>/etc/hostname</path>\n      \
         <read_bytes_sec>1000</read_bytes_sec>\n    </device>\n  </blkiotune>\n  <vcpu>",
    );
    daemon.define("nb.xml", &xml).1.ok();
    let err = daemon.oxvirt(&["start", "nb"]).error();
    assert!(
        err.contains("domain 'nb'") && err.contains("Path '/etc/hostname' must be a block device"),
        "{err}"
    );
    assert_eq!(support::qemu_pid(uuid), None, "no QEMU was left running");
    let state = daemon.oxvirt(&["domstate", "nb"]).ok();
    assert_eq!(state.trim(), "shut off");
}
