//! Harness for the cluster tests (docs/cluster.md): etcd in a network namespace of its own,
//! each oxvirtd in its own namespace with its own state directory, all joined by a bridge that
//! lives in one more namespace (never the host's). Sockets and consoles are reached from the
//! test as in netsupport (Unix sockets work across namespaces).
//!
//! Addresses (10.77.0.0/24, only inside the test's namespaces): etcd .1, host N .(10+N).

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

#[path = "../netsupport/mod.rs"]
mod netsupport;
pub use netsupport::*;

use oxvirt_testkit::{wait_for, Console};

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
        let first = 3_140_000 + 1000 * index;
        self.start_member(index, name, &[], &format!("{first}-{}", first + 99))
    }

    /// oxvirtd in host namespace `index`, member `name` of the lab's etcd, with `extra`
    /// options and QEMU user range `users`.
    fn start_member(&self, index: usize, name: &str, extra: &[&str], users: &str) -> NetDaemon<'_> {
        let endpoint = format!("etcd={}", etcd_endpoint());
        let mut args = vec!["--cluster", &endpoint, "--host-name", name];
        args.extend_from_slice(extra);
        args.extend(["--qemu-user-range", users]);
        NetDaemon::start_with(&self.hosts[index], false, &args)
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

impl Lab {
    /// As [`Lab::member`], with its TLS API on `10.77.0.(11+index):16514` (what migrations and
    /// `host-evacuate` reach) and the QEMU user range `users` (the caller's own).
    pub fn member_with_api(&self, index: usize, name: &str, users: &str) -> NetDaemon<'_> {
        let listen = format!("10.77.0.{}:16514", 11 + index);
        self.start_member(index, name, &["--listen", &listen], users)
    }

    /// The key `key` in etcd (its JSON gateway, asked from etcd's namespace): value, lease and
    /// revision of its last write; `None` when it does not exist.
    pub fn etcd_get(&self, key: &str) -> Option<EtcdKey> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!("{{\"key\":\"{}\"}}", b64.encode(key));
        let url = format!("{}/v3/kv/range", etcd_endpoint());
        let out = self.etcd_ns.exec(
            "curl",
            &["-s", "--max-time", "5", "-X", "POST", &url, "-d", &body],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let reply: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcd's answer {text}: {e}"));
        let entry = reply["kvs"].as_array()?.first()?.clone();
        // int64 values come as strings from etcd's gateway.
        let number = |field: &str| {
            entry[field]
                .as_str()
                .map_or(0, |n| n.parse::<i64>().unwrap_or_default())
        };
        let value = b64
            .decode(entry["value"].as_str().unwrap_or_default())
            .expect("a base64 value");
        Some(EtcdKey {
            value: String::from_utf8_lossy(&value).into_owned(),
            lease: number("lease"),
            mod_revision: number("mod_revision"),
        })
    }
}

/// One key read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdKey {
    pub value: String,
    pub lease: i64,
    pub mod_revision: i64,
}

/// The same admin `ann` (password `password`) on every member; returns the path of one file
/// with every member's TLS certificate (for `--dest-ca`), written in `members[0]`'s directory.
pub fn api_admins(members: &[NetDaemon<'_>], password: &str) -> String {
    let mut ca = String::new();
    for member in members {
        let file = member.write("ann.password", &format!("{password}\n"));
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
    members[0].write("members.pem", &ca)
}

/// The QEMU processes of guest `uuid` in `ns` (by the UUID on their command line).
pub fn qemus_of(ns: &Netns, uuid: &str) -> Vec<i32> {
    ns.processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains("qemu-system") && cmdline.contains(uuid))
        .map(|(pid, _)| pid)
        .collect()
}

/// Sets its flag when dropped: a poller thread stops even when an assertion fails first.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Polls every host's processes every 100 ms until `stop` is set; returns the most QEMUs of
/// guest `uuid` seen at once over all hosts, and how many each host had then.
pub fn most_qemus_at_once(
    hosts: &[Netns],
    uuid: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, Vec<usize>) {
    let mut most = 0;
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let per_host: Vec<usize> = hosts.iter().map(|ns| qemus_of(ns, uuid).len()).collect();
        let total: usize = per_host.iter().sum();
        if total > most {
            most = total;
            seen = per_host;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (most, seen)
}

/// Waits (60 s at most) until member `host` re-published its record `times` times: each
/// renewal publishes it, then reconciles, so all but the last of them reconciled since.
pub fn wait_for_renewals(lab: &Lab, host: &str, times: usize) {
    let key = format!("/oxvirt/hosts/{host}");
    let mut seen = Vec::new();
    let renewed = wait_for(Duration::from_secs(60), || {
        if let Some(record) = lab.etcd_get(&key) {
            if seen.last() != Some(&record.mod_revision) {
                seen.push(record.mod_revision);
            }
        }
        // The first value seen may be from before.
        seen.len() > times
    });
    assert!(renewed, "{host} renewed {} times only", seen.len());
}

/// Starts a counter in the guest behind `console` (once a second into /tmp/count, a tmpfs);
/// returns the guest's boot id and the count a few seconds later.
pub fn start_counter(console: &mut Console) -> (String, u64) {
    boot_shell(console);
    console
        .send_line(
            "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done) >/dev/null 2>&1 &",
        )
        .expect("start the counter");
    counter(console)
}

/// The guest's boot id and its counter's value, two seconds from now.
pub fn counter(console: &mut Console) -> (String, u64) {
    let booted = guest(console, "cat /proc/sys/kernel/random/boot_id", SHORT);
    let count = guest(console, "sleep 2; cat /tmp/count", SHORT)
        .trim()
        .parse()
        .expect("a count");
    (booted.trim().to_string(), count)
}

/// The CPU time (clock ticks) the vCPU threads of QEMU `pid` used so far (the threads QEMU
/// names `CPU N/TCG` with `debug-threads=on`): it grows only while the guest runs there, not
/// while QEMU waits for an incoming migration or stays paused after an outgoing one.
pub fn vcpu_ticks(pid: i32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("CPU ") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the command's ")": state is field 3, utime and stime fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        total += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    Some(total)
}

/// When each QEMU of a guest ran it: (host index, pid, first and last sample at which its vCPUs
/// had used more CPU than at the sample before), over every host, sampled every 100 ms by
/// [`RunSpans::poll`] on a thread of its own. A live migration shows two QEMUs at once, but only
/// one running. The test waits with [`RunSpans::saw_running`] until the poller saw the QEMU it
/// is about to move or kill run (on a loaded machine the poller may not sample a short run at
/// all, and a run it missed is one the overlap check cannot judge). Runs are keyed by pid and
/// start time: pids wrap (pid_max is 32768 here) and a test runs for minutes.
#[derive(Default)]
pub struct RunSpans {
    runs: Mutex<HashMap<(i32, u64), QemuRun>>,
}

/// One QEMU's run as [`RunSpans`] saw it.
struct QemuRun {
    host: usize,
    ticks: u64,
    first: Option<u64>,
    last: u64,
}

impl RunSpans {
    /// Samples until `stop` is set.
    pub fn poll(&self, hosts: &[Netns], uuid: &str, stop: &std::sync::atomic::AtomicBool) {
        let mut sample = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            sample += 1;
            for (host, ns) in hosts.iter().enumerate() {
                for pid in qemus_of(ns, uuid) {
                    let (Some(started), Some(now)) = (start_time(pid), vcpu_ticks(pid)) else {
                        continue;
                    };
                    let mut runs = self.runs.lock().expect("spans");
                    let run = runs.entry((pid, started)).or_insert(QemuRun {
                        host,
                        ticks: now,
                        first: None,
                        last: 0,
                    });
                    if now > run.ticks {
                        run.first.get_or_insert(sample);
                        run.last = sample;
                    }
                    run.ticks = now;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the poller saw QEMU `pid` run the guest.
    pub fn saw_running(&self, pid: i32) -> bool {
        let runs = self.runs.lock().expect("spans");
        runs.iter()
            .any(|((run_pid, _), run)| *run_pid == pid && run.first.is_some())
    }

    /// The runs seen, in the order they started: (host index, pid, first and last sample).
    pub fn spans(&self) -> Vec<(usize, i32, u64, u64)> {
        let runs = self.runs.lock().expect("spans");
        let mut spans: Vec<(usize, i32, u64, u64)> = runs
            .iter()
            .filter_map(|((pid, _), run)| Some((run.host, *pid, run.first?, run.last)))
            .collect();
        spans.sort_by_key(|span| span.2);
        spans
    }
}

/// When process `pid` started (clock ticks after boot, field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The pairs of spans of [`RunSpans::spans`] during which two QEMUs ran the guest at once
/// (sharing one sample is not: a switchover falls between two samples).
pub fn overlapping_runs(spans: &[(usize, i32, u64, u64)]) -> Vec<String> {
    let mut overlaps = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.2 < b.3 && b.2 < a.3 {
                overlaps.push(format!("{a:?} and {b:?}"));
            }
        }
    }
    overlaps
}
