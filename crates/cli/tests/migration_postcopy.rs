//! Post-copy live migration (`migrate --live --postcopy`, `migrate-postcopy`,
//! `--timeout S --timeout-postcopy`) between two real oxvirtd on this host, with real QEMU (TCG)
//! guests checked from inside: once switched, the guest runs on the destination with the same
//! boot and its RAM counter going on; a destination whose QEMU cannot use userfaultfd refuses
//! before anything moves.
//!
//! The destination's QEMU runs as an unprivileged guest user, so userfaultfd needs the kernel's
//! `vm.unprivileged_userfaultfd` = 1 (docs/migration.md). These tests set it for their
//! duration ([`Userfaultfd`]) and put the value they found back; they hold a lock meanwhile,
//! so the refusal test (0) and the moving ones (1) never overlap.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use oxvirt_testkit::{wait_for, BOOT_MARKER};
use support::counting::{
    assert_counting_on, before_the_move, boot_counting, boot_id, qcow2_disk, ram_count, uri,
};
use support::{qemu_pids, wait_for_exit, ConsoleSession, Daemon};

const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";

/// `vm.unprivileged_userfaultfd` set to a value for as long as this lives (and the lock held:
/// the tests of this binary run in parallel); the old value comes back on drop.
struct Userfaultfd {
    old: String,
    _held: MutexGuard<'static, ()>,
}

impl Userfaultfd {
    fn set(value: &str) -> Userfaultfd {
        static LOCK: Mutex<()> = Mutex::new(());
        let held = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = std::fs::read_to_string(SYSCTL).expect("read the sysctl");
        std::fs::write(SYSCTL, value).expect("set vm.unprivileged_userfaultfd");
        Userfaultfd {
            old: old.trim().to_string(),
            _held: held,
        }
    }
}

impl Drop for Userfaultfd {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(SYSCTL, &self.old) {
            eprintln!(
                "cannot put vm.unprivileged_userfaultfd back to {}: {err}",
                self.old
            );
        }
    }
}

/// Two oxvirtd with QEMU user ranges of their own (from 3_502_000: no other suite's).
fn two_daemons() -> (Daemon, Daemon) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = || {
        let first = 3_502_000 + NEXT.fetch_add(1, Ordering::SeqCst) * 100;
        format!("{first}-{}", first + 99)
    };
    let [a, b] = [(); 2].map(|()| Daemon::start_with(&["--qemu-user-range", &range()]));
    (a, b)
}

/// Every domain `daemon` has, by name.
fn names(daemon: &Daemon) -> String {
    daemon.oxvirt(&["list", "--all", "--name"]).ok()
}

/// A thread that asks `daemon` for the job of `domain` until `stop`, keeping every phase it saw.
fn watch_phases(
    daemon: &Daemon,
    domain: &str,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let socket = daemon.socket.clone();
    let domain = domain.to_string();
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let out = std::process::Command::new(support::oxvirt_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["domjobinfo", &domain])
                .output()
                .expect("run oxvirt domjobinfo");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if let Some(phase) = text
                .lines()
                .find_map(|line| line.strip_prefix("Phase:"))
                .map(|phase| phase.trim().to_string())
            {
                if seen.last() != Some(&phase) {
                    seen.push(phase);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// The guest runs on `b` once (migrated), with the boot it had and its RAM counter kept and
/// going on, and never booted there.
fn assert_moved(b: &Daemon, name: &str, uuid: &str, booted: &str, before: u64) -> ConsoleSession {
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", name]).ok(),
        "running (migrated)\n\n"
    );
    assert!(
        wait_for(Duration::from_secs(30), || qemu_pids(uuid).len() == 1),
        "the source's QEMU stayed"
    );
    // A guest that does not answer on B: its console log says why (an oops of QEMU 7.2's
    // damage, docs/migration.md "Known problem", or a hang), printed before the failure.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut console = b.console_when_ready(name, Duration::from_secs(60));
        assert_counting_on(&mut console, booted, before);
        assert!(
            !console.all_output().contains(BOOT_MARKER),
            "the guest booted on B: {}",
            console.all_output()
        );
        console
    }));
    checked.unwrap_or_else(|failure| {
        let log = b.dir.path().join(format!("state/run/{uuid}/console.log"));
        let text = std::fs::read(&log).unwrap_or_default();
        let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(4000)..]).to_string();
        eprintln!("the end of B's console log ({}):\n{tail}", log.display());
        std::panic::resume_unwind(failure)
    })
}

/// The sysctl at `sysctl`, two oxvirtd, and on the first a counting guest `name` (a qcow2 disk
/// both reach) that booted and counts: its console, boot id and RAM count before any move.
struct Lab {
    _sysctl: Userfaultfd,
    a: Daemon,
    b: Daemon,
    console: ConsoleSession,
    booted: String,
    before: u64,
}

fn lab(sysctl: &str, name: &str, uuid: &str) -> Lab {
    let _sysctl = Userfaultfd::set(sysctl);
    let (a, b) = two_daemons();
    let disk = qcow2_disk(a.dir.path(), &format!("{name}.qcow2"));
    let mut console = boot_counting(&a, name, uuid, &disk);
    let (booted, before, _) = before_the_move(&mut console);
    Lab {
        _sysctl,
        a,
        b,
        console,
        booted,
        before,
    }
}

/// Starts `migrate --live --bandwidth 1 EXTRA` of `name` from `a` to `b` (too slow to end by
/// itself in a test's time) and waits until memory moves.
fn slow_migration(a: &Daemon, b: &Daemon, name: &str, extra: &[&str]) -> std::process::Child {
    let dest = uri(b);
    let mut args = vec!["migrate", "--live", "--bandwidth", "1"];
    args.extend_from_slice(extra);
    args.extend([name, dest.as_str()]);
    let migrating = a.spawn_oxvirt(&args, &[]);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let info = a.oxvirt(&["domjobinfo", name]).stdout;
            info.contains("Phase:            active")
                && !info.contains("Memory processed: 0.000 MiB")
        }),
        "the migration never got going"
    );
    migrating
}

#[test]
fn postcopy_is_refused_by_a_destination_without_userfaultfd() {
    let uuid = "5c0e7a21-9d3b-4f6e-8a1c-2e4f6a8b0c01";
    // (The sysctl's guard is bound: a `..` would drop it, and its lock, at once.)
    let Lab {
        _sysctl: _held,
        a,
        b,
        mut console,
        booted,
        before,
    } = lab("0", "pc-refuse-vm", uuid);

    // virsh's flag rules, checked by the command line.
    let run = a.oxvirt(&["migrate", "--postcopy", "pc-refuse-vm", &uri(&b)]);
    assert!(
        run.code == Some(1) && run.stderr.contains("--live"),
        "{run:?}"
    );
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--timeout",
        "2",
        "--timeout-postcopy",
        "pc-refuse-vm",
        &uri(&b),
    ]);
    assert!(
        run.code == Some(1) && run.stderr.contains("--postcopy"),
        "{run:?}"
    );
    let run = a.oxvirt(&["migrate-postcopy", "pc-refuse-vm"]);
    assert!(
        run.code == Some(1) && run.stderr.contains("no migration job running"),
        "{run:?}"
    );

    // B's QEMU could not take a post-copy: refused before anything moved, naming the sysctl.
    let run = a.oxvirt(&["migrate", "--live", "--postcopy", "pc-refuse-vm", &uri(&b)]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("vm.unprivileged_userfaultfd") && run.stderr.contains("refused"),
        "{run:?}"
    );
    assert_eq!(a.oxvirt(&["domstate", "pc-refuse-vm"]).ok(), "running\n\n");
    assert_eq!(names(&b), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1);
    assert_eq!(boot_id(&mut console, 20), booted);
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(&mut console, 21)
            > before),
        "the counter stopped on A"
    );

    // A migration started without --postcopy cannot be switched; aborted, the guest stays.
    let migrating = slow_migration(&a, &b, "pc-refuse-vm", &[]);
    let run = a.oxvirt(&["migrate-postcopy", "pc-refuse-vm"]);
    assert!(
        run.code == Some(1) && run.stderr.contains("not started with --postcopy"),
        "{run:?}"
    );
    a.oxvirt(&["domjobabort", "pc-refuse-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(a.oxvirt(&["domstate", "pc-refuse-vm"]).ok(), "running\n\n");
    assert!(
        wait_for(Duration::from_secs(60), || names(&b) == "\n"
            && qemu_pids(uuid).len() == 1),
        "B kept the aborted migration's guest"
    );
    a.oxvirt(&["destroy", "pc-refuse-vm"]).ok();
}

#[test]
fn migrate_postcopy_switches_a_running_migration_and_the_guest_runs_on() {
    let uuid = "5c0e7a21-9d3b-4f6e-8a1c-2e4f6a8b0c02";
    let lab = lab("1", "pc-switch-vm", uuid);
    let (a, b) = (&lab.a, &lab.b);

    // At 1 MiB/s the pre-copy would take minutes: it runs until switched.
    let migrating = slow_migration(a, b, "pc-switch-vm", &["--postcopy"]);
    assert!(
        wait_for(Duration::from_secs(60), || qemu_pids(uuid).len() == 2),
        "B's QEMU never started to receive"
    );
    assert_eq!(a.oxvirt(&["domstate", "pc-switch-vm"]).ok(), "running\n\n");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phases = watch_phases(a, "pc-switch-vm", &stop);
    a.oxvirt(&["migrate-postcopy", "pc-switch-vm"]).ok();
    // Once is enough: a second switch is refused.
    let again = a.oxvirt(&["migrate-postcopy", "pc-switch-vm"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    stop.store(true, Ordering::SeqCst);
    let phases = phases.join().expect("the job watcher");
    assert_eq!(run.code, Some(0), "{run:?}\nA's log:\n{}", a.log());
    assert!(
        phases.iter().any(|phase| phase == "postcopy-active"),
        "domjobinfo never showed post-copy: {phases:?}"
    );
    let info = a.oxvirt(&["domjobinfo", "pc-switch-vm"]).ok();
    assert!(info.contains("Job type:         Completed"), "{info}");
    eprintln!("A's job after the move:\n{info}phases seen: {phases:?}");
    assert_eq!(
        a.oxvirt(&["domstate", "--reason", "pc-switch-vm"]).ok(),
        "shut off (migrated)\n\n"
    );

    let console = assert_moved(b, "pc-switch-vm", uuid, &lab.booted, lab.before);
    drop(console);
    b.oxvirt(&["destroy", "pc-switch-vm"]).ok();
}

#[test]
fn timeout_postcopy_switches_by_itself() {
    let uuid = "5c0e7a21-9d3b-4f6e-8a1c-2e4f6a8b0c03";
    let lab = lab("1", "pc-timeout-vm", uuid);
    let (a, b) = (&lab.a, &lab.b);

    // At 1 MiB/s it cannot converge: after 2 s it switches, and completes.
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--postcopy",
        "--timeout",
        "2",
        "--timeout-postcopy",
        "--bandwidth",
        "1",
        "--undefinesource",
        "pc-timeout-vm",
        &uri(b),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}\nA's log:\n{}", a.log());
    assert!(
        a.log().contains("switching to post-copy"),
        "A never switched: {}",
        a.log()
    );
    assert_eq!(names(a), "\n");
    let console = assert_moved(b, "pc-timeout-vm", uuid, &lab.booted, lab.before);
    drop(console);
    b.oxvirt(&["destroy", "pc-timeout-vm"]).ok();
}

#[test]
fn postcopy_after_precopy_switches_once_the_first_pass_ended() {
    let uuid = "5c0e7a21-9d3b-4f6e-8a1c-2e4f6a8b0c04";
    let mut lab = lab("1", "pc-after-vm", uuid);
    // A guest that dirties its memory faster than 4 MiB/s never converges in pre-copy: 16 MiB
    // of random bytes rewritten in its tmpfs, and a 16 MiB file copied, again and again.
    // Its memory is checked too: a 16 MiB file of random bytes and its MD5 sum, copied and
    // checked pass after pass (QEMU 7.2's TCG damage, docs/migration.md "Known problem", shows
    // as a copy that differs).
    lab.console.run(
        "dd if=/dev/urandom of=/mnt/ram/ref bs=1M count=16 2>/dev/null; \
         md5sum /mnt/ram/ref > /mnt/ram/ref.md5",
        40,
    );
    lab.console.send_line(
        "(while :; do cp /mnt/ram/ref /mnt/ram/copy; \
         md5sum /mnt/ram/copy | sed s/copy/ref/ | cmp -s - /mnt/ram/ref.md5 || echo copy-damaged-$((6*7)); \
         dd if=/dev/urandom of=/mnt/ram/dirty bs=1M count=16 2>/dev/null; done) &",
    );
    let (a, b) = (&lab.a, &lab.b);
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--postcopy",
        "--postcopy-after-precopy",
        "--bandwidth",
        "4",
        "--undefinesource",
        "pc-after-vm",
        &uri(b),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}\nA's log:\n{}", a.log());
    assert!(
        a.log().contains("switching the migration to post-copy"),
        "A never switched: {}",
        a.log()
    );
    assert_eq!(names(a), "\n");
    let mut console = assert_moved(b, "pc-after-vm", uuid, &lab.booted, lab.before);
    // The file is whole, and the copies made on B (a few passes) too.
    let check = console.run("md5sum -c /mnt/ram/ref.md5; sleep 5", 41);
    assert!(check.contains("/mnt/ram/ref: OK"), "{check}");
    // (Its own words: the command line, echoed, says `$((6*7))`.)
    assert!(
        !console.all_output().contains("copy-damaged-42"),
        "the guest's memory was damaged: {}",
        console.all_output()
    );
    drop(console);
    b.oxvirt(&["destroy", "pc-after-vm"]).ok();
}

#[test]
fn a_failure_after_the_switch_leaves_the_guest_paused_on_the_source() {
    let uuid = "5c0e7a21-9d3b-4f6e-8a1c-2e4f6a8b0c05";
    let lab = lab("1", "pc-fail-vm", uuid);
    let (a, b) = (&lab.a, &lab.b);
    let monitor = |command: &str| {
        a.oxvirt(&["qemu-monitor-command", "pc-fail-vm", command])
            .ok()
            .replace([' ', '\n'], "")
    };
    // The post-copy phase slowed down too (1 MiB/s, QEMU's own parameter: --bandwidth limits
    // the pre-copy), so it can be caught.
    monitor(
        r#"{"execute":"migrate-set-parameters","arguments":{"max-postcopy-bandwidth":1048576}}"#,
    );
    let migrating = slow_migration(a, b, "pc-fail-vm", &["--postcopy"]);
    a.oxvirt(&["migrate-postcopy", "pc-fail-vm"]).ok();
    assert!(
        wait_for(Duration::from_secs(60), || a
            .oxvirt(&["domjobinfo", "pc-fail-vm"])
            .stdout
            .contains("Phase:            postcopy-active")),
        "the migration never reached post-copy"
    );
    // Too late to abort: the guest runs on B.
    let run = a.oxvirt(&["domjobabort", "pc-fail-vm"]);
    assert!(
        run.code == Some(1) && run.stderr.contains("can no longer be aborted"),
        "{run:?}"
    );
    // B's QEMU (the one loading, `-incoming`) dies: the stream breaks in post-copy.
    let incoming = qemu_pids(uuid)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("-incoming"))
        })
        .expect("B's QEMU");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &incoming.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("post-copy failed after the switch")
            && run.stderr.contains("cannot run here any more"),
        "{run:?}"
    );
    // Not resumed nor ended here: its newest state was on B. A's QEMU keeps it paused, in
    // postcopy-paused (QEMU could resume the migration to a new destination QEMU).
    assert_eq!(a.oxvirt(&["domstate", "pc-fail-vm"]).ok(), "paused\n\n");
    assert!(
        wait_for(Duration::from_secs(20), || qemu_pids(uuid).len() == 1),
        "A's QEMU was ended (or B's stayed)"
    );
    // (The command may fail on B's finish first; A's QEMU notices the broken stream as it
    // sends its next page.)
    let mut status = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            status = monitor(r#"{"execute":"query-migrate"}"#);
            status.contains(r#""status":"postcopy-paused""#)
        }),
        "{status}"
    );
    a.oxvirt(&["destroy", "pc-fail-vm"]).ok();
}
