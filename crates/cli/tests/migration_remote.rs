//! `migrate` to another host's oxvirtd over its TLS API (`oxvirt+https://HOST:PORT`,
//! docs/migration.md): two oxvirtd in two network namespaces joined by a bridge (in a third
//! namespace; nothing in the host's own), B also in a mount namespace of its own where an empty
//! tmpfs covers the disks' directory (another host's disk at the same path). A real TCG guest
//! with a counter in RAM and on its disk moves live with `--copy-storage-all`: the stream and
//! the disks' NBD connections go over TCP ports B opens for it. Refusals (nothing listening, no
//! route) and a network cut in the middle of the stream leave the guest running on A and
//! nothing on B.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::counting::{boot_id, disk_count, qcow2_disk, ram_count, start_counters};
use support::twohosts::{daemon_in, exists_for, strs, token, Lab, A_ADDRESS, B_ADDRESS};
use support::{guest_xml, memory_moving, qemu_pids, wait_for_exit, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// A's guest goes on: running, the same boot, its counter growing.
fn still_runs_on_a(a: &Daemon, name: &str, booted: &str, tag: u32) {
    assert_eq!(a.oxvirt(&["domstate", name]).ok(), "running\n\n");
    let mut console = a.console_when_ready(name, Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, tag), booted, "the guest booted again");
    let now = ram_count(&mut console, tag + 1);
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(&mut console, tag + 2)
            > now),
        "the counter stopped on A"
    );
}

/// B has nothing of the guest: no domain, no QEMU, no disk file, no migration socket.
fn nothing_on_b(b: &Daemon, uuid: &str, disk: &Path, within: Duration) {
    let clean = wait_for(within, || {
        b.oxvirt(&["list", "--all", "--name"]).ok() == "\n"
            && qemu_pids(uuid).len() == 1
            && !exists_for(b, disk)
    });
    assert!(
        clean,
        "B kept something: domains {:?}, QEMUs {:?}, disk {}; B's log:\n{}",
        b.oxvirt(&["list", "--all", "--name"]).stdout,
        qemu_pids(uuid),
        exists_for(b, disk),
        b.log()
    );
    let leftovers: Vec<_> = std::fs::read_dir(b.dir.path().join("state/migrations"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Starts remote-vm on `a`, waits for its shell, starts its counter (every second into RAM and
/// into sector 1 of its disk) and waits until the disk has it; its boot id.
fn boot_counting(a: &Daemon) -> String {
    let mut console = a.start_with_console("remote-vm");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    start_counters(&mut console, 1);
    let booted = boot_id(&mut console, 2);
    assert!(
        wait_for(Duration::from_secs(30), || disk_count(&mut console, 3)
            .is_some()),
        "the counter never reached the disk"
    );
    booted
}

#[test]
fn a_guest_moves_live_to_another_host_over_its_tls_api() {
    let lab = Lab::new();
    let disks = tempfile::Builder::new()
        .prefix("oxvirt-migremote-")
        .tempdir()
        .expect("tempdir");
    support::searchable(disks.path());
    let a = daemon_in(
        &lab.a,
        None,
        "3106000-3106099",
        &format!("{A_ADDRESS}:16514"),
    );
    let b = daemon_in(
        &lab.b,
        Some(disks.path()),
        "3107000-3107099",
        &format!("{B_ADDRESS}:16514"),
    );
    let b_token = token(&b);
    let b_cert = b.dir.path().join("state/tls/server.pem");
    let b_cert = b_cert.to_str().expect("utf-8 path");
    let dest = format!("oxvirt+https://{B_ADDRESS}:16514");
    let remote = |extra: &[&str], uri: &str| -> Vec<String> {
        let mut args: Vec<String> = ["migrate", "--live", "--persistent", "--undefinesource"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(
            [
                "--dest-token",
                &b_token,
                "--dest-ca",
                b_cert,
                "remote-vm",
                uri,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args
    };

    // The guest, its disk not shared: B sees an empty directory at the same path.
    let uuid = "5b1c2d3e-4f50-4a61-9b72-8c9daebfc0d1";
    let disk = qcow2_disk(disks.path(), "remote.qcow2");
    assert!(!exists_for(&b, &disk), "B sees A's disk");
    let xml =
        guest_xml("remote-vm", uuid, &guest_kit(), &disk, 1).replace("type='raw'", "type='qcow2'");
    a.define("remote-vm.xml", &xml).1.ok();
    let booted = boot_counting(&a);

    // Without credentials: refused before anything moves.
    let run = a.oxvirt(&["migrate", "--live", "remote-vm", &dest]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("--dest-token"), "{run:?}");

    // Nothing listening there, and an address nobody has (no route: ARP gets no answer).
    let run = a.oxvirt(&strs(&remote(
        &[],
        &format!("oxvirt+https://{B_ADDRESS}:1"),
    )));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("remote-vm") && run.stderr.contains(&format!("{B_ADDRESS}:1")),
        "{run:?}"
    );
    let run = a.oxvirt(&strs(&remote(&[], "oxvirt+https://10.79.0.99:16514")));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("10.79.0.99") && run.stderr.contains("cannot reach"),
        "{run:?}"
    );
    still_runs_on_a(&a, "remote-vm", &booted, 10);
    nothing_on_b(&b, uuid, &disk, Duration::from_secs(5));

    // The network cut in the middle of the stream: at 1 MiB/s the memory takes minutes; once
    // B's QEMU loads, A's cable is pulled.
    let child = a.spawn_oxvirt(
        &strs(&remote(&["--copy-storage-all", "--bandwidth", "1"], &dest)),
        &[],
    );
    let loading = wait_for(Duration::from_secs(180), || {
        memory_moving(&a.oxvirt(&["domjobinfo", "remote-vm"]).stdout)
    });
    assert!(
        loading,
        "the memory never started moving; B's log:\n{}",
        b.log()
    );
    assert!(exists_for(&b, &disk), "B did not create the disk");
    lab.a_link(false);
    let run = wait_for_exit(child, Duration::from_secs(240));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("goes on running here"), "{run:?}");
    lab.a_link(true);
    still_runs_on_a(&a, "remote-vm", &booted, 20);
    // B noticed the dead connection by itself (no abort could reach it).
    nothing_on_b(&b, uuid, &disk, Duration::from_secs(120));

    // Now whole: the guest moves, its disk copied over the network. Booted afresh first, so
    // the move runs without the 1 MiB/s limit of the failed one (it stays the guest's) and is
    // short: a long live migration of a guest that writes is more exposed to QEMU 7.2's TCG
    // damaging it (found broken on B in 2 of 3 runs); scripts/qemu-migration-damage.py shows
    // that with QEMU alone, failed migration before or not (docs/migration.md "Known problem").
    a.oxvirt(&["destroy", "remote-vm"]).ok();
    let booted = boot_counting(&a);
    let run = a.oxvirt(&strs(&remote(&["--copy-storage-all", "--verbose"], &dest)));
    assert_eq!(run.code, Some(0), "{run:?}\nB's log:\n{}", b.log());
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "remote-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(a.oxvirt(&["list", "--all", "--name"]).ok(), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    let mut console = b.console_when_ready("remote-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 30), booted, "the guest booted again");
    let now = ram_count(&mut console, 31);
    assert!(now > 0);
    let on_disk = disk_count(&mut console, 32).expect("B's disk has the counter");
    assert!(
        wait_for(Duration::from_secs(30), || disk_count(&mut console, 33)
            > Some(on_disk + 1)
            && ram_count(&mut console, 34) > now),
        "the counters stopped on B"
    );
    assert!(
        !console.all_output().contains(BOOT_MARKER),
        "the guest booted on B"
    );
    drop(console);
    assert!(exists_for(&b, &disk), "B's disk file");
    b.oxvirt(&["destroy", "remote-vm"]).ok();
}
