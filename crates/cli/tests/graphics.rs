//! The graphical console and removable media, end to end: `domdisplay`, `vncdisplay`, a real VNC
//! client (vncsnapshot, a Debian package `scripts/setup.sh` installs) against the address they
//! name, `screenshot` (a PNG decoded and checked not blank), `send-key` (the guest's keyboard
//! controller sees the keys), `change-media` (the guest reads the inserted ISO, made with
//! xorriso), and the refusals.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, GuestKit, BOOT_MARKER, PROMPT};
use support::{make_disk, png_stats, vncsnapshot, ConsoleSession, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The VNC password of the test guest, and the same password as a VNC password file holds it
/// (DES with VNC's fixed key), for vncsnapshot's `-passwd`.
const PASSWORD: &str = "s3cret";
const PASSWORD_FILE: [u8; 8] = [0xe1, 0x43, 0x12, 0x99, 0xb1, 0x76, 0x60, 0x9d];

/// A guest that prints on the VGA console too (console=tty0), with a VNC display (password
/// set), a VGA card and an empty IDE CD-ROM drive (`graphics: false`: none of the three
/// display parts).
fn graphics_xml(name: &str, kit: &GuestKit, disk: &Path, graphics: bool) -> String {
    let display = if graphics {
        format!(
            "<graphics type='vnc' passwd='{PASSWORD}'/>\n    <video><model type='vga'/></video>"
        )
    } else {
        "<video><model type='none'/></video>".to_string()
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=tty0 console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    {display}
  </devices>
</domain>
",
        kernel = kit.kernel.display(),
        initrd = kit.initramfs.display(),
        disk = disk.display(),
    )
}

/// An ISO 9660 image holding one file with `marker` in it (xorriso, from Debian).
fn make_iso(dir: &Path, name: &str, marker: &str) -> PathBuf {
    let tree = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&tree).expect("iso tree");
    std::fs::write(tree.join("marker.txt"), format!("{marker}\n")).expect("iso file");
    let iso = dir.join(name);
    let status = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .arg(&tree)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("xorriso (apt-get install xorriso; scripts/setup.sh installs it)");
    assert!(status.success(), "xorriso failed");
    iso
}

/// The security types a VNC server offers a client (RFB 3.8 handshake): 1 is none, 2 is VNC
/// password authentication.
fn vnc_security_types(port: u16) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the VNC server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).expect("RFB version");
    assert_eq!(&version[..4], b"RFB ", "not a VNC server: {version:?}");
    stream.write_all(b"RFB 003.008\n").expect("send version");
    let mut count = [0u8; 1];
    stream.read_exact(&mut count).expect("security type count");
    let mut types = vec![0u8; usize::from(count[0])];
    stream.read_exact(&mut types).expect("security types");
    types
}

/// The guest's count of keyboard controller (i8042) interrupts.
fn keyboard_interrupts(console: &mut ConsoleSession, tag: u32) -> u64 {
    let line = console.run("grep i8042 /proc/interrupts | head -n 1", tag);
    line.split_whitespace()
        .skip(1)
        .take_while(|word| word.chars().all(|c| c.is_ascii_digit()))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum()
}

/// How often the guest finds `marker` on its CD-ROM. The first read after a change reports
/// the change (SCSI unit attention) and fails: a few tries.
fn medium_marker_count(console: &mut ConsoleSession, marker: &str, tag: u32) -> String {
    let output = console.run(
        &format!(
            "for i in 1 2 3 4 5; do grep -a -c {marker} /dev/sr0 2>/dev/null && break; sleep 1; done"
        ),
        tag,
    );
    output.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn graphical_console_keys_and_media_of_a_running_guest() {
    let kit = guest_kit();
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let disk = make_disk(dir, "gfx.raw", 2048);
    let (_, run) = daemon.define("gfx.xml", &graphics_xml("gfx", &kit, &disk, true));
    run.ok();
    // Not running yet: the definition's automatic port, and nothing to show.
    assert!(
        daemon
            .oxvirt(&["dumpxml", "gfx"])
            .ok()
            .contains("<graphics type='vnc' port='-1' autoport='yes' passwd='s3cret'>"),
        "the stored definition keeps autoport"
    );
    assert_eq!(
        daemon.oxvirt(&["domdisplay", "gfx"]).error(),
        "error: domain 'gfx' is not running"
    );
    assert_eq!(
        daemon.oxvirt(&["screenshot", "gfx", "x.png"]).error(),
        "error: domain 'gfx' is not running"
    );

    daemon.oxvirt(&["start", "gfx"]).ok();
    let mut console = daemon.console("gfx");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    // Kernel messages (a drive's I/O errors, say) stay off the serial console the test reads.
    console.run("dmesg -n 1", 0);

    // Where the display listens: 127.0.0.1 (libvirt's default), the port QEMU got.
    let uri = daemon.oxvirt(&["domdisplay", "gfx"]).ok();
    let number: u16 = uri
        .strip_prefix("vnc://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("domdisplay printed {uri:?}"));
    let port = 5900 + number;
    assert_eq!(
        daemon.oxvirt(&["vncdisplay", "gfx"]).ok(),
        format!("127.0.0.1:{number}\n\n")
    );
    assert_eq!(
        daemon
            .oxvirt(&["domdisplay", "--include-password", "gfx"])
            .ok(),
        format!("vnc://:{PASSWORD}@127.0.0.1:{number}\n\n")
    );
    assert_eq!(
        daemon
            .oxvirt(&["domdisplay", "--type", "spice", "gfx"])
            .error(),
        "error: No graphical display found"
    );
    // The live definition has the real port, as libvirt's does.
    let live = daemon.oxvirt(&["dumpxml", "gfx"]).ok();
    assert!(
        live.contains(&format!(
            "<graphics type='vnc' port='{port}' autoport='yes' listen='127.0.0.1' passwd='s3cret'>\n      <listen type='address' address='127.0.0.1'/>"
        )),
        "{live}"
    );

    // A real VNC client: only password authentication is offered, a wrong password is refused,
    // the right one gets an image.
    assert_eq!(
        vnc_security_types(port),
        vec![2],
        "VNC auth only, no 'none'"
    );
    let display = format!("127.0.0.1:{number}");
    assert!(
        !vncsnapshot(dir, &display, b"wrongpw\0", "refused.jpg"),
        "a client without the password is refused"
    );
    assert!(
        vncsnapshot(dir, &display, &PASSWORD_FILE, "vnc.jpg"),
        "vncsnapshot with the password saves the screen"
    );

    // screenshot: a PNG of the VGA console, with the kernel's text on it.
    let shot = dir.join("shot.png");
    let shot_arg = shot.to_str().expect("utf-8");
    assert_eq!(
        daemon.oxvirt(&["screenshot", "gfx", shot_arg]).ok(),
        format!("Screenshot saved to {shot_arg}, with type of image/png\n\n")
    );
    let (width, height, variance) = png_stats(&std::fs::read(&shot).expect("screenshot file"));
    assert!(width >= 640 && height >= 400, "{width}x{height}");
    assert!(
        variance > 100.0,
        "the screen is not blank (variance {variance})"
    );
    // Without a file: virsh's DOMAIN-DATE.png in the current directory.
    let output = Command::new(support::oxvirt_bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["screenshot", "gfx"])
        .current_dir(dir)
        .output()
        .expect("run oxvirt");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let name = stdout
        .strip_prefix("Screenshot saved to ")
        .and_then(|rest| rest.strip_suffix(", with type of image/png\n\n"))
        .unwrap_or_else(|| panic!("screenshot printed {stdout:?}"));
    assert!(name.starts_with("gfx-") && name.ends_with(".png"), "{name}");
    assert!(dir.join(name).exists());

    // send-key: the guest's keyboard controller interrupts for the key presses.
    let before = keyboard_interrupts(&mut console, 1);
    daemon.oxvirt(&["send-key", "gfx", "KEY_A"]).ok();
    daemon
        .oxvirt(&[
            "send-key",
            "gfx",
            "--codeset",
            "qnum",
            "--holdtime",
            "50",
            "0x1e",
        ])
        .ok();
    let mut after = before;
    oxvirt_testkit::wait_for(Duration::from_secs(10), || {
        after = keyboard_interrupts(&mut console, 2);
        after >= before + 4
    });
    assert!(
        after >= before + 4,
        "two presses and releases reach the guest: i8042 interrupts {before} -> {after}"
    );
    assert_eq!(
        daemon.oxvirt(&["send-key", "gfx", "KEY_NOPE"]).error(),
        "error: invalid keycode: 'KEY_NOPE'"
    );
    assert_eq!(
        daemon
            .oxvirt(&["send-key", "gfx", "--codeset", "win32", "1"])
            .error(),
        "error: unknown codeset: 'win32' (oxvirt knows linux, xt, xt_kbd, atset1, usb, qnum, rfb)"
    );

    // change-media: the guest reads what is inserted, and sees nothing once ejected.
    let one = make_iso(dir, "one.iso", "MEDIUM-ONE-MARKER");
    let two = make_iso(dir, "two.iso", "MEDIUM-TWO-MARKER");
    let one_arg = one.to_str().expect("utf-8");
    let two_arg = two.to_str().expect("utf-8");
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "hdc", one_arg, "--insert"])
            .ok(),
        "Successfully inserted media.\n\n"
    );
    assert_eq!(
        medium_marker_count(&mut console, "MEDIUM-ONE-MARKER", 3),
        "1"
    );
    assert!(daemon
        .oxvirt(&["domblklist", "gfx"])
        .ok()
        .contains(&format!(" hdc      {one_arg}\n")));
    assert!(daemon
        .oxvirt(&["dumpxml", "gfx"])
        .ok()
        .contains(&format!("<source file='{one_arg}'/>")));
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "hdc", one_arg, "--insert"])
            .error(),
        "error: The disk device 'hdc' already has media"
    );
    // --update (the default) with a source swaps the medium; the drive is named by its source.
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", one_arg, two_arg, "--live"])
            .ok(),
        "Successfully updated media.\n\n"
    );
    assert_eq!(
        medium_marker_count(&mut console, "MEDIUM-TWO-MARKER", 4),
        "1"
    );
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "hdc", "--eject"])
            .ok(),
        "Successfully ejected media.\n\n"
    );
    let reads = console.run(
        "for i in 1 2 3; do dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null && echo READ || echo NOMEDIUM; sleep 1; done",
        5,
    );
    assert_eq!(
        reads.lines().last().map(str::trim),
        Some("NOMEDIUM"),
        "{reads}"
    );
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "hdc", "--eject"])
            .error(),
        "error: The disk device 'hdc' doesn't have media"
    );
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "hdc", "/nonexistent/x.iso"])
            .error(),
        "error: cannot access media file '/nonexistent/x.iso': No such file or directory"
    );
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "vda", "--eject"])
            .error(),
        "error: The disk device 'vda' is not removable"
    );
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "gfx", "sdz", "--eject"])
            .error(),
        "error: No disk found whose source path or target is sdz"
    );
    let refused = daemon
        .oxvirt(&["change-media", "gfx", "hdc", one_arg, "--config"])
        .error();
    assert!(
        refused.contains("(--config) while it runs is not supported yet"),
        "{refused}"
    );

    // Once shut off: the stored definition again (its empty drive, its automatic port).
    drop(console);
    daemon.oxvirt(&["destroy", "gfx"]).ok();
    let stored = daemon.oxvirt(&["dumpxml", "gfx"]).ok();
    assert!(stored.contains("port='-1' autoport='yes'"), "{stored}");
    assert!(
        !stored.contains("MEDIUM") && !stored.contains(".iso"),
        "{stored}"
    );
}

#[test]
fn media_of_a_shut_off_domain_and_a_guest_without_a_display() {
    let kit = guest_kit();
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let disk = make_disk(dir, "plain.raw", 2048);
    daemon
        .define("plain.xml", &graphics_xml("plain", &kit, &disk, false))
        .1
        .ok();
    let iso = make_iso(dir, "cd.iso", "MEDIUM-CONFIG-MARKER");
    let iso_arg = iso.to_str().expect("utf-8");

    // --live needs a running guest; --config (and the default, --current) change the definition.
    assert!(daemon
        .oxvirt(&["change-media", "plain", "hdc", iso_arg, "--live"])
        .error()
        .contains("domain 'plain' is not running"));
    assert_eq!(
        daemon
            .oxvirt(&[
                "change-media",
                "plain",
                "hdc",
                iso_arg,
                "--insert",
                "--config"
            ])
            .ok(),
        "Successfully inserted media.\n\n"
    );
    assert!(daemon.oxvirt(&["dumpxml", "plain"]).ok().contains(&format!(
        "<source file='{iso_arg}'/>\n      <target dev='hdc' bus='ide'/>"
    )));
    assert_eq!(
        daemon
            .oxvirt(&["change-media", "plain", "hdc", "--eject"])
            .ok(),
        "Successfully ejected media.\n\n"
    );
    assert!(!daemon.oxvirt(&["dumpxml", "plain"]).ok().contains(iso_arg));
    assert_eq!(
        daemon.oxvirt(&["domdisplay", "nosuchdomain"]).error(),
        "error: domain 'nosuchdomain' not found"
    );

    // Running without graphics or video: nothing to show, nothing to take a picture of.
    daemon.oxvirt(&["start", "plain"]).ok();
    assert_eq!(
        daemon.oxvirt(&["domdisplay", "plain"]).error(),
        "error: No graphical display found"
    );
    assert_eq!(
        daemon.oxvirt(&["vncdisplay", "plain"]).error(),
        "error: Failed to get VNC port. Is this domain using VNC?"
    );
    assert_eq!(
        daemon.oxvirt(&["screenshot", "plain", "x.png"]).error(),
        "error: domain 'plain' has no screens to take a screenshot from (no <video> device)"
    );
    daemon.oxvirt(&["destroy", "plain"]).ok();
}
