//! `migrate --auto-converge` and `--compressed`: QEMU's migration capabilities `auto-converge`
//! and `xbzrle`, set on the source's QEMU before anything moves (both act on the sending side:
//! the destination's QEMU loads XBZRLE-encoded pages whatever its own capabilities say). Each
//! is set on or off as the request says, so a flag of an earlier migration does not linger.

use oxvirt_api::MigrateRequest;

use super::error::DaemonResult;
use crate::engine::Control;

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
