//! Browser sessions on the TLS listener (docs/remote.md): the live sessions and their cookie.
//! [`auth`](super::auth) has the routes (`POST /v1/session` logs a user in with its password
//! and sets the cookie, `GET` tells the page who it is and its CSRF token, `DELETE` logs out),
//! authenticates the requests that carry the cookie and checks their CSRF token and Origin.
//!
//! Sessions live in memory only: a restart of oxvirtd logs everyone out. Keeping them in the
//! store would let a stolen copy of the database (or a backup) replay live sessions, for the
//! small gain of not logging in again after an upgrade.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine as _;
use oxvirt_api::{Role, SessionInfo, SESSION_COOKIE};
use sha2::{Digest, Sha256};

/// A session ends after this long without a request...
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// ...and this long after its login, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// More live sessions than this and the oldest are dropped (each needed a right password).
const MAX_SESSIONS: usize = 10_000;

/// The session a request's cookie named, put in its extensions by [`auth::authenticate`].
#[derive(Clone)]
pub struct SessionId(pub String);

/// What a session's requests are checked against.
#[derive(Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf_token: String,
    /// A digest of the user's password hash at login (`Users::standing`).
    pub stamp: Vec<u8>,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn deadline(&self) -> Instant {
        (self.last_used + IDLE_TIMEOUT).min(self.created + MAX_AGE)
    }

    pub fn info(&self) -> SessionInfo {
        let left = self.deadline().saturating_duration_since(Instant::now());
        SessionInfo {
            user: self.user.clone(),
            role: self.role,
            csrf_token: self.csrf_token.clone(),
            expires: rfc3339(SystemTime::now() + left),
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

/// 32 random bytes, base64url without padding.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Sessions are kept under a digest of their id: the map's lookups, which are not constant
/// time, then tell nothing about the ids themselves.
fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        oxvirt_host::lock(&self.live)
    }

    /// A new session for `user`; its id (the cookie's value) and the session.
    pub fn create(&self, user: &str, role: Role, stamp: Vec<u8>) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            user: user.to_string(),
            role,
            csrf_token: random_secret(),
            stamp,
            created: now,
            last_used: now,
        };
        let id = random_secret();
        let mut live = self.live();
        live.retain(|_, s| s.deadline() > now);
        while live.len() >= MAX_SESSIONS {
            let Some(oldest) = live.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) else {
                break;
            };
            live.remove(&oldest);
        }
        live.insert(key(&id), session.clone());
        (id, session)
    }

    /// The session `id` names if it is still live, its idle deadline moved on (sliding).
    pub fn touch(&self, id: &str) -> Option<Session> {
        self.touch_at(id, Instant::now())
    }

    fn touch_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut live = self.live();
        let key = key(id);
        let session = live.get_mut(&key)?;
        if session.deadline() <= now {
            live.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    pub fn remove(&self, id: &str) {
        self.live().remove(&key(id));
    }
}

/// The value of the session cookie among the request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

pub fn set_cookie(value: &str, max_age: Duration) -> HeaderValue {
    let text = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        max_age.as_secs()
    );
    // The value is base64url (or empty): always a valid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_slide_and_end() {
        let sessions = Sessions::default();
        let (id, session) = sessions.create("ann", Role::Admin, vec![1]);
        assert_eq!(id.len(), 43, "32 bytes in base64url");
        assert_ne!(id, session.csrf_token);
        assert_eq!(sessions.touch(&id).map(|s| s.user), Some("ann".into()));
        assert!(sessions.touch("other").is_none());
        let (long, _) = sessions.create("ann", Role::Admin, vec![1]);
        let start = Instant::now();
        // Idle too long: gone.
        assert!(sessions.touch_at(&id, start + IDLE_TIMEOUT).is_none());
        // Used every 20 minutes: it slides, up to the absolute limit.
        let id = long;
        let step = Duration::from_secs(20 * 60);
        let mut at = start + step;
        while at < start + MAX_AGE - step {
            assert!(sessions.touch_at(&id, at).is_some(), "{:?}", at - start);
            at += step;
        }
        assert!(sessions.touch_at(&id, start + MAX_AGE).is_none());
        let (id, _) = sessions.create("bob", Role::ReadOnly, vec![2]);
        sessions.remove(&id);
        assert!(sessions.touch(&id).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; oxvirt_session=abc ; c=d"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("oxvirt_session="));
        assert_eq!(cookie(&headers), None);
    }
}
