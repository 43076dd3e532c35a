//! Migrating a cluster guest (docs/cluster.md, "Migrating a cluster guest"): its etcd lock
//! moves with it, so neither the destination's reconcile nor an HA restart ever runs it twice.
//! Three members with their TLS APIs and an oxvirtd outside the cluster, each in a network
//! namespace of its own (clustersupport). Needs root and Debian's etcd-server.

mod clustersupport;

use std::time::{Duration, Instant};

use clustersupport::*;
use oxvirt_testkit::wait_for;

const PASSWORD: &str = "clustermig-pw";
const UUID: &str = "5e1c7a00-0000-4000-8000-0000000c1b01";
const NAMES: [&str; 3] = ["host-a", "host-b", "host-c"];
/// The QEMU user ranges of this test's oxvirtd (no other suite uses them).
const USERS: [&str; 4] = [
    "3160000-3160099",
    "3161000-3161099",
    "3162000-3162099",
    "3163000-3163099",
];
/// Those of the cut-off tests' members (source cut, destination cut).
const CUT_USERS: [[&str; 3]; 2] = [
    ["3164000-3164099", "3165000-3165099", "3166000-3166099"],
    ["3167000-3167099", "3168000-3168099", "3169000-3169099"],
];

/// The API URL of the oxvirtd in namespace `index`.
fn url(index: usize) -> String {
    format!("oxvirt+https://10.77.0.{}:16514", 11 + index)
}

/// The lock of the guest `uuid` names `NAMES[index]`, under that member's lease (the one its
/// `/oxvirt/alive/NAME` record lives under).
fn assert_lock_is(lab: &Lab, uuid: &str, index: usize) {
    let lock = lab
        .etcd_get(&format!("/oxvirt/running/{uuid}"))
        .expect("the guest's lock");
    let alive = lab
        .etcd_get(&format!("/oxvirt/alive/{}", NAMES[index]))
        .expect("the member's record");
    assert_eq!(lock.value, NAMES[index], "{lock:?}");
    assert_eq!(lock.lease, alive.lease, "lock {lock:?}, member {alive:?}");
}

/// Waits until the poller saw the guest `uuid` run on member `host` (before it moves or dies
/// there: a run the poller missed is one the overlap check cannot judge).
fn wait_seen_running(runs: &RunSpans, lab: &Lab, uuid: &str, host: usize) {
    let pids = qemus_of(&lab.hosts[host], uuid);
    let seen = wait_for(SHORT, || pids.iter().any(|pid| runs.saw_running(*pid)));
    assert!(
        seen,
        "the poller never saw {uuid}'s QEMU {pids:?} on {} run",
        NAMES[host]
    );
}

/// An HA cluster guest moves live from its host to another member with `migrate`, then on with
/// `host-evacuate`: the same boot, its counter going on, the lock in etcd the new host's under
/// its lease, still there after both hosts reconciled several times; never two QEMUs running it
/// at once (by their vCPU threads' CPU time). A
/// destination outside the cluster is refused before anything moves. Last, its host is killed:
/// HA restarts it elsewhere (the lock was that host's).
#[test]
fn a_cluster_guest_migrates_with_its_lock_and_never_runs_twice() {
    let lab = Lab::new(4);
    lab.start_etcd();
    let mut daemons: Vec<NetDaemon> = (0..3)
        .map(|index| lab.member_with_api(index, NAMES[index], USERS[index]))
        .collect();
    // Not in the cluster.
    daemons.push(NetDaemon::start_with(
        &lab.hosts[3],
        false,
        &[
            "--listen",
            "10.77.0.14:16514",
            "--qemu-user-range",
            USERS[3],
        ],
    ));
    let ca = api_admins(&daemons, PASSWORD);
    wait_until_up(&daemons[0], 3);

    let file = daemons[0].write(
        "cm1.xml",
        &cluster_guest_xml(
            "cm1",
            UUID,
            "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0'><oxvirt:ha/></oxvirt:placement>",
        ),
    );
    daemons[0].oxvirt(&["define", "--cluster", &file]).ok();
    daemons[0].oxvirt(&["start", "cm1"]).ok();
    let host_of = |list: &str| {
        guest_rows(list)
            .into_iter()
            .find(|(n, state, _)| n == "cm1" && state == "running")
            .map(|(_, _, host)| host)
    };
    let index_of = |host: &str| NAMES.iter().position(|h| *h == host).expect("a member");
    let list = daemons[0].oxvirt(&["list"]).ok();
    let source = index_of(&host_of(&list).unwrap_or_else(|| panic!("cm1 not running: {list}")));
    let (booted, mut count) = start_counter(&mut daemons[source].console("cm1"));
    assert_lock_is(&lab, UUID, source);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let runs = RunSpans::default();
    std::thread::scope(|scope| {
        // Never two QEMUs running the guest, over every host, at any time (a live migration
        // has two QEMUs, the destination's waiting or the source's paused).
        scope.spawn(|| runs.poll(&lab.hosts, UUID, &stop));
        let _stop_poller = StopOnDrop(&stop);
        let seen_running_on = |host: usize| wait_seen_running(&runs, &lab, UUID, host);
        // `oxvirt VERB...` on member `on`, which reaches the others as admin ann (her password
        // on stdin) trusting their certificates.
        let as_ann = |on: usize, verb: &[&str]| {
            let mut args = verb.to_vec();
            args.extend(["--dest-user", "ann", "--dest-ca", ca.as_str()]);
            oxvirt_with_input(
                &daemons[on].socket,
                &args,
                &format!("{PASSWORD}\n"),
                Duration::from_secs(300),
            )
        };
        let migrate =
            |from: usize, to: usize| as_ann(from, &["migrate", "--live", "cm1", &url(to)]);
        // Goes on counting on `host`, the same boot, under its lock.
        let mut goes_on = |host: usize| {
            assert_eq!(
                daemons[host].oxvirt(&["domstate", "--reason", "cm1"]).ok(),
                "running (migrated)\n\n"
            );
            let (now_booted, now) = counter(&mut daemons[host].console("cm1"));
            assert_eq!(now_booted, booted, "cm1 booted again on {}", NAMES[host]);
            assert!(
                now > count,
                "cm1's counter on {}: {now} after {count}",
                NAMES[host]
            );
            count = now;
            assert_lock_is(&lab, UUID, host);
        };

        // Outside the cluster: refused before anything moves.
        let run = migrate(source, 3);
        assert_eq!(run.code, Some(1), "{run:#?}");
        assert!(run.stderr.contains("not a member of a cluster"), "{run:#?}");
        assert_eq!(daemons[3].oxvirt(&["list", "--all", "--name"]).ok(), "\n");
        assert!(qemus_of(&lab.hosts[3], UUID).is_empty());
        assert_eq!(
            daemons[source].oxvirt(&["domstate", "cm1"]).ok(),
            "running\n\n"
        );
        assert_lock_is(&lab, UUID, source);

        // migrate --live to the next member.
        seen_running_on(source);
        let first = (source + 1) % 3;
        let run = migrate(source, first);
        assert_eq!(
            run.code,
            Some(0),
            "{run:#?}\nsource's log:\n{}\ndestination's log:\n{}",
            daemons[source].log(),
            daemons[first].log()
        );
        goes_on(first);
        assert!(qemus_of(&lab.hosts[source], UUID).is_empty());
        // The only definition is the cluster's: no local copy stays on the source.
        let list = daemons[source].oxvirt(&["list", "--all"]).ok();
        assert_eq!(host_of(&list).as_deref(), Some(NAMES[first]), "{list}");
        // Both hosts reconcile several times: the guest stays where it is, under its lock.
        wait_for_renewals(&lab, NAMES[source], 3);
        wait_for_renewals(&lab, NAMES[first], 3);
        assert_eq!(qemus_of(&lab.hosts[first], UUID).len(), 1);
        goes_on(first);

        // host-evacuate of that member moves it on.
        seen_running_on(first);
        let run = as_ann(first, &["host-evacuate", NAMES[first]]);
        assert_eq!(run.code, Some(0), "{run:#?}\n{}", daemons[first].log());
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with("cm1: moved to "))
            .unwrap_or_else(|| panic!("no line for cm1: {run:#?}"));
        let second = index_of(line.trim_start_matches("cm1: moved to ").trim());
        assert_ne!(second, first);
        goes_on(second);
        wait_for_renewals(&lab, NAMES[first], 3);
        wait_for_renewals(&lab, NAMES[second], 3);
        assert!(qemus_of(&lab.hosts[first], UUID).is_empty());
        goes_on(second);

        // Its host dies (oxvirtd and QEMU): HA restarts it on another, as the lock was its.
        seen_running_on(second);
        let killed = Instant::now();
        daemons[second].kill();
        for pid in qemus_of(&lab.hosts[second], UUID) {
            // SAFETY: kill(2) on the guest's QEMU in our test namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let survivor = (second + 1) % 3;
        let mut last = String::new();
        let mut elsewhere = None;
        let restarted = wait_for(Duration::from_secs(90), || {
            let run = daemons[survivor].oxvirt(&["list"]);
            last = format!("{run:#?}");
            elsewhere = host_of(&run.stdout).filter(|host| *host != NAMES[second]);
            elsewhere
                .as_deref()
                .is_some_and(|host| qemus_of(&lab.hosts[index_of(host)], UUID).len() == 1)
        });
        assert!(
            restarted,
            "cm1 did not run again: {last}\n{}",
            daemons[survivor].log()
        );
        eprintln!(
            "cm1 ran again on {elsewhere:?} {:?} after {} died",
            killed.elapsed(),
            NAMES[second]
        );
        let third = index_of(elsewhere.as_deref().expect("a host"));
        let locked = wait_for(SHORT, || {
            lab.etcd_get(&format!("/oxvirt/running/{UUID}"))
                .is_some_and(|lock| lock.value == NAMES[third])
        });
        assert!(locked, "the lock is not {}'s", NAMES[third]);
        assert_lock_is(&lab, UUID, third);
        // It boots there (a new boot: its host died), and the poller sees it run.
        let started = wait_for(SHORT, || {
            daemons[third]
                .oxvirt(&["domstate", "cm1"])
                .stdout
                .contains("running")
        });
        assert!(started, "{}", daemons[third].log());
        let mut console = daemons[third].console("cm1");
        boot_shell(&mut console);
        let said = guest(&mut console, "echo back on duty", SHORT);
        assert!(said.contains("back on duty"), "{said}");

        seen_running_on(third);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let spans = runs.spans();
        eprintln!("cm1 ran (host, pid, first and last sample): {spans:?}");
        assert_eq!(
            overlapping_runs(&spans),
            Vec::<String>::new(),
            "cm1 ran twice at once"
        );
        // Started, moved twice, restarted: four QEMUs ran it, one after the other, and the
        // poller saw each of them run.
        assert_eq!(spans.len(), 4, "{spans:?}");
    });
}

/// The source of a cluster guest's migration loses etcd halfway (a blackhole route to etcd in
/// its namespace; the destination still reaches it and the source): its lease is no longer
/// renewed, so it destroys its HA guest itself (self-fencing), which ends the migration; the
/// destination drops what it prepared; once the source's lease expired, HA starts the guest on
/// another member. Never two QEMUs running it; the source, back in reach of etcd, rejoins and
/// does not run it.
#[test]
fn a_source_cut_off_etcd_mid_migration_fences_its_guest_and_ha_runs_it_once_elsewhere() {
    cut_off_etcd_mid_migration(Side::Source);
}

/// The destination loses etcd halfway: at the switchover it cannot take the guest's lock, so it
/// does not resume the guest and ends its copy; the source makes sure the lock is still its
/// own and resumes it: the same boot, its counter going on, never two QEMUs running it.
#[test]
fn a_destination_cut_off_etcd_mid_migration_cannot_take_the_lock_and_the_source_goes_on() {
    cut_off_etcd_mid_migration(Side::Destination);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Source,
    Destination,
}

fn cut_off_etcd_mid_migration(side: Side) {
    let (guest_uuid, name, users) = match side {
        Side::Source => ("5e1c7a00-0000-4000-8000-0000000c1b02", "cm2", CUT_USERS[0]),
        Side::Destination => ("5e1c7a00-0000-4000-8000-0000000c1b03", "cm3", CUT_USERS[1]),
    };
    let lab = Lab::new(3);
    lab.start_etcd();
    let daemons: Vec<NetDaemon> = (0..3)
        .map(|index| lab.member_with_api(index, NAMES[index], users[index]))
        .collect();
    let ca = api_admins(&daemons, PASSWORD);
    wait_until_up(&daemons[0], 3);
    let file = daemons[0].write(
        &format!("{name}.xml"),
        &cluster_guest_xml(
            name,
            guest_uuid,
            "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0'><oxvirt:ha/></oxvirt:placement>",
        ),
    );
    daemons[0].oxvirt(&["define", "--cluster", &file]).ok();
    daemons[0].oxvirt(&["start", name]).ok();
    let runs_on = |list: &str| {
        guest_rows(list)
            .into_iter()
            .find(|(n, state, _)| n == name && state == "running")
            .and_then(|(_, _, host)| NAMES.iter().position(|h| *h == host))
    };
    let list = daemons[0].oxvirt(&["list"]).ok();
    let source = runs_on(&list).unwrap_or_else(|| panic!("{name} not running: {list}"));
    let destination = (source + 1) % 3;
    let cut_off = match side {
        Side::Source => source,
        Side::Destination => destination,
    };
    let (booted, count) = start_counter(&mut daemons[source].console(name));
    let blackhole = format!("{ETCD_ADDRESS}/32");

    let stop = std::sync::atomic::AtomicBool::new(false);
    let runs = RunSpans::default();
    std::thread::scope(|scope| {
        scope.spawn(|| runs.poll(&lab.hosts, guest_uuid, &stop));
        let _stop_poller = StopOnDrop(&stop);
        wait_seen_running(&runs, &lab, guest_uuid, source);

        // A slow migration, and once it moves memory, one side loses etcd (the source at
        // 1 MiB/s, so that it is fenced long before the switchover; the destination at 4 MiB/s,
        // so that the switchover comes soon after).
        let bandwidth = if side == Side::Source { "1" } else { "4" };
        let migration = scope.spawn(|| {
            oxvirt_with_input(
                &daemons[source].socket,
                &[
                    "migrate",
                    "--live",
                    "--bandwidth",
                    bandwidth,
                    name,
                    &url(destination),
                    "--dest-user",
                    "ann",
                    "--dest-ca",
                    ca.as_str(),
                ],
                &format!("{PASSWORD}\n"),
                Duration::from_secs(300),
            )
        });
        let moving = wait_for(SHORT, || {
            memory_moving(&daemons[source].oxvirt(&["domjobinfo", name]).stdout)
        });
        assert!(moving, "no migration running: {}", daemons[source].log());
        lab.hosts[cut_off].ip(&["route", "add", "blackhole", &blackhole]);
        let cut = Instant::now();
        let run = migration.join().expect("migrate");
        eprintln!(
            "{side:?} cut: migrate ended {:?} after the cut: {run:#?}",
            cut.elapsed()
        );
        assert_eq!(run.code, Some(1), "{run:#?}\n{}", daemons[source].log());
        let host = match side {
            Side::Source => {
                // The source fenced the guest, which failed the migration.
                assert!(daemons[source].log().contains("self-fencing"));
                assert!(qemus_of(&lab.hosts[source], guest_uuid).is_empty());
                // HA runs it again on a member that reaches etcd: a new boot, one QEMU.
                let mut last = String::new();
                let mut host = None;
                let again = wait_for(Duration::from_secs(90), || {
                    let list = daemons[destination].oxvirt(&["list"]).stdout;
                    host = runs_on(&list).filter(|h| *h != source);
                    last = list;
                    host.is_some_and(|h| qemus_of(&lab.hosts[h], guest_uuid).len() == 1)
                });
                assert!(again, "{name} did not run again: {last}");
                let host = host.expect("a host");
                eprintln!(
                    "{name} ran again on {} {:?} after the cut",
                    NAMES[host],
                    cut.elapsed()
                );
                let mut console = daemons[host].console(name);
                boot_shell(&mut console);
                let now = guest(&mut console, "cat /proc/sys/kernel/random/boot_id", SHORT);
                assert_ne!(
                    now.trim(),
                    booted,
                    "{name} did not boot again on {}",
                    NAMES[host]
                );
                host
            }
            Side::Destination => {
                // The destination could not take the lock: the guest goes on on the source.
                assert!(
                    run.stderr.contains("goes on running here"),
                    "{run:#?}\nsource's log:\n{}\ndestination's log:\n{}",
                    daemons[source].log(),
                    daemons[destination].log()
                );
                assert_eq!(
                    daemons[source].oxvirt(&["domstate", name]).ok(),
                    "running\n\n"
                );
                let (now_booted, now) = counter(&mut daemons[source].console(name));
                assert_eq!(now_booted, booted, "{name} booted again");
                assert!(now > count, "{name}'s counter: {now} after {count}");
                let gone = wait_for(SHORT, || {
                    qemus_of(&lab.hosts[destination], guest_uuid).is_empty()
                });
                assert!(gone, "{name}'s QEMU left on {}", NAMES[destination]);
                source
            }
        };
        assert_lock_is(&lab, guest_uuid, host);
        wait_seen_running(&runs, &lab, guest_uuid, host);

        // etcd in reach again: the member cut off rejoins and the guest stays where it runs.
        lab.hosts[cut_off].ip(&["route", "del", "blackhole", &blackhole]);
        wait_until_up(&daemons[host], 3);
        wait_for_renewals(&lab, NAMES[cut_off], 3);
        for (index, ns) in lab.hosts.iter().enumerate() {
            let expected = usize::from(index == host);
            assert_eq!(
                qemus_of(ns, guest_uuid).len(),
                expected,
                "on {}",
                NAMES[index]
            );
        }
        assert_lock_is(&lab, guest_uuid, host);

        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let spans = runs.spans();
        eprintln!("{name} ran (host, pid, first and last sample): {spans:?}");
        assert_eq!(
            overlapping_runs(&spans),
            Vec::<String>::new(),
            "{name} ran twice at once"
        );
        let expected = if side == Side::Source { 2 } else { 1 };
        assert_eq!(spans.len(), expected, "{spans:?}");
    });
}
