//! `oxvirt install` booting real guests (QEMU TCG): an `--import` of a disk that boots through
//! the firmware and its own bootloader (a hybrid image made by grub-mkrescue from the guest kit's
//! kernel and initramfs), and the same with a cloud-init seed, which is attached for the first
//! boot only: when that instance ends the final definition replaces the install one and the seed
//! file goes.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, media, wait_for, PROMPT};
use support::Daemon;

const BOOT: Duration = Duration::from_secs(240);

/// A disk that boots under SeaBIOS through GRUB to the kit's guest (serial console).
fn grub_disk(dir: &Path, name: &str) -> PathBuf {
    let disk = dir.join(format!("{name}.img"));
    media::installed_system(&guest_kit(), &disk);
    disk
}

fn install(daemon: &Daemon, boot_dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "install",
        "--memory",
        "256",
        "--vcpus",
        "1",
        "--os-variant",
        "debian11",
        "--import",
        "--graphics",
        "none",
        "--network",
        "none",
        "--noautoconsole",
    ];
    all.extend_from_slice(args);
    daemon
        .oxvirt_with_env(&all, &[("OXVIRT_BOOT_DIR", boot_dir.to_str().unwrap())])
        .ok()
}

#[test]
fn import_boots_the_disk_and_a_cloud_init_seed_lives_for_the_first_boot_only() {
    let daemon = Daemon::start();
    let boot_dir = daemon.dir.path().join("boot");

    // A plain import: defined as virt-install would, started, and the disk's own GRUB boots.
    let disk = grub_disk(daemon.dir.path(), "imp");
    let out = install(
        &daemon,
        &boot_dir,
        &[
            "--name",
            "imp",
            "--disk",
            &format!("path={}", disk.display()),
        ],
    );
    assert!(out.contains("Domain creation completed."), "{out}");
    let mut console = daemon.console_when_ready("imp", BOOT);
    console.expect_text(PROMPT, BOOT);
    assert!(console
        .run("echo marker-$((40+2))", 1)
        .contains("marker-42"));
    drop(console);
    daemon.oxvirt(&["destroy", "imp"]).ok();
    daemon.oxvirt(&["undefine", "imp"]).ok();

    // With a cloud-init seed: the install document has it (and ds=nocloud in SMBIOS).
    let disk = grub_disk(daemon.dir.path(), "ci");
    let meta = daemon.dir.path().join("meta-data");
    std::fs::write(&meta, "instance-id: iid-ci-1\nlocal-hostname: ci\n").unwrap();
    let out = install(
        &daemon,
        &boot_dir,
        &[
            "--name",
            "ci",
            "--disk",
            &format!("path={}", disk.display()),
            "--cloud-init",
            &format!("meta-data={},root-password-generate=on", meta.display()),
        ],
    );
    assert!(out.contains("Password for first root login is: "), "{out}");
    let seed = boot_dir.join("oxvirt-ci-cloudinit.iso");
    assert!(seed.is_file(), "the seed ISO is made");
    // The seed is an ISO 9660 volume labelled cidata (the label is at byte 32808).
    let bytes = std::fs::read(&seed).unwrap();
    assert_eq!(&bytes[32808..32814], b"cidata");
    let first = daemon.oxvirt(&["dumpxml", "ci"]).ok();
    assert!(first.contains(seed.to_str().unwrap()), "{first}");
    assert!(first.contains("ds=nocloud"), "{first}");
    // The final definition waits in oxvirtd for the next start (define of a running domain).
    let next = daemon.oxvirt(&["dumpxml", "--inactive", "ci"]).ok();
    assert!(
        !next.contains("cloudinit.iso") && !next.contains("ds=nocloud"),
        "{next}"
    );
    assert!(next.contains("<boot dev='hd'/>"), "{next}");
    let mut console = daemon.console_when_ready("ci", BOOT);
    console.expect_text(PROMPT, BOOT);
    // The guest sees the seed's SMBIOS serial.
    assert!(console
        .run(
            "cat /sys/class/dmi/id/product_serial 2>/dev/null || echo no-dmi",
            2
        )
        .contains("ds=nocloud"));
    // The first instance ends: the final definition replaces the install one, the seed goes.
    console.send_line("poweroff -f");
    let finished = wait_for(Duration::from_secs(60), || {
        !seed.exists()
            && !daemon
                .oxvirt(&["dumpxml", "ci"])
                .ok()
                .contains("cloudinit.iso")
    });
    assert!(
        finished,
        "the seed is still there: {}",
        daemon.oxvirt(&["dumpxml", "ci"]).ok()
    );
    drop(console);
    let last = daemon.oxvirt(&["dumpxml", "ci"]).ok();
    assert!(!last.contains("ds=nocloud"), "{last}");
    assert!(!last.contains("<on_reboot>destroy"), "{last}");
    // The next start boots the installed disk again, without the seed.
    daemon.oxvirt(&["start", "ci"]).ok();
    let mut console = daemon.console_when_ready("ci", BOOT);
    console.expect_text(PROMPT, BOOT);
    drop(console);
    daemon.oxvirt(&["destroy", "ci"]).ok();
    // A domain destroyed and undefined at once, before the detached finisher polls it: its
    // first instance is over all the same, and the seed is removed.
    let disk = grub_disk(daemon.dir.path(), "gone");
    install(
        &daemon,
        &boot_dir,
        &[
            "--name",
            "gone",
            "--disk",
            &format!("path={}", disk.display()),
            "--cloud-init",
            "root-password-generate=on",
        ],
    );
    let seed = boot_dir.join("oxvirt-gone-cloudinit.iso");
    assert!(seed.is_file(), "the seed ISO is made");
    daemon.oxvirt(&["destroy", "gone"]).ok();
    daemon.oxvirt(&["undefine", "gone"]).ok();
    assert!(
        wait_for(Duration::from_secs(30), || !seed.exists()),
        "the seed of an undefined domain stays"
    );
}
