//! `migrate`, `domjobinfo` and `domjobabort` between two real oxvirtd on this host (each with
//! its own state directory, socket and range of QEMU users), with real QEMU (TCG) guests checked
//! from inside: a migrated guest keeps its RAM (a tmpfs file), its boot and a counter going on,
//! sees what it wrote to its (shared) qcow2 disk before and during the move, and runs on the
//! destination only; an aborted or refused migration leaves it running on the source, and
//! nothing on the destination.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER};
use support::counting::{
    assert_counting_on, before_the_move, boot_counting, boot_counting_defined, boot_id,
    define_qcow2_guest, disk_count, qcow2_disk, qcow2_guest_xml, ram_count, uri,
};
use support::{guest_xml, qemu_pids, wait_for_exit, ConsoleSession, Daemon};

const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Two oxvirtd whose guests' users do not overlap (as two hosts' would not), nor those of the
/// other pairs of this binary's tests running at the same time.
fn two_daemons() -> (Daemon, Daemon) {
    let [a, b] = [(); 2].map(|()| Daemon::start_with(&["--qemu-user-range", &user_range()]));
    (a, b)
}

/// A range of 100 users for one test daemon (`--qemu-user-range`), its own among this binary's.
fn user_range() -> String {
    range_arg(&next_users())
}

fn range_arg(users: &RangeInclusive<u32>) -> String {
    format!("{}-{}", users.start(), users.end())
}

fn next_users() -> RangeInclusive<u32> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let first = 3_102_000 + NEXT.fetch_add(1, Ordering::SeqCst) * 100;
    first..=first + 99
}

/// The text the guest wrote at the start of its disk (sector 0).
fn first_sector(console: &mut ConsoleSession, tag: u32) -> String {
    console
        .run(
            "dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\\0' | head -n1",
            tag,
        )
        .trim()
        .to_string()
}

/// After a failed migration: `name` (`uuid`) runs on `a` still, and `b` has no domain, no QEMU
/// of it and no migration socket left.
fn assert_left_on_source(a: &Daemon, b: &Daemon, name: &str, uuid: &str) {
    assert_eq!(a.oxvirt(&["domstate", name]).ok(), "running\n\n");
    assert_eq!(names(b), "\n");
    assert!(
        wait_for(Duration::from_secs(20), || qemu_pids(uuid).len() == 1),
        "B's QEMU stayed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(b.dir.path().join("state/migrations"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every domain `daemon` has, by name.
fn names(daemon: &Daemon) -> String {
    daemon.oxvirt(&["list", "--all", "--name"]).ok()
}

#[test]
fn a_running_guest_moves_live_to_another_oxvirtd() {
    let a = Daemon::start_with(&["--qemu-user-range", &user_range()]);
    let b_users = next_users();
    let b = Daemon::start_with(&["--qemu-user-range", &range_arg(&b_users)]);
    let uuid = "6a0e1f2d-3c4b-4a59-8e7f-1a2b3c4d5e6f";
    // Shared storage: one path both reach, for the disk and a second serial port's log file.
    let disk = qcow2_disk(a.dir.path(), "mig.qcow2");
    let serial_log = a.dir.path().join("mig-serial1.log");
    let xml = qcow2_guest_xml("mig-vm", uuid, &disk).replace(
        "    <console type='pty'>",
        &format!(
            "    <serial type='file'>\n      <source path='{}'/>\n      <target port='1'/>\n    </serial>\n    <console type='pty'>",
            serial_log.display()
        ),
    );
    a.define("mig-vm.xml", &xml).1.ok();
    let mut console = boot_counting_defined(&a, "mig-vm");
    console.run("echo serial-before > /dev/ttyS1", 30);
    let (booted, before, on_disk_before) = before_the_move(&mut console);
    drop(console);

    // migrate-setspeed before the move holds it to 1 MiB/s; set again while it runs, the
    // running migration's limit changes in QEMU at once (migrate-getspeed asks QEMU).
    let speed = || a.oxvirt(&["migrate-getspeed", "mig-vm"]).ok();
    a.oxvirt(&["migrate-setspeed", "mig-vm", "1"]).ok();
    assert_eq!(speed(), "1\n\n");
    let migrating = a.spawn_oxvirt(
        &[
            "migrate",
            "--live",
            "--persistent",
            "--undefinesource",
            "--verbose",
            "mig-vm",
            &uri(&b),
        ],
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(60), || {
            let info = a.oxvirt(&["domjobinfo", "mig-vm"]).stdout;
            info.contains("Unbounded") && !info.contains("Memory processed: 0.000 MiB")
        }),
        "the migration never got going"
    );
    assert_eq!(speed(), "1\n\n");
    a.oxvirt(&["migrate-setspeed", "mig-vm", "0"]).ok();
    assert_eq!(speed(), "8796093022207\n\n");
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "\n");

    // It runs on B (migrated), once; A forgot it.
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "mig-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(names(&a), "\n");
    assert_eq!(names(&b), "mig-vm\n\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert!(b
        .oxvirt(&["dumpxml", "mig-vm"])
        .ok()
        .contains(&format!("<uuid>{uuid}</uuid>")));
    let job = a.oxvirt(&["domjobinfo", "mig-vm"]);
    assert_eq!(job.code, Some(1), "A no longer knows the domain: {job:?}");

    // Same boot, same RAM, the counter going on, the disk written before and during the move.
    let mut console = b.console_when_ready("mig-vm", Duration::from_secs(30));
    assert_counting_on(&mut console, &booted, before);
    assert_eq!(first_sector(&mut console, 10), "disk-before");
    let on_disk = disk_count(&mut console, 11);
    assert!(
        on_disk > on_disk_before,
        "the disk's counter went from {on_disk_before:?} to {on_disk:?}"
    );
    // B's QEMU appended to the serial log A's QEMU wrote: nothing of A's lost, no hole.
    console.run("echo serial-after > /dev/ttyS1", 31);
    let log = std::fs::read(&serial_log).expect("read the serial log");
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("serial-before") && text.contains("serial-after") && !log.contains(&0),
        "the serial log after the move: {text:?}"
    );
    assert!(
        !console.all_output().contains(BOOT_MARKER),
        "the guest booted on B: {}",
        console.all_output()
    );
    assert_eq!(qemu_pids(uuid).len(), 1);
    // A's QEMU ended without waiting for the guest's cgroups (named by its UUID) to empty: B's
    // QEMU of the same guest, on this host, holds them now (the wait cost 5 s a migration).
    assert!(
        !a.log().contains("still have tasks"),
        "A waited on the cgroups B's QEMU holds: {}",
        a.log()
    );

    // The disk is B's guest user's now; once the guest stops there it is root's again, as
    // before A gave it to its own guest user.
    let owner = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).expect("stat the disk");
        (meta.uid(), meta.gid())
    };
    let (uid, _) = owner(&disk);
    assert!(
        b_users.contains(&uid),
        "the disk is {uid}'s, not B's guest user's"
    );
    drop(console);
    b.oxvirt(&["destroy", "mig-vm"]).ok();
    assert_eq!(owner(&disk), (0, 0));
}

#[test]
fn a_refused_or_aborted_migration_leaves_the_guest_running_on_the_source() {
    let (a, b) = two_daemons();
    let uuid = "7b1f2e3d-4c5b-4a6a-9f8e-2b3c4d5e6f70";
    let disk = qcow2_disk(a.dir.path(), "stay.qcow2");
    let mut console = boot_counting(&a, "stay-vm", uuid, &disk);
    let booted = boot_id(&mut console, 3);
    drop(console);
    // As under libvirt, a started guest's migrations are not limited (QEMU's own default is
    // 32 MiB/s): INT64_MAX bytes/s in MiB/s.
    assert_eq!(
        a.oxvirt(&["migrate-getspeed", "stay-vm"]).ok(),
        "8796093022207\n\n"
    );

    // An unreachable destination.
    let missing = a.dir.path().join("nobody.sock");
    let err = a
        .oxvirt(&[
            "migrate",
            "--live",
            "stay-vm",
            &format!("oxvirt+unix://{}", missing.display()),
        ])
        .error();
    assert!(
        err.contains("cannot reach the destination")
            && err.contains(&missing.display().to_string()),
        "{err}"
    );
    // Not a destination oxvirt knows how to reach.
    let err = a
        .oxvirt(&["migrate", "stay-vm", "qemu+ssh://elsewhere/system"])
        .error();
    assert!(
        err.contains("qemu+ssh://elsewhere/system") && err.contains("not supported"),
        "{err}"
    );

    // A name the destination already has: refused, B's domain as it was.
    let other_disk = qcow2_disk(b.dir.path(), "other.qcow2");
    let other = guest_xml(
        "stay-vm",
        "00000000-1111-4222-8333-444444444444",
        &guest_kit(),
        &other_disk,
        1,
    );
    b.define("other.xml", &other).1.ok();
    let before = b.oxvirt(&["dumpxml", "stay-vm"]).ok();
    let err = a
        .oxvirt(&["migrate", "--live", "stay-vm", &uri(&b)])
        .error();
    assert!(
        err.contains("stay-vm") && err.contains("already defined"),
        "{err}"
    );
    assert_eq!(b.oxvirt(&["dumpxml", "stay-vm"]).ok(), before);
    b.oxvirt(&["undefine", "stay-vm"]).ok();

    // A disk the destination cannot find at the same path (asked of B as A's oxvirtd would).
    let xml = a.oxvirt(&["dumpxml", "stay-vm"]).ok().replace(
        &disk.display().to_string(),
        "/nonexistent/oxvirt-migration/stay.qcow2",
    );
    let reply = prepare_on(&b, &xml);
    assert!(
        reply.contains("/nonexistent/oxvirt-migration/stay.qcow2")
            && reply.contains("does not exist")
            && reply.contains("shared storage"),
        "{reply}"
    );
    assert_eq!(names(&b), "\n");

    // Abort halfway: slow enough (1 MiB/s) to be caught running.
    let migrating = a.spawn_oxvirt(
        &["migrate", "--live", "--bandwidth", "1", "stay-vm", &uri(&b)],
        &[],
    );
    let halfway = wait_for(Duration::from_secs(60), || {
        let info = a.oxvirt(&["domjobinfo", "stay-vm"]).stdout;
        info.contains("Unbounded") && !info.contains("Memory processed: 0.000 MiB")
    });
    assert!(halfway, "the migration never got going");
    let info = a.oxvirt(&["domjobinfo", "stay-vm"]).ok();
    assert!(
        info.contains("Operation:        Outgoing migration") && info.contains("Memory remaining:"),
        "{info}"
    );
    assert!(
        wait_for(Duration::from_secs(60), || qemu_pids(uuid).len() == 2),
        "B's QEMU never started to receive"
    );
    a.oxvirt(&["domjobabort", "stay-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("aborted"), "{run:?}");
    assert!(
        a.oxvirt(&["domjobinfo", "stay-vm"])
            .ok()
            .contains("Cancelled"),
        "the job is recorded as cancelled"
    );

    // The limit stays the guest's (migrate-getspeed); the downtime allowed is set in QEMU.
    assert_eq!(a.oxvirt(&["migrate-getspeed", "stay-vm"]).ok(), "1\n\n");
    a.oxvirt(&["migrate-setmaxdowntime", "stay-vm", "750"]).ok();
    let params = a
        .oxvirt(&[
            "qemu-monitor-command",
            "stay-vm",
            r#"{"execute":"query-migrate-parameters"}"#,
        ])
        .ok()
        .replace([' ', '\n'], "");
    assert!(params.contains("\"downtime-limit\":750"), "{params}");

    // Still on A, the same boot, its counter going on; nothing on B.
    assert_left_on_source(&a, &b, "stay-vm", uuid);
    let mut console = a.console_when_ready("stay-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 20), booted);

    // A source that prepares and never connects (gone): within the destination's 60 s wait,
    // nothing of it stays there.
    let xml = a.oxvirt(&["dumpxml", "stay-vm"]).ok();
    let reply = prepare_on(&b, &xml);
    let prepared: serde_json::Value = serde_json::from_str(&reply).expect("a JSON reply");
    let socket = PathBuf::from(prepared["socket"].as_str().expect("a socket in the reply"));
    assert!(socket.exists(), "{reply}");
    assert_eq!(names(&b), "stay-vm\n\n");
    assert!(
        wait_for(Duration::from_secs(90), || names(&b) == "\n"
            && !socket.exists()),
        "the prepared migration stayed on B"
    );
    let count = ram_count(&mut console, 21);
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(&mut console, 22)
            > count),
        "the counter stopped on A"
    );
}

/// Asks `daemon` to prepare for the guest `xml` as a source oxvirtd does; its JSON reply.
fn prepare_on(daemon: &Daemon, xml: &str) -> String {
    let body = serde_json::json!({ "xml": xml, "running": true }).to_string();
    let reply = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&daemon.socket)
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
        ])
        .arg(&body)
        .arg("http://oxvirtd/v1/migrations")
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&reply.stdout).into_owned()
}

// ----- --copy-storage-*: disks that are not on shared storage ------------------------------------

/// A directory for disks, searchable by the guests' users.
fn disk_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("oxvirt-migdisks-")
        .tempdir()
        .expect("tempdir");
    support::searchable(dir.path());
    dir
}

/// A and B whose disks are apart: B (and its guests) in a mount namespace of its own where an
/// empty tmpfs covers `disks`, so a path there names another file on B than here (on A).
fn daemons_apart(disks: &Path) -> (Daemon, Daemon) {
    let a = Daemon::start_with(&["--qemu-user-range", &user_range()]);
    let b = Daemon::start_in_own_mounts(disks, &["--qemu-user-range", &user_range()]);
    (a, b)
}

/// Runs the shell command `script` in `daemon`'s mount namespace; its stdout (it must succeed).
fn in_mounts_of(daemon: &Daemon, script: &str) -> String {
    let out = Command::new("nsenter")
        .args([
            "--mount",
            "--target",
            &daemon.pid().to_string(),
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text at the start of sector `sector` of the qcow2 image `path` (up to its first NUL or
/// newline), read without locks (a QEMU may have it open), in `daemon`'s mount namespace or in
/// the test's own. `scratch`: a file both namespaces reach.
fn sector_text(path: &Path, sector: u64, daemon: Option<&Daemon>, scratch: &Path) -> String {
    let script = format!(
        "qemu-img convert -U -f qcow2 -O raw '{}' '{}'",
        path.display(),
        scratch.display()
    );
    match daemon {
        Some(daemon) => {
            in_mounts_of(daemon, &script);
        }
        None => {
            let status = Command::new("sh")
                .args(["-c", &script])
                .status()
                .expect("run qemu-img");
            assert!(status.success(), "{script}");
        }
    }
    let bytes = std::fs::read(scratch).expect("read the raw copy");
    let start = usize::try_from(sector * 512).expect("an offset");
    let sector = &bytes[start..start + 512];
    let end = sector
        .iter()
        .position(|b| *b == 0 || *b == b'\n')
        .unwrap_or(512);
    String::from_utf8_lossy(&sector[..end]).into_owned()
}

fn count_of(text: &str) -> Option<u64> {
    text.strip_prefix("count-")?.parse().ok()
}

#[test]
fn copy_storage_all_moves_a_guest_whose_disk_is_not_shared() {
    let disks = disk_dir();
    let (a, b) = daemons_apart(disks.path());
    let scratch = a.dir.path().join("sector.raw");
    let uuid = "8c2a3f4e-5d6c-4b7b-a091-3c4d5e6f7a81";
    let disk = qcow2_disk(disks.path(), "copy.qcow2");
    assert_eq!(
        in_mounts_of(&b, &format!("ls -A '{}'", disks.path().display())),
        "",
        "B sees A's disks"
    );
    let mut console = boot_counting(&a, "copy-vm", uuid, &disk);
    let (booted, before, on_disk_before) = before_the_move(&mut console);
    drop(console);

    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--persistent",
        "--undefinesource",
        "--verbose",
        "--copy-storage-all",
        "copy-vm",
        &uri(&b),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}\nB's log:\n{}", b.log());
    assert!(run.stderr.contains("Migration: [100 %]"), "{run:?}");

    // It runs on B, once; A forgot it; A's disk is still there, A's own.
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "copy-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(names(&a), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert!(disk.exists(), "A's disk is gone");
    let a_last =
        count_of(&sector_text(&disk, 1, None, &scratch)).expect("A's disk has the counter");
    assert_eq!(sector_text(&disk, 0, None, &scratch), "disk-before");

    // Same boot, same RAM, the counter going on; the disk (B's file) has what the guest wrote
    // before and during the move, and what it writes now.
    let mut console = b.console_when_ready("copy-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 7), booted, "the guest booted again");
    let after = ram_count(&mut console, 8);
    // Kept (a move can take less than the counter's second); that it goes on is checked next.
    assert!(
        after >= before,
        "the counter went back from {before} to {after}"
    );
    assert_eq!(first_sector(&mut console, 9), "disk-before");
    let on_disk = disk_count(&mut console, 10);
    assert!(
        on_disk > on_disk_before && on_disk >= Some(a_last),
        "the disk's counter went from {on_disk_before:?} (A's file: {a_last}) to {on_disk:?}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || disk_count(&mut console, 11)
            > Some(a_last + 2)),
        "the guest stopped writing on B"
    );
    assert!(
        !console.all_output().contains(BOOT_MARKER),
        "the guest booted on B: {}",
        console.all_output()
    );
    drop(console);
    // B's file is another than A's: it has it all, A's stayed as A left it.
    assert_eq!(
        sector_text(&disk, 0, Some(&b), &scratch),
        "disk-before",
        "B's disk file"
    );
    let b_count = count_of(&sector_text(&disk, 1, Some(&b), &scratch));
    assert!(
        b_count > Some(a_last + 2),
        "B's file: {b_count:?}, A's: {a_last}"
    );
    assert_eq!(
        count_of(&sector_text(&disk, 1, None, &scratch)),
        Some(a_last),
        "A's file changed after the migration"
    );
    b.oxvirt(&["destroy", "copy-vm"]).ok();
}

#[test]
fn copy_storage_refused_or_aborted_leaves_nothing_on_the_destination() {
    let disks = disk_dir();
    let (a, b) = daemons_apart(disks.path());
    let uuid = "9d3b4a5f-6e7d-4c8c-b1a2-4d5e6f7a8b92";
    let disk = qcow2_disk(disks.path(), "keep.qcow2");
    let mut console = boot_counting(&a, "keep-vm", uuid, &disk);
    let booted = boot_id(&mut console, 3);
    drop(console);
    let path = disk.display().to_string();

    // A file at the disk's path on B: refused, naming it; B's file as it was.
    in_mounts_of(&b, &format!("echo b-own-file > '{path}'"));
    let err = a
        .oxvirt(&[
            "migrate",
            "--live",
            "--copy-storage-all",
            "keep-vm",
            &uri(&b),
        ])
        .error();
    assert!(
        err.contains(&path) && err.contains("already exists") && err.contains("overwrite"),
        "{err}"
    );
    assert_eq!(in_mounts_of(&b, &format!("cat '{path}'")), "b-own-file\n");
    assert_eq!(names(&b), "\n");
    // Without --copy-storage-*, a disk B does not have is refused as before.
    in_mounts_of(&b, &format!("rm '{path}'"));
    let err = a
        .oxvirt(&["migrate", "--live", "keep-vm", &uri(&b)])
        .error();
    assert!(
        err.contains(&path) && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(names(&b), "\n");

    // Abort halfway: the disk copied (16 MiB), the memory at 1 MiB/s.
    let migrating = a.spawn_oxvirt(
        &[
            "migrate",
            "--live",
            "--copy-storage-all",
            "--bandwidth",
            "1",
            "keep-vm",
            &uri(&b),
        ],
        &[],
    );
    let halfway = wait_for(Duration::from_secs(120), || {
        let info = a.oxvirt(&["domjobinfo", "keep-vm"]).stdout;
        info.contains("Unbounded") && !info.contains("Memory processed: 0.000 MiB")
    });
    assert!(halfway, "the migration never got going: {}", b.log());
    let info = a.oxvirt(&["domjobinfo", "keep-vm"]).ok();
    // The disk (16 MiB) was copied before the memory went; what the guest writes meanwhile is
    // copied again (and counted).
    let mib_of = |label: &str| -> f64 {
        info.lines()
            .find_map(|line| line.strip_prefix(label))
            .and_then(|rest| rest.trim().strip_suffix(" MiB"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label} in {info}"))
    };
    assert!(
        mib_of("File total:") >= 16.0 && mib_of("File processed:") >= 16.0,
        "{info}"
    );
    assert_eq!(qemu_pids(uuid).len(), 2, "B's QEMU receives");
    assert!(
        in_mounts_of(&b, &format!("test -f '{path}' && echo there")) == "there\n",
        "B made no disk"
    );
    a.oxvirt(&["domjobabort", "keep-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("aborted"), "{run:?}");

    // Still on A, same boot, writing to its own disk; nothing on B: no domain, QEMU, socket
    // or disk file.
    assert_left_on_source(&a, &b, "keep-vm", uuid);
    assert_eq!(
        in_mounts_of(&b, &format!("ls -A '{}'", disks.path().display())),
        "",
        "B kept the disk it made"
    );
    let nodes = a
        .oxvirt(&[
            "qemu-monitor-command",
            "keep-vm",
            r#"{"execute":"query-named-block-nodes"}"#,
        ])
        .ok();
    assert!(!nodes.contains("oxvirt-nbd"), "{nodes}");
    let mut console = a.console_when_ready("keep-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 20), booted);
    let count = disk_count(&mut console, 21);
    assert!(
        wait_for(Duration::from_secs(30), || disk_count(&mut console, 22)
            > count),
        "the guest stopped writing to its disk on A"
    );
}

#[test]
fn copy_storage_inc_copies_the_top_image_over_a_backing_file_both_have() {
    let disks = disk_dir();
    let (a, b) = daemons_apart(disks.path());
    let uuid = "ae4c5b6a-7f8e-4d9d-82b3-5e6f7a8b9ca3";
    // The backing file is where both reach it (outside the covered directory); the top image
    // is not.
    let shared = disk_dir();
    let base = qcow2_disk(shared.path(), "base.qcow2");
    let written = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x62 1M 512"])
        .arg(&base)
        .output()
        .expect("run qemu-io");
    assert!(written.status.success(), "{written:?}");
    let top = disks.path().join("top.qcow2");
    let created = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&top)
        .status()
        .expect("run qemu-img");
    assert!(created.success(), "qemu-img create failed");
    let mut console = boot_counting(&a, "inc-vm", uuid, &top);
    let (booted, _, _) = before_the_move(&mut console);
    drop(console);

    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--undefinesource",
        "--copy-storage-inc",
        "inc-vm",
        &uri(&b),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}\nB's log:\n{}", b.log());
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "inc-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(names(&a), "\n");

    // On B: the same boot, what it wrote to the top image, and the backing file's data.
    let mut console = b.console_when_ready("inc-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 7), booted, "the guest booted again");
    assert_eq!(first_sector(&mut console, 8), "disk-before");
    assert_eq!(
        console
            .run(
                "dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 4; echo",
                9
            )
            .trim(),
        "bbbb",
        "the backing file's data"
    );
    drop(console);
    // B's top image is a qcow2 over the same backing file, with only the top's data.
    let info = in_mounts_of(
        &b,
        &format!("qemu-img info -U --output=json '{}'", top.display()),
    );
    let info: serde_json::Value = serde_json::from_str(&info).expect("qemu-img's JSON");
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(base.display().to_string().as_str()),
        "{info}"
    );
    let map = in_mounts_of(
        &b,
        &format!("qemu-img map -U --output=json '{}'", top.display()),
    );
    let map: serde_json::Value = serde_json::from_str(&map).expect("qemu-img's JSON");
    // The layer each offset's data is in: 0 the top image, 1 the backing file.
    let depth_at = |offset: u64| {
        map.as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                let start = e["start"].as_u64().unwrap_or(u64::MAX);
                start <= offset && offset < start + e["length"].as_u64().unwrap_or(0)
            })
            .and_then(|e| e["depth"].as_u64())
    };
    assert_eq!(
        depth_at(0),
        Some(0),
        "the guest's writes are in B's top image: {map}"
    );
    assert_eq!(
        depth_at(1 << 20),
        Some(1),
        "the backing file's data was copied: {map}"
    );
    b.oxvirt(&["destroy", "inc-vm"]).ok();
}

/// Two oxvirtd that advertise different host CPUs (key host_cpu_file): A a Haswell, B a
/// Nehalem, as two hosts of different generations would.
fn two_daemons_with_cpus(dir: &Path) -> (Daemon, Daemon) {
    let a_cpu = dir.join("a-cpu.xml");
    let b_cpu = dir.join("b-cpu.xml");
    std::fs::write(
        &a_cpu,
        "<cpu>\n  <model>Haswell-noTSX</model>\n  <vendor>Intel</vendor>\n</cpu>\n",
    )
    .expect("write A's CPU");
    std::fs::write(
        &b_cpu,
        "<cpu>\n  <model>Nehalem</model>\n  <vendor>Intel</vendor>\n</cpu>\n",
    )
    .expect("write B's CPU");
    let a = Daemon::start_with(&[
        "--qemu-user-range",
        &user_range(),
        "--host-cpu-file",
        &a_cpu.display().to_string(),
    ]);
    let b = Daemon::start_with(&[
        "--qemu-user-range",
        &user_range(),
        "--host-cpu-file",
        &b_cpu.display().to_string(),
    ]);
    (a, b)
}

#[test]
fn the_destination_checks_the_guest_cpu_before_anything_moves() {
    let cpus = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_daemons_with_cpus(cpus.path());
    // Each advertises its own CPU.
    let caps = b.oxvirt(&["capabilities"]).ok();
    assert!(caps.contains("<model>Nehalem</model>"), "{caps}");

    // A host-passthrough guest sees A's CPU itself: B's differs, so it is refused, naming what
    // B lacks, before anything is defined or started there.
    let uuid = "8c2f3e4d-5c6b-4a7a-8f9e-3c4d5e6f7081";
    let disk = qcow2_disk(a.dir.path(), "pass.qcow2");
    let xml = qcow2_guest_xml("pass-vm", uuid, &disk).replace(
        "</features>",
        "</features>\n  <cpu mode='host-passthrough'/>",
    );
    a.define("pass.xml", &xml).1.ok();
    a.oxvirt(&["start", "pass-vm"]).ok();
    let err = a
        .oxvirt(&["migrate", "--live", "pass-vm", &uri(&b)])
        .error();
    assert!(
        err.contains("host-passthrough")
            && err.contains("its model is Nehalem (the source's Haswell-noTSX)")
            && err.contains("the destination's CPU lacks: ")
            && err.contains("avx2"),
        "{err}"
    );
    assert_eq!(names(&b), "\n");
    assert_eq!(a.oxvirt(&["domstate", "pass-vm"]).ok(), "running\n\n");
    assert_eq!(
        qemu_pids(uuid).len(),
        1,
        "no QEMU of the guest started on B"
    );
    a.oxvirt(&["destroy", "pass-vm"]).ok();

    // A guest whose CPU is the baseline of both hosts' CPUs moves live.
    let baseline = a
        .oxvirt(&[
            "hypervisor-cpu-baseline",
            &cpus.path().join("a-cpu.xml").display().to_string(),
            &cpus.path().join("b-cpu.xml").display().to_string(),
        ])
        .ok();
    assert!(
        baseline.contains("<model fallback='forbid'>Nehalem</model>"),
        "{baseline}"
    );
    let uuid = "9d3f4e5d-6c7b-4a8a-9f0e-4d5e6f708192";
    let disk = qcow2_disk(a.dir.path(), "base.qcow2");
    let xml = qcow2_guest_xml("base-vm", uuid, &disk).replace(
        "</features>",
        &format!("</features>\n  {}", baseline.trim()),
    );
    a.define("base.xml", &xml).1.ok();
    let mut console = boot_counting_defined(&a, "base-vm");
    let booted = boot_id(&mut console, 3);
    let before = ram_count(&mut console, 4);
    drop(console);
    a.oxvirt(&["migrate", "--live", "--undefinesource", "base-vm", &uri(&b)])
        .ok();
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "base-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert!(b
        .oxvirt(&["dumpxml", "base-vm"])
        .ok()
        .contains("<model fallback='forbid'>Nehalem</model>"));
    let mut console = b.console_when_ready("base-vm", Duration::from_secs(30));
    assert_counting_on(&mut console, &booted, before);
    drop(console);
    b.oxvirt(&["destroy", "base-vm"]).ok();
}

#[test]
fn offline_moves_only_the_definition() {
    let (a, b) = two_daemons();
    let uuid = "a1b2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    define_qcow2_guest(&a, "off-vm", uuid);

    // virsh's rules: --offline needs --persistent and is not --live.
    let run = a.oxvirt(&["migrate", "--offline", "off-vm", &uri(&b)]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("--persistent"), "{run:?}");
    let run = a.oxvirt(&[
        "migrate",
        "--offline",
        "--live",
        "--persistent",
        "off-vm",
        &uri(&b),
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("--live") && run.stderr.contains("--offline"),
        "{run:?}"
    );
    assert_eq!(names(&b), "\n");

    // A shut-off domain: defined on B (shut off), undefined on A, no QEMU anywhere.
    a.oxvirt(&[
        "migrate",
        "--offline",
        "--persistent",
        "--undefinesource",
        "off-vm",
        &uri(&b),
    ])
    .ok();
    assert_eq!(names(&a), "\n");
    assert_eq!(names(&b), "off-vm\n\n");
    assert_eq!(b.oxvirt(&["domstate", "off-vm"]).ok(), "shut off\n\n");
    assert!(b
        .oxvirt(&["dumpxml", "off-vm"])
        .ok()
        .contains(&format!("<uuid>{uuid}</uuid>")));
    assert!(qemu_pids(uuid).is_empty());

    // A running domain: its definition goes, the guest stays running here and nothing starts
    // there.
    let uuid = "b2c3d4e5-6f70-4b8c-9dae-1f2a3b4c5d6e";
    define_qcow2_guest(&a, "run-vm", uuid);
    a.oxvirt(&["start", "run-vm"]).ok();
    a.oxvirt(&["migrate", "--offline", "--persistent", "run-vm", &uri(&b)])
        .ok();
    assert_eq!(a.oxvirt(&["domstate", "run-vm"]).ok(), "running\n\n");
    assert_eq!(b.oxvirt(&["domstate", "run-vm"]).ok(), "shut off\n\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "only A's QEMU runs");
    a.oxvirt(&["destroy", "run-vm"]).ok();
}

#[test]
fn auto_converge_and_compressed_set_qemus_capabilities() {
    let (a, b) = two_daemons();
    let uuid = "c3d4e5f6-7081-4c9d-8ebf-2a3b4c5d6e7f";
    define_qcow2_guest(&a, "caps-vm", uuid);
    a.oxvirt(&["start", "caps-vm"]).ok();
    let capabilities = || {
        a.oxvirt(&[
            "qemu-monitor-command",
            "caps-vm",
            r#"{"execute":"query-migrate-capabilities"}"#,
        ])
        .ok()
        .replace([' ', '\n'], "")
    };
    let before = capabilities();
    assert!(
        before.contains(r#"{"state":false,"capability":"xbzrle"}"#)
            && before.contains(r#"{"state":false,"capability":"auto-converge"}"#),
        "{before}"
    );
    // Slow enough (1 MiB/s) to be caught running, then aborted.
    let migrating = a.spawn_oxvirt(
        &[
            "migrate",
            "--live",
            "--auto-converge",
            "--compressed",
            "--bandwidth",
            "1",
            "caps-vm",
            &uri(&b),
        ],
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(60), || a
            .oxvirt(&["domjobinfo", "caps-vm"])
            .stdout
            .contains("Unbounded")),
        "the migration never got going"
    );
    a.oxvirt(&["domjobabort", "caps-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Set for the migration (QEMU's monitor is the migration's meanwhile); they stay the
    // guest's after the abort.
    let during = capabilities();
    assert!(
        during.contains(r#"{"state":true,"capability":"xbzrle"}"#)
            && during.contains(r#"{"state":true,"capability":"auto-converge"}"#),
        "{during}"
    );
    assert_eq!(a.oxvirt(&["domstate", "caps-vm"]).ok(), "running\n\n");
    // Not with --offline: nothing runs to converge.
    let run = a.oxvirt(&[
        "migrate",
        "--offline",
        "--persistent",
        "--compressed",
        "caps-vm",
        &uri(&b),
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    a.oxvirt(&["destroy", "caps-vm"]).ok();
}

#[test]
fn timeout_suspend_pauses_the_guest_so_the_migration_converges() {
    let (a, b) = two_daemons();
    let uuid = "d4e5f607-8192-4dae-9fc0-3b4c5d6e7f80";
    define_qcow2_guest(&a, "tmo-vm", uuid);
    a.oxvirt(&["start", "tmo-vm"]).ok();
    // virsh's rules: --timeout only with --live, --timeout-suspend only with --timeout.
    let run = a.oxvirt(&["migrate", "--timeout", "2", "tmo-vm", &uri(&b)]);
    assert!(
        run.code == Some(1) && run.stderr.contains("--live"),
        "{run:?}"
    );
    let run = a.oxvirt(&["migrate", "--live", "--timeout-suspend", "tmo-vm", &uri(&b)]);
    assert!(
        run.code == Some(1) && run.stderr.contains("--timeout"),
        "{run:?}"
    );

    // At 1 MiB/s it cannot finish: after 2 s the guest is paused here; aborted, it runs again.
    let migrating = a.spawn_oxvirt(
        &[
            "migrate",
            "--live",
            "--timeout",
            "2",
            "--timeout-suspend",
            "--bandwidth",
            "1",
            "tmo-vm",
            &uri(&b),
        ],
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(60), || a
            .oxvirt(&["domstate", "tmo-vm"])
            .stdout
            == "paused\n\n"),
        "the guest was never suspended"
    );
    a.oxvirt(&["domjobabort", "tmo-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        wait_for(Duration::from_secs(30), || a
            .oxvirt(&["domstate", "tmo-vm"])
            .stdout
            == "running\n\n"),
        "the guest stayed paused after the abort"
    );

    // Suspended after 1 s, it completes and runs again on B.
    a.oxvirt(&[
        "migrate",
        "--live",
        "--timeout",
        "1",
        "--timeout-suspend",
        "--bandwidth",
        "64",
        "tmo-vm",
        &uri(&b),
    ])
    .ok();
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "tmo-vm"]).ok(),
        "running (migrated)\n\n"
    );
    b.oxvirt(&["destroy", "tmo-vm"]).ok();
}
