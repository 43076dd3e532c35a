//! The disks a live migration copies (`migrate --copy-storage-all|inc`, docs/migration.md): the
//! part of [`super::migration`] for guests whose disks are not on storage both hosts reach.
//!
//! - Source (S): [`disks_to_copy`] says which disks go and what D must create for them;
//!   [`Domains::copy_disks`] connects to D's NBD socket once per disk and has QEMU mirror each
//!   disk into it, until every copy is ready (the memory's migration follows);
//!   [`end_copies`] ends them once QEMU completed the migration (the copies stay whole) or when
//!   it fails (the guest goes on here, on its own disks).
//! - Destination (D): [`create_disks`] makes each disk (same path, format and virtual size; for
//!   `--copy-storage-inc` a qcow2 over the same backing file), refusing one that exists;
//!   [`ServeDisks`] is the NBD listening socket D's QEMU serves them on (a descriptor: QEMU
//!   listens nowhere itself); [`IncomingStorage::discard`] removes what D created when the
//!   migration does not end here.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oxvirt_api::{CopyStorage, DiskCopy, PreparedMigration};
use oxvirt_domain::{Disk, DiskDevice, DiskFormat, DiskType, Domain};
use tokio::sync::Notify;

use super::domains::Domains;
use super::error::{bad_request, DaemonError, DaemonResult, ErrorKind};
use super::jobs::{remove_files, IncomingStorage, Job};
use super::migration_tcp::{NbdRelay, RemoteSource};
use super::volumes::image_error;
use crate::engine::{Control, Incoming, NbdServe};

/// How often the copies' progress is asked.
const POLL: Duration = Duration::from_millis(200);
/// How long S waits for D's QEMU to serve the disks (it starts first, under TCG slowly).
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);

fn engine_error(err: crate::engine::EngineError) -> DaemonError {
    DaemonError::new(ErrorKind::Engine, err.message)
}

/// Whether a migration copies `disk`: a writable disk on a file. Read-only disks and CD-ROMs
/// are not copied (they must be on D, as with shared storage).
fn is_copied(disk: &Disk) -> bool {
    disk.device == DiskDevice::Disk
        && !disk.readonly
        && !disk.shareable
        && disk.disk_type == DiskType::File
        && disk.source.is_some()
}

fn image_format(format: DiskFormat) -> oxvirt_images::Format {
    match format {
        DiskFormat::Qcow2 => oxvirt_images::Format::Qcow2,
        DiskFormat::Raw => oxvirt_images::Format::Raw,
    }
}

/// (Source) What D must create for each disk of the guest defined by `xml` (its live
/// definition) that `mode` copies, read from the images here (without locks: the guest runs on
/// them). None without `mode` (shared storage).
pub(super) fn disks_to_copy(xml: &str, mode: Option<CopyStorage>) -> DaemonResult<Vec<DiskCopy>> {
    let Some(mode) = mode else {
        return Ok(Vec::new());
    };
    let domain = oxvirt_domain::parse_domain_xml(xml).map_err(super::error::definition_error)?;
    let mut copies = Vec::new();
    for disk in domain.devices.disks.iter().filter(|disk| is_copied(disk)) {
        let Some(path) = &disk.source else { continue };
        let dev = &disk.target.dev;
        let image = oxvirt_images::Image::open(
            Path::new(path),
            &oxvirt_images::OpenOptions {
                format: Some(image_format(disk.driver.format)),
                force_share: true,
                no_backing: true,
                ..Default::default()
            },
        )
        .map_err(|err| image_error(&format!("cannot read disk {dev} ({path})"), err))?;
        let (backing_file, backing_format) = match (mode, image.as_qcow2()) {
            (CopyStorage::Inc, Some(qcow2)) => (
                qcow2.header().backing_file.clone(),
                qcow2.header().backing_format.clone(),
            ),
            _ => (None, None),
        };
        if mode == CopyStorage::Inc && backing_file.is_none() {
            return Err(bad_request(format!(
                "--copy-storage-inc copies the top image of each disk over its backing file, but disk {dev} ({path}) has no backing file: use --copy-storage-all"
            )));
        }
        copies.push(DiskCopy {
            dev: dev.clone(),
            path: path.clone(),
            format: disk.driver.format.as_str().to_string(),
            size: image.virtual_size(),
            backing_file,
            backing_format,
        });
    }
    Ok(copies)
}

impl Domains {
    /// (Source) Once D's QEMU serves the disks on its NBD socket, has QEMU copy each disk of
    /// `copies` into it and waits until every copy is ready (`job` shows the progress;
    /// `domjobabort` stops the wait). On an error the copies started are left for
    /// [`end_copies`]. Nothing to do without copies.
    pub(super) async fn copy_disks(
        &self,
        control: &dyn Control,
        prepared: &PreparedMigration,
        copies: &[DiskCopy],
        mode: Option<CopyStorage>,
        job: &Job,
    ) -> DaemonResult<()> {
        if copies.is_empty() {
            return Ok(());
        }
        // A remote destination's port, or a local one's socket.
        let (place, tcp) = match (&prepared.nbd_address, &prepared.nbd_socket) {
            (Some(address), _) => (address.as_str(), true),
            (None, Some(socket)) => (socket.as_str(), false),
            (None, None) => return Err(DaemonError::new(
                ErrorKind::InvalidState,
                "the destination serves no disks to copy (an oxvirtd without --copy-storage-*?)",
            )),
        };
        let shallow = mode == Some(CopyStorage::Inc);
        let deadline = tokio::time::Instant::now() + SERVE_TIMEOUT;
        for copy in copies {
            let connection = loop {
                // The socket appears (the port listens) once D's QEMU serves every disk.
                let attempt = if tcp {
                    super::migration_tcp::connect(place).await
                } else {
                    match tokio::net::UnixStream::connect(place).await {
                        Ok(stream) => stream.into_std().map(std::os::fd::OwnedFd::from),
                        Err(err) => Err(err),
                    }
                };
                match attempt {
                    Ok(connection) => break connection,
                    Err(err) if tokio::time::Instant::now() >= deadline => {
                        return Err(DaemonError::new(
                            ErrorKind::Timeout,
                            format!(
                                "the destination did not serve the disks on {place} within {} s: {err}",
                                SERVE_TIMEOUT.as_secs()
                            ),
                        ));
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = job.abort.notified() => return Err(super::jobs::aborted()),
                    () = tokio::time::sleep(POLL) => {}
                }
            };
            control
                .copy_disk(&copy.dev, connection.as_fd(), shallow)
                .await
                .map_err(|err| {
                    DaemonError::new(
                        ErrorKind::Engine,
                        format!("cannot copy disk {}: {}", copy.dev, err.message),
                    )
                })?;
        }
        loop {
            let progress = control.disk_copies().await.map_err(engine_error)?;
            for copy in copies {
                match progress.iter().find(|job| job.dev == copy.dev) {
                    None => {
                        return Err(DaemonError::new(
                            ErrorKind::Engine,
                            format!("the copy of disk {} ended before it was ready", copy.dev),
                        ))
                    }
                    Some(job) if job.error.is_some() || job.status == "concluded" => {
                        return Err(DaemonError::new(
                            ErrorKind::Engine,
                            format!(
                                "the copy of disk {} failed: {}",
                                copy.dev,
                                job.error.as_deref().unwrap_or("no reason given")
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
            job.update_disks(&progress);
            if progress.iter().all(|job| job.ready) {
                return Ok(());
            }
            tokio::select! {
                () = job.abort.notified() => return Err(super::jobs::aborted()),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// (Source) Ends the copies of `copies`: after QEMU completed the migration their targets are
/// whole; after a failure the guest goes on with its own disks here.
pub(super) async fn end_copies(control: &dyn Control, copies: &[DiskCopy]) -> DaemonResult<()> {
    if copies.is_empty() {
        return Ok(());
    }
    let devs: Vec<String> = copies.iter().map(|copy| copy.dev.clone()).collect();
    control.end_disk_copies(&devs).await.map_err(|err| {
        DaemonError::new(
            ErrorKind::Engine,
            format!("cannot end the disk copies: {}", err.message),
        )
    })
}

/// (Destination) The files a prepare created, removed again when dropped unless kept.
pub(super) struct CreatedDisks {
    paths: Vec<PathBuf>,
}

impl CreatedDisks {
    /// The files stay; [`IncomingStorage::discard`] removes them if the migration fails.
    fn keep(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.paths)
    }
}

impl Drop for CreatedDisks {
    fn drop(&mut self) {
        remove_files(&self.paths);
    }
}

/// (Destination) Creates the disks of `copies` (each one of `domain`'s copied disks) at their
/// paths; none may exist (it would be overwritten). All or none: on an error those created
/// are removed.
pub(super) fn create_disks(domain: &Domain, copies: &[DiskCopy]) -> DaemonResult<CreatedDisks> {
    let mut created = CreatedDisks { paths: Vec::new() };
    for copy in copies {
        let disk = domain
            .devices
            .disks
            .iter()
            .find(|disk| disk.target.dev == copy.dev)
            .filter(|disk| is_copied(disk) && disk.source.as_deref() == Some(copy.path.as_str()))
            .ok_or_else(|| {
                bad_request(format!(
                    "disk {} ({}) to copy is no writable file disk of domain '{}'",
                    copy.dev, copy.path, domain.name
                ))
            })?;
        let path = PathBuf::from(&copy.path);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "disk {} file {} already exists here: copying the disk would overwrite it",
                    copy.dev, copy.path
                ),
            ));
        }
        let backing_format = copy
            .backing_format
            .as_deref()
            .map(oxvirt_images::Format::parse)
            .transpose()
            .map_err(|err| image_error(&format!("disk {}", copy.dev), err))?;
        let options = oxvirt_images::CreateOptions {
            format: image_format(disk.driver.format),
            size: Some(copy.size),
            backing_file: copy.backing_file.clone(),
            backing_format,
            ..Default::default()
        };
        oxvirt_images::create(&path, &options).map_err(|err| {
            image_error(
                &format!("cannot create disk {} ({}) here", copy.dev, copy.path),
                err,
            )
        })?;
        created.paths.push(path);
    }
    Ok(created)
}

/// (Destination) The NBD listening socket of a prepared migration that copies disks. It is
/// bound at a temporary name and renamed to the announced one once QEMU serves every disk, so
/// that S's connections never wait on a server not yet there.
pub(super) struct ServeDisks {
    listener: std::os::unix::net::UnixListener,
    /// A remote source's TCP port to the socket, opened once QEMU serves.
    relay: Option<Arc<NbdRelay>>,
    devs: Vec<String>,
    partial: PathBuf,
    socket: PathBuf,
    ready: Notify,
}

impl ServeDisks {
    /// Binds the listener for `copies` next to `socket` (the path S is told); none without
    /// copies.
    /// From a remote source, also the port it reaches the socket through
    /// ([`ServeDisks::address`]), on a port of `ports`.
    pub(super) fn bind(
        socket: PathBuf,
        copies: &[DiskCopy],
        remote: Option<(RemoteSource, std::ops::RangeInclusive<u16>)>,
    ) -> DaemonResult<Option<ServeDisks>> {
        if copies.is_empty() {
            return Ok(None);
        }
        let relay = match remote {
            Some((remote, ports)) => Some(Arc::new(NbdRelay::bind(
                remote,
                &ports,
                socket.clone(),
                copies.len(),
            )?)),
            None => None,
        };
        let partial = socket.with_extension("partial");
        let listener = std::os::unix::net::UnixListener::bind(&partial).map_err(|err| {
            super::error::internal(&format!("cannot listen on {}", partial.display()), err)
        })?;
        Ok(Some(ServeDisks {
            listener,
            relay,
            devs: copies.iter().map(|copy| copy.dev.clone()).collect(),
            partial,
            socket,
            ready: Notify::new(),
        }))
    }

    /// The socket's announced name.
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The TCP address a remote source connects to, if it is one.
    pub(super) fn address(&self) -> Option<std::net::SocketAddr> {
        self.relay.as_ref().map(|relay| relay.address())
    }

    /// How D's QEMU receives the migration `stream` and serves the disks.
    pub(super) fn incoming<'a>(&'a self, stream: BorrowedFd<'a>) -> Incoming<'a> {
        Incoming::StreamCopyingDisks(
            stream,
            NbdServe {
                listener: self.listener.as_fd(),
                disks: &self.devs,
                ready: &self.ready,
            },
        )
    }

    /// Runs `launch` (the start of D's QEMU with [`ServeDisks::incoming`]), giving the socket
    /// its announced name as soon as QEMU serves the disks.
    pub(super) async fn while_launching<T>(
        &self,
        launch: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(launch);
        tokio::select! {
            done = &mut launch => done,
            () = self.ready.notified() => {
                if let Err(err) = std::fs::rename(&self.partial, &self.socket) {
                    tracing::error!("cannot rename {}: {err}", self.partial.display());
                }
                if let Some(relay) = &self.relay {
                    relay.start();
                }
                launch.await
            }
        }
    }

    /// What stays to clean up once the prepare succeeded.
    pub(super) fn storage(&self, created: CreatedDisks) -> IncomingStorage {
        IncomingStorage::new(
            created.keep(),
            vec![self.partial.clone(), self.socket.clone()],
            self.relay.clone(),
        )
    }
}

impl Drop for ServeDisks {
    /// Once QEMU loaded the state (or failed to), or the prepare failed: no one connects any
    /// more (QEMU keeps its own copy of the listener until the NBD server stops).
    fn drop(&mut self) {
        remove_files(&[self.partial.clone(), self.socket.clone()]);
    }
}

/// (Destination) Once the state is loaded and before the guest resumes: D's QEMU stops serving
/// the disks (S ended its copies already).
pub(super) async fn stop_serving(
    control: &dyn Control,
    storage: Option<&IncomingStorage>,
) -> DaemonResult<()> {
    let Some(storage) = storage else {
        return Ok(());
    };
    control.stop_serving_disks().await.map_err(|err| {
        DaemonError::new(
            ErrorKind::Engine,
            format!("cannot stop serving the copied disks: {}", err.message),
        )
    })?;
    storage.served();
    Ok(())
}
