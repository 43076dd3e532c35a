//! Timing and memory probe for the native-VMM benchmarks (benches/native-vmm.sh, benches/native-restore.sh),
//! run inside the nested lab's L1 guest, where busybox `date` has no sub-second clock. It starts a VMM as a
//! child process and reports, as `KEY=value` lines on stdout:
//!
//! - `boot TIMEOUT_S MARKER PROMPT SETTLE_S RAM_MIB -- CMD...`: milliseconds from just before the child is
//!   spawned to the moment the first chunk of its stdout (the guest's serial console) containing MARKER is read
//!   (`MARKER_MS`); then, once PROMPT appeared and SETTLE_S more seconds passed, the child's resident memory
//!   from /proc/PID/smaps: the total, the part in guest-RAM mappings (anonymous mappings at least RAM_MIB
//!   large), and the rest (the VMM's own overhead). Then the child is sent SIGTERM.
//! - `kvmrun TIMEOUT_S LOG -- CMD...`: CMD is an `strace -f -ttt -T -o LOG ...` command line; as soon as LOG
//!   has a KVM_RUN ioctl the whole process group is killed, and LOG gives the time from the VMM's execve to its
//!   first KVM ioctl (`FIRST_KVM_IOCTL_MS`) and to its first KVM_RUN (`FIRST_KVM_RUN_MS`), the number of
//!   ioctls before that and the time spent inside them.
//!
//! - `restore TIMEOUT_S API_SOCKET COMMAND ANSWER -- CMD...`: CMD is an `oxvirt-vmm --restore FILE
//!   --api-socket API_SOCKET ...` command line. Milliseconds from just before the spawn to: the VMM's stderr
//!   line saying it restored the state (`RESTORED_MS`, with the duration that line gives, `VMM_RESTORE_MS`),
//!   the API's answer to `resume` (`RESUMED_MS`), and, after COMMAND was typed on the serial console, the
//!   first console chunk completing ANSWER (`ANSWER_MS`). Then the API's `stop`. A VMM that ends before it
//!   restored gives `RESTORED_MS=failed`, the time its stderr closed (`ENDED_MS`) and its exit status.
//! - `elapsed -- CMD...`: runs CMD (stdio inherited) and prints its wall time (`ELAPSED_MS`) and exit status.
//!
//! The child gets a pipe as stdin that is kept open and never written, so a guest shell on the serial console
//! waits for input instead of seeing end-of-file. The child runs in its own process group, which is killed
//! before this program exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
/// How long the VMM may take to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal_group(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created for the child (process_group(0)
    // makes its pgid equal to its pid); it touches no memory of ours.
    unsafe {
        kill(-(child.id() as i32), sig);
    }
}

/// The child's stdin pipe is held here so it stays open until the child is gone.
struct Vmm {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    started: Instant,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        signal_group(&self.child, SIGKILL);
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &[String], stdout: Stdio) -> Result<Vmm, String> {
    spawn_with_stderr(cmd, stdout, Stdio::inherit())
}

fn spawn_with_stderr(cmd: &[String], stdout: Stdio, stderr: Stdio) -> Result<Vmm, String> {
    use std::os::unix::process::CommandExt;
    let (program, args) = cmd.split_first().ok_or("no command given after --")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let stdin = child.stdin.take();
    Ok(Vmm {
        child,
        stdin,
        started,
    })
}

/// Reads the child's stdout on a thread; chunks arrive with the instant they were read.
fn console_reader(vmm: &mut Vmm) -> mpsc::Receiver<(Instant, Vec<u8>)> {
    let mut out = vmm.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits until `marker` is in `console` (which may already hold output), appending what arrives; returns the
/// instant the chunk completing the marker was read.
fn wait_for_marker(
    rx: &mpsc::Receiver<(Instant, Vec<u8>)>,
    console: &mut Vec<u8>,
    marker: &str,
    deadline: Instant,
) -> Option<Instant> {
    if contains(console, marker.as_bytes()) {
        return Some(Instant::now());
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, chunk) = rx.recv_timeout(left).ok()?;
        console.extend_from_slice(&chunk);
        // Only the tail can newly contain the marker.
        let from = console.len().saturating_sub(chunk.len() + marker.len());
        if contains(&console[from..], marker.as_bytes()) {
            return Some(at);
        }
    }
}

fn print_console_tail(console: &[u8]) {
    let text = String::from_utf8_lossy(console);
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(20)..] {
        println!("CONSOLE| {line}");
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One mapping of /proc/PID/smaps.
#[derive(Debug, Default)]
struct Mapping {
    range: String,
    path: String,
    size_kb: u64,
    rss_kb: u64,
    pss_kb: u64,
    anon_huge_kb: u64,
    flags: String,
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some(key) = first.strip_suffix(':') {
            let Some(current) = maps.last_mut() else {
                continue;
            };
            let value = || {
                fields
                    .clone()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            match key {
                "Size" => current.size_kb = value(),
                "Rss" => current.rss_kb = value(),
                "Pss" => current.pss_kb = value(),
                "AnonHugePages" => current.anon_huge_kb = value(),
                "VmFlags" => current.flags = fields.collect::<Vec<_>>().join(" "),
                _ => {}
            }
        } else if first.contains('-') {
            // Header: range perms offset dev inode [path]
            let path = fields.nth(4).unwrap_or("").to_string();
            maps.push(Mapping {
                range: first.to_string(),
                path,
                ..Mapping::default()
            });
        }
    }
    maps
}

struct BootProbe<'a> {
    timeout: Duration,
    marker: &'a str,
    prompt: &'a str,
    settle: Duration,
    ram_mib: u64,
}

fn boot(probe: &BootProbe, cmd: &[String]) -> Result<(), String> {
    let mut vmm = spawn(cmd, Stdio::piped())?;
    let rx = console_reader(&mut vmm);
    let deadline = vmm.started + probe.timeout;
    let mut console = Vec::new();
    let Some(seen) = wait_for_marker(&rx, &mut console, probe.marker, deadline) else {
        println!("MARKER_MS=timeout");
        print_console_tail(&console);
        return Ok(());
    };
    println!("MARKER_MS={}", ms(seen - vmm.started));
    if wait_for_marker(&rx, &mut console, probe.prompt, deadline).is_none() {
        println!("PROMPT=timeout");
        print_console_tail(&console);
        return Ok(());
    }
    // Keep draining the console while the guest settles.
    let drain = std::thread::spawn(move || while rx.recv().is_ok() {});
    std::thread::sleep(probe.settle);
    let ram_mib = probe.ram_mib;
    let pid = vmm.child.id();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("cannot read /proc/{pid}/smaps: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let maps = parse_smaps(&smaps);
    let ram_kb = ram_mib * 1024;
    let is_guest_ram = |m: &Mapping| m.path.is_empty() && m.size_kb >= ram_kb;
    let total: u64 = maps.iter().map(|m| m.rss_kb).sum();
    let total_pss: u64 = maps.iter().map(|m| m.pss_kb).sum();
    let guest: u64 = maps
        .iter()
        .filter(|m| is_guest_ram(m))
        .map(|m| m.rss_kb)
        .sum();
    for m in maps.iter().filter(|m| is_guest_ram(m)) {
        println!(
            "GUEST_MAP {} size_kb={} rss_kb={} anon_huge_kb={} flags={}",
            m.range, m.size_kb, m.rss_kb, m.anon_huge_kb, m.flags
        );
    }
    // The biggest contributors to the overhead, for the report.
    let mut rest: Vec<&Mapping> = maps.iter().filter(|m| !is_guest_ram(m)).collect();
    rest.sort_by_key(|m| std::cmp::Reverse(m.rss_kb));
    for m in rest.iter().take(8) {
        let path = if m.path.is_empty() { "[anon]" } else { &m.path };
        println!(
            "TOP_MAP {} size_kb={} rss_kb={} {path}",
            m.range, m.size_kb, m.rss_kb
        );
    }
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim)
        .unwrap_or("?");
    println!("THREADS={threads}");
    println!("MAPPINGS={}", maps.len());
    println!("RSS_TOTAL_KB={total}");
    println!("PSS_TOTAL_KB={total_pss}");
    println!("RSS_GUEST_KB={guest}");
    println!("RSS_OVERHEAD_KB={}", total - guest);
    signal_group(&vmm.child, SIGTERM);
    println!(
        "EXIT_AFTER_SIGTERM={}",
        exit_within_grace(&mut vmm).unwrap_or_else(|| "killed".into())
    );
    drop(vmm);
    let _ = drain.join();
    Ok(())
}

/// The VMM's exit status once it exits within TERM_GRACE ("signal" if a signal ended it); None if it did
/// not (the caller's drop of `vmm` kills it).
fn exit_within_grace(vmm: &mut Vmm) -> Option<String> {
    let grace = Instant::now() + TERM_GRACE;
    while Instant::now() < grace {
        if let Ok(Some(status)) = vmm.child.try_wait() {
            return Some(status.code().map_or("signal".into(), |c| c.to_string()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The `-T` duration at the end of an strace line ("... = 0 <0.000123>"), in seconds.
fn strace_duration(line: &str) -> Option<f64> {
    let inner = line.trim_end().strip_suffix('>')?;
    inner[inner.rfind('<')? + 1..].parse().ok()
}

/// The `-ttt` timestamp of an strace line written with `-f -o` ("PID SECONDS.MICROS call...").
fn strace_time(line: &str) -> Option<f64> {
    line.split_whitespace()
        .take(2)
        .find(|t| t.contains('.'))
        .and_then(|t| t.parse().ok())
}

fn kvmrun(timeout: Duration, log: &str, cmd: &[String]) -> Result<(), String> {
    let vmm = spawn(cmd, Stdio::null())?;
    let deadline = vmm.started + timeout;
    let mut found = false;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains("KVM_RUN")) {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(vmm);
    if !found {
        println!("FIRST_KVM_RUN_MS=timeout");
        return Ok(());
    }
    let text = std::fs::read_to_string(log).map_err(|e| format!("cannot read {log}: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    let exec = lines
        .iter()
        .position(|l| l.contains("execve("))
        .ok_or("no execve in the strace log")?;
    let run = lines
        .iter()
        .position(|l| l.contains("KVM_RUN"))
        .ok_or("no KVM_RUN in the strace log")?;
    let t_exec = strace_time(lines[exec]).ok_or("no timestamp on the execve line")?;
    let t_run = strace_time(lines[run]).ok_or("no timestamp on the KVM_RUN line")?;
    let ioctls = lines[exec..run]
        .iter()
        .filter(|l| l.contains("ioctl(") && !l.contains("resumed>"))
        .count();
    // Time inside the kernel's KVM ioctls (including the VMM's own non-KVM ioctls, which are few).
    let in_ioctls: f64 = lines[exec..run]
        .iter()
        .filter(|l| l.contains("ioctl(") || l.contains("ioctl resumed>"))
        .filter_map(|l| strace_duration(l))
        .sum();
    // The first KVM ioctl marks the end of the VMM's start-up (loader, libraries, command line).
    let first_kvm = lines[exec..run]
        .iter()
        .find(|l| l.contains("ioctl(") && l.contains("KVM_"))
        .and_then(|l| strace_time(l))
        .unwrap_or(t_run);
    println!("FIRST_KVM_IOCTL_MS={:.1}", (first_kvm - t_exec) * 1000.0);
    println!("FIRST_KVM_RUN_MS={:.1}", (t_run - t_exec) * 1000.0);
    println!("IOCTLS_BEFORE={ioctls}");
    println!("IN_IOCTLS_MS={:.1}", in_ioctls * 1000.0);
    Ok(())
}

/// What the VMM's stderr line after a restore starts with (crates/vmm/src/vm.rs), and how it ends:
/// "oxvirt-vmm: restored the machine state from FILE in N ms; paused until resumed".
const RESTORED_LINE: &str = "oxvirt-vmm: restored the machine state";

/// The N of "... in N ms; ..." in the VMM's restore line.
fn restore_line_ms(line: &str) -> Option<&str> {
    let after = &line[line.rfind(" in ")? + 4..];
    after.split(" ms").next()
}

/// One JSON-line request on the VMM's API socket, retried until the socket accepts (it is bound while the
/// VMM starts); returns the answer line.
fn api_request(socket: &str, request: &str, deadline: Instant) -> Result<String, String> {
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot connect to {socket}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    };
    let mut writer = stream.try_clone().map_err(|e| format!("{socket}: {e}"))?;
    writer
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("cannot write to {socket}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer from {socket}: {e}"))?;
    Ok(answer.trim_end().to_string())
}

struct RestoreProbe<'a> {
    timeout: Duration,
    socket: &'a str,
    command: &'a str,
    answer: &'a str,
}

fn restore(probe: &RestoreProbe, cmd: &[String]) -> Result<(), String> {
    let mut vmm = spawn_with_stderr(cmd, Stdio::piped(), Stdio::piped())?;
    let deadline = vmm.started + probe.timeout;
    let rx = console_reader(&mut vmm);
    // The VMM's stderr, line by line with the instant each was read; every line is also passed on.
    let err = vmm.child.stderr.take().expect("stderr is piped");
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            println!("VMM_LOG| {line}");
            if err_tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let restored = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match err_rx.recv_timeout(left) {
            Ok((at, line)) if line.starts_with(RESTORED_LINE) => break Ok((at, line)),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    let (restored_at, line) = match restored {
        Ok(restored) => restored,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            println!("RESTORED_MS=timeout");
            return Ok(());
        }
        // stderr closed without the line: the VMM ended (an error, its line passed on above).
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            println!("RESTORED_MS=failed");
            println!("ENDED_MS={}", ms(vmm.started.elapsed()));
            let status = vmm
                .child
                .wait()
                .map_err(|e| format!("cannot wait for the VMM: {e}"))?;
            println!(
                "EXIT={}",
                status.code().map_or("signal".into(), |c| c.to_string())
            );
            return Ok(());
        }
    };
    println!("RESTORED_MS={}", ms(restored_at - vmm.started));
    println!("VMM_RESTORE_MS={}", restore_line_ms(&line).unwrap_or("?"));
    let answer = api_request(probe.socket, r#"{"command":"resume"}"#, deadline)?;
    println!("RESUMED_MS={}", ms(vmm.started.elapsed()));
    if !answer.contains(r#""ok":true"#) {
        println!("RESUME=failed {answer}");
        return Ok(());
    }
    let stdin = vmm.stdin.as_mut().expect("stdin is piped");
    stdin
        .write_all(format!("{}\n", probe.command).as_bytes())
        .map_err(|e| format!("cannot type on the serial console: {e}"))?;
    let mut console = Vec::new();
    match wait_for_marker(&rx, &mut console, probe.answer, deadline) {
        Some(at) => println!("ANSWER_MS={}", ms(at - vmm.started)),
        None => {
            println!("ANSWER_MS=timeout");
            print_console_tail(&console);
        }
    }
    let stopped = api_request(
        probe.socket,
        r#"{"command":"stop"}"#,
        Instant::now() + TERM_GRACE,
    );
    let ended = exit_within_grace(&mut vmm).unwrap_or_else(|| match stopped {
        Ok(_) => "killed".into(),
        Err(e) => format!("killed (stop: {e})"),
    });
    println!("EXIT_AFTER_STOP={ended}");
    Ok(())
}

fn elapsed(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("no command given after --")?;
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    println!("ELAPSED_MS={}", ms(started.elapsed()));
    println!(
        "STATUS={}",
        status.code().map_or("signal".into(), |c| c.to_string())
    );
    Ok(())
}

fn seconds(arg: Option<&String>, what: &str) -> Result<Duration, String> {
    arg.and_then(|a| a.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{what}: expected a number of seconds"))
}

fn run(args: &[String]) -> Result<(), String> {
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or("missing -- before the command")?;
    let (opts, cmd) = (&args[..sep], &args[sep + 1..]);
    match opts.first().map(String::as_str) {
        Some("boot") if opts.len() == 6 => {
            let ram_mib = opts[5]
                .parse()
                .map_err(|_| format!("RAM_MIB: expected MiB, not {:?}", opts[5]))?;
            let probe = BootProbe {
                timeout: seconds(opts.get(1), "TIMEOUT_S")?,
                marker: &opts[2],
                prompt: &opts[3],
                settle: seconds(opts.get(4), "SETTLE_S")?,
                ram_mib,
            };
            boot(&probe, cmd)
        }
        Some("kvmrun") if opts.len() == 3 => kvmrun(seconds(opts.get(1), "TIMEOUT_S")?, &opts[2], cmd),
        Some("restore") if opts.len() == 5 => {
            let probe = RestoreProbe {
                timeout: seconds(opts.get(1), "TIMEOUT_S")?,
                socket: &opts[2],
                command: &opts[3],
                answer: &opts[4],
            };
            restore(&probe, cmd)
        }
        Some("elapsed") if opts.len() == 1 => elapsed(cmd),
        _ => Err("usage: oxbench-time boot TIMEOUT_S MARKER PROMPT SETTLE_S RAM_MIB -- CMD... | kvmrun TIMEOUT_S LOG -- CMD... | restore TIMEOUT_S API_SOCKET COMMAND ANSWER -- CMD... | elapsed -- CMD...".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbench-time: error: {e}");
            ExitCode::FAILURE
        }
    }
}
