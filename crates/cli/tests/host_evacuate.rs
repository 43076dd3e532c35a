//! `oxvirt host-evacuate HOST` (docs/cluster.md) in the cluster harness (etcd and three oxvirtd
//! in network namespaces joined by a bridge, each with its TLS API): HOST's running guests move
//! live to the other members over their TLS APIs (the migration of
//! crates/cli/tests/migration_remote.rs), and go on there.

use std::time::Duration;

mod clustersupport;

/// `host-evacuate host-b`: host-b's two running guests move live to host-a and host-c (one
/// each: the members in turn), over their TLS APIs; their consoles go on counting there.
#[test]
fn host_evacuate_moves_every_guest_off_a_host() {
    use clustersupport::{Lab, NetDaemon};
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

    // Two counting guests on host-b.
    let guests = ["evac-1", "evac-2"];
    let mut before = Vec::new();
    for name in guests {
        b.define_guest(name, "").ok();
        b.oxvirt(&["start", name]).ok();
    }
    for name in guests {
        before.push(clustersupport::start_counter(&mut b.console(name)));
    }

    // Not on another member's behalf.
    let run = members[0].oxvirt(&["host-evacuate", "host-b", "--dest-user", "ann"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("this is host 'host-a'"), "{run:?}");

    let run = clustersupport::oxvirt_with_stdin(
        b,
        &[
            "host-evacuate",
            "host-b",
            "--dest-user",
            "ann",
            "--dest-ca",
            &ca,
        ],
        "evacuate-pw\n",
        Duration::from_secs(300),
    );
    assert_eq!(run.code, Some(0), "{run:?}\nhost-b's log:\n{}", b.log());
    assert_eq!(b.oxvirt(&["list", "--all", "--name"]).ok(), "\n");
    let mut homes = Vec::new();
    for (index, name) in guests.iter().enumerate() {
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("{name}: moved to ")))
            .unwrap_or_else(|| panic!("no line for {name}: {run:?}"));
        let home = if line.ends_with("host-a") { 0 } else { 2 };
        assert!(line.ends_with(names[home]), "{line}");
        homes.push(home);
        let there = &members[home];
        assert_eq!(
            there.oxvirt(&["domstate", "--reason", name]).ok(),
            "running (migrated)\n\n"
        );
        let (booted, count) = clustersupport::counter(&mut there.console(name));
        assert_eq!(booted, before[index].0, "{name} booted again");
        assert!(count > before[index].1, "{name}'s counter: {count}");
    }
    for (index, name) in guests.iter().enumerate() {
        members[homes[index]].oxvirt(&["destroy", name]).ok();
    }
    homes.sort();
    assert_eq!(homes, vec![0, 2], "one guest to each other member");
}
