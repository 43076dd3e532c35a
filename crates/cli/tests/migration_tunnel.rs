//! `migrate --tunnelled` between two real oxvirtd on this host: the migration stream goes
//! through a connection to the destination's API (its Unix socket here), upgraded by `POST
//! /v1/migrations/{id}/stream`, instead of a socket the destination opens for it. A real QEMU
//! (TCG) guest counting in RAM and on its (shared) qcow2 disk moves there and goes on; an
//! aborted tunnelled move leaves it running on its source and nothing on the destination; the
//! stream route takes only a migration prepared tunnelled, once. To another host
//! (`oxvirt+https://`, two network namespaces: support/twohosts.rs) the stream goes inside the
//! TLS connection to B's API: B opens no migration port, and a cut network fails it on both
//! sides by itself.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::counting::{
    assert_goes_on, boot_counting, boot_id, disk_count, qcow2_disk, ram_count, start_counters,
};
use support::twohosts::{daemon_in, strs, token, Lab, A_ADDRESS, B_ADDRESS};
use support::{guest_xml, memory_moving, qemu_pids, wait_for_exit, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
/// What the destination logs when a stream comes through its API (services/migration.rs).
const TUNNEL_LOG: &str = "the migration stream comes through the API connection (tunnelled)";

/// Two oxvirtd whose guests' users do not overlap (as two hosts' would not), nor those of other
/// test binaries' daemons (this binary's own range).
fn two_daemons() -> (Daemon, Daemon) {
    let a = Daemon::start_with(&["--qemu-user-range", "3402000-3402099"]);
    let b = Daemon::start_with(&["--qemu-user-range", "3402100-3402199"]);
    (a, b)
}

fn uri(daemon: &Daemon) -> String {
    format!("oxvirt+unix://{}", daemon.socket.display())
}

/// Every domain `daemon` has, by name.
fn names(daemon: &Daemon) -> String {
    daemon.oxvirt(&["list", "--all", "--name"]).ok()
}

/// What is left in `daemon`'s migrations directory (sockets of prepared migrations).
fn migration_files(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(daemon.dir.path().join("state/migrations"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /v1/migrations` on `daemon`'s socket as a source oxvirtd would send it: the reply's
/// JSON.
fn prepare_on(daemon: &Daemon, xml: &str, tunnelled: bool) -> serde_json::Value {
    post_prepare(
        daemon,
        &serde_json::json!({ "xml": xml, "running": true, "tunnelled": tunnelled }),
    )
}

/// `POST /v1/migrations` with `body` on `daemon`'s socket: the reply's JSON.
fn post_prepare(daemon: &Daemon, body: &serde_json::Value) -> serde_json::Value {
    let reply = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&daemon.socket)
        .args(["-X", "POST", "-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(body.to_string())
        .arg("http://oxvirtd/v1/migrations")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&reply.stdout).into_owned();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// `POST /v1/migrations/{id}/stream` on a connection of its own to `daemon`'s socket, asking
/// for the upgrade (unless `upgrade` is false): the reply's head, and the connection (after a
/// 101, the stream).
fn stream_request(daemon: &Daemon, id: &str, upgrade: bool) -> (String, UnixStream) {
    let mut connection = UnixStream::connect(&daemon.socket).expect("connect to oxvirtd");
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let headers = if upgrade {
        "Connection: upgrade\r\nUpgrade: oxvirt-migration\r\n"
    } else {
        ""
    };
    write!(
        connection,
        "POST /v1/migrations/{id}/stream HTTP/1.1\r\nHost: oxvirtd\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .expect("send the request");
    // The head, and for an error its (short) JSON body: whatever came within a moment.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
        match connection.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&reply).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        connection
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a read timeout");
        if let Ok(n) = connection.read(&mut buf) {
            reply.extend_from_slice(&buf[..n]);
        }
    }
    (String::from_utf8_lossy(&reply).into_owned(), connection)
}

#[test]
fn the_stream_route_takes_only_a_tunnelled_migration_once() {
    let (a, b) = two_daemons();
    let uuid = "d41e7a52-6b3c-4f81-9a27-35c0e4b1f6a8";
    let disk = qcow2_disk(a.dir.path(), "route.qcow2");
    let xml =
        guest_xml("route-vm", uuid, &guest_kit(), &disk, 1).replace("type='raw'", "type='qcow2'");

    // CLI rules: not with disk copies or --offline (exit 1, naming the flags).
    a.define("route-vm.xml", &xml).1.ok();
    for flags in [
        ["--tunnelled", "--copy-storage-all"],
        ["--tunnelled", "--copy-storage-inc"],
    ] {
        let run = a.oxvirt(&[
            "migrate",
            "--live",
            flags[0],
            flags[1],
            "route-vm",
            &uri(&b),
        ]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stderr.contains("--tunnelled") && run.stderr.contains(flags[1]),
            "{run:?}"
        );
    }
    // The same asked of A's API directly: refused before anything (a 400 naming both).
    let body = serde_json::json!({
        "destination": b.socket, "live": true, "tunnelled": true, "copy_storage": "all",
    });
    let reply = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&a.socket)
        .args(["-X", "POST", "-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(body.to_string())
        .arg("http://oxvirtd/v1/domains/route-vm/migrate")
        .output()
        .expect("run curl");
    let reply = String::from_utf8_lossy(&reply.stdout).into_owned();
    assert!(
        reply.contains("--tunnelled cannot copy disks") && reply.ends_with("400"),
        "{reply}"
    );
    assert_eq!(names(&b), "\n");
    a.oxvirt(&["undefine", "route-vm"]).ok();

    // No such migration; and the route is reached by an upgrade only.
    let (reply, _) = stream_request(&b, "no-such-migration", true);
    assert!(
        reply.starts_with("HTTP/1.1 404") && reply.contains("no incoming migration"),
        "{reply}"
    );

    // A migration prepared for a socket of its own: its stream does not come through the API.
    let prepared = prepare_on(&b, &xml, false);
    let id = prepared["id"].as_str().expect("an id").to_string();
    assert!(prepared["socket"].as_str().is_some_and(|s| !s.is_empty()));
    let (reply, _) = stream_request(&b, &id, true);
    assert!(
        reply.starts_with("HTTP/1.1 409") && reply.contains("not prepared --tunnelled"),
        "{reply}"
    );
    let aborted = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&b.socket)
        .args(["-X", "DELETE"])
        .arg(format!("http://oxvirtd/v1/migrations/{id}"))
        .output()
        .expect("run curl");
    assert!(aborted.status.success(), "{aborted:?}");
    assert!(
        wait_for(Duration::from_secs(30), || names(&b) == "\n"),
        "the aborted migration's domain stayed"
    );

    // Disks to copy with a tunnel: refused by the destination before anything is made.
    let body = serde_json::json!({
        "xml": xml, "running": true, "tunnelled": true,
        "disks": [{ "dev": "vda", "path": "/nonexistent/x.qcow2", "format": "qcow2", "size": 1048576 }],
    });
    let reply = post_prepare(&b, &body).to_string();
    assert!(reply.contains("--tunnelled cannot copy disks"), "{reply}");
    assert_eq!(names(&b), "\n");

    // Prepared tunnelled: no socket, no port; the stream route answers 101 once.
    let prepared = prepare_on(&b, &xml, true);
    assert_eq!(prepared["tunnelled"], serde_json::json!(true), "{prepared}");
    assert_eq!(prepared["socket"], serde_json::json!(""), "{prepared}");
    assert!(prepared.get("address").is_none(), "{prepared}");
    assert!(migration_files(&b).is_empty(), "{:?}", migration_files(&b));
    let id = prepared["id"].as_str().expect("an id").to_string();
    let (reply, _) = stream_request(&b, &id, false);
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("Upgrade: oxvirt-migration"),
        "{reply}"
    );
    let (reply, stream) = stream_request(&b, &id, true);
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    assert!(b.log().contains(TUNNEL_LOG), "{}", b.log());
    let (again, _) = stream_request(&b, &id, true);
    assert!(
        again.starts_with("HTTP/1.1 409") && again.contains("already came"),
        "{again}"
    );
    // B's QEMU waits for the stream; garbage, then the connection closes: its load fails and B
    // removes everything it prepared, with no abort from anybody.
    assert!(
        wait_for(Duration::from_secs(60), || qemu_pids(uuid).len() == 1),
        "B's QEMU never started to receive"
    );
    let mut stream = stream;
    let _ = stream.write_all(b"not a migration stream");
    drop(stream);
    assert!(
        wait_for(Duration::from_secs(120), || names(&b) == "\n"
            && qemu_pids(uuid).is_empty()),
        "B kept the broken migration: {:?}; {}",
        names(&b),
        b.log()
    );
    assert!(migration_files(&b).is_empty(), "{:?}", migration_files(&b));
}

#[test]
fn a_guest_moves_through_the_api_connection_and_an_aborted_move_leaves_it_running() {
    let (a, b) = two_daemons();
    let uuid = "8c2f4d61-0e3a-4b7c-a95d-6f1e2d3c4b5a";
    // Shared storage: one path both reach.
    let disk = qcow2_disk(a.dir.path(), "tun.qcow2");
    let mut console = boot_counting(&a, "tun-vm", uuid, &disk);
    let booted = boot_id(&mut console, 3);
    let before = ram_count(&mut console, 4);
    drop(console);

    // Forth, tunnelled (and --p2p, accepted for virsh's scripts).
    let out = a
        .oxvirt(&[
            "migrate",
            "--live",
            "--tunnelled",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--verbose",
            "tun-vm",
            &uri(&b),
        ])
        .ok();
    assert_eq!(out, "\n");
    // The stream came through B's API, and the guest's state through A's relay.
    assert!(b.log().contains(TUNNEL_LOG), "{}", b.log());
    assert!(
        a.log().contains("outgoing migration: the tunnel ended"),
        "{}",
        a.log()
    );
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "tun-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(names(&a), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert!(migration_files(&b).is_empty(), "{:?}", migration_files(&b));

    // The same boot, its RAM kept and the counter going on; no boot on B.
    let mut console = b.console_when_ready("tun-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 7), booted, "the guest booted again");
    let after = ram_count(&mut console, 8);
    assert!(
        after >= before,
        "the counter went back from {before} to {after}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(&mut console, 9)
            > after),
        "the counter stopped on B"
    );
    assert!(
        disk_count(&mut console, 10).is_some(),
        "the disk's counter is gone"
    );
    assert!(
        !console.all_output().contains(BOOT_MARKER),
        "the guest booted on B: {}",
        console.all_output()
    );
    drop(console);

    // Back, tunnelled, slow enough (1 MiB/s) to be caught running, and aborted.
    let a_log_before = a.log().matches(TUNNEL_LOG).count();
    let migrating = b.spawn_oxvirt(
        &[
            "migrate",
            "--live",
            "--tunnelled",
            "--bandwidth",
            "1",
            "tun-vm",
            &uri(&a),
        ],
        &[],
    );
    let halfway = wait_for(Duration::from_secs(60), || {
        let info = b.oxvirt(&["domjobinfo", "tun-vm"]).stdout;
        info.contains("Unbounded") && !info.contains("Memory processed: 0.000 MiB")
    });
    assert!(halfway, "the migration never got going");
    assert!(
        wait_for(Duration::from_secs(60), || qemu_pids(uuid).len() == 2),
        "A's QEMU never started to receive"
    );
    // While it runs: A waits on no socket of its own; the stream came through its API.
    assert!(migration_files(&a).is_empty(), "{:?}", migration_files(&a));
    assert_eq!(a.log().matches(TUNNEL_LOG).count(), a_log_before + 1);
    b.oxvirt(&["domjobabort", "tun-vm"]).ok();
    let run = wait_for_exit(migrating, MIGRATE_TIMEOUT);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("aborted") && run.stderr.contains("goes on running here"),
        "{run:?}"
    );

    // Still on B, the same boot, its counter going on; nothing on A.
    assert_eq!(b.oxvirt(&["domstate", "tun-vm"]).ok(), "running\n\n");
    assert!(
        wait_for(Duration::from_secs(60), || names(&a) == "\n"
            && qemu_pids(uuid).len() == 1),
        "A kept the aborted migration: {:?}",
        names(&a)
    );
    assert!(migration_files(&a).is_empty(), "{:?}", migration_files(&a));
    let mut console = b.console_when_ready("tun-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 20), booted);
    let count = ram_count(&mut console, 21);
    assert!(
        wait_for(Duration::from_secs(30), || ram_count(&mut console, 22)
            > count),
        "the counter stopped after the abort"
    );
}

/// The TCP sockets of `ns` as `ss` lists them (`-H -n` and `flags`): (state, local, peer).
fn sockets(ns: &str, flags: &str) -> Vec<(String, String, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-H", "-n", flags])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State Recv-Q Send-Q Local Peer
            (fields.len() >= 5).then(|| {
                (
                    fields[0].to_string(),
                    fields[3].to_string(),
                    fields[4].to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn a_guest_moves_tunnelled_to_another_host_inside_the_tls_connection() {
    let lab = Lab::new();
    // Shared storage: both namespaces see the same files.
    let disks = tempfile::Builder::new()
        .prefix("oxvirt-migtunnel-")
        .tempdir()
        .expect("tempdir");
    support::searchable(disks.path());
    let api = |address: &str| format!("{address}:16514");
    let a = daemon_in(&lab.a, None, "3402200-3402299", &api(A_ADDRESS));
    let b = daemon_in(&lab.b, None, "3402300-3402399", &api(B_ADDRESS));
    let b_token = token(&b);
    let b_cert = b.dir.path().join("state/tls/server.pem");
    let b_cert = b_cert.to_str().expect("utf-8 path");
    let dest = format!("oxvirt+https://{}", api(B_ADDRESS));
    let remote = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["migrate", "--live", "--tunnelled"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "--dest-token",
                &b_token,
                "--dest-ca",
                b_cert,
                "far-vm",
                &dest,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args
    };
    let uuid = "3f6b8e2a-71c4-4d95-b0a8-c2e19d7f4a36";
    let disk = qcow2_disk(disks.path(), "far.qcow2");
    let mut console = boot_counting(&a, "far-vm", uuid, &disk);
    let booted = boot_id(&mut console, 3);
    drop(console);

    // Slow (1 MiB/s), so it is caught moving: B listens on its API's port only, and the only
    // connections between the hosts are to that port.
    let child = a.spawn_oxvirt(&strs(&remote(&["--bandwidth", "1"])), &[]);
    let loading = wait_for(Duration::from_secs(180), || {
        memory_moving(&a.oxvirt(&["domjobinfo", "far-vm"]).stdout)
    });
    assert!(
        loading,
        "the memory never started moving; B's log:\n{}",
        b.log()
    );
    assert!(
        wait_for(Duration::from_secs(60), || qemu_pids(uuid).len() == 2),
        "B's QEMU never started to receive"
    );
    assert!(b.log().contains(TUNNEL_LOG), "{}", b.log());
    let listening = sockets(&lab.b.0, "-tl");
    assert!(
        !listening.is_empty()
            && listening
                .iter()
                .all(|(_, local, _)| *local == api(B_ADDRESS)),
        "B listens on more than its API: {listening:?}"
    );
    let connected = sockets(&lab.b.0, "-t");
    assert!(
        connected.iter().any(|(state, local, peer)| state == "ESTAB"
            && *local == api(B_ADDRESS)
            && peer.starts_with(&format!("{A_ADDRESS}:"))),
        "no connection from A to B's API: {connected:?}"
    );
    assert!(
        connected
            .iter()
            .all(|(_, local, _)| *local == api(B_ADDRESS)),
        "a connection to another port of B: {connected:?}"
    );

    // The cable pulled in the middle: both sides notice by themselves (keepalive and user
    // timeout on the tunnel's connection); the guest runs on A, B keeps nothing.
    lab.a_link(false);
    let run = wait_for_exit(child, Duration::from_secs(240));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("goes on running here"), "{run:?}");
    lab.a_link(true);
    assert_eq!(a.oxvirt(&["domstate", "far-vm"]).ok(), "running\n\n");
    let clean = wait_for(Duration::from_secs(120), || {
        names(&b) == "\n" && qemu_pids(uuid).len() == 1
    });
    assert!(
        clean,
        "B kept the cut migration: {:?}; B's log:\n{}",
        names(&b),
        b.log()
    );
    assert!(migration_files(&b).is_empty(), "{:?}", migration_files(&b));
    let mut console = a.console_when_ready("far-vm", Duration::from_secs(30));
    assert_eq!(boot_id(&mut console, 10), booted, "the guest booted again");
    drop(console);

    // Whole: the guest runs on B. Booted afresh first, so the move has no 1 MiB/s limit (it
    // stays the guest's) and is short (QEMU 7.2's TCG damage, docs/migration.md "Known
    // problem", as migration_remote.rs).
    a.oxvirt(&["destroy", "far-vm"]).ok();
    let mut console = a.start_with_console("far-vm");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    start_counters(&mut console, 20);
    let booted = boot_id(&mut console, 21);
    drop(console);
    let run = a.oxvirt(&strs(&remote(&["--persistent", "--undefinesource"])));
    assert_eq!(run.code, Some(0), "{run:?}\nB's log:\n{}", b.log());
    assert_eq!(b.log().matches(TUNNEL_LOG).count(), 2, "{}", b.log());
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "far-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(names(&a), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert_goes_on(&b, "B", "far-vm", &booted, 30);
    b.oxvirt(&["destroy", "far-vm"]).ok();
}
