//! The remote API (docs/remote.md): a private oxvirtd with `--listen 127.0.0.1:PORT`, reached
//! over TLS by curl (raw HTTP: status codes and headers) and by `oxvirt --connect` (the CLI as a
//! user runs it, its known_hosts in the test's own configuration directory).
//!
//! - every route of the router (read from `crates/daemon/src/api/`) and `/metrics` refuse a
//!   request without credentials (401 with a challenge), a wrong token too;
//! - a read-only token reads, and every request that changes state gets 403 and changes nothing
//!   (the routes name a real domain, which stays as it was);
//! - trust on first use: the first connection records the fingerprint; oxvirtd restarted with a
//!   new certificate is refused with an error naming the file; `--ca` with the new certificate
//!   works; plain HTTP to the TLS port fails and the daemon goes on;
//! - failed logins from one address and for one user are rate-limited (429, Retry-After);
//! - an admin token runs `list`, `start`, `dominfo` and `console` (the guest's boot marker, and
//!   a command typed into it) over TLS, with a real QEMU guest;
//! - bad input: a port in use, an unreadable certificate: one clear error, exit 1.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{
    field, free_port, guest_xml, make_disk, oxvirt_bin, oxvirtd_bin, ConsoleSession, Daemon, Run,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const UUID: &str = "3c9e2a51-7d4b-4f1e-8a6c-2b5d9e0f1a7c";
const GUEST_UUID: &str = "8e1f4b2c-6a3d-4c5e-9f7a-1b2c3d4e5f60";

/// A daemon serving TLS on a free port of 127.0.0.1, and the directory its clients keep their
/// configuration (known_hosts) in.
struct Remote {
    daemon: Daemon,
    url: String,
    config: tempfile::TempDir,
}

impl Remote {
    fn start() -> Remote {
        let port = free_port();
        let daemon = Daemon::start_with(&["--listen", &format!("127.0.0.1:{port}")]);
        Remote {
            daemon,
            url: format!("https://127.0.0.1:{port}"),
            config: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn known_hosts(&self) -> PathBuf {
        self.config.path().join("oxvirt/known_hosts")
    }

    /// `oxvirt --connect URL args...` with this test's configuration directory.
    fn oxvirt(&self, args: &[&str]) -> Run {
        let mut all = vec!["--connect", self.url.as_str()];
        all.extend_from_slice(args);
        let config = self.config.path().to_str().expect("utf-8 path");
        self.daemon
            .oxvirt_with_env(&all, &[("XDG_CONFIG_HOME", config)])
    }

    /// curl's status code and headers for METHOD PATH, with `auth` as Authorization.
    fn curl(&self, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--insecure", "--max-time", "60"])
            .args(["--output", "/dev/null", "--dump-header", "-"])
            .args(["--write-out", "STATUS=%{http_code}", "--request", method]);
        if method != "GET" {
            command.args(["--header", "Content-Type: application/json", "--data", "{}"]);
        }
        if let Some(auth) = auth {
            command.args(["--header", &format!("Authorization: {auth}")]);
        }
        let out = command
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .rsplit_once("STATUS=")
            .and_then(|(_, code)| code.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "curl {method} {path}: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (status, text)
    }
}

/// Every route of oxvirtd's router, as (method, path with `x` for each parameter): read from the
/// `.route(...)` calls of crates/daemon/src/api/, the lifecycle actions' loop included.
fn routes() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src/api");
    let mut routes = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the daemon's api directory") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for call in text.split(".route(").skip(1) {
            let call = call.trim_start();
            // The route's statement: up to its `;`, or the end of the function it is in.
            let end = call
                .find(";\n")
                .unwrap_or(call.len())
                .min(call.find("\n}").unwrap_or(call.len()));
            let call = &call[..end];
            let paths: Vec<String> = if let Some(rest) = call.strip_prefix('"') {
                vec![rest[..rest.find('"').expect("closing quote")].to_string()]
            } else if call.starts_with("&format!(\"/v1/domains/{{id}}/{}\", action") {
                oxvirt_api::Action::ALL
                    .iter()
                    .map(|a| format!("/v1/domains/{{id}}/{a}"))
                    .collect()
            } else {
                panic!("a route this test cannot read: {call}");
            };
            let methods: Vec<&str> = ["get", "post", "put", "delete"]
                .into_iter()
                .filter(|m| {
                    call.match_indices(&format!("{m}(")).any(|(at, _)| {
                        at == 0
                            || (!call.as_bytes()[at - 1].is_ascii_alphanumeric()
                                && call.as_bytes()[at - 1] != b'_')
                    })
                })
                .collect();
            assert!(!methods.is_empty(), "no method in route {call}");
            for path in &paths {
                let path: String = path
                    .split('/')
                    .map(|s| if s.starts_with('{') { "x" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                for method in &methods {
                    routes.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    routes.sort();
    routes.dedup();
    // The scan found the router, not a handful of lines.
    assert!(routes.len() > 80, "{routes:?}");
    for expected in [
        ("GET", "/metrics"),
        ("GET", "/v1/domains"),
        ("POST", "/v1/domains/x/start"),
        ("POST", "/v1/domains/x/console"),
        ("POST", "/v1/tokens"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {routes:?}"
        );
    }
    routes
}

/// The token `oxvirt token create` printed.
fn token(daemon: &Daemon, role: &str) -> String {
    let out = daemon.oxvirt(&["token", "create", "--role", role]).ok();
    let token = out.lines().next().expect("a token line").trim().to_string();
    assert!(token.starts_with("oxv_"), "{out}");
    token
}

/// The web UI's files (api/web.rs), which need no credentials.
fn web_file(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/assets/")
}

/// The reads a read-only role may send as POST (api/auth.rs READ_POSTS).
fn read_post(path: &str) -> bool {
    path == "/v1/domain-stats" || path == "/v1/domains/x/iothreadinfo"
}

#[test]
fn every_route_needs_credentials_roles_hold_and_the_certificate_is_pinned() {
    let mut remote = Remote::start();
    let daemon = &remote.daemon;
    let disk = make_disk(daemon.dir.path(), "x.img", 8192);
    // A domain named like the routes' parameter: what a refused request would have changed.
    let (xml_file, run) = daemon.define("x.xml", &guest_xml("x", UUID, &guest_kit(), &disk, 1));
    run.ok();
    let before = daemon.oxvirt(&["dumpxml", "x"]).ok();
    let xml_file = xml_file.to_str().expect("utf-8").to_string();

    // No credentials: 401 and a challenge, on every route and on paths no route has; but the
    // web UI's files, which hold no data (api/web.rs; tests/web.rs).
    let routes = routes();
    for (method, path) in routes
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .chain([("GET", "/nothing-here")])
    {
        if web_file(path) {
            let (status, head) = remote.curl(method, path, None);
            assert!([200, 404, 503].contains(&status), "{method} {path}: {head}");
            continue;
        }
        let (status, head) = remote.curl(method, path, None);
        assert_eq!(status, 401, "{method} {path} without credentials: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"oxvirtd\""),
            "{method} {path}: {head}"
        );
    }
    let (status, _) = remote.curl("GET", "/v1/domains", Some("Bearer oxv_1_0000"));
    assert_eq!(status, 401, "a wrong token");

    // A read-only token reads; everything that changes state is refused and changes nothing.
    let read_only = token(daemon, "read-only");
    let ro = format!("Bearer {read_only}");
    let (status, _) = remote.curl("GET", "/v1/domains", Some(&ro));
    assert_eq!(status, 200);
    let (status, _) = remote.curl("GET", "/metrics", Some(&ro));
    assert_eq!(status, 200);
    for (method, path) in &routes {
        // Logging in and out is for every role (api/auth.rs ANY_ROLE; tests/web.rs).
        if method == "GET" || (method == "POST" && read_post(path)) || path == "/v1/session" {
            continue;
        }
        let (status, head) = remote.curl(method, path, Some(&ro));
        assert_eq!(
            status, 403,
            "{method} {path} with a read-only token: {head}"
        );
    }
    for path in [
        "/v1/users",
        "/v1/tokens",
        "/v1/secrets/x/value",
        "/v1/pools/x/volumes/x/data",
    ] {
        assert_eq!(remote.curl("GET", path, Some(&ro)).0, 403, "GET {path}");
    }
    assert_eq!(daemon.oxvirt(&["dumpxml", "x"]).ok(), before);
    assert_eq!(
        field(&daemon.oxvirt(&["dominfo", "x"]).ok(), "State:"),
        "shut off"
    );
    assert!(daemon.oxvirt(&["token", "list"]).ok().contains("read-only"));

    // The CLI over TLS: the first connection trusts and records the certificate.
    let listed = remote.oxvirt(&["--token", &read_only, "list", "--all"]);
    assert_eq!(listed.code, Some(0), "{listed:#?}");
    assert!(listed.stdout.contains(" x "), "{listed:#?}");
    let key = remote.url.trim_start_matches("https://").to_string();
    assert!(
        listed
            .stderr
            .contains(&format!("first connection to {key}")),
        "{listed:#?}"
    );
    let recorded = std::fs::read_to_string(remote.known_hosts()).expect("known_hosts written");
    let fingerprint = recorded
        .strip_prefix(&format!("{key} "))
        .expect("a line for the server")
        .trim()
        .to_string();
    assert_eq!(fingerprint.len(), 95, "{recorded}");
    assert!(listed.stderr.contains(&fingerprint), "{listed:#?}");
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(daemon.dir.path().join("state/tls/server.pem"))
        .output()
        .expect("run openssl");
    assert!(
        String::from_utf8_lossy(&openssl.stdout).contains(&fingerprint),
        "{recorded} vs {}",
        String::from_utf8_lossy(&openssl.stdout)
    );
    let again = remote.oxvirt(&["--token", &read_only, "list", "--all"]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert!(!again.stderr.contains("first connection"), "{again:#?}");
    let refused = remote
        .oxvirt(&["--token", &read_only, "start", "x"])
        .error();
    assert!(refused.contains("read-only role may not POST"), "{refused}");
    let refused = remote
        .oxvirt(&["--token", &read_only, "undefine", "x"])
        .error();
    assert!(refused.contains("read-only"), "{refused}");
    let refused = remote
        .oxvirt(&["--token", &read_only, "define", &xml_file])
        .error();
    assert!(refused.contains("read-only"), "{refused}");
    assert_eq!(daemon.oxvirt(&["dumpxml", "x"]).ok(), before);

    // Plain HTTP to the TLS port: no answer in clear, and the daemon goes on.
    let plain = Command::new("curl")
        .args(["--silent", "--max-time", "20"])
        .arg(format!(
            "{}/v1/version",
            remote.url.replace("https://", "http://")
        ))
        .output()
        .expect("run curl");
    assert!(
        !plain.status.success(),
        "plain HTTP was answered: {plain:?}"
    );
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("daemon"));
    let bad_url = remote
        .daemon
        .oxvirt(&["--connect", &remote.url.replace("https", "http"), "list"])
        .error();
    assert!(bad_url.contains("https://"), "{bad_url}");

    // oxvirtd restarted with a new certificate: refused, naming the file to edit.
    remote.daemon.kill();
    std::fs::remove_dir_all(remote.daemon.dir.path().join("state/tls")).expect("remove tls");
    remote.daemon.launch();
    let changed = remote
        .oxvirt(&["--token", &read_only, "list", "--all"])
        .error();
    assert!(changed.contains("has changed"), "{changed}");
    assert!(
        changed.contains(remote.known_hosts().to_str().expect("utf-8")),
        "{changed}"
    );
    // --ca with the new certificate: trusted (its names include 127.0.0.1).
    let ca = remote.daemon.dir.path().join("state/tls/server.pem");
    let with_ca = remote.oxvirt(&[
        "--token",
        &read_only,
        "--ca",
        ca.to_str().expect("utf-8"),
        "list",
        "--all",
    ]);
    assert_eq!(with_ca.code, Some(0), "{with_ca:#?}");
    // --ca with another certificate (the old pin's file is not a CA): refused.
    let wrong_ca = remote.daemon.dir.path().join("wrong.pem");
    std::fs::write(&wrong_ca, "not a certificate").expect("write");
    let refused = remote
        .oxvirt(&[
            "--token",
            &read_only,
            "--ca",
            wrong_ca.to_str().expect("utf-8"),
            "list",
        ])
        .error();
    assert!(refused.contains("wrong.pem"), "{refused}");

    // Failed logins: 5 a minute per user and per address, then 429 with Retry-After, even for
    // the right password.
    remote.daemon.add_user("ann", "admin", "right-password");
    let basic = |password: &str| {
        use base64::Engine as _;
        let pair = format!("ann:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    assert_eq!(
        remote
            .curl("GET", "/v1/domains", Some(&basic("right-password")))
            .0,
        200
    );
    let listed = cli_with_password(&remote, &ca, "right-password");
    assert_eq!(listed.code, Some(0), "{listed:#?}");
    assert!(listed.stdout.contains(" x "), "{listed:#?}");
    for attempt in 0..5 {
        let (status, head) = remote.curl("GET", "/v1/domains", Some(&basic("wrong")));
        assert_eq!(status, 401, "attempt {attempt}: {head}");
    }
    let (status, head) = remote.curl("GET", "/v1/domains", Some(&basic("wrong")));
    assert_eq!(status, 429, "{head}");
    let retry = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Retry-After in {head}"));
    let retry: u64 = retry.parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        remote
            .curl("GET", "/v1/domains", Some(&basic("right-password")))
            .0,
        429
    );
    // The CLI's password path is refused the same way (stdin is not a terminal: the password
    // is read from it).
    let refused = cli_with_password(&remote, &ca, "right-password");
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("too many failed logins"),
        "{refused:#?}"
    );
}

/// `oxvirt --connect URL --user ann --ca CA list --all`, `password` on its stdin.
fn cli_with_password(remote: &Remote, ca: &Path, password: &str) -> Run {
    let out = Command::new(oxvirt_bin())
        .args(["--connect", &remote.url, "--user", "ann", "--ca"])
        .arg(ca)
        .args(["list", "--all"])
        .env("XDG_CONFIG_HOME", remote.config.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(format!("{password}\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("run oxvirt");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn an_admin_token_runs_list_start_and_console_over_tls() {
    let remote = Remote::start();
    let daemon = &remote.daemon;
    let disk = make_disk(daemon.dir.path(), "vm.img", 8192);
    daemon
        .define(
            "vm.xml",
            &guest_xml("vm", GUEST_UUID, &guest_kit(), &disk, 1),
        )
        .1
        .ok();
    let admin = token(daemon, "admin");

    let listed = remote.oxvirt(&["--token", &admin, "list", "--all"]).ok();
    assert!(
        listed.contains(" vm ") && listed.contains("shut off"),
        "{listed}"
    );
    let started = remote.oxvirt(&["--token", &admin, "start", "vm"]).ok();
    assert!(started.contains("Domain 'vm' started"), "{started}");
    let info = remote.oxvirt(&["--token", &admin, "dominfo", "vm"]).ok();
    assert_eq!(field(&info, "State:"), "running");

    // The console over the upgraded TLS connection: the guest's boot, and a command typed in.
    let config = remote.config.path().to_path_buf();
    let mut console = ConsoleSession::spawn_with_env(
        &daemon.socket,
        &["--connect", &remote.url, "--token", &admin, "console", "vm"],
        &[("XDG_CONFIG_HOME", &config)],
    );
    console.expect_text("Connected to domain 'vm'", BOOT_TIMEOUT);
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    console.send_line("echo REMOTE-$((6*7))");
    console.expect_text("REMOTE-42", BOOT_TIMEOUT);
    // Ctrl-] detaches; the guest runs on.
    assert_eq!(console.detach(), Some(0));
    let listed = remote.oxvirt(&["--token", &admin, "list"]).ok();
    assert!(listed.contains("running"), "{listed}");
    // Users and tokens over TCP, for an admin.
    let tokens = remote.oxvirt(&["--token", &admin, "token", "list"]).ok();
    assert!(tokens.contains("admin"), "{tokens}");
    let destroyed = remote.oxvirt(&["--token", &admin, "destroy", "vm"]).ok();
    assert!(destroyed.contains("destroyed"), "{destroyed}");
}

/// `oxvirtd ARGS` on a fresh state directory, expected to refuse to start: its one error line.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(oxvirtd_bin())
        .arg("--socket")
        .arg(dir.path().join("oxvirtd.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-default-network")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run oxvirtd");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        !dir.path().join("oxvirtd.sock").exists(),
        "the socket was bound before the refusal"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr
        .lines()
        .find(|l| l.starts_with("oxvirtd: error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

#[test]
fn a_port_in_use_or_an_unusable_certificate_stops_oxvirtd_with_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let error = refused_start(&["--listen", &address]);
    assert!(
        error.contains(&format!("cannot listen on {address}")),
        "{error}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").expect("write");
    let missing = dir.path().join("missing.pem");
    let error = refused_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(
        error.contains(&format!("cannot read --tls-cert {}", missing.display())),
        "{error}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").expect("write");
    let error = refused_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        garbage.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(error.contains("holds no PEM certificate"), "{error}");
    let error = refused_start(&["--listen", "nowhere"]);
    assert!(error.contains("key 'listen'"), "{error}");
    let error = refused_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(error.contains("without tls_cert"), "{error}");
}
