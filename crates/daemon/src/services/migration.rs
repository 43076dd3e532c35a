//! Live migration of running guests between two oxvirtd (more of [`Domains`]): `migrate`,
//! `domjobinfo`, `domjobabort` on the source, and the `/v1/migrations` calls the source makes
//! of the destination (docs/migration.md).
//!
//! The flow, source (S) and destination (D):
//! 1. S asks D to prepare (`POST /v1/migrations` with the guest's live XML). D refuses a name
//!    or UUID it already has and a disk or kernel it cannot find at the same path, defines the
//!    domain (kept: oxvirt has no transient domains, so `--persistent` is always so), and listens on a Unix socket of its own state directory for one connection.
//! 2. S connects to that socket and hands the connection to its QEMU (`getfd`, `migrate fd:`);
//!    D accepts it and starts QEMU with `-incoming defer`, handing its end over the same way
//!    (`migrate-incoming fd:`). Neither QEMU opens a socket itself: their sandboxes stay shut.
//! 3. S follows `query-migrate` (what `domjobinfo` shows) until QEMU says `completed`, then
//!    asks D to finish: D waits until the state is loaded, resumes the guest and records it
//!    running (reason migrated). S ends its paused QEMU, and records the domain shut off
//!    (reason migrated); with `--undefinesource`, it undefines it.
//! 4. Any failure or `domjobabort` before that: S cancels (`migrate_cancel`; the guest goes on
//!    running here) and asks D to abort: D's QEMU ends and the definition it made goes.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oxvirt_api::{
    Client, ClientError, DomainState, DomainSummary, FileOwner, FinishMigration,
    HostCpuDescription, JobInfo, MigrateRequest, MigrationSettings, PrepareMigration,
    PreparedMigration, UndefineOptions,
};
use oxvirt_host::lock;
use tokio::sync::Notify;
use uuid::Uuid;

use super::domains::Domains;
use super::error::{bad_request, db, invalid_state, DaemonError, DaemonResult, ErrorKind};
use super::guests::{stored_domain, Intent};
use super::jobs::{abort_destination, IncomingMigration, Job};
use super::migration_lock::{DestinationLock, SourceLock};
use super::migration_tcp::{RemoteSource, StreamListener};
use crate::engine::{Control, Incoming};
use crate::state_dir::create_private_dir;
use crate::store;

/// How often `query-migrate` is asked.
const POLL: Duration = Duration::from_millis(100);
/// How long the destination waits for the source's connection after preparing.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a finish waits for the destination's QEMU to load the last of the stream.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a cancelled migration may stay "cancelling" in QEMU.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the source's QEMU ended a cancelled migration. `migrate_cancel` only asks: QEMU
/// says "cancelling" until its migration thread stopped, and refuses a new migration (and its
/// capabilities) meanwhile; the failed `migrate` answers once a next one can start.
async fn wait_until_cancelled(control: &dyn Control, domain: &str) {
    let deadline = tokio::time::Instant::now() + CANCEL_TIMEOUT;
    loop {
        match control.migration_progress().await {
            Ok(progress)
                if matches!(
                    progress.status.as_str(),
                    "cancelling" | "active" | "setup" | "device" | "pre-switchover"
                ) => {}
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(
                    domain,
                    "cannot follow the cancelled migration: {}",
                    err.message
                );
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                domain,
                "QEMU still ends the cancelled migration after {} s",
                CANCEL_TIMEOUT.as_secs()
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The client of `request`'s destination: another oxvirtd's socket on this host, another
/// host's TLS API (`https://HOST:PORT`) with the credentials and trust the request carries, or
/// another host's socket through ssh (`oxvirt+ssh://`, oxvirt_api::ssh).
pub(super) fn destination_client(request: &MigrateRequest) -> DaemonResult<Client> {
    if over_ssh(request) {
        return Client::ssh(&request.destination)
            .map_err(|err| bad_request(format!("destination: {err}")));
    }
    if request.destination.starts_with("https://") {
        let remote = request.remote.as_ref().ok_or_else(|| {
            bad_request(format!(
                "destination {} needs the credentials to log in there (remote: a token, or a user and password) and its certificate's trust",
                request.destination
            ))
        })?;
        return remote
            .client(&request.destination)
            .map_err(|err| bad_request(format!("destination {}: {err}", request.destination)));
    }
    let destination_path = Path::new(&request.destination);
    if !destination_path.is_absolute() {
        return Err(bad_request(format!(
            "destination socket '{}' is not an absolute path (nor https://HOST:PORT)",
            request.destination
        )));
    }
    Ok(Client::new(destination_path))
}

pub(super) fn destination_error(socket: &str, err: ClientError) -> DaemonError {
    match err {
        ClientError::Api(api) => DaemonError::new(
            ErrorKind::InvalidState,
            format!(
                "the destination oxvirtd ({socket}) refused: {}",
                api.message
            ),
        ),
        other => DaemonError::new(
            ErrorKind::BadRequest,
            format!("cannot reach the destination oxvirtd: {other}"),
        ),
    }
}

/// Whether `request` goes to another host through ssh: its stream is then always tunnelled
/// (through the ssh connection to the destination's socket).
fn over_ssh(request: &MigrateRequest) -> bool {
    request.destination.starts_with(oxvirt_api::ssh::SSH_SCHEME)
}

/// How the source's QEMU ended sending a guest's state.
enum Sent {
    /// All of it: the guest is paused here, the destination has it whole.
    Completed,
    /// It switched to post-copy: the destination has the devices and runs the guest, the rest
    /// of its memory follows.
    Postcopy,
}

/// `--tunnelled` and `--copy-storage-*` together are refused before anything moves, as libvirt
/// does: the disks' NBD connections would need tunnels of their own.
fn check_tunnelled(tunnelled: bool, copies_disks: bool) -> DaemonResult<()> {
    if tunnelled && copies_disks {
        return Err(bad_request(
            "--tunnelled cannot copy disks (--copy-storage-all/-inc; an oxvirt+ssh:// destination is always tunnelled): the disks' NBD connections do not go through the API connection; migrate the disks on shared storage, or without --tunnelled",
        ));
    }
    Ok(())
}

/// What a qemu-engine guest's migration needs of the source's migrate call.
struct QemuMove<'a> {
    control: &'a dyn Control,
    /// The guest ran (else it was paused) when the migration began.
    running: bool,
    prepared: &'a PreparedMigration,
    request: &'a MigrateRequest,
    destination: &'a Client,
    job: &'a Job,
    disks: &'a [oxvirt_api::DiskCopy],
    /// A cluster guest's lock, handed over at the end (migration_lock.rs).
    cluster_lock: Option<&'a dyn SourceLock>,
}

/// (Source) The connection to the destination's migration stream: a remote destination's port
/// for this migration, or a local one's socket; `--tunnelled`, QEMU's end of the tunnel
/// through the destination's API (migration_tunnel.rs).
async fn connect_stream(
    prepared: &PreparedMigration,
    destination: &Client,
) -> DaemonResult<std::os::fd::OwnedFd> {
    if prepared.tunnelled {
        return super::migration_tunnel::open(destination, &prepared.id).await;
    }
    let (stream, place) = match &prepared.address {
        Some(address) => (super::migration_tcp::connect(address).await, address),
        None => (
            tokio::net::UnixStream::connect(&prepared.socket)
                .await
                .and_then(|stream| stream.into_std())
                .map(std::os::fd::OwnedFd::from),
            &prepared.socket,
        ),
    };
    stream.map_err(|err| {
        DaemonError::new(
            ErrorKind::Engine,
            format!("cannot connect to the destination's migration stream at {place}: {err}"),
        )
    })
}

impl Domains {
    /// virsh migrate (source side): moves the running domain `id` to the oxvirtd listening on
    /// `request.destination`. Returns the domain as it is here afterwards (shut off, reason
    /// migrated). On any failure the guest goes on running here (a native guest that moved
    /// paused relaunched from the state it was saved into: migration_native.rs). `source_cpu`
    /// is this host's CPU, for
    /// the destination's CPU check (migration_cpu.rs; none for a native guest).
    ///
    /// A cluster guest comes with its `lock` (migration_lock.rs): the destination must be a live
    /// member, takes the lock over before the guest resumes there, and the guest runs here again
    /// after a failure only while the lock is still this host's.
    pub async fn migrate(
        self: &Arc<Self>,
        id: &str,
        request: &MigrateRequest,
        source_cpu: Option<HostCpuDescription>,
        lock: Option<Arc<dyn SourceLock>>,
    ) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        // The cluster's reconcile leaves the guest's copy here alone meanwhile.
        if !self.migrations.mark_moving(record.uuid) {
            return Err(invalid_state(format!(
                "domain '{}' is already migrating",
                record.name
            )));
        }
        let moved = self
            .migrate_marked(id, request, source_cpu, lock.as_deref())
            .await;
        self.migrations.unmark_moving(&record.uuid);
        moved
    }

    async fn migrate_marked(
        self: &Arc<Self>,
        id: &str,
        request: &MigrateRequest,
        source_cpu: Option<HostCpuDescription>,
        cluster_lock: Option<&dyn SourceLock>,
    ) -> DaemonResult<DomainSummary> {
        // Through ssh only the destination's socket is reached: the stream goes through it too.
        let implied;
        let request = match over_ssh(request) && !request.tunnelled && !request.offline {
            true => {
                implied = MigrateRequest {
                    tunnelled: true,
                    ..request.clone()
                };
                &implied
            }
            false => request,
        };
        // Before anything changes here (QEMU's capabilities) or there.
        check_tunnelled(request.tunnelled, request.copy_storage.is_some())?;
        let destination = destination_client(request)?;
        let record = self.guests.resolve(id)?;
        let (vm, guard) = self.guests.begin(&record)?;
        let live = self.guests.live_or_not_running(&vm, &record)?;
        let state = self.guests.current_state(&record)?;
        if !matches!(state, DomainState::Running | DomainState::Paused) {
            return Err(invalid_state(format!(
                "domain '{}' is {state}; only a running or paused domain can be migrated",
                record.name
            )));
        }
        let control = self.guests.control_of(&live, &record)?;
        super::migration_flags::check_postcopy(request, &record.name)?;
        if request.postcopy && cluster_lock.is_some() {
            return Err(invalid_state(format!(
                "domain '{}' is a cluster guest: post-copy (--postcopy) of a cluster guest is not done yet (its lock is handed over once the guest is paused here, and after the switch it can no longer run here)",
                record.name
            )));
        }
        // A native guest's state goes through oxvirtd's own stream (migration_native.rs).
        let native = self.runs_natively(id)?;
        if native && cluster_lock.is_some() {
            return Err(invalid_state(format!(
                "domain '{}' is a native cluster guest: handing its lock over with it is done for the qemu engine only (docs/cluster.md, \"Not yet\")",
                record.name
            )));
        }
        if native {
            super::migration_native::check_request(request, &record.name)?;
        } else {
            super::migration_flags::set_capabilities(control.as_ref(), request, &record.name)
                .await?;
        }
        let xml = self
            .live_xml(&record)?
            .unwrap_or_else(|| record.xml.clone());
        let disks = super::migration_storage::disks_to_copy(&xml, request.copy_storage)?;
        let owners = self
            .store
            .labels_of(&record.uuid)
            .map_err(db)?
            .into_iter()
            .map(|label| FileOwner {
                path: label.path.display().to_string(),
                uid: label.uid,
                gid: label.gid,
            })
            .collect();
        let prepare = PrepareMigration {
            xml,
            running: state == DomainState::Running,
            owners,
            disks: disks.clone(),
            source_cpu,
            cluster: cluster_lock.map(|lock| lock.holder()),
            postcopy: request.postcopy,
            tunnelled: request.tunnelled,
        };
        let prepared = destination
            .prepare_migration(&prepare)
            .await
            .map_err(|err| destination_error(&request.destination, err))
            .map_err(|err| err.context(format!("cannot migrate domain '{}'", record.name)))?;
        // An oxvirtd that knows no tunnel answers without it (and waits on a socket or port).
        if request.tunnelled && !prepared.tunnelled {
            abort_destination(&destination, &prepared, &record.name).await;
            return Err(invalid_state(format!(
                "cannot migrate domain '{}': the destination oxvirtd ({}) does not take the stream through its API (--tunnelled): update it",
                record.name, request.destination
            )));
        }
        if let Some(cluster_lock) = cluster_lock {
            if let Err(err) = cluster_lock
                .check_destination(prepared.cluster_host.as_deref())
                .await
            {
                abort_destination(&destination, &prepared, &record.name).await;
                return Err(err.context(format!("cannot migrate domain '{}'", record.name)));
            }
        }
        tracing::info!(domain = %record.name, destination = %request.destination, "migration prepared");

        let job = self
            .migrations
            .begin_job(record.uuid, &record.name, request.postcopy);
        let moved = if native {
            let native = super::migration_native::NativeMove {
                control: control.as_ref(),
                running: state == DomainState::Running,
                prepared: &prepared,
                request,
                destination: &destination,
                job: &job,
                connect: connect_stream(&prepared, &destination),
                finish: async {
                    destination
                        .finish_migration(&prepared.id, &FinishMigration::default())
                        .await
                        .map(|_| ())
                        .map_err(|err| destination_error(&request.destination, err))
                },
            };
            self.move_native(&vm, &record, native).await
        } else {
            let qemu = QemuMove {
                control: control.as_ref(),
                running: state == DomainState::Running,
                prepared: &prepared,
                request,
                destination: &destination,
                job: &job,
                disks: &disks,
                cluster_lock,
            };
            self.move_qemu(&record, qemu).await
        };
        if let Err(err) = moved {
            job.end(&err);
            // (A native guest that could not be relaunched here is shut off: its error says
            // where its state is.)
            let here = match self.guests.current_state(&record) {
                Ok(DomainState::Running) => "it goes on running here",
                Ok(DomainState::Paused) => "it stays paused here",
                _ => "it does not run here",
            };
            return Err(err.context(format!(
                "migration of domain '{}' failed; {here}",
                record.name
            )));
        }
        if let Some(cluster_lock) = cluster_lock {
            cluster_lock.handed_over();
        }
        job.complete();
        tracing::info!(domain = %record.name, destination = %request.destination, "migrated");
        // (A native guest's VMM ended once its state was saved, unless it moved live: its VMM
        // waits paused for this end.)
        if !native || request.live {
            self.end_guest(&vm, &record, &live, Intent::Migrated)
                .await?;
        }
        let summary = self.summary(&record)?;
        drop(guard);
        if request.undefine_source {
            let options = UndefineOptions {
                nvram: None,
                snapshots_metadata: false,
                managed_save: false,
            };
            self.undefine(&record.uuid.to_string(), &options)
                .map_err(|err| {
                    err.context(format!(
                        "domain '{}' runs on the destination, but stays defined here",
                        record.name
                    ))
                })?;
        }
        Ok(summary)
    }

    /// Moves a qemu-engine guest (the caller prepared the destination and holds the domain's
    /// operation lock): its QEMU streams the state (copying the disks first with
    /// `--copy-storage-*`), then the destination finishes. On a failure the guest goes on
    /// here, running again if it ran, and the destination forgets it.
    async fn move_qemu(
        &self,
        record: &store::DomainRecord,
        qemu: QemuMove<'_>,
    ) -> DaemonResult<()> {
        let QemuMove {
            control,
            running,
            prepared,
            request,
            destination,
            job,
            disks,
            cluster_lock,
        } = qemu;
        // Not live: the guest stops for the copy (and runs again there, or here on a failure).
        let paused = if !request.live && running {
            control
                .pause()
                .await
                .map_err(|err| DaemonError::new(ErrorKind::Engine, err.message))
        } else {
            Ok(())
        };
        let sent = match paused {
            Ok(()) => {
                self.send_state(control, prepared, request, job, disks, destination)
                    .await
            }
            Err(err) => Err(err),
        };
        // Switched to post-copy: the guest runs there from now on, whatever happens.
        if let Ok(Sent::Postcopy) = sent {
            return self
                .finish_postcopy(control, prepared, request, destination, job, &record.name)
                .await;
        }
        let sent = sent.map(|_| ());
        // Completed: the copies are whole (the guest is paused here), and end.
        let sent = match sent {
            Ok(()) => super::migration_storage::end_copies(control, disks).await,
            Err(err) => Err(err),
        };
        // A cluster guest: the lock as it is now, paused here, is what the destination takes.
        let offered = match (sent, cluster_lock) {
            (Ok(()), Some(cluster_lock)) => cluster_lock.offer().await.map(Some),
            (Ok(()), None) => Ok(None),
            (Err(err), _) => Err(err),
        };
        let finished = match offered {
            Ok(lock_revision) => destination
                .finish_migration(&prepared.id, &FinishMigration { lock_revision })
                .await
                .map(|_| ())
                .map_err(|err| destination_error(&request.destination, err)),
            Err(err) => Err(err),
        };
        if let Err(err) = finished {
            // The guest goes on here: the stream stops, the destination forgets it.
            let _ = control.migrate_cancel().await;
            wait_until_cancelled(control, &record.name).await;
            let _ = super::migration_storage::end_copies(control, disks).await;
            abort_destination(destination, prepared, &record.name).await;
            // A migration cancelled after QEMU stopped the guest for the last pass (or a
            // non-live one) leaves it paused: it ran before, so it runs again; a cluster guest
            // only while its lock is still this host's (made sure of first: the destination can
            // no longer take it).
            if running {
                if let Ok(crate::engine::GuestStatus::Paused) = control.status().await {
                    let kept = match cluster_lock {
                        Some(cluster_lock) => cluster_lock.keep().await,
                        None => Ok(()),
                    };
                    if let Err(why) = kept {
                        tracing::warn!(domain = %record.name, "not resumed after a failed migration: {why}");
                        return Err(DaemonError::new(
                            err.kind,
                            format!("{}; {}", why.message, err.message),
                        ));
                    }
                    match control.resume().await {
                        // Set now, not when QEMU's RESUME event is handled: the error says
                        // where the guest is from this state.
                        Ok(()) => self.guests.set_state(
                            &self.guests.slot(&record.uuid),
                            &record.uuid,
                            DomainState::Running,
                            "migration canceled",
                        ),
                        Err(resume) => {
                            tracing::error!(domain = %record.name, "cannot resume after a failed migration: {resume}")
                        }
                    }
                }
            }
            return Err(err);
        }
        Ok(())
    }

    /// After the switch to post-copy (the guest stopped here, its devices' state is on the
    /// destination): the destination resumes the guest while the rest of its memory comes,
    /// and this QEMU sends it until it completed. A failure from here on cannot bring the
    /// guest back here (its newest memory and devices are there): QEMU keeps it paused on both
    /// sides (`postcopy-paused`), and the error says so; nothing is cancelled or aborted.
    async fn finish_postcopy(
        &self,
        control: &dyn Control,
        prepared: &PreparedMigration,
        request: &MigrateRequest,
        destination: &Client,
        job: &Job,
        domain: &str,
    ) -> DaemonResult<()> {
        let finished = destination
            .finish_migration(&prepared.id, &FinishMigration::default())
            .await
            .map(|_| ())
            .map_err(|err| destination_error(&request.destination, err));
        let completed = match finished {
            Ok(()) => loop {
                tokio::time::sleep(POLL).await;
                let progress = match control.migration_progress().await {
                    Ok(progress) => progress,
                    Err(err) => break Err(DaemonError::new(ErrorKind::Engine, err.message)),
                };
                job.update(&progress, request.bandwidth_mib);
                match progress.status.as_str() {
                    "completed" => break Ok(()),
                    "postcopy-active" => {}
                    status => {
                        break Err(DaemonError::new(
                            ErrorKind::Engine,
                            format!(
                                "QEMU's migration is {status}: {}",
                                progress.error.as_deref().unwrap_or("no reason given")
                            ),
                        ))
                    }
                }
            },
            Err(err) => Err(err),
        };
        completed.map_err(|err| {
            tracing::error!(domain, "post-copy failed after the switch: {}", err.message);
            DaemonError::new(
                err.kind,
                format!(
                    "post-copy failed after the switch: {}; the guest cannot run here any more (its newest state is on the destination): QEMU keeps it paused on both hosts (postcopy-paused)",
                    err.message
                ),
            )
        })
    }

    /// Connects to the destination's socket, hands the connection to QEMU and follows the
    /// migration until QEMU completed it (or it failed, or was aborted), or switched to
    /// post-copy (then [`Self::finish_postcopy`] goes on).
    async fn send_state(
        &self,
        control: &dyn Control,
        prepared: &PreparedMigration,
        request: &MigrateRequest,
        job: &Job,
        disks: &[oxvirt_api::DiskCopy],
        destination: &Client,
    ) -> DaemonResult<Sent> {
        let domain = job.domain.as_str();
        let stream = connect_stream(prepared, destination).await?;
        // With that connection D's QEMU started: it serves the disks to copy first.
        self.copy_disks(control, prepared, disks, request.copy_storage, job)
            .await?;
        control
            .migrate_out(stream.as_fd(), request.bandwidth_mib)
            .await
            .map_err(|err| DaemonError::new(ErrorKind::Engine, err.message))?;
        // QEMU holds its own copy.
        drop(stream);
        let mut suspend = super::migration_flags::SuspendAfter::new(request);
        loop {
            tokio::select! {
                // (Once switched to post-copy, job_abort refuses; an abort that came just
                // before the switch must not cancel it either.)
                () = job.abort.notified(), if !job.switched.load(std::sync::atomic::Ordering::SeqCst) => {
                    return Err(super::jobs::aborted())
                }
                () = tokio::time::sleep(POLL) => {}
            }
            suspend.check(control, job, domain).await?;
            let progress = control
                .migration_progress()
                .await
                .map_err(|err| DaemonError::new(ErrorKind::Engine, err.message))?;
            job.update(&progress, request.bandwidth_mib);
            // The first pass over the memory ended once QEMU synchronized the dirty bitmap a
            // second time.
            if request.postcopy_after_precopy
                && progress.status == "active"
                && progress.passes >= 2
                && !job.switched.load(std::sync::atomic::Ordering::SeqCst)
            {
                super::migration_flags::switch_to_postcopy(control, job, domain).await?;
            }
            match progress.status.as_str() {
                "completed" => return Ok(Sent::Completed),
                // (Paused or recovering: it failed after the switch; finish_postcopy says so.)
                "postcopy-active" | "postcopy-paused" | "postcopy-recover" => {
                    return Ok(Sent::Postcopy)
                }
                "failed" | "cancelled" => {
                    return Err(DaemonError::new(
                        ErrorKind::Engine,
                        format!(
                            "QEMU's migration {}: {}",
                            progress.status,
                            progress.error.as_deref().unwrap_or("no reason given")
                        ),
                    ))
                }
                _ => {}
            }
        }
    }

    /// Whether the domain `uuid` migrates out or in now (its copy here is the migration's).
    pub fn migrating(&self, uuid: &str) -> bool {
        Uuid::parse_str(uuid).is_ok_and(|uuid| self.migrations.is_moving(&uuid))
    }

    /// Whether domain `id` runs on the native engine (its migration is migration_native.rs's).
    pub fn runs_natively(&self, id: &str) -> DaemonResult<bool> {
        let record = self.guests.resolve(id)?;
        Ok(self.engine.kind_of(&stored_domain(&record)?) == oxvirt_api::Engine::Native)
    }

    /// virsh domjobinfo: the domain's running (or last) migration job.
    pub fn job_info(&self, id: &str) -> DaemonResult<JobInfo> {
        let record = self.guests.resolve(id)?;
        Ok(self.migrations.job_info(&record.uuid))
    }

    /// virsh domjobabort: stops the domain's running migration; the guest stays here.
    pub fn job_abort(&self, id: &str) -> DaemonResult<JobInfo> {
        let record = self.guests.resolve(id)?;
        let job = lock(&self.migrations.jobs).get(&record.uuid).cloned();
        match job {
            Some(job) if job.switched.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(invalid_state(format!(
                    "domain '{}' migrates in post-copy: it runs on the destination already, its migration can no longer be aborted",
                    record.name
                )))
            }
            Some(job) if job.running.load(std::sync::atomic::Ordering::SeqCst) => {
                job.abort.notify_one();
                Ok(lock(&job.info).clone())
            }
            _ => Err(invalid_state(format!(
                "domain '{}' has no migration job running",
                record.name
            ))),
        }
    }

    /// virsh migrate-postcopy: switches the domain's running migration (started with
    /// `--postcopy`) to post-copy; the guest runs on the destination from then on.
    pub async fn start_postcopy(&self, id: &str) -> DaemonResult<JobInfo> {
        let record = self.guests.resolve(id)?;
        let job = lock(&self.migrations.jobs).get(&record.uuid).cloned();
        let job = match job {
            Some(job) if job.running.load(std::sync::atomic::Ordering::SeqCst) => job,
            _ => {
                return Err(invalid_state(format!(
                    "domain '{}' has no migration job running",
                    record.name
                )))
            }
        };
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        super::migration_flags::switch_to_postcopy(control.as_ref(), &job, &record.name).await?;
        Ok(self.migrations.job_info(&record.uuid))
    }

    /// migrate-getspeed and friends: the running guest's migration settings.
    pub async fn migration_settings(&self, id: &str) -> DaemonResult<MigrationSettings> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        let (downtime, bandwidth) = control
            .migration_parameters()
            .await
            .map_err(|err| super::error::engine_failure(&record.name, err))?;
        Ok(MigrationSettings {
            max_downtime_ms: Some(downtime),
            bandwidth_mib: Some(bandwidth),
        })
    }

    /// migrate-setmaxdowntime, migrate-setspeed: also while a migration of the guest runs (it
    /// applies to it, and `domjobinfo` shows the new limit).
    pub async fn set_migration_settings(
        &self,
        id: &str,
        settings: &MigrationSettings,
    ) -> DaemonResult<MigrationSettings> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        if let Some(downtime) = settings.max_downtime_ms {
            control
                .set_max_downtime(downtime)
                .await
                .map_err(|err| super::error::engine_failure(&record.name, err))?;
        }
        if let Some(mib) = settings.bandwidth_mib {
            control
                .set_bandwidth(mib)
                .await
                .map_err(|err| super::error::engine_failure(&record.name, err))?;
            if let Some(job) = lock(&self.migrations.jobs).get(&record.uuid) {
                job.set_bandwidth(mib);
            }
        }
        self.migration_settings(id).await
    }

    /// `POST /v1/migrations` (destination side): checks that the guest of `request` can come
    /// here, defines it, and listens for the stream: on a Unix socket, or for a `remote`
    /// source (the prepare came over the TLS API) on a TCP port (services/migration_tcp.rs).
    /// A cluster guest comes with its `cluster_lock` (services/cluster.rs checked this host is a
    /// member of the guest's cluster): taken over at the finish.
    pub async fn prepare_incoming(
        self: &Arc<Self>,
        request: &PrepareMigration,
        remote: Option<RemoteSource>,
        cluster_lock: Option<Arc<dyn DestinationLock>>,
    ) -> DaemonResult<PreparedMigration> {
        let domain = oxvirt_domain::parse_domain_xml(&request.xml)
            .map_err(super::error::definition_error)?;
        if let Some(record) = self.store.find_domain(&domain.name).map_err(db)? {
            if record.name == domain.name {
                return Err(DaemonError::new(
                    ErrorKind::AlreadyExists,
                    format!("domain '{}' is already defined here", domain.name),
                ));
            }
        }
        if let Some(record) = self.store.domain_by_uuid(&domain.uuid).map_err(db)? {
            return Err(DaemonError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "uuid {} of domain '{}' already belongs to domain '{}' here",
                    domain.uuid, domain.name, record.name
                ),
            ));
        }
        // The cluster's reconcile leaves the copy defined here alone until the migration ended
        // (forget_incoming_definition, or the finish).
        if !self.migrations.mark_moving(domain.uuid) {
            return Err(invalid_state(format!(
                "domain '{}' is already migrating here",
                domain.name
            )));
        }
        let prepared = self
            .prepare_marked(request, remote, cluster_lock, &domain)
            .await;
        if prepared.is_err() {
            self.migrations.unmark_moving(&domain.uuid);
        }
        prepared
    }

    async fn prepare_marked(
        self: &Arc<Self>,
        request: &PrepareMigration,
        remote: Option<RemoteSource>,
        cluster_lock: Option<Arc<dyn DestinationLock>>,
        domain: &oxvirt_domain::Domain,
    ) -> DaemonResult<PreparedMigration> {
        if request.postcopy {
            super::migration_flags::check_userfaultfd(self.dac.guests_unprivileged())?;
        }
        check_tunnelled(request.tunnelled, !request.disks.is_empty())?;
        // The disks to copy are created here (and go again if the prepare fails).
        let created = super::migration_storage::create_disks(domain, &request.disks)?;
        // Shared storage: every other file the guest opens must be here, at the same path.
        super::domains::check_files_exist(domain).map_err(|err| {
            err.context("the guest's files must be reachable here (shared storage)")
        })?;
        self.engine
            .check_definition(domain)
            .and_then(|()| self.engine.check_host(domain))
            .map_err(|err| super::error::engine_failure(&domain.name, err))?;
        self.define(&request.xml)?;
        let record = self
            .store
            .domain_by_uuid(&domain.uuid)
            .map_err(db)?
            .ok_or_else(|| {
                super::error::internal("prepare", format!("domain '{}' vanished", domain.name))
            })?;
        let prepared = async {
            let dir = self.guests.state_dir().join("migrations");
            create_private_dir(&dir).map_err(|err| {
                super::error::internal(&format!("cannot create {}", dir.display()), err)
            })?;
            let id = Uuid::new_v4().to_string();
            let ports = self.migrations.ports();
            let (tunnel, receiver) = match request.tunnelled {
                true => {
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    (Some(sender), Some(receiver))
                }
                false => (None, None),
            };
            let (listener, socket, address) = match (receiver, remote) {
                (Some(receiver), _) => (StreamListener::Tunnel(receiver), None, None),
                (None, Some(remote)) => {
                    let (listener, address) = StreamListener::tcp(remote, &ports)?;
                    (listener, None, Some(address))
                }
                (None, None) => {
                    let socket = dir.join(format!("{id}.sock"));
                    let listener = tokio::net::UnixListener::bind(&socket).map_err(|err| {
                        super::error::internal(
                            &format!("cannot listen on {}", socket.display()),
                            err,
                        )
                    })?;
                    (StreamListener::Unix(listener), Some(socket), None)
                }
            };
            let serve = super::migration_storage::ServeDisks::bind(
                dir.join(format!("{id}-nbd.sock")),
                &request.disks,
                remote.map(|remote| (remote, ports)),
            )?;
            let nbd_address = serve.as_ref().and_then(|serve| serve.address());
            let nbd_socket = serve.as_ref().map(|serve| serve.socket().to_path_buf());
            let (vm, guard) = self.guests.begin(&record)?;
            let incoming = Arc::new(IncomingMigration {
                uuid: record.uuid,
                name: record.name.clone(),
                running: request.running,
                socket: socket.clone(),
                cancel: Notify::new(),
                tunnel: std::sync::Mutex::new(tunnel),
                storage: serve.as_ref().map(|serve| serve.storage(created)),
                lock: cluster_lock.clone(),
                task: tokio::sync::Mutex::new(None),
            });
            let domains = Arc::clone(self);
            let waiting = Arc::clone(&incoming);
            let launched = record.clone();
            let owners = request.owners.clone();
            let task_id = id.clone();
            let postcopy = request.postcopy;
            let task = tokio::spawn(async move {
                let received = async {
                let _guard = guard;
                let stream = tokio::select! {
                    accepted = listener.accept() => accepted
                        .map_err(|err| super::error::internal("accepting the migration stream", err))?,
                    () = waiting.cancel.notified() => {
                        return Err(invalid_state("the migration was aborted before it started"));
                    }
                    () = tokio::time::sleep(ACCEPT_TIMEOUT) => {
                        return Err(DaemonError::new(
                            ErrorKind::Timeout,
                            format!("the source did not connect within {} s", ACCEPT_TIMEOUT.as_secs()),
                        ));
                    }
                };
                if let Some(socket) = &waiting.socket {
                    let _ = std::fs::remove_file(socket);
                }
                let domain = stored_domain(&launched)?;
                let incoming = match &serve {
                    Some(serve) => serve.incoming(stream.as_fd()),
                    None if postcopy => Incoming::StreamPostcopy(stream.as_fd()),
                    None => Incoming::Stream(stream.as_fd()),
                };
                let launch = domains.launch_locked(&vm, &launched, domain, None, Some(incoming));
                match &serve {
                    Some(serve) => serve.while_launching(launch).await,
                    None => launch.await,
                }?;
                // Its files were the source's guest user's: they go back to the owners they
                // had before that one when the guest stops here.
                for owner in owners {
                    let label = store::SecurityLabel {
                        path: PathBuf::from(owner.path),
                        uid: owner.uid,
                        gid: owner.gid,
                    };
                    domains
                        .store
                        .correct_label_owner(&launched.uuid, &label)
                        .map_err(db)?;
                }
                Ok(())
                }
                .await;
                // A failure no finish or abort took over (the source gone, or it never
                // connected): nothing of the migration stays here.
                if let Err(err) = &received {
                    if lock(&domains.migrations.incoming).remove(&task_id).is_some() {
                        tracing::warn!(domain = %launched.name, "incoming migration failed: {err}");
                        if let Some(socket) = &waiting.socket {
                            let _ = std::fs::remove_file(socket);
                        }
                        domains.forget_incoming_definition(&launched.uuid, &launched.name);
                        if let Some(storage) = &waiting.storage {
                            storage.discard();
                        }
                    }
                }
                received
            });
            *incoming.task.lock().await = Some(task);
            lock(&self.migrations.incoming).insert(id.clone(), incoming);
            Ok(PreparedMigration {
                id,
                socket: socket
                    .map(|socket| socket.display().to_string())
                    .unwrap_or_default(),
                address: address.map(|address| address.to_string()),
                // A remote source reaches the NBD socket through its port only.
                nbd_socket: match nbd_address {
                    Some(_) => None,
                    None => nbd_socket.map(|path| path.display().to_string()),
                },
                nbd_address: nbd_address.map(|address| address.to_string()),
                cluster_host: cluster_lock.as_ref().map(|lock| lock.host()),
                tunnelled: request.tunnelled,
            })
        }
        .await;
        if prepared.is_err() {
            self.forget_incoming_definition(&record.uuid, &record.name);
        }
        prepared
    }

    /// `POST /v1/migrations/{id}/stream` (destination side, `--tunnelled`): the prepared
    /// migration `id`'s stream comes through the caller's connection, once only. Returns the
    /// relay's end (migration_tunnel.rs's `serve` relays the upgraded connection into it).
    pub fn incoming_stream(&self, id: &str) -> DaemonResult<tokio::net::UnixStream> {
        let incoming = self.migrations.incoming(id)?;
        let sender = lock(&incoming.tunnel).take().ok_or_else(|| {
            invalid_state(format!(
                "incoming migration '{id}' of domain '{}' does not take its stream through the API: it was not prepared --tunnelled, or its stream already came",
                incoming.name
            ))
        })?;
        let local = super::migration_tunnel::accept(id, sender)?;
        tracing::info!(domain = %incoming.name, migration = %id, "the migration stream comes through the API connection (tunnelled)");
        Ok(local)
    }

    /// `POST /v1/migrations/{id}/finish` (destination side): once the state is loaded, the
    /// guest runs here.
    /// A cluster guest resumes only once this host took its lock over (at the revision the
    /// source offered); if it then cannot resume, its QEMU ends and the lock goes back.
    pub async fn finish_incoming(
        self: &Arc<Self>,
        id: &str,
        request: &FinishMigration,
    ) -> DaemonResult<DomainSummary> {
        let incoming = self.migrations.take_incoming(id)?;
        let loaded = incoming.wait(FINISH_TIMEOUT).await;
        let locked = match (loaded, &incoming.lock) {
            (Ok(()), Some(cluster_lock)) => cluster_lock.take(request.lock_revision).await,
            (loaded, _) => loaded,
        };
        let took_lock = locked.is_ok() && incoming.lock.is_some();
        let resumed = match locked {
            Ok(()) => self.resume_migrated(&incoming).await,
            Err(err) => Err(err),
        };
        match resumed {
            Ok(summary) => {
                self.migrations.unmark_moving(&incoming.uuid);
                tracing::info!(domain = %incoming.name, "migrated in");
                Ok(summary)
            }
            Err(err) => {
                // Its QEMU ends before the lock goes back: never two running.
                self.discard_incoming(&incoming).await;
                if let (true, Some(cluster_lock)) = (took_lock, &incoming.lock) {
                    cluster_lock.give_back().await;
                }
                Err(err.context(format!("domain '{}' did not arrive", incoming.name)))
            }
        }
    }

    /// `DELETE /v1/migrations/{id}` (destination side): nothing of the migration stays.
    pub async fn abort_incoming(self: &Arc<Self>, id: &str) -> DaemonResult<()> {
        let incoming = self.migrations.take_incoming(id)?;
        incoming.cancel.notify_one();
        // A load in progress fails once the source closed its end.
        if let Err(err) = incoming.wait(FINISH_TIMEOUT).await {
            tracing::info!(domain = %incoming.name, "incoming migration ended: {err}");
        }
        self.discard_incoming(&incoming).await;
        tracing::info!(domain = %incoming.name, "incoming migration aborted");
        Ok(())
    }

    async fn resume_migrated(&self, incoming: &IncomingMigration) -> DaemonResult<DomainSummary> {
        let record = self
            .store
            .domain_by_uuid(&incoming.uuid)
            .map_err(db)?
            .ok_or_else(|| invalid_state(format!("domain '{}' is gone", incoming.name)))?;
        let vm = self.guests.slot(&record.uuid);
        let _guard = vm.op.clone().lock_owned().await;
        if incoming.storage.is_some() {
            let control = self.guests.running_control(&vm, &record)?;
            super::migration_storage::stop_serving(control.as_ref(), incoming.storage.as_ref())
                .await?;
        }
        if incoming.running {
            let control = self.guests.running_control(&vm, &record)?;
            // Recorded first: QEMU's RESUME event, which its supervisor may see before the
            // resume call returns, then finds the guest running and leaves the reason alone
            // (else it could record "unpaused" over "migrated"; seen after post-copy switches).
            self.guests
                .set_state(&vm, &record.uuid, DomainState::Running, "migrated");
            if let Err(err) = control.resume().await {
                self.guests
                    .set_state(&vm, &record.uuid, DomainState::Paused, "migrated");
                return Err(super::error::engine_failure(&record.name, err));
            }
        } else {
            self.guests
                .set_state(&vm, &record.uuid, DomainState::Paused, "migrated");
        }
        self.summary(&record)
    }

    /// Ends the guest an incoming migration started here (if it did) and forgets its
    /// definition.
    async fn discard_incoming(self: &Arc<Self>, incoming: &IncomingMigration) {
        if let Some(socket) = &incoming.socket {
            let _ = std::fs::remove_file(socket);
        }
        if let Ok(Some(record)) = self.store.domain_by_uuid(&incoming.uuid) {
            let vm = self.guests.slot(&record.uuid);
            let _guard = vm.op.clone().lock_owned().await;
            if let Ok(live) = self.guests.live_or_not_running(&vm, &record) {
                if let Err(err) = self.end_guest(&vm, &record, &live, Intent::Destroy).await {
                    tracing::error!(domain = %record.name, "cannot end the incoming guest: {err}");
                }
            }
        }
        self.forget_incoming_definition(&incoming.uuid, &incoming.name);
        if let Some(storage) = &incoming.storage {
            storage.discard();
        }
    }

    /// Removes the definition a prepare made (nothing runs of it any more).
    fn forget_incoming_definition(&self, uuid: &Uuid, name: &str) {
        let removed = self.store.transaction_or(db, |tx| {
            if store::runtime(tx, uuid).map_err(db)?.is_none() {
                store::delete_domain(tx, uuid).map_err(db)?;
            }
            Ok(())
        });
        if let Err(err) = removed {
            tracing::error!(domain = %name, "cannot remove the definition of a failed migration: {err}");
        }
        self.guests.forget(uuid);
        self.migrations.unmark_moving(uuid);
    }
}
