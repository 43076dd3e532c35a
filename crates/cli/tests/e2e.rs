//! End-to-end: the `oxvirt` binary against a private oxvirtd running real QEMU (TCG) guests.
//!
//! Each test owns a daemon (socket and state in its own tempdir), so tests run in parallel. What
//! the guest saw is checked through `oxvirt console`: its boot marker, its answers to commands.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{field, guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Disk of the lifecycle guest: 2048 sectors, which the guest reports in /sys/block/vda/size.
const DISK_SECTORS: u64 = 2048;

#[test]
fn domain_lifecycle_through_the_cli() {
    let kit = guest_kit();
    let daemon = Daemon::start();
    let uuid = "3f8e2c41-5b7a-4d2e-9c1f-0a6b8d4e2f71";
    let disk = make_disk(daemon.dir.path(), "life.raw", DISK_SECTORS);
    let xml = guest_xml("e2e-life", uuid, &kit, &disk, 2);

    // define
    let (file, run) = daemon.define("life.xml", &xml);
    assert_eq!(
        run.ok(),
        format!("Domain 'e2e-life' defined from {}\n\n", file.display())
    );
    assert_eq!(
        daemon.oxvirt(&["list", "--all"]).ok(),
        " Id   Name       State\n\
         ---------------------------\n \
         -    e2e-life   shut off\n\n"
    );
    assert_eq!(daemon.oxvirt(&["domid", "e2e-life"]).ok(), "-\n\n");

    // start, then the console shows the guest booting and its shell answering
    assert_eq!(
        daemon.oxvirt(&["start", "e2e-life"]).ok(),
        "Domain 'e2e-life' started\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "e2e-life"]).ok(),
        "running (booted)\n\n"
    );
    let mut console = daemon.console("e2e-life");
    console.expect_text(
        "Connected to domain 'e2e-life'\nEscape character is ^]\n",
        Duration::from_secs(10),
    );
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    assert_eq!(
        console.run("cat /sys/block/vda/size", 1).trim(),
        DISK_SECTORS.to_string()
    );
    assert_eq!(console.run("nproc", 2).trim(), "2");

    // list and dominfo of the running domain
    let dominfo = daemon.oxvirt(&["dominfo", "e2e-life"]).ok();
    let id = field(&dominfo, "Id:");
    assert!(
        id.parse::<u32>().is_ok(),
        "running domain has a numeric id: {dominfo}"
    );
    assert_eq!(
        daemon.oxvirt(&["list", "--all"]).ok(),
        format!(
            " Id   Name       State\n\
             --------------------------\n \
             {id:<2}   e2e-life   running\n\n"
        )
    );
    assert_eq!(field(&dominfo, "Name:"), "e2e-life");
    assert_eq!(field(&dominfo, "UUID:"), uuid);
    assert_eq!(field(&dominfo, "OS Type:"), "hvm");
    assert_eq!(field(&dominfo, "State:"), "running");
    assert_eq!(field(&dominfo, "CPU(s):"), "2");
    assert_eq!(field(&dominfo, "Max memory:"), "262144 KiB");
    assert_eq!(field(&dominfo, "Used memory:"), "262144 KiB");
    assert_eq!(field(&dominfo, "Persistent:"), "yes");
    assert_eq!(field(&dominfo, "Autostart:"), "disable");
    assert_eq!(field(&dominfo, "Engine:"), "qemu");
    assert_eq!(field(&dominfo, "Accel:"), "tcg");
    // virsh's alignment: the label padded to 15 columns, one space, the value.
    assert!(
        dominfo.contains(&format!("UUID:           {uuid}\n")),
        "{dominfo}"
    );
    // The same domain by UUID.
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", uuid]).ok(), "Name:"),
        "e2e-life"
    );
    assert_eq!(
        daemon.oxvirt(&["domuuid", "e2e-life"]).ok(),
        format!("{uuid}\n\n")
    );
    assert_eq!(daemon.oxvirt(&["domname", uuid]).ok(), "e2e-life\n\n");
    assert_eq!(
        daemon.oxvirt(&["domid", "e2e-life"]).ok(),
        format!("{id}\n\n")
    );

    // suspend: the guest really stops; resume: it answers what it was sent meanwhile
    assert_eq!(
        daemon.oxvirt(&["suspend", uuid]).ok(),
        "Domain 'e2e-life' suspended\n\n"
    );
    assert_eq!(daemon.oxvirt(&["domstate", "e2e-life"]).ok(), "paused\n\n");
    let with_reason = daemon.oxvirt(&["domstate", "--reason", "e2e-life"]).ok();
    assert!(with_reason.starts_with("paused ("), "{with_reason}");
    console.send_line("echo PAUSE-CHECK-$((6*7))");
    assert!(
        !console.wait_for_text("PAUSE-CHECK-42", Duration::from_secs(3)),
        "a paused guest answered on its console:\n{}",
        console.all_output()
    );
    assert_eq!(
        daemon.oxvirt(&["resume", "e2e-life"]).ok(),
        "Domain 'e2e-life' resumed\n\n"
    );
    console.expect_text("PAUSE-CHECK-42", Duration::from_secs(30));
    assert_eq!(daemon.oxvirt(&["domstate", "e2e-life"]).ok(), "running\n\n");

    // reboot: the guest boots again. A file in the guest's RAM-backed root goes away with the
    // reboot. The console stays attached if the engine resets the same process; if it starts a
    // new one, the console ends with the old process and is attached again.
    console.run("touch /before-reboot", 3);
    assert_eq!(
        daemon.oxvirt(&["reboot", "e2e-life"]).ok(),
        "Domain 'e2e-life' is being rebooted\n\n"
    );
    let booted_again = oxvirt_testkit::wait_for(BOOT_TIMEOUT, || {
        console.wait_for_text(BOOT_MARKER, Duration::from_millis(100)) || console.has_exited()
    });
    assert!(booted_again, "no reboot seen:\n{}", console.all_output());
    if console.has_exited() {
        console = daemon.console_when_ready("e2e-life", BOOT_TIMEOUT);
        console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    }
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    assert_eq!(
        console
            .run("test -e /before-reboot && echo kept || echo gone", 4)
            .trim(),
        "gone"
    );
    assert_eq!(console.run("nproc", 5).trim(), "2");
    assert_eq!(daemon.oxvirt(&["domstate", "e2e-life"]).ok(), "running\n\n");

    // shutdown through ACPI, waiting for it; the console ends with the guest
    let shutdown = daemon
        .oxvirt(&["shutdown", "--timeout", "60", "e2e-life"])
        .ok();
    assert!(
        shutdown.starts_with("Domain 'e2e-life' is being shutdown\n"),
        "{shutdown}"
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "e2e-life"]).ok(),
        "shut off (shutdown)\n\n"
    );
    assert_eq!(console.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(
        daemon.oxvirt(&["list", "--all"]).ok(),
        " Id   Name       State\n\
         ---------------------------\n \
         -    e2e-life   shut off\n\n"
    );

    // start again; a paused guest cannot answer the power button, so a shutdown with a
    // timeout reports that it did not stop; then pull the plug
    daemon.oxvirt(&["start", "e2e-life"]).ok();
    assert_eq!(daemon.oxvirt(&["domstate", "e2e-life"]).ok(), "running\n\n");
    daemon.oxvirt(&["suspend", "e2e-life"]).ok();
    let err = daemon
        .oxvirt(&["shutdown", "--timeout", "2", "e2e-life"])
        .error();
    // The message names the domain and the time it waited.
    assert!(
        err.contains("e2e-life") && (err.contains("2 s") || err.contains("2 seconds")),
        "{err}"
    );
    assert_eq!(daemon.oxvirt(&["domstate", "e2e-life"]).ok(), "paused\n\n");
    assert_eq!(
        daemon.oxvirt(&["destroy", "e2e-life"]).ok(),
        "Domain 'e2e-life' destroyed\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["domstate", "--reason", "e2e-life"]).ok(),
        "shut off (destroyed)\n\n"
    );

    // undefine
    assert_eq!(
        daemon.oxvirt(&["undefine", "e2e-life"]).ok(),
        "Domain 'e2e-life' has been undefined\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["list", "--all"]).ok(),
        " Id   Name   State\n--------------------\n\n"
    );
    let gone = daemon.oxvirt(&["dominfo", "e2e-life"]).error();
    assert!(gone.contains("e2e-life"), "{gone}");
}

/// Every way a user can get a command wrong fails with one clear line and changes nothing.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let kit = guest_kit();
    let daemon = Daemon::start();
    let keep_uuid = "7d0c5e1a-2b3f-4a6d-8e9f-1c2b3a4d5e6f";
    let disk = make_disk(daemon.dir.path(), "keep.raw", 2048);
    let keep_xml = guest_xml("keep", keep_uuid, &kit, &disk, 1);
    daemon.define("keep.xml", &keep_xml).1.ok();
    daemon.oxvirt(&["start", "keep"]).ok();
    let other_disk = make_disk(daemon.dir.path(), "other.raw", 2048);
    let other_xml = guest_xml(
        "other",
        "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        &kit,
        &other_disk,
        1,
    );
    daemon.define("other.xml", &other_xml).1.ok();

    let snapshot = || {
        (
            daemon.oxvirt(&["list", "--all"]).ok(),
            daemon.oxvirt(&["dumpxml", "keep"]).ok(),
            daemon.oxvirt(&["dumpxml", "other"]).ok(),
        )
    };
    let before = snapshot();
    assert!(before.0.contains(" keep    running\n"), "{}", before.0);
    assert!(
        before.0.contains(" -    other   shut off\n"),
        "{}",
        before.0
    );

    // Malformed XML: the message gives line and column.
    let (_, run) = daemon.define(
        "malformed.xml",
        "<domain type='qemu'>\n  <name>broken</name>\n  <memory>1024</memory\n</domain>\n",
    );
    let err = run.error();
    assert!(err.contains("line") && err.contains("column"), "{err}");

    // An element oxvirt does not model: the message names it.
    let unsupported = keep_xml
        .replace("<name>keep</name>", "<name>fancy</name>")
        .replace(keep_uuid, "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")
        .replace("</devices>", "<smartcard mode='host'/>\n  </devices>");
    let err = daemon.define("unsupported.xml", &unsupported).1.error();
    assert!(err.contains("smartcard"), "{err}");

    // A name that could escape the state directory.
    let bad_name = keep_xml
        .replace("<name>keep</name>", "<name>../x</name>")
        .replace(keep_uuid, "6b5c4d3e-2f1a-4b0c-9d8e-7f6a5b4c3d2e");
    let err = daemon.define("bad-name.xml", &bad_name).1.error();
    assert!(err.contains("../x"), "{err}");

    // Another domain's name with a new UUID, and another domain's UUID with a new name.
    let same_name = other_xml.replace(
        "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        "8c7d6e5f-4a3b-4c2d-9e1f-0a9b8c7d6e5f",
    );
    let err = daemon.define("same-name.xml", &same_name).1.error();
    assert!(err.contains("other"), "{err}");
    let same_uuid = keep_xml.replace("<name>keep</name>", "<name>twin</name>");
    let err = daemon.define("same-uuid.xml", &same_uuid).1.error();
    assert!(err.contains(keep_uuid) || err.contains("keep"), "{err}");

    // Unknown domains, by name and by UUID.
    for command in [
        "start", "dominfo", "dumpxml", "destroy", "undefine", "console",
    ] {
        let err = daemon.oxvirt(&[command, "nosuch"]).error();
        assert!(err.contains("nosuch"), "{command}: {err}");
    }
    let err = daemon
        .oxvirt(&["dominfo", "11111111-2222-4333-8444-555555555555"])
        .error();
    assert!(
        err.contains("11111111-2222-4333-8444-555555555555"),
        "{err}"
    );

    // Starting a running domain, resuming a running one, undefining an active one.
    let err = daemon.oxvirt(&["start", "keep"]).error();
    assert!(err.contains("keep") && err.contains("running"), "{err}");
    let err = daemon.oxvirt(&["resume", "keep"]).error();
    assert!(err.contains("keep"), "{err}");
    // An inactive domain has no console.
    let err = daemon.oxvirt(&["console", "other"]).error();
    assert!(err.contains("not running"), "{err}");

    // Missing kernel and missing disk: refused at define or at start, naming the file.
    let missing_kernel = daemon.dir.path().join("no-such-vmlinuz");
    let xml = other_xml
        .replace("<name>other</name>", "<name>nokernel</name>")
        .replace(
            "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            "9d8e7f6a-5b4c-4d3e-8f2a-1b0c9d8e7f6a",
        )
        .replace(
            kit.kernel.to_str().expect("utf-8 path"),
            missing_kernel.to_str().expect("utf-8 path"),
        );
    expect_refused_file(&daemon, "nokernel", &xml, "no-such-vmlinuz");
    let missing_disk = daemon.dir.path().join("no-such-disk.raw");
    let xml = other_xml
        .replace("<name>other</name>", "<name>nodisk</name>")
        .replace(
            "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            "aa8e7f6a-5b4c-4d3e-8f2a-1b0c9d8e7f6a",
        )
        .replace(
            other_disk.to_str().expect("utf-8 path"),
            missing_disk.to_str().expect("utf-8 path"),
        );
    expect_refused_file(&daemon, "nodisk", &xml, "no-such-disk.raw");

    // A file that does not exist at all.
    let err = daemon.oxvirt(&["define", "/nonexistent/dom.xml"]).error();
    assert!(err.contains("/nonexistent/dom.xml"), "{err}");

    assert_eq!(snapshot(), before, "a refused command changed the domains");

    // No daemon behind the socket.
    let run = std::process::Command::new(support::oxvirt_bin())
        .args(["--socket", "/nonexistent/oxvirtd.sock", "list", "--all"])
        .output()
        .expect("run oxvirt");
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "error: cannot connect to oxvirtd at /nonexistent/oxvirtd.sock: is it running?\n"
    );
    assert!(run.stdout.is_empty());
}

/// A definition naming a missing file is refused when defined or, at the latest, when started;
/// either way with one error line naming the file. Leaves no trace of the domain.
fn expect_refused_file(daemon: &Daemon, name: &str, xml: &str, file_name: &str) {
    let (_, run) = daemon.define(&format!("{name}.xml"), xml);
    if run.code == Some(0) {
        let err = daemon.oxvirt(&["start", name]).error();
        assert!(err.contains(file_name), "{err}");
        assert_eq!(daemon.oxvirt(&["domstate", name]).ok(), "shut off\n\n");
        daemon.oxvirt(&["undefine", name]).ok();
    } else {
        let err = run.error();
        assert!(err.contains(file_name), "{err}");
    }
}

#[test]
fn edit_applies_valid_changes_and_keeps_the_old_definition_on_errors() {
    let kit = guest_kit();
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "edit.raw", 2048);
    let xml = guest_xml(
        "edit-me",
        "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
        &kit,
        &disk,
        1,
    );
    daemon.define("edit.xml", &xml).1.ok();
    let original = daemon.oxvirt(&["dumpxml", "edit-me"]).ok();
    assert!(original.contains(">1</vcpu>"), "{original}");

    let script = |name: &str, body: &str| {
        let path = daemon.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).expect("write editor");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod editor");
        path.to_str().expect("utf-8 path").to_string()
    };

    // An editor that changes nothing.
    let run = daemon.oxvirt_with_env(&["edit", "edit-me"], &[("EDITOR", "true")]);
    assert_eq!(
        run.ok(),
        "Domain 'edit-me' XML configuration not changed.\n\n"
    );

    // A change that breaks the XML: refused, the old definition stays.
    let breaker = script("break.sh", r#"sed -i 's#</vcpu>#</vcpux>#' "$1""#);
    let err = daemon
        .oxvirt_with_env(&["edit", "edit-me"], &[("EDITOR", &breaker)])
        .error();
    assert!(err.contains("line"), "{err}");
    assert!(err.contains("edit-me"), "{err}");
    assert_eq!(daemon.oxvirt(&["dumpxml", "edit-me"]).ok(), original);

    // A failing editor: nothing is sent.
    let failing = script("fail.sh", "exit 3");
    let err = daemon
        .oxvirt_with_env(&["edit", "edit-me"], &[("EDITOR", &failing)])
        .error();
    assert!(err.contains("editor"), "{err}");
    assert_eq!(daemon.oxvirt(&["dumpxml", "edit-me"]).ok(), original);

    // A valid change: two vCPUs, seen by dominfo and by the guest itself.
    let two_cpus = script("cpus.sh", r#"sed -i 's#>1</vcpu>#>2</vcpu>#' "$1""#);
    let run = daemon.oxvirt_with_env(&["edit", "edit-me"], &[("EDITOR", &two_cpus)]);
    assert_eq!(run.ok(), "Domain 'edit-me' XML configuration edited.\n\n");
    let edited = daemon.oxvirt(&["dumpxml", "edit-me"]).ok();
    assert!(edited.contains(">2</vcpu>"), "{edited}");
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", "edit-me"]).ok(), "CPU(s):"),
        "2"
    );

    // `start --console` attaches before the guest has printed anything.
    let mut console = daemon.start_with_console("edit-me");
    console.expect_text(
        "Domain 'edit-me' started\nConnected to domain 'edit-me'\nEscape character is ^]\n",
        Duration::from_secs(20),
    );
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    assert_eq!(console.run("nproc", 6).trim(), "2");
    assert_eq!(console.detach(), Some(0));
    daemon.oxvirt(&["destroy", "edit-me"]).ok();
}
