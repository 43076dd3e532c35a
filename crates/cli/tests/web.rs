//! The browser's side of the TLS listener (docs/remote.md): a private oxvirtd with `--listen
//! 127.0.0.1:PORT`, reached by curl (raw HTTP: status codes, headers and cookies) and by a real
//! WebSocket client over rustls, with real QEMU guests.
//!
//! - sessions: a login sets an HttpOnly, Secure, SameSite=Strict cookie; the cookie reads; a
//!   write needs the session's CSRF token and refuses a foreign Origin; a read-only user's
//!   session cannot write; logout (and a deleted user) ends the session; wrong passwords are
//!   rate-limited as for HTTP Basic;
//! - WebSockets: the serial console (the guest's boot marker, `uname -r` typed in and its
//!   answer) and the graphical console (the RFB banner of QEMU's VNC server, through a client
//!   connection oxvirtd handed to QEMU itself); a foreign Origin, a read-only role, a missing
//!   domain, one not running and one without VNC are refused before the upgrade;
//! - the web UI's files without credentials, with their security headers (or the 503 page when
//!   web/dist was not built), while the API still needs credentials;
//! - bad input: malformed and oversized JSON, upload names leaving the pool, an upload larger
//!   than its pool (an 8 MiB tmpfs): clear JSON errors, nothing written, no partial file; an
//!   idle TLS connection is closed.

#[allow(dead_code)]
mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxvirt_testkit::{guest_kit, BOOT_MARKER, PROMPT};
use support::{entries, free_port, guest_xml, make_disk, Daemon};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::http::HeaderValue;
use tungstenite::Message;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const GUEST_UUID: &str = "5b0c7e2d-3f1a-4d6b-8c9e-0a1b2c3d4e5f";
const PLAIN_UUID: &str = "6c1d8f3e-4a2b-4e7c-9d0f-1b2c3d4e5f60";

/// What curl saw: the status, the response's head (lower-cased names kept as sent) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if the response has it.
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The message of a JSON error reply.
    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {self:?}"))
            .to_string()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A daemon serving TLS on a free port of 127.0.0.1.
struct Web {
    daemon: Daemon,
    port: u16,
}

impl Web {
    fn start() -> Web {
        let port = free_port();
        let daemon = Daemon::start_with(&["--listen", &format!("127.0.0.1:{port}")]);
        Web { daemon, port }
    }

    fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// METHOD PATH with `headers` and an optional JSON body, through curl.
    fn http(&self, method: &str, path: &str, headers: &[String], body: Option<&str>) -> Reply {
        let dir = tempfile::tempdir().expect("tempdir");
        let head_file = dir.path().join("head");
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--insecure", "--max-time", "60"])
            .arg("--dump-header")
            .arg(&head_file)
            .args(["--write-out", "\nSTATUS=%{http_code}", "--request", method]);
        if let Some(body) = body {
            let body_file = dir.path().join("body");
            std::fs::write(&body_file, body).expect("write body");
            command
                .args([
                    "--header",
                    "Content-Type: application/json",
                    "--data-binary",
                ])
                .arg(format!("@{}", body_file.display()));
        }
        for header in headers {
            command.args(["--header", header]);
        }
        let out = command
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once("\nSTATUS=").unwrap_or_else(|| {
            panic!(
                "curl {method} {path}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Reply {
            status: status.trim().parse().expect("a status"),
            head: std::fs::read_to_string(&head_file).unwrap_or_default(),
            body: body.to_string(),
        }
    }

    /// `POST /v1/session` with this user and password.
    fn try_login(&self, user: &str, password: &str) -> Reply {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        self.http("POST", "/v1/session", &[], Some(&body))
    }

    /// Logs `user` in: the cookie's value and the session's JSON.
    fn login(&self, user: &str, password: &str) -> (String, serde_json::Value, Reply) {
        let reply = self.try_login(user, password);
        assert_eq!(reply.status, 200, "{reply:?}");
        let cookie = reply.header("set-cookie").expect("a Set-Cookie");
        let value = cookie
            .strip_prefix("oxvirt_session=")
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("{cookie}"))
            .to_string();
        (value, reply.json(), reply)
    }

    fn token(&self, role: &str) -> String {
        let out = self
            .daemon
            .oxvirt(&["token", "create", "--role", role])
            .ok();
        out.lines().next().expect("a token line").trim().to_string()
    }
}

fn cookie(value: &str) -> String {
    format!("Cookie: oxvirt_session={value}")
}

/// The number of tokens the daemon has (read over its Unix socket).
fn token_count(daemon: &Daemon) -> usize {
    daemon
        .oxvirt(&["token", "list"])
        .ok()
        .lines()
        .filter(|l| l.contains("read-only") || l.contains("admin"))
        .count()
}

#[test]
fn browser_sessions_need_their_csrf_token_and_their_own_origin() {
    let web = Web::start();
    web.daemon.add_user("ann", "admin", "ann-password");
    web.daemon
        .add_user("viewer", "read-only", "viewer-password");

    // A wrong password: 401, JSON, and no Basic challenge (a browser would pop up its own).
    let wrong = web.try_login("ann", "wrong");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.json()["code"], "unauthorized", "{wrong:?}");
    let challenge = wrong.header("www-authenticate").expect("a challenge");
    assert!(!challenge.contains("Basic"), "{challenge}");
    assert!(wrong.header("set-cookie").is_none(), "{wrong:?}");
    // The page's first look for a session, and a page's fetch once its cookie expired: 401
    // without a Basic challenge too; curl without credentials still gets one.
    let first_look = web.http(
        "GET",
        "/v1/session",
        &["Sec-Fetch-Mode: cors".to_string()],
        None,
    );
    assert_eq!(first_look.status, 401, "{first_look:?}");
    let fetch = web.http(
        "GET",
        "/v1/domains",
        &["Sec-Fetch-Mode: cors".to_string()],
        None,
    );
    assert_eq!(fetch.status, 401, "{fetch:?}");
    let plain = web.http("GET", "/v1/domains", &[], None);
    assert_eq!(plain.status, 401, "{plain:?}");
    for (reply, basic) in [(&first_look, false), (&fetch, false), (&plain, true)] {
        let challenge = reply.header("www-authenticate").expect("a challenge");
        assert_eq!(challenge.contains("Basic"), basic, "{reply:?}");
    }
    // A login from another site's page (login CSRF): refused before the password is checked.
    let foreign = web.http(
        "POST",
        "/v1/session",
        &["Origin: https://evil.example".to_string()],
        Some(r#"{"user":"ann","password":"ann-password"}"#),
    );
    assert_eq!(foreign.status, 403, "{foreign:?}");
    assert!(foreign.header("set-cookie").is_none(), "{foreign:?}");
    let malformed = web.http("POST", "/v1/session", &[], Some("{\"user\": "));
    assert_eq!(malformed.status, 400, "{malformed:?}");
    assert!(
        malformed.message().contains("not valid JSON"),
        "{malformed:?}"
    );

    // The login: the cookie's attributes, and the session's JSON.
    let (session, info, reply) = web.login("ann", "ann-password");
    let set_cookie = reply.header("set-cookie").expect("Set-Cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=1800",
    ] {
        assert!(
            set_cookie.split("; ").any(|a| a == attribute),
            "{attribute} not in {set_cookie}"
        );
    }
    assert_eq!(session.len(), 43, "32 random bytes in base64url: {session}");
    assert_eq!(info["user"], "ann");
    assert_eq!(info["role"], "admin");
    let csrf = info["csrf_token"].as_str().expect("csrf_token").to_string();
    assert!(csrf.len() >= 32 && csrf != session, "{info}");
    let expires = info["expires"].as_str().expect("expires");
    assert!(
        expires.len() == 20 && expires.ends_with('Z') && expires.as_bytes()[10] == b'T',
        "RFC 3339: {expires}"
    );

    // The cookie reads, and tells the page its session again.
    let listed = web.http("GET", "/v1/domains", &[cookie(&session)], None);
    assert_eq!(listed.status, 200, "{listed:?}");
    let again = web.http("GET", "/v1/session", &[cookie(&session)], None);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["csrf_token"], csrf.as_str());
    assert_eq!(again.json()["user"], "ann");

    // A write with the cookie alone (what a foreign page's form or fetch would send): refused,
    // nothing made; a wrong token, or the right one from a foreign Origin, too.
    let tokens = token_count(&web.daemon);
    let create = r#"{"role":"read-only","name":"from-the-browser"}"#;
    let make_token = |headers: &[String]| web.http("POST", "/v1/tokens", headers, Some(create));
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let refused = make_token(&[cookie(&session)]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.message().contains("missing CSRF token"),
        "{refused:?}"
    );
    let refused = make_token(&[cookie(&session), format!("X-CSRF-Token: {session}")]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("wrong CSRF token"), "{refused:?}");
    let refused = make_token(&[
        cookie(&session),
        csrf_header.clone(),
        "Origin: https://evil.example".to_string(),
    ]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("Origin 'https://evil.example'"),
        "{refused:?}"
    );
    assert_eq!(
        token_count(&web.daemon),
        tokens,
        "a refused write changed nothing"
    );
    // With its token, from its own origin (or none): done.
    let made = make_token(&[
        cookie(&session),
        csrf_header.clone(),
        format!("Origin: {}", web.origin()),
    ]);
    assert_eq!(made.status, 200, "{made:?}");
    let made = make_token(&[cookie(&session), csrf_header.clone()]);
    assert_eq!(made.status, 200, "{made:?}");
    assert_eq!(token_count(&web.daemon), tokens + 2);
    // A token in the Authorization header needs no CSRF token (it is not sent by itself).
    let admin = web.token("admin");
    let made = make_token(&[format!("Authorization: Bearer {admin}")]);
    assert_eq!(made.status, 200, "{made:?}");

    // A read-only user's session reads, and may not write even with its token.
    let (viewer, viewer_info, _) = web.login("viewer", "viewer-password");
    assert_eq!(viewer_info["role"], "read-only");
    let viewer_csrf = format!(
        "X-CSRF-Token: {}",
        viewer_info["csrf_token"].as_str().expect("csrf")
    );
    assert_eq!(
        web.http("GET", "/v1/domains", &[cookie(&viewer)], None)
            .status,
        200
    );
    let refused = make_token(&[cookie(&viewer), viewer_csrf.clone()]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("read-only role may not"),
        "{refused:?}"
    );
    // A user deleted since the login: its session ends at once.
    web.daemon.oxvirt(&["user", "del", "viewer"]).ok();
    let ended = web.http("GET", "/v1/domains", &[cookie(&viewer)], None);
    assert_eq!(ended.status, 401, "{ended:?}");

    // Logout: 204, the cookie cleared, and the old cookie no longer works.
    let out = web.http(
        "DELETE",
        "/v1/session",
        &[cookie(&session), csrf_header.clone()],
        None,
    );
    assert_eq!(out.status, 204, "{out:?}");
    let cleared = out.header("set-cookie").expect("Set-Cookie");
    assert!(
        cleared.starts_with("oxvirt_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for path in ["/v1/domains", "/v1/session"] {
        let gone = web.http("GET", path, &[cookie(&session)], None);
        assert_eq!(gone.status, 401, "{path}: {gone:?}");
        assert!(gone.body.contains("session has ended"), "{gone:?}");
    }
    let none = web.http("GET", "/v1/session", &[], None);
    assert_eq!(none.status, 401, "{none:?}");

    // Wrong passwords at the login count as HTTP Basic's do: 429 after 5 a minute (the one at
    // the start was the first).
    for attempt in 1..5 {
        let reply = web.try_login("ann", "nope");
        assert_eq!(reply.status, 401, "attempt {attempt}: {reply:?}");
    }
    let limited = web.try_login("ann", "ann-password");
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
type Socket = tungstenite::WebSocket<Tls>;

/// A TLS connection to the daemon, its certificate trusted as the CLI's `--ca` does.
fn tls(web: &Web) -> Tls {
    let pem = std::fs::read(web.daemon.dir.path().join("state/tls/server.pem")).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect(("127.0.0.1", web.port)).expect("connect");
    rustls::StreamOwned::new(connection, tcp)
}

use rustls::pki_types::pem::PemObject as _;

/// A WebSocket to `path` with `headers`; the HTTP status of a refusal otherwise.
fn websocket(web: &Web, path: &str, headers: &[(&str, &str)]) -> Result<Socket, (u16, String)> {
    let url = format!("wss://127.0.0.1:{}{path}", web.port);
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match tungstenite::client(request, tls(web)) {
        Ok((socket, response)) => {
            let offered = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"));
            if offered {
                assert_eq!(
                    response
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok()),
                    Some("binary")
                );
            }
            // Reads give up after a while, so waits below stay bounded.
            socket
                .get_ref()
                .sock
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("read timeout");
            Ok(socket)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(err) => panic!("WebSocket to {path}: {err}"),
    }
}

/// Reads binary frames until their bytes, from `from` on, hold `pattern`; everything read.
fn read_until(socket: &mut Socket, seen: &mut Vec<u8>, from: usize, pattern: &str) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let text = String::from_utf8_lossy(&seen[from.min(seen.len())..]).into_owned();
        if text.contains(pattern) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "'{pattern}' not seen through the WebSocket: {text}"
        );
        match socket.read() {
            Ok(Message::Binary(bytes)) => seen.extend_from_slice(&bytes),
            Ok(Message::Close(_)) => panic!("the WebSocket closed: {text}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => panic!("reading the WebSocket: {err}: {text}"),
        }
    }
}

fn vnc_guest_xml(name: &str, uuid: &str, disk: &Path) -> String {
    guest_xml(name, uuid, &guest_kit(), disk, 1).replace(
        "</devices>",
        "  <graphics type='vnc'/>\n    <video><model type='vga'/></video>\n  </devices>",
    )
}

#[test]
fn the_consoles_over_websockets_reach_the_guest_and_refuse_foreign_pages() {
    let web = Web::start();
    let daemon = &web.daemon;
    let disk = make_disk(daemon.dir.path(), "vm.img", 8192);
    daemon
        .define("vm.xml", &vnc_guest_xml("vm", GUEST_UUID, &disk))
        .1
        .ok();
    let admin = format!("Bearer {}", web.token("admin"));
    let read_only = format!("Bearer {}", web.token("read-only"));
    let origin = web.origin();
    let own = [
        ("Authorization", admin.as_str()),
        ("Origin", origin.as_str()),
    ];

    // Refused before any upgrade: a missing domain, one not running, no credentials.
    let (status, body) = websocket(&web, "/v1/domains/nothing/console/ws", &own).unwrap_err();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nothing"), "{body}");
    let (status, _) = websocket(&web, "/v1/domains/nothing/vnc/ws", &own).unwrap_err();
    assert_eq!(status, 404);
    for path in ["/v1/domains/vm/console/ws", "/v1/domains/vm/vnc/ws"] {
        let (status, body) = websocket(&web, path, &own).unwrap_err();
        assert_eq!(status, 409, "{path}: {body}");
        assert!(body.contains("not running"), "{path}: {body}");
        let (status, _) = websocket(&web, path, &[]).unwrap_err();
        assert_eq!(status, 401, "{path}");
    }

    daemon.oxvirt(&["start", "vm"]).ok();
    // A running guest without a VNC display has no graphical console to open.
    let plain_disk = make_disk(daemon.dir.path(), "plain.img", 8192);
    daemon
        .define(
            "plain.xml",
            &guest_xml("plain", PLAIN_UUID, &guest_kit(), &plain_disk, 1),
        )
        .1
        .ok();
    daemon.oxvirt(&["start", "plain"]).ok();
    let (status, body) = websocket(&web, "/v1/domains/plain/vnc/ws", &own).unwrap_err();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no VNC graphics"), "{body}");
    daemon.oxvirt(&["destroy", "plain"]).ok();
    for path in ["/v1/domains/vm/console/ws", "/v1/domains/vm/vnc/ws"] {
        // A page of another site, with valid credentials all the same: refused.
        let (status, body) = websocket(
            &web,
            path,
            &[
                ("Authorization", admin.as_str()),
                ("Origin", "https://evil.example"),
            ],
        )
        .unwrap_err();
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("evil.example"), "{body}");
        // A read-only role may not type into the guest.
        let (status, body) =
            websocket(&web, path, &[("Authorization", read_only.as_str())]).unwrap_err();
        assert_eq!(status, 403, "{path}: {body}");
    }

    // The serial console: the guest's boot, then a command typed in binary and in text frames.
    let mut console = websocket(&web, "/v1/domains/vm/console/ws", &own).expect("console");
    let mut seen = Vec::new();
    read_until(&mut console, &mut seen, 0, BOOT_MARKER);
    read_until(&mut console, &mut seen, 0, PROMPT);
    let from = seen.len();
    console
        .send(Message::Binary(b"uname -r\n".to_vec().into()))
        .expect("send");
    let version = guest_kit().kernel_version;
    read_until(&mut console, &mut seen, from, &format!("{version}\r\n"));
    let from = seen.len();
    console
        .send(Message::Text("echo WS-$((6*7))\n".into()))
        .expect("send");
    read_until(&mut console, &mut seen, from, "WS-42");
    console.close(None).expect("close");

    // The graphical console, from a browser session (the cookie authenticates a WebSocket as
    // any request), noVNC's subprotocol offered: QEMU's RFB banner comes first.
    web.daemon.add_user("ann", "admin", "ann-password");
    let (session, _, _) = web.login("ann", "ann-password");
    let session_cookie = format!("oxvirt_session={session}");
    let mut vnc = websocket(
        &web,
        "/v1/domains/vm/vnc/ws",
        &[
            ("Cookie", session_cookie.as_str()),
            ("Origin", origin.as_str()),
            ("Sec-WebSocket-Protocol", "binary"),
        ],
    )
    .expect("vnc");
    let mut banner = Vec::new();
    read_until(&mut vnc, &mut banner, 0, "RFB 003.008\n");
    assert!(banner.starts_with(b"RFB 003.008\n"), "{banner:?}");
    // Answering with the same version gets the security types: the relay carries both ways.
    vnc.send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
        .expect("send");
    let from = banner.len();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while banner.len() == from {
        assert!(
            Instant::now() < deadline,
            "no security types from the VNC server"
        );
        match vnc.read() {
            Ok(Message::Binary(bytes)) => banner.extend_from_slice(&bytes),
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => panic!("reading the VNC WebSocket: {err}"),
        }
    }
    // At least one security type (a count, then the types; no password here: None is one).
    let count = banner[from];
    assert!(count >= 1, "{:?}", &banner[from..]);
    vnc.close(None).expect("close");
    daemon.oxvirt(&["destroy", "vm"]).ok();
}

/// A file the server sent, as bytes (curl's output can be binary).
fn fetch(web: &Web, path: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "60"])
        .arg("--dump-header")
        .arg(&head)
        .arg("--output")
        .arg(&body)
        .args(["--write-out", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{}{path}", web.port))
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a status");
    (
        status,
        std::fs::read_to_string(&head).unwrap_or_default(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header_of(head: &str, name: &str) -> Option<String> {
    Reply {
        status: 0,
        head: head.to_string(),
        body: String::new(),
    }
    .header(name)
}

#[test]
fn the_web_ui_is_served_without_credentials_and_the_api_still_needs_them() {
    let web = Web::start();
    let dist = oxvirt_testkit::workspace_root().join("web/dist");
    let (status, head, body) = fetch(&web, "/");
    if dist.join("index.html").exists() {
        // Built: index.html as it is in web/dist, with the UI's security headers.
        assert_eq!(status, 200, "{head}");
        assert_eq!(
            body,
            std::fs::read(dist.join("index.html")).expect("index.html")
        );
        assert_eq!(
            header_of(&head, "content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            header_of(&head, "content-security-policy").as_deref(),
            Some(
                "default-src 'self'; connect-src 'self' wss:; img-src 'self' data:; \
                 style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            )
        );
        assert_eq!(
            header_of(&head, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header_of(&head, "referrer-policy").as_deref(),
            Some("no-referrer")
        );
        // Every built asset, byte for byte; the hashed ones cached for good.
        let assets = std::fs::read_dir(dist.join("assets")).expect("web/dist/assets");
        let mut served = 0;
        for entry in assets {
            let path = entry.expect("entry").path();
            if !path.is_file() {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8");
            let (status, head, body) = fetch(&web, &format!("/assets/{name}"));
            assert_eq!(status, 200, "{name}: {head}");
            assert_eq!(body, std::fs::read(&path).expect("read"), "{name}");
            if name.ends_with(".js") {
                assert_eq!(
                    header_of(&head, "content-type").as_deref(),
                    Some("text/javascript; charset=utf-8"),
                    "{name}"
                );
            }
            let stem = name.split('.').next().unwrap_or(name);
            if stem
                .rsplit_once('-')
                .is_some_and(|(_, hash)| hash.len() == 8)
            {
                assert!(
                    header_of(&head, "cache-control").is_some_and(|c| c.contains("immutable")),
                    "{name}: {head}"
                );
            }
            served += 1;
        }
        assert!(served > 0, "web/dist/assets is empty");
    } else {
        // Not built: oxvirtd says how to build it.
        assert_eq!(status, 503, "{head}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "the web UI was not built: run scripts/setup.sh\n"
        );
        assert_eq!(
            header_of(&head, "content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    let (status, _, _) = fetch(&web, "/assets/no-such-file.js");
    assert_eq!(status, 404);
    // The files need no credentials; the API and the metrics still do.
    for path in ["/v1/domains", "/metrics", "/v1/version", "/elsewhere"] {
        let (status, head, _) = fetch(&web, path);
        assert_eq!(status, 401, "{path}: {head}");
    }
}

/// A tmpfs of 8 MiB mounted on a directory of the test, unmounted when dropped.
struct SmallMount {
    dir: std::path::PathBuf,
}

impl SmallMount {
    fn new(dir: &Path) -> SmallMount {
        std::fs::create_dir(dir).expect("mount point");
        oxvirt_testkit::process::ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=8m,mode=0755",
                "oxvirt-test-pool",
                dir.to_str().expect("utf-8"),
            ],
        );
        SmallMount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn bad_input_gets_a_clear_json_error_and_changes_nothing() {
    let web = Web::start();
    let daemon = &web.daemon;
    let admin = format!("Authorization: Bearer {}", web.token("admin"));
    let tokens = token_count(daemon);

    // Malformed JSON and a body over the limit: 400 and 413, JSON errors naming the problem.
    let post = |body: &str| {
        web.http(
            "POST",
            "/v1/tokens",
            std::slice::from_ref(&admin),
            Some(body),
        )
    };
    let huge = format!(
        "{{\"role\":\"admin\",\"name\":\"{}\"}}",
        "x".repeat(oxvirt_api::MAX_REQUEST_BYTES + 1024)
    );
    for (body, status, code, text) in [
        ("{\"role\": ", 400, "bad_request", "not valid JSON"),
        (huge.as_str(), 413, "too_large", "larger than"),
    ] {
        let reply = post(body);
        assert_eq!(reply.status, status, "{reply:?}");
        assert_eq!(reply.json()["code"], code);
        assert!(reply.message().contains(text), "{reply:?}");
    }
    assert_eq!(token_count(daemon), tokens, "nothing was made");

    // A pool of 8 MiB (a tmpfs), and a volume of 1 MiB in it.
    let mount = SmallMount::new(&daemon.dir.path().join("pool"));
    let pool = mount.dir.to_str().expect("utf-8").to_string();
    daemon
        .oxvirt(&["pool-define-as", "small", "dir", "--target", &pool])
        .ok();
    daemon.oxvirt(&["pool-start", "small"]).ok();
    daemon
        .oxvirt(&[
            "vol-create-as",
            "small",
            "disk.raw",
            "1M",
            "--format",
            "raw",
        ])
        .ok();
    let before = entries(&mount.dir);
    assert_eq!(before, ["disk.raw"]);
    // Names that would leave the pool: refused, nothing written anywhere.
    let data = daemon.dir.path().join("data.bin");
    std::fs::write(&data, vec![0x5a; 64 * 1024]).expect("write");
    let outside = entries(daemon.dir.path());
    let upload = |name: &str, file: &Path| {
        let out = Command::new("curl")
            .args([
                "--silent",
                "--insecure",
                "--max-time",
                "120",
                "--path-as-is",
            ])
            .args(["--request", "PUT", "--header", &admin])
            .args(["--header", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .args(["--write-out", "\nSTATUS=%{http_code}"])
            .arg(format!(
                "https://127.0.0.1:{}/v1/pools/small/volumes/{name}/data",
                web.port
            ))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once("\nSTATUS=").expect("a status");
        (
            status.trim().parse::<u16>().expect("status"),
            body.to_string(),
        )
    };
    for name in ["..%2Fx", "..%2F..%2Fx", "%2Fx", "sub%2Fx", ".."] {
        let (status, body) = upload(name, &data);
        assert_eq!(status, 400, "{name}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("name")),
            "{name}: {body}"
        );
    }
    assert_eq!(entries(&mount.dir), before);
    assert_eq!(
        entries(daemon.dir.path()),
        outside,
        "nothing written beside the pool"
    );

    // An upload larger than the pool's space (16 MiB of bytes that are not zeros, so nothing
    // is left sparse): a clear error, no partial file, the volume as it was.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..16 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8 | 1
        })
        .collect();
    let big_file = daemon.dir.path().join("big.bin");
    std::fs::write(&big_file, &big).expect("write");
    let (status, body) = upload("disk.raw", &big_file);
    assert_eq!(status, 409, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("pool 'small' has no space left")
            && message.contains("'disk.raw'")
            && message.contains("unchanged"),
        "{message}"
    );
    assert_eq!(entries(&mount.dir), before, "the partial file was removed");
    assert_eq!(
        std::fs::metadata(mount.dir.join("disk.raw"))
            .expect("disk.raw")
            .len(),
        1 << 20
    );
    // The daemon goes on, and a fitting upload still works.
    let version = web.http("GET", "/v1/version", std::slice::from_ref(&admin), None);
    assert_eq!(version.status, 200, "{version:?}");
    let (status, body) = upload("disk.raw", &data);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read(mount.dir.join("disk.raw")).expect("read"),
        vec![0x5a; 64 * 1024]
    );
    drop(mount);
}

#[test]
fn an_idle_tls_connection_is_closed() {
    let web = Web::start();
    // Handshake done, then not a byte: the daemon hangs up after its idle timeout.
    let mut stream = tls(&web);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("read timeout");
    let start = Instant::now();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut stream, &mut byte);
    let waited = start.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() != ErrorKind::WouldBlock),
        "{read:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_secs(25) && waited < Duration::from_secs(60),
        "closed after {waited:?}"
    );
    // Others are served meanwhile and after.
    let admin = format!("Authorization: Bearer {}", web.token("admin"));
    assert_eq!(web.http("GET", "/v1/version", &[admin], None).status, 200);
}
