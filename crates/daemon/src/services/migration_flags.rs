//! `migrate --auto-converge` and `--compressed`: QEMU's migration capabilities `auto-converge`
//! and `xbzrle`, set on the source's QEMU before anything moves (both act on the sending side:
//! the destination's QEMU loads XBZRLE-encoded pages whatever its own capabilities say). Each
//! is set on or off as the request says, so a flag of an earlier migration does not linger.

use std::time::{Duration, Instant};

use oxvirt_api::MigrateRequest;

use super::error::{DaemonError, DaemonResult, ErrorKind};
use crate::engine::Control;

/// `--timeout S --timeout-suspend`: once the live migration ran S seconds, the guest is paused
/// so the rest of its memory is sent in one pass; it runs again on the destination (the
/// prepare said it was running), or here if the migration fails (migration.rs resumes it).
pub(super) struct SuspendAfter {
    deadline: Option<Instant>,
}

impl SuspendAfter {
    pub(super) fn new(request: &MigrateRequest) -> SuspendAfter {
        SuspendAfter {
            deadline: request
                .timeout_s
                .map(|seconds| Instant::now() + Duration::from_secs(seconds)),
        }
    }

    /// Pauses the guest once, when the time is up.
    pub(super) async fn check(&mut self, control: &dyn Control) -> DaemonResult<()> {
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            self.deadline = None;
            tracing::info!("migration timeout reached: suspending the guest");
            control.pause().await.map_err(|err| {
                DaemonError::new(
                    ErrorKind::Engine,
                    format!("cannot suspend the guest at --timeout: {}", err.message),
                )
            })?;
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
        ])
        .await
        .map_err(|err| {
            super::error::engine_failure(domain, err)
                .context("cannot set --auto-converge/--compressed (QEMU's migration capabilities)")
        })
}
