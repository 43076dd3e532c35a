//! `oxvirt builder debian-12`: the image it makes boots through its own GRUB under BIOS (SeaBIOS)
//! and under UEFI with Secure Boot (q35 gets OVMF with Microsoft's keys enrolled from libvirt's
//! firmware autoselection), and the guest has what was asked of the builder: its hostname, root's
//! password (the test logs in with it on the serial console), the SSH key; sshd runs on host keys of
//! its own. The image is built once per run of this file; the template's root filesystem comes from
//! the builder's cache (/var/cache/oxvirt/builder) after the first build on a machine.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use support::{oxvirt_bin, Daemon};

/// A full Debian boot under TCG, on a machine shared with other guests.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const ROOT_PASSWORD: &str = "oxvirt-built";
const HOSTNAME: &str = "built-by-oxvirt";

struct Built {
    image: PathBuf,
    public_key: String,
}

/// The image, built on first use (the tests of this file share it through qcow2 overlays).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Cargo's scratch directory for integration tests: one image, replaced at each run.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("builder-test");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let key = dir.join("id.pub");
        let public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheBuilderTestOnly0123456789ab test@oxvirt";
        std::fs::write(&key, format!("{public_key}\n")).unwrap();
        let image = dir.join("debian-12.qcow2");
        let output = std::process::Command::new(oxvirt_bin())
            .args(["builder", "debian-12", "-o"])
            .arg(&image)
            .arg("--force")
            .args(["--size", "3G", "--hostname", HOSTNAME])
            .arg(format!("--root-password=password:{ROOT_PASSWORD}"))
            .arg("--ssh-inject")
            .arg(&key)
            .output()
            .expect("run oxvirt builder");
        assert!(
            output.status.success(),
            "oxvirt builder failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("Output format: qcow2"), "{said}");
        Built {
            image,
            public_key: public_key.to_string(),
        }
    })
}

/// A qcow2 overlay on the built image, so each test boots a disk of its own.
fn overlay(daemon: &Daemon, name: &str) -> PathBuf {
    let path = daemon.dir.path().join(format!("{name}.qcow2"));
    let image = &built().image;
    let run = daemon.oxvirt(&[
        "img",
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        image.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    path
}

/// A definition as virt-install --import writes one, booting the disk through firmware.
fn disk_boot_xml(name: &str, os: &str, disk: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  {os}
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
",
        disk = disk.display()
    )
}

/// Boots `name`, logs in as root on the serial console and returns the session.
fn boot_and_log_in(daemon: &Daemon, name: &str) -> support::ConsoleSession {
    let mut console = daemon.start_with_console(name);
    console.expect_text(&format!("{HOSTNAME} login: "), BOOT_TIMEOUT);
    console.send_line("root");
    console.expect_text("Password: ", Duration::from_secs(60));
    console.send_line(ROOT_PASSWORD);
    console.expect_text(&format!("root@{HOSTNAME}:~# "), Duration::from_secs(120));
    console
}

/// What every image must show, whichever firmware booted it.
fn check_customizations(console: &mut support::ConsoleSession) {
    // The login prompt comes before the boot is over: wait for systemd to finish starting units
    // (the shell computes the marker, so its echo cannot match).
    console.send_line("systemctl is-system-running --wait; echo BOOT-DONE-$((20+1))");
    console.expect_text("BOOT-DONE-21", BOOT_TIMEOUT);
    assert_eq!(console.run("hostname", 1).trim(), HOSTNAME);
    let keys = console.run("cat /root/.ssh/authorized_keys", 2);
    assert_eq!(keys.trim(), built().public_key);
    // sshd needs host keys made for this machine (the builder removed the template's).
    let sshd = console.run(
        "systemctl is-active ssh; ls /etc/ssh/ssh_host_ed25519_key.pub",
        3,
    );
    assert!(sshd.contains("active\n"), "{sshd}");
    assert!(!sshd.contains("inactive"), "{sshd}");
    assert!(sshd.contains("/etc/ssh/ssh_host_ed25519_key.pub"), "{sshd}");
    // The root filesystem was mounted by the UUID fstab names, read-write.
    let root = console.run("findmnt -n -o SOURCE,FSTYPE,OPTIONS /", 4);
    assert!(root.contains("ext4") && root.contains("rw"), "{root}");
}

#[test]
fn a_built_debian_image_boots_under_bios_through_its_own_grub() {
    let daemon = Daemon::start();
    let disk = overlay(&daemon, "bios");
    let xml = disk_boot_xml(
        "built-bios",
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>",
        &disk,
    );
    daemon.define("bios.xml", &xml).1.ok();
    let mut console = boot_and_log_in(&daemon, "built-bios");
    check_customizations(&mut console);
    let firmware = console.run("test -d /sys/firmware/efi && echo uefi || echo bios", 10);
    assert_eq!(firmware.trim(), "bios");
    let cmdline = console.run("cat /proc/cmdline", 11);
    assert!(cmdline.contains("console=ttyS0,115200"), "{cmdline}");
}

#[test]
fn a_built_debian_image_boots_under_uefi_with_secure_boot() {
    let daemon = Daemon::start();
    let disk = overlay(&daemon, "uefi");
    let xml = disk_boot_xml(
        "built-uefi",
        "<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>",
        &disk,
    );
    daemon.define("uefi.xml", &xml).1.ok();
    let mut console = boot_and_log_in(&daemon, "built-uefi");
    check_customizations(&mut console);
    // The SecureBoot variable's last byte is 1 when the firmware enforced signatures on shim,
    // GRUB and the kernel.
    let secure_boot = console.run(
        "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        10,
    );
    assert!(
        secure_boot.split_whitespace().last() == Some("1"),
        "Secure Boot is not on: {secure_boot}"
    );
    // The EFI system partition is mounted where Debian's GRUB packages update it.
    let esp = console.run("findmnt -n -o FSTYPE /boot/efi", 11);
    assert_eq!(esp.trim(), "vfat");
}

#[test]
fn bad_builder_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("taken.qcow2");
    std::fs::write(&existing, b"keep me").unwrap();
    let run = |args: &[&str]| support::oxvirt_at(Path::new("/nonexistent.sock"), args, &[]);
    let out = dir.path().join("new.qcow2");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["builder", "debian-99", "-o", out],
            "no template 'debian-99'",
        ),
        (
            &["builder", "debian-12", "-o", existing.to_str().unwrap()],
            "exists",
        ),
        (
            &["builder", "debian-12", "-o", "/nonexistent/dir/x.qcow2"],
            "does not exist",
        ),
        (
            &["builder", "debian-12", "-o", out, "--size", "200M"],
            "too small",
        ),
        (
            &[
                "builder",
                "debian-12",
                "-o",
                out,
                "--root-password",
                "hunter2",
            ],
            "password:PASSWORD",
        ),
        (
            &["builder", "debian-12", "-o", out, "--hostname", "bad_name"],
            "--hostname",
        ),
    ];
    for (args, want) in cases {
        let line = run(args).error();
        assert!(line.contains(want), "{args:?}: {line}");
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    assert!(!Path::new(out).exists());
    let list = run(&["builder", "--list"]).ok();
    assert!(list.starts_with("debian-12 "), "{list}");
}
