//! The cluster on etcd (docs/cluster.md): three oxvirtd in three network namespaces, etcd in a
//! fourth, a bridge joining them in a fifth (clustersupport). Needs root (namespaces) and
//! Debian's etcd-server.

mod clustersupport;

use std::time::{Duration, Instant};

use clustersupport::*;
use oxvirt_testkit::wait_for;

/// A member's lease lives 10 s (oxvirt_cluster::LEASE_TTL); etcd checks expiries about every
/// half second, and host-list itself can take a few seconds on a loaded machine.
const EXPIRY_BOUND: Duration = Duration::from_secs(25);

#[test]
fn three_hosts_register_and_a_killed_host_s_lease_expires() {
    let lab = Lab::new(3);
    lab.start_etcd();
    let a = lab.member(0, "host-a");
    let mut b = lab.member(1, "host-b");
    let c = lab.member(2, "host-c");

    let mut last = String::new();
    let all_up = wait_for(Duration::from_secs(60), || {
        let run = a.oxvirt(&["host-list"]);
        last = format!("{run:#?}");
        run.code == Some(0)
            && host_rows(&run.stdout)
                .iter()
                .filter(|(_, state, _)| state == "up")
                .count()
                == 3
    });
    assert!(
        all_up,
        "three hosts up in host-list: {last}\nhost-a's log:\n{}",
        a.log()
    );
    // Any member answers the same; each record carries the host's facts.
    let table = c.oxvirt(&["host-list"]).ok();
    let rows = host_rows(&table);
    let names: Vec<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["host-a", "host-b", "host-c"], "{table}");
    assert!(
        table.contains("CPU model") && table.contains(" MiB"),
        "{table}"
    );
    for line in table.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let free: u64 = line
            .split_whitespace()
            .rev()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no free memory in {line:?}"));
        assert!(free > 0, "{line}");
    }
    for (_, _, guests) in &rows {
        assert_eq!(guests, "0", "{table}");
    }

    // host-b crashes: it stops renewing, and its lease expires within the bound.
    b.kill();
    let killed = Instant::now();
    let expired = wait_for(EXPIRY_BOUND, || {
        let run = a.oxvirt(&["host-list"]);
        last = run.stdout.clone();
        host_rows(&run.stdout)
            .iter()
            .any(|(name, state, _)| name == "host-b" && state == "lease expired")
    });
    assert!(
        expired,
        "host-b's lease did not expire within {EXPIRY_BOUND:?}: {last}"
    );
    let rows = host_rows(&last);
    assert!(
        rows.iter()
            .filter(|(name, _, _)| name != "host-b")
            .all(|(_, state, _)| state == "up"),
        "{last}"
    );
    eprintln!(
        "host-b's lease seen expired {:?} after SIGKILL",
        killed.elapsed()
    );

    // It comes back and joins again with a new lease.
    b.launch();
    let back = wait_for(Duration::from_secs(60), || {
        let run = c.oxvirt(&["host-list"]);
        last = run.stdout.clone();
        host_rows(&run.stdout)
            .iter()
            .any(|(name, state, _)| name == "host-b" && state == "up")
    });
    assert!(back, "host-b did not rejoin: {last}\nits log:\n{}", b.log());
}

/// Two guests of one spread group, defined in the cluster and started through it, run on two
/// different hosts; every member lists both with their host.
#[test]
fn spread_guests_of_a_group_land_on_different_hosts() {
    let lab = Lab::new(3);
    lab.start_etcd();
    let members = [
        lab.member(0, "host-a"),
        lab.member(1, "host-b"),
        lab.member(2, "host-c"),
    ];
    let [a, _, c] = &members;
    clustersupport::wait_until_up(a, 3);
    let mut last = String::new();

    const PLACEMENT: &str =
        "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0' group='web' policy='spread'/>";
    let guests = [
        ("web1", "5e1c7a00-0000-4000-8000-0000000c1a01"),
        ("web2", "5e1c7a00-0000-4000-8000-0000000c1a02"),
    ];
    for (name, uuid) in guests {
        let file = a.write(
            &format!("{name}.xml"),
            &cluster_guest_xml(name, uuid, PLACEMENT),
        );
        let run = a.oxvirt(&["define", "--cluster", &file]);
        assert!(
            run.code == Some(0) && run.stdout.contains(&format!("Domain '{name}' defined")),
            "{run:#?}"
        );
    }
    // Defined again from another member without <uuid>: the same guest, updated (as virsh define).
    let (name, uuid) = guests[0];
    let again =
        cluster_guest_xml(name, uuid, PLACEMENT).replace(&format!("<uuid>{uuid}</uuid>"), "");
    let file = c.write("again.xml", &again);
    c.oxvirt(&["define", "--cluster", &file]).ok();
    assert!(c.oxvirt(&["dumpxml", name]).ok().contains(uuid));
    // Defined in the cluster only: no member has a local definition; each lists both, shut off.
    let list = c.oxvirt(&["list", "--all"]).ok();
    let rows = guest_rows(&list);
    assert_eq!(
        rows,
        [
            ("web1".to_string(), "shut off".to_string(), "-".to_string()),
            ("web2".to_string(), "shut off".to_string(), "-".to_string()),
        ],
        "{list}"
    );
    assert!(list.starts_with(" Id   Name   State      Host\n"), "{list}");
    // dumpxml prints the placement back, from any member.
    let xml = c.oxvirt(&["dumpxml", "web1"]).ok();
    assert!(
        xml.contains("<oxvirt:placement") && xml.contains("policy=\"spread\""),
        "{xml}"
    );
    // A bad policy is refused naming the element; nothing is stored.
    let bad = a.write(
        "bad.xml",
        &cluster_guest_xml(
            "bad",
            "5e1c7a00-0000-4000-8000-0000000c1a0f",
            "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0' group='web' policy='pack'/>",
        ),
    );
    let run = a.oxvirt(&["define", "--cluster", &bad]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("oxvirt:placement") && run.stderr.contains("'pack' for policy"),
        "{run:#?}"
    );
    assert!(!a.oxvirt(&["list", "--all"]).ok().contains("bad"));

    // Both started through host-a: each on a host of its own.
    for (name, _) in guests {
        let run = a.oxvirt(&["start", name]);
        assert_eq!(run.code, Some(0), "{run:#?}\nhost-a's log:\n{}", a.log());
    }
    let list = c.oxvirt(&["list", "--all"]).ok();
    let rows = guest_rows(&list);
    let host_of = |name: &str| {
        rows.iter()
            .find(|(n, state, _)| n == name && state == "running")
            .map(|(_, _, host)| host.clone())
            .unwrap_or_else(|| panic!("{name} not running in {list}"))
    };
    eprintln!("host-c's list:\n{list}");
    let (host1, host2) = (host_of("web1"), host_of("web2"));
    assert_ne!(host1, host2, "spread guests on one host: {list}");
    for (name, uuid) in guests {
        let host = host_of(name);
        // QEMU runs on that host, and on no other.
        for (index, member) in members.iter().enumerate() {
            let qemus = member.ns.processes_matching(uuid);
            let here = format!("host-{}", ["a", "b", "c"][index]);
            let expected = usize::from(here == host);
            assert_eq!(qemus.len(), expected, "{name}'s QEMU on {here}: {list}");
        }
        // Its console answers, on the host that runs it.
        let index = ["host-a", "host-b", "host-c"]
            .iter()
            .position(|h| *h == host)
            .expect("a known host");
        let runner = &members[index];
        let local = runner.oxvirt(&["list"]).ok();
        assert!(
            guest_rows(&local)
                .iter()
                .any(|(n, state, h)| n == name && state == "running" && *h == host),
            "{local}"
        );
        let mut console = runner.console(name);
        boot_shell(&mut console);
        let said = guest(&mut console, &format!("echo I am {name}"), SHORT);
        assert!(said.contains(&format!("I am {name}")), "{said}");
    }
    // dominfo and domstate answer on a member that does not run it, naming its host.
    let other = members
        .iter()
        .zip(["host-a", "host-b", "host-c"])
        .find(|(_, name)| *name != host1)
        .map(|(member, _)| member)
        .expect("another member");
    let info = other.oxvirt(&["dominfo", "web1"]).ok();
    assert!(
        info.contains("State:          running")
            && info.contains(&format!("Host:           {host1}"))
            && info.contains(guests[0].1),
        "{info}"
    );
    assert_eq!(other.oxvirt(&["domstate", "web1"]).ok(), "running\n\n");
    // Suspended and resumed through another member (which asks its host through etcd): what
    // its host sees of it reaches the others within a renewal: paused there with its reason,
    // its CPU time, and running again.
    let state_elsewhere_becomes = |expected: &str| {
        let mut seen = String::new();
        let became = wait_for(SHORT, || {
            seen = other.oxvirt(&["domstate", "--reason", "web1"]).ok();
            seen == expected
        });
        assert!(became, "web1 elsewhere: {seen:?}, not {expected:?}");
    };
    let suspended = other.oxvirt(&["suspend", "web1"]).ok();
    assert!(suspended.contains("suspended"), "{suspended}");
    state_elsewhere_becomes("paused (user)\n\n");
    let info = other.oxvirt(&["dominfo", "web1"]).ok();
    let cpu_seconds: f64 = info
        .lines()
        .find_map(|line| line.strip_prefix("CPU time:"))
        .and_then(|time| time.trim().trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no CPU time: {info}"));
    assert!(
        cpu_seconds > 0.0 && info.contains("State:          paused"),
        "{info}"
    );
    let list = other.oxvirt(&["list"]).ok();
    assert!(
        guest_rows(&list)
            .iter()
            .any(|(n, state, h)| n == "web1" && state == "paused" && *h == host1),
        "{list}"
    );
    other.oxvirt(&["resume", "web1"]).ok();
    state_elsewhere_becomes("running (unpaused)\n\n");
    // A second start is refused, naming where it runs.
    let run = c.oxvirt(&["start", "web1"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&host1), "{run:#?}");

    // Stopped on its host: its lock and local copy go, every member sees it shut off.
    let index = ["host-a", "host-b", "host-c"]
        .iter()
        .position(|h| *h == host1)
        .expect("a known host");
    // An offline migration of a cluster guest is refused before anything moves: its
    // definition lives in etcd (cluster_migrate.rs moves one live).
    let run = members[index].oxvirt(&[
        "migrate",
        "--offline",
        "--persistent",
        "web1",
        "oxvirt+unix:///nonexistent/oxvirtd.sock",
    ]);
    assert!(
        run.code == Some(1)
            && run.stderr.contains("is a cluster guest")
            && run.stderr.contains("--offline"),
        "{run:#?}"
    );
    assert_eq!(members[index].ns.processes_matching(guests[0].1).len(), 1);
    // Destroyed through another member too.
    other.oxvirt(&["destroy", "web1"]).ok();
    let stopped = wait_for(Duration::from_secs(30), || {
        let list = c.oxvirt(&["list", "--all"]).ok();
        last = list.clone();
        guest_rows(&list)
            .iter()
            .any(|(n, state, h)| n == "web1" && state == "shut off" && h == "-")
    });
    assert!(stopped, "web1 still shown running: {last}");
    assert_eq!(other.oxvirt(&["domstate", "web1"]).ok(), "shut off\n\n");
    assert!(!other.oxvirt(&["dominfo", "web1"]).ok().contains("Host:"));
    let run = other.oxvirt(&["destroy", "web1"]);
    assert!(
        run.code == Some(1) && run.stderr.contains("is not running"),
        "{run:#?}"
    );

    // Undefined from any member: refused while it runs (naming the host), else gone everywhere.
    let run = c.oxvirt(&["undefine", "web2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&host2), "{run:#?}");
    let run = c.oxvirt(&["undefine", "web1"]);
    assert!(
        run.code == Some(0) && run.stdout.contains("Domain 'web1' has been undefined"),
        "{run:#?}"
    );
    let list = a.oxvirt(&["list", "--all"]).ok();
    let names: Vec<String> = guest_rows(&list).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["web2"], "{list}");
}

/// How long an HA guest may take to run again after its host died: the lease's 10 s, one
/// renewal period of the other members (3.3 s) and a start under TCG on a loaded machine.
const HA_BOUND: Duration = Duration::from_secs(90);

/// How the HA guest's host fails.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    /// Its oxvirtd and the guest's QEMU SIGKILLed (a crashed host).
    Killed,
    /// Its network cut: oxvirtd runs on but cannot renew its lease, so it must fence itself.
    CutOff,
}

/// An HA guest whose host dies (oxvirtd and QEMU SIGKILLed) runs again on another host; a poller
/// checks every host's QEMU processes the whole time, and never sees it run twice; the dead host,
/// back, does not start it.
#[test]
fn an_ha_guest_runs_again_elsewhere_when_its_host_dies_and_never_twice() {
    ha_failover(Failure::Killed);
}

/// The same when the host is only cut off etcd: its oxvirtd destroys the guest (self-fencing)
/// before its lease expires and another host starts it; reconnected, it does not start it again.
#[test]
fn an_ha_guest_s_host_cut_off_fences_itself_and_the_guest_runs_elsewhere_once() {
    ha_failover(Failure::CutOff);
}

fn ha_failover(failure: Failure) {
    let lab = Lab::new(3);
    lab.start_etcd();
    let mut members = [
        lab.member(0, "host-a"),
        lab.member(1, "host-b"),
        lab.member(2, "host-c"),
    ];
    let names = ["host-a", "host-b", "host-c"];
    clustersupport::wait_until_up(&members[0], 3);
    let mut last = String::new();

    let uuid = "5e1c7a00-0000-4000-8000-0000000c1a11";
    let file = members[0].write(
        "ha1.xml",
        &cluster_guest_xml(
            "ha1",
            uuid,
            "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0'><oxvirt:ha/></oxvirt:placement>",
        ),
    );
    members[0].oxvirt(&["define", "--cluster", &file]).ok();
    let xml = members[1].oxvirt(&["dumpxml", "ha1"]).ok();
    assert!(xml.contains("<oxvirt:ha/>"), "{xml}");
    members[0].oxvirt(&["start", "ha1"]).ok();
    let host_of = |list: &str| {
        guest_rows(list)
            .into_iter()
            .find(|(n, state, _)| n == "ha1" && state == "running")
            .map(|(_, _, host)| host)
    };
    let list = members[0].oxvirt(&["list"]).ok();
    let first = host_of(&list).unwrap_or_else(|| panic!("ha1 not running: {list}"));
    let victim = names
        .iter()
        .position(|h| *h == first)
        .expect("a known host");
    assert_eq!(qemus_of(&lab.hosts[victim], uuid).len(), 1);

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Never two QEMUs of the guest, over every host, at any time.
        let poller = scope.spawn(|| clustersupport::most_qemus_at_once(&lab.hosts, uuid, &stop));

        // A failed assertion below must still stop the poller, or the scope never ends.
        let _stop_poller = StopOnDrop(&stop);
        let killed = Instant::now();
        match failure {
            // The host dies: its oxvirtd and its QEMU, at once.
            Failure::Killed => {
                members[victim].kill();
                for pid in qemus_of(&lab.hosts[victim], uuid) {
                    // SAFETY: kill(2) on the guest's QEMU in our test namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            Failure::CutOff => {
                lab.hosts[victim].ip(&["link", "set", "eth0", "down"]);
            }
        }
        let survivor = (victim + 1) % 3;
        let mut elsewhere = None;
        let moved = wait_for(HA_BOUND, || {
            let run = members[survivor].oxvirt(&["list"]);
            last = format!("{run:#?}");
            elsewhere = host_of(&run.stdout).filter(|host| *host != first);
            elsewhere.as_ref().is_some_and(|host| {
                let index = names.iter().position(|h| h == host).expect("a known host");
                qemus_of(&lab.hosts[index], uuid).len() == 1
            })
        });
        let took = killed.elapsed();
        assert!(
            moved,
            "ha1 did not run again within {HA_BOUND:?}: {last}\nsurvivor's log:\n{}",
            members[survivor].log()
        );
        eprintln!("ha1 ran again on {elsewhere:?} {took:?} after {first} failed ({failure:?})");
        if failure == Failure::CutOff {
            // It fenced itself: the guest no longer runs there, and its log says why.
            assert!(
                qemus_of(&lab.hosts[victim], uuid).is_empty(),
                "{first} did not fence itself: {}",
                members[victim].log()
            );
            assert!(
                members[victim].log().contains("self-fencing"),
                "{}",
                members[victim].log()
            );
        }
        let new_host = elsewhere.expect("a new host");
        let index = names
            .iter()
            .position(|h| *h == new_host)
            .expect("a known host");
        // Its QEMU runs; the start finishes on that host (its console's socket is known then).
        let started = wait_for(SHORT, || {
            members[index]
                .oxvirt(&["domstate", "ha1"])
                .stdout
                .contains("running")
        });
        assert!(started, "{}", members[index].log());
        let mut console = members[index].console("ha1");
        boot_shell(&mut console);
        let said = guest(&mut console, "echo back on duty", SHORT);
        assert!(said.contains("back on duty"), "{said}");

        // The dead host comes back: it rejoins and does not start the guest.
        match failure {
            Failure::Killed => members[victim].launch(),
            Failure::CutOff => {
                lab.hosts[victim].ip(&["link", "set", "eth0", "up"]);
            }
        }
        let rejoined = wait_for(Duration::from_secs(60), || {
            let run = members[survivor].oxvirt(&["host-list"]);
            last = run.stdout.clone();
            host_rows(&run.stdout)
                .iter()
                .any(|(name, state, _)| *name == first && state == "up")
        });
        assert!(rejoined, "{first} did not rejoin: {last}");
        // Several of its renewals (each one reconciles): the guest stays where it is.
        let started_again = wait_for(Duration::from_secs(12), || {
            !qemus_of(&lab.hosts[victim], uuid).is_empty()
        });
        assert!(!started_again, "{first}, back, started ha1 again");
        let list = members[victim].oxvirt(&["list", "--all"]).ok();
        assert_eq!(host_of(&list).as_deref(), Some(new_host.as_str()), "{list}");

        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (most, seen) = poller.join().expect("poller");
        assert_eq!(most, 1, "ha1's QEMUs per host at worst: {seen:?}");
    });
}

#[test]
fn etcd_down_cluster_verbs_fail_clearly_and_local_operations_work() {
    let lab = Lab::new(1);
    // No etcd yet: oxvirtd still starts (NetDaemon waits until it answers).
    let a = lab.member(0, "host-a");
    let run = a.oxvirt(&["host-list"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(&etcd_endpoint()),
        "the error names the etcd endpoint: {run:#?}"
    );
    assert_eq!(run.stdout, "", "{run:#?}");

    // Every single-host operation works: define, start, list, destroy.
    let kit = oxvirt_testkit::guest_kit();
    let xml = guest_xml("solo", &kit, 1, "");
    let file = a.write("solo.xml", &xml);
    a.oxvirt(&["define", &file]).ok();
    a.oxvirt(&["start", "solo"]).ok();
    let list = a.oxvirt(&["list", "--all"]).ok();
    assert!(
        list.lines()
            .any(|l| l.contains("solo") && l.contains("running")),
        "{list}"
    );
    // Its own guests are listed with this host; the cluster's cannot be defined without etcd.
    assert_eq!(
        guest_rows(&list),
        [(
            "solo".to_string(),
            "running".to_string(),
            "host-a".to_string()
        )],
        "{list}"
    );
    let roamer = a.write(
        "roamer.xml",
        &cluster_guest_xml("roamer", "5e1c7a00-0000-4000-8000-0000000c1a21", ""),
    );
    let etcd_refused = |run: &Run| {
        run.code == Some(1) && run.stderr.contains(&etcd_endpoint()) && run.stdout.is_empty()
    };
    let run = a.oxvirt(&["define", "--cluster", &roamer]);
    assert!(etcd_refused(&run), "{run:#?}");

    // etcd comes up: the member joins by itself and publishes its running guest.
    lab.start_etcd();
    let mut last = String::new();
    let joined = wait_for(Duration::from_secs(60), || {
        let run = a.oxvirt(&["host-list"]);
        last = format!("{run:#?}");
        host_rows(&run.stdout)
            .iter()
            .any(|(name, state, guests)| name == "host-a" && state == "up" && guests == "1")
    });
    assert!(
        joined,
        "host-a did not join once etcd was up: {last}\nits log:\n{}",
        a.log()
    );

    // With etcd up, a guest defined in the cluster.
    a.oxvirt(&["define", "--cluster", &roamer]).ok();
    let list = a.oxvirt(&["list", "--all"]).ok();
    assert!(
        guest_rows(&list).contains(&(
            "roamer".to_string(),
            "shut off".to_string(),
            "-".to_string()
        )),
        "{list}"
    );
    // Started (here: the only member), so that a stopped local copy stays behind below.
    a.oxvirt(&["start", "roamer"]).ok();

    // etcd goes down again: the verb fails naming it, the guest keeps running and answering.
    lab.stop_etcd();
    let run = a.oxvirt(&["host-list"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&etcd_endpoint()), "{run:#?}");
    // Stopped while etcd is away, its local copy stays (only a reachable etcd lets the host drop
    // it); it is not started as a local domain: without its lock the cluster may run it elsewhere.
    a.oxvirt(&["destroy", "roamer"]).ok();
    // The cluster's verbs name the endpoint; list shows this host's guests, within seconds.
    for args in [
        vec!["start", "roamer"],
        vec!["dumpxml", "nowhere"],
        vec!["define", "--cluster", roamer.as_str()],
    ] {
        let asked = Instant::now();
        let run = a.oxvirt(&args);
        assert!(etcd_refused(&run), "{args:?}: {run:#?}");
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            asked.elapsed()
        );
    }
    let list = a.oxvirt(&["list", "--all"]).ok();
    assert_eq!(
        guest_rows(&list),
        [
            (
                "solo".to_string(),
                "running".to_string(),
                "host-a".to_string()
            ),
            (
                "roamer".to_string(),
                "shut off".to_string(),
                "-".to_string()
            )
        ],
        "{list}"
    );
    assert!(
        a.oxvirt(&["domstate", "solo"]).ok().contains("running"),
        "the guest runs on"
    );
    a.oxvirt(&["destroy", "solo"]).ok();
}

#[test]
fn bad_cluster_settings_are_refused_naming_the_key() {
    let oxvirtd = oxvirtd_bin();
    let check = |args: &[&str]| {
        std::process::Command::new(&oxvirtd)
            .args(["--check-config", "--config", "/dev/null"])
            .args(args)
            .output()
            .expect("run oxvirtd")
    };
    let out = check(&["--cluster", "consul=http://x:8500"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--cluster") && stderr.contains("consul=http://x:8500"),
        "{stderr}"
    );
    let out = check(&["--cluster", "etcd=http://x:2379", "--host-name", "a/b"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--host-name") && stderr.contains("a/b"),
        "{stderr}"
    );
    let out = check(&["--host-name", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let out = check(&["--cluster", "etcd=http://x:2379", "--host-name", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
