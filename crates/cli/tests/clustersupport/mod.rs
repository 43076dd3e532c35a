//! Harness for the cluster tests (docs/cluster.md): etcd in a network namespace of its own,
//! each oxvirtd in its own namespace with its own state directory, all joined by a bridge that
//! lives in one more namespace (never the host's). Sockets and consoles are reached from the
//! test as in netsupport (Unix sockets work across namespaces).
//!
//! Addresses (10.77.0.0/24, only inside the test's namespaces): etcd .1, host N .(10+N).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

#[path = "../netsupport/mod.rs"]
mod netsupport;
pub use netsupport::*;

use oxvirt_testkit::wait_for;

pub const ETCD_ADDRESS: &str = "10.77.0.1";

/// The line etcd 3.4 logs once it answers clients.
const READY: &str = "ready to serve client requests";

/// The endpoint the members are given.
pub fn etcd_endpoint() -> String {
    format!("http://{ETCD_ADDRESS}:2379")
}

/// The namespaces and the bridge joining them.
pub struct Lab {
    /// Holds the bridge `br0` and the host ends of the veth pairs.
    pub switch: Netns,
    pub etcd_ns: Netns,
    pub hosts: Vec<Netns>,
    /// etcd's data directory.
    pub dir: tempfile::TempDir,
    /// Behind a lock so the test can stop and start etcd while members borrow the lab.
    etcd: Mutex<Option<Child>>,
}

impl Lab {
    /// `hosts` namespaces plus etcd's, each with `eth0` on the bridge; etcd is not started.
    pub fn new(hosts: usize) -> Lab {
        let switch = Netns::new();
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let etcd_ns = Netns::new();
        plug(&switch, &etcd_ns, "vetcd", ETCD_ADDRESS);
        let hosts: Vec<Netns> = (0..hosts)
            .map(|index| {
                let ns = Netns::new();
                plug(
                    &switch,
                    &ns,
                    &format!("vhost{index}"),
                    &format!("10.77.0.{}", 11 + index),
                );
                ns
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("oxetcd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Lab {
            switch,
            etcd_ns,
            hosts,
            dir,
            etcd: Mutex::new(None),
        }
    }

    /// Starts etcd (again, on the same data) and waits until it answers.
    pub fn start_etcd(&self) {
        let mut etcd = self.etcd.lock().expect("etcd lock");
        assert!(etcd.is_none(), "etcd already runs");
        let url = etcd_endpoint();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.etcd_ns.name, "etcd"])
            .args(["--name", "oxtest", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "oxtest=http://127.0.0.1:2380",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (Debian's etcd-server)");
        *etcd = Some(child);
        drop(etcd);
        // etcd says so once it serves clients (its log is appended to at each start).
        let starts = self.etcd_log().matches(READY).count();
        let up = wait_for(Duration::from_secs(60), || {
            self.etcd_log().matches(READY).count() > starts
        });
        assert!(up, "etcd did not come up; its log:\n{}", self.etcd_log());
    }

    /// SIGKILL to etcd.
    pub fn stop_etcd(&self) {
        let child = self.etcd.lock().expect("etcd lock").take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn etcd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// oxvirtd in host namespace `index`, a member named `name`. Each member's QEMU processes
    /// run as ids of their own (3140000 + 1000 * index ..., not used by other suites), as on
    /// separate machines.
    pub fn member(&self, index: usize, name: &str) -> NetDaemon<'_> {
        let endpoint = format!("etcd={}", etcd_endpoint());
        let first = 3_140_000 + 1000 * index;
        let users = format!("{first}-{}", first + 99);
        NetDaemon::start_with(
            &self.hosts[index],
            false,
            &[
                "--cluster",
                &endpoint,
                "--host-name",
                name,
                "--qemu-user-range",
                &users,
            ],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_etcd();
    }
}

/// A veth pair: `outer` on the switch's bridge, `eth0` with `address`/24 in `ns`.
fn plug(switch: &Netns, ns: &Netns, outer: &str, address: &str) {
    switch.ip(&[
        "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    switch.ip(&["link", "set", outer, "master", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}

/// `host-list`'s rows as (name, state, guests).
pub fn host_rows(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().split("   ").map(str::trim).collect();
            let cells: Vec<&str> = cells.into_iter().filter(|c| !c.is_empty()).collect();
            Some((
                cells.first()?.to_string(),
                cells.get(1)?.to_string(),
                cells.last()?.to_string(),
            ))
        })
        .collect()
}

/// `list`'s rows on a member as (name, state, host).
pub fn guest_rows(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            Some((
                cells.get(1)?.to_string(),
                cells.get(2)?.to_string(),
                cells.get(3)?.to_string(),
            ))
        })
        .collect()
}

/// A kit guest with a fixed UUID and `<metadata>` holding `metadata`.
pub fn cluster_guest_xml(name: &str, uuid: &str, metadata: &str) -> String {
    guest_xml(name, &oxvirt_testkit::guest_kit(), 1, "").replacen(
        &format!("<name>{name}</name>"),
        &format!("<name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <metadata>{metadata}</metadata>"),
        1,
    )
}

/// Waits (60 s at most) until `member`'s `host-list` shows `count` hosts up.
pub fn wait_until_up(member: &NetDaemon<'_>, count: usize) {
    let mut last = String::new();
    let all_up = wait_for(Duration::from_secs(60), || {
        let run = member.oxvirt(&["host-list"]);
        last = format!("{run:#?}");
        host_rows(&run.stdout)
            .iter()
            .filter(|(_, state, _)| state == "up")
            .count()
            == count
    });
    assert!(all_up, "{count} hosts up: {last}");
}
