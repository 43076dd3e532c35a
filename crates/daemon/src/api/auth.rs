//! Who may do what over TCP (docs/remote.md): every request on the TLS listener carries a
//! token (`Authorization: Bearer`) or a user's password (HTTP Basic); without valid ones it is
//! refused with 401. A read-only role reads: GET and HEAD, except the routes in
//! [`ADMIN_ONLY`]; anything else changes state and needs the admin role (403 otherwise), except
//! the reads sent as POST in [`READ_POSTS`]. Failed logins are counted per client address and
//! per user: after [`MAX_FAILURES`] in [`WINDOW`], 429 with Retry-After until the oldest ages
//! out. The Unix socket (root only) does not pass through here.
//!
//! Browsers log in once (`POST /v1/session`, [`routes`]; the sessions are api/session.rs's) and
//! then send the session cookie
//! instead: a request with that cookie and no Authorization header is its session's user's,
//! and, since a browser attaches the cookie to whatever a foreign page makes it send, every one
//! of them that is not GET or HEAD must carry the session's CSRF token and, when it has an
//! Origin, come from this server's own. WebSocket upgrades must come from this server's Origin
//! too (a browser sends one with every WebSocket). The web UI's static files need nothing
//! ([`public`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use oxvirt_api::{code, ApiError, LoginRequest, Role, CSRF_HEADER};
use subtle::ConstantTimeEq as _;

use super::reply::Failure;
use super::session::{self, SessionId, Sessions};
use crate::services::users::Users;
use crate::services::Services;

/// Browser sessions: logging in and out (api/session.rs has the sessions themselves).
pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/session", post(login).get(current).delete(logout))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(login, current, logout))]
pub(super) struct Doc;

/// The address of the TCP client that sent a request (put there by `remote.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// This host's address a TCP client's request came to (put there by `remote.rs`): where an
/// incoming migration from that client listens (services/migration_tcp.rs).
#[derive(Debug, Clone, Copy)]
pub struct Local(pub IpAddr);

/// Failed logins allowed per address and per user in [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Reads that need the admin role all the same: users and tokens, secrets' values and volumes'
/// contents (vol-download), as libvirt's read-only connections may read neither. `*` is one
/// path segment.
pub const ADMIN_ONLY: &[&str] = &[
    "/v1/domains/*/console/ws",
    "/v1/domains/*/vnc/ws",
    "/v1/users",
    "/v1/users/*",
    "/v1/users/*/password",
    "/v1/tokens",
    "/v1/tokens/*",
    "/v1/secrets/*/value",
    "/v1/pools/*/volumes/*/data",
];

/// Reads that are sent as POST (their request has a body) and change nothing, so a read-only
/// role may send them: domstats and iothreadinfo. Everything else that is not GET or HEAD is a
/// write, the console (`POST /v1/domains/{id}/console`) and the monitor passthrough (`POST
/// /v1/domains/{id}/monitor`) included.
pub const READ_POSTS: &[&str] = &["/v1/domain-stats", "/v1/domains/*/iothreadinfo"];

/// Logging in and out, which any role may do.
pub const ANY_ROLE: &[&str] = &["/v1/session"];

/// The challenge of a 401: both schemes oxvirtd accepts.
const CHALLENGE: &str = "Bearer realm=\"oxvirtd\", Basic realm=\"oxvirtd\", charset=\"UTF-8\"";
/// The challenge of a 401 to a browser's page (a session that ended, a failed login): without
/// Basic, which would make the browser pop up its own password dialog over the page's.
const BROWSER_CHALLENGE: &str = "Bearer realm=\"oxvirtd\"";

/// Whether a request needs no credentials: the web UI's files (they hold no data) and the
/// login itself (which checks its password, rate-limited, in api/session.rs).
fn public(method: &Method, path: &str) -> bool {
    (*method == Method::POST && path == "/v1/session")
        || ((*method == Method::GET || *method == Method::HEAD)
            && (path == "/" || path == "/index.html" || path.starts_with("/assets/")))
}

/// Whether a browser sent `request` from a page's script (fetch, XHR, EventSource, WebSocket:
/// `Sec-Fetch-Mode` other than `navigate`). A 401 to it offers no Basic challenge, which would
/// make the browser pop up its own password dialog over the UI's login (a session that
/// expired while the page was open); curl, the CLI and a typed URL still get it.
fn from_page_script(request: &Request) -> bool {
    request
        .headers()
        .get("sec-fetch-mode")
        .is_some_and(|mode| mode.as_bytes() != b"navigate")
}

/// Whether `path` matches `pattern` (`*`: any one segment).
fn matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut q = path.split('/');
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some("*"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether a role may send `method` to `path`.
pub fn allowed(role: Role, method: &Method, path: &str) -> bool {
    if ANY_ROLE.contains(&path) {
        return true;
    }
    match role {
        Role::Admin => true,
        Role::ReadOnly => {
            if ADMIN_ONLY.iter().any(|p| matches(p, path)) {
                return false;
            }
            *method == Method::GET
                || *method == Method::HEAD
                || (*method == Method::POST && READ_POSTS.iter().any(|p| matches(p, path)))
        }
    }
}

/// The authentication state of the TLS listener: the users and tokens, and recent failures.
pub struct Auth {
    users: Arc<Users>,
    failures: Mutex<Failures>,
    sessions: Sessions,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

/// Recent failed logins per address and per user.
#[derive(Default)]
struct Failures {
    recent: HashMap<Key, VecDeque<Instant>>,
}

impl Failures {
    /// How long `key` must wait, if it has used up its failures.
    fn wait(&mut self, key: &Key, now: Instant) -> Option<Duration> {
        let times = self.recent.get_mut(key)?;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return None;
        }
        times
            .front()
            .map(|oldest| WINDOW.saturating_sub(now.duration_since(*oldest)))
    }

    fn record(&mut self, key: Key, now: Instant) {
        // Bounded memory: forget keys whose failures all aged out before adding more.
        if self.recent.len() > 10_000 {
            self.recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let times = self.recent.entry(key).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

/// What a request presented.
pub(crate) enum Presented {
    Token(String),
    Password { user: String, password: String },
}

fn presented(request: &Request) -> Option<Presented> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Presented::Token(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(Presented::Password {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    None
}

fn refusal(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(ApiError::new(code, message))).into_response()
}

pub(crate) fn forbidden(message: String) -> Response {
    refusal(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
}

pub(crate) fn internal(message: String) -> Response {
    refusal(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
}

/// A 401 with its challenge; `basic` offers HTTP Basic too (not to browsers' pages).
pub(crate) fn unauthorized(message: &str, basic: bool) -> Response {
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHORIZED,
        message.to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(if basic { CHALLENGE } else { BROWSER_CHALLENGE }),
    );
    response
}

/// Refuses a request whose `Origin` header, when it has one, is not this server's own
/// (`https://` and the Host the request was sent to): a page of another site. The reason, for
/// a 403 ([`forbidden`]).
pub(crate) fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_text = String::from_utf8_lossy(origin.as_bytes());
    match host {
        Some(host) if origin_text == format!("https://{host}") => Ok(()),
        _ => Err(format!(
            "cross-origin request refused: its Origin '{origin_text}' is not this server's (https://{})",
            host.unwrap_or("?")
        )),
    }
}

/// The CSRF check of a state-changing request authenticated by a session's cookie.
fn csrf_checked(request: &Request, session: &session::Session) -> Result<(), String> {
    let Some(presented) = request.headers().get(CSRF_HEADER) else {
        return Err(format!(
            "missing CSRF token: a request authenticated by the session cookie that changes \
             state must carry the session's csrf_token in the {CSRF_HEADER} header"
        ));
    };
    let matches: bool = presented
        .as_bytes()
        .ct_eq(session.csrf_token.as_bytes())
        .into();
    if !matches {
        return Err(format!(
            "wrong CSRF token in the {CSRF_HEADER} header: it is not this session's"
        ));
    }
    same_origin(request.headers())
}

fn is_websocket(request: &Request) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

impl Auth {
    pub fn new(users: Arc<Users>) -> Arc<Auth> {
        Arc::new(Auth {
            users,
            failures: Mutex::new(Failures::default()),
            sessions: Sessions::default(),
        })
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        oxvirt_host::lock(&self.failures)
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub(crate) fn users(&self) -> Arc<Users> {
        self.users.clone()
    }

    /// Checks a token or password from `peer`, failures counted and rate-limited: the role, or
    /// the refusal to send (401 or 429; `basic` as for [`unauthorized`]).
    pub(crate) async fn check(
        &self,
        peer: IpAddr,
        credentials: Presented,
        basic: bool,
    ) -> Result<Role, Response> {
        let user = match &credentials {
            Presented::Password { user, .. } => Some(user.clone()),
            Presented::Token(_) => None,
        };
        let now = Instant::now();
        let mut keys = vec![Key::Address(peer)];
        keys.extend(user.clone().map(Key::User));
        let wait = {
            let mut failures = self.failures();
            keys.iter().filter_map(|k| failures.wait(k, now)).max()
        };
        if let Some(wait) = wait {
            let seconds = wait.as_secs().max(1);
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                code::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins from {peer}{}; try again in {seconds} s",
                    user.as_deref()
                        .map(|u| format!(" or for user '{u}'"))
                        .unwrap_or_default()
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return Err(response);
        }
        let users = self.users.clone();
        // Password checks are slow on purpose (argon2): off the async workers.
        let checked = tokio::task::spawn_blocking(move || match credentials {
            Presented::Token(token) => users.check_token(&token),
            Presented::Password { user, password } => users.check_password(&user, &password),
        })
        .await;
        match checked {
            Ok(Ok(Some(role))) => Ok(role),
            Ok(Ok(None)) => {
                let mut failures = self.failures();
                for key in keys {
                    failures.record(key, now);
                }
                tracing::warn!(%peer, user = user.as_deref().unwrap_or("(token)"), "failed login");
                Err(unauthorized(
                    "wrong credentials: unknown user or token, or wrong password",
                    basic,
                ))
            }
            Ok(Err(err)) => Err(internal(format!("checking credentials: {err}"))),
            Err(err) => Err(internal(format!(
                "checking credentials failed inside the daemon: {err}"
            ))),
        }
    }

    /// The role of the session `id` names, if it is live and its user still stands as it did
    /// at login (not deleted, same password).
    async fn session(&self, id: &str) -> Result<session::Session, Response> {
        let ended = || {
            unauthorized(
                "the session has ended (logged out or expired): log in again",
                false,
            )
        };
        let Some(mut session) = self.sessions.touch(id) else {
            return Err(ended());
        };
        let users = self.users.clone();
        let name = session.user.clone();
        let standing = tokio::task::spawn_blocking(move || users.standing(&name)).await;
        match standing {
            Ok(Ok(Some((role, stamp)))) if stamp == session.stamp => {
                // A role changed since the login applies at once.
                session.role = role;
                Ok(session)
            }
            Ok(Ok(_)) => {
                self.sessions.remove(id);
                Err(ended())
            }
            Ok(Err(err)) => Err(internal(format!("reading the session's user: {err}"))),
            Err(err) => Err(internal(format!("reading the session's user: {err}"))),
        }
    }
}

/// The middleware: authenticate (credentials, rate-limited, or a session's cookie with its
/// CSRF checks), then check the role.
pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
    request.extensions_mut().insert(auth.clone());
    if public(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let role = if let Some(credentials) = presented(&request) {
        match auth.check(peer, credentials, true).await {
            Ok(role) => role,
            Err(refused) => return refused,
        }
    } else if let Some(id) = session::cookie(request.headers()) {
        let session = match auth.session(&id).await {
            Ok(session) => session,
            Err(refused) => return refused,
        };
        let method = request.method();
        if *method != Method::GET && *method != Method::HEAD {
            if let Err(reason) = csrf_checked(&request, &session) {
                tracing::warn!(%peer, user = %session.user, "refused a cross-site request: {reason}");
                return forbidden(reason);
            }
        }
        request.extensions_mut().insert(SessionId(id));
        session.role
    } else {
        return unauthorized(
            "oxvirtd over TCP needs credentials: a token (Authorization: Bearer), a user's \
             password (HTTP Basic) or a browser session's cookie (POST /v1/session)",
            !from_page_script(&request),
        );
    };
    // A browser sends an Origin with every WebSocket; one from another site's page is refused
    // before the upgrade, whatever authenticated it.
    if is_websocket(&request) {
        if let Err(reason) = same_origin(request.headers()) {
            return forbidden(reason);
        }
    }
    if !allowed(role, request.method(), request.uri().path()) {
        return forbidden(format!(
            "the {role} role may not {} {}",
            request.method(),
            request.uri().path()
        ));
    }
    next.run(request).await
}

/// `POST /v1/session`: not behind authentication (it is the login); the password is checked
/// and failures are counted as for HTTP Basic.
#[utoipa::path(
    post,
    path = "/v1/session",
    operation_id = "session_login",
    tag = "browser",
    request_body = oxvirt_api::LoginRequest,
    responses((
        status = 200,
        description = "logged in: the session, its cookie in Set-Cookie",
        body = oxvirt_api::SessionInfo
    )),
)]
async fn login(
    Extension(auth): Extension<Arc<Auth>>,
    Extension(peer): Extension<Peer>,
    request: Request,
) -> Response {
    if let Err(reason) = same_origin(request.headers()) {
        return forbidden(reason);
    }
    let bytes = match axum::body::to_bytes(request.into_body(), oxvirt_api::MAX_REQUEST_BYTES).await
    {
        Ok(bytes) => bytes,
        Err(_) => {
            return Failure(oxvirt_api::ApiError::new(
                oxvirt_api::code::TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    oxvirt_api::MAX_REQUEST_BYTES
                ),
            ))
            .into_response()
        }
    };
    let request: LoginRequest = match super::reply::body(&bytes) {
        Ok(request) => request,
        Err(failure) => return failure.into_response(),
    };
    if request.user.is_empty() || request.password.is_empty() {
        return unauthorized(
            "logging in needs a JSON body with the user's name and password: \
             {\"user\": \"...\", \"password\": \"...\"}",
            false,
        );
    }
    let user = request.user.clone();
    let credentials = Presented::Password {
        user: request.user,
        password: request.password,
    };
    let role = match auth.check(peer.0, credentials, false).await {
        Ok(role) => role,
        Err(refused) => return refused,
    };
    let users = auth.users();
    let name = user.clone();
    let standing = tokio::task::spawn_blocking(move || users.standing(&name)).await;
    let stamp = match standing {
        Ok(Ok(Some((_, stamp)))) => stamp,
        // Deleted between the two reads.
        Ok(Ok(None)) => return unauthorized("the user no longer exists", false),
        Ok(Err(err)) => return Failure::from(err).into_response(),
        Err(err) => return internal(format!("reading the user: {err}")),
    };
    let (id, session) = auth.sessions().create(&user, role, stamp);
    tracing::info!(%user, peer = %peer.0, "browser session started");
    let mut response = Json(session.info()).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&id, session::IDLE_TIMEOUT),
    );
    response
}

/// `GET /v1/session`: the cookie's session (authenticated by it in `auth`).
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "session_current",
    tag = "browser",
    responses((status = 200, description = "the cookie's session", body = oxvirt_api::SessionInfo)),
)]
async fn current(
    Extension(auth): Extension<Arc<Auth>>,
    session: Option<Extension<SessionId>>,
) -> Response {
    let Some(Extension(SessionId(id))) = session else {
        return unauthorized("this request carries no session cookie", false);
    };
    match auth.sessions().touch(&id) {
        Some(session) => Json(session.info()).into_response(),
        None => unauthorized("the session has ended: log in again", false),
    }
}

/// `DELETE /v1/session`: ends the cookie's session, if any, and clears the cookie.
#[utoipa::path(
    delete,
    path = "/v1/session",
    operation_id = "session_logout",
    tag = "browser",
    responses((status = 204, description = "logged out: the cookie cleared")),
)]
async fn logout(
    Extension(auth): Extension<Arc<Auth>>,
    session: Option<Extension<SessionId>>,
) -> Response {
    if let Some(Extension(SessionId(id))) = session {
        auth.sessions().remove(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie("", Duration::ZERO));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_reads_and_admin_does_everything() {
        let ro = Role::ReadOnly;
        assert!(allowed(ro, &Method::GET, "/v1/domains"));
        assert!(allowed(ro, &Method::HEAD, "/v1/domains/vm"));
        assert!(allowed(ro, &Method::GET, "/metrics"));
        assert!(allowed(ro, &Method::POST, "/v1/domain-stats"));
        assert!(allowed(ro, &Method::POST, "/v1/domains/vm/iothreadinfo"));
        assert!(!allowed(ro, &Method::POST, "/v1/domains/vm/start"));
        assert!(!allowed(ro, &Method::POST, "/v1/domains/vm/console"));
        assert!(!allowed(ro, &Method::POST, "/v1/domains/vm/monitor"));
        assert!(!allowed(ro, &Method::PUT, "/v1/domains/vm/xml"));
        assert!(!allowed(ro, &Method::DELETE, "/v1/domains/vm"));
        assert!(!allowed(ro, &Method::GET, "/v1/users"));
        assert!(!allowed(ro, &Method::GET, "/v1/tokens"));
        assert!(!allowed(ro, &Method::GET, "/v1/secrets/u/value"));
        assert!(allowed(ro, &Method::GET, "/v1/secrets/u"));
        assert!(!allowed(ro, &Method::GET, "/v1/pools/p/volumes/v/data"));
        assert!(allowed(ro, &Method::GET, "/v1/pools/p/volumes/v"));
        assert!(!allowed(ro, &Method::GET, "/v1/domains/vm/console/ws"));
        assert!(!allowed(ro, &Method::GET, "/v1/domains/vm/vnc/ws"));
        assert!(allowed(ro, &Method::DELETE, "/v1/session"));
        // A pattern's `*` is one whole segment, not a prefix.
        assert!(!allowed(ro, &Method::POST, "/v1/domains/a/b/iothreadinfo"));
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            assert!(allowed(Role::Admin, &method, "/v1/users"));
        }
    }

    #[test]
    fn failures_block_after_the_limit_until_they_age_out() {
        let mut failures = Failures::default();
        let key = Key::User("ann".into());
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(failures.wait(&key, start), None, "after {i}");
            failures.record(key.clone(), start);
        }
        let wait = failures
            .wait(&key, start + Duration::from_secs(20))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(40));
        assert_eq!(failures.wait(&key, start + WINDOW), None);
    }
}
