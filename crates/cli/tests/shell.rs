//! The interactive shell (driven through tmux's pseudo-terminal), piped scripts, the completion
//! scripts and the man pages, against a private oxvirtd.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{oxvirt_bin, Daemon};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A domain that is only defined, never started: enough to be listed and completed.
fn define_domain(daemon: &Daemon, name: &str, uuid: &str) {
    let xml = format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
</domain>
"
    );
    daemon.define(&format!("{name}.xml"), &xml).1.ok();
}

/// A tmux server of our own (socket in a tempdir) running one command in a 150x50 terminal.
struct Tmux {
    socket: PathBuf,
    status: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, argv: &[&str], env: &[(&str, &str)]) -> Tmux {
        let socket = dir.join("tmux.sock");
        let status = dir.join("tmux.status");
        let quoted: Vec<String> = argv.iter().map(|arg| format!("'{arg}'")).collect();
        // The exit status goes to a file: the pane disappears with the command.
        let script = format!(
            "{}; echo \"exit=$?\" > '{}'",
            quoted.join(" "),
            status.display()
        );
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&socket).args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "50",
        ]);
        for (key, value) in env {
            command.arg("-e").arg(format!("{key}={value}"));
        }
        let started = command
            .args(["sh", "-c", &script])
            .status()
            .expect("tmux is needed for the shell tests (scripts/setup.sh installs it)");
        assert!(started.success(), "tmux new-session failed");
        Tmux { socket, status }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-200"])
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        // `--` so that typed options are not taken for tmux's.
        self.tmux(&["send-keys", "-l", "--", text]);
    }

    /// Presses keys by tmux's names (`Tab`, `Up`, `Enter`).
    fn press(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    #[track_caller]
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The line the cursor is on (the prompt and what has been typed), without trailing blanks.
    #[track_caller]
    fn wait_for_line(&self, want: &str) {
        self.wait_until(&format!("the input line {want:?}"), |screen| {
            screen
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.trim_end() == want)
        });
    }

    #[track_caller]
    fn wait_exit(&self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(status) = std::fs::read_to_string(&self.status) {
                return status.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the shell did not exit; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

#[test]
fn interactive_shell_completes_recalls_and_quits() {
    let daemon = Daemon::start();
    define_domain(&daemon, "demo-vm", "6b1f6f0e-3a51-4c0e-9f43-2f5d0c7a9e10");
    let cache = daemon.dir.path().join("cache");
    let socket = daemon.socket.to_str().expect("utf-8 path");
    let cache_env = cache.to_str().expect("utf-8 path");
    let bin = oxvirt_bin();
    // --socket before no command at all: it must carry into the shell's commands.
    let tmux = Tmux::start(
        daemon.dir.path(),
        &[bin.to_str().expect("utf-8 path"), "--socket", socket],
        &[
            ("XDG_CACHE_HOME", cache_env),
            ("OXVIRT_SOCKET", "/nonexistent"),
        ],
    );
    tmux.wait_for_line("oxvirt #");

    // A verb completes.
    tmux.type_text("li");
    tmux.press("Tab");
    tmux.wait_for_line("oxvirt # list");
    tmux.type_text("--all");
    tmux.press("Enter");
    tmux.wait_until("list's output", |screen| {
        screen.contains("demo-vm") && screen.contains("shut off")
    });
    tmux.wait_for_line("oxvirt #");

    // A domain name completes from the daemon.
    tmux.type_text("dominfo d");
    tmux.press("Tab");
    tmux.wait_for_line("oxvirt # dominfo demo-vm");
    tmux.press("Enter");
    tmux.wait_until("dominfo's output", |screen| {
        screen.contains("6b1f6f0e-3a51-4c0e-9f43-2f5d0c7a9e10")
    });
    tmux.wait_for_line("oxvirt #");

    // History: up recalls the last command, up again the one before.
    tmux.press("Up");
    tmux.wait_for_line("oxvirt # dominfo demo-vm");
    tmux.press("Up");
    tmux.wait_for_line("oxvirt # list --all");
    tmux.press("Enter");
    tmux.wait_until("list's output twice", |screen| {
        screen.matches("shut off").count() >= 3 // twice in list, once in dominfo
    });

    // A failing command prints its error and the shell goes on; help VERB explains a verb.
    tmux.type_text("dominfo nosuch");
    tmux.press("Enter");
    tmux.wait_until("the error", |screen| screen.contains("error: "));
    tmux.type_text("help dominfo");
    tmux.press("Enter");
    tmux.wait_until("help", |screen| screen.contains("Show domain information"));

    tmux.type_text("quit");
    tmux.press("Enter");
    assert_eq!(tmux.wait_exit(), "exit=0");

    let history = std::fs::read_to_string(cache.join("oxvirt/history")).expect("history file");
    for line in ["list --all", "dominfo demo-vm", "help dominfo", "quit"] {
        assert!(history.lines().any(|saved| saved == line), "{history}");
    }
}

#[test]
fn piped_commands_run_in_order() {
    let daemon = Daemon::start();
    define_domain(&daemon, "piped-vm", "0d2b7c4e-8f1a-4b3c-9d5e-6f7a8b9c0d1e");
    let script = "list --all --name\n\
                  # a comment, then a blank line\n\
                  \n\
                  dominfo nosuch\n\
                  domuuid piped-vm\n\
                  bogus-verb\n\
                  domname 0d2b7c4e-8f1a-4b3c-9d5e-6f7a8b9c0d1e\n";
    let output = pipe_into_shell(&daemon.socket, script);
    assert_eq!(output.code, Some(0), "{output:#?}");
    assert_eq!(
        output.stdout, "piped-vm\n\n0d2b7c4e-8f1a-4b3c-9d5e-6f7a8b9c0d1e\n\npiped-vm\n\n",
        "{output:#?}"
    );
    assert!(
        output.stderr.starts_with("error: "),
        "errors are reported: {output:#?}"
    );
    assert!(output.stderr.contains("bogus-verb"), "{output:#?}");

    // `quit` ends the script; nothing after it runs.
    let output = pipe_into_shell(&daemon.socket, "domuuid piped-vm\nquit\nlist\n");
    assert_eq!(output.code, Some(0), "{output:#?}");
    assert_eq!(output.stdout, "0d2b7c4e-8f1a-4b3c-9d5e-6f7a8b9c0d1e\n\n");

    // `oxvirt shell` is the same.
    let output = pipe_into_shell_with(&daemon.socket, &["shell"], "domname piped-vm\n");
    assert_eq!(output.stdout, "piped-vm\n\n", "{output:#?}");
}

fn pipe_into_shell(socket: &Path, script: &str) -> support::Run {
    pipe_into_shell_with(socket, &[], script)
}

fn pipe_into_shell_with(socket: &Path, args: &[&str], script: &str) -> support::Run {
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
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    let output = child.wait_with_output().expect("wait for oxvirt");
    support::Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn bash_completion_registers_and_completes_domain_names() {
    let bin = oxvirt_bin();
    let bin = bin.to_str().expect("utf-8 path");
    let registered = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{bin}' completion bash); complete -p oxvirt"
        ))
        .output()
        .expect("run bash");
    let printed = String::from_utf8_lossy(&registered.stdout);
    assert!(registered.status.success(), "{registered:?}");
    assert!(
        printed.contains("-F _oxvirt_with_names") && printed.trim_end().ends_with(" oxvirt"),
        "{printed}"
    );

    // What bash's completion would offer after `oxvirt dominfo d<TAB>` and `oxvirt li<TAB>`.
    let daemon = Daemon::start();
    define_domain(&daemon, "bash-vm", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let script = format!(
            "source <('{bin}' completion bash)
COMP_WORDS=('{bin}' {rest}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
_oxvirt_with_names '{bin}' '{cur}' '{prev}'
printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            rest = words[1..]
                .iter()
                .map(|word| format!("'{word}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let output = Command::new("bash")
            .arg("-c")
            .arg(script)
            // The daemon from the line's --socket if it has one, else from the environment.
            .env(
                "OXVIRT_SOCKET",
                if words.contains(&"--socket") {
                    Path::new("/nonexistent")
                } else {
                    &daemon.socket
                },
            )
            .output()
            .expect("run bash");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().to_string())
            .filter(|line| !line.is_empty())
            .collect()
    };
    assert_eq!(complete(&["oxvirt", "dominfo", "b"]), ["bash-vm"]);
    let socket = daemon.socket.to_str().expect("utf-8 path");
    assert_eq!(
        complete(&["oxvirt", "--socket", socket, "start", "--console", ""]),
        ["bash-vm"]
    );
    assert!(complete(&["oxvirt", "li"]).contains(&"list".to_string()));

    for shell in ["zsh", "fish"] {
        let output = Command::new(oxvirt_bin())
            .args(["completion", shell])
            .output()
            .expect("run oxvirt");
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(oxvirt_bin())
        .arg("__man-pages")
        .arg(dir.path())
        .status()
        .expect("run oxvirt");
    assert!(status.success());
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("read the pages")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    pages.sort();
    let names: Vec<String> = pages
        .iter()
        .filter_map(|page| page.file_name()?.to_str().map(str::to_string))
        .collect();
    for want in [
        "oxvirt.1",
        "oxvirt-list.1",
        "oxvirt-dominfo.1",
        "oxvirt-shell.1",
        "oxvirt-img-create.1",
    ] {
        assert!(names.iter().any(|name| name == want), "{want} in {names:?}");
    }
    assert!(
        !names.iter().any(|name| name.contains("__")),
        "hidden helpers get no page: {names:?}"
    );
    for page in &pages {
        let output = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man-db is needed (scripts/setup.sh installs it)");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {output:?}", page.display());
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{}:\n{text}",
            page.display()
        );
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("warning"),
            "{}: {output:?}",
            page.display()
        );
    }
}
