//! Storage volumes of `dir` pools, and the disks of domains as the engines open them.
//!
//! - A volume is a regular file directly in its pool's directory; every listing is a fresh scan.
//!   Volume names are one path component: no `/`, no leading `.`, so a volume can never name a
//!   file outside its pool; symlinks in the directory are not volumes.
//! - What a volume *is* (raw or qcow2, and a qcow2 overlay's backing file) is recorded in the
//!   store's `volume_formats` when oxvirtd creates or clones it, or the first time it sees a file
//!   put there by other means, and never read from the file's contents again: a guest writes
//!   its raw disk, so a format probed from it would be the guest's choice, and with a qcow2
//!   header naming a backing file, the guest would choose which host file QEMU opens.
//! - Volume files are made and changed through `oxvirt-images` (create, convert, resize), which
//!   takes QEMU's image locks: a volume a running guest has open cannot be resized, cloned while
//!   written, or deleted.
//! - At start, a domain's `<disk type='volume'>` becomes a file disk on the volume's file, and
//!   each qcow2 disk gets its backing chain read from trusted metadata (`resolve_*`).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvirt_api::{CreateVolumeRequest, ResizeVolumeRequest, VolumeInfo};
use oxvirt_domain::volume::{
    validate_volume_name, BackingStore, VolumeDef, VolumeFormat, VolumeTarget,
};
use oxvirt_domain::{BackingLayer, Disk, DiskFormat, DiskType, Domain, DomainError};
use oxvirt_images::lock::{lock_image, LockMode};
use oxvirt_images::ops::{convert, ConvertOptions};
use oxvirt_images::{CreateOptions, Format, Image, ImageError, OpenOptions, Preallocation};

use super::error::{
    bad_request, db, definition_error, internal, invalid_state, not_found, DaemonError,
    DaemonResult, ErrorKind,
};
use super::guests::stored_domain;
use super::pools::Pools;
use crate::store::{self, PoolRecord, Store, VolumeOrigin, VolumeRecord};

/// Storage volumes, and the resolution of domain disks at start.
pub struct Volumes {
    store: Arc<Store>,
    pools: Arc<Pools>,
}

impl Volumes {
    pub fn new(store: Arc<Store>, pools: Arc<Pools>) -> Volumes {
        Volumes { store, pools }
    }
}

/// Cluster size of clones of raw volumes made as qcow2 (never: clones keep the format) and the
/// fallback when the source does not say.
const DEFAULT_CLUSTER_SIZE: u64 = 65536;

/// An `oxvirt-images` failure on volume `name`, with the API code that fits it.
pub(super) fn image_error(what: &str, err: ImageError) -> DaemonError {
    let code = match &err {
        ImageError::Locked { .. } => ErrorKind::InvalidState,
        ImageError::Exists { .. } => ErrorKind::AlreadyExists,
        ImageError::InvalidArgument(_) | ImageError::NotAnImage { .. } => ErrorKind::BadRequest,
        ImageError::Corrupt { .. }
        | ImageError::Unsupported { .. }
        | ImageError::BackingFormatMissing { .. }
        | ImageError::CompressionType { .. } => ErrorKind::Unsupported,
        _ => ErrorKind::Internal,
    };
    DaemonError::new(code, format!("{what}: {err}"))
}

/// Volume names are one file name in the pool's directory: never a path, never hidden.
fn check_volume_name(name: &str) -> DaemonResult<()> {
    validate_volume_name(name).map_err(|err| match err {
        DomainError::InvalidName { reason, .. } => DaemonError::new(
            ErrorKind::InvalidName,
            format!("invalid storage volume name '{name}': {reason}"),
        ),
        other => bad_request(other.to_string()),
    })
}

fn volume_xml_of(volume: &VolumeInfo) -> String {
    // Images name their own format and their backing file's; oxvirt reads raw and qcow2 only
    // (a backing format it does not know is left out, as for one the image does not name).
    let format = |name: &str| VolumeFormat::from_name(name);
    let def = VolumeDef {
        name: volume.name.clone(),
        key: Some(volume.path.clone()),
        capacity: volume.capacity,
        allocation: Some(volume.allocation),
        physical: Some(volume.physical),
        target: VolumeTarget {
            path: Some(volume.path.clone()),
            format: format(&volume.format).unwrap_or(VolumeFormat::Raw),
            permissions: None,
            cluster_size: None,
        },
        backing_store: volume.backing_file.as_ref().map(|path| BackingStore {
            path: path.clone(),
            format: volume.backing_format.as_deref().and_then(format),
        }),
    };
    def.to_xml()
}

/// vol-create's XML as the request vol-create-as sends. The key, physical size, target path
/// and permissions are ignored, as libvirt ignores them: the pool decides where the file goes.
fn create_request_of(def: &VolumeDef) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: def.name.clone(),
        capacity: def.capacity,
        format: def.target.format.as_str().to_string(),
        prealloc_metadata: false,
        // libvirt: no <allocation> means the whole capacity.
        allocation: Some(def.allocation.unwrap_or(def.capacity)),
        backing_vol: def.backing_store.as_ref().map(|b| b.path.clone()),
        backing_format: def
            .backing_store
            .as_ref()
            .and_then(|b| b.format)
            .map(|f| f.as_str().to_string()),
        cluster_size: def.target.cluster_size,
    }
}

/// The metadata of an existing volume file, or "not found" if `path` is not a regular file
/// (a symlink or a directory in the pool is not a volume).
fn volume_file(pool: &PoolRecord, name: &str) -> DaemonResult<(PathBuf, Metadata)> {
    check_volume_name(name)?;
    let path = pool.target.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => Ok((path, meta)),
        _ => Err(not_found(format!(
            "storage volume '{name}' not found in pool '{}'",
            pool.name
        ))),
    }
}

/// Reads a volume's sizes from its file, in its recorded format, without locks (like
/// `qemu-img info -U`), so it also works on disks of running guests.
fn read_volume(
    pool: &PoolRecord,
    name: &str,
    record: &VolumeRecord,
    meta: &Metadata,
) -> DaemonResult<VolumeInfo> {
    let path = &record.path;
    let image = Image::open(
        path,
        &OpenOptions {
            format: Some(record.format),
            force_share: true,
            no_backing: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| image_error(&format!("cannot read storage volume '{name}'"), e))?;
    let (backing_file, backing_format) = match image.as_qcow2() {
        Some(qcow2) => (
            qcow2.header().backing_file.clone(),
            qcow2.header().backing_format.clone(),
        ),
        None => (None, None),
    };
    Ok(VolumeInfo {
        name: name.to_string(),
        pool: pool.name.clone(),
        path: pool.target.join(name).display().to_string(),
        volume_type: "file".to_string(),
        format: image.format().name().to_string(),
        capacity: image.virtual_size(),
        allocation: meta.blocks().saturating_mul(512),
        physical: meta.len(),
        backing_file,
        backing_format,
    })
}

/// The key of a volume file's record: its canonical path, so a disk naming the file through a
/// symlinked directory finds the same record.
fn record_key(path: &Path) -> DaemonResult<PathBuf> {
    std::fs::canonicalize(path)
        .map_err(|e| internal(&format!("cannot resolve {}", path.display()), e))
}

/// The backing file a qcow2 header names, resolved against the image's directory, with the
/// format the header states (`None` if it states none).
fn header_backing(path: &Path) -> DaemonResult<Option<(PathBuf, Option<Format>)>> {
    let image = Image::open(
        path,
        &OpenOptions {
            format: Some(Format::Qcow2),
            force_share: true,
            no_backing: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| image_error(&format!("cannot read {}", path.display()), e))?;
    let Some(qcow2) = image.as_qcow2() else {
        return Ok(None);
    };
    let header = qcow2.header();
    Ok(header.backing_file.as_ref().map(|name| {
        let format = header
            .backing_format
            .as_deref()
            .and_then(|f| Format::parse(f).ok());
        (oxvirt_images::image::resolve_backing(path, name), format)
    }))
}

/// Volume `name`'s file (`path`), opened with QEMU's image lock of `mode` held: refused while
/// another process holds a lock that conflicts (a guest writing it).
fn open_locked(path: &Path, name: &str, mode: LockMode) -> DaemonResult<std::fs::File> {
    let access = match mode {
        LockMode::Read => oxvirt_images::file::Access::Read,
        LockMode::Write => oxvirt_images::file::Access::ReadWrite,
    };
    let file = oxvirt_images::file::open_image_file(path, access)
        .map_err(|e| image_error(&format!("cannot open storage volume '{name}'"), e))?;
    lock_image(&file, path, mode).map_err(|e| match e {
        ImageError::Locked { .. } => invalid_state(format!(
            "storage volume '{name}' is in use (a process holds its image lock): {e}"
        )),
        other => image_error(&format!("cannot lock storage volume '{name}'"), other),
    })?;
    Ok(file)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What to allocate up front: `prealloc_metadata` asks for qcow2 metadata; an allocation of the
/// whole capacity for space reserved for all of it (libvirt's dir pools fallocate it); anything
/// less, libvirt's pools may leave sparse, and oxvirt does.
fn preallocation_of(request: &CreateVolumeRequest) -> Preallocation {
    let whole = request
        .allocation
        .is_some_and(|a| request.capacity > 0 && a >= request.capacity);
    if request.prealloc_metadata {
        Preallocation::Metadata
    } else if whole {
        Preallocation::Falloc
    } else {
        Preallocation::Off
    }
}

fn parse_format(text: &str) -> DaemonResult<Format> {
    Format::parse(text).map_err(|_| {
        bad_request(format!(
            "unsupported volume format '{text}' (raw and qcow2 are supported)"
        ))
    })
}

/// `err` with what it was about in front: `cannot start domain 'D': disk 'vda': ...`.
fn start_error(domain: &str, dev: &str, err: DaemonError) -> DaemonError {
    err.context(format!("cannot start domain '{domain}': disk '{dev}'"))
}

fn disk_format_of(format: Format) -> DiskFormat {
    match format {
        Format::Raw => DiskFormat::Raw,
        Format::Qcow2 => DiskFormat::Qcow2,
    }
}

pub(super) fn image_format_of(format: DiskFormat) -> Format {
    match format {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
    }
}

/// One piece of a `vol-upload` body, as the route hands it over.
#[derive(Debug)]
pub enum UploadChunk {
    Data(oxvirt_api::storage::BodyBytes),
    /// The body ended as the client meant it to.
    End,
    /// Reading the body failed (the client went away).
    Failed(String),
}

/// An upload's hidden file in the pool's directory (a leading `.`: never a volume), removed
/// unless it replaced its volume.
struct PartialFile {
    path: PathBuf,
    done: bool,
}

impl PartialFile {
    fn create(dir: &Path, name: &str) -> DaemonResult<PartialFile> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(format!(".{name}.upload-{}", uuid::Uuid::new_v4().simple()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| internal(&format!("cannot create {}", path.display()), e))?;
        Ok(PartialFile { path, done: false })
    }

    fn replace(mut self, target: &Path) -> DaemonResult<()> {
        std::fs::rename(&self.path, target)
            .map_err(|e| internal(&format!("cannot replace {}", target.display()), e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Volumes {
    /// The pool's volumes, by name. Files that cannot be read as images are left out (and
    /// logged), so one damaged file does not hide the others.
    pub fn list_volumes(&self, pool_id: &str) -> DaemonResult<Vec<VolumeInfo>> {
        let pool = self.pools.active_pool(pool_id)?;
        let entries = std::fs::read_dir(&pool.target).map_err(|e| {
            internal(
                &format!("cannot read the directory of storage pool '{}'", pool.name),
                e,
            )
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .filter(|name| check_volume_name(name).is_ok())
            .collect();
        names.sort();
        let mut volumes = Vec::new();
        for name in names {
            let Ok((path, meta)) = volume_file(&pool, &name) else {
                continue;
            };
            let volume = self
                .volume_record_of(&pool, &name, &path)
                .and_then(|record| read_volume(&pool, &name, &record, &meta));
            match volume {
                Ok(volume) => volumes.push(volume),
                Err(err) => tracing::warn!(pool = %pool.name, volume = %name, "skipped: {err}"),
            }
        }
        Ok(volumes)
    }

    pub fn volume_info(&self, pool_id: &str, name: &str) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let (path, meta) = volume_file(&pool, name)?;
        let record = self.volume_record_of(&pool, name, &path)?;
        read_volume(&pool, name, &record, &meta)
    }

    /// What the volume file `path` (`name` in `pool`) is, as recorded; a file oxvirtd has not
    /// seen before (put into the pool's directory by other means) is recorded now, once.
    fn volume_record_of(
        &self,
        pool: &PoolRecord,
        name: &str,
        path: &Path,
    ) -> DaemonResult<VolumeRecord> {
        let key = record_key(path)?;
        if let Some(record) = self
            .store
            .transaction(|tx| store::volume_record(tx, &key))
            .map_err(db)?
        {
            return Ok(record);
        }
        let found = self.import_volume(&key)?;
        // Another request may have recorded it meanwhile: the first record stays.
        let record = self
            .store
            .transaction(|tx| match store::volume_record(tx, &key)? {
                Some(existing) => Ok(existing),
                None => store::put_volume_record(tx, &found).map(|()| found.clone()),
            })
            .map_err(db)?;
        if record == found {
            tracing::warn!(
                pool = %pool.name,
                volume = %name,
                format = record.format.name(),
                "a volume oxvirtd did not create: its format is recorded from its header, once"
            );
        }
        Ok(record)
    }

    /// The record of a file found in a pool. A domain that uses the file as a disk says what
    /// it is (its guest may have written anything into it); otherwise its header does, this
    /// once: the file was put there by the host's administrator, not yet by a guest.
    fn import_volume(&self, key: &Path) -> DaemonResult<VolumeRecord> {
        let format = match self.format_a_definition_gives(key)? {
            Some(format) => format,
            None => oxvirt_images::image::probe(key)
                .map_err(|e| image_error(&format!("cannot read {}", key.display()), e))?,
        };
        let backing = match format {
            Format::Raw => None,
            Format::Qcow2 => match header_backing(key)? {
                Some((path, Some(format))) => Some((path, format)),
                // Without a stated format the chain cannot be opened; starting a domain on
                // it says so, naming the fix.
                Some((_, None)) | None => None,
            },
        };
        Ok(VolumeRecord {
            path: key.to_path_buf(),
            format,
            backing,
            origin: VolumeOrigin::Imported,
        })
    }

    /// The format a stored definition gives the file `key` as a file or block disk, if any does.
    fn format_a_definition_gives(&self, key: &Path) -> DaemonResult<Option<Format>> {
        for record in self.store.list_domains().map_err(db)? {
            let Ok(domain) = stored_domain(&record) else {
                continue;
            };
            let stated = domain.devices.disks.iter().find(|disk| {
                disk.source
                    .as_deref()
                    .is_some_and(|source| same_file(Path::new(source), key))
            });
            if let Some(disk) = stated {
                return Ok(Some(image_format_of(disk.driver.format)));
            }
        }
        Ok(None)
    }

    /// The recorded format of an image at `path` that is a volume oxvirtd knows, if it is one.
    fn recorded_format(&self, path: &Path) -> DaemonResult<Option<Format>> {
        let Ok(key) = std::fs::canonicalize(path) else {
            return Ok(None);
        };
        Ok(self
            .store
            .transaction(|tx| store::volume_record(tx, &key))
            .map_err(db)?
            .map(|record| record.format))
    }

    fn put_record(&self, record: &VolumeRecord) -> DaemonResult<()> {
        self.store
            .transaction(|tx| store::put_volume_record(tx, record))
            .map_err(db)
    }

    pub fn volume_xml(&self, pool_id: &str, name: &str) -> DaemonResult<String> {
        Ok(volume_xml_of(&self.volume_info(pool_id, name)?))
    }

    /// A new volume name in `pool` that no file uses yet.
    fn new_volume_path(&self, pool: &PoolRecord, name: &str) -> DaemonResult<PathBuf> {
        check_volume_name(name)?;
        let path = pool.target.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "storage volume '{name}' already exists in pool '{}'",
                    pool.name
                ),
            ));
        }
        Ok(path)
    }

    /// vol-create-as (blocking: preallocation may write a lot).
    pub fn create_volume(
        &self,
        pool_id: &str,
        request: &CreateVolumeRequest,
    ) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let format = parse_format(&request.format)?;
        let path = self.new_volume_path(&pool, &request.name)?;
        let backing = match (&request.backing_vol, &request.backing_format) {
            (Some(backing), format) => {
                let backing_path = self.backing_path(&pool, backing)?;
                // Never probed: the backing image may be a guest's raw disk.
                let recorded = self.recorded_format(&backing_path)?;
                let backing_format = match (format, recorded) {
                    (Some(text), Some(recorded)) => {
                        let stated = parse_format(text)?;
                        if stated != recorded {
                            return Err(bad_request(format!(
                                "backing volume '{backing}' is {}, not {}",
                                recorded.name(),
                                stated.name()
                            )));
                        }
                        stated
                    }
                    (Some(text), None) => parse_format(text)?,
                    (None, Some(recorded)) => recorded,
                    (None, None) => {
                        return Err(bad_request(format!(
                            "the format of backing image '{backing}' is not recorded (it is no volume oxvirtd knows) and is never probed: give it (--backing-vol-format raw|qcow2)"
                        )))
                    }
                };
                Some((backing_path, backing_format))
            }
            (None, Some(_)) => {
                return Err(bad_request(
                    "a backing format needs a backing volume (--backing-vol)".to_string(),
                ))
            }
            (None, None) => None,
        };
        if backing.is_some() && format != Format::Qcow2 {
            return Err(bad_request(
                "only qcow2 volumes can have a backing volume".to_string(),
            ));
        }
        let options = CreateOptions {
            format,
            size: Some(request.capacity),
            preallocation: preallocation_of(request),
            backing_file: backing.as_ref().map(|(p, _)| p.display().to_string()),
            backing_format: backing.as_ref().map(|(_, f)| *f),
            overwrite: false,
            cluster_size: request
                .cluster_size
                .unwrap_or(CreateOptions::default().cluster_size),
        };
        oxvirt_images::create(&path, &options).map_err(|e| {
            image_error(
                &format!("cannot create storage volume '{}'", request.name),
                e,
            )
        })?;
        let (path, meta) = volume_file(&pool, &request.name)?;
        let record = VolumeRecord {
            path: record_key(&path)?,
            format,
            backing,
            origin: VolumeOrigin::Created,
        };
        if let Err(err) = self.put_record(&record) {
            // A volume without its record would be imported from its header later; we made it,
            // so it goes, and the request fails as a whole.
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        tracing::info!(pool = %pool.name, volume = %request.name, "volume created");
        read_volume(&pool, &request.name, &record, &meta)
    }

    /// vol-create: a volume from its XML, created as vol-create-as creates one.
    pub fn create_volume_from_xml(&self, pool_id: &str, xml: &str) -> DaemonResult<VolumeInfo> {
        let def = VolumeDef::from_xml(xml).map_err(definition_error)?;
        self.create_volume(pool_id, &create_request_of(&def))
    }

    /// A backing volume: a volume of the same pool by name, or an absolute path to an image.
    fn backing_path(&self, pool: &PoolRecord, backing: &str) -> DaemonResult<PathBuf> {
        if backing.contains('/') {
            let path = Path::new(backing);
            if !path.is_absolute() {
                return Err(bad_request(format!(
                    "backing volume '{backing}' must be a volume name or an absolute path"
                )));
            }
            if !path.is_file() {
                return Err(not_found(format!(
                    "backing volume '{backing}' does not exist"
                )));
            }
            return Ok(path.to_path_buf());
        }
        let (path, _) = volume_file(pool, backing).map_err(|_| {
            not_found(format!(
                "backing volume '{backing}' not found in pool '{}'",
                pool.name
            ))
        })?;
        // A volume of the pool has a record (made now if this is the first time it is seen).
        self.volume_record_of(pool, backing, &path)?;
        Ok(path)
    }

    /// Names of the running domains that have `path` as a disk.
    fn running_users(&self, path: &Path) -> DaemonResult<Vec<String>> {
        let mut users = Vec::new();
        for runtime in self.store.list_runtime().map_err(db)? {
            let Some(record) = self.store.domain_by_uuid(&runtime.uuid).map_err(db)? else {
                continue;
            };
            let domain = stored_domain(&record)?;
            let uses = domain
                .devices
                .disks
                .iter()
                .any(|disk| self.disk_is_file(disk, path));
            if uses {
                users.push(record.name);
            }
        }
        Ok(users)
    }

    /// vol-delete: refused while a running guest uses the volume (its definition names it, or
    /// a process holds QEMU's write lock on it). The lock is held while the file is removed.
    pub fn delete_volume(&self, pool_id: &str, name: &str) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let (path, meta) = volume_file(&pool, name)?;
        let key = record_key(&path)?;
        let info = self
            .volume_record_of(&pool, name, &path)
            .and_then(|record| read_volume(&pool, name, &record, &meta))
            .unwrap_or_else(|_| VolumeInfo {
                name: name.to_string(),
                pool: pool.name.clone(),
                path: path.display().to_string(),
                volume_type: "file".to_string(),
                format: "raw".to_string(),
                capacity: meta.len(),
                allocation: meta.blocks().saturating_mul(512),
                physical: meta.len(),
                backing_file: None,
                backing_format: None,
            });
        self.refuse_running_users(name, &path)?;
        let file = open_locked(&path, name, LockMode::Write)?;
        std::fs::remove_file(&path)
            .map_err(|e| internal(&format!("cannot delete storage volume '{name}'"), e))?;
        drop(file);
        self.store
            .transaction(|tx| store::delete_volume_record(tx, &key))
            .map_err(db)?;
        tracing::info!(pool = %pool.name, volume = %name, "volume deleted");
        Ok(info)
    }

    /// vol-clone (blocking): a copy with the same format, through `convert`, so holes stay
    /// holes (a qcow2 overlay's backing chain is flattened into the clone, as qemu-img does).
    pub fn clone_volume(
        &self,
        pool_id: &str,
        name: &str,
        new_name: &str,
    ) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let (source_path, _) = volume_file(&pool, name)?;
        let source_record = self.volume_record_of(&pool, name, &source_path)?;
        let target_path = self.new_volume_path(&pool, new_name)?;
        // In its recorded format: a raw volume's contents are copied as they are, whatever
        // header its guest wrote into them.
        let mut source = Image::open(
            &source_path,
            &OpenOptions {
                format: Some(source_record.format),
                ..OpenOptions::default()
            },
        )
        .map_err(|e| image_error(&format!("cannot open storage volume '{name}'"), e))?;
        let options = ConvertOptions {
            format: source.format(),
            cluster_size: source
                .as_qcow2()
                .map(|q| q.cluster_size())
                .unwrap_or(DEFAULT_CLUSTER_SIZE),
            overwrite: false,
        };
        // On failure `convert` removes what it created (and never a file it did not).
        convert(&mut source, &target_path, &options, &mut |_, _| {}).map_err(|err| {
            image_error(
                &format!("cannot clone storage volume '{name}' to '{new_name}'"),
                err,
            )
        })?;
        drop(source);
        let (path, meta) = volume_file(&pool, new_name)?;
        // The clone is self-contained: convert copied the backing chain's data into it.
        let record = VolumeRecord {
            path: record_key(&path)?,
            format: options.format,
            backing: None,
            origin: VolumeOrigin::Cloned,
        };
        if let Err(err) = self.put_record(&record) {
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        tracing::info!(pool = %pool.name, volume = %name, clone = %new_name, "volume cloned");
        read_volume(&pool, new_name, &record, &meta)
    }

    /// vol-upload (blocking): the volume's file is replaced by the bytes `chunks` brings, once
    /// they all arrived and form an image of the volume's recorded format (a qcow2 one with the
    /// backing file the record has: a header naming another file would let the uploader choose
    /// which host file QEMU opens). They go to a hidden file in the pool's directory first, all
    /// zero blocks as holes, renamed over the volume at the end: a refused or broken upload
    /// leaves the volume as it was. Refused while a running guest uses the volume, or any
    /// process holds its image lock (a QEMU reading it as a backing file).
    pub fn upload_volume(
        &self,
        pool_id: &str,
        name: &str,
        mut chunks: tokio::sync::mpsc::Receiver<UploadChunk>,
    ) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let (path, _) = volume_file(&pool, name)?;
        let record = self.volume_record_of(&pool, name, &path)?;
        self.refuse_running_users(name, &path)?;
        // Held until the new file replaced this one: no process (a QEMU with the volume as a
        // disk or as a backing file) has it open meanwhile.
        let _lock = open_locked(&path, name, LockMode::Write)?;
        let partial = PartialFile::create(&pool.target, name)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial.path)
            .map_err(|e| internal(&format!("cannot open {}", partial.path.display()), e))?;
        let mut writer = oxvirt_images::sparse::SparseWriter::new(file);
        let write_error = |e: std::io::Error| {
            // A pool that fills up is the client's problem to solve (a smaller image, space
            // freed), not a failure of the daemon: a clear 409. The partial file goes (`partial`'s
            // drop), the volume keeps its old contents.
            if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
                DaemonError::new(
                    ErrorKind::InvalidState,
                    format!(
                        "pool '{}' has no space left for the upload to storage volume '{name}' \
                         ({e}); the volume is unchanged",
                        pool.name
                    ),
                )
            } else {
                internal(&format!("cannot write storage volume '{name}'"), e)
            }
        };
        loop {
            match chunks.blocking_recv() {
                Some(UploadChunk::Data(data)) => writer.write_all(&data).map_err(write_error)?,
                Some(UploadChunk::End) => break,
                Some(UploadChunk::Failed(err)) => {
                    return Err(bad_request(format!(
                        "the upload to storage volume '{name}' broke off: {err}"
                    )))
                }
                None => {
                    return Err(bad_request(format!(
                        "the upload to storage volume '{name}' broke off"
                    )))
                }
            }
        }
        drop(writer.finish().map_err(write_error)?);
        // The uploaded bytes, read as the volume's recorded format; never probed.
        let image = Image::open(
            &partial.path,
            &OpenOptions {
                format: Some(record.format),
                force_share: true,
                no_backing: true,
                ..OpenOptions::default()
            },
        )
        .map_err(|e| {
            bad_request(format!(
                "the upload is not a {} image, as storage volume '{name}' is: {e}",
                record.format.name()
            ))
        })?;
        if record.format == Format::Qcow2 {
            let header = image
                .as_qcow2()
                .and_then(|q| q.header().backing_file.clone());
            let named = header.map(|b| oxvirt_images::image::resolve_backing(&path, &b));
            let recorded = record.backing.as_ref().map(|(p, _)| p.as_path());
            let agree = match (named.as_deref(), recorded) {
                (None, None) => true,
                (Some(a), Some(b)) => same_file(a, b),
                _ => false,
            };
            if !agree {
                return Err(bad_request(format!(
                    "the uploaded qcow2 image names backing file {}; storage volume '{name}' has {}",
                    named.map_or("none".to_string(), |p| p.display().to_string()),
                    recorded.map_or("none".to_string(), |p| p.display().to_string())
                )));
            }
        }
        drop(image);
        // Checked again: a guest may have started on the volume while the bytes came.
        self.refuse_running_users(name, &path)?;
        partial.replace(&path)?;
        tracing::info!(pool = %pool.name, volume = %name, "volume uploaded");
        let (_, meta) = volume_file(&pool, name)?;
        read_volume(&pool, name, &record, &meta)
    }

    /// vol-download (blocking): the volume's file, opened with QEMU's read lock (no writer while
    /// it is read), and its length. Refused while a running guest uses the volume.
    pub fn open_download(&self, pool_id: &str, name: &str) -> DaemonResult<(std::fs::File, u64)> {
        let pool = self.pools.active_pool(pool_id)?;
        let (path, meta) = volume_file(&pool, name)?;
        self.refuse_running_users(name, &path)?;
        let file = open_locked(&path, name, LockMode::Read)?;
        Ok((file, meta.len()))
    }

    fn refuse_running_users(&self, name: &str, path: &Path) -> DaemonResult<()> {
        let users = self.running_users(path)?;
        if users.is_empty() {
            return Ok(());
        }
        Err(invalid_state(format!(
            "storage volume '{name}' is in use by running domain '{}'",
            users.join("', '")
        )))
    }

    /// vol-resize (blocking): growing is always allowed, shrinking only with `shrink`.
    pub fn resize_volume(
        &self,
        pool_id: &str,
        name: &str,
        request: ResizeVolumeRequest,
    ) -> DaemonResult<VolumeInfo> {
        let pool = self.pools.active_pool(pool_id)?;
        let (path, _) = volume_file(&pool, name)?;
        let record = self.volume_record_of(&pool, name, &path)?;
        let mut image = Image::open(
            &path,
            &OpenOptions {
                format: Some(record.format),
                write: true,
                no_backing: true,
                ..OpenOptions::default()
            },
        )
        .map_err(|e| image_error(&format!("cannot open storage volume '{name}'"), e))?;
        let current = image.virtual_size();
        let new_size = match (request.delta, request.shrink) {
            (false, _) => Some(request.capacity),
            (true, false) => current.checked_add(request.capacity),
            (true, true) => current.checked_sub(request.capacity),
        }
        .ok_or_else(|| {
            bad_request(format!(
                "storage volume '{name}' is {current} bytes; it cannot change by {} bytes",
                request.capacity
            ))
        })?;
        if new_size < current && !request.shrink {
            return Err(bad_request(format!(
                "storage volume '{name}' is {current} bytes; shrinking it to {new_size} bytes loses data, use --shrink to confirm"
            )));
        }
        image
            .resize(new_size, request.shrink)
            .and_then(|()| image.flush())
            .map_err(|e| image_error(&format!("cannot resize storage volume '{name}'"), e))?;
        drop(image);
        tracing::info!(pool = %pool.name, volume = %name, new_size, "volume resized");
        let (_, meta) = volume_file(&pool, name)?;
        read_volume(&pool, name, &record, &meta)
    }

    /// Makes `domain` (the launched copy; the stored definition keeps its references) name
    /// files only: each `<disk type='volume'>` becomes a file disk on the volume's file, in
    /// the format its image has. Refused, naming the disk: an unknown or inactive pool, a
    /// missing volume, and a stated `<driver type=>` that is not the volume's format.
    pub(crate) fn resolve_volume_disks(&self, domain: &mut Domain) -> DaemonResult<()> {
        let name = domain.name.clone();
        for disk in &mut domain.devices.disks {
            let Some(reference) = &disk.volume else {
                continue;
            };
            let dev = disk.target.dev.clone();
            let fail = |err| start_error(&name, &dev, err);
            let pool = self.pools.active_pool(&reference.pool).map_err(fail)?;
            let (path, _) = volume_file(&pool, &reference.volume).map_err(fail)?;
            let found = self
                .volume_record_of(&pool, &reference.volume, &path)
                .map_err(fail)?
                .format;
            if disk.driver.format_stated && disk.driver.format != disk_format_of(found) {
                let stated = image_format_of(disk.driver.format);
                return Err(fail(bad_request(format!(
                    "<driver type='{}'> does not match storage volume '{}' in pool '{}', which is {}",
                    stated.name(),
                    reference.volume,
                    pool.name,
                    found.name(),
                ))));
            }
            disk.disk_type = DiskType::File;
            disk.source = Some(path.display().to_string());
            disk.volume = None;
            disk.driver.format = disk_format_of(found);
            disk.driver.format_stated = true;
        }
        Ok(())
    }

    /// Fills in the backing chain of every qcow2 disk of `domain` (the launched copy, after
    /// [`Daemon::resolve_volume_disks`]), read from the qcow2 headers with the formats they
    /// state, never probed. Where a file is a volume oxvirtd recorded, the record must agree:
    /// the format the disk is opened in, the backing file the volume was made with, and the
    /// format of each backing image. Refused, naming the disk: anything else.
    pub(crate) fn resolve_backing_chains(&self, domain: &mut Domain) -> DaemonResult<()> {
        let name = domain.name.clone();
        for disk in &mut domain.devices.disks {
            let Some(source) = disk.source.clone() else {
                continue;
            };
            let dev = disk.target.dev.clone();
            let fail = |err| start_error(&name, &dev, err);
            let stated = image_format_of(disk.driver.format);
            let record = match std::fs::canonicalize(&source) {
                Ok(key) => self
                    .store
                    .transaction(|tx| store::volume_record(tx, &key))
                    .map_err(|e| fail(db(e)))?,
                Err(_) => None,
            };
            if let Some(record) = &record {
                if record.format != stated {
                    return Err(fail(bad_request(format!(
                        "{source} is a {} volume; the definition opens it as {} (<driver type='{}'/>)",
                        record.format.name(),
                        stated.name(),
                        record.format.name()
                    ))));
                }
            }
            if stated != Format::Qcow2 {
                continue;
            }
            let chain = oxvirt_images::backing_chain(Path::new(&source), Format::Qcow2)
                .map_err(|e| fail(image_error("cannot read its backing chain", e)))?;
            let below = chain.get(1..).unwrap_or_default();
            if let Some(record) = &record {
                let header = below.first().map(|l| (l.path.as_path(), l.format));
                let recorded = record.backing.as_ref().map(|(p, f)| (p.as_path(), *f));
                let agree = match (header, recorded) {
                    (None, None) => true,
                    (Some((a, fa)), Some((b, fb))) => fa == fb && same_file(a, b),
                    // Imported before its backing format was known: the header is all there is.
                    (Some(_), None) => record.origin == VolumeOrigin::Imported,
                    (None, Some(_)) => false,
                };
                if !agree {
                    let show = |b: Option<(&Path, Format)>| match b {
                        Some((path, format)) => format!("{} ({})", path.display(), format.name()),
                        None => "none".to_string(),
                    };
                    return Err(fail(bad_request(format!(
                        "the header of {source} names backing file {}, but oxvirtd recorded {}: the image was changed outside oxvirt",
                        show(header),
                        show(recorded)
                    ))));
                }
            }
            for layer in below {
                if let Some(recorded) = self.recorded_format(&layer.path).map_err(fail)? {
                    if recorded != layer.format {
                        return Err(fail(bad_request(format!(
                            "backing image {} is a {} volume, but an image above it names it {}",
                            layer.path.display(),
                            recorded.name(),
                            layer.format.name()
                        ))));
                    }
                }
            }
            disk.backing_chain = below
                .iter()
                .map(|layer| BackingLayer {
                    path: layer.path.display().to_string(),
                    format: disk_format_of(layer.format),
                })
                .collect();
        }
        Ok(())
    }

    /// Whether `disk` of a stored definition is the file at `path`, also through a volume
    /// reference (a pool that no longer resolves refers to nothing).
    fn disk_is_file(&self, disk: &Disk, path: &Path) -> bool {
        if let Some(source) = &disk.source {
            return same_file(Path::new(source), path);
        }
        let Some(reference) = &disk.volume else {
            return false;
        };
        match self.pools.resolve_pool(&reference.pool) {
            Ok(pool) => same_file(&pool.target.join(&reference.volume), path),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_never_leave_the_pool() {
        for bad in ["", "../x", "a/b", ".hidden", "..", ".", "x\ny"] {
            let err = check_volume_name(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidName, "{bad:?}");
        }
        for good in ["disk.qcow2", "a b", "x..y", "v-1_2"] {
            assert!(check_volume_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn volume_xml_becomes_the_vol_create_as_request() {
        let info = VolumeInfo {
            name: "v.qcow2".to_string(),
            pool: "p".to_string(),
            path: "/p/v.qcow2".to_string(),
            volume_type: "file".to_string(),
            format: "qcow2".to_string(),
            capacity: 1 << 20,
            allocation: 196_608,
            physical: 196_616,
            backing_file: Some("/p/base".to_string()),
            backing_format: Some("raw".to_string()),
        };
        let def = VolumeDef::from_xml(&volume_xml_of(&info)).unwrap();
        let request = create_request_of(&def);
        assert_eq!(
            request,
            CreateVolumeRequest {
                name: "v.qcow2".to_string(),
                capacity: 1 << 20,
                format: "qcow2".to_string(),
                prealloc_metadata: false,
                allocation: Some(196_608),
                backing_vol: Some("/p/base".to_string()),
                backing_format: Some("raw".to_string()),
                cluster_size: None,
            }
        );
        assert_eq!(preallocation_of(&request), Preallocation::Off);
        // libvirt: no <allocation> is all of it; all of it is preallocated, 0 is sparse.
        let def = VolumeDef::from_xml("<volume><name>r</name><capacity>4096</capacity></volume>")
            .unwrap();
        let request = create_request_of(&def);
        assert_eq!(request.allocation, Some(4096));
        assert_eq!(preallocation_of(&request), Preallocation::Falloc);
        let sparse = CreateVolumeRequest {
            allocation: Some(0),
            ..request.clone()
        };
        assert_eq!(preallocation_of(&sparse), Preallocation::Off);
        // vol-create-as sends no allocation: sparse, as before.
        let plain = CreateVolumeRequest {
            allocation: None,
            ..request
        };
        assert_eq!(preallocation_of(&plain), Preallocation::Off);
    }
}
