//! Harness for the network tests: a network namespace per test, oxvirtd running inside it
//! (`ip netns exec`), the `oxvirt` binary talking to it over its Unix socket (sockets work
//! across namespaces), and guest consoles through `oxvirt_testkit::Console`.
//!
//! Nothing here touches the host's own namespace: bridges, TAPs, nftables rules and dnsmasq
//! all live in the test's namespace, which the Drop guard deletes after killing every process
//! in it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxvirt_testkit::{wait_for, Console, GuestKit};

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
pub const SHORT: Duration = Duration::from_secs(30);

// The binaries under test are found the same way as in the other suites.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
// Not every test binary that includes this harness uses all of them.
#[allow(unused_imports)]
pub use support::{memory_moving, oxvirt_bin, oxvirt_with_input, oxvirtd_bin, wait_for_exit, Run};

fn run_command(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A network namespace `oxtest-<random>`, deleted (with everything running in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "oxtest-{:x}{:x}{}",
            std::process::id(),
            nanos & 0xffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = run_command("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS args...`; panics on failure.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.try_ip(args);
        assert!(
            out.status.success(),
            "ip -n {} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn try_ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_command("ip", &full)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run_command("ip", &full)
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|line| {
                let name = line.split(": ").nth(1)?;
                Some(name.split('@').next()?.to_string())
            })
            .collect()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|l| l == name)
    }

    /// `ip -d link show NAME`.
    pub fn link_details(&self, name: &str) -> String {
        self.ip(&["-d", "link", "show", name])
    }

    pub fn nft_ruleset(&self) -> String {
        let out = self.exec("nft", &["list", "ruleset"]);
        assert!(out.status.success(), "nft list ruleset: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Processes in the namespace, with their command lines.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let out = run_command("ip", &["netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                Some((pid, text))
            })
            .collect()
    }

    pub fn processes_matching(&self, needle: &str) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains(needle))
            .map(|(pid, _)| pid)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything we started runs in here: oxvirtd, QEMU, dnsmasq.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.processes();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for (pid, _) in pids {
                // SAFETY: kill(2) on a pid of our own test namespace; at worst it is gone.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = run_command("ip", &["netns", "del", &self.name]);
    }
}

/// oxvirtd inside a test namespace, with a private socket and state directory.
pub struct NetDaemon<'a> {
    pub ns: &'a Netns,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    default_network: bool,
    /// More flags for every launch (the cluster's harness: --cluster, --host-name).
    extra_args: Vec<String>,
    child: Option<Child>,
    runs: u32,
}

impl<'a> NetDaemon<'a> {
    /// Starts oxvirtd in `ns`; with `default_network` it defines and autostarts `default` as
    /// on a fresh host.
    pub fn start(ns: &'a Netns, default_network: bool) -> NetDaemon<'a> {
        NetDaemon::start_with(ns, default_network, &[])
    }

    /// As [`NetDaemon::start`], with more flags for oxvirtd (kept for each relaunch).
    pub fn start_with(ns: &'a Netns, default_network: bool, extra_args: &[&str]) -> NetDaemon<'a> {
        // Short paths: QEMU's sockets live below the state dir (sockaddr_un holds 108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("oxnet-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // dnsmasq drops its privileges: it must be able to reach the network directory
        // (`state-network`, next to the state directory) through our tempdir.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod tempdir");
        let socket = dir.path().join("oxvirtd.sock");
        let state = dir.path().join("state");
        let mut daemon = NetDaemon {
            ns,
            dir,
            socket,
            state,
            default_network,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
            runs: 0,
        };
        daemon.launch();
        daemon
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("oxvirtd-{run}.log"))
    }

    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                let text = std::fs::read_to_string(self.log_path(run)).unwrap_or_default();
                format!("--- oxvirtd run {run} ---\n{text}")
            })
            .collect()
    }

    /// Starts oxvirtd (again) and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "oxvirtd already runs");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("daemon log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns.name])
            .arg(oxvirtd_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--log-level")
            .arg("debug");
        if !self.default_network {
            command.arg("--no-default-network");
        }
        command.args(&self.extra_args);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("daemon log"))
            .stderr(log)
            .spawn()
            .expect("spawn oxvirtd");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(30), || {
            self.has_exited() || self.oxvirt(&["version"]).code == Some(0)
        });
        assert!(
            up && !self.has_exited(),
            "oxvirtd did not come up; its log:\n{}",
            self.log()
        );
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, as a service manager stops it; running guests and networks stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the daemon we spawned (`ip netns exec` execs into it).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let exited = wait_for(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
            assert!(exited, "oxvirtd ignored SIGTERM; log:\n{}", self.log());
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn oxvirt(&self, args: &[&str]) -> Run {
        self.oxvirt_with_env(args, &[])
    }

    pub fn oxvirt_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        support::oxvirt_at(&self.socket, args, env)
    }

    /// Writes `text` to a file in our directory; returns its path.
    pub fn write(&self, file_name: &str, text: &str) -> String {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, text).expect("write file");
        path.to_str().expect("utf-8 path").to_string()
    }

    /// Defines a one-vCPU guest with the given `<interface>` elements.
    pub fn define_guest(&self, name: &str, interfaces: &str) -> Run {
        self.define_guest_with_vcpus(name, 1, interfaces)
    }

    /// Defines a guest with `vcpus` vCPUs (e.g. for multiqueue NICs, one queue pair per vCPU) and the
    /// given `<interface>` elements.
    pub fn define_guest_with_vcpus(&self, name: &str, vcpus: u32, interfaces: &str) -> Run {
        let xml = guest_xml(name, &oxvirt_testkit::guest_kit(), vcpus, interfaces);
        let file = self.write(&format!("{name}.xml"), &xml);
        self.oxvirt(&["define", &file])
    }

    /// The console socket of a running domain, from the API (waited for: a domain an HA
    /// restart or a start request just started may not serve it yet).
    pub fn console(&self, domain: &str) -> Console {
        let client = oxvirt_api::Client::new(&self.socket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut socket = None;
        let served = wait_for(SHORT, || {
            let info = runtime
                .block_on(client.domain_info(domain))
                .expect("domain info");
            socket = info.console_socket;
            socket.is_some()
        });
        assert!(served, "{domain} has no console socket");
        let socket = socket.expect("a console socket");
        Console::connect(Path::new(&socket), SHORT).expect("connect to the console")
    }

    /// The domain's interfaces as `(target, mac)` from `domiflist`.
    pub fn interfaces(&self, domain: &str) -> Vec<(String, String)> {
        self.oxvirt(&["domiflist", domain])
            .ok()
            .lines()
            .skip(2)
            .filter_map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                Some((cells.first()?.to_string(), cells.get(4)?.to_string()))
            })
            .collect()
    }
}

impl Drop for NetDaemon<'_> {
    fn drop(&mut self) {
        self.kill();
        // QEMU and dnsmasq run in the namespace, which the `Netns` guard empties next; kill
        // anything that uses our directory right away anyway.
        for pid in self
            .ns
            .processes_matching(self.dir.path().to_str().unwrap_or("/nonexistent"))
        {
            // SAFETY: kill(2) on a process of our test namespace using our tempdir.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Waits for the guest shell and returns the console.
pub fn boot_shell(console: &mut Console) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let _ = console.send_line("");
        if console
            .wait_for_text(oxvirt_testkit::PROMPT, Duration::from_secs(3))
            .is_some()
        {
            // Let the extra newlines' prompts pass.
            while console
                .wait_for_text(oxvirt_testkit::PROMPT, Duration::from_millis(500))
                .is_some()
            {}
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the guest shell did not come up; console showed:\n{}",
            console.pending()
        );
    }
}

/// Runs `command` in the guest; panics on timeout.
#[track_caller]
pub fn guest(console: &mut Console, command: &str, timeout: Duration) -> String {
    console
        .run(command, timeout)
        .unwrap_or_else(|| panic!("guest command `{command}` did not finish"))
}

/// Brings eth`index` up and gets a DHCP lease with busybox udhcpc; returns the address.
pub fn dhcp(console: &mut Console, interface: &str) -> String {
    guest(
        console,
        "printf '#!/bin/sh\\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\\nexit 0\\n' > /tmp/dhcp.sh; chmod +x /tmp/dhcp.sh",
        SHORT,
    );
    let said = guest(
        console,
        &format!(
            "ip link set {interface} up; udhcpc -i {interface} -n -q -t 10 -T 2 -s /tmp/dhcp.sh"
        ),
        Duration::from_secs(60),
    );
    let shown = guest(
        console,
        &format!("ip -4 -o addr show dev {interface}"),
        SHORT,
    );
    shown
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_string())
        .unwrap_or_else(|| panic!("no address after udhcpc: {shown}\nudhcpc said: {said}"))
}

/// A guest that boots the kit's kernel and initramfs, no disk, with `vcpus` vCPUs and `interfaces`.
pub fn guest_xml(name: &str, kit: &GuestKit, vcpus: u32, interfaces: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
{interfaces}
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
",
        kernel = kit.kernel.display(),
        initrd = kit.initramfs.display(),
    )
}

/// `<interface type='network'>` on `network` (virtio), with an optional fixed MAC.
pub fn network_interface(network: &str, mac: Option<&str>) -> String {
    let mac = mac
        .map(|m| format!("<mac address='{m}'/>"))
        .unwrap_or_default();
    format!(
        "    <interface type='network'>{mac}<source network='{network}'/><model type='virtio'/></interface>"
    )
}
