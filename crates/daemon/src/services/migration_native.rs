//! Migration of a native guest (docs/migration.md, "The native engine"), the source's side of
//! services/migration.rs. Never live (oxvirt-vmm has no pre-copy of its memory yet): the guest
//! is saved into a save image of this oxvirtd's private `STATE_DIR/migrations` (saves.rs: it is
//! paused, its VMM writes its whole machine state, and ends, so its disks are free for the
//! destination's VMM), and the image's state stream goes over the migration's connection (the
//! prepared socket or TCP port, as the qemu engine's stream) in `oxvirt_native::migration`'s
//! framing. The destination's engine spools it and restores from it as from a saved state
//! (engine/native.rs). A failure before the destination runs the guest relaunches it here
//! from the image (the restore path). The image is removed once the guest runs on either side.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use oxvirt_api::{Client, MigrateRequest, PreparedMigration};
use oxvirt_native::migration::Transfer;

use super::domains::Domains;
use super::error::{bad_request, db, DaemonError, DaemonResult, ErrorKind};
use super::guests::{Intent, Vm};
use super::jobs::{aborted, remove_files, Job};
use super::saves::SaveImage;
use crate::engine::MigrationProgress;
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
    if request.live {
        return refused(
            "a native guest cannot migrate live (--live) yet: oxvirt-vmm has no pre-copy of \
             its memory (KVM dirty logging); migrate without --live, the guest is paused while \
             its state moves",
        );
    }
    if request.copy_storage.is_some() {
        return refused(
            "a native guest's disks are not copied (--copy-storage-*): they must be on storage \
             both hosts reach at the same path",
        );
    }
    if request.auto_converge || request.compressed {
        return refused(
            "--auto-converge and --compressed are QEMU's migration capabilities; a native \
             guest's paused migration has neither",
        );
    }
    if request.timeout_s.is_some() {
        return refused("--timeout applies to live migrations; a native guest's is paused");
    }
    if request.tunnelled {
        // The tunnel would carry its stream as any other (migration_tunnel.rs), but no lab has
        // moved a native guest through it yet.
        return refused(
            "a native guest does not migrate --tunnelled yet: its state goes over the socket              or port the destination opens",
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
    pub(super) prepared: &'a PreparedMigration,
    pub(super) request: &'a MigrateRequest,
    pub(super) destination: &'a Client,
    pub(super) job: &'a Job,
    pub(super) connect: C,
    pub(super) finish: F,
}

impl Domains {
    /// Moves the native guest of `record` (running or paused; the caller holds its operation
    /// lock and prepared the destination): connects to the destination's stream, saves the
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
        let NativeMove {
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
                if let Err(abort) = destination.abort_migration(&prepared.id).await {
                    tracing::warn!(domain = %record.name, "the destination could not abort: {abort}");
                }
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
        if let Err(abort) = destination.abort_migration(&prepared.id).await {
            tracing::warn!(domain = %record.name, "the destination could not abort: {abort}");
        }
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
    let publish = |status: &str| {
        let total = transfer.total.load(Ordering::SeqCst);
        let sent = transfer.sent.load(Ordering::SeqCst);
        job.update(
            &MigrationProgress {
                status: status.to_string(),
                transferred: sent,
                remaining: total.saturating_sub(sent),
                total,
                ..MigrationProgress::default()
            },
            request.bandwidth_mib,
        );
    };
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
        let live = refusal(MigrateRequest {
            live: true,
            ..request()
        });
        assert!(live.contains("cannot migrate live (--live) yet"), "{live}");
        assert!(live.contains("dirty logging"), "{live}");
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
        assert!(timeout.contains("--timeout"), "{timeout}");
        let tunnelled = refusal(MigrateRequest {
            tunnelled: true,
            ..request()
        });
        assert!(tunnelled.contains("--tunnelled"), "{tunnelled}");
    }
}
