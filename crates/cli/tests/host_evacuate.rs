//! `oxvirt host-evacuate HOST` (docs/cluster.md) in the cluster harness (etcd and three oxvirtd
//! in network namespaces joined by a bridge, each with its TLS API): HOST's running guests move
//! live to the other members over their TLS APIs (the migration of
//! crates/cli/tests/migration_remote.rs), and go on there.

use std::process::{Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::wait_for;

mod clustersupport;

/// `host-evacuate host-b`: host-b's two running guests move live to host-a and host-c (one
/// each: the members in turn), over their TLS APIs; their consoles go on counting there.
#[test]
fn host_evacuate_moves_every_guest_off_a_host() {
    use clustersupport::{boot_shell, guest, Lab, NetDaemon, SHORT};
    let lab = Lab::new(3);
    lab.start_etcd();
    let endpoint = format!("etcd={}", clustersupport::etcd_endpoint());
    let names = ["host-a", "host-b", "host-c"];
    let users = ["3108000-3108099", "3109000-3109099", "3110000-3110099"];
    let members: Vec<NetDaemon> = (0..3)
        .map(|index| {
            let listen = format!("10.77.0.{}:16514", 11 + index);
            NetDaemon::start_with(
                &lab.hosts[index],
                false,
                &[
                    "--cluster",
                    &endpoint,
                    "--host-name",
                    names[index],
                    "--listen",
                    &listen,
                    "--qemu-user-range",
                    users[index],
                ],
            )
        })
        .collect();
    // The same admin on each member; one CA file with A's and C's own certificates.
    let mut ca = String::new();
    for member in &members {
        let file = member.write("ann.password", "evacuate-pw\n");
        member
            .oxvirt(&[
                "user",
                "add",
                "ann",
                "--role",
                "admin",
                "--password-file",
                &file,
            ])
            .ok();
        ca.push_str(
            &std::fs::read_to_string(member.state.join("tls/server.pem")).expect("server.pem"),
        );
    }
    let ca = members[1].write("members.pem", &ca);
    let b = &members[1];
    let all_up = wait_for(Duration::from_secs(60), || {
        let table = b.oxvirt(&["host-list"]).stdout;
        clustersupport::host_rows(&table)
            .iter()
            .filter(|(_, state, _)| state == "up")
            .count()
            == 3
    });
    assert!(all_up, "{}", b.oxvirt(&["host-list"]).stdout);

    // Two counting guests on host-b.
    let guests = ["evac-1", "evac-2"];
    let mut before = Vec::new();
    for name in guests {
        b.define_guest(name, "").ok();
        b.oxvirt(&["start", name]).ok();
    }
    for name in guests {
        let mut console = b.console(name);
        boot_shell(&mut console);
        console
            .send_line("(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done) >/dev/null 2>&1 &")
            .expect("start the counter");
        let booted = guest(&mut console, "cat /proc/sys/kernel/random/boot_id", SHORT);
        let count: u64 = guest(&mut console, "sleep 2; cat /tmp/count", SHORT)
            .trim()
            .parse()
            .expect("a count");
        before.push((booted.trim().to_string(), count));
    }

    // Not on another member's behalf.
    let run = members[0].oxvirt(&["host-evacuate", "host-b", "--dest-user", "ann"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("this is host 'host-a'"), "{run:?}");

    let mut child = Command::new(clustersupport::oxvirt_bin())
        .arg("--socket")
        .arg(&b.socket)
        .args([
            "host-evacuate",
            "host-b",
            "--dest-user",
            "ann",
            "--dest-ca",
            &ca,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oxvirt");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"evacuate-pw\n").expect("password");
    }
    let run = clustersupport::wait_for_exit(child, Duration::from_secs(300));
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
        let mut console = there.console(name);
        let booted = guest(&mut console, "cat /proc/sys/kernel/random/boot_id", SHORT);
        assert_eq!(booted.trim(), before[index].0, "{name} booted again");
        let count: u64 = guest(&mut console, "sleep 2; cat /tmp/count", SHORT)
            .trim()
            .parse()
            .expect("a count");
        assert!(count > before[index].1, "{name}'s counter: {count}");
    }
    for (index, name) in guests.iter().enumerate() {
        members[homes[index]].oxvirt(&["destroy", name]).ok();
    }
    homes.sort();
    assert_eq!(homes, vec![0, 2], "one guest to each other member");
}
