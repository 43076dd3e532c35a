//! `save`, `restore`, `save-image-dumpxml`, `managedsave`, `managedsave-remove` and `start`
//! resuming a managed save, end to end: real QEMU (TCG) guests, checked from inside. A guest that
//! was saved and restored keeps what only its RAM held (a tmpfs file), its kernel's boot id and
//! its uptime going on from where it was; bad save images are refused without anything stored
//! changing.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{field, guest_xml, make_disk, ConsoleSession, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the guest reports of itself: its kernel's boot id and its uptime in seconds.
#[derive(Debug)]
struct GuestClock {
    boot_id: String,
    uptime: f64,
}

/// Asks the guest on its console for its boot id and uptime (`tag` frames the answer).
fn guest_clock(console: &mut ConsoleSession, tag: u32) -> GuestClock {
    let answer = console.run(
        "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime",
        tag,
    );
    let lines: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "boot id and uptime expected, got {answer:?}"
    );
    GuestClock {
        boot_id: lines[0].to_string(),
        uptime: lines[1]
            .parse()
            .unwrap_or_else(|_| panic!("uptime is not a number: {answer:?}")),
    }
}

/// Defines `name`, a test guest with one CPU and a disk of its own.
fn define_guest(daemon: &Daemon, name: &str, uuid: &str) {
    let disk = make_disk(daemon.dir.path(), &format!("{name}.raw"), 2048);
    let xml = guest_xml(name, uuid, &guest_kit(), &disk, 1);
    daemon.define(&format!("{name}.xml"), &xml).1.ok();
}

/// Defines and starts `name`, waits for its shell, and has it write `marker` into a fresh
/// tmpfs (`/mnt/ram/m`: only the guest's RAM holds it); returns its console and its clock.
fn boot_with_marker(
    daemon: &Daemon,
    name: &str,
    uuid: &str,
    marker: &str,
) -> (ConsoleSession, GuestClock) {
    define_guest(daemon, name, uuid);
    let mut console = daemon.start_with_console(name);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    console.run(
        &format!(
            "mkdir -p /mnt/ram && mount -t tmpfs tmpfs /mnt/ram && echo {marker} > /mnt/ram/m"
        ),
        1,
    );
    let clock = guest_clock(&mut console, 2);
    (console, clock)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_saved_guest_resumes_where_it_was() {
    let daemon = Daemon::start();
    let uuid = "5d1f0c2e-7a43-4b8e-9f61-2c3b4a5d6e7f";
    let (mut console, before) = boot_with_marker(&daemon, "sr-vm", uuid, "marker-42");
    // save: the domain is shut off (saved), the image holds the definition it ran with
    let image = daemon.dir.path().join("sr-vm.save");
    assert_eq!(
        daemon.oxvirt(&["save", "sr-vm", path(&image)]).ok(),
        format!("\nDomain 'sr-vm' saved to {}\n\n", image.display())
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "sr-vm"]).ok(),
        "shut off (saved)\n\n"
    );
    assert_eq!(console.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(image.is_file());
    let saved_xml = daemon.oxvirt(&["save-image-dumpxml", path(&image)]).ok();
    assert_eq!(saved_xml, daemon.oxvirt(&["dumpxml", "sr-vm"]).ok());
    assert!(
        saved_xml.contains(&format!("<uuid>{uuid}</uuid>")),
        "{saved_xml}"
    );

    // A truncated copy is refused: nothing starts, the copy stays as it was.
    let bytes = std::fs::read(&image).expect("read the save image");
    let truncated = daemon.dir.path().join("truncated.save");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write the truncated copy");
    let err = daemon.oxvirt(&["restore", path(&truncated)]).error();
    assert!(
        err.contains(path(&truncated)) && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&truncated).unwrap(),
        &bytes[..bytes.len() / 2]
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "sr-vm"]).ok(),
        "shut off (saved)\n\n"
    );

    // A whole image whose machine state QEMU cannot load (its stream's magic overwritten): the
    // start fails with QEMU's reason and nothing stays running. As a managed save, the start
    // says so and keeps it.
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[40..48]);
    let offset = usize::try_from(u64::from_le_bytes(offset)).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[offset..offset + 4].copy_from_slice(b"XXXX");
    let unloadable = daemon.dir.path().join("unloadable.save");
    std::fs::write(&unloadable, &corrupt).unwrap();
    let err = daemon.oxvirt(&["restore", path(&unloadable)]).error();
    assert!(
        // (QEMU's own words come along.)
        err.contains("sr-vm")
            && err.contains("loading the guest's state failed")
            && err.contains("Not a migration stream"),
        "{err}"
    );
    assert_eq!(daemon.oxvirt(&["list", "--name"]).ok(), "\n");
    let managed = daemon
        .dir
        .path()
        .join("state/save")
        .join(format!("{uuid}.save"));
    std::fs::create_dir_all(managed.parent().unwrap()).unwrap();
    std::fs::write(&managed, &corrupt).unwrap();
    let err = daemon.oxvirt(&["start", "sr-vm"]).error();
    assert!(
        err.contains("managed save") && err.contains("managedsave-remove"),
        "{err}"
    );
    assert_eq!(std::fs::read(&managed).unwrap(), corrupt);
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", "sr-vm"]).ok(), "Managed save:"),
        "yes"
    );
    daemon.oxvirt(&["managedsave-remove", "sr-vm"]).ok();
    assert!(!managed.exists());
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "sr-vm"]).ok(),
        "shut off (saved)\n\n"
    );

    // restore: the guest goes on, with its tmpfs, its boot and its clock
    assert_eq!(
        daemon.oxvirt(&["restore", path(&image)]).ok(),
        format!("Domain restored from {}\n\n", image.display())
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "sr-vm"]).ok(),
        "running (restored)\n\n"
    );
    let mut console = daemon.console_when_ready("sr-vm", Duration::from_secs(30));
    assert_eq!(console.run("cat /mnt/ram/m", 3).trim(), "marker-42");
    let after = guest_clock(&mut console, 4);
    assert_eq!(after.boot_id, before.boot_id, "the guest booted again");
    assert!(
        after.uptime >= before.uptime,
        "uptime went back from {} to {}",
        before.uptime,
        after.uptime
    );
    // A running domain cannot be restored over.
    let err = daemon.oxvirt(&["restore", path(&image)]).error();
    assert!(err.contains("sr-vm") && err.contains("already"), "{err}");
    assert!(daemon
        .oxvirt(&["domstate", "sr-vm"])
        .ok()
        .starts_with("running"));

    // A paused guest saved with --running runs after the restore; the image is kept, so it
    // restores again; --paused overrides what the image says.
    daemon.oxvirt(&["suspend", "sr-vm"]).ok();
    daemon
        .oxvirt(&["save", "--running", "sr-vm", path(&image)])
        .ok();
    assert_eq!(console.wait_exit(Duration::from_secs(20)), Some(0));
    // Restoring the image of a domain that is not defined defines it (oxvirt has no transient
    // domains); a failed restore of one leaves no definition behind.
    daemon.oxvirt(&["undefine", "sr-vm"]).ok();
    let err = daemon.oxvirt(&["restore", path(&truncated)]).error();
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(
        daemon.oxvirt(&["list", "--all", "--name"]).ok(),
        "\n",
        "a failed restore defined a domain"
    );
    assert_eq!(
        daemon.oxvirt(&["restore", "--paused", path(&image)]).ok(),
        format!("Domain restored from {}\n\n", image.display())
    );
    assert_eq!(daemon.oxvirt(&["domstate", "sr-vm"]).ok(), "paused\n\n");
    assert_eq!(
        daemon.oxvirt(&["domuuid", "sr-vm"]).ok(),
        format!("{uuid}\n\n")
    );
    daemon.oxvirt(&["resume", "sr-vm"]).ok();
    let mut console = daemon.console_when_ready("sr-vm", Duration::from_secs(30));
    assert_eq!(console.run("cat /mnt/ram/m", 5).trim(), "marker-42");
    assert_eq!(guest_clock(&mut console, 6).boot_id, before.boot_id);
    daemon.oxvirt(&["destroy", "sr-vm"]).ok();
}

#[test]
fn start_resumes_a_managed_save() {
    let daemon = Daemon::start();
    let uuid = "8c2d4e6f-1a3b-4c5d-8e7f-9a0b1c2d3e4f";
    let (mut console, before) = boot_with_marker(&daemon, "ms-vm", uuid, "kept");
    let managed = daemon
        .dir
        .path()
        .join("state")
        .join("save")
        .join(format!("{uuid}.save"));

    assert_eq!(
        daemon.oxvirt(&["managedsave", "ms-vm"]).ok(),
        "\nDomain 'ms-vm' state saved by libvirt\n\n"
    );
    assert_eq!(console.wait_exit(Duration::from_secs(20)), Some(0));
    let dominfo = daemon.oxvirt(&["dominfo", "ms-vm"]).ok();
    assert_eq!(field(&dominfo, "Managed save:"), "yes");
    assert_eq!(field(&dominfo, "State:"), "shut off");
    assert!(managed.is_file());
    assert_eq!(
        daemon
            .oxvirt(&["list", "--all", "--with-managed-save", "--name"])
            .ok(),
        "ms-vm\n\n"
    );
    assert_eq!(
        daemon
            .oxvirt(&["list", "--all", "--without-managed-save", "--name"])
            .ok(),
        "\n"
    );
    // Undefining it would lose the saved guest: refused unless asked for.
    let err = daemon.oxvirt(&["undefine", "ms-vm"]).error();
    assert!(
        err.contains("ms-vm") && err.contains("--managed-save"),
        "{err}"
    );
    assert!(managed.is_file());

    // start resumes the saved guest instead of booting, and the managed save is gone
    assert_eq!(
        daemon.oxvirt(&["start", "ms-vm"]).ok(),
        "Domain 'ms-vm' started\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "ms-vm"]).ok(),
        "running (restored)\n\n"
    );
    assert!(!managed.exists());
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", "ms-vm"]).ok(), "Managed save:"),
        "no"
    );
    let mut console = daemon.console_when_ready("ms-vm", Duration::from_secs(30));
    assert_eq!(console.run("cat /mnt/ram/m", 3).trim(), "kept");
    let after = guest_clock(&mut console, 4);
    assert_eq!(
        after.boot_id, before.boot_id,
        "start booted instead of resuming"
    );
    assert!(after.uptime >= before.uptime, "{before:?} -> {after:?}");

    // managedsave-remove: the next start would boot; removing none is said, not an error
    daemon.oxvirt(&["managedsave", "--paused", "ms-vm"]).ok();
    assert_eq!(console.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(
        daemon.oxvirt(&["managedsave-remove", "ms-vm"]).ok(),
        "Removed managedsave image for domain 'ms-vm'\n\n"
    );
    assert!(!managed.exists());
    assert_eq!(
        daemon.oxvirt(&["managedsave-remove", "ms-vm"]).ok(),
        "Domain 'ms-vm' has no manage save image; removal skipped\n\n"
    );

    // undefine --managed-save removes the managed save with the domain
    let mut console = daemon.start_with_console("ms-vm");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    assert_ne!(guest_clock(&mut console, 5).boot_id, before.boot_id);
    daemon.oxvirt(&["managedsave", "ms-vm"]).ok();
    assert!(managed.is_file());
    assert_eq!(
        daemon.oxvirt(&["undefine", "--managed-save", "ms-vm"]).ok(),
        "Domain 'ms-vm' has been undefined\n\n"
    );
    assert!(!managed.exists());
}

#[test]
fn foreign_and_missing_save_images_are_refused() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let random = dir.join("random.save");
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, &noise).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", path(&qcow2), "16M"])
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let qcow2_bytes = std::fs::read(&qcow2).unwrap();
    let missing = dir.join("missing.save");

    for file in [&random, &qcow2] {
        for verb in ["restore", "save-image-dumpxml"] {
            let err = daemon.oxvirt(&[verb, path(file)]).error();
            assert!(
                err.contains(path(file)) && err.contains("not an oxvirt save image"),
                "{verb}: {err}"
            );
        }
    }
    let err = daemon.oxvirt(&["restore", path(&missing)]).error();
    assert!(err.contains(path(&missing)), "{err}");
    let err = daemon.oxvirt(&["restore", path(dir)]).error();
    assert!(err.contains("not a regular file"), "{err}");

    assert_eq!(std::fs::read(&random).unwrap(), noise);
    assert_eq!(std::fs::read(&qcow2).unwrap(), qcow2_bytes);
    assert_eq!(daemon.oxvirt(&["list", "--all", "--name"]).ok(), "\n");

    // Only running or paused domains can be saved, into files that can be written.
    define_guest(&daemon, "off-vm", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9");
    let err = daemon
        .oxvirt(&["save", "off-vm", path(&dir.join("off.save"))])
        .error();
    assert!(
        err.contains("off-vm") && err.contains("not running"),
        "{err}"
    );
    let err = daemon.oxvirt(&["managedsave", "off-vm"]).error();
    assert!(err.contains("not running"), "{err}");
    assert!(!dir.join("off.save").exists());
    assert_eq!(
        daemon.oxvirt(&["managedsave-remove", "off-vm"]).ok(),
        "Domain 'off-vm' has no manage save image; removal skipped\n\n"
    );
}
