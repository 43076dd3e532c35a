//! The state database as a file: the checks before oxvirtd takes it, consistent backups, and
//! putting a backup back.
//!
//! Nothing here writes to a database it checks or copies: those are opened read-only, and the
//! `-wal`/`-shm` files SQLite creates next to a database it opens that way are removed again when
//! they were not there before (see [`ReadOnlyDb`]).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::error::StoreError;
use super::migrations;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Backups are `oxvirt-<UTC time>.db`; the fixed-width time makes name order time order.
const BACKUP_PREFIX: &str = "oxvirt-";
const BACKUP_SUFFIX: &str = ".db";
/// A backup being written; renamed to its final name once complete and on disk.
const PARTIAL: &str = ".partial-backup";

/// What [`check_database_file`] found.
pub enum DbFile {
    /// No database yet: a first start.
    Missing,
    /// A database that passed the checks, still open read-only (for the start backup).
    Healthy(ReadOnlyDb),
}

/// A database opened read-only for a check or a copy.
pub struct ReadOnlyDb {
    conn: Option<Connection>,
    path: PathBuf,
    /// `-wal`/`-shm` files SQLite created for this connection, removed again on drop.
    created: Vec<PathBuf>,
}

impl ReadOnlyDb {
    pub fn open(path: &Path) -> Result<ReadOnlyDb, StoreError> {
        let side_files: Vec<PathBuf> = ["-wal", "-shm"]
            .iter()
            .map(|suffix| with_suffix(path, suffix))
            .filter(|p| !p.exists())
            .collect();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| classify(path, source))?;
        // A daemon's write may hold the database for a moment (periodic backups).
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|source| sqlite(path, source))?;
        Ok(ReadOnlyDb {
            conn: Some(conn),
            path: path.to_path_buf(),
            created: side_files,
        })
    }

    fn conn(&self) -> &Connection {
        // Only `drop` takes it.
        self.conn.as_ref().expect("connection is open until drop")
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrations::user_version(self.conn()).map_err(|source| classify(&self.path, source))
    }

    /// `PRAGMA quick_check`: the database's structure is sound (not a full `integrity_check`,
    /// which also reads every index entry and takes far longer on a big store).
    pub fn quick_check(&self) -> Result<(), StoreError> {
        let damaged = |detail: String| StoreError::Damaged {
            path: self.path.clone(),
            detail,
        };
        let mut stmt = self
            .conn()
            .prepare("PRAGMA quick_check(5)")
            .map_err(|source| classify(&self.path, source))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|source| classify(&self.path, source))?;
        match rows.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [] => Err(damaged("no answer".to_string())),
            problems => Err(damaged(problems.join("; "))),
        }
    }

    /// How many domain definitions the database holds (`None`: it has no domains table).
    pub fn domain_count(&self) -> Option<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM domains", [], |row| row.get(0))
            .ok()
    }

    /// Writes a consistent copy (SQLite's online backup, all pages in one step, so one
    /// snapshot) to `dest`, which must not exist, and syncs it to disk.
    pub fn copy_to(&self, dest: &Path) -> Result<(), StoreError> {
        let sqlite_dest = |source| sqlite(dest, source);
        {
            let mut to = Connection::open(dest).map_err(sqlite_dest)?;
            let backup = Backup::new(self.conn(), &mut to).map_err(sqlite_dest)?;
            let mut attempts = 0;
            loop {
                match backup
                    .step(-1)
                    .map_err(|source| classify(&self.path, source))?
                {
                    StepResult::Done => break,
                    StepResult::More => {}
                    // Busy or locked: the daemon's connection is writing, and its transactions
                    // are short. (`StepResult` is non-exhaustive; anything new is retried too.)
                    _ if attempts < 100 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        return Err(StoreError::Busy {
                            path: self.path.clone(),
                        })
                    }
                }
            }
        }
        File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|source| io("syncing", dest, source))
    }
}

impl Drop for ReadOnlyDb {
    fn drop(&mut self) {
        drop(self.conn.take());
        for file in &self.created {
            // Only what this connection left: a `-wal` with frames in it is someone's data.
            let ours = match std::fs::metadata(file) {
                Ok(meta) => !file.to_string_lossy().ends_with("-wal") || meta.len() == 0,
                Err(_) => false,
            };
            if ours {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// `path` with `suffix` appended to its file name (`oxvirt.db` → `oxvirt.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// SQLite's verdicts on the file's content become [`StoreError::Damaged`]; anything else
/// (permissions, I/O) stays an SQLite error.
fn classify(path: &Path, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(DatabaseCorrupt) | Some(NotADatabase) => StoreError::Damaged {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => sqlite(path, source),
    }
}

/// Whether a database file is at `path` (false: a first start), refusing one that is empty or
/// not SQLite: SQLite would take either as a new, empty database.
pub fn check_header(path: &Path) -> Result<bool, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // SQLite would replay a leftover write-ahead log into the new database.
            let wal = with_suffix(path, "-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(StoreError::OrphanWal {
                    path: path.to_path_buf(),
                    wal,
                });
            }
            return Ok(false);
        }
        Err(err) => return Err(io("opening", path, err)),
    };
    let len = file
        .metadata()
        .map_err(|source| io("reading", path, source))?
        .len();
    if len == 0 {
        return Err(StoreError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io("reading", path, err)),
        }
    }
    if read < header.len() || &header != SQLITE_HEADER {
        return Err(StoreError::NotSqlite {
            path: path.to_path_buf(),
        });
    }
    Ok(true)
}

/// The checks before oxvirtd takes its database: missing is a first start; empty, not SQLite,
/// failing `PRAGMA quick_check`, or of a newer schema is refused. Reads only.
pub fn check_database_file(path: &Path) -> Result<DbFile, StoreError> {
    if !check_header(path)? {
        return Ok(DbFile::Missing);
    }
    let db = ReadOnlyDb::open(path)?;
    db.quick_check()?;
    let found = db.schema_version()?;
    let known = migrations::latest();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    Ok(DbFile::Healthy(db))
}

/// `20261202T080102.123Z`: UTC, fixed width, sortable, no characters a shell cares about.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The backups in `dir`, oldest first.
pub fn list_backups(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io("listing", dir, err)),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io("listing", dir, source))?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(BACKUP_PREFIX) && name.ends_with(BACKUP_SUFFIX) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// What [`write_backup`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum BackupOutcome {
    Written(PathBuf),
    /// The copy was byte for byte the newest backup, which stays the newest.
    Unchanged(PathBuf),
}

/// Writes a backup of `db` into `dir` (created, mode 0700) and keeps the newest `keep`.
pub fn write_backup(db: &ReadOnlyDb, dir: &Path, keep: usize) -> Result<BackupOutcome, StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io("creating", dir, source))?;
    let partial = dir.join(PARTIAL);
    remove_if_present(&partial)?;
    remove_if_present(&with_suffix(&partial, "-journal"))?;
    db.copy_to(&partial)?;
    // A restart loop would otherwise push every older backup out with copies of the same state.
    if let Some(newest) = list_backups(dir)?.pop() {
        if same_bytes(&partial, &newest) {
            remove_if_present(&partial)?;
            return Ok(BackupOutcome::Unchanged(newest));
        }
    }
    let mut name = dir.join(format!(
        "{BACKUP_PREFIX}{}{BACKUP_SUFFIX}",
        timestamp(SystemTime::now())
    ));
    let mut n = 1;
    while name.exists() {
        name = dir.join(format!(
            "{BACKUP_PREFIX}{}-{n}{BACKUP_SUFFIX}",
            timestamp(SystemTime::now())
        ));
        n += 1;
    }
    std::fs::rename(&partial, &name).map_err(|source| io("renaming", &partial, source))?;
    sync_dir(dir)?;
    rotate(dir, keep)?;
    Ok(BackupOutcome::Written(name))
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Deletes all but the newest `keep` backups (at least one is always kept).
fn rotate(dir: &Path, keep: usize) -> Result<(), StoreError> {
    let backups = list_backups(dir)?;
    let excess = backups.len().saturating_sub(keep.max(1));
    for old in &backups[..excess] {
        std::fs::remove_file(old).map_err(|source| io("removing old backup", old, source))?;
        tracing::debug!(backup = %old.display(), "old backup removed");
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io("removing", path, err)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("syncing", dir, source))
}

/// What [`restore_backup`] did.
#[derive(Debug)]
pub struct Restored {
    pub backup: PathBuf,
    pub database: PathBuf,
    /// Files of the replaced database, moved aside: (from, to).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    /// Files of the replaced database that held nothing to keep (its `-shm`, an empty `-wal`).
    pub removed: Vec<PathBuf>,
    pub domains: Option<u64>,
    pub schema_version: u32,
}

/// Installs the backup `backup` as the database `database` (the caller holds the state
/// directory's lock, so no daemon uses it). The backup is checked first (quick_check, schema
/// version). The current database, if any, is moved aside as `<database>.broken-<time>` with its
/// write-ahead log (which may hold committed transactions) as `<that>-wal`; nothing of it is
/// deleted but its `-shm` index, which SQLite rebuilds. Until the final rename, a failure leaves
/// the current database where it was.
pub fn restore_backup(database: &Path, backup: &Path) -> Result<Restored, StoreError> {
    if !check_header(backup)? {
        return Err(io(
            "opening backup",
            backup,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let source = ReadOnlyDb::open(backup)?;
    source.quick_check()?;
    let schema_version = source.schema_version()?;
    if schema_version > migrations::latest() {
        return Err(StoreError::TooNew {
            path: backup.to_path_buf(),
            found: schema_version,
            known: migrations::latest(),
        });
    }
    let domains = source.domain_count();

    let incoming = with_suffix(database, ".restoring");
    for leftover in ["", "-journal", "-wal", "-shm"] {
        remove_if_present(&with_suffix(&incoming, leftover))?;
    }
    source.copy_to(&incoming)?;
    drop(source);

    let mut moved_aside = Vec::new();
    let mut removed = Vec::new();
    let aside = with_suffix(
        database,
        &format!(".broken-{}", timestamp(SystemTime::now())),
    );
    if database.exists() {
        rename(database, &aside)?;
        moved_aside.push((database.to_path_buf(), aside.clone()));
    }
    let wal = with_suffix(database, "-wal");
    match std::fs::metadata(&wal) {
        Ok(meta) if meta.len() > 0 => {
            let to = with_suffix(&aside, "-wal");
            rename(&wal, &to)?;
            moved_aside.push((wal, to));
        }
        Ok(_) => {
            remove_if_present(&wal)?;
            removed.push(wal);
        }
        Err(_) => {}
    }
    let shm = with_suffix(database, "-shm");
    if shm.exists() {
        remove_if_present(&shm)?;
        removed.push(shm);
    }
    rename(&incoming, database)?;
    if let Some(dir) = database.parent() {
        sync_dir(dir)?;
    }
    Ok(Restored {
        backup: backup.to_path_buf(),
        database: database.to_path_buf(),
        moved_aside,
        removed,
        domains,
        schema_version,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|source| StoreError::Io {
        what: "renaming",
        path: from.to_path_buf(),
        source: std::io::Error::new(source.kind(), format!("to {}: {source}", to.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{insert_domain, DomainRecord, Store};
    use super::*;

    /// A database with `n` domains, closed (its write-ahead log checkpointed and gone).
    fn database(path: &Path, n: usize) {
        let store = Store::open(path).unwrap();
        for i in 0..n {
            let record = DomainRecord {
                uuid: uuid::Uuid::new_v4(),
                name: format!("d{i}"),
                xml: format!(
                    "<domain><name>d{i}</name><description>{}</description></domain>",
                    "x".repeat(500)
                ),
                autostart: false,
                engine: "qemu".into(),
                off_reason: "unknown".into(),
            };
            store.transaction(|tx| insert_domain(tx, &record)).unwrap();
        }
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn refused(path: &Path) -> StoreError {
        match check_database_file(path) {
            Err(err) => err,
            Ok(_) => panic!("{} was accepted", path.display()),
        }
    }

    #[test]
    fn missing_database_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_database_file(&dir.path().join("oxvirt.db")),
            Ok(DbFile::Missing)
        ));
    }

    #[test]
    fn unusable_databases_are_refused_and_left_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.db");
        database(&good, 40);
        let good_bytes = std::fs::read(&good).unwrap();
        assert!(good_bytes.len() > 8 * 4096, "{}", good_bytes.len());
        let half = good_bytes[..good_bytes.len() / 2].to_vec();
        let random: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // What the file holds, and the refusal it must get.
        type Verdict = fn(&StoreError) -> bool;
        let cases: [(&str, Vec<u8>, Verdict); 4] = [
            ("empty", Vec::new(), |e| {
                matches!(e, StoreError::Empty { .. })
            }),
            ("short", b"SQLite".to_vec(), |e| {
                matches!(e, StoreError::NotSqlite { .. })
            }),
            ("random", random, |e| {
                matches!(e, StoreError::NotSqlite { .. })
            }),
            ("truncated", half, |e| {
                matches!(e, StoreError::Damaged { .. })
            }),
        ];
        for (what, bytes, expected) in cases {
            let case = dir.path().join(what);
            std::fs::create_dir(&case).unwrap();
            let path = case.join("oxvirt.db");
            std::fs::write(&path, &bytes).unwrap();
            let err = refused(&path);
            assert!(expected(&err), "{what}: {err}");
            assert!(err.is_unusable_file(), "{what}: {err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{what}: {err}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{what}: the file changed"
            );
            assert_eq!(
                names(&case),
                vec!["oxvirt.db"],
                "{what}: files were left beside it"
            );
        }
    }

    #[test]
    fn healthy_database_is_taken_and_left_without_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        database(&path, 3);
        let before = std::fs::read(&path).unwrap();
        match check_database_file(&path) {
            Ok(DbFile::Healthy(db)) => assert_eq!(db.domain_count(), Some(3)),
            Ok(DbFile::Missing) => panic!("missing"),
            Err(err) => panic!("{err}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(names(dir.path()), vec!["oxvirt.db"]);
    }

    #[test]
    fn a_write_ahead_log_without_its_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        std::fs::write(with_suffix(&path, "-wal"), b"frames").unwrap();
        let err = refused(&path);
        assert!(matches!(err, StoreError::OrphanWal { .. }), "{err}");
        assert!(!path.exists());
        // An empty one holds nothing to replay.
        std::fs::write(with_suffix(&path, "-wal"), b"").unwrap();
        assert!(matches!(check_database_file(&path), Ok(DbFile::Missing)));
    }

    #[test]
    fn unchanged_database_adds_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let backups = dir.path().join("backups");
        database(&path, 2);
        let db = ReadOnlyDb::open(&path).unwrap();
        let first = match write_backup(&db, &backups, 7).unwrap() {
            BackupOutcome::Written(first) => first,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            write_backup(&db, &backups, 7).unwrap(),
            BackupOutcome::Unchanged(first.clone())
        );
        assert_eq!(list_backups(&backups).unwrap(), vec![first]);
    }

    #[test]
    fn restore_moves_the_old_database_aside_and_installs_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        let backups = dir.path().join("backups");
        database(&path, 2);
        let backup = match write_backup(&ReadOnlyDb::open(&path).unwrap(), &backups, 7).unwrap() {
            BackupOutcome::Written(backup) => backup,
            other => panic!("{other:?}"),
        };
        // The database is lost, and a write-ahead log with something in it is left behind.
        std::fs::write(&path, b"").unwrap();
        std::fs::write(with_suffix(&path, "-wal"), b"frames").unwrap();
        std::fs::write(with_suffix(&path, "-shm"), b"index").unwrap();

        let restored = restore_backup(&path, &backup).unwrap();
        assert_eq!(restored.domains, Some(2));
        assert_eq!(restored.moved_aside.len(), 2, "{restored:?}");
        let (_, aside) = &restored.moved_aside[0];
        assert!(
            aside.to_string_lossy().contains("oxvirt.db.broken-"),
            "{restored:?}"
        );
        assert_eq!(std::fs::read(aside).unwrap(), b"");
        assert_eq!(
            std::fs::read(with_suffix(aside, "-wal")).unwrap(),
            b"frames"
        );
        assert_eq!(restored.removed, vec![with_suffix(&path, "-shm")]);
        assert!(!with_suffix(&path, "-wal").exists());
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_domains().unwrap().len(), 2);
        // The backup itself is still there, unchanged in number.
        assert_eq!(list_backups(&backups).unwrap(), vec![backup]);
    }

    #[test]
    fn damaged_backup_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxvirt.db");
        database(&path, 1);
        let before = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad.db");
        std::fs::write(&bad, b"not a database at all, no").unwrap();
        let err = restore_backup(&path, &bad).unwrap_err();
        assert!(matches!(err, StoreError::NotSqlite { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(names(dir.path()), vec!["bad.db", "oxvirt.db"]);
    }

    #[test]
    fn timestamps_are_utc_and_sort_as_time() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000.000Z");
        // 2024-02-29 23:59:58.5 UTC
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_198_500);
        assert_eq!(timestamp(leap), "20240229T235958.500Z");
        let later = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        assert_eq!(timestamp(later), "21000101T000000.000Z");
        assert!(timestamp(leap) < timestamp(later));
    }
}
