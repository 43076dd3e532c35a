//! `volume_formats`: what each storage volume file is, as oxvirtd recorded it (see the
//! migration that made the table). The format of a volume comes from here and from nowhere
//! else: never from the file's contents, which its guest may have written.

use std::path::{Path, PathBuf};

use oxvirt_images::Format;
use rusqlite::{params, OptionalExtension, Transaction};

/// How oxvirtd came to know a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeOrigin {
    /// Made by vol-create / vol-create-as.
    Created,
    /// Made by vol-clone.
    Cloned,
    /// Found in a pool's directory (put there by other means): its header was read once, when
    /// oxvirtd first saw it.
    Imported,
}

impl VolumeOrigin {
    fn as_str(self) -> &'static str {
        match self {
            VolumeOrigin::Created => "created",
            VolumeOrigin::Cloned => "cloned",
            VolumeOrigin::Imported => "imported",
        }
    }

    fn parse(text: &str) -> Option<VolumeOrigin> {
        [
            VolumeOrigin::Created,
            VolumeOrigin::Cloned,
            VolumeOrigin::Imported,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// The recorded facts about one volume file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub path: PathBuf,
    pub format: Format,
    /// A qcow2 overlay's backing file (absolute) and its format.
    pub backing: Option<(PathBuf, Format)>,
    pub origin: VolumeOrigin,
}

fn bad_column(index: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, what.into())
}

fn format_column(index: usize, text: String) -> rusqlite::Result<Format> {
    Format::parse(&text).map_err(|_| bad_column(index, format!("unknown image format '{text}'")))
}

pub fn volume_record(tx: &Transaction<'_>, path: &Path) -> rusqlite::Result<Option<VolumeRecord>> {
    tx.query_row(
        "SELECT format, backing_path, backing_format, origin FROM volume_formats WHERE path = ?1",
        params![path.to_string_lossy()],
        |row| {
            let format = format_column(0, row.get(0)?)?;
            let backing_path: Option<String> = row.get(1)?;
            let backing_format: Option<String> = row.get(2)?;
            let backing = match (backing_path, backing_format) {
                (Some(path), Some(format)) => {
                    Some((PathBuf::from(path), format_column(2, format)?))
                }
                (None, None) => None,
                _ => return Err(bad_column(1, "a backing file without its format".into())),
            };
            let origin: String = row.get(3)?;
            let origin = VolumeOrigin::parse(&origin)
                .ok_or_else(|| bad_column(3, format!("unknown volume origin '{origin}'")))?;
            Ok(VolumeRecord {
                path: path.to_path_buf(),
                format,
                backing,
                origin,
            })
        },
    )
    .optional()
}

/// Records (or replaces the record of) a volume file.
pub fn put_volume_record(tx: &Transaction<'_>, record: &VolumeRecord) -> rusqlite::Result<()> {
    let (backing_path, backing_format) = match &record.backing {
        Some((path, format)) => (Some(path.to_string_lossy()), Some(format.name())),
        None => (None, None),
    };
    tx.execute(
        "INSERT INTO volume_formats (path, format, backing_path, backing_format, origin)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(path) DO UPDATE SET format = excluded.format,
             backing_path = excluded.backing_path, backing_format = excluded.backing_format,
             origin = excluded.origin",
        params![
            record.path.to_string_lossy(),
            record.format.name(),
            backing_path,
            backing_format,
            record.origin.as_str()
        ],
    )?;
    Ok(())
}

pub fn delete_volume_record(tx: &Transaction<'_>, path: &Path) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM volume_formats WHERE path = ?1",
        params![path.to_string_lossy()],
    )?;
    Ok(())
}
