//! Domain snapshots (more of [`Domains`]): `snapshot-create`, `-list`, `-dumpxml`, `-edit`,
//! `-revert`, `-delete`, as libvirt's QEMU driver does them.
//!
//! - A running or paused guest's internal snapshot holds its memory and device state and every
//!   writable disk, inside the qcow2 images (the engine's `snapshot-save` job); a shut-off
//!   domain's holds its disks only, made here with oxvirt's own qcow2 code (`oxvirt-images`).
//! - A disk-only snapshot (`--disk-only`) puts a new qcow2 overlay on top of each writable disk;
//!   the definitions (stored, pending and live) then name the overlays.
//! - The metadata row is written only after the snapshot's data exists (and an internal
//!   snapshot's data is removed again if the row cannot be written), so a daemon killed
//!   half-way leaves either a usable snapshot or none: at worst an unlisted snapshot tag in an
//!   image, which `oxvirt img snapshot -l` shows and `-d` deletes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvirt_api::{
    CreateSnapshot, DeleteSnapshot, DomainState, DomainSummary, RevertSnapshot, RunAfter,
    SnapshotSummary,
};
use oxvirt_domain::snapshot::{
    validate_snapshot_name, DiskSnapshotKind, MemoryKind, Snapshot, SnapshotDisk, SnapshotRequest,
    SnapshotState,
};
use oxvirt_domain::{DiskDevice, DiskFormat, DiskType, Domain};
use oxvirt_images::{CreateOptions, Format, Image, OpenOptions};

use super::domains::{now_unix, Domains};
use super::error::{
    bad_request, db, engine_failure, internal, invalid_state, not_found, DaemonError, DaemonResult,
    ErrorKind,
};
use super::guests::{stored_domain, Vm};
use super::saves::{Halt, SaveImage};
use super::volumes::image_format_of;
use crate::engine::{DiskOverlay, SnapshotJob};
use crate::store::{self, DomainRecord, SnapshotRecord};

/// What a snapshot does to one disk, with the file it concerns.
#[derive(Debug, Clone)]
struct DiskStep {
    dev: String,
    /// The disk's image now (a volume disk's file).
    path: PathBuf,
    kind: DiskSnapshotKind,
    /// An external snapshot's new overlay.
    overlay: Option<PathBuf>,
    /// The image's format (an overlay's backing format).
    format: DiskFormat,
}

fn no_snapshot(domain: &str, name: &str) -> DaemonError {
    not_found(format!(
        "Domain snapshot not found: no domain snapshot with matching name '{name}' (domain '{domain}')"
    ))
}

fn unsupported(message: String) -> DaemonError {
    DaemonError::new(ErrorKind::Unsupported, message)
}

fn snapshot_of(record: &SnapshotRecord) -> DaemonResult<Snapshot> {
    Snapshot::from_xml(&record.xml).map_err(|err| {
        internal(
            &format!("the stored snapshot '{}' does not parse", record.name),
            err,
        )
    })
}

fn summary_of(record: &SnapshotRecord) -> DaemonResult<SnapshotSummary> {
    let snapshot = snapshot_of(record)?;
    Ok(SnapshotSummary {
        name: record.name.clone(),
        parent: record.parent.clone(),
        creation_time: record.created,
        state: snapshot.state.as_str().to_string(),
        location: snapshot.location().to_string(),
        current: record.current,
    })
}

/// The overlay libvirt names for an external snapshot: the image's path with its extension
/// replaced by the snapshot's name (`/images/vm.qcow2` -> `/images/vm.s1`).
fn default_overlay(image: &Path, snapshot: &str) -> PathBuf {
    image.with_extension(snapshot)
}

fn open_qcow2(path: &Path, dev: &str) -> DaemonResult<Image> {
    Image::open(
        path,
        &OpenOptions {
            format: Some(Format::Qcow2),
            write: true,
            force_share: false,
            no_backing: true,
            repair: false,
            probe_backing_format: true,
        },
    )
    .map_err(|err| {
        bad_request(format!(
            "disk '{dev}' ({}): cannot open its image: {err}",
            path.display()
        ))
    })
}

/// Runs `op` on the qcow2 image of each disk of `steps` that is internal (the domain is shut
/// off: nothing else has them open; the image locks make sure).
fn for_each_internal(
    steps: &[DiskStep],
    mut op: impl FnMut(&mut oxvirt_images::qcow2::Qcow2, &DiskStep) -> oxvirt_images::Result<()>,
) -> DaemonResult<()> {
    for step in steps
        .iter()
        .filter(|s| s.kind == DiskSnapshotKind::Internal)
    {
        let mut image = open_qcow2(&step.path, &step.dev)?;
        let qcow2 = image.as_qcow2_mut().ok_or_else(|| {
            bad_request(format!(
                "disk '{}' ({}) is not qcow2",
                step.dev,
                step.path.display()
            ))
        })?;
        op(qcow2, step).map_err(|err| {
            DaemonError::new(
                ErrorKind::Engine,
                format!("disk '{}' ({}): {err}", step.dev, step.path.display()),
            )
        })?;
    }
    Ok(())
}

/// Takes internal snapshot `name` in each internal disk of `steps`, offline; all or none.
fn take_internal_offline(steps: &[DiskStep], name: &str) -> DaemonResult<()> {
    let mut done: Vec<DiskStep> = Vec::new();
    let taken = for_each_internal(steps, |qcow2, step| {
        // The store knows no snapshot of this name (the caller checked), so one in the image
        // is what a create interrupted before its metadata was written left: it goes.
        if qcow2.snapshots().iter().any(|s| s.name == name) {
            qcow2.snapshot_delete(name)?;
        }
        qcow2.snapshot_create(name)?;
        done.push(step.clone());
        Ok(())
    });
    if taken.is_err() {
        let _ = for_each_internal(&done, |qcow2, _| qcow2.snapshot_delete(name));
    }
    taken
}

/// Deletes internal snapshot `name` from each disk of `steps` that has it, offline.
fn delete_internal_offline(steps: &[DiskStep], name: &str) -> DaemonResult<()> {
    for_each_internal(steps, |qcow2, _| {
        if qcow2.snapshots().iter().any(|s| s.name == name) {
            qcow2.snapshot_delete(name)
        } else {
            Ok(())
        }
    })
}

/// Removes a snapshot's machine state file (a missing one is no error: most snapshots have none).
fn remove_state_file(path: &Path) {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("cannot remove {}: {err}", path.display());
        }
        _ => {}
    }
}

impl Domains {
    /// The internal disk steps for the disks `devs` of `domain` (a volume disk: its file).
    fn internal_steps(&self, domain: &Domain, devs: &[String]) -> DaemonResult<Vec<DiskStep>> {
        let mut resolved = domain.clone();
        self.volumes.resolve_volume_disks(&mut resolved)?;
        Ok(resolved
            .devices
            .disks
            .iter()
            .filter(|d| devs.contains(&d.target.dev))
            .map(|d| DiskStep {
                dev: d.target.dev.clone(),
                path: PathBuf::from(d.source.clone().unwrap_or_default()),
                kind: DiskSnapshotKind::Internal,
                overlay: None,
                format: d.driver.format,
            })
            .collect())
    }

    fn snapshot_record(&self, record: &DomainRecord, name: &str) -> DaemonResult<SnapshotRecord> {
        self.store
            .transaction(|tx| store::snapshot(tx, &record.uuid, name))
            .map_err(db)?
            .ok_or_else(|| no_snapshot(&record.name, name))
    }

    fn snapshot_records(&self, record: &DomainRecord) -> DaemonResult<Vec<SnapshotRecord>> {
        self.store
            .transaction(|tx| store::snapshots(tx, &record.uuid))
            .map_err(db)
    }

    /// `snapshot-list` (and what `snapshot-info`, `-current`, `-parent` read): by name.
    pub fn list_snapshots(&self, id: &str) -> DaemonResult<Vec<SnapshotSummary>> {
        let record = self.guests.resolve(id)?;
        self.snapshot_records(&record)?
            .iter()
            .map(summary_of)
            .collect()
    }

    /// `snapshot-dumpxml`.
    pub fn snapshot_xml(&self, id: &str, name: &str) -> DaemonResult<String> {
        let record = self.guests.resolve(id)?;
        Ok(self.snapshot_record(&record, name)?.xml)
    }

    /// `snapshot-edit`: only the description can change (libvirt's redefinition, which could
    /// change more, is not supported).
    pub fn replace_snapshot_xml(
        &self,
        id: &str,
        name: &str,
        xml: &str,
    ) -> DaemonResult<SnapshotSummary> {
        let record = self.guests.resolve(id)?;
        let (_vm, _guard) = self.guests.begin(&record)?;
        let stored = self.snapshot_record(&record, name)?;
        let old = snapshot_of(&stored)?;
        let new = Snapshot::from_xml(xml).map_err(|err| {
            DaemonError::new(ErrorKind::InvalidXml, format!("snapshot XML: {err}"))
        })?;
        let same_but_description = Snapshot {
            description: old.description.clone(),
            ..new.clone()
        };
        if same_but_description != old {
            return Err(unsupported(format!(
                "snapshot '{name}' of domain '{}': only its <description> can be edited",
                record.name
            )));
        }
        let new_xml = new.to_xml();
        self.store
            .transaction(|tx| {
                store::update_snapshot(tx, &record.uuid, name, stored.parent.as_deref(), &new_xml)
            })
            .map_err(db)?;
        summary_of(&SnapshotRecord {
            xml: new_xml,
            ..stored
        })
    }

    /// The disks of `domain` (the current definition) and what a snapshot does to each.
    fn plan_disks(
        &self,
        record: &DomainRecord,
        domain: &Domain,
        request: &SnapshotRequest,
        name: &str,
        disk_only: bool,
    ) -> DaemonResult<Vec<DiskStep>> {
        let mut resolved = domain.clone();
        self.volumes.resolve_volume_disks(&mut resolved)?;
        for asked in &request.disks {
            let known = resolved.devices.disks.iter().any(|d| {
                d.target.dev == asked.name || d.source.as_deref() == Some(asked.name.as_str())
            });
            if !known {
                return Err(not_found(format!(
                    "domain '{}' has no disk '{}' (<disk name=...> names a target, e.g. vda, or a source path)",
                    record.name, asked.name
                )));
            }
        }
        let mut steps = Vec::new();
        for disk in &resolved.devices.disks {
            let dev = disk.target.dev.clone();
            let asked: Option<&SnapshotDisk> = request
                .disks
                .iter()
                .find(|d| d.name == dev || disk.source.as_deref() == Some(d.name.as_str()));
            let writable = disk.device == DiskDevice::Disk && !disk.readonly && !disk.shareable;
            let default = if !writable {
                DiskSnapshotKind::No
            } else if disk_only {
                DiskSnapshotKind::External
            } else {
                DiskSnapshotKind::Internal
            };
            let kind = asked.map(|a| a.kind).unwrap_or(default);
            if kind == DiskSnapshotKind::No {
                steps.push(DiskStep {
                    dev,
                    path: PathBuf::new(),
                    kind,
                    overlay: None,
                    format: disk.driver.format,
                });
                continue;
            }
            if !writable {
                return Err(bad_request(format!(
                    "disk '{dev}' is a CD-ROM, read-only or shareable: it cannot be snapshotted (snapshot='no')"
                )));
            }
            let path = match (&disk.source, disk.disk_type) {
                (Some(source), DiskType::File | DiskType::Volume) => PathBuf::from(source),
                _ => {
                    return Err(unsupported(format!(
                        "disk '{dev}' is not a file: oxvirt snapshots file disks only"
                    )))
                }
            };
            if kind == DiskSnapshotKind::Internal && disk.driver.format != DiskFormat::Qcow2 {
                return Err(unsupported(format!(
                    "disk '{dev}' ({}) is {}: an internal snapshot needs a qcow2 image (--disk-only makes an external one)",
                    path.display(),
                    disk.driver.format.as_str()
                )));
            }
            let overlay = (kind == DiskSnapshotKind::External).then(|| {
                asked
                    .and_then(|a| a.file.clone())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_overlay(&path, name))
            });
            steps.push(DiskStep {
                dev,
                path,
                kind,
                overlay,
                format: disk.driver.format,
            });
        }
        let kinds: BTreeSet<&str> = steps
            .iter()
            .filter(|s| s.kind != DiskSnapshotKind::No)
            .map(|s| s.kind.as_str())
            .collect();
        if kinds.is_empty() {
            return Err(bad_request(format!(
                "domain '{}' has no disk to snapshot",
                record.name
            )));
        }
        if kinds.len() > 1 {
            return Err(unsupported(
                "mixing internal and external disk snapshots is not supported (libvirt refuses it too)"
                    .to_string(),
            ));
        }
        Ok(steps)
    }

    /// `snapshot-create` / `snapshot-create-as`.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        id: &str,
        request: &CreateSnapshot,
    ) -> DaemonResult<SnapshotSummary> {
        let record = self.guests.resolve(id)?;
        let parsed = if request.xml.trim().is_empty() {
            SnapshotRequest::default()
        } else {
            SnapshotRequest::from_xml(&request.xml).map_err(|err| {
                DaemonError::new(ErrorKind::InvalidXml, format!("snapshot XML: {err}"))
            })?
        };
        let created = now_unix();
        let name = parsed.name.clone().unwrap_or_else(|| created.to_string());
        validate_snapshot_name(&name).map_err(|err| bad_request(err.to_string()))?;
        let (vm, _guard) = self.guests.begin(&record)?;
        if self
            .store
            .transaction(|tx| store::snapshot(tx, &record.uuid, &name))
            .map_err(db)?
            .is_some()
        {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "domain snapshot '{name}' already exists for domain '{}'",
                    record.name
                ),
            ));
        }
        let state = self.guests.current_state(&record)?;
        let active = matches!(state, DomainState::Running | DomainState::Paused);
        if !active && state != DomainState::ShutOff {
            return Err(invalid_state(format!(
                "domain '{}' is {state}: a snapshot needs it running, paused or shut off",
                record.name
            )));
        }
        let memory = match (parsed.memory, request.disk_only) {
            (Some(MemoryKind::External), _) => {
                return Err(unsupported(
                    "external memory snapshots (<memory snapshot='external'>, --memspec) are not supported yet"
                        .to_string(),
                ))
            }
            (Some(MemoryKind::Internal), true) => {
                return Err(bad_request(
                    "--disk-only snapshots cannot hold the guest's memory".to_string(),
                ))
            }
            (Some(MemoryKind::Internal), false) if !active => {
                return Err(bad_request(format!(
                    "domain '{}' is not running: it has no memory to snapshot",
                    record.name
                )))
            }
            (Some(kind), _) => kind,
            (None, false) if active => MemoryKind::Internal,
            (None, _) => MemoryKind::No,
        };
        let domain = self.current_domain(&record)?;
        let disk_only = request.disk_only
            || parsed
                .disks
                .iter()
                .any(|d| d.kind == DiskSnapshotKind::External);
        let steps = self.plan_disks(&record, &domain, &parsed, &name, disk_only)?;
        let external = steps.iter().any(|s| s.kind == DiskSnapshotKind::External);
        if external && memory != MemoryKind::No {
            return Err(unsupported(
                "an external disk snapshot with the guest's memory is not supported yet (use --disk-only)"
                    .to_string(),
            ));
        }
        if !external && active && memory == MemoryKind::No {
            return Err(unsupported(
                "an internal snapshot of a running guest holds its memory too (libvirt's rule); use --disk-only for disks only"
                    .to_string(),
            ));
        }
        let snapshot_state = match (external, state) {
            (true, _) => SnapshotState::DiskSnapshot,
            (false, DomainState::Running) => SnapshotState::Running,
            (false, DomainState::Paused) => SnapshotState::Paused,
            (false, _) => SnapshotState::Shutoff,
        };
        let internal_devs: Vec<String> = steps
            .iter()
            .filter(|s| s.kind == DiskSnapshotKind::Internal)
            .map(|s| s.dev.clone())
            .collect();
        let parent = self
            .snapshot_records(&record)?
            .into_iter()
            .find(|s| s.current)
            .map(|s| s.name);
        let snapshot = Snapshot {
            name: name.clone(),
            description: parsed.description.clone(),
            state: snapshot_state,
            parent: parent.clone(),
            creation_time: created,
            memory,
            memory_file: None,
            disks: steps
                .iter()
                .map(|s| SnapshotDisk {
                    name: s.dev.clone(),
                    kind: s.kind,
                    file: s.overlay.as_ref().map(|p| p.display().to_string()),
                })
                .collect(),
            domain_xml: domain.to_xml(),
        };

        // The row that records it once its data exists: the new snapshot is the current one.
        let row = SnapshotRecord {
            domain: record.uuid,
            name: name.clone(),
            parent,
            created,
            current: true,
            xml: snapshot.to_xml(),
        };
        if !external && active && !self.engine.live_internal_snapshots(&domain) {
            self.create_offline(&vm, &record, &steps, &row).await?;
            tracing::info!(domain = %record.name, snapshot = %name, state = snapshot_state.as_str(), "snapshot created");
            return summary_of(&row);
        }

        // The data first.
        if external {
            self.take_external(&vm, &record, &steps).await?;
        } else if active {
            let control = self.guests.running_control(&vm, &record)?;
            // The store knows no snapshot of this name, so one in the images is what a create
            // interrupted before its metadata was written (oxvirtd killed) left: it goes.
            control
                .snapshot_delete(&name, &internal_devs)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            control
                .snapshot_job(SnapshotJob::Save, &name, &internal_devs[0], &internal_devs)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
        } else {
            take_internal_offline(&steps, &name)?;
        }

        // Then the metadata.
        self.record_snapshot(&record, &row)?;
        tracing::info!(domain = %record.name, snapshot = %name, state = snapshot_state.as_str(), "snapshot created");
        summary_of(&row)
    }

    /// Inserts a snapshot's row; its data exists already (and stays if the row cannot be
    /// written: the error says so).
    fn record_snapshot(&self, record: &DomainRecord, row: &SnapshotRecord) -> DaemonResult<()> {
        let name = &row.name;
        if let Err(err) = self.store.transaction(|tx| store::insert_snapshot(tx, row)) {
            tracing::error!(domain = %record.name, snapshot = %name, "cannot record the snapshot: {}", store::named(err));
            return Err(internal(
                &format!("cannot record snapshot '{name}'; its data stays in the images"),
                "the state database refused the write",
            ));
        }
        Ok(())
    }

    /// The snapshot `row` of a running or paused guest whose engine cannot snapshot its open
    /// images (the native engine): its machine state goes into the snapshot's save image, its
    /// process ends, the qcow2 snapshots are taken offline, and it goes on from that image. A
    /// failure before the row is written leaves no snapshot (no tags, no state file) and the
    /// guest running from its state.
    async fn create_offline(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        steps: &[DiskStep],
        row: &SnapshotRecord,
    ) -> DaemonResult<()> {
        let state = self.guests.snapshot_state_path(&record.uuid, &row.name);
        let mut recorded = false;
        let taken = self
            .with_guest_offline(
                vm,
                record,
                Halt::SaveTo(&state),
                || {
                    take_internal_offline(steps, &row.name)?;
                    if let Err(err) = self.record_snapshot(record, row) {
                        let _ =
                            for_each_internal(steps, |qcow2, _| qcow2.snapshot_delete(&row.name));
                        return Err(err);
                    }
                    recorded = true;
                    Ok(())
                },
                None,
            )
            .await;
        if !recorded {
            remove_state_file(&state);
        }
        taken.map_err(|err| {
            if recorded {
                err.context(format!("snapshot '{}' was taken", row.name))
            } else {
                err
            }
        })
    }

    /// Disk-only snapshot: the overlays are made (backed by each disk's image), the running
    /// guest switches to them at once, and every definition names them from now on.
    async fn take_external(
        self: &Arc<Self>,
        vm: &Vm,
        record: &DomainRecord,
        steps: &[DiskStep],
    ) -> DaemonResult<()> {
        let external: Vec<&DiskStep> = steps
            .iter()
            .filter(|s| s.kind == DiskSnapshotKind::External)
            .collect();
        for step in &external {
            let overlay = step.overlay.as_deref().unwrap_or(Path::new(""));
            if overlay.exists() {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "disk '{}': the overlay {} already exists",
                        step.dev,
                        overlay.display()
                    ),
                ));
            }
        }
        let mut made: Vec<PathBuf> = Vec::new();
        let result = async {
            for step in &external {
                let overlay = step.overlay.clone().unwrap_or_default();
                let backing_format = image_format_of(step.format);
                oxvirt_images::create(
                    &overlay,
                    &CreateOptions {
                        format: Format::Qcow2,
                        backing_file: Some(step.path.display().to_string()),
                        backing_format: Some(backing_format),
                        ..CreateOptions::default()
                    },
                )
                .map_err(|err| {
                    bad_request(format!(
                        "disk '{}': cannot create the overlay {}: {err}",
                        step.dev,
                        overlay.display()
                    ))
                })?;
                made.push(overlay);
            }
            if let Ok(control) = self.guests.running_control(vm, record) {
                let overlays: Vec<DiskOverlay> = external
                    .iter()
                    .map(|s| DiskOverlay {
                        dev: s.dev.clone(),
                        overlay: s.overlay.clone().unwrap_or_default(),
                    })
                    .collect();
                control
                    .add_overlays(&overlays)
                    .await
                    .map_err(|e| engine_failure(&record.name, e))?;
            }
            Ok::<(), DaemonError>(())
        }
        .await;
        if let Err(err) = result {
            for file in made {
                let _ = std::fs::remove_file(file);
            }
            return Err(err);
        }
        self.point_disks_at(record, &external);
        Ok(())
    }

    /// Rewrites every definition of the domain so each disk of `steps` names its overlay.
    fn point_disks_at(&self, record: &DomainRecord, steps: &[&DiskStep]) {
        let rewrite = |domain: &mut Domain| {
            for disk in domain.devices.disks.iter_mut() {
                if let Some(step) = steps.iter().find(|s| s.dev == disk.target.dev) {
                    disk.disk_type = DiskType::File;
                    disk.volume = None;
                    disk.source = step.overlay.as_ref().map(|p| p.display().to_string());
                    disk.driver.format = DiskFormat::Qcow2;
                    disk.backing_chain.clear();
                }
            }
        };
        let result = self.store.transaction(|tx| {
            if let Some(stored) = store::domain_by_uuid(tx, &record.uuid)? {
                if let Ok(mut domain) = stored_domain(&stored) {
                    rewrite(&mut domain);
                    store::update_domain_xml(tx, &record.uuid, &domain.to_xml(), &stored.engine)?;
                }
            }
            if let Some(next) = store::next_definition(tx, &record.uuid)? {
                if let Ok(mut domain) = oxvirt_domain::parse_domain_xml(&next) {
                    rewrite(&mut domain);
                    store::set_next_definition(tx, &record.uuid, &domain.to_xml(), &record.engine)?;
                }
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::error!(domain = %record.name, "cannot point the definition at the snapshot's overlays: {}", store::named(err));
        }
        if let Ok(Some(xml)) = self.live_xml(record) {
            if let Ok(mut domain) = oxvirt_domain::parse_domain_xml(&xml) {
                rewrite(&mut domain);
                if let Err(err) = self.write_live_definition(record, &domain) {
                    tracing::warn!(domain = %record.name, "cannot update the live definition: {err}");
                }
            }
        }
    }

    /// `snapshot-revert`.
    pub async fn revert_snapshot(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        request: &RevertSnapshot,
    ) -> DaemonResult<DomainSummary> {
        if request.running && request.paused {
            return Err(bad_request(
                "--running and --paused are mutually exclusive".to_string(),
            ));
        }
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let stored = self.snapshot_record(&record, name)?;
        let snapshot = snapshot_of(&stored)?;
        if snapshot.location() == "external" {
            return Err(unsupported(format!(
                "revert to external snapshot '{name}' is not supported yet (libvirt 9.0 cannot either)"
            )));
        }
        let devs: Vec<String> = snapshot
            .disks
            .iter()
            .filter(|d| d.kind == DiskSnapshotKind::Internal)
            .map(|d| d.name.clone())
            .collect();
        let snapshot_domain = oxvirt_domain::parse_domain_xml(&snapshot.domain_xml)
            .map_err(|err| internal("the snapshot's domain does not parse", err))?;
        let state = self.guests.current_state(&record)?;
        let active = matches!(state, DomainState::Running | DomainState::Paused);
        if !active && self.has_managed_save(&record.uuid) {
            // The saved memory belongs to the disks as they are now, not as they are after the
            // revert: resuming it later would corrupt them (libvirt discards it too).
            self.remove_managed_save(&record)?;
        }
        let run = request.running || (!request.paused && snapshot.state == SnapshotState::Running);
        match snapshot.state {
            SnapshotState::Running | SnapshotState::Paused
                if !self.engine.live_internal_snapshots(&snapshot_domain) =>
            {
                // The engine keeps the machine state in a save image beside the disks
                // (create_offline): the guest's process ends, the disks go back offline, and
                // it starts from the snapshot's state.
                let state_file = self.guests.snapshot_state_path(&record.uuid, name);
                // A missing or damaged state fails here, with the guest untouched.
                SaveImage::read(&state_file).map_err(|err| {
                    err.context(format!(
                        "snapshot '{name}' of domain '{}' has no usable machine state",
                        record.name
                    ))
                })?;
                let steps = self.internal_steps(&snapshot_domain, &devs)?;
                let after = if run {
                    RunAfter::Running
                } else {
                    RunAfter::Paused
                };
                self.with_guest_offline(
                    &vm,
                    &record,
                    Halt::Replace(&state_file),
                    || {
                        for_each_internal(&steps, |qcow2, _| qcow2.snapshot_apply(name))?;
                        self.restore_definition(&record, &snapshot_domain)
                    },
                    Some(after),
                )
                .await?;
            }
            SnapshotState::Running | SnapshotState::Paused => {
                if !active {
                    // Start from the snapshot's definition, then load its state.
                    self.restore_definition(&record, &snapshot_domain)?;
                    let record = self.guests.resolve(id)?;
                    self.start_locked(&vm, &record, None).await?;
                }
                let control = self.guests.running_control(&vm, &record)?;
                control
                    .snapshot_job(SnapshotJob::Load, name, &devs[0], &devs)
                    .await
                    .map_err(|e| engine_failure(&record.name, e))?;
                if run {
                    control
                        .resume()
                        .await
                        .map_err(|e| engine_failure(&record.name, e))?;
                    self.guests
                        .set_state(&vm, &record.uuid, DomainState::Running, "from snapshot");
                } else {
                    self.guests
                        .set_state(&vm, &record.uuid, DomainState::Paused, "from snapshot");
                }
            }
            SnapshotState::Shutoff | SnapshotState::DiskSnapshot => {
                if active {
                    self.destroy_locked(&vm, &record).await?;
                }
                let steps = self.internal_steps(&snapshot_domain, &devs)?;
                for_each_internal(&steps, |qcow2, _| qcow2.snapshot_apply(name))?;
                self.restore_definition(&record, &snapshot_domain)?;
                if request.running || request.paused {
                    let record = self.guests.resolve(id)?;
                    self.start_locked(&vm, &record, None).await?;
                    if request.paused {
                        let control = self.guests.running_control(&vm, &record)?;
                        control
                            .pause()
                            .await
                            .map_err(|e| engine_failure(&record.name, e))?;
                        self.guests.set_state(
                            &vm,
                            &record.uuid,
                            DomainState::Paused,
                            "from snapshot",
                        );
                    }
                }
            }
        }
        self.store
            .transaction(|tx| store::set_current_snapshot(tx, &record.uuid, Some(name)))
            .map_err(db)?;
        tracing::info!(domain = %record.name, snapshot = %name, "reverted to snapshot");
        let record = self.guests.resolve(id)?;
        self.summary(&record)
    }

    /// The stored definition becomes the snapshot's (when they differ), as libvirt's revert
    /// does; the domain is not running.
    fn restore_definition(&self, record: &DomainRecord, domain: &Domain) -> DaemonResult<()> {
        let xml = domain.to_xml();
        if xml == record.xml {
            return Ok(());
        }
        let engine = self.engine.kind_of(domain).to_string();
        self.store
            .transaction(|tx| store::update_domain_xml(tx, &record.uuid, &xml, &engine))
            .map_err(db)
    }

    /// `snapshot-delete`: the names deleted.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        request: &DeleteSnapshot,
    ) -> DaemonResult<Vec<String>> {
        if request.children && request.children_only {
            return Err(bad_request(
                "--children and --children-only are mutually exclusive".to_string(),
            ));
        }
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let all = self.snapshot_records(&record)?;
        let target = all
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| no_snapshot(&record.name, name))?
            .clone();
        let descendants = descendants_of(&all, name);
        let mut doomed: Vec<&SnapshotRecord> = Vec::new();
        if !request.children_only {
            doomed.push(&target);
        }
        if request.children || request.children_only {
            doomed.extend(all.iter().filter(|s| descendants.contains(&s.name)));
        }
        let snapshots: Vec<(&SnapshotRecord, Snapshot)> = doomed
            .iter()
            .map(|r| snapshot_of(r).map(|s| (*r, s)))
            .collect::<DaemonResult<_>>()?;
        if !request.metadata_only {
            if let Some((_, external)) = snapshots.iter().find(|(_, s)| s.location() == "external")
            {
                return Err(unsupported(format!(
                    "deleting external snapshot '{}' is not supported yet (libvirt 9.0 cannot either); --metadata forgets it and keeps its overlays",
                    external.name
                )));
            }
            let current = self.current_domain(&record)?;
            let mut resolved = current.clone();
            self.volumes.resolve_volume_disks(&mut resolved)?;
            // Deepest first, so a failure leaves a consistent tree.
            let plan: Vec<(&str, Vec<String>)> = snapshots
                .iter()
                .rev()
                .map(|(row, snapshot)| {
                    let devs = snapshot
                        .disks
                        .iter()
                        .filter(|d| d.kind == DiskSnapshotKind::Internal)
                        .map(|d| d.name.clone())
                        .filter(|dev| resolved.devices.disks.iter().any(|d| &d.target.dev == dev))
                        .collect();
                    (row.name.as_str(), devs)
                })
                .collect();
            let state = self.guests.current_state(&record)?;
            let active = matches!(state, DomainState::Running | DomainState::Paused);
            if active && self.engine.live_internal_snapshots(&current) {
                let control = self.guests.running_control(&vm, &record)?;
                for (name, devs) in &plan {
                    control
                        .snapshot_delete(name, devs)
                        .await
                        .map_err(|e| engine_failure(&record.name, e))?;
                    self.forget_snapshot(&record, name)?;
                }
            } else {
                let delete_all = || -> DaemonResult<()> {
                    for (name, devs) in &plan {
                        delete_internal_offline(&self.internal_steps(&current, devs)?, name)?;
                        self.forget_snapshot(&record, name)?;
                    }
                    Ok(())
                };
                if active && plan.iter().any(|(_, devs)| !devs.is_empty()) {
                    // The engine holds the images open (native): the guest's process ends
                    // around the offline deletion and goes on from its state, saved in a
                    // temporary image (a dot name no snapshot's state file can have).
                    let temporary = self
                        .guests
                        .snapshot_state_dir(&record.uuid)
                        .join(".delete.save");
                    let deleted = self
                        .with_guest_offline(
                            &vm,
                            &record,
                            Halt::SaveTo(&temporary),
                            delete_all,
                            None,
                        )
                        .await;
                    remove_state_file(&temporary);
                    deleted?;
                } else {
                    delete_all()?;
                }
            }
        } else {
            for (row, _) in snapshots.iter().rev() {
                self.forget_snapshot(&record, &row.name)?;
            }
        }
        let names: Vec<String> = snapshots.iter().map(|(r, _)| r.name.clone()).collect();
        tracing::info!(domain = %record.name, snapshots = ?names, "snapshots deleted");
        Ok(names)
    }

    /// Removes one snapshot's row: its children move up to its parent, and if it was the
    /// current snapshot its parent becomes current (libvirt's rules).
    fn forget_snapshot(&self, record: &DomainRecord, name: &str) -> DaemonResult<()> {
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            let Some(row) = store::snapshot(tx, &record.uuid, name).map_err(db)? else {
                return Ok(());
            };
            for child in store::snapshots(tx, &record.uuid)
                .map_err(db)?
                .into_iter()
                .filter(|s| s.parent.as_deref() == Some(name))
            {
                let mut snapshot = snapshot_of(&child)?;
                snapshot.parent = row.parent.clone();
                store::update_snapshot(
                    tx,
                    &record.uuid,
                    &child.name,
                    row.parent.as_deref(),
                    &snapshot.to_xml(),
                )
                .map_err(db)?;
            }
            store::delete_snapshot(tx, &record.uuid, name).map_err(db)?;
            if row.current {
                store::set_current_snapshot(tx, &record.uuid, row.parent.as_deref()).map_err(db)?;
            }
            Ok(())
        })?;
        // A machine state kept beside the images (the native engine's) goes with its row:
        // without the row nothing could use it (also after `--metadata`).
        remove_state_file(&self.guests.snapshot_state_path(&record.uuid, name));
        Ok(())
    }

    /// How many snapshots the domain has (undefine refuses a domain with any).
    pub(super) fn snapshot_count(&self, record: &DomainRecord) -> DaemonResult<u64> {
        self.store
            .transaction(|tx| store::snapshot_count(tx, &record.uuid))
            .map_err(db)
    }
}

/// The names of every descendant of `name`.
fn descendants_of(all: &[SnapshotRecord], name: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![name.to_string()];
    while let Some(parent) = frontier.pop() {
        for child in all.iter().filter(|s| s.parent.as_deref() == Some(&parent)) {
            if found.insert(child.name.clone()) {
                frontier.push(child.name.clone());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, parent: Option<&str>) -> SnapshotRecord {
        SnapshotRecord {
            domain: uuid::Uuid::nil(),
            name: name.into(),
            parent: parent.map(str::to_string),
            created: 0,
            current: false,
            xml: String::new(),
        }
    }

    #[test]
    fn descendants_follow_the_whole_subtree() {
        let all = vec![
            row("s1", None),
            row("s2", Some("s1")),
            row("s3", Some("s2")),
            row("b1", Some("s1")),
            row("other", None),
        ];
        let names: Vec<String> = descendants_of(&all, "s1").into_iter().collect();
        assert_eq!(names, ["b1", "s2", "s3"]);
        assert!(descendants_of(&all, "s3").is_empty());
    }

    #[test]
    fn overlays_are_named_as_libvirt_names_them() {
        assert_eq!(
            default_overlay(Path::new("/images/vm.qcow2"), "s1"),
            PathBuf::from("/images/vm.s1")
        );
        assert_eq!(
            default_overlay(Path::new("/images/disk"), "before"),
            PathBuf::from("/images/disk.before")
        );
    }
}
