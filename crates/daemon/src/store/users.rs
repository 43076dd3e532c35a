//! `users` and `tokens`: who may use the remote API (docs/remote.md). A user row holds the
//! argon2 hash of its password (a PHC string), a token row the SHA-256 digest of its secret;
//! neither secret is stored.

use rusqlite::{params, OptionalExtension, Transaction};

/// Version 7: users and tokens of the remote API.
pub(super) fn v7_users_tokens(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            created INTEGER NOT NULL
        );
        CREATE TABLE tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT,
            digest BLOB NOT NULL,
            role TEXT NOT NULL,
            created INTEGER NOT NULL
        );",
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: Option<String>,
    pub digest: Vec<u8>,
    pub role: String,
    pub created: i64,
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        role: row.get(2)?,
        created: row.get(3)?,
    })
}

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        digest: row.get(2)?,
        role: row.get(3)?,
        created: row.get(4)?,
    })
}

pub fn list_users(tx: &Transaction<'_>) -> rusqlite::Result<Vec<UserRecord>> {
    let mut stmt =
        tx.prepare("SELECT name, password_hash, role, created FROM users ORDER BY name")?;
    let rows = stmt.query_map([], user_from_row)?;
    rows.collect()
}

pub fn user(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<UserRecord>> {
    tx.query_row(
        "SELECT name, password_hash, role, created FROM users WHERE name = ?1",
        params![name],
        user_from_row,
    )
    .optional()
}

pub fn insert_user(tx: &Transaction<'_>, user: &UserRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO users (name, password_hash, role, created) VALUES (?1, ?2, ?3, ?4)",
        params![user.name, user.password_hash, user.role, user.created],
    )?;
    Ok(())
}

pub fn set_user_password(tx: &Transaction<'_>, name: &str, hash: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE name = ?1",
        params![name, hash],
    )?;
    Ok(())
}

pub fn delete_user(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM users WHERE name = ?1", params![name])?;
    Ok(())
}

pub fn list_tokens(tx: &Transaction<'_>) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut stmt = tx.prepare("SELECT id, name, digest, role, created FROM tokens ORDER BY id")?;
    let rows = stmt.query_map([], token_from_row)?;
    rows.collect()
}

pub fn token(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<Option<TokenRecord>> {
    tx.query_row(
        "SELECT id, name, digest, role, created FROM tokens WHERE id = ?1",
        params![id],
        token_from_row,
    )
    .optional()
}

/// Inserts a token and returns its id (never reused: AUTOINCREMENT, so a revoked token's id
/// cannot come back as another's).
pub fn insert_token(
    tx: &Transaction<'_>,
    name: Option<&str>,
    digest: &[u8],
    role: &str,
    created: i64,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO tokens (name, digest, role, created) VALUES (?1, ?2, ?3, ?4)",
        params![name, digest, role, created],
    )?;
    Ok(tx.last_insert_rowid())
}

pub fn delete_token(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM tokens WHERE id = ?1", params![id])?;
    Ok(())
}
