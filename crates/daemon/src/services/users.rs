//! Users and tokens of the remote API (docs/remote.md): `oxvirt user add|passwd|del|list`,
//! `oxvirt token create|list|revoke`, and checking the credentials a TCP request carries.
//!
//! A password is kept as its argon2id hash (a PHC string with its own salt); a token is
//! `oxv_ID_SECRET` with 32 random bytes of secret, kept as the SHA-256 digest of the secret
//! (a random secret needs no slow hash), compared in constant time. Every check of a secret
//! costs the same whether the user or token exists or not.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use oxvirt_api::{NewToken, Role, TokenInfo, UserInfo};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{bad_request, db, internal, not_found, DaemonError, DaemonResult, ErrorKind};
use crate::store::{self, Store, TokenRecord, UserRecord};

/// The prefix of every token, so a leaked one is recognisable (secret scanners, logs).
const TOKEN_PREFIX: &str = "oxv_";
/// Random bytes in a token's secret.
const TOKEN_SECRET_BYTES: usize = 32;
/// Longest password accepted (argon2 takes any length; this bounds the work a request asks).
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest user or token name.
const MAX_NAME: usize = 64;

pub struct Users {
    store: Arc<Store>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn role_of(text: &str) -> DaemonResult<Role> {
    Role::parse(text).ok_or_else(|| {
        DaemonError::new(
            ErrorKind::Internal,
            format!("the store holds an unknown role '{text}'"),
        )
    })
}

fn user_info(record: &UserRecord) -> DaemonResult<UserInfo> {
    Ok(UserInfo {
        name: record.name.clone(),
        role: role_of(&record.role)?,
        created: record.created,
    })
}

fn token_info(record: &TokenRecord) -> DaemonResult<TokenInfo> {
    Ok(TokenInfo {
        id: u64::try_from(record.id).unwrap_or(0),
        name: record.name.clone(),
        role: role_of(&record.role)?,
        created: record.created,
    })
}

/// A user or token name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `-` (no `:`, which
/// HTTP Basic uses as its separator).
fn check_name(what: &str, name: &str) -> DaemonResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DaemonError::new(
            ErrorKind::InvalidName,
            format!(
                "{what} name '{name}' is not 1 to {MAX_NAME} letters, digits, '.', '_' or '-' \
                 (not starting with '-')"
            ),
        ))
    }
}

fn check_password(password: &str) -> DaemonResult<()> {
    if password.is_empty() {
        return Err(bad_request("the password is empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(bad_request(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> DaemonResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| internal("hashing the password", e))
}

/// Whether `password` matches the PHC string `hash` (argon2 compares in constant time).
fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches in practice, checked against when the user does not exist so
/// that the answer takes as long as for a real user.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(&secret, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Users {
    pub fn new(store: Arc<Store>) -> Users {
        Users { store }
    }

    pub fn list(&self) -> DaemonResult<Vec<UserInfo>> {
        let records = self.store.transaction(store::list_users).map_err(db)?;
        records.iter().map(user_info).collect()
    }

    pub fn add(&self, name: &str, password: &str, role: Role) -> DaemonResult<UserInfo> {
        check_name("user", name)?;
        check_password(password)?;
        let record = UserRecord {
            name: name.to_string(),
            password_hash: hash_password(password)?,
            role: role.as_str().to_string(),
            created: now(),
        };
        self.store.transaction_or(db, |tx| {
            if store::user(tx, name).map_err(db)?.is_some() {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!("user '{name}' already exists"),
                ));
            }
            store::insert_user(tx, &record).map_err(db)
        })?;
        tracing::info!(user = name, role = %role, "user added");
        user_info(&record)
    }

    pub fn set_password(&self, name: &str, password: &str) -> DaemonResult<UserInfo> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let record = self.store.transaction_or(db, |tx| {
            let Some(mut record) = store::user(tx, name).map_err(db)? else {
                return Err(not_found(format!("no user '{name}'")));
            };
            store::set_user_password(tx, name, &hash).map_err(db)?;
            record.password_hash = hash;
            Ok(record)
        })?;
        tracing::info!(user = name, "password changed");
        user_info(&record)
    }

    pub fn delete(&self, name: &str) -> DaemonResult<UserInfo> {
        let record = self.store.transaction_or(db, |tx| {
            let Some(record) = store::user(tx, name).map_err(db)? else {
                return Err(not_found(format!("no user '{name}'")));
            };
            store::delete_user(tx, name).map_err(db)?;
            Ok(record)
        })?;
        tracing::info!(user = name, "user deleted");
        user_info(&record)
    }

    pub fn list_tokens(&self) -> DaemonResult<Vec<TokenInfo>> {
        let records = self.store.transaction(store::list_tokens).map_err(db)?;
        records.iter().map(token_info).collect()
    }

    /// A new token; its secret is in the reply and nowhere else.
    pub fn create_token(&self, role: Role, name: Option<&str>) -> DaemonResult<NewToken> {
        if let Some(name) = name {
            check_name("token", name)?;
        }
        let mut secret = [0u8; TOKEN_SECRET_BYTES];
        OsRng.fill_bytes(&mut secret);
        let secret = hex(&secret);
        let created = now();
        let id = self
            .store
            .transaction(|tx| {
                store::insert_token(tx, name, &digest(&secret), role.as_str(), created)
            })
            .map_err(db)?;
        tracing::info!(token = id, role = %role, "token created");
        Ok(NewToken {
            info: TokenInfo {
                id: u64::try_from(id).unwrap_or(0),
                name: name.map(str::to_string),
                role,
                created,
            },
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    pub fn revoke_token(&self, id: &str) -> DaemonResult<TokenInfo> {
        let number = id
            .parse::<i64>()
            .map_err(|_| not_found(format!("no token '{id}'")))?;
        let record = self.store.transaction_or(db, |tx| {
            let Some(record) = store::token(tx, number).map_err(db)? else {
                return Err(not_found(format!("no token {number}")));
            };
            store::delete_token(tx, number).map_err(db)?;
            Ok(record)
        })?;
        tracing::info!(token = number, "token revoked");
        token_info(&record)
    }

    /// The role of the token `token`, if it is one oxvirtd issued and did not revoke.
    pub fn check_token(&self, token: &str) -> DaemonResult<Option<Role>> {
        let parsed = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(id, secret)| Some((id.parse::<i64>().ok()?, secret)));
        let (id, secret) = parsed.unwrap_or((-1, token));
        let record = self
            .store
            .transaction(|tx| store::token(tx, id))
            .map_err(db)?;
        let presented = digest(secret);
        // Compared in constant time against the stored digest, or against a digest of nothing
        // when there is no such token, so the time taken tells nothing.
        let stored = record
            .as_ref()
            .map_or_else(|| digest(""), |r| r.digest.clone());
        let matches: bool = presented.ct_eq(&stored).into();
        match record {
            Some(record) if matches => Ok(Some(role_of(&record.role)?)),
            _ => Ok(None),
        }
    }

    /// What a browser session of user `name` rests on: the user's role now and a digest of its
    /// password hash (a password changed since the login no longer matches), or `None` once the
    /// user is gone. Cheap (no argon2): checked on every request of a session.
    pub fn standing(&self, name: &str) -> DaemonResult<Option<(Role, Vec<u8>)>> {
        let record = self
            .store
            .transaction(|tx| store::user(tx, name))
            .map_err(db)?;
        record
            .map(|r| Ok((role_of(&r.role)?, digest(&r.password_hash))))
            .transpose()
    }

    /// The role of user `name` if `password` is theirs. Slow on purpose (argon2), also for a
    /// user that does not exist: run it off the async workers.
    pub fn check_password(&self, name: &str, password: &str) -> DaemonResult<Option<Role>> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let record = self
            .store
            .transaction(|tx| store::user(tx, name))
            .map_err(db)?;
        let hash = record
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |r| r.password_hash.clone());
        let matches = password_matches(password, &hash);
        match record {
            Some(record) if matches => Ok(Some(role_of(&record.role)?)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oxvirt.db")).unwrap();
        (dir, Users::new(Arc::new(store)))
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let (_dir, users) = users();
        users.add("ann", "correct horse", Role::Admin).unwrap();
        assert_eq!(
            users.check_password("ann", "correct horse").unwrap(),
            Some(Role::Admin)
        );
        assert_eq!(users.check_password("ann", "wrong").unwrap(), None);
        assert_eq!(users.check_password("bob", "correct horse").unwrap(), None);
        let stored = users
            .store
            .transaction(|tx| store::user(tx, "ann"))
            .unwrap()
            .unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"), "{stored:?}");
        assert!(!stored.password_hash.contains("correct horse"));
        users.set_password("ann", "battery staple").unwrap();
        assert_eq!(users.check_password("ann", "correct horse").unwrap(), None);
        assert_eq!(
            users.check_password("ann", "battery staple").unwrap(),
            Some(Role::Admin)
        );
        let err = users.add("ann", "x", Role::ReadOnly).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        assert_eq!(
            users.add("a:b", "x", Role::Admin).unwrap_err().kind,
            ErrorKind::InvalidName
        );
        users.delete("ann").unwrap();
        assert_eq!(users.check_password("ann", "battery staple").unwrap(), None);
        assert_eq!(users.delete("ann").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn tokens_are_stored_as_digests_and_revocable() {
        let (_dir, users) = users();
        let new = users.create_token(Role::ReadOnly, Some("ci")).unwrap();
        assert!(new.token.starts_with("oxv_"), "{}", new.token);
        assert_eq!(users.check_token(&new.token).unwrap(), Some(Role::ReadOnly));
        let mut wrong = new.token.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(users.check_token(&wrong).unwrap(), None);
        assert_eq!(users.check_token("nonsense").unwrap(), None);
        let stored = users.store.transaction(store::list_tokens).unwrap();
        let secret = new.token.rsplit('_').next().unwrap();
        assert_eq!(stored[0].digest, Sha256::digest(secret.as_bytes()).to_vec());
        users.revoke_token(&new.info.id.to_string()).unwrap();
        assert_eq!(users.check_token(&new.token).unwrap(), None);
        assert!(users.list_tokens().unwrap().is_empty());
    }
}
