//! Disks of running guests against a private oxvirtd running real QEMU (TCG) guests: a qcow2
//! image with known bytes hot-plugged into a `pc` and a `q35` guest is a block device the guest
//! reads those bytes from, and is gone from it after detach-disk; `--config` changes only the
//! next start's definition; domblklist, domblkinfo, domblkstat follow; blkdeviotune's IOPS limit
//! slows the guest's own reads, and so does an `<iotune>` in the definition from the guest's
//! first I/O (blkdeviotune --config changes it for the next start); bad input is refused and
//! changes nothing.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, ConsoleSession, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const IMAGE_MIB: u64 = 16;

/// A qcow2 image whose first 64 KiB are the byte `0x5a`, written by QEMU's own qemu-io.
fn known_qcow2(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(program).args(args).output().expect(program);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let file = path.to_str().unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            file,
            &format!("{IMAGE_MIB}M"),
        ],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 0 64k", file],
    );
    path
}

/// A private oxvirtd, with a root disk and [`known_qcow2`]'s image in its directory.
fn daemon_and_images() -> (Daemon, PathBuf, PathBuf) {
    let daemon = Daemon::start();
    let root = make_disk(daemon.dir.path(), "root.img", 2048);
    let data = known_qcow2(daemon.dir.path(), "data.qcow2");
    (daemon, root, data)
}

fn boot(daemon: &Daemon, name: &str) -> ConsoleSession {
    let mut console = daemon.start_with_console(name);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    // The kernel's messages about the devices coming and going would cut the shell's lines.
    console.run("dmesg -n 1", 100);
    console
}

/// Defines the test guest `name` (a pc machine booting from `root`, its `vda`).
fn define_guest(daemon: &Daemon, name: &str, uuid: &str, root: &Path) {
    let xml = guest_xml(name, uuid, &guest_kit(), root, 1);
    daemon.define(&format!("{name}.xml"), &xml).1.ok();
}

/// `attach-disk DOMAIN SOURCE TARGET ARGS... --live`, which must succeed.
#[track_caller]
fn attach_live(daemon: &Daemon, domain: &str, source: &str, target: &str, args: &[&str]) {
    let run =
        daemon.oxvirt(&[&["attach-disk", domain, source, target], args, &["--live"]].concat());
    assert_eq!(run.ok(), "Disk attached successfully\n\n");
}

/// `detach-disk DOMAIN TARGET --live`, which must succeed.
#[track_caller]
fn detach_live(daemon: &Daemon, domain: &str, target: &str) {
    let run = daemon.oxvirt(&["detach-disk", domain, target, "--live"]);
    assert_eq!(run.ok(), "Disk detached successfully\n\n");
}

/// Waits in the guest (bounded) until /sys/block/DEV exists (`present`) or is gone; fails
/// the test, with the console's output, if it does not come to that.
#[track_caller]
fn expect_guest_sees(console: &mut ConsoleSession, dev: &str, present: bool, tag: u32) {
    let test = if present { "-e" } else { "! -e" };
    let out = console.run(
        &format!(
            "i=0; while [ $i -lt 200 ] && ! [ {test} /sys/block/{dev} ]; do sleep 0.1; i=$((i+1)); done; [ {test} /sys/block/{dev} ] && echo YES-$((1+1))"
        ),
        tag,
    );
    assert!(
        out.contains("YES-2"),
        "the guest never got to {test} /sys/block/{dev}:\n{}",
        console.all_output()
    );
}

/// Reads `count` 4 KiB blocks of /dev/vdb with direct I/O in the guest and returns the rate
/// the guest measured (operations per second, by its own clock).
fn guest_direct_read_rate(console: &mut ConsoleSession, count: u32, tag: u32) -> f64 {
    let timing = console.run(
        &format!("a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vdb of=/dev/null bs=4k count={count} iflag=direct 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo T $a $b"),
        tag,
    );
    let times: Vec<f64> = timing
        .lines()
        .find_map(|l| l.strip_prefix("T "))
        .unwrap_or_else(|| panic!("{timing}"))
        .split(' ')
        .map(|t| t.trim().parse().unwrap())
        .collect();
    let elapsed = times[1] - times[0];
    let rate = f64::from(count) / elapsed.max(0.01);
    eprintln!("{count} direct 4 KiB reads: {elapsed:.2} s, {rate:.1} IOPS");
    rate
}

fn stat_value(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("vdb {key} ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_disk_hot_plugged_into_a_pc_guest_is_read_throttled_and_unplugged() {
    let (daemon, root, data) = daemon_and_images();
    let dir = daemon.dir.path();
    let data_path = data.to_str().unwrap();
    define_guest(
        &daemon,
        "dpc",
        "5b1d7e0a-3c4f-4a6b-8d2e-1f3a5c7e9b0d",
        &root,
    );

    // Shut off: --live is refused, the default (--current) is the definition.
    let error = daemon
        .oxvirt(&["attach-disk", "dpc", data_path, "vdb", "--live"])
        .error();
    assert!(error.contains("not running"), "{error}");
    assert_eq!(
        daemon
            .oxvirt(&[
                "attach-disk",
                "dpc",
                data_path,
                "vdc",
                "--subdriver",
                "qcow2"
            ])
            .ok(),
        "Disk attached successfully\n\n"
    );
    let inactive = daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok();
    assert!(
        inactive.contains("<target dev='vdc' bus='virtio'/>"),
        "{inactive}"
    );
    assert_eq!(
        daemon.oxvirt(&["detach-disk", "dpc", "vdc"]).ok(),
        "Disk detached successfully\n\n"
    );
    let inactive = daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok();
    assert!(!inactive.contains("vdc"), "{inactive}");
    // update-device changes a CD-ROM's medium only.
    let update = dir.join("update.xml");
    std::fs::write(
        &update,
        format!("<disk type='file' device='disk'><source file='{data_path}'/><target dev='vda' bus='virtio'/></disk>"),
    )
    .unwrap();
    let error = daemon
        .oxvirt(&["update-device", "dpc", update.to_str().unwrap()])
        .error();
    assert!(error.contains("only a CD-ROM's medium"), "{error}");

    let mut console = boot(&daemon, "dpc");

    // Bad input: each refused with what and where, nothing changes.
    let live_before = daemon.oxvirt(&["dumpxml", "dpc"]).ok();
    let config_before = daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok();
    let error = daemon
        .oxvirt(&["attach-disk", "dpc", data_path, "vda", "--live"])
        .error();
    assert_eq!(error, "error: target vda already exists");
    let missing = dir.join("missing.qcow2");
    let error = daemon
        .oxvirt(&[
            "attach-disk",
            "dpc",
            missing.to_str().unwrap(),
            "vdb",
            "--live",
        ])
        .error();
    assert!(
        error.contains("Cannot access storage file") && error.contains("missing.qcow2"),
        "{error}"
    );
    let error = daemon
        .oxvirt(&["detach-disk", "dpc", "vdz", "--live"])
        .error();
    assert_eq!(
        error,
        "error: No disk found whose source path or target is vdz"
    );
    let error = daemon
        .oxvirt(&["detach-disk", "dpc", "vda", "--live"])
        .error();
    assert!(error.contains("booted from"), "{error}");
    let refused_device = |name: &str, xml: &str| {
        let file = dir.join(name);
        std::fs::write(&file, xml).unwrap();
        daemon
            .oxvirt(&["attach-device", "dpc", file.to_str().unwrap(), "--live"])
            .error()
    };
    let error = refused_device(
        "broken.xml",
        "<disk type='file' device='disk'>\n  <source file='/x'>\n  <target dev='vdb'/>\n</disk>\n",
    );
    assert!(error.contains("line 4"), "{error}");
    let error = refused_device(
        "nic.xml",
        "<interface type='network'><source network='default'/></interface>\n",
    );
    assert!(error.contains("<interface> at line 1"), "{error}");
    assert_eq!(daemon.oxvirt(&["dumpxml", "dpc"]).ok(), live_before);
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok(),
        config_before
    );
    expect_guest_sees(&mut console, "vdb", false, 1);

    // attach-disk --live: the guest gets /dev/vdb with the image's bytes.
    attach_live(&daemon, "dpc", data_path, "vdb", &["--subdriver", "qcow2"]);
    expect_guest_sees(&mut console, "vdb", true, 2);
    let bytes = console.run("hexdump -C -n 16 /dev/vdb", 3);
    assert!(
        bytes.contains("5a 5a 5a 5a 5a 5a 5a 5a  5a 5a 5a 5a 5a 5a 5a 5a"),
        "{bytes}"
    );
    let list = daemon.oxvirt(&["domblklist", "dpc"]).ok();
    assert!(list.contains(&format!(" vdb      {data_path}\n")), "{list}");
    let info = daemon.oxvirt(&["domblkinfo", "dpc", "vdb"]).ok();
    assert!(
        info.starts_with(&format!("Capacity:       {}\n", IMAGE_MIB << 20)),
        "{info}"
    );
    // Live only: the next start's definition has no vdb.
    let list = daemon.oxvirt(&["domblklist", "dpc", "--inactive"]).ok();
    assert!(list.contains(" vda ") && !list.contains("vdb"), "{list}");
    let inactive = daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok();
    assert!(!inactive.contains("vdb"), "{inactive}");
    assert!(daemon
        .oxvirt(&["dumpxml", "dpc"])
        .ok()
        .contains("<target dev='vdb' bus='virtio'/>"));

    // domblkstat: a guest read is counted.
    let before = stat_value(&daemon.oxvirt(&["domblkstat", "dpc", "vdb"]).ok(), "rd_req");
    console.run(
        "dd if=/dev/vdb of=/dev/null bs=4k count=10 skip=100 iflag=direct 2>/dev/null",
        4,
    );
    let after = stat_value(&daemon.oxvirt(&["domblkstat", "dpc", "vdb"]).ok(), "rd_req");
    assert!(after >= before + 10, "rd_req {before} -> {after}");
    let human = daemon.oxvirt(&["domblkstat", "dpc", "vdb", "--human"]).ok();
    assert!(
        human.starts_with("Device: vdb\n number of read operations:      "),
        "{human}"
    );

    // blkdeviotune: 50 IOPS, then 200 direct reads take at least ~2 s of the guest's time.
    assert_eq!(
        daemon
            .oxvirt(&["blkdeviotune", "dpc", "vdb", "--total-iops-sec", "50"])
            .ok(),
        "\n"
    );
    let shown = daemon.oxvirt(&["blkdeviotune", "dpc", "vdb"]).ok();
    assert!(shown.contains("total_iops_sec : 50\n"), "{shown}");
    let rate = guest_direct_read_rate(&mut console, 200, 5);
    assert!(rate <= 100.0, "{rate:.1} IOPS at a limit of 50");
    let error = daemon
        .oxvirt(&[
            "blkdeviotune",
            "dpc",
            "vdb",
            "--total-iops-sec",
            "50",
            "--read-iops-sec",
            "10",
        ])
        .error();
    assert!(
        error.contains("total and read/write iops_sec cannot be set at the same time"),
        "{error}"
    );
    daemon
        .oxvirt(&["blkdeviotune", "dpc", "vdb", "--total-iops-sec", "0"])
        .ok();

    // detach-disk --live: the guest releases it.
    detach_live(&daemon, "dpc", "vdb");
    expect_guest_sees(&mut console, "vdb", false, 6);
    assert!(!daemon.oxvirt(&["domblklist", "dpc"]).ok().contains("vdb"));
    let error = daemon
        .oxvirt(&["detach-disk", "dpc", "vdb", "--live"])
        .error();
    assert_eq!(
        error,
        "error: No disk found whose source path or target is vdb"
    );

    // attach-device --config of a running domain: the next start has it, the guest not.
    let device = dir.join("disk.xml");
    std::fs::write(
        &device,
        format!(
            "<disk type='file' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  <source file='{data_path}'/>\n  <target dev='vdd' bus='virtio'/>\n</disk>\n"
        ),
    )
    .unwrap();
    assert_eq!(
        daemon
            .oxvirt(&["attach-device", "dpc", device.to_str().unwrap(), "--config"])
            .ok(),
        "Device attached successfully\n\n"
    );
    let inactive = daemon.oxvirt(&["dumpxml", "dpc", "--inactive"]).ok();
    assert!(
        inactive.contains("<target dev='vdd' bus='virtio'/>"),
        "{inactive}"
    );
    assert!(!daemon.oxvirt(&["dumpxml", "dpc"]).ok().contains("vdd"));
    expect_guest_sees(&mut console, "vdd", false, 7);
    assert_eq!(
        daemon
            .oxvirt(&["detach-device", "dpc", device.to_str().unwrap(), "--config"])
            .ok(),
        "Device detached successfully\n\n"
    );
    assert!(!daemon
        .oxvirt(&["dumpxml", "dpc", "--inactive"])
        .ok()
        .contains("vdd"));
    daemon.oxvirt(&["destroy", "dpc"]).ok();
}

/// `blkdeviotune DOM vdb ARGS...` must fail with exit 1 and `wanted` in its error, and change
/// nothing in the next start's definition.
#[track_caller]
fn refused_iotune(daemon: &Daemon, args: &[&str], wanted: &str) {
    let before = daemon.oxvirt(&["dumpxml", "dio", "--inactive"]).ok();
    let run = daemon.oxvirt(&[&["blkdeviotune", "dio"], args].concat());
    // (clap's usage errors add a hint line; the daemon's are one line.)
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(wanted),
        "{run:#?}"
    );
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "dio", "--inactive"]).ok(),
        before
    );
}

#[test]
fn a_disk_defined_with_iotune_is_throttled_from_its_first_io() {
    let (daemon, root, data) = daemon_and_images();
    let xml = guest_xml(
        "dio",
        "0c7e3b6a-9d41-4f2e-8a57-3b1d6e9f2c48",
        &guest_kit(),
        &root,
        1,
    )
    .replace(
        "    <serial type='pty'>",
        &format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='{}'/>\n      <target dev='vdb' bus='virtio'/>\n      <iotune>\n        <total_iops_sec>50</total_iops_sec>\n      </iotune>\n    </disk>\n    <serial type='pty'>",
            data.display()
        ),
    );
    daemon.define("dio.xml", &xml).1.ok();
    // Shut off: blkdeviotune reads the definition (--current is --config), which keeps it.
    assert_eq!(total_iops(&daemon, &[]), 50);
    assert!(daemon
        .oxvirt(&["dumpxml", "dio", "--inactive"])
        .ok()
        .contains("<iotune>\n        <total_iops_sec>50</total_iops_sec>\n      </iotune>"));
    // Bad input: refused, exit 1, the definition unchanged.
    refused_iotune(
        &daemon,
        &["vdb", "--read-iops-sec", "10", "--total-iops-sec", "60"],
        "total and read/write iops_sec cannot be set at the same time",
    );
    refused_iotune(
        &daemon,
        &["vdb", "--total-iops-sec", "-5"],
        "invalid value '-5'",
    );
    refused_iotune(
        &daemon,
        &["vdz", "--total-iops-sec", "5"],
        "No disk found whose source path or target is vdz",
    );
    refused_iotune(
        &daemon,
        &[
            "vdb",
            "--total-iops-sec-max",
            "100",
            "--total-iops-sec",
            "0",
        ],
        "value 'total_iops_sec_max' cannot be set if 'total_iops_sec' is not set",
    );
    refused_iotune(&daemon, &["vdb", "--live"], "not running");

    // From the guest's first I/O on vdb: at most about twice the limit.
    let mut console = boot(&daemon, "dio");
    let rate = guest_direct_read_rate(&mut console, 200, 1);
    assert!(rate <= 100.0, "{rate:.1} IOPS at <total_iops_sec>50");
    // The running guest's limits, read from QEMU.
    assert_eq!(total_iops(&daemon, &[]), 50);

    // --config while it runs: the next start's definition only.
    set_iotune(&daemon, &["--config", "--total-iops-sec", "25"]);
    let inactive = daemon.oxvirt(&["dumpxml", "dio", "--inactive"]).ok();
    assert!(
        inactive.contains("<total_iops_sec>25</total_iops_sec>"),
        "{inactive}"
    );
    assert_eq!(total_iops(&daemon, &["--config"]), 25);
    assert_eq!(total_iops(&daemon, &["--live"]), 50);
    refused_iotune(
        &daemon,
        &[
            "vdb",
            "--config",
            "--write-iops-sec",
            "5",
            "--total-iops-sec",
            "5",
        ],
        "total and read/write iops_sec cannot be set at the same time",
    );
    // The live path still works on a disk that started with limits.
    set_iotune(&daemon, &["--live", "--total-iops-sec", "40"]);
    assert_eq!(total_iops(&daemon, &[]), 40);
    let live = daemon.oxvirt(&["dumpxml", "dio"]).ok();
    assert!(
        live.contains("<total_iops_sec>40</total_iops_sec>"),
        "{live}"
    );
    drop(console);
    daemon.oxvirt(&["destroy", "dio"]).ok();

    // The next start has the --config limit.
    let mut console = boot(&daemon, "dio");
    assert_eq!(total_iops(&daemon, &[]), 25);
    let rate = guest_direct_read_rate(&mut console, 100, 2);
    assert!(rate <= 50.0, "{rate:.1} IOPS at <total_iops_sec>25");
    drop(console);
    daemon.oxvirt(&["destroy", "dio"]).ok();
}

/// `blkdeviotune dio vdb ARGS... LIMITS...`, which prints nothing but its empty line.
#[track_caller]
fn set_iotune(daemon: &Daemon, args: &[&str]) {
    let run = daemon.oxvirt(&[&["blkdeviotune", "dio", "vdb"], args].concat());
    assert_eq!(run.ok(), "\n");
}

/// The `total_iops_sec` blkdeviotune shows for dio's vdb (`scope`: `--live`, `--config` or none).
#[track_caller]
fn total_iops(daemon: &Daemon, scope: &[&str]) -> u64 {
    let shown = daemon
        .oxvirt(&[&["blkdeviotune", "dio", "vdb"], scope].concat())
        .ok();
    // virsh's order: the byte rates first.
    assert!(shown.starts_with("total_bytes_sec: "), "{shown}");
    shown
        .lines()
        .find_map(|line| line.strip_prefix("total_iops_sec : "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no total_iops_sec in:\n{shown}"))
}

#[test]
fn a_q35_guest_hot_plugs_into_its_spare_root_port() {
    let (daemon, root, data) = daemon_and_images();
    let data_path = data.to_str().unwrap();
    // No disk at start: the first disk hot-plugged is the first hard disk of the live
    // definition, yet not one the guest booted from, so it can be detached.
    let xml = guest_xml(
        "dq35",
        "6c2e8f1b-4d5a-4b7c-9e3f-2a4b6d8f0c1e",
        &guest_kit(),
        &root,
        1,
    )
    .replace("machine='pc'", "machine='q35'");
    let disk_start = xml.find("    <disk ").unwrap();
    let disk_end = xml.find("</disk>\n").unwrap() + "</disk>\n".len();
    let xml = format!("{}{}", &xml[..disk_start], &xml[disk_end..]);
    daemon.define("dq35.xml", &xml).1.ok();
    let mut console = boot(&daemon, "dq35");

    attach_live(&daemon, "dq35", data_path, "vdb", &["--subdriver", "qcow2"]);
    // The guest names disks in the order it finds them: its first is vda.
    expect_guest_sees(&mut console, "vda", true, 1);
    let bytes = console.run("hexdump -C -n 16 /dev/vda", 2);
    assert!(bytes.contains("5a 5a 5a 5a"), "{bytes}");
    let attach_readonly_vdc = || {
        daemon.oxvirt(&[
            "attach-disk",
            "dq35",
            data_path,
            "vdc",
            "--mode",
            "readonly",
            "--subdriver",
            "qcow2",
            "--live",
        ])
    };
    // The one spare root port is taken now: a second disk is refused, saying how to add one.
    let live_before = daemon.oxvirt(&["dumpxml", "dq35"]).ok();
    let error = attach_readonly_vdc().error();
    assert!(
        error.contains("<controller type='pci' model='pcie-root-port'/>"),
        "{error}"
    );
    assert_eq!(daemon.oxvirt(&["dumpxml", "dq35"]).ok(), live_before);
    expect_guest_sees(&mut console, "vdb", false, 3);

    detach_live(&daemon, "dq35", "vdb");
    expect_guest_sees(&mut console, "vda", false, 4);
    // The port is free again: the new disk is the guest's vda again, read-only as attached.
    attach_readonly_vdc().ok();
    expect_guest_sees(&mut console, "vda", true, 5);
    let readonly = console.run("cat /sys/block/vda/ro", 6);
    assert_eq!(readonly.trim(), "1", "{readonly}");
    let list = daemon.oxvirt(&["domblklist", "dq35"]).ok();
    assert!(list.contains(&format!(" vdc      {data_path}\n")), "{list}");
    daemon.oxvirt(&["destroy", "dq35"]).ok();
}

/// `dumpxml NAME` and `dumpxml NAME --inactive`.
fn both_definitions(daemon: &Daemon, name: &str) -> (String, String) {
    (
        daemon.oxvirt(&["dumpxml", name]).ok(),
        daemon.oxvirt(&["dumpxml", name, "--inactive"]).ok(),
    )
}

/// `attach-disk DOMAIN SOURCE TARGET --targetbus scsi --live`, which must fail and change neither
/// definition; its error.
#[track_caller]
fn refused_scsi_attach(daemon: &Daemon, domain: &str, source: &str, target: &str) -> String {
    let before = both_definitions(daemon, domain);
    let error = daemon
        .oxvirt(&[
            "attach-disk",
            domain,
            source,
            target,
            "--targetbus",
            "scsi",
            "--live",
        ])
        .error();
    assert_eq!(both_definitions(daemon, domain), before);
    error
}

#[test]
fn a_scsi_disk_hot_plugged_into_a_guest_without_a_controller_gets_a_virtio_scsi_one() {
    let (daemon, root, data) = daemon_and_images();
    let dir = daemon.dir.path();
    let data_path = data.to_str().unwrap();
    define_guest(
        &daemon,
        "dscsi",
        "3e9a1c5d-7b2f-4c8e-a6d4-0f1b3d5e7a9c",
        &root,
    );
    let defined = daemon.oxvirt(&["dumpxml", "dscsi", "--inactive"]).ok();
    assert!(!defined.contains("type='scsi'"), "{defined}");
    let mut console = boot(&daemon, "dscsi");
    let before = both_definitions(&daemon, "dscsi");

    // A SCSI disk's target is sdX: refused, nothing changes.
    assert_eq!(
        refused_scsi_attach(&daemon, "dscsi", data_path, "vdb"),
        "error: target vdb: a disk on bus 'scsi' is named sdX (sda, sdb, ...)"
    );
    // An image QEMU cannot open (the root disk, which it holds locked): the controller plugged
    // for the disk is unplugged again, the guest loses it, nothing changes.
    let error = refused_scsi_attach(&daemon, "dscsi", root.to_str().unwrap(), "sdb");
    assert!(
        error.contains("device_add failed") && error.contains("Failed to get \"write\" lock"),
        "{error}"
    );
    let hosts = console.run(
        "i=0; while [ $i -lt 200 ] && [ -n \"$(ls /sys/bus/virtio/drivers/virtio_scsi | grep virtio)\" ]; do sleep 0.1; i=$((i+1)); done; echo HOSTS-$(ls /sys/bus/virtio/drivers/virtio_scsi | grep -c virtio)",
        10,
    );
    assert!(hosts.contains("HOSTS-0"), "{hosts}");

    // attach-disk --live: the controller comes first, then the disk at its drive address;
    // the guest finds a QEMU hard disk with the image's bytes, its first SCSI disk (sda).
    let scsi_qcow2 = ["--targetbus", "scsi", "--subdriver", "qcow2"];
    attach_live(&daemon, "dscsi", data_path, "sdb", &scsi_qcow2);
    expect_guest_sees(&mut console, "sda", true, 1);
    let identity = console.run(
        "cat /sys/block/sda/device/vendor /sys/block/sda/device/model",
        2,
    );
    let identity: Vec<&str> = identity.lines().map(str::trim).collect();
    assert!(
        identity.windows(2).any(|w| w == ["QEMU", "QEMU HARDDISK"]),
        "{identity:?}"
    );
    let bytes = console.run("hexdump -C -n 16 /dev/sda", 3);
    assert!(
        bytes.contains("5a 5a 5a 5a 5a 5a 5a 5a  5a 5a 5a 5a 5a 5a 5a 5a"),
        "{bytes}"
    );
    let live = daemon.oxvirt(&["dumpxml", "dscsi"]).ok();
    let controller = live
        .find("<controller type='scsi' index='0' model='virtio-scsi'>\n      <address type='pci' ")
        .unwrap_or_else(|| panic!("no virtio-scsi controller with its PCI address:\n{live}"));
    assert!(live[controller..].contains("</controller>"), "{live}");
    assert!(
        live.contains(&format!(
            "<source file='{data_path}'/>\n      <target dev='sdb' bus='scsi'/>\n      <address type='drive' controller='0' bus='0' target='0' unit='1'/>"
        )),
        "{live}"
    );
    // Live only.
    assert_eq!(
        daemon.oxvirt(&["dumpxml", "dscsi", "--inactive"]).ok(),
        before.1
    );

    // Bad input with the controller there: each refused, nothing changes.
    let after_plug = both_definitions(&daemon, "dscsi");
    assert_eq!(
        refused_scsi_attach(&daemon, "dscsi", data_path, "sdb"),
        "error: target sdb already exists"
    );
    // (A second image: QEMU locks an image in use against a second user.)
    let second_image = known_qcow2(dir, "second.qcow2");
    let second_path = second_image.to_str().unwrap();
    let device = |name: &str, dev: &str, address: &str| {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!(
                "<disk type='file' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  <source file='{second_path}'/>\n  <target dev='{dev}' bus='scsi'/>\n  <readonly/>\n{address}</disk>\n"
            ),
        )
        .unwrap();
        file
    };
    let taken = device(
        "taken.xml",
        "sdc",
        "  <address type='drive' controller='0' bus='0' target='0' unit='1'/>\n",
    );
    let error = daemon
        .oxvirt(&["attach-device", "dscsi", taken.to_str().unwrap(), "--live"])
        .error();
    assert!(
        error.contains("duplicate drive address for disk with target name 'sdc'")
            && error.contains("unit='1'"),
        "{error}"
    );
    assert_eq!(both_definitions(&daemon, "dscsi"), after_plug);
    expect_guest_sees(&mut console, "sdb", false, 4);

    // attach-device --live of a second one: on the same controller, the guest's sdb.
    let second = device("second.xml", "sdc", "");
    assert_eq!(
        daemon
            .oxvirt(&["attach-device", "dscsi", second.to_str().unwrap(), "--live"])
            .ok(),
        "Device attached successfully\n\n"
    );
    expect_guest_sees(&mut console, "sdb", true, 5);
    let readonly = console.run("cat /sys/block/sdb/ro", 6);
    assert_eq!(readonly.trim(), "1", "{readonly}");
    let live = daemon.oxvirt(&["dumpxml", "dscsi"]).ok();
    assert_eq!(live.matches("<controller type='scsi'").count(), 1, "{live}");
    assert!(
        live.contains("<target dev='sdc' bus='scsi'/>\n      <readonly/>\n      <address type='drive' controller='0' bus='0' target='0' unit='2'/>"),
        "{live}"
    );

    // detach-disk and detach-device --live: the guest lets go of each; the controller stays,
    // as libvirt leaves it.
    detach_live(&daemon, "dscsi", "sdb");
    expect_guest_sees(&mut console, "sda", false, 7);
    assert_eq!(
        daemon
            .oxvirt(&["detach-device", "dscsi", second.to_str().unwrap(), "--live"])
            .ok(),
        "Device detached successfully\n\n"
    );
    expect_guest_sees(&mut console, "sdb", false, 8);
    let live = daemon.oxvirt(&["dumpxml", "dscsi"]).ok();
    assert!(!live.contains("bus='scsi'"), "{live}");
    assert!(
        live.contains("<controller type='scsi' index='0' model='virtio-scsi'>"),
        "{live}"
    );
    // Plugged again (without --targetbus: its name says scsi, as in virsh), the disk is back
    // on the controller the guest has.
    attach_live(
        &daemon,
        "dscsi",
        data_path,
        "sdb",
        &["--subdriver", "qcow2"],
    );
    expect_guest_sees(&mut console, "sda", true, 9);

    // --config: the next start's definition gets the disk and a virtio-scsi controller too.
    daemon
        .oxvirt(&["attach-disk", "dscsi", data_path, "sdd", "--config"])
        .ok();
    let inactive = daemon.oxvirt(&["dumpxml", "dscsi", "--inactive"]).ok();
    assert!(
        inactive.contains("<controller type='scsi' index='0' model='virtio-scsi'>")
            && inactive.contains("<target dev='sdd' bus='scsi'/>\n      <address type='drive' controller='0' bus='0' target='0' unit='3'/>"),
        "{inactive}"
    );
    assert!(!daemon.oxvirt(&["dumpxml", "dscsi"]).ok().contains("sdd"));
    daemon.oxvirt(&["destroy", "dscsi"]).ok();
}
