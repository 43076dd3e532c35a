//! Harness for the end-to-end tests: a private oxvirtd per test, the `oxvirt` binary as a user
//! runs it, and a console session driven through `oxvirt console` with piped stdin/stdout.

pub mod counting;
pub mod twohosts;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_testkit::{wait_for, GuestKit};

/// The `oxvirt` binary under test.
pub fn oxvirt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oxvirt"))
}

/// `oxvirtd`, next to `oxvirt`. `cargo test --workspace` builds it; `cargo test -p oxvirt-cli`
/// alone does not (it may then be missing, or older than the daemon's sources).
pub fn oxvirtd_bin() -> PathBuf {
    let path = oxvirt_bin()
        .parent()
        .expect("the oxvirt binary lives in a directory")
        .join("oxvirtd");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before these tests",
        path.display()
    );
    path
}

/// What one `oxvirt` run printed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "oxvirt failed: {self:#?}");
        self.stdout
    }

    /// Asserts exit status 1 with exactly one `error: ...` line on stderr, and returns that line.
    #[track_caller]
    pub fn error(self) -> String {
        assert_eq!(
            self.code,
            Some(1),
            "oxvirt should have failed with 1: {self:#?}"
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "want one error line: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        lines[0].to_string()
    }
}

/// Runs `oxvirt --socket SOCKET args...` to completion, with `env` added and no `$VISUAL` (so `edit`
/// uses the `$EDITOR` a test sets).
pub fn oxvirt_at(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(oxvirt_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VISUAL")
        .stdin(Stdio::null())
        .output()
        .expect("run oxvirt");
    Run::from_output(output)
}

/// A private oxvirtd with its own socket and state under a tempdir. Dropping it destroys every
/// domain it runs, stops it, and kills any QEMU left from its run directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// A command oxvirtd runs under (its program and arguments come after), if any.
    wrapper: Vec<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// A private oxvirtd started with `extra` flags too (e.g. `--config FILE`).
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_under(Vec::new(), extra)
    }

    /// oxvirtd started with `extra` flags, under the command `wrapper` (none if empty), which
    /// must exec it (`ip netns exec NS`, `unshare ...`: the child the test holds is oxvirtd).
    pub fn start_under(wrapper: Vec<String>, extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("oxvirt-e2e-")
            .tempdir()
            .expect("tempdir");
        // QEMU runs as a guest user of its own: it must reach the state directory and the
        // disks below this one (searchable by all, not listable, as /var/lib is).
        searchable(dir.path());
        let socket = dir.path().join("oxvirtd.sock");
        let mut daemon = Daemon {
            dir,
            socket,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            wrapper,
        };
        daemon.launch();
        daemon
    }

    /// [`Daemon::start_with`], oxvirtd (and its guests) in a mount namespace of its own where
    /// an empty tmpfs covers `covered`: what this oxvirtd sees there are other files than the
    /// test's (another host's disks at the same paths, for migrations that copy them).
    pub fn start_in_own_mounts(covered: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_under(own_mounts_wrapper(covered), extra)
    }

    /// oxvirtd's pid (to enter its namespaces).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("oxvirtd runs").id()
    }

    /// Starts oxvirtd on this daemon's socket and state (again, after [`Daemon::kill`]): its
    /// log goes on in the same file.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("oxvirtd.log"))
            .expect("daemon log");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(oxvirtd_bin());
                command
            }
            None => Command::new(oxvirtd_bin()),
        };
        let child = command
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            // These tests run in the host's network namespace: no default network there.
            .arg("--no-default-network")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("daemon log"))
            .stderr(log)
            .spawn()
            .expect("spawn oxvirtd");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(20), || {
            self.has_exited() || self.oxvirt(&["version"]).code == Some(0)
        });
        assert!(
            up && !self.has_exited(),
            "oxvirtd did not come up; its log:\n{}",
            self.log()
        );
    }

    /// SIGKILLs oxvirtd (its guests go on running, as after a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL oxvirtd");
            child.wait().expect("reap oxvirtd");
        }
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("oxvirtd.log")).unwrap_or_default()
    }

    /// Runs `oxvirt --socket <ours> args...` to completion.
    pub fn oxvirt(&self, args: &[&str]) -> Run {
        self.oxvirt_with_env(args, &[])
    }

    pub fn oxvirt_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        oxvirt_at(&self.socket, args, env)
    }

    /// Starts `oxvirt --socket <ours> args...` with `env` added, no stdin and its output piped: a
    /// command the test lets run (`install`, which waits for the guest) while it drives the guest;
    /// [`wait_for_exit`] collects it.
    pub fn spawn_oxvirt(&self, args: &[&str], env: &[(&str, &Path)]) -> Child {
        Command::new(oxvirt_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run oxvirt")
    }

    /// Writes `xml` to a file in our tempdir and defines it; returns the file.
    pub fn define(&self, file_name: &str, xml: &str) -> (PathBuf, Run) {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, xml).expect("write domain XML");
        let run = self.oxvirt(&["define", path.to_str().expect("utf-8 path")]);
        (path, run)
    }

    /// `oxvirt user add NAME --role ROLE --password-file FILE` (a user of the remote API).
    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        let file = self.dir.path().join(format!("{name}.password"));
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        let file = file.to_str().expect("utf-8 path");
        self.oxvirt(&["user", "add", name, "--role", role, "--password-file", file])
            .ok();
    }

    /// Starts `oxvirt console NAME` with piped stdin and stdout.
    pub fn console(&self, domain: &str) -> ConsoleSession {
        ConsoleSession::spawn(&self.socket, &["console", domain])
    }

    /// Starts `oxvirt start --console NAME` with piped stdin and stdout.
    pub fn start_with_console(&self, domain: &str) -> ConsoleSession {
        ConsoleSession::spawn(&self.socket, &["start", "--console", domain])
    }

    /// Attaches a console as soon as the domain has one (e.g. while it restarts), retrying for
    /// up to `timeout`.
    pub fn console_when_ready(&self, domain: &str, timeout: Duration) -> ConsoleSession {
        let mut session = None;
        let attached = wait_for(timeout, || {
            let mut attempt = self.console(domain);
            let banner = format!("Connected to domain '{domain}'");
            let connected = wait_for(Duration::from_secs(5), || {
                attempt.all_output().contains(&banner) || attempt.has_exited()
            });
            if connected && !attempt.has_exited() {
                session = Some(attempt);
                true
            } else {
                false
            }
        });
        assert!(attached, "could not attach a console to {domain}");
        session.expect("attached console")
    }

    /// Names of the domains that are running or paused.
    fn active_domains(&self) -> Vec<String> {
        self.oxvirt(&["list", "--name"])
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.has_exited() {
            for name in self.active_domains() {
                let _ = self.oxvirt(&["destroy", &name]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_processes_using(self.dir.path());
    }
}

/// Kills the processes (QEMU) whose command line names a path under `dir`, our own tempdir,
/// in case the daemon left one behind.
fn kill_processes_using(dir: &Path) {
    let Some(needle) = dir.to_str() else { return };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            // SAFETY: kill(2) with a pid read from /proc; at worst the process is already gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// `oxvirt console NAME` (or `start --console`) running with piped stdio; everything it prints
/// is collected.
pub struct ConsoleSession {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    /// How much of `output` earlier waits consumed.
    consumed: usize,
}

impl ConsoleSession {
    fn spawn(socket: &Path, args: &[&str]) -> ConsoleSession {
        ConsoleSession::spawn_with_env(socket, args, &[])
    }

    /// Starts `oxvirt --socket SOCKET args...` with `env` added (e.g. `--connect` to a remote
    /// oxvirtd and the configuration directory of its known_hosts).
    pub fn spawn_with_env(socket: &Path, args: &[&str], env: &[(&str, &Path)]) -> ConsoleSession {
        let mut child = Command::new(oxvirt_bin())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn oxvirt console");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                sink.lock().expect("console output lock").push_str(&text);
            }
        });
        ConsoleSession {
            child,
            stdin,
            output,
            consumed: 0,
        }
    }

    /// Everything printed so far.
    pub fn all_output(&self) -> String {
        self.output.lock().expect("console output lock").clone()
    }

    /// Waits until `pattern` appears after what earlier waits consumed; consumes up to its end.
    pub fn wait_for_text(&mut self, pattern: &str, timeout: Duration) -> bool {
        let mut found_end = None;
        let consumed = self.consumed;
        let found = wait_for(timeout, || {
            let output = self.output.lock().expect("console output lock");
            match output[consumed..].find(pattern) {
                Some(pos) => {
                    found_end = Some(consumed + pos + pattern.len());
                    true
                }
                None => false,
            }
        });
        if let Some(end) = found_end {
            self.consumed = end;
        }
        found
    }

    #[track_caller]
    pub fn expect_text(&mut self, pattern: &str, timeout: Duration) {
        assert!(
            self.wait_for_text(pattern, timeout),
            "console never showed {pattern:?}; it showed:\n{}",
            self.all_output()
        );
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("console stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to oxvirt console");
    }

    /// Runs `command` in the guest shell and returns its output lines. The answer is framed by
    /// markers that the shell computes (`$((...))`), so the echo of the typed line cannot match.
    #[track_caller]
    pub fn run(&mut self, command: &str, tag: u32) -> String {
        self.run_within(command, tag, Duration::from_secs(30))
    }

    /// [`Self::run`] for a command that may take up to `timeout` (a TCG guest moving tens of
    /// MiB while other guests share the cores).
    #[track_caller]
    pub fn run_within(&mut self, command: &str, tag: u32, timeout: Duration) -> String {
        let begin = format!("BEGIN-{}", tag * 2);
        let end = format!("END-{}", tag * 2);
        self.send_line(&format!(
            "echo BEGIN-$(({tag}*2)); {command}; echo END-$(({tag}*2))"
        ));
        self.expect_text(&format!("{begin}\n"), Duration::from_secs(30));
        let start = self.consumed;
        self.expect_text(&format!("{end}\n"), timeout);
        let output = self.output.lock().expect("console output lock");
        output[start..self.consumed - end.len() - 1].to_string()
    }

    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Detaches with Ctrl-] and returns the exit status code.
    pub fn detach(mut self) -> Option<i32> {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(&[0x1d]).and_then(|()| stdin.flush());
        }
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the console process to end by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        let exited = wait_for(timeout, || match self.child.try_wait() {
            Ok(Some(status)) => {
                code = status.code();
                true
            }
            _ => false,
        });
        assert!(
            exited,
            "oxvirt console did not exit; it showed:\n{}",
            self.all_output()
        );
        code
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a `dominfo` field (label padded to 15 columns, then one space).
#[track_caller]
pub fn field(dominfo: &str, label: &str) -> String {
    dominfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_at_checked(15)?;
            (key.trim_end() == label).then(|| value.trim_start().to_string())
        })
        .unwrap_or_else(|| panic!("no {label} in dominfo:\n{dominfo}"))
}

/// Makes `dir` searchable by every user (0711), as QEMU's guest users must reach below it.
pub fn searchable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
}

/// The entries of `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A port of 127.0.0.1 nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A raw disk image of `sectors` 512-byte sectors.
pub fn make_disk(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create disk");
    file.set_len(sectors * 512).expect("size disk");
    path
}

/// A definition that boots the test guest with `vcpus` CPUs, 256 MiB and one virtio disk.
pub fn guest_xml(name: &str, uuid: &str, kit: &GuestKit, disk: &Path, vcpus: u32) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
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
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
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
        disk = disk.display(),
    )
}

/// Runs vncsnapshot against `display` with the password file `password`; whether it saved an
/// image.
pub fn vncsnapshot(dir: &Path, display: &str, password: &[u8], image: &str) -> bool {
    let password_file = dir.join(format!("{image}.passwd"));
    std::fs::write(&password_file, password).expect("password file");
    let image = dir.join(image);
    let output = Command::new("timeout")
        .arg("60")
        .arg("vncsnapshot")
        .arg("-quiet")
        .arg("-passwd")
        .arg(&password_file)
        .arg(display)
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .expect("vncsnapshot (apt-get install vncsnapshot; scripts/setup.sh installs it)");
    output.status.success() && std::fs::metadata(&image).is_ok_and(|m| m.len() > 1000)
}

/// Decodes a PNG and returns (width, height, variance of the pixels' luminance).
pub fn png_stats(bytes: &[u8]) -> (u32, u32, f64) {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).expect("a PNG frame");
    let data = &buffer[..frame.buffer_size()];
    let channels = frame.color_type.samples();
    let values: Vec<f64> = data
        .chunks(channels)
        .map(|px| px.iter().take(3).map(|&v| f64::from(v)).sum::<f64>())
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (frame.width, frame.height, variance)
}

/// Whether `domjobinfo`'s output shows a migration moving memory (some of it processed): the
/// moment a test cuts, aborts or slows a migration that is under way.
pub fn memory_moving(domjobinfo: &str) -> bool {
    domjobinfo
        .lines()
        .any(|line| line.starts_with("Memory processed:") && !line.contains(" 0.000 MiB"))
}

/// `oxvirt --socket SOCKET ARGS` with `input` as its standard input (a password, a shell
/// script), waiting at most `timeout` for it to end.
#[track_caller]
pub fn oxvirt_with_input(socket: &Path, args: &[&str], input: &str, timeout: Duration) -> Run {
    use std::io::Write;
    let mut child = Command::new(oxvirt_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oxvirt");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("oxvirt's stdin");
    drop(stdin);
    wait_for_exit(child, timeout)
}

/// Waits up to `timeout` for an `oxvirt` started with piped output (`install`, which runs while
/// the test drives the guest) to end by itself, and returns what it printed; kills it and fails
/// the test if it does not end.
#[track_caller]
pub fn wait_for_exit(mut child: Child, timeout: Duration) -> Run {
    let ended = wait_for(timeout, || !matches!(child.try_wait(), Ok(None)));
    if !ended {
        let _ = child.kill();
    }
    let run = Run::from_output(child.wait_with_output().expect("collect oxvirt's output"));
    assert!(ended, "oxvirt did not end within {timeout:?}: {run:#?}");
    run
}

/// Debian's virsh on libvirt's embedded QEMU driver rooted at `root` (no daemon): runs
/// `script` (commands separated by `;`) in one process and returns what it printed.
pub fn virsh_embedded(root: &Path, script: &str) -> String {
    let output = Command::new("virsh")
        .arg("-c")
        .arg(format!("qemu:///embed?root={}", root.display()))
        .arg(script)
        .output()
        .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "virsh failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Where this host mounts cgroup `controller` (v1), or its v2 hierarchy (then `true`), from
/// /proc/self/mounts.
pub fn cgroup_mount(controller: &str) -> (PathBuf, bool) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[2] == "cgroup" && fields[3].split(',').any(|o| o == controller) {
            return (PathBuf::from(fields[1]), false);
        }
    }
    let v2 = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[2] == "cgroup2")
        .expect("a cgroup hierarchy");
    (PathBuf::from(v2[1]), true)
}

/// The pid of the QEMU whose command line names `uuid`, if one runs.
pub fn qemu_pid(uuid: &str) -> Option<u32> {
    qemu_pids(uuid).into_iter().next()
}

/// The pids of every QEMU of the VM `uuid` on this host (two while it migrates between two
/// oxvirtd).
pub fn qemu_pids(uuid: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv);
            argv.split('\0')
                .next()
                .is_some_and(|a| a.contains("qemu-system"))
                && argv.contains(uuid)
        })
        .collect()
}

/// The host's last CPU and its CPUs as the kernel lists them, e.g. (1, "0-1").
pub fn host_cpus() -> (u32, String) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let last: u32 = online
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (last, online.trim().to_string())
}

/// The CPUs thread `tid` of process `pid` may run on, as /proc shows them (`0-1`).
pub fn allowed_cpus(pid: u32, tid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The command that runs the rest of its command line in a mount namespace of its own where an
/// empty tmpfs covers `covered` ([`Daemon::start_in_own_mounts`]).
pub fn own_mounts_wrapper(covered: &Path) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        // exec: the child the test holds is the command itself.
        r#"mount -t tmpfs -o mode=0711 oxvirt-test "$0" && exec "$@""#,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([covered.display().to_string()])
    .collect()
}
