//! The daemon's persistent state: one SQLite database in the state directory.
//!
//! `domains` holds the definitions (normalized XML), `runtime` one row per active domain (what a
//! restarted daemon needs to find its guests again), `domain_macs` the MAC addresses of the
//! stored and live definitions (what MAC uniqueness checks read), `guest_users` and
//! `security_labels` the users QEMU guests run as and the owners their files had (`labels.rs`). Every change runs in one
//! transaction, so a failed operation leaves the store as it was.
//!
//! The store owns the whole schema, the tables of `networks.rs` and `pools.rs` included, as
//! versioned migrations (`store/migrations.rs`). Checks of the file before it is opened, backups
//! and restoring one are in `store/file.rs`; `docs/store.md` tells the operator's side.

mod counters;
mod db;
mod domains;
mod error;
mod file;
mod labels;
mod macs;
mod migrations;
mod networks;
mod pools;
mod runtime;
mod secrets;
mod snapshots;
mod users;
mod volumes;

#[cfg(test)]
mod tests;

pub use counters::{counter, set_counter};
pub use db::Store;
pub use domains::*;
pub use error::{named, StoreError, BACKUPS_DIR, DATABASE_FILE};
pub use file::{
    check_database_file, list_backups, restore_backup, write_backup, BackupOutcome, DbFile,
};
pub use labels::SecurityLabel;
pub use macs::*;
pub use networks::*;
pub use pools::*;
pub use runtime::*;
pub use secrets::*;
pub use snapshots::*;
pub use users::*;
pub use volumes::{
    delete_volume_record, put_volume_record, volume_record, VolumeOrigin, VolumeRecord,
};
