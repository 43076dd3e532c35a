//! The migration tests' counting guest: what it keeps (a counter in RAM, its disk's sectors, its
//! boot) read through its console, and the qcow2 disk it writes to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};

use super::{guest_xml, ConsoleSession, Daemon};

/// How long a counting guest may take to boot to its shell.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A qcow2 image of 16 MiB in `dir`, made by qemu-img.
pub fn qcow2_disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg("16M")
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img create failed");
    path
}

/// Starts the guest's counters: every second into RAM (`/mnt/ram/count`, a tmpfs mounted
/// here, answering `tag`) and into its disk's sector 1. The RAM count is renamed into place, so
/// a read never meets the file truncated and not yet written.
pub fn start_counters(console: &mut ConsoleSession, tag: u32) {
    console.run(
        "mkdir -p /mnt/ram && mount -t tmpfs tmpfs /mnt/ram && echo 0 > /mnt/ram/count",
        tag,
    );
    console.send_line(
        "(i=0; while :; do i=$((i+1)); echo $i > /mnt/ram/count.new; mv /mnt/ram/count.new /mnt/ram/count; \
         echo count-$i | dd of=/dev/vda bs=512 seek=1 count=1 conv=sync,fsync 2>/dev/null; \
         sleep 1; done) &",
    );
}

/// The counter the guest keeps in RAM (`/mnt/ram/count`, a tmpfs).
pub fn ram_count(console: &mut ConsoleSession, tag: u32) -> u64 {
    let answer = console.run("cat /mnt/ram/count", tag);
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {answer:?}"))
}

/// The counter value the guest last wrote to its disk (sector 1), read from the device (none
/// before its first write).
pub fn disk_count(console: &mut ConsoleSession, tag: u32) -> Option<u64> {
    let answer = console.run(
        "dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | tr -d '\\0' | head -n1",
        tag,
    );
    answer.trim().strip_prefix("count-")?.parse().ok()
}

/// The guest kernel's boot id: the same after a move that did not reboot it.
pub fn boot_id(console: &mut ConsoleSession, tag: u32) -> String {
    console
        .run("cat /proc/sys/kernel/random/boot_id", tag)
        .trim()
        .to_string()
}

/// A destination URI of `daemon` for `migrate` (its socket on this host).
pub fn uri(daemon: &Daemon) -> String {
    format!("oxvirt+unix://{}", daemon.socket.display())
}

/// The test guest `name` with one vCPU and the qcow2 disk `disk`.
pub fn qcow2_guest_xml(name: &str, uuid: &str, disk: &Path) -> String {
    guest_xml(name, uuid, &guest_kit(), disk, 1).replace("type='raw'", "type='qcow2'")
}

/// Defines `name` on `daemon` with a new qcow2 disk in the daemon's directory.
pub fn define_qcow2_guest(daemon: &Daemon, name: &str, uuid: &str) {
    let disk = qcow2_disk(daemon.dir.path(), &format!("{name}.qcow2"));
    daemon
        .define(&format!("{name}.xml"), &qcow2_guest_xml(name, uuid, &disk))
        .1
        .ok();
}

/// Defines `name` on `daemon` with a qcow2 disk at `disk` and starts it; waits for its shell
/// and starts its counter, every second into RAM (`/mnt/ram/count`, a tmpfs) and into sector 1
/// of its disk; writes `disk-before` into sector 0 first.
pub fn boot_counting(daemon: &Daemon, name: &str, uuid: &str, disk: &Path) -> ConsoleSession {
    let xml = qcow2_guest_xml(name, uuid, disk);
    daemon.define(&format!("{name}.xml"), &xml).1.ok();
    boot_counting_defined(daemon, name)
}

/// [`boot_counting`] of a domain already defined.
pub fn boot_counting_defined(daemon: &Daemon, name: &str) -> ConsoleSession {
    let mut console = daemon.start_with_console(name);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    console.run(
        "echo disk-before | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null",
        2,
    );
    start_counters(&mut console, 1);
    console
}

/// What a counting guest shows before it moves: its boot id, its RAM counter and the counter
/// on its disk, once the counter reached the disk.
pub fn before_the_move(console: &mut ConsoleSession) -> (String, u64, Option<u64>) {
    let booted = boot_id(console, 3);
    let ram = ram_count(console, 4);
    let mut on_disk = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            on_disk = disk_count(console, 5);
            on_disk.is_some()
        }),
        "the guest's counter never reached its disk: {}",
        console.all_output()
    );
    (booted, ram, on_disk)
}

/// The moved guest, through its `console` on its new host: the same boot as `booted`, its RAM
/// counter kept (at least `before`: a move can take less than the counter's second) and going
/// on.
pub fn assert_counting_on(console: &mut ConsoleSession, booted: &str, before: u64) {
    assert_eq!(boot_id(console, 7), booted, "the guest booted again");
    let after = ram_count(console, 8);
    assert!(
        after >= before,
        "the counter went back from {before} to {after}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(console, 9) > after),
        "the counter stopped on B"
    );
}

/// `name` runs on `daemon` (`host` in messages) as the same guest: the boot `booted` (no boot
/// marker since its console was attached), its RAM counter going on. Tags `tag`..`tag + 2`.
pub fn assert_goes_on(daemon: &Daemon, host: &str, name: &str, booted: &str, tag: u32) {
    let mut console = daemon.console_when_ready(name, Duration::from_secs(30));
    assert_eq!(
        boot_id(&mut console, tag),
        booted,
        "the guest booted again on {host}"
    );
    let now = ram_count(&mut console, tag + 1);
    assert!(
        oxvirt_testkit::wait_for(Duration::from_secs(30), || ram_count(&mut console, tag + 2)
            > now),
        "the counter stopped on {host}"
    );
    assert!(
        !console.all_output().contains(BOOT_MARKER),
        "the guest booted on {host}"
    );
}
