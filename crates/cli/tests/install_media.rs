//! An install from an ISO with a graphical console, as an operator runs one: `oxvirt install --cdrom
//! ISO --disk size=1 --graphics vnc`. The ISO (made by the test kit with grub-mkrescue: hybrid,
//! BIOS and UEFI) boots an installer that shows itself on the screen and the serial console, waits
//! for a line on its console, writes a bootable system onto the new disk and powers off. Meanwhile
//! the test looks at the installer's screen: `domdisplay` names a VNC address a real VNC client
//! (vncsnapshot) connects to, and `screenshot` gives a PNG that is not blank. When the installer's
//! instance ends, `oxvirt install` starts the domain again from its final definition, and the
//! installed system (not the ISO) boots: its kernel command line carries the installed marker.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, media, PROMPT};
use support::{png_stats, vncsnapshot, wait_for_exit, Daemon};

/// Firmware, GRUB and the kit under TCG, on a machine shared with other guests.
const BOOT: Duration = Duration::from_secs(300);

#[test]
fn an_iso_install_writes_the_disk_and_the_guest_then_boots_from_it() {
    let daemon = Daemon::start();
    let dir = daemon.dir.path();
    let iso = media::installer_iso(&guest_kit(), dir);
    let pool = dir.join("pool");
    std::fs::create_dir(&pool).unwrap();
    daemon
        .oxvirt(&[
            "pool-define-as",
            "default",
            "dir",
            "--target",
            pool.to_str().unwrap(),
        ])
        .ok();
    daemon.oxvirt(&["pool-start", "default"]).ok();

    // No --noautoconsole: with a graphical console, oxvirt install says where it is and waits for
    // the install to end, as virt-install does.
    let boot = dir.join("boot");
    let install = daemon.spawn_oxvirt(
        &[
            "install",
            "--name",
            "inst",
            "--memory",
            "512",
            "--vcpus",
            "1",
            "--os-variant",
            "debian11",
            "--network",
            "none",
            "--graphics",
            "vnc",
            "--disk",
            "size=1",
            "--cdrom",
            iso.to_str().unwrap(),
        ],
        &[("OXVIRT_BOOT_DIR", &boot)],
    );

    let mut console = daemon.console_when_ready("inst", BOOT);
    console.expect_text(media::INSTALLER_READY, BOOT);

    // The installer's screen, through the display oxvirtd reports.
    let display = daemon.oxvirt(&["domdisplay", "inst"]).ok();
    let display = display.trim();
    let address = display
        .strip_prefix("vnc://")
        .unwrap_or_else(|| panic!("not a VNC display: {display}"));
    assert!(
        address.starts_with("127.0.0.1:"),
        "VNC listens on localhost: {display}"
    );
    assert!(
        vncsnapshot(dir, address, b"", "installer.jpg"),
        "vncsnapshot could not save the screen of {address}"
    );
    let shot = dir.join("installer.png");
    let said = daemon
        .oxvirt(&["screenshot", "inst", shot.to_str().unwrap()])
        .ok();
    assert!(said.contains("Screenshot saved to"), "{said}");
    let (width, height, variance) = png_stats(&std::fs::read(&shot).unwrap());
    assert!(width >= 640 && height >= 400, "{width}x{height}");
    assert!(
        variance > 10.0,
        "the installer's screen is blank (variance {variance})"
    );

    // Install, then the installer powers off: oxvirt install starts the final definition.
    console.send_line("");
    console.expect_text(media::INSTALLER_DONE, BOOT);
    drop(console);
    let out = wait_for_exit(install, BOOT).ok();
    assert!(out.contains("Domain has shutdown. Continuing."), "{out}");
    assert!(out.contains("Domain creation completed."), "{out}");

    // The installed system boots from the disk; the ISO is no longer in the definition.
    let mut console = daemon.console_when_ready("inst", BOOT);
    console.expect_text(PROMPT, BOOT);
    let cmdline = console.run("cat /proc/cmdline", 1);
    assert!(cmdline.contains(media::INSTALLED_MARKER), "{cmdline}");
    let xml = daemon.oxvirt(&["dumpxml", "inst"]).ok();
    assert!(!xml.contains(iso.to_str().unwrap()), "{xml}");
    let volumes = daemon.oxvirt(&["vol-list", "default"]).ok();
    assert!(volumes.contains("inst.qcow2"), "{volumes}");
    drop(console);
    daemon.oxvirt(&["destroy", "inst"]).ok();
}
