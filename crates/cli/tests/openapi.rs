//! The API against its OpenAPI document (docs/remote.md): a private oxvirtd with
//! `--listen 127.0.0.1:PORT`, its document read at `GET /v1/openapi.json` over TLS, and
//! schemathesis (from PyPI, in the venv `scripts/schemathesis-venv.sh` keeps outside the clone)
//! sending generated requests, valid and invalid, to every operation but the few below (with
//! real objects for the path parameters to name), checking that no reply is a 5xx, that every reply's status is documented, and that every reply's body
//! conforms to the documented schema.
//!
//! The document matching the router route for route is a unit test of the daemon
//! (crates/daemon/src/api/openapi.rs).

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::Command;

use support::Daemon;

/// Operations not fuzzed, by operation id, and why: what they would do cannot be undone inside
/// the test's private daemon, or never answers.
const NOT_FUZZED: &[(&str, &str)] = &[
    (
        "events_events",
        "GET /v1/events: the event stream, a reply that never ends",
    ),
    (
        "admin_set_outputs",
        "PUT /v1/admin/log-outputs: points the daemon's log at files the request names, anywhere on the host",
    ),
    (
        "admin_set_client_limits",
        "PUT /v1/admin/servers/{server}/clients: a max_clients of 0 or 1 locks the test itself out",
    ),
    (
        "users_revoke_token",
        "DELETE /v1/tokens/{id}: revokes the test's own token (id 1)",
    ),
    (
        "node_alloc_pages",
        "POST /v1/node/pages: changes the host's huge page pools, not the test daemon's",
    ),
    (
        "node_set_ksm",
        "POST /v1/node/ksm: changes the host's KSM settings, not the test daemon's",
    ),
    (
        "session_login",
        "POST /v1/session: its failed logins count against the test's own address, after which \
         every request from it is refused with 429 for a minute",
    ),
    (
        "domains_start",
        "POST /v1/domains/{id}/start: would boot the fixture domain under TCG, minutes of a \
         guest this test does not look at (the lifecycle is tested with real guests elsewhere)",
    ),
];

/// The objects the path parameters name (schemathesis' `[parameters]`), made before the run, so
/// that operations reach real objects and their replies' bodies, not only 404s: a defined
/// (inactive) domain, a started directory pool with a volume, a secret.
const DOMAIN: &str = "openapi-vm";
const POOL: &str = "openapi-pool";
const VOLUME: &str = "v1.qcow2";
const SECRET: &str = "5b0f3c2e-8d4a-4e6f-9a1b-7c3d2e1f0a9b";

fn fixtures(daemon: &Daemon) -> String {
    let dir = daemon.dir.path();
    let domain = dir.join("domain.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='kvm'><name>{DOMAIN}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
        ),
    )
    .expect("write the domain's XML");
    daemon
        .oxvirt(&["define", domain.to_str().expect("utf-8")])
        .ok();
    let pool = dir.join("pool");
    std::fs::create_dir(&pool).expect("the pool's directory");
    let pool = pool.to_str().expect("utf-8");
    daemon
        .oxvirt(&["pool-define-as", POOL, "dir", "--target", pool])
        .ok();
    daemon.oxvirt(&["pool-start", POOL]).ok();
    daemon
        .oxvirt(&["vol-create-as", POOL, VOLUME, "1M", "--format", "qcow2"])
        .ok();
    let secret = dir.join("secret.xml");
    std::fs::write(
        &secret,
        format!(
            "<secret ephemeral='no' private='no'><uuid>{SECRET}</uuid>\
             <usage type='volume'><volume>{pool}/{VOLUME}</volume></usage></secret>"
        ),
    )
    .expect("write the secret's XML");
    daemon
        .oxvirt(&["secret-define", secret.to_str().expect("utf-8")])
        .ok();
    format!(
        "[parameters]\n\"path.id\" = \"{DOMAIN}\"\n\"path.pool\" = \"{POOL}\"\n\
         \"path.vol\" = \"{VOLUME}\"\n\"path.uuid\" = \"{SECRET}\"\n"
    )
}

/// Generated requests per operation and phase: enough for each operation's invalid bodies,
/// parameters and methods, and the run stays under a minute on the project's 2-core machines.
const EXAMPLES: &str = "10";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The venv's `st`: the script installs schemathesis on first use (scripts/setup.sh runs it) and
/// prints the venv's directory; the version is kept there only.
fn schemathesis() -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/schemathesis-venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/schemathesis-venv.sh");
    assert!(
        out.status.success(),
        "scripts/schemathesis-venv.sh failed (it installs schemathesis from PyPI):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&venv).join("bin/st")
}

/// curl's body and status for GET URL with a bearer token.
fn get(url: &str, token: &str) -> (String, u16) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "60"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--write-out", "\nSTATUS=%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once("\nSTATUS=").expect("curl's status");
    (body.to_string(), status.trim().parse().expect("a status"))
}

fn token(daemon: &Daemon, role: &str) -> String {
    let out = daemon.oxvirt(&["token", "create", "--role", role]).ok();
    let token = out.lines().next().expect("a token line").trim().to_string();
    assert!(token.starts_with("oxv_"), "{out}");
    token
}

#[test]
fn the_live_api_answers_as_its_openapi_document_says() {
    let st = schemathesis();
    let port = free_port();
    let daemon = Daemon::start_with(&["--listen", &format!("127.0.0.1:{port}")]);
    let url = format!("https://127.0.0.1:{port}/v1/openapi.json");

    // The document is a read: a read-only token gets it, and it is OpenAPI 3.1.
    let (body, status) = get(&url, &token(&daemon, "read-only"));
    assert_eq!(status, 200, "{body}");
    let document: serde_json::Value = serde_json::from_str(&body).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    for (id, why) in NOT_FUZZED {
        assert!(
            body.contains(&format!("\"operationId\":\"{id}\"")),
            "{id} ({why}) is not an operation of the document any more"
        );
    }

    let admin = token(&daemon, "admin");
    let report = tempfile::tempdir().expect("tempdir");
    let config = report.path().join("schemathesis.toml");
    std::fs::write(&config, fixtures(&daemon)).expect("write schemathesis.toml");
    let mut command = Command::new(&st);
    command
        // Its cache of found failures (.schemathesis/) goes into the working directory: the
        // report's, not the repository.
        .current_dir(report.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &url, "--tls-verify", "false", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
        ])
        // Not `stateful`: it would chain a created object's name into every other operation,
        // starting guests and networks (bridges in the host's namespace) from generated data.
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            EXAMPLES,
        ])
        .args(["--request-timeout", "60"])
        // One worker: Python 3.11's parser is not thread-safe under hypothesis ("AST
        // constructor recursion depth mismatch" from two workers), and the machine has 2 cores.
        .args(["--workers", "1"])
        .args(["--report", "junit", "--report-dir"])
        .arg(report.path());
    for (id, _) in NOT_FUZZED {
        command.args(["--exclude-operation-id", id]);
    }
    let out = command.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found replies that break the document (reproduce with the seed it \
         prints):\n{stdout}\n{}\noxvirtd's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    // It did test: every operation but the excluded ones and `GET /v1/openapi.json`, which
    // schemathesis leaves out as the one that served it the document.
    let operations = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |ops| ops.len()))
        .sum::<usize>();
    let tested = format!("Tested: {}", operations - 1 - NOT_FUZZED.len());
    assert!(stdout.contains(&tested), "expected '{tested}':\n{stdout}");
}
