//! `counters`: named integers that outlive restarts (the last runtime id handed out, whether the
//! default network was offered once).

use rusqlite::{params, OptionalExtension, Transaction};

pub fn counter(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT value FROM counters WHERE name = ?1",
        params![name],
        |row| row.get(0),
    )
    .optional()
}

pub fn set_counter(tx: &Transaction<'_>, name: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}
