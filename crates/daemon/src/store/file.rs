//! The state database as a file: the checks before oxvirtd takes it.
//!
//! Nothing here writes to a database it checks: it is opened read-only, and the
//! `-wal`/`-shm` files SQLite creates next to a database it opens that way are removed again when
//! they were not there before (see [`ReadOnlyDb`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::migrations;
use super::StoreError;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What [`check_database_file`] found.
pub enum DbFile {
    /// No database yet: a first start.
    Missing,
    /// A database that passed the checks, still open read-only.
    Healthy(ReadOnlyDb),
}

/// A database opened read-only for a check.
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
            Ok(DbFile::Healthy(db)) => assert_eq!(db.schema_version().unwrap(), 2),
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
}
