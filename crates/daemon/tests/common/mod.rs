//! Test harness: an oxvirtd process on a private socket and state directory, driven through
//! `oxvirt_api::Client`, with real QEMU guests (TCG) from the guest kit.
//!
//! Cleanup is by Drop guard: the daemon is killed, and so is every process whose command line
//! mentions the test's private directory (the QEMU guests, whose sockets live there).

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxvirt_api::{Client, DomainState, DomainSummary};

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A private directory with a state dir and a socket, and the daemon serving it (if started).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    daemon: Option<Child>,
    daemon_runs: u32,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        // Short paths: QEMU's sockets go below the state dir and sockaddr_un holds 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("oxvirtd-test-")
            .tempdir_in("/tmp")
            .expect("create tempdir");
        // QEMU runs as a guest user of its own: it must reach the state directory and the
        // disks below this one (searchable by all, not listable, as /var/lib is).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod 0711");
        }
        let socket = dir.path().join("oxvirtd.sock");
        let state_dir = dir.path().join("state");
        TestEnv {
            dir,
            socket,
            state_dir,
            daemon: None,
            daemon_runs: 0,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Starts oxvirtd and waits until it answers.
    pub async fn start_daemon(&mut self) {
        self.start_daemon_with(&[]).await
    }

    /// Starts oxvirtd with `extra` arguments and waits until it answers.
    pub async fn start_daemon_with(&mut self, extra: &[&str]) {
        assert!(self.daemon.is_none(), "daemon already started");
        self.daemon_runs += 1;
        let log = std::fs::File::create(self.daemon_log(self.daemon_runs)).expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_oxvirtd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-level")
            .arg("debug")
            // These tests run in the host's network namespace: no default network there.
            .arg("--no-default-network")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn oxvirtd");
        self.daemon = Some(child);
        let client = self.client();
        let up = wait_until(Duration::from_secs(30), || {
            let client = client.clone();
            async move { client.version().await.is_ok() }
        })
        .await;
        assert!(
            up,
            "oxvirtd did not answer on {}; its log:\n{}",
            self.socket.display(),
            self.logs()
        );
    }

    /// Runs oxvirtd on this state directory and socket with `args`, for runs that should exit
    /// by themselves (refusals, `--restore-backup`). One still running after 30 s (a daemon
    /// that started serving) is killed, and reported as not exited (`status.code()` is `None`).
    pub fn run_oxvirtd(&self, args: &[&str]) -> RunOutput {
        let out = self.dir.path().join("run.out");
        let err = self.dir.path().join("run.err");
        let mut child = Command::new(env!("CARGO_BIN_EXE_oxvirtd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--no-default-network")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn oxvirtd");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for oxvirtd") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break child.wait().expect("reap oxvirtd");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        RunOutput {
            status,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    fn daemon_log(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("oxvirtd-{run}.log"))
    }

    /// Every daemon log of this test, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.daemon_runs)
            .map(|run| {
                let text = std::fs::read_to_string(self.daemon_log(run)).unwrap_or_default();
                format!("--- oxvirtd run {run} ---\n{text}")
            })
            .collect()
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// SIGKILLs the daemon (as a crash would) and reaps it.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the daemon and waits for it to exit.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("oxvirtd did not exit on SIGTERM; logs:\n{}", self.logs());
        }
    }

    /// Domain XML for the test guest.
    pub fn domain_xml(&self, name: &str, uuid: Option<&str>) -> String {
        let kit = oxvirt_testkit::guest_kit();
        domain_xml(name, uuid, &kit.kernel, &kit.initramfs)
    }

    /// Waits until the domain `name` has `state` in the list.
    pub async fn wait_for_state(&self, name: &str, state: DomainState) -> DomainSummary {
        let client = self.client();
        let mut last = None;
        let deadline = Instant::now() + STATE_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(list) = client.list_domains().await {
                if let Some(d) = list.into_iter().find(|d| d.name == name) {
                    if d.state == state {
                        return d;
                    }
                    last = Some(d);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let console_log = match client
            .domain_info(name)
            .await
            .ok()
            .and_then(|i| i.console_log)
        {
            Some(log) => std::fs::read_to_string(log).unwrap_or_default(),
            None => String::new(),
        };
        panic!(
            "domain '{name}' did not reach state '{state}' (last seen {last:?}); console log:\n{console_log}\nlogs:\n{}",
            self.logs()
        );
    }

    /// Waits until the guest printed its boot marker on the serial console (its log file).
    pub async fn wait_for_boot(&self, name: &str) {
        let info = self.client().domain_info(name).await.expect("domain info");
        let log = PathBuf::from(
            info.console_log
                .expect("a running domain has a console log"),
        );
        let booted = wait_until(BOOT_TIMEOUT, || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .map(|text| text.contains(oxvirt_testkit::BOOT_MARKER))
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(
            booted,
            "guest '{name}' did not print {} on its console; console log:\n{}\nlogs:\n{}",
            oxvirt_testkit::BOOT_MARKER,
            std::fs::read_to_string(&log).unwrap_or_default(),
            self.logs()
        );
    }

    /// Opens the domain's serial console and waits for the shell prompt.
    pub async fn console(&self, name: &str) -> oxvirt_testkit::Console {
        let info = self.client().domain_info(name).await.expect("domain info");
        let socket = PathBuf::from(
            info.console_socket
                .expect("a running domain has a console socket"),
        );
        tokio::task::block_in_place(|| {
            let mut console = oxvirt_testkit::Console::connect(&socket, Duration::from_secs(10))
                .expect("connect to the console");
            console.send_line("").expect("write to the console");
            assert!(
                console
                    .wait_for_text(oxvirt_testkit::PROMPT, Duration::from_secs(30))
                    .is_some(),
                "no shell prompt on the console of '{name}'"
            );
            console
        })
    }

    /// Pids of live processes whose command line mentions `needle` (e.g. a domain's uuid).
    pub fn pids_mentioning(&self, needle: &str) -> Vec<u32> {
        pids_with_cmdline(needle)
    }
}

/// How a run of oxvirtd that exits by itself ended.
#[derive(Debug)]
pub struct RunOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_daemon();
        // Every guest of this test has its sockets in our directory, so it is named on its command line.
        let dir = format!("{}/", self.dir.path().display());
        for pid in pids_with_cmdline(&dir) {
            signal(pid, libc::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Whether `pid` is a live process (not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

pub fn domain_xml(name: &str, uuid: Option<&str>, kernel: &Path, initrd: &Path) -> String {
    let uuid = uuid
        .map(|u| format!("  <uuid>{u}</uuid>\n"))
        .unwrap_or_default();
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
{uuid}  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
",
        kernel = kernel.display(),
        initrd = initrd.display()
    )
}

/// One HTTP/1.1 exchange by hand, for requests the typed client cannot make.
pub fn raw_request(socket: &Path, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: oxvirtd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The daemon may answer (413) and close before it read a large body: a write error then is
    // part of the exchange, and the reply is still there to read.
    let _ = stream.write_all(body.as_bytes());
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

/// Polls an async condition every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often the guest printed its boot marker (console.log is appended across restarts).
pub async fn boot_count(env: &TestEnv, name: &str) -> usize {
    let info = env.client().domain_info(name).await.expect("domain info");
    info.console_log
        .and_then(|log| std::fs::read_to_string(log).ok())
        .map(|text| text.matches(oxvirt_testkit::BOOT_MARKER).count())
        .unwrap_or(0)
}

/// The guest kit's initramfs with the pvpanic driver appended (a second cpio archive, which
/// the kernel unpacks over the first), so the guest can report a panic to QEMU.
pub fn initramfs_with_pvpanic(dir: &Path) -> PathBuf {
    let kit = oxvirt_testkit::guest_kit();
    let rel = format!(
        "lib/modules/{}/kernel/drivers/misc/pvpanic",
        kit.kernel_version
    );
    let tree = dir.join("pvpanic-tree");
    std::fs::create_dir_all(tree.join(&rel)).unwrap();
    for module in ["pvpanic.ko", "pvpanic-mmio.ko"] {
        let from = kit
            .modules_dir
            .join(&kit.kernel_version)
            .join("kernel/drivers/misc/pvpanic")
            .join(module);
        std::fs::copy(&from, tree.join(&rel).join(module))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    let combined = dir.join("initramfs-pvpanic.img");
    oxvirt_testkit::lab::initramfs_with(&kit.initramfs, &tree, &combined);
    combined
}

/// Loads pvpanic in the guest and panics its kernel. The console is closed once the panic
/// started: the panic messages go out through the serial port synchronously, and a console
/// client that stops reading would stall them (and the panic report).
pub fn panic_guest(mut console: oxvirt_testkit::Console, kernel_version: &str) {
    let dir = format!("/lib/modules/{kernel_version}/kernel/drivers/misc/pvpanic");
    let out = console
        .run(
            &format!(
                "insmod {dir}/pvpanic.ko && insmod {dir}/pvpanic-mmio.ko && echo pvpanic-loaded"
            ),
            Duration::from_secs(30),
        )
        .expect("insmod pvpanic");
    assert!(
        out.contains("pvpanic-loaded"),
        "pvpanic did not load: {out}"
    );
    console.send_line("echo c > /proc/sysrq-trigger").unwrap();
    assert!(
        console
            .wait_for_text("Kernel panic", Duration::from_secs(30))
            .is_some(),
        "the guest did not panic"
    );
}
