//! Migration of a native guest (docs/migration.md, "The native engine"), the source's side of
//! services/migration.rs. Its state goes over the migration's connection (the prepared socket
//! or TCP port, as the qemu engine's stream) in `oxvirt_native::migration`'s framing; the
//! destination's engine spools it and restores from it as from a saved state (engine/native.rs).
//!
//! - `--live`: the guest's VMM writes its state into a socket while the guest runs (pre-copy,
//!   pass after pass over the pages it writes) and pauses it for the last pass; a relay thread
//!   here carries what comes out into the destination's stream at `--bandwidth`. `--timeout S`
//!   pauses the guest after S seconds (as for the qemu engine, migration_flags.rs): the VMM's
//!   pass under way then finds few pages written and makes the next one its last. A failure or
//!   `domjobabort` while it streams: the VMM undoes it itself (the guest never stopped); after
//!   the stream completed (the destination failed): the same VMM takes it back
//!   (`migrate_cancel`) and the guest runs on here. Once it runs there, its VMM here ends.
//! - paused (no `--live`): the guest is saved into a save image of this oxvirtd's private
//!   `STATE_DIR/migrations` (saves.rs: it is paused, its VMM writes its whole machine state, and
//!   ends, so its disks are free for the destination's VMM), and the image's state stream is
//!   sent. A failure before the destination runs the guest relaunches it here from the image
//!   (the restore path). The image is removed once the guest runs on either side.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use oxvirt_api::{Client, DomainState, MigrateRequest, PreparedMigration};
use oxvirt_native::migration::Transfer;
use oxvirt_native::MigrationReport;

use super::domains::Domains;
use super::error::{bad_request, db, DaemonError, DaemonResult, ErrorKind};
use super::guests::{Intent, Vm};
use super::jobs::{abort_destination, aborted, remove_files, Job};
use super::migration_flags::SuspendAfter;
use super::saves::SaveImage;
use crate::engine::{Control, MigrationProgress};
use crate::state_dir::create_private_dir;
use crate::store::DomainRecord;

/// How often the transfer's progress is published (`domjobinfo`).
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Refuses, before anything moves, what a native guest's migration cannot do.
pub(super) fn check_request(request: &MigrateRequest, name: &str) -> DaemonResult<()> {
    let refused = |what: &str| {
        Err(bad_request(format!(
            "cannot migrate domain '{name}': {what}"
        )))
    };
    if request.copy_storage.is_some() {
        return refused(
            "a native guest's disks are not copied (--copy-storage-*): they must be on storage \
             both hosts reach at the same path",
        );
    }
    if request.auto_converge || request.compressed {
        return refused(
            "--auto-converge and --compressed are QEMU's migration capabilities; a native \
             guest's migration has neither",
        );
    }
    if request.postcopy {
        return refused(
            "a native guest's live migration is pre-copy only (--postcopy is QEMU's): \
             --timeout, --bandwidth and migrate-setmaxdowntime steer it",
        );
    }
    if request.timeout_s.is_some() && !request.live {
        return refused(
            "--timeout needs --live (a migration without it pauses the guest from the start)",
        );
    }
    if request.tunnelled {
        // The tunnel would carry its stream as any other (migration_tunnel.rs), but no lab has
        // moved a native guest through it yet.
        return refused(
            "a native guest does not migrate --tunnelled yet: its state goes over the socket \
             or port the destination opens",
        );
    }
    Ok(())
}

/// Whether `domjobabort` came (its permit is kept until looked at).
async fn abort_requested(job: &Job) -> bool {
    tokio::select! {
        biased;
        () = job.abort.notified() => true,
        () = std::future::ready(()) => false,
    }
}

/// What a native guest's migration needs of the source's migrate call (migration.rs): the
/// connection to the destination's stream and the destination's finish, each a future that
/// runs only when awaited.
pub(super) struct NativeMove<'a, C, F> {
    /// The guest's control (a live migration's stream and its undoing).
    pub(super) control: &'a dyn Control,
    /// Whether the guest runs (not paused) as the migration begins.
    pub(super) running: bool,
    pub(super) prepared: &'a PreparedMigration,
    pub(super) request: &'a MigrateRequest,
    pub(super) destination: &'a Client,
    pub(super) job: &'a Job,
    pub(super) connect: C,
    pub(super) finish: F,
}

impl Domains {
    /// Moves the native guest of `record` (running or paused; the caller holds its operation
    /// lock and prepared the destination): `--live`, see [`Domains::move_native_live`];
    /// otherwise connects to the destination's stream, saves the
    /// guest into a save image of `STATE_DIR/migrations` (it is paused for it, and its VMM ends:
    /// the domain is shut off, reason migrated, and its disks are free for the destination's
    /// VMM), sends the image's state and asks the destination to finish. Any failure before
    /// that is done aborts the destination's side and, once the VMM had ended, relaunches the
    /// guest here from the image (the restore path, running again if it ran). The image goes
    /// in every path but one: a guest that could not be relaunched, whose image the error names.
    pub(super) async fn move_native<C, F>(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        native: NativeMove<'_, C, F>,
    ) -> DaemonResult<()>
    where
        C: std::future::Future<Output = DaemonResult<OwnedFd>>,
        F: std::future::Future<Output = DaemonResult<()>>,
    {
        if native.request.live {
            return self.move_native_live(record, native).await;
        }
        let NativeMove {
            control: _,
            running: _,
            prepared,
            request,
            destination,
            job,
            connect,
            finish,
        } = native;
        let dir = self.guests.state_dir().join("migrations");
        create_private_dir(&dir).map_err(|err| {
            super::error::internal(&format!("cannot create {}", dir.display()), err)
        })?;
        let image_path = dir.join(format!("{}-out.save", prepared.id));
        let keep_id = self.store.runtime(&record.uuid).map_err(db)?.map(|r| r.id);
        let stopped = async {
            // Before anything stops: an unreachable destination moves nothing.
            let stream = connect.await?;
            // Pauses it, saves it (resumed if that fails) and ends its VMM.
            self.save_locked(vm, record, &image_path, None, Intent::Migrated)
                .await
                .map_err(|err| err.context("cannot save the guest's machine state"))?;
            Ok::<_, DaemonError>(stream)
        }
        .await;
        let stream = match stopped {
            Ok(stream) => stream,
            Err(err) => {
                remove_files(std::slice::from_ref(&image_path));
                return Err(err);
            }
        };
        let image = match SaveImage::read(&image_path) {
            Ok(image) => image,
            Err(err) => {
                // Saved, but unreadable: nothing to send, nor to relaunch from.
                abort_destination(destination, prepared, &record.name).await;
                return Err(err.context(format!(
                    "domain '{}' is shut off here: the state it was saved into cannot be read back",
                    record.name
                )));
            }
        };
        let moved = async {
            if abort_requested(job).await {
                return Err(aborted());
            }
            send_state(stream, &image, request, job).await?;
            finish.await
        }
        .await;
        let Err(err) = moved else {
            remove_files(std::slice::from_ref(&image_path));
            return Ok(());
        };
        abort_destination(destination, prepared, &record.name).await;
        match self
            .start_from_image(vm, record, &image, None, keep_id)
            .await
        {
            Ok(_) => {
                remove_files(std::slice::from_ref(&image_path));
                Err(err)
            }
            Err(relaunch) => Err(err.context(format!(
                "domain '{}' is shut off here: it could not be relaunched from its state ({}); \
                 `oxvirt restore {}` starts it from there",
                record.name,
                relaunch.message,
                image_path.display()
            ))),
        }
    }
}

impl Domains {
    /// A native guest's live migration: connects to the destination's stream (an unreachable
    /// destination moves nothing), streams the guest's state while it runs ([`stream_live`]),
    /// then asks the destination to finish (it restores and resumes the guest). The guest's VMM
    /// here is left paused, its disks' locks released, for the caller to end (`shut off
    /// (migrated)`). Any failure leaves the guest running here (paused if it was) in the same
    /// VMM process, the destination's side aborted: before the stream completed the VMM undid
    /// the migration itself; after, it is told to (`migrate_cancel`).
    async fn move_native_live<C, F>(
        &self,
        record: &DomainRecord,
        native: NativeMove<'_, C, F>,
    ) -> DaemonResult<()>
    where
        C: std::future::Future<Output = DaemonResult<OwnedFd>>,
        F: std::future::Future<Output = DaemonResult<()>>,
    {
        let NativeMove {
            control,
            running,
            prepared,
            request,
            destination,
            job,
            connect,
            finish,
        } = native;
        let stream = connect.await?;
        if abort_requested(job).await {
            drop(stream);
            abort_destination(destination, prepared, &record.name).await;
            return Err(aborted());
        }
        let slot = self.guests.slot(&record.uuid);
        let paused_by_timeout = || {
            self.guests
                .set_state(&slot, &record.uuid, DomainState::Paused, "migration");
        };
        let mut timeout = Timeout {
            after: SuspendAfter::new(request),
            domain: &record.name,
            paused: &paused_by_timeout,
        };
        let streamed = stream_live(control, stream, request, job, &mut timeout).await;
        // Paused by --timeout, a guest that ran runs again here if the migration fails.
        let suspended_at = timeout.after.suspended_at().filter(|_| running);
        let (report, streamed_at) = match streamed {
            Streamed::Complete(report, answered) => (report, answered),
            Streamed::Failed(err) => {
                abort_destination(destination, prepared, &record.name).await;
                return Err(self
                    .run_again(control, record, suspended_at.is_some(), err)
                    .await);
            }
            Streamed::Undelivered(err) => {
                abort_destination(destination, prepared, &record.name).await;
                let err = take_back(control, &record.name, err).await;
                return Err(self
                    .run_again(control, record, suspended_at.is_some(), err)
                    .await);
            }
        };
        tracing::info!(
            domain = %record.name,
            passes = report.passes,
            bytes = report.bytes,
            last_pass_bytes = report.last_pass_bytes,
            paused_ms = report.paused_ms,
            "the guest's live state stream is complete"
        );
        if let Err(err) = finish.await {
            abort_destination(destination, prepared, &record.name).await;
            let err = take_back(control, &record.name, err).await;
            return Err(self
                .run_again(control, record, suspended_at.is_some(), err)
                .await);
        }
        // The guest was paused here for the last pass (or since --timeout paused it), then
        // until the destination resumed it (the relay's last bytes and D's restore included):
        // what domjobinfo shows as the downtime.
        let millis = |since: std::time::Instant| {
            u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
        };
        let downtime = match suspended_at {
            Some(at) => millis(at),
            None => report.paused_ms.saturating_add(millis(streamed_at)),
        };
        job.set_downtime(downtime);
        tracing::info!(domain = %record.name, downtime_ms = downtime, "the guest runs on the destination");
        Ok(())
    }
}

impl Domains {
    /// After a failed live migration of a guest that ran until `--timeout` paused it
    /// (`paused_by_timeout`; otherwise the VMM put the guest back as it was): resumes it here;
    /// returns `err`, saying where the guest is if that failed.
    async fn run_again(
        &self,
        control: &dyn Control,
        record: &DomainRecord,
        paused_by_timeout: bool,
        err: DaemonError,
    ) -> DaemonError {
        if !paused_by_timeout {
            return err;
        }
        match control.resume().await {
            Ok(()) => {
                self.guests.set_state(
                    &self.guests.slot(&record.uuid),
                    &record.uuid,
                    DomainState::Running,
                    "migration canceled",
                );
                err
            }
            Err(resume) => {
                tracing::error!(domain = %record.name, "cannot resume after a failed migration: {resume}");
                err.context(format!(
                    "domain '{}' stays paused here (paused at --timeout; it could not be resumed: {})",
                    record.name, resume.message
                ))
            }
        }
    }
}

/// `--timeout S` of a live migration ([`SuspendAfter`]): the guest is paused once S seconds
/// went, and `paused` records it (the domain's state: paused, reason migration).
struct Timeout<'a> {
    after: SuspendAfter,
    domain: &'a str,
    paused: &'a (dyn Fn() + Sync),
}

/// Publishes `transfer` in `job` (`domjobinfo`): bytes of the state sent, left and in all (none
/// while its length is not known: a live stream's until it ended). `live`: the VMM's view of
/// a live stream under way (its passes, the guest's dirty rate, and what its next pass sends:
/// the bytes left, as far as anyone knows).
fn publish(
    job: &Job,
    request: &MigrateRequest,
    transfer: &Transfer,
    status: &str,
    live: Option<&MigrationProgress>,
) {
    let total = transfer.total.load(Ordering::SeqCst);
    let sent = transfer.sent.load(Ordering::SeqCst);
    let (remaining, dirty_rate, passes) = match live {
        Some(live) => (live.remaining, live.dirty_rate, live.passes),
        None => (total.saturating_sub(sent), 0, 0),
    };
    job.update(
        &MigrationProgress {
            status: status.to_string(),
            transferred: sent,
            remaining,
            total,
            dirty_rate,
            passes,
            ..MigrationProgress::default()
        },
        request.bandwidth_mib,
    );
}

/// How [`stream_live`] went.
enum Streamed {
    /// The VMM completed the stream (answered then) and all of it went to the destination, its
    /// end included.
    Complete(MigrationReport, std::time::Instant),
    /// The VMM completed the stream (it waits paused, its disks' locks released), but it did
    /// not all reach the destination.
    Undelivered(DaemonError),
    /// The VMM did not complete it: it undid the migration itself, the guest runs as before.
    Failed(DaemonError),
}

/// After the VMM completed a live stream that the destination did not take: the guest runs
/// here again in the same VMM (`migrate_cancel`); returns `err`, saying where the guest is if
/// that failed too.
async fn take_back(control: &dyn Control, name: &str, err: DaemonError) -> DaemonError {
    match control.migrate_cancel().await {
        Ok(()) => err,
        Err(cancel) => err.context(format!(
            "domain '{name}' stays paused here, its disks' locks released: its VMM could not \
             take the migration back ({cancel})"
        )),
    }
}

/// Streams the guest's state live into `stream` (the connection to the destination): a socket
/// pair's one end goes to the VMM ([`Control::migrate_live`]), a blocking thread relays what
/// comes out of the other ([`oxvirt_native::migration::relay_state`]) at `--bandwidth`,
/// counting it in `job` (`domjobinfo`: bytes sent; the stream's length is not known before it
/// ends, so no total is shown), and writes the stream's end once the VMM said it is complete.
/// `domjobabort` shuts both sockets down: the relay stops, the VMM's next write fails, and it
/// undoes the migration (or, if it had completed, the stream is undelivered); so does a
/// `timeout` whose pause failed. Once `timeout` paused the guest, the VMM's pass under way
/// finds little written and its next one is the last.
async fn stream_live(
    control: &dyn Control,
    stream: OwnedFd,
    request: &MigrateRequest,
    job: &Job,
    timeout: &mut Timeout<'_>,
) -> Streamed {
    let internal =
        |what: &str, err: std::io::Error| Streamed::Failed(super::error::internal(what, err));
    if let Err(err) = oxvirt_native::migration::set_blocking(&stream) {
        return internal("cannot make the migration connection blocking", err);
    }
    let (vmm_end, relay_end) = match std::os::unix::net::UnixStream::pair() {
        Ok(pair) => pair,
        Err(err) => return internal("cannot create the VMM's migration socket", err),
    };
    // Ours, to shut each connection down while the relay thread holds the other descriptor.
    let (shut_out, shut_in) = match (stream.try_clone(), relay_end.try_clone()) {
        (Ok(out), Ok(input)) => (out, input),
        (Err(err), _) | (_, Err(err)) => {
            return internal("cannot duplicate the migration connection", err)
        }
    };
    let transfer = Arc::new(Transfer::default());
    let relaying = {
        let transfer = Arc::clone(&transfer);
        let rate = request.bandwidth_mib.map(|mib| mib.saturating_mul(1 << 20));
        let mut input = relay_end;
        let mut out = std::fs::File::from(stream);
        tokio::task::spawn_blocking(move || {
            let relayed =
                oxvirt_native::migration::relay_state(&mut input, &mut out, rate, &transfer);
            (out, relayed)
        })
    };
    tokio::pin!(relaying);
    let migrating = control.migrate_live(OwnedFd::from(vmm_end));
    tokio::pin!(migrating);
    let publish = |status: &str, live: Option<&MigrationProgress>| {
        publish(job, request, &transfer, status, live)
    };
    let mut answer = None;
    let mut relayed = None;
    // Why the stream was cut short (domjobabort, or a --timeout that could not pause).
    let mut stopped: Option<DaemonError> = None;
    let stop = |why: DaemonError, stopped: &mut Option<DaemonError>| {
        transfer.abort.store(true, Ordering::SeqCst);
        // A write blocked on a destination that reads no more, and the VMM's blocked on the
        // relay, return at once.
        // SAFETY: shutdown(2) of our own descriptors of both sockets; no memory involved.
        unsafe {
            libc::shutdown(shut_out.as_raw_fd(), libc::SHUT_RDWR);
            libc::shutdown(shut_in.as_raw_fd(), libc::SHUT_RDWR);
        }
        *stopped = Some(why);
    };
    while answer.is_none() || relayed.is_none() {
        tokio::select! {
            reply = &mut migrating, if answer.is_none() => {
                // Complete (or given up): what the VMM wrote is in the socket; the relay ends
                // once it drained it.
                // SAFETY: shutdown(2) of our own descriptor of the socket; no memory involved.
                unsafe { libc::shutdown(shut_in.as_raw_fd(), libc::SHUT_RD) };
                answer = Some(reply.map(|report| (report, std::time::Instant::now())));
            }
            done = &mut relaying, if relayed.is_none() => {
                // The relay ended (the VMM closed its end, or the destination failed): the VMM's
                // next write fails rather than waiting for a reader that is gone.
                // SAFETY: as above.
                unsafe { libc::shutdown(shut_in.as_raw_fd(), libc::SHUT_RDWR) };
                relayed = Some(done);
            }
            () = job.abort.notified(), if stopped.is_none() => stop(aborted(), &mut stopped),
            () = tokio::time::sleep(POLL) => {
                // The VMM's passes, dirty rate and what its next pass sends (none before its
                // first pass began, nor from a VMM that does not say).
                let live = match answer {
                    None => control.migration_progress().await.ok(),
                    Some(_) => None,
                };
                publish("active", live.as_ref());
                // (Once the VMM answered, the stream is complete: nothing to pause for.)
                if answer.is_none() && stopped.is_none() {
                    let before = timeout.after.suspended_at();
                    match timeout.after.check(control, job, timeout.domain).await {
                        Ok(()) if before.is_none() && timeout.after.suspended_at().is_some() => {
                            (timeout.paused)();
                        }
                        Ok(()) => {}
                        Err(err) => stop(err, &mut stopped),
                    }
                }
            }
        }
    }
    let (Some(answer), Some(relayed)) = (answer, relayed) else {
        unreachable!("the loop ends once both came");
    };
    let (report, answered) = match answer {
        Ok(answered) => answered,
        Err(err) => {
            publish("failed", None);
            // A relay that failed first is the cause (the VMM's write failed after it).
            let cause = match &relayed {
                Ok((_, Err(relay))) => format!("; {relay}"),
                _ => String::new(),
            };
            let err = match stopped {
                Some(why) => why,
                None => DaemonError::new(
                    ErrorKind::Engine,
                    format!(
                        "the guest's VMM did not complete its state stream: {}{cause}",
                        err.message
                    ),
                ),
            };
            return Streamed::Failed(err);
        }
    };
    let delivered = match (relayed, stopped) {
        (_, Some(why)) => Err(why),
        (Err(join), None) => Err(super::error::internal(
            "the migration's relaying thread",
            join,
        )),
        (Ok((_, Err(err))), None) => Err(DaemonError::new(ErrorKind::Engine, err.to_string())),
        (Ok((mut out, Ok(_))), None) => {
            // The stream is whole: its end tells the destination so.
            tokio::task::spawn_blocking(move || oxvirt_native::migration::end_state(&mut out))
                .await
                .map_err(|join| super::error::internal("the migration's relaying thread", join))
                .and_then(|ended| {
                    ended.map_err(|err| DaemonError::new(ErrorKind::Engine, err.to_string()))
                })
        }
    };
    match delivered {
        Ok(()) => {
            // Its length is known now that it ended.
            let sent = transfer.sent.load(Ordering::SeqCst);
            transfer.total.store(sent, Ordering::SeqCst);
            // Every pass, the paused last one included; nothing left.
            let done = MigrationProgress {
                passes: u64::from(report.passes),
                ..MigrationProgress::default()
            };
            publish("completed", Some(&done));
            Streamed::Complete(report, answered)
        }
        Err(err) => {
            publish("failed", None);
            Streamed::Undelivered(err)
        }
    }
}

/// Sends the state stream of `image` into `stream` (the connection to the destination),
/// following it in `job` (`domjobinfo`: bytes of the state sent, left, in all) and stopping at
/// `domjobabort`.
async fn send_state(
    stream: OwnedFd,
    image: &SaveImage,
    request: &MigrateRequest,
    job: &Job,
) -> DaemonResult<()> {
    oxvirt_native::migration::set_blocking(&stream).map_err(|err| {
        super::error::internal("cannot make the migration connection blocking", err)
    })?;
    let transfer = Arc::new(Transfer::default());
    // Ours, to shut the connection down on an abort while the sending thread holds the other.
    let shut = stream
        .try_clone()
        .map_err(|err| super::error::internal("cannot duplicate the migration connection", err))?;
    let sending = {
        let transfer = Arc::clone(&transfer);
        let state = image.state();
        let len = image.state_len();
        let rate = request.bandwidth_mib.map(|mib| mib.saturating_mul(1 << 20));
        let mut out = std::fs::File::from(stream);
        tokio::task::spawn_blocking(move || {
            oxvirt_native::migration::send_state(
                &state.path,
                state.offset,
                len,
                &mut out,
                rate,
                &transfer,
            )
        })
    };
    tokio::pin!(sending);
    let publish = |status: &str| publish(job, request, &transfer, status, None);
    loop {
        tokio::select! {
            sent = &mut sending => {
                publish("completed");
                return sent
                    .map_err(|err| super::error::internal("the migration's sending thread", err))?
                    .map_err(|err| DaemonError::new(ErrorKind::Engine, err.to_string()));
            }
            () = job.abort.notified() => {
                transfer.abort.store(true, Ordering::SeqCst);
                // A write blocked on a destination that reads no more returns at once.
                // SAFETY: shutdown(2) of our own descriptor of the socket; no memory involved.
                unsafe { libc::shutdown(shut.as_raw_fd(), libc::SHUT_RDWR) };
                let _ = (&mut sending).await;
                return Err(aborted());
            }
            () = tokio::time::sleep(POLL) => publish("active"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> MigrateRequest {
        MigrateRequest {
            destination: "/run/b.sock".to_string(),
            ..MigrateRequest::default()
        }
    }

    #[test]
    fn what_a_native_guest_cannot_do_is_refused_naming_why() {
        assert!(check_request(&request(), "vm").is_ok());
        let refusal = |request: MigrateRequest| check_request(&request, "vm").unwrap_err().message;
        let live = MigrateRequest {
            live: true,
            ..request()
        };
        assert!(check_request(&live, "vm").is_ok(), "--live is taken");
        let copy = refusal(MigrateRequest {
            copy_storage: Some(oxvirt_api::CopyStorage::All),
            ..request()
        });
        assert!(copy.contains("--copy-storage-*"), "{copy}");
        let converge = refusal(MigrateRequest {
            auto_converge: true,
            ..request()
        });
        assert!(converge.contains("--auto-converge"), "{converge}");
        let timeout = refusal(MigrateRequest {
            timeout_s: Some(3),
            ..request()
        });
        assert!(timeout.contains("--timeout needs --live"), "{timeout}");
        let live_timeout = MigrateRequest {
            timeout_s: Some(3),
            ..live.clone()
        };
        assert!(
            check_request(&live_timeout, "vm").is_ok(),
            "--live --timeout is taken"
        );
        let postcopy = refusal(MigrateRequest {
            postcopy: true,
            ..live.clone()
        });
        assert!(postcopy.contains("pre-copy only"), "{postcopy}");
        let tunnelled = refusal(MigrateRequest {
            tunnelled: true,
            ..request()
        });
        assert!(tunnelled.contains("--tunnelled"), "{tunnelled}");
    }

    use crate::engine::{EngineError, EngineErrorKind, GuestStatus};
    use std::io::Write as _;
    use std::sync::atomic::AtomicBool;

    /// What the fake VMM does with the stream's socket.
    #[derive(Clone, Copy)]
    enum Vmm {
        /// Writes `n` bytes, then answers with a report.
        Completes(usize),
        /// Writes `n` bytes, then gives up (as a VMM whose stream failed: it undid itself).
        GivesUp(usize),
        /// Writes until its write fails (its reader went), then gives up.
        WritesUntilCut,
        /// Writes (about 16 MiB/s) until paused, then `n` bytes more, then answers with a
        /// report: a guest that keeps writing its memory faster than it converges.
        CompletesOncePaused(usize),
    }

    /// A native guest's control of which only the live stream is used.
    struct FakeVmm {
        does: Vmm,
        /// Set when a write of its failed (the relay was shut down under it).
        cut: Arc<AtomicBool>,
        /// The destination's end of its connection, closed once the stream is complete.
        destination: std::sync::Mutex<Option<std::os::unix::net::UnixStream>>,
        /// Set by `pause`.
        paused: Arc<AtomicBool>,
    }

    impl FakeVmm {
        /// A fake VMM doing `does`, with no destination end to close.
        fn doing(does: Vmm) -> FakeVmm {
            FakeVmm {
                does,
                cut: Arc::default(),
                destination: Default::default(),
                paused: Arc::default(),
            }
        }
    }

    /// The bytes the fake VMM writes: a pattern the destination's copy is compared with.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 241) as u8).collect()
    }

    #[async_trait::async_trait]
    impl Control for FakeVmm {
        async fn status(&self) -> Result<GuestStatus, EngineError> {
            Ok(GuestStatus::Running)
        }
        async fn pause(&self) -> Result<(), EngineError> {
            self.paused.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn resume(&self) -> Result<(), EngineError> {
            Ok(())
        }
        async fn power_button(&self) -> Result<(), EngineError> {
            Ok(())
        }
        async fn reset(&self) -> Result<(), EngineError> {
            Ok(())
        }
        async fn quit(&self) -> Result<(), EngineError> {
            Ok(())
        }
        async fn migrate_live(&self, stream: OwnedFd) -> Result<MigrationReport, EngineError> {
            let does = self.does;
            let cut = Arc::clone(&self.cut);
            let paused = Arc::clone(&self.paused);
            let destination = self.destination.lock().unwrap().take();
            tokio::task::spawn_blocking(move || {
                let mut socket = std::fs::File::from(stream);
                let failed = |message: String| EngineError {
                    kind: EngineErrorKind::Failed,
                    message,
                };
                match does {
                    Vmm::Completes(n) => {
                        for piece in pattern(n).chunks(100_003) {
                            socket.write_all(piece).map_err(|e| failed(e.to_string()))?;
                        }
                        drop(destination);
                        Ok(MigrationReport {
                            passes: 2,
                            bytes: n as u64,
                            last_pass_bytes: 4096,
                            paused_ms: 7,
                        })
                    }
                    Vmm::GivesUp(n) => {
                        socket
                            .write_all(&pattern(n))
                            .map_err(|e| failed(e.to_string()))?;
                        Err(failed("the guest's RAM could not be read".into()))
                    }
                    Vmm::WritesUntilCut => loop {
                        if let Err(err) = socket.write_all(&[1; 65536]) {
                            cut.store(true, Ordering::SeqCst);
                            return Err(failed(format!("the stream failed: {err}")));
                        }
                    },
                    Vmm::CompletesOncePaused(n) => {
                        let mut passes = 1;
                        while !paused.load(Ordering::SeqCst) {
                            socket
                                .write_all(&[1; 65536])
                                .map_err(|e| failed(e.to_string()))?;
                            passes += 1;
                            std::thread::sleep(std::time::Duration::from_millis(4));
                        }
                        socket
                            .write_all(&pattern(n))
                            .map_err(|e| failed(e.to_string()))?;
                        Ok(MigrationReport {
                            passes,
                            bytes: n as u64,
                            last_pass_bytes: n as u64,
                            paused_ms: 3,
                        })
                    }
                }
            })
            .await
            .unwrap()
        }
    }

    /// Streams with a fake VMM doing `does`, the destination's side read by `receive_state`
    /// into a file of `dir` on a thread (returned: what it received or why it failed).
    async fn stream_with(
        does: Vmm,
        dir: &std::path::Path,
        abort: bool,
    ) -> (
        Streamed,
        Arc<Job>,
        std::thread::JoinHandle<Result<u64, oxvirt_native::NativeError>>,
        Arc<AtomicBool>,
    ) {
        let request = MigrateRequest {
            live: true,
            ..request()
        };
        let (streamed, job, receiver, cut, _) =
            stream_with_request(does, dir, abort, request).await;
        (streamed, job, receiver, cut)
    }

    /// [`stream_with`] for `request`; also returns how often the guest was recorded paused by
    /// the request's `--timeout`.
    async fn stream_with_request(
        does: Vmm,
        dir: &std::path::Path,
        abort: bool,
        request: MigrateRequest,
    ) -> (
        Streamed,
        Arc<Job>,
        std::thread::JoinHandle<Result<u64, oxvirt_native::NativeError>>,
        Arc<AtomicBool>,
        usize,
    ) {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let into = dir.join("incoming.state");
        let receiver = std::thread::spawn(move || {
            oxvirt_native::migration::receive_state(&mut theirs, &into, 1 << 30)
        });
        let migrations = super::super::jobs::Migrations::default();
        let job = migrations.begin_job(uuid::Uuid::new_v4(), "vm", false);
        if abort {
            job.abort.notify_one();
        }
        let vmm = FakeVmm::doing(does);
        let recorded = std::sync::atomic::AtomicUsize::new(0);
        let paused = || {
            recorded.fetch_add(1, Ordering::SeqCst);
        };
        let mut timeout = Timeout {
            after: SuspendAfter::new(&request),
            domain: "vm",
            paused: &paused,
        };
        let streamed = stream_live(&vmm, OwnedFd::from(ours), &request, &job, &mut timeout).await;
        (
            streamed,
            job,
            receiver,
            vmm.cut,
            recorded.load(Ordering::SeqCst),
        )
    }

    /// Streams into `ours` (the destination's connection) with `vmm`, in a job of its own and
    /// without a --timeout: for the tests that hold the destination's end themselves.
    async fn stream_into(vmm: &FakeVmm, ours: std::os::unix::net::UnixStream) -> Streamed {
        fn nothing() {}
        let migrations = super::super::jobs::Migrations::default();
        let job = migrations.begin_job(uuid::Uuid::new_v4(), "vm", false);
        let mut timeout = Timeout {
            after: SuspendAfter::new(&request()),
            domain: "vm",
            paused: &nothing,
        };
        stream_live(vmm, OwnedFd::from(ours), &request(), &job, &mut timeout).await
    }

    #[tokio::test]
    async fn a_live_stream_reaches_the_destination_whole_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * (1 << 20) + 5;
        let (streamed, job, receiver, _) =
            stream_with(Vmm::Completes(len), dir.path(), false).await;
        let Streamed::Complete(report, _) = streamed else {
            panic!("not complete");
        };
        assert_eq!(report.passes, 2);
        assert_eq!(receiver.join().unwrap().unwrap(), len as u64);
        assert_eq!(
            std::fs::read(dir.path().join("incoming.state")).unwrap(),
            pattern(len)
        );
        let info = lock_info(&job);
        assert_eq!(info.memory_processed, len as u64);
        assert_eq!(info.memory_total, len as u64, "known once it ended");
        assert_eq!(info.memory_iteration, 2, "the VMM's passes");
        assert_eq!(info.phase.as_deref(), Some("completed"));
    }

    #[tokio::test]
    async fn a_vmm_that_gives_up_leaves_the_destination_a_cut_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (streamed, _job, receiver, _) =
            stream_with(Vmm::GivesUp(70_000), dir.path(), false).await;
        let Streamed::Failed(err) = streamed else {
            panic!("not a failure");
        };
        assert!(
            err.message
                .contains("did not complete its state stream: the guest's RAM could not be read"),
            "{}",
            err.message
        );
        // No end chunk went: the destination refuses what came.
        let refused = receiver.join().unwrap().unwrap_err().to_string();
        assert!(
            refused.contains("ended after 70000 bytes of state, before its end"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn an_abort_cuts_the_vmms_stream_and_names_domjobabort() {
        let dir = tempfile::tempdir().unwrap();
        let (streamed, job, receiver, cut) =
            stream_with(Vmm::WritesUntilCut, dir.path(), true).await;
        let Streamed::Failed(err) = streamed else {
            panic!("not a failure");
        };
        assert!(err.message.contains("domjobabort"), "{}", err.message);
        assert!(cut.load(Ordering::SeqCst), "the VMM's write failed");
        assert!(receiver.join().unwrap().is_err());
        assert_eq!(lock_info(&job).memory_total, 0, "no total made up");
    }

    #[tokio::test]
    async fn a_destination_gone_after_the_vmm_completed_is_undelivered() {
        let dir = tempfile::tempdir().unwrap();
        // The destination goes once the VMM wrote all of it: the relay's last bytes or the
        // stream's end find it gone.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let vmm = FakeVmm {
            destination: std::sync::Mutex::new(Some(theirs)),
            ..FakeVmm::doing(Vmm::Completes(1000))
        };
        let streamed = stream_into(&vmm, ours).await;
        let Streamed::Undelivered(err) = streamed else {
            panic!("not undelivered");
        };
        assert!(
            err.message.contains("cannot send the machine state"),
            "{}",
            err.message
        );
        drop(dir);
    }

    #[tokio::test]
    async fn a_destination_gone_midway_is_named_as_the_cause() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let vmm = FakeVmm::doing(Vmm::WritesUntilCut);
        let streamed = stream_into(&vmm, ours).await;
        let Streamed::Failed(err) = streamed else {
            panic!("not a failure");
        };
        assert!(vmm.cut.load(Ordering::SeqCst), "the VMM's write failed");
        assert!(
            err.message
                .contains("did not complete its state stream: the stream failed")
                && err
                    .message
                    .contains("cannot send the machine state to the destination"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn at_the_timeout_the_guest_is_paused_once_and_the_stream_completes() {
        let dir = tempfile::tempdir().unwrap();
        let request = MigrateRequest {
            live: true,
            timeout_s: Some(1),
            ..request()
        };
        let started = std::time::Instant::now();
        let (streamed, _job, receiver, _, recorded) =
            stream_with_request(Vmm::CompletesOncePaused(5000), dir.path(), false, request).await;
        let Streamed::Complete(report, _) = streamed else {
            panic!("not complete");
        };
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        assert!(report.passes > 1, "it wrote until paused");
        assert_eq!(recorded, 1, "recorded paused once");
        let received = receiver.join().unwrap().unwrap();
        let state = std::fs::read(dir.path().join("incoming.state")).unwrap();
        assert_eq!(state.len() as u64, received);
        assert!(state.ends_with(&pattern(5000)), "the last pass came whole");
    }

    fn lock_info(job: &Job) -> oxvirt_api::JobInfo {
        job.info.lock().unwrap().clone()
    }
}
