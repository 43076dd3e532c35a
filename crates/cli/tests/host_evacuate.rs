//! `oxvirt host-evacuate HOST` (docs/cluster.md) in the cluster harness (etcd and three oxvirtd
//! in network namespaces joined by a bridge, each with its TLS API): HOST's running guests move
//! live to the other members over their TLS APIs (the migration of
//! crates/cli/tests/migration_remote.rs), and go on there.

use std::time::Duration;

mod clustersupport;

/// `host-evacuate host-b`: host-b's running guests move live to the other members over their TLS
/// APIs, each where the cluster's placement ranks best: a counting local guest goes on counting
/// there (the same boot); two cluster guests of one spread group go to two different members,
/// the second away from the first although every member has as much free memory (they share one
/// machine), since the first, moved, counts.
#[test]
fn host_evacuate_moves_every_guest_off_a_host_by_the_placement_rules() {
    use clustersupport::{cluster_guest_xml, guest_rows, Lab, NetDaemon};
    let lab = Lab::new(3);
    lab.start_etcd();
    let names = ["host-a", "host-b", "host-c"];
    let users = ["3108000-3108099", "3109000-3109099", "3110000-3110099"];
    let members: Vec<NetDaemon> = (0..3)
        .map(|index| lab.member_with_api(index, names[index], users[index]))
        .collect();
    // The same admin on each member; one CA file with every member's own certificate.
    let ca = clustersupport::api_admins(&members, "evacuate-pw");
    let b = &members[1];
    clustersupport::wait_until_up(b, 3);
    let index_of = |host: &str| names.iter().position(|h| *h == host).expect("a member");
    let with_password = |member: &NetDaemon, args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--dest-user", "ann", "--dest-ca", &ca]);
        clustersupport::oxvirt_with_input(
            &member.socket,
            &args,
            "evacuate-pw\n",
            Duration::from_secs(300),
        )
    };

    // A counting local guest on host-b.
    b.define_guest("evac-1", "").ok();
    b.oxvirt(&["start", "evac-1"]).ok();
    let before = clustersupport::start_counter(&mut b.console("evac-1"));
    // Two cluster guests of one spread group: started, each on a host of its own, then moved
    // to host-b (a migration asked for by name is not placement's to refuse).
    const SPREAD: &str =
        "<oxvirt:placement xmlns:oxvirt='urn:oxvirt:domain:1.0' group='evac' policy='spread'/>";
    let spread = [
        ("evac-web1", "5e1c7a00-0000-4000-8000-0000000c1b11"),
        ("evac-web2", "5e1c7a00-0000-4000-8000-0000000c1b12"),
    ];
    for (name, uuid) in spread {
        let file = b.write(
            &format!("{name}.xml"),
            &cluster_guest_xml(name, uuid, SPREAD),
        );
        b.oxvirt(&["define", "--cluster", &file]).ok();
        b.oxvirt(&["start", name]).ok();
        let list = b.oxvirt(&["list"]).ok();
        let (_, _, host) = guest_rows(&list)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        if host != "host-b" {
            let run = with_password(
                &members[index_of(&host)],
                &["migrate", "--live", name, "oxvirt+https://10.77.0.12:16514"],
            );
            assert_eq!(run.code, Some(0), "{run:#?}");
        }
    }
    let list = b.oxvirt(&["list"]).ok();
    assert_eq!(
        guest_rows(&list)
            .iter()
            .filter(|(_, state, host)| state == "running" && host == "host-b")
            .count(),
        3,
        "{list}"
    );

    // Not on another member's behalf.
    let run = members[0].oxvirt(&["host-evacuate", "host-b", "--dest-user", "ann"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("this is host 'host-a'"), "{run:?}");

    let run = with_password(b, &["host-evacuate", "host-b"]);
    assert_eq!(run.code, Some(0), "{run:?}\nhost-b's log:\n{}", b.log());
    eprintln!("host-evacuate host-b:\n{}", run.stdout);
    let home = |name: &str| {
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("{name}: moved to ")))
            .unwrap_or_else(|| panic!("no line for {name}: {run:?}"));
        let home = index_of(line.rsplit(' ').next().unwrap_or_default());
        assert_ne!(home, 1, "{line}");
        home
    };
    // host-b runs nothing any more, and has no domain of its own left.
    let list = b.oxvirt(&["list", "--all"]).ok();
    assert!(
        guest_rows(&list)
            .iter()
            .all(|(_, _, host)| host != "host-b"),
        "{list}"
    );
    assert!(!list.contains("evac-1"), "{list}");

    let there = &members[home("evac-1")];
    assert_eq!(
        there.oxvirt(&["domstate", "--reason", "evac-1"]).ok(),
        "running (migrated)\n\n"
    );
    let (booted, count) = clustersupport::counter(&mut there.console("evac-1"));
    assert_eq!(booted, before.0, "evac-1 booted again");
    assert!(count > before.1, "evac-1's counter: {count}");
    there.oxvirt(&["destroy", "evac-1"]).ok();

    let homes: Vec<usize> = spread.iter().map(|(name, _)| home(name)).collect();
    assert_ne!(
        homes[0], homes[1],
        "one spread guest on each other member: {run:?}"
    );
    for ((name, uuid), home) in spread.iter().zip(&homes) {
        assert_eq!(
            members[*home].oxvirt(&["domstate", "--reason", name]).ok(),
            "running (migrated)\n\n"
        );
        assert_eq!(members[*home].ns.processes_matching(uuid).len(), 1);
        members[*home].oxvirt(&["destroy", name]).ok();
    }
}
