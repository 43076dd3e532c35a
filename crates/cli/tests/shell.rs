//! The interactive shell (driven through tmux's pseudo-terminal), piped scripts, the completion
//! scripts and the man pages, against a private oxvirtd.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{oxvirt_bin, oxvirtd_bin, Daemon};

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
        // The exit status goes to a file: the pane disappears with the command. Written aside
        // and renamed, so the test never reads the file between its creation and the write.
        let script = format!(
            "{}; echo \"exit=$?\" > '{status}.part' && mv '{status}.part' '{status}'",
            quoted.join(" "),
            status = status.display()
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
    support::oxvirt_with_input(socket, args, script, Duration::from_secs(120))
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
}

/// Runs `shell -c script` (or a script file) with `oxvirt` in PATH and the daemon's socket in
/// the environment; returns its stdout.
fn run_shell(shell: &str, args: &[&str], daemon: &Daemon) -> String {
    let bin_dir = oxvirt_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(shell)
        .args(args)
        .env("PATH", path)
        .env("OXVIRT_SOCKET", &daemon.socket)
        .env("HOME", daemon.dir.path())
        .output()
        .unwrap_or_else(|err| panic!("{shell}: {err} (scripts/setup.sh installs zsh and fish)"));
    assert!(output.status.success(), "{shell} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// zsh and fish load `oxvirt completion zsh|fish` without error, register it, and complete
/// verbs and, from the daemon, domain names (zsh driven through its own pseudo-terminal
/// module, zpty, since its completion runs only in the line editor).
#[test]
fn zsh_and_fish_completion_register_and_complete_names() {
    let daemon = Daemon::start();
    define_domain(&daemon, "zsh-vm", "2b3c4d5e-6f70-4a8b-9c0d-1e2f3a4b5c6d");
    let compdump = daemon.dir.path().join("zcompdump");
    let compdump = compdump.to_str().expect("utf-8 path");

    let registered = run_shell(
        "zsh",
        &[
            "-f",
            "-c",
            &format!(
                "autoload -U compinit && compinit -u -d '{compdump}'; \
                 source <(oxvirt completion zsh); print -r -- $_comps[oxvirt]"
            ),
        ],
        &daemon,
    );
    assert_eq!(registered.trim(), "_oxvirt_with_names");
    let script = daemon.dir.path().join("drive.zsh");
    std::fs::write(
        &script,
        format!(
            r#"zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -d {compdump}; source <(oxvirt completion zsh)'
for typed in $'oxvirt dominfo zs\t' $'\C-u oxvirt li\t'; do
    zpty -w -n z "$typed"
    sleep 2
done
zpty -w -n z $'\C-u\n'
sleep 1
out=""
while zpty -r -t z line; do out+="$line"; done
zpty -d z
print -r -- "$out" | tr -d '\r'
"#
        ),
    )
    .expect("write the zsh script");
    let screen = run_shell("zsh", &["-f", script.to_str().expect("utf-8")], &daemon);
    assert!(screen.contains("oxvirt dominfo zsh-vm"), "{screen}");
    assert!(screen.contains("oxvirt list"), "{screen}");

    let fish = |command: &str| {
        run_shell(
            "fish",
            &[
                "--no-config",
                "-c",
                &format!("source (oxvirt completion fish | psub); {command}"),
            ],
            &daemon,
        )
    };
    assert!(
        fish("complete -c oxvirt").contains("complete"),
        "fish registered nothing"
    );
    assert!(
        fish("complete -C 'oxvirt dominfo zs'")
            .lines()
            .any(|line| line.split('\t').next() == Some("zsh-vm")),
        "fish completes domain names"
    );
    assert!(fish("complete -C 'oxvirt li'")
        .lines()
        .any(|line| line.starts_with("list")));
}

/// oxvirt's pages (section 1) and oxvirtd's (oxvirtd(8), oxvirtd.conf(5)), as scripts/setup.sh
/// generates them, each rendered by man-db.
#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(oxvirt_bin())
        .arg("__man-pages")
        .arg(dir.path())
        .status()
        .expect("run oxvirt");
    assert!(status.success());
    let status = Command::new(oxvirtd_bin())
        .arg("__man-pages")
        .arg(dir.path())
        .status()
        .expect("run oxvirtd");
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
        "oxvirtd.8",
        "oxvirtd.conf.5",
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

    // oxvirtd.conf(5) comes from oxvirtd's key table; the installed example file must name
    // the same keys (and the page every one of the example's).
    let conf_page = std::fs::read_to_string(dir.path().join("oxvirtd.conf.5")).expect("page");
    let page_keys: Vec<&str> = conf_page
        .lines()
        .filter_map(|line| line.strip_prefix(".B "))
        .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/oxvirtd.conf"),
    )
    .expect("etc/oxvirtd.conf");
    let example_keys: Vec<&str> = example
        .lines()
        .filter_map(|line| line.strip_prefix('#')?.split_once(" = "))
        .map(|(key, _)| key)
        .collect();
    assert!(page_keys.len() > 10, "{page_keys:?}");
    let mut sorted_page = page_keys.clone();
    sorted_page.sort();
    let mut sorted_example = example_keys.clone();
    sorted_example.sort();
    assert_eq!(
        sorted_page, sorted_example,
        "oxvirtd.conf(5) and etc/oxvirtd.conf"
    );
}
