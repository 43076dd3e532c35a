//! Who may do what over TCP (docs/remote.md): every request on the TLS listener carries a
//! token (`Authorization: Bearer`) or a user's password (HTTP Basic); without valid ones it is
//! refused with 401. A read-only role reads: GET and HEAD, except the routes in
//! [`ADMIN_ONLY`]; anything else changes state and needs the admin role (403 otherwise), except
//! the reads sent as POST in [`READ_POSTS`]. Failed logins are counted per client address and
//! per user: after [`MAX_FAILURES`] in [`WINDOW`], 429 with Retry-After until the oldest ages
//! out. The Unix socket (root only) does not pass through here.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use oxvirt_api::{code, ApiError, Role};

use crate::services::users::Users;

/// The address of the TCP client that sent a request (put there by `remote.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Failed logins allowed per address and per user in [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Reads that need the admin role all the same: users and tokens, secrets' values and volumes'
/// contents (vol-download), as libvirt's read-only connections may read neither. `*` is one
/// path segment.
pub const ADMIN_ONLY: &[&str] = &[
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

/// The challenge of a 401: both schemes oxvirtd accepts.
const CHALLENGE: &str = "Bearer realm=\"oxvirtd\", Basic realm=\"oxvirtd\", charset=\"UTF-8\"";

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
enum Presented {
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

fn unauthorized(message: &str) -> Response {
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHORIZED,
        message.to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

impl Auth {
    pub fn new(users: Arc<Users>) -> Arc<Auth> {
        Arc::new(Auth {
            users,
            failures: Mutex::new(Failures::default()),
        })
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        oxvirt_host::lock(&self.failures)
    }
}

/// The middleware: authenticate, rate-limit failures, then check the role.
pub async fn authenticate(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
    let Some(credentials) = presented(&request) else {
        return unauthorized(
            "oxvirtd over TCP needs credentials: a token (Authorization: Bearer) or a user's \
             password (HTTP Basic)",
        );
    };
    let user = match &credentials {
        Presented::Password { user, .. } => Some(user.clone()),
        Presented::Token(_) => None,
    };
    let now = Instant::now();
    let mut keys = vec![Key::Address(peer)];
    keys.extend(user.clone().map(Key::User));
    let wait = {
        let mut failures = auth.failures();
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
        return response;
    }
    let users = auth.users.clone();
    // Password checks are slow on purpose (argon2): off the async workers.
    let checked = tokio::task::spawn_blocking(move || match credentials {
        Presented::Token(token) => users.check_token(&token),
        Presented::Password { user, password } => users.check_password(&user, &password),
    })
    .await;
    let role = match checked {
        Ok(Ok(Some(role))) => role,
        Ok(Ok(None)) => {
            let mut failures = auth.failures();
            for key in keys {
                failures.record(key, now);
            }
            tracing::warn!(%peer, user = user.as_deref().unwrap_or("(token)"), "failed login");
            return unauthorized("wrong credentials: unknown user or token, or wrong password");
        }
        Ok(Err(err)) => {
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                format!("checking credentials: {err}"),
            )
        }
        Err(err) => {
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                format!("checking credentials failed inside the daemon: {err}"),
            )
        }
    };
    if !allowed(role, request.method(), request.uri().path()) {
        return refusal(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!(
                "the {role} role may not {} {}",
                request.method(),
                request.uri().path()
            ),
        );
    }
    next.run(request).await
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
