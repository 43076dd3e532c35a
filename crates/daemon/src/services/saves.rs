//! Saved machine states (more of [`Domains`]): `save`, `restore`, `save-image-dumpxml`, managed
//! saves (`managedsave`, `managedsave-remove`, and `start` resuming from one), and the one save
//! image format every engine writes into.
//!
//! A save image is, in this order:
//! - a 64-byte header, little-endian: the magic `OxvirtSaveImage\0`, the format version (u32),
//!   flags (u32; bit 0: the guest runs after a restore), the engine that wrote the state (8
//!   bytes, its name NUL-padded), the XML's length, the offset of the engine's state stream and
//!   the stream's length (u64 each; the length is 0 until the save completed);
//! - the domain XML the guest ran with (its live definition), so a restore recreates the same
//!   machine;
//! - zeroes up to the next 4 KiB boundary, then the engine's state stream
//!   ([`StateFile`]: written by [`crate::engine::Control::save_state`], read by
//!   [`crate::engine::Engine::launch`] with `incoming`) up to the end of the file.
//!
//! An image is written next to its final name (`.NAME.partial`) and renamed once complete, so a
//! failed save leaves any earlier file of that name as it was. Reading checks the magic, the
//! version, the engine and every length against the file's size before anything is launched or
//! stored: a foreign, truncated or unfinished file is refused, naming the file.
//!
//! A managed save is such an image in `STATE_DIR/save/UUID.save`; its existence is the state
//! (`dominfo`'s "Managed save: yes"). oxvirt has no transient domains: restoring an image of a
//! domain this oxvirtd does not know defines it from the image's XML (undone if the restore
//! fails).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvirt_api::{DomainState, DomainSummary, Engine as EngineKind, RunAfter};
use oxvirt_domain::Domain;
use uuid::Uuid;

use super::domains::Domains;
use super::error::{
    bad_request, db, definition_error, engine_failure, internal, invalid_state, DaemonError,
    DaemonResult, ErrorKind,
};
use super::guests::{Intent, Vm};
use crate::engine::{Incoming, StateFile};
use crate::state_dir::create_private_dir;
use crate::store::{self, DomainRecord};

const MAGIC: &[u8; 16] = b"OxvirtSaveImage\0";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
/// Flag: the guest runs after a restore (else it stays paused).
const FLAG_RUNNING: u32 = 1;
/// The engine's stream starts on a page boundary (an engine may read it with direct I/O).
const STATE_ALIGN: u64 = 4096;

/// What the header of a save image says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    running: bool,
    engine: EngineKind,
    xml_len: u64,
    state_offset: u64,
    /// 0 until the save completed.
    state_len: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut bytes = [0u8; HEADER_LEN as usize];
        bytes[0..16].copy_from_slice(MAGIC);
        bytes[16..20].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.running { FLAG_RUNNING } else { 0 };
        bytes[20..24].copy_from_slice(&flags.to_le_bytes());
        let engine = self.engine.to_string();
        bytes[24..24 + engine.len()].copy_from_slice(engine.as_bytes());
        bytes[32..40].copy_from_slice(&self.xml_len.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.state_offset.to_le_bytes());
        bytes[48..56].copy_from_slice(&self.state_len.to_le_bytes());
        bytes
    }

    /// The header in `bytes`, checked against `file_len`, the size of the file it came from.
    fn decode(bytes: &[u8], file_len: u64, path: &Path) -> DaemonResult<Header> {
        let file = path.display();
        let refuse = |what: String| DaemonError::new(ErrorKind::BadRequest, what);
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(refuse(format!(
                "{file} is not an oxvirt save image (it does not start with oxvirt's save image header)"
            )));
        }
        if bytes.len() < HEADER_LEN as usize {
            return Err(refuse(format!(
                "save image {file} is truncated: it ends inside its {HEADER_LEN}-byte header"
            )));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut le = [0u8; 8];
            le.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(le)
        };
        let version = u32_at(16);
        if version != VERSION {
            return Err(refuse(format!(
                "save image {file} has format version {version}; this oxvirtd reads version {VERSION}"
            )));
        }
        let flags = u32_at(20);
        if flags & !FLAG_RUNNING != 0 {
            return Err(refuse(format!(
                "save image {file} has unknown flags {flags:#x}"
            )));
        }
        let name = &bytes[24..32];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let engine = match name {
            b"qemu" => EngineKind::Qemu,
            b"native" => EngineKind::Native,
            other => {
                return Err(refuse(format!(
                    "save image {file} was written by an unknown engine '{}'",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let header = Header {
            running: flags & FLAG_RUNNING != 0,
            engine,
            xml_len: u64_at(32),
            state_offset: u64_at(40),
            state_len: u64_at(48),
        };
        let max_xml = oxvirt_xml::Limits::DEFAULT.max_bytes as u64;
        if header.xml_len == 0
            || header.xml_len > max_xml
            || header.state_offset < HEADER_LEN + header.xml_len
        {
            return Err(refuse(format!(
                "save image {file} has a damaged header (XML of {} bytes, machine state at offset {})",
                header.xml_len, header.state_offset
            )));
        }
        if header.state_len == 0 {
            return Err(refuse(format!(
                "save image {file} is incomplete: the save that wrote it did not finish"
            )));
        }
        let end = header.state_offset.checked_add(header.state_len);
        if end != Some(file_len) {
            return Err(refuse(format!(
                "save image {file} is {}: it is {file_len} bytes, its header says {} bytes of \
                 machine state from offset {}",
                if end.is_some_and(|end| end < file_len) {
                    "damaged"
                } else {
                    "truncated"
                },
                header.state_len,
                header.state_offset
            )));
        }
        Ok(header)
    }
}

/// A save image read and checked: its header, its domain XML and that XML parsed.
#[derive(Debug)]
pub(super) struct SaveImage {
    path: PathBuf,
    header: Header,
    xml: String,
    domain: Domain,
}

impl SaveImage {
    /// Reads and checks the image at `path` (stat first: a FIFO or device is refused unopened).
    pub(super) fn read(path: &Path) -> DaemonResult<SaveImage> {
        let file = path.display();
        let cannot = |err: std::io::Error| {
            let kind = if err.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::BadRequest
            };
            DaemonError::new(kind, format!("cannot read save image {file}: {err}"))
        };
        let meta = std::fs::metadata(path).map_err(cannot)?;
        if !meta.is_file() {
            return Err(bad_request(format!(
                "save image {file} is not a regular file"
            )));
        }
        let mut opened = File::open(path).map_err(cannot)?;
        let file_len = opened.metadata().map_err(cannot)?.len();
        let mut bytes = Vec::with_capacity(HEADER_LEN as usize);
        (&mut opened)
            .take(HEADER_LEN)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        let header = Header::decode(&bytes, file_len, path)?;
        let mut xml = Vec::new();
        (&mut opened)
            .take(header.xml_len)
            .read_to_end(&mut xml)
            .map_err(cannot)?;
        let xml = String::from_utf8(xml).map_err(|_| {
            bad_request(format!(
                "save image {file} is damaged: its domain XML is not UTF-8"
            ))
        })?;
        let domain = oxvirt_domain::parse_domain_xml(&xml).map_err(|err| {
            definition_error(err).context(format!("the domain XML in save image {file}"))
        })?;
        Ok(SaveImage {
            path: path.to_path_buf(),
            header,
            xml,
            domain,
        })
    }

    pub(super) fn state(&self) -> StateFile {
        StateFile {
            path: self.path.clone(),
            offset: self.header.state_offset,
        }
    }

    /// The length of the engine's state stream ([`SaveImage::state`]).
    pub(super) fn state_len(&self) -> u64 {
        self.header.state_len
    }
}

/// A save image being written: header (without the stream's length) and XML are in place.
#[derive(Debug)]
struct NewImage {
    file: File,
    partial: PathBuf,
    target: PathBuf,
    header: Header,
}

impl NewImage {
    /// Starts the image for `target` in `.NAME.partial` beside it (private, replacing a
    /// leftover of an earlier failed save).
    fn create(
        target: &Path,
        xml: &str,
        engine: EngineKind,
        running: bool,
    ) -> DaemonResult<NewImage> {
        let name = target
            .file_name()
            .ok_or_else(|| bad_request(format!("{} names no file", target.display())))?;
        let partial = target.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        let cannot = |err: std::io::Error| {
            bad_request(format!(
                "cannot write save image {}: {err}",
                target.display()
            ))
        };
        match std::fs::remove_file(&partial) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(cannot(err)),
            _ => {}
        }
        let xml_len = xml.len() as u64;
        let header = Header {
            running,
            engine,
            xml_len,
            state_offset: (HEADER_LEN + xml_len).div_ceil(STATE_ALIGN) * STATE_ALIGN,
            state_len: 0,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(cannot)?;
        let padding = header.state_offset - HEADER_LEN - xml_len;
        let written = file
            .write_all(&header.encode())
            .and_then(|()| file.write_all(xml.as_bytes()))
            .and_then(|()| file.write_all(&vec![0u8; padding as usize]));
        let image = NewImage {
            file,
            partial,
            target: target.to_path_buf(),
            header,
        };
        if let Err(err) = written {
            image.discard();
            return Err(cannot(err));
        }
        Ok(image)
    }

    fn state(&self) -> StateFile {
        StateFile {
            path: self.partial.clone(),
            offset: self.header.state_offset,
        }
    }

    /// Records the stream's length, syncs and gives the image its name.
    fn finish(mut self) -> DaemonResult<()> {
        let target = self.target.display().to_string();
        let done = (|| -> Result<(), String> {
            let len = self.file.metadata().map_err(|e| e.to_string())?.len();
            if len <= self.header.state_offset {
                return Err("the engine wrote no machine state".to_string());
            }
            self.header.state_len = len - self.header.state_offset;
            self.file
                .seek(SeekFrom::Start(0))
                .and_then(|_| self.file.write_all(&self.header.encode()))
                .and_then(|()| self.file.sync_all())
                .and_then(|()| std::fs::rename(&self.partial, &self.target))
                .map_err(|e| e.to_string())
        })();
        match done {
            Ok(()) => Ok(()),
            Err(err) => {
                self.discard();
                Err(internal(
                    &format!("cannot complete save image {target}"),
                    err,
                ))
            }
        }
    }

    fn discard(self) {
        if let Err(err) = std::fs::remove_file(&self.partial) {
            tracing::warn!("cannot remove {}: {err}", self.partial.display());
        }
    }
}

/// A path the client gave for a file on this host: absolute, since oxvirtd's working directory
/// means nothing to it.
fn host_path(file: &str) -> DaemonResult<PathBuf> {
    let path = PathBuf::from(file);
    if !path.is_absolute() {
        return Err(bad_request(format!(
            "save image path '{file}' is not absolute (it is a path on oxvirtd's host)"
        )));
    }
    Ok(path)
}

/// How [`Domains::with_guest_offline`] stops a guest, and where it resumes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Halt<'a> {
    /// Its machine state is saved into this save image first, and it resumes from there
    /// (also when the work failed).
    SaveTo(&'a Path),
    /// Its current state is thrown away (a revert), and it starts from this save image once
    /// the work succeeded (it stays shut off when the work failed: the image no longer fits
    /// the disks). A guest that is not running is not stopped.
    Replace(&'a Path),
}

/// Why a start failed that should have resumed the managed save at `path`, and the way out.
fn cannot_resume(record: &DomainRecord, path: &Path) -> String {
    format!(
        "domain '{}' cannot resume from its managed save {} (managedsave-remove discards it; \
         the next start then boots)",
        record.name,
        path.display()
    )
}

/// How a restore leaves the guest: as asked, else as the image says.
fn runs_after(after: Option<RunAfter>, image: &SaveImage) -> bool {
    match after {
        Some(RunAfter::Running) => true,
        Some(RunAfter::Paused) => false,
        None => image.header.running,
    }
}

impl Domains {
    /// virsh save: the guest's state into `file`; the domain is then shut off (reason `saved`).
    pub async fn save(
        self: &Arc<Self>,
        id: &str,
        file: &str,
        after: Option<RunAfter>,
    ) -> DaemonResult<DomainSummary> {
        let target = host_path(file)?;
        let record = self.guests.resolve(id)?;
        self.save_guest(&record, &target, after).await?;
        self.summary(&record)
    }

    /// virsh managedsave: as `save`, into the domain's managed save, which its next start
    /// resumes.
    pub async fn managed_save(
        self: &Arc<Self>,
        id: &str,
        after: Option<RunAfter>,
    ) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let target = self.guests.managed_save_path(&record.uuid);
        if let Some(dir) = target.parent() {
            create_private_dir(dir)
                .map_err(|e| internal(&format!("cannot create {}", dir.display()), e))?;
        }
        self.save_guest(&record, &target, after).await?;
        self.summary(&record)
    }

    /// virsh managedsave-remove: the next start boots. Removing none is no error (libvirt).
    pub fn managed_save_remove(&self, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (_vm, _guard) = self.guests.begin(&record)?;
        self.remove_managed_save(&record)?;
        self.summary(&record)
    }

    /// Whether the domain `uuid` has a managed save.
    pub(super) fn has_managed_save(&self, uuid: &Uuid) -> bool {
        self.guests.managed_save_path(uuid).is_file()
    }

    pub(super) fn remove_managed_save(&self, record: &DomainRecord) -> DaemonResult<()> {
        let path = self.guests.managed_save_path(&record.uuid);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(domain = %record.name, "managed save removed");
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(internal(&format!("cannot remove {}", path.display()), err)),
        }
    }

    /// virsh save-image-dumpxml: the domain XML inside a save image.
    pub fn save_image_xml(&self, file: &str) -> DaemonResult<String> {
        Ok(SaveImage::read(&host_path(file)?)?.xml)
    }

    /// Pauses a running guest, writes its image to `target`, then ends its process.
    async fn save_guest(
        self: &Arc<Self>,
        record: &DomainRecord,
        target: &Path,
        after: Option<RunAfter>,
    ) -> DaemonResult<()> {
        let (vm, _guard) = self.guests.begin(record)?;
        self.save_locked(&vm, record, target, after, Intent::Save)
            .await
    }

    /// [`Domains::save_guest`] with the domain's operation lock held by the caller; `intent`
    /// says why the guest ends once saved (a save, or a native guest's migration:
    /// migration_native.rs).
    pub(super) async fn save_locked(
        self: &Arc<Self>,
        vm: &Vm,
        record: &DomainRecord,
        target: &Path,
        after: Option<RunAfter>,
        intent: Intent,
    ) -> DaemonResult<()> {
        let live = self.guests.live_or_not_running(vm, record)?;
        let state = self.guests.current_state(record)?;
        if !matches!(state, DomainState::Running | DomainState::Paused) {
            return Err(invalid_state(format!(
                "domain '{}' is {state}; only a running or paused domain can be saved",
                record.name
            )));
        }
        let control = self.guests.control_of(&live, record)?;
        // What dumpxml shows: the definition it runs with, media changed since included.
        let xml = self.live_xml(record)?.unwrap_or_else(|| record.xml.clone());
        let domain = oxvirt_domain::parse_domain_xml(&xml).map_err(|err| {
            internal(
                &format!("live definition of domain '{}' does not parse", record.name),
                err,
            )
        })?;
        let running = match after {
            Some(RunAfter::Running) => true,
            Some(RunAfter::Paused) => false,
            None => state == DomainState::Running,
        };
        // A path that cannot be written fails here, with the guest untouched.
        let image = NewImage::create(target, &xml, self.engine.kind_of(&domain), running)?;
        let was_running = state == DomainState::Running;
        if was_running {
            if let Err(err) = control.pause().await {
                image.discard();
                return Err(engine_failure(&record.name, err));
            }
        }
        let saved = match control.save_state(&image.state()).await {
            Ok(()) => image.finish(),
            Err(err) => {
                image.discard();
                Err(engine_failure(&record.name, err))
            }
        };
        if let Err(err) = saved {
            if was_running {
                if let Err(resume) = control.resume().await {
                    tracing::error!(domain = %record.name, "cannot resume after a failed save: {resume}");
                }
            }
            return Err(err);
        }
        tracing::info!(domain = %record.name, file = %target.display(), "saved");
        // Its state is in the image: the guest's process ends, and the domain is shut off.
        self.end_guest(vm, record, &live, intent).await
    }

    /// Runs `work` while the guest's process is stopped, for what the images its engine holds
    /// open forbid (the native engine's internal snapshots: services/snapshots.rs), then
    /// relaunches the guest from a save image as `halt` says, keeping its runtime id, running
    /// or paused as `after` says (else as the image says). The caller holds the operation
    /// lock and undoes what a failed `work` did; its error is returned.
    pub(super) async fn with_guest_offline<T>(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        halt: Halt<'_>,
        work: impl FnOnce() -> DaemonResult<T>,
        after: Option<RunAfter>,
    ) -> DaemonResult<T> {
        let keep_id = self.store.runtime(&record.uuid).map_err(db)?.map(|r| r.id);
        let resume_from = match halt {
            Halt::SaveTo(image) => {
                if let Some(dir) = image.parent() {
                    create_private_dir(dir)
                        .map_err(|e| internal(&format!("cannot create {}", dir.display()), e))?;
                }
                self.save_locked(vm, record, image, None, Intent::Save)
                    .await?;
                image
            }
            Halt::Replace(image) => {
                if keep_id.is_some() {
                    let live = self.guests.live_or_not_running(vm, record)?;
                    self.end_guest(vm, record, &live, Intent::Destroy).await?;
                }
                image
            }
        };
        let worked = work();
        if worked.is_err() && matches!(halt, Halt::Replace(_)) {
            return worked;
        }
        let resumed = async {
            let image = SaveImage::read(resume_from)?;
            // `work` may have changed the definition (a revert restores the snapshot's).
            let record = self
                .store
                .domain_by_uuid(&record.uuid)
                .map_err(db)?
                .unwrap_or_else(|| record.clone());
            self.start_from_image(vm, &record, &image, after, keep_id)
                .await
        }
        .await;
        match (worked, resumed) {
            (Ok(value), Ok(_)) => Ok(value),
            (Err(err), Ok(_)) => Err(err),
            (Ok(_), Err(err)) => Err(err.context(format!(
                "domain '{}' is shut off: it could not resume from {}",
                record.name,
                resume_from.display()
            ))),
            (Err(err), Err(resume)) => {
                tracing::error!(domain = %record.name, "cannot resume after a failure: {resume}");
                Err(err.context(format!(
                    "domain '{}' is shut off (it could not resume: {})",
                    record.name, resume.message
                )))
            }
        }
    }

    /// virsh restore: starts the domain saved in `file` where it left off.
    pub async fn restore(
        self: &Arc<Self>,
        file: &str,
        after: Option<RunAfter>,
    ) -> DaemonResult<DomainSummary> {
        let path = host_path(file)?;
        let read = path.clone();
        let image = tokio::task::spawn_blocking(move || SaveImage::read(&read))
            .await
            .map_err(|err| internal("reading the save image", err))??;
        let (uuid, name) = (image.domain.uuid, image.domain.name.clone());
        let (record, defined_here) = match self.store.domain_by_uuid(&uuid).map_err(db)? {
            Some(record) if record.name != name => {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "save image {} holds domain '{name}', but its uuid {uuid} belongs to domain '{}' here",
                        path.display(),
                        record.name
                    ),
                ))
            }
            Some(record) => (record, false),
            None => {
                self.define(&image.xml)
                    .map_err(|err| err.context(format!("save image {}", path.display())))?;
                let record = self.store.domain_by_uuid(&uuid).map_err(db)?.ok_or_else(|| {
                    internal("restore", format!("domain '{name}' vanished after its definition"))
                })?;
                (record, true)
            }
        };
        let restored = match self.guests.begin(&record) {
            Ok((vm, _guard)) => {
                self.start_from_image(&vm, &record, &image, after, None)
                    .await
            }
            Err(err) => Err(err),
        };
        if restored.is_err() && defined_here {
            // Nothing of a failed restore stays: not even the definition it brought.
            let removed = self.store.transaction_or(db, |tx| {
                if store::runtime(tx, &uuid).map_err(db)?.is_none() {
                    store::delete_domain(tx, &uuid).map_err(db)?;
                }
                Ok(())
            });
            if let Err(err) = removed {
                tracing::error!(domain = %name, "cannot undo the definition of a failed restore: {err}");
            }
            self.guests.forget(&uuid);
        }
        let summary = restored?;
        tracing::info!(domain = %name, file = %path.display(), "restored");
        Ok(summary)
    }

    /// The domain's managed save, read and checked, if it has one.
    pub(super) fn managed_save_image(
        &self,
        record: &DomainRecord,
    ) -> DaemonResult<Option<SaveImage>> {
        let path = self.guests.managed_save_path(&record.uuid);
        if !path.exists() {
            return Ok(None);
        }
        SaveImage::read(&path)
            .map(Some)
            .map_err(|err| err.context(cannot_resume(record, &path)))
    }

    /// `start` of a domain with a managed save: resumes it, then removes the save.
    pub(super) async fn start_from_managed_save(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        image: SaveImage,
        keep_id: Option<u32>,
    ) -> DaemonResult<DomainSummary> {
        let summary = self
            .start_from_image(vm, record, &image, None, keep_id)
            .await
            .map_err(|err| err.context(cannot_resume(record, &image.path)))?;
        self.remove_managed_save(record)?;
        Ok(summary)
    }

    /// Launches the domain from `image` (its XML, its engine's state); the caller holds the
    /// domain's operation lock.
    pub(super) async fn start_from_image(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        image: &SaveImage,
        after: Option<RunAfter>,
        keep_id: Option<u32>,
    ) -> DaemonResult<DomainSummary> {
        if let Some(runtime) = self.store.runtime(&record.uuid).map_err(db)? {
            return Err(invalid_state(format!(
                "domain '{}' is already {}",
                record.name, runtime.state
            )));
        }
        let engine = self.engine.kind_of(&image.domain);
        if engine != image.header.engine {
            return Err(bad_request(format!(
                "save image {} holds a machine state of the {} engine, but domain '{}' runs on the {engine} engine",
                image.path.display(),
                image.header.engine,
                record.name
            )));
        }
        // The machine runs with the definition it was saved with (its live definition).
        let saved = DomainRecord {
            xml: image.xml.clone(),
            ..record.clone()
        };
        self.launch_locked(
            vm,
            &saved,
            image.domain.clone(),
            keep_id,
            Some(Incoming::Saved(&image.state())),
        )
        .await?;
        if runs_after(after, image) {
            let control = self.guests.running_control(vm, record)?;
            control.resume().await.map_err(|err| {
                engine_failure(&record.name, err).context("restored, but it stays paused")
            })?;
            self.guests
                .set_state(vm, &record.uuid, DomainState::Running, "restored");
        }
        self.summary(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(state_len: u64) -> Header {
        Header {
            running: true,
            engine: EngineKind::Qemu,
            xml_len: 100,
            state_offset: 4096,
            state_len,
        }
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let h = header(1000);
        let back = Header::decode(&h.encode(), 5096, Path::new("/x.save")).unwrap();
        assert_eq!(back, h);
        let paused = Header {
            running: false,
            engine: EngineKind::Native,
            ..h
        };
        assert_eq!(
            Header::decode(&paused.encode(), 5096, Path::new("/x.save")).unwrap(),
            paused
        );
    }

    #[test]
    fn foreign_truncated_and_unfinished_images_are_refused_naming_the_file() {
        let path = Path::new("/saves/web.save");
        let err = |bytes: &[u8], len: u64| Header::decode(bytes, len, path).unwrap_err().message;

        let foreign = err(b"QFI\xfb\0\0\0\x03 a qcow2 image", 1 << 20);
        assert!(
            foreign.contains("/saves/web.save is not an oxvirt save image"),
            "{foreign}"
        );
        assert!(err(b"", 0).contains("not an oxvirt save image"));

        let encoded = header(1000).encode();
        let cut = err(&encoded[..40], 40);
        assert!(cut.contains("/saves/web.save is truncated"), "{cut}");
        let short = err(&encoded, 4096 + 999);
        assert!(
            short.contains("is truncated") && short.contains("1000 bytes"),
            "{short}"
        );
        let long = err(&encoded, 4096 + 1001);
        assert!(long.contains("is damaged"), "{long}");

        let unfinished = err(&header(0).encode(), 8192);
        assert!(unfinished.contains("is incomplete"), "{unfinished}");

        let mut version = encoded;
        version[16] = 9;
        assert!(err(&version, 5096).contains("format version 9"));
        let mut engine = encoded;
        engine[24..32].copy_from_slice(b"vmware\0\0");
        assert!(err(&engine, 5096).contains("unknown engine 'vmware'"));
        let overlapping = Header {
            state_offset: 64,
            ..header(1000)
        };
        assert!(err(&overlapping.encode(), 1064).contains("damaged header"));
        // Lengths that overflow when added are a damaged file, not a panic.
        let huge = Header {
            state_offset: u64::MAX,
            ..header(u64::MAX)
        };
        assert!(err(&huge.encode(), 1 << 20).contains("truncated"));
    }

    #[test]
    fn a_new_image_is_named_only_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.save");
        std::fs::write(&target, b"an older image").unwrap();
        let xml = "<domain type='qemu'><name>vm</name><memory>131072</memory>\
                   <os><type>hvm</type></os></domain>";
        let image = NewImage::create(&target, xml, EngineKind::Qemu, false).unwrap();
        let state = image.state();
        assert_eq!(state.offset, 4096);
        {
            let mut file = OpenOptions::new().write(true).open(&state.path).unwrap();
            file.seek(SeekFrom::Start(state.offset)).unwrap();
            file.write_all(b"machine state").unwrap();
        }
        // Until finished, the old file stays.
        assert_eq!(std::fs::read(&target).unwrap(), b"an older image");
        image.finish().unwrap();
        assert!(!state.path.exists());
        let read = SaveImage::read(&target).unwrap();
        assert_eq!(read.xml, xml);
        assert_eq!(read.domain.name, "vm");
        assert!(!read.header.running);
        assert_eq!(read.header.state_len, 13);
        assert_eq!(read.state().offset, 4096);

        // A failed save leaves nothing but what was there.
        let failed = NewImage::create(&target, xml, EngineKind::Qemu, true).unwrap();
        let partial = failed.state().path;
        let err = failed.finish().unwrap_err();
        assert!(err.message.contains("wrote no machine state"), "{err}");
        assert!(!partial.exists());
        assert!(SaveImage::read(&target).is_ok());
    }

    #[test]
    fn images_that_are_no_files_or_hold_bad_xml_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SaveImage::read(&dir.path().join("nope.save")).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        assert!(missing.message.contains("nope.save"), "{missing}");
        let not_file = SaveImage::read(dir.path()).unwrap_err();
        assert!(
            not_file.message.contains("not a regular file"),
            "{not_file}"
        );

        let path = dir.path().join("bad.save");
        let bad_xml = "<domain><name>x</nme></domain>";
        let h = Header {
            running: true,
            engine: EngineKind::Qemu,
            xml_len: bad_xml.len() as u64,
            state_offset: 4096,
            state_len: 1,
        };
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(bad_xml.as_bytes());
        bytes.resize(4097, 0);
        std::fs::write(&path, &bytes).unwrap();
        let err = SaveImage::read(&path).unwrap_err();
        assert!(
            err.message.contains("the domain XML in save image"),
            "{err}"
        );
        assert!(err.message.contains("bad.save"), "{err}");
    }
}
