//! Test support: run a test's body inside network namespaces created for it, so no bridge, TAP, address or
//! nftables table ever appears in the machine's own namespace.
//!
//! The outer run of a test creates the namespaces (`ip netns add oxtest-<random>`), re-executes this test binary
//! under `ip netns exec MAIN` for just that test, and deletes the namespaces afterwards (killing whatever
//! processes, e.g. dnsmasq or QEMU, were left in them). The inner run sees the names in its environment.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const ENV_NETNS: &str = "OXNET_TEST_NETNS";
const ENV_TEST: &str = "OXNET_TEST_NAME";
const ENV_DONE: &str = "OXNET_TEST_DONE_FILE";

/// The namespaces of one test: `main` runs the code under test; `extra` simulate guests or the outside world.
pub struct Namespaces {
    pub main: String,
    pub extra: Vec<String>,
}

/// A network namespace deleted (with every process in it killed) when dropped.
struct NetnsGuard(String);

impl NetnsGuard {
    fn create() -> NetnsGuard {
        let name = format!(
            "oxtest-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        run("ip", &["netns", "add", &name]);
        let guard = NetnsGuard(name);
        run("ip", &["-n", &guard.0, "link", "set", "lo", "up"]);
        guard
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) on a process that lives in this test's own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `body` in a fresh main namespace (plus `extra` more namespaces), by re-executing the test binary.
/// `test_name` must be the calling test function's name.
pub fn in_fresh_netns(test_name: &str, extra: usize, body: impl FnOnce(&Namespaces)) {
    if std::env::var(ENV_TEST).as_deref() == Ok(test_name) {
        let names = std::env::var(ENV_NETNS).expect("inner run has its namespaces");
        let mut names = names.split(',').map(str::to_string);
        let namespaces = Namespaces {
            main: names.next().expect("main namespace"),
            extra: names.collect(),
        };
        body(&namespaces);
        std::fs::write(std::env::var(ENV_DONE).expect("done file"), "done")
            .expect("write done file");
        return;
    }
    let guards: Vec<NetnsGuard> = (0..=extra).map(|_| NetnsGuard::create()).collect();
    let names: Vec<&str> = guards.iter().map(|g| g.0.as_str()).collect();
    let done = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::remove_file(done.path()).expect("remove done file");
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("ip")
        .args(["netns", "exec", names[0]])
        .arg(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(ENV_TEST, test_name)
        .env(ENV_NETNS, names.join(","))
        .env(ENV_DONE, done.path())
        .status()
        .expect("run the test inside its namespace");
    assert!(
        status.success(),
        "{test_name} failed inside namespace {} ({status})",
        names[0]
    );
    assert!(
        done.path().exists(),
        "{test_name} did not run inside its namespace (wrong test name?)"
    );
}

/// Runs a command (test scaffolding: guests, dummy devices) and returns its stdout; panics on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside namespace `ns`.
pub fn run_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A tokio runtime for the inner body (its netlink socket opens in the namespace the process runs in).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Pids of the dnsmasq processes whose command line names `config`.
pub fn dnsmasq_pids_with(config: &std::path::Path) -> Vec<u32> {
    let wanted = format!("--conf-file={}", config.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && cmdline.split(|b| *b == 0).any(|a| a == wanted.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// oxvirt's nftables table, if present (in the current namespace).
pub fn nft_table() -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "oxvirt"])
        .output()
        .expect("run nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A udhcpc script that configures the leased address and default route, as a distribution's script would.
pub fn udhcpc_script(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nif [ \"$1\" = bound ]; then\n  busybox ip addr add \"$ip/$mask\" dev \"$interface\"\n  \
         [ -n \"$router\" ] && busybox ip route add default via \"$router\"\nfi\nexit 0\n",
    )
    .expect("write udhcpc script");
    run("chmod", &["+x", path.to_str().expect("utf-8 path")]);
    path
}

pub const SHORT: Duration = Duration::from_secs(10);
