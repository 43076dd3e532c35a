//! The guest kit itself: it boots under QEMU (TCG), its shell answers, and the ACPI power button stops it.
//! Every other suite builds on these promises, so they are checked directly here.

use oxvirt_testkit::{guest_kit, wait_for, Console, BOOT_MARKER};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn guest_boots_answers_on_its_console_and_powers_off_on_the_acpi_button() {
    let kit = guest_kit();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(b"GUEST-KIT-DISK-1");
    std::fs::write(&disk, &image).unwrap();
    let console = dir.path().join("console.sock");
    let qmp = dir.path().join("qmp.sock");
    let qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "256",
            "-smp",
            "2",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-kernel"])
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initramfs)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("if=virtio,format=raw,file={}", disk.display()))
        .arg("-chardev")
        .arg(format!(
            "socket,id=s0,path={},server=on,wait=off",
            console.display()
        ))
        .args(["-serial", "chardev:s0", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (scripts/setup.sh)");
    let mut qemu = KillOnDrop(qemu);

    let mut con = Console::connect(&console, Duration::from_secs(30)).expect("console socket");
    assert!(
        con.wait_for_text(BOOT_MARKER, Duration::from_secs(120))
            .is_some(),
        "no boot marker"
    );
    con.send_line("").unwrap();
    assert!(
        con.wait_for_text(oxvirt_testkit::PROMPT, Duration::from_secs(30))
            .is_some(),
        "no prompt"
    );
    let nproc = con.run("nproc", Duration::from_secs(30));
    assert_eq!(
        nproc.as_deref().map(str::trim),
        Some("2"),
        "console: {:?}",
        con.pending()
    );
    let first_bytes = con
        .run("head -c 16 /dev/vda", Duration::from_secs(30))
        .expect("head /dev/vda");
    assert_eq!(first_bytes.trim(), "GUEST-KIT-DISK-1");
    assert_eq!(
        con.run("cat /sys/block/vda/size", Duration::from_secs(30))
            .unwrap()
            .trim(),
        "2048"
    );

    // The ACPI power button, as `virsh shutdown` presses it.
    let mut monitor = std::os::unix::net::UnixStream::connect(&qmp).unwrap();
    use std::io::Write;
    monitor
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"system_powerdown\"}\n")
        .unwrap();
    let stopped = wait_for(Duration::from_secs(60), || {
        matches!(qemu.0.try_wait(), Ok(Some(_)))
    });
    assert!(stopped, "guest did not power off on the ACPI power button");
}
