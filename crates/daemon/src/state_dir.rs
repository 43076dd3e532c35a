//! The state directory: created private, locked for one oxvirtd at a time, and its database
//! checked (and backed up) before the daemon takes it, or restored from a backup.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use crate::store::{self, BackupOutcome, DbFile, Store, StoreError};

/// Creates `dir` (and its parents) with mode 0700, and makes an existing one 0700: per-VM files
/// and the database hold what only root may read.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// With QEMU running as guest users (services/dac.rs): the state directory, its `run` and its
/// `nvram` directories searchable by every user, and no more (0711: nobody else may list
/// them), so that a QEMU reaches its own run directory and NVRAM file. What lies in them stays
/// private by its own mode: the database is 0600, every other directory 0700, a run directory
/// 0711 with only QEMU's own subdirectory that guest user's.
pub fn open_to_guest_users(state_dir: &Path) -> anyhow::Result<()> {
    let nvram = state_dir.join("nvram");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&nvram)
        .with_context(|| format!("creating {}", nvram.display()))?;
    for dir in [state_dir.to_path_buf(), state_dir.join("run"), nvram] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("opening {} to QEMU's users", dir.display()))?;
    }
    Ok(())
}

/// Before the daemon takes its database: refuse one that is not usable as it is (the operator
/// chooses between a backup and an empty start), and back up a healthy one before migrations
/// touch it. A missing database is a first start.
pub fn check_and_back_up(state_dir: &Path, db_path: &Path, keep: usize) -> anyhow::Result<()> {
    let backups = state_dir.join(store::BACKUPS_DIR);
    match store::check_database_file(db_path) {
        Ok(DbFile::Missing) => {
            tracing::info!(database = %db_path.display(), "no state database yet: first start");
            Ok(())
        }
        Ok(DbFile::Healthy(db)) => {
            match store::write_backup(&db, &backups, keep) {
                Ok(BackupOutcome::Written(path)) => {
                    tracing::info!(backup = %path.display(), "state database backed up at start")
                }
                Ok(BackupOutcome::Unchanged(path)) => tracing::info!(
                    backup = %path.display(),
                    "state database unchanged since its newest backup"
                ),
                // The backups are a safety net; the daemon can serve without a new one.
                Err(err) => tracing::warn!("no backup of the state database at start: {err}"),
            }
            Ok(())
        }
        Err(err) if err.is_unusable_file() => {
            Err(anyhow!(refusal(&err, state_dir, db_path, &backups)))
        }
        Err(err) => Err(err.into()),
    }
}

/// The message of a refused database: what is wrong and the two ways on.
fn refusal(err: &StoreError, state_dir: &Path, db_path: &Path, backups: &Path) -> String {
    let newest = match store::list_backups(backups) {
        Ok(list) => match list.last() {
            Some(newest) => format!(
                "the newest of its {} backups, {}",
                list.len(),
                newest.display()
            ),
            None => format!("a backup (there is none in {} yet)", backups.display()),
        },
        Err(err) => format!("a backup ({err})"),
    };
    format!(
        "{err}\n\
         oxvirtd does not start on it: every domain, network and pool it defined would look gone. \
         The file is left as it is. Either:\n\
         - restore {newest}, moving this file aside: oxvirtd --state-dir {state} --restore-backup [FILE]\n\
         - or start empty on purpose: move {db} (and {db}-wal, {db}-shm if present) out of the way first",
        state = state_dir.display(),
        db = db_path.display(),
    )
}

/// Takes a backup if the store changed since the last one, off the async workers.
pub async fn backup_if_changed(store: &Arc<Store>, backups: &Path, keep: usize, when: &str) {
    let store = store.clone();
    let dir = backups.to_path_buf();
    let result = tokio::task::spawn_blocking(move || store.backup_if_changed(&dir, keep)).await;
    match result {
        Ok(Ok(Some(BackupOutcome::Written(path)))) => {
            tracing::info!(backup = %path.display(), "state database backed up ({when})")
        }
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!("state database backup ({when}) failed: {err}"),
        Err(err) => tracing::warn!("state database backup ({when}) did not run: {err}"),
    }
}

/// `oxvirtd --restore-backup [FILE]`: installs a backup while no daemon runs, says what it did.
pub fn restore_backup(state_dir: &Path, file: Option<&Path>) -> anyhow::Result<()> {
    // Not created: a mistyped --state-dir should fail, not become a new state directory.
    if !state_dir.is_dir() {
        bail!("state directory {} does not exist", state_dir.display());
    }
    let _lock = lock_state_dir(state_dir)
        .context("cannot restore a backup while oxvirtd runs: stop it first")?;
    let backups = state_dir.join(store::BACKUPS_DIR);
    let backup = match file {
        Some(file) => file.to_path_buf(),
        None => store::list_backups(&backups)?.pop().ok_or_else(|| {
            anyhow!(
                "no backups in {}: nothing to restore (name one: --restore-backup FILE)",
                backups.display()
            )
        })?,
    };
    let restored = store::restore_backup(&state_dir.join(store::DATABASE_FILE), &backup)?;
    let domains = match restored.domains {
        Some(n) => format!("{n} domain definition(s)"),
        None => "no domains table".to_string(),
    };
    println!(
        "Checked backup {}: quick_check ok, schema version {}, {domains}.",
        restored.backup.display(),
        restored.schema_version
    );
    for (from, to) in &restored.moved_aside {
        println!("Moved {} aside to {}.", from.display(), to.display());
    }
    for removed in &restored.removed {
        println!(
            "Removed {} (SQLite's index of the write-ahead log, rebuilt on open).",
            removed.display()
        );
    }
    println!(
        "Installed the backup as {}. Start oxvirtd to use it.",
        restored.database.display()
    );
    Ok(())
}

/// Takes an exclusive flock on `STATE_DIR/oxvirtd.lock`, or explains who holds it.
pub fn lock_state_dir(state_dir: &Path) -> anyhow::Result<File> {
    let path = state_dir.join("oxvirtd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "another oxvirtd is running with state directory {} (it holds {})",
                state_dir.display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}
