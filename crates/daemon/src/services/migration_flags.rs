//! `migrate --auto-converge` and `--compressed`: QEMU's migration capabilities `auto-converge`
//! and `xbzrle`, set on the source's QEMU before anything moves (both act on the sending side:
//! the destination's QEMU loads XBZRLE-encoded pages whatever its own capabilities say). Each
//! is set on or off as the request says, so a flag of an earlier migration does not linger.
//!
//! `--postcopy` (QEMU's `postcopy-ram`) is set here too, and must also be on the destination's
//! QEMU (set before its load: qemu's `load_state`), which needs userfaultfd
//! ([`check_userfaultfd`], the destination's prepare). The switch to post-copy comes from
//! `migrate-postcopy`, `--timeout S --timeout-postcopy` ([`SuspendAfter`]) or
//! `--postcopy-after-precopy` (migration.rs's loop).

use std::time::{Duration, Instant};

use oxvirt_api::MigrateRequest;

use super::error::{bad_request, DaemonError, DaemonResult, ErrorKind};
use super::jobs::Job;
use crate::engine::Control;

/// The kernel's switch for userfaultfd in unprivileged processes (0: only with CAP_SYS_PTRACE).
pub(super) const UNPRIVILEGED_USERFAULTFD: &str = "/proc/sys/vm/unprivileged_userfaultfd";

/// virsh's rules for the post-copy flags, checked before anything moves (the CLI checks them
/// too; the API's other clients get the same answer).
pub(super) fn check_postcopy(request: &MigrateRequest, domain: &str) -> DaemonResult<()> {
    let refused = |what: &str| {
        Err(bad_request(format!(
            "cannot migrate domain '{domain}': {what}"
        )))
    };
    if (request.timeout_postcopy || request.postcopy_after_precopy) && !request.postcopy {
        return refused("--timeout-postcopy and --postcopy-after-precopy need --postcopy");
    }
    if request.timeout_postcopy && request.timeout_s.is_none() {
        return refused("--timeout-postcopy needs --timeout");
    }
    if !request.postcopy {
        return Ok(());
    }
    if !request.live {
        return refused("--postcopy needs --live (the guest runs while its memory moves)");
    }
    if request.copy_storage.is_some() {
        return refused(
            "--postcopy with --copy-storage-* is not supported yet (the disks' mirrors would \
             have to end before the switch)",
        );
    }
    Ok(())
}

/// (Destination) Whether this host's QEMU can receive a post-copy migration: it needs
/// userfaultfd (QEMU 7.2 calls the system call; /dev/userfaultfd came with QEMU 8.1), which the
/// kernel gives a process without CAP_SYS_PTRACE only when `vm.unprivileged_userfaultfd` is 1.
/// `unprivileged`: QEMU runs as a guest user (qemu_user_range), not as root (`--no-sandbox`).
/// Refused here, naming the sysctl, before anything is defined; QEMU's own refusal ("Postcopy
/// is not supported", when it sets the capability) would come only once the stream connected.
pub(super) fn check_userfaultfd(unprivileged: bool) -> DaemonResult<()> {
    if !unprivileged {
        return Ok(());
    }
    let value = std::fs::read_to_string(UNPRIVILEGED_USERFAULTFD);
    match value.as_deref().map(str::trim) {
        Ok("1") => Ok(()),
        other => Err(DaemonError::new(
            ErrorKind::InvalidState,
            format!(
                "post-copy (--postcopy) needs userfaultfd in this host's QEMU, which runs as an \
                 unprivileged user (qemu_user_range): the kernel allows it only with \
                 vm.unprivileged_userfaultfd = 1, and {UNPRIVILEGED_USERFAULTFD} is {} \
                 (`sysctl -w vm.unprivileged_userfaultfd=1` allows it; docs/migration.md)",
                match other {
                    Ok(value) => value.to_string(),
                    Err(err) => format!("unreadable ({err})"),
                }
            ),
        )),
    }
}

/// Switches the migration of `job` to post-copy (`migrate-postcopy`, or one of the flags that
/// do it by themselves): from here on the guest runs on the destination and cannot come back.
pub(super) async fn switch_to_postcopy(
    control: &dyn Control,
    job: &Job,
    domain: &str,
) -> DaemonResult<()> {
    if !job.postcopy {
        return Err(DaemonError::new(
            ErrorKind::InvalidState,
            format!(
                "the migration of domain '{domain}' was not started with --postcopy: it cannot \
                 switch to post-copy"
            ),
        ));
    }
    if job.switched.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(DaemonError::new(
            ErrorKind::InvalidState,
            format!("the migration of domain '{domain}' is already in post-copy"),
        ));
    }
    tracing::info!(domain = %domain, "switching the migration to post-copy");
    control.start_postcopy().await.map_err(|err| {
        job.switched
            .store(false, std::sync::atomic::Ordering::SeqCst);
        DaemonError::new(
            ErrorKind::Engine,
            format!(
                "cannot switch the migration of domain '{domain}' to post-copy: {}",
                err.message
            ),
        )
    })
}

/// `--timeout S --timeout-suspend`: once the live migration ran S seconds, the guest is paused
/// so the rest of its memory is sent in one pass; it runs again on the destination (the
/// prepare said it was running), or here if the migration fails (migration.rs resumes it).
/// With `--timeout-postcopy` the migration switches to post-copy instead.
pub(super) struct SuspendAfter {
    deadline: Option<Instant>,
    postcopy: bool,
    /// When it paused the guest.
    suspended_at: Option<Instant>,
}

impl SuspendAfter {
    pub(super) fn new(request: &MigrateRequest) -> SuspendAfter {
        SuspendAfter {
            deadline: request
                .timeout_s
                .map(|seconds| Instant::now() + Duration::from_secs(seconds)),
            postcopy: request.timeout_postcopy,
            suspended_at: None,
        }
    }

    /// When the time was up and the guest was paused, if it was.
    pub(super) fn suspended_at(&self) -> Option<Instant> {
        self.suspended_at
    }

    /// Pauses the guest (or switches to post-copy) once, when the time is up.
    pub(super) async fn check(
        &mut self,
        control: &dyn Control,
        job: &Job,
        domain: &str,
    ) -> DaemonResult<()> {
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            self.deadline = None;
            if self.postcopy {
                tracing::info!(domain = %domain, "migration timeout reached: switching to post-copy");
                // Already switched (migrate-postcopy came first): nothing left to do.
                if job.switched.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(());
                }
                return switch_to_postcopy(control, job, domain).await;
            }
            tracing::info!(domain = %domain, "migration timeout reached: suspending the guest");
            control.pause().await.map_err(|err| {
                DaemonError::new(
                    ErrorKind::Engine,
                    format!("cannot suspend the guest at --timeout: {}", err.message),
                )
            })?;
            self.suspended_at = Some(Instant::now());
        }
        Ok(())
    }
}

pub(super) async fn set_capabilities(
    control: &dyn Control,
    request: &MigrateRequest,
    domain: &str,
) -> DaemonResult<()> {
    control
        .set_migration_capabilities(&[
            ("auto-converge", request.auto_converge),
            ("xbzrle", request.compressed),
            ("postcopy-ram", request.postcopy),
        ])
        .await
        .map_err(|err| {
            super::error::engine_failure(domain, err)
                .context("cannot set --auto-converge/--compressed/--postcopy (QEMU's migration capabilities)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(request: MigrateRequest) -> String {
        check_postcopy(&request, "vm").unwrap_err().message
    }

    #[test]
    fn postcopy_flags_follow_virshs_rules() {
        let live = MigrateRequest {
            destination: "/run/b.sock".to_string(),
            live: true,
            ..MigrateRequest::default()
        };
        assert!(check_postcopy(&live, "vm").is_ok());
        let postcopy = MigrateRequest {
            postcopy: true,
            ..live.clone()
        };
        assert!(check_postcopy(&postcopy, "vm").is_ok());
        let err = refusal(MigrateRequest {
            live: false,
            ..postcopy.clone()
        });
        assert!(err.contains("--live") && err.contains("'vm'"), "{err}");
        let err = refusal(MigrateRequest {
            timeout_postcopy: true,
            timeout_s: Some(2),
            ..live.clone()
        });
        assert!(err.contains("need --postcopy"), "{err}");
        let err = refusal(MigrateRequest {
            timeout_postcopy: true,
            ..postcopy.clone()
        });
        assert!(err.contains("needs --timeout"), "{err}");
        let err = refusal(MigrateRequest {
            postcopy_after_precopy: true,
            ..live.clone()
        });
        assert!(err.contains("need --postcopy"), "{err}");
        let err = refusal(MigrateRequest {
            copy_storage: Some(oxvirt_api::CopyStorage::All),
            ..postcopy
        });
        assert!(err.contains("--copy-storage"), "{err}");
    }

    #[test]
    fn a_root_qemu_needs_no_sysctl() {
        assert!(check_userfaultfd(false).is_ok());
    }
}
