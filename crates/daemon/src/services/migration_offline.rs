//! `migrate --offline` (virsh's semantics): only the definition moves. The destination defines
//! the domain from this host's persistent definition (as `define` would, a definition of the
//! same name and UUID there is replaced); nothing starts there and nothing stops here; with
//! `--undefinesource` the domain is undefined here afterwards. No QEMU takes part, so a shut-off
//! domain moves too. See docs/migration.md.

use std::sync::Arc;

use oxvirt_api::{DomainSummary, MigrateRequest, UndefineOptions};

use super::domains::Domains;
use super::error::DaemonResult;

impl Domains {
    /// Source side of `migrate --offline`: returns the domain as it is here afterwards.
    pub async fn migrate_offline(
        self: &Arc<Self>,
        id: &str,
        request: &MigrateRequest,
    ) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let destination = super::migration::destination_client(request)?;
        destination
            .define_domain(&record.xml)
            .await
            .map_err(|err| super::migration::destination_error(&request.destination, err))
            .map_err(|err| {
                err.context(format!(
                    "cannot migrate the definition of domain '{}'",
                    record.name
                ))
            })?;
        tracing::info!(domain = %record.name, destination = %request.destination, "definition migrated");
        let summary = self.summary(&record)?;
        if request.undefine_source {
            let options = UndefineOptions {
                nvram: None,
                snapshots_metadata: false,
                managed_save: false,
            };
            return self
                .undefine(&record.uuid.to_string(), &options)
                .map_err(|err| {
                    err.context(format!(
                        "domain '{}' is defined on the destination, but stays defined here",
                        record.name
                    ))
                });
        }
        Ok(summary)
    }
}
