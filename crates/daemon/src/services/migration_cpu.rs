//! A migration's CPU check (docs/migration.md, "The CPU check"): the source sends the CPU it
//! advertises with its prepare call; the destination compares the guest's CPU (its live
//! definition's `<cpu>`) with the CPU it advertises itself before it defines anything
//! (`oxvirt_domain::cpu_compare::check_migration`, the comparison `hypervisor-cpu-compare`
//! uses too).

use std::sync::Arc;

use oxvirt_api::{HostCpuDescription, PrepareMigration};
use oxvirt_domain::cpu_compare::{self, HostCpu};

use super::error::{internal, DaemonError, DaemonResult, ErrorKind};
use super::Services;

impl Services {
    /// This host's CPU as a source describes it to the destination (asked off the async
    /// threads: the first call after an upgrade of QEMU asks QEMU for its models).
    pub async fn cpu_description(self: &Arc<Self>) -> DaemonResult<HostCpuDescription> {
        let services = Arc::clone(self);
        let cpu = tokio::task::spawn_blocking(move || services.advertised_cpu())
            .await
            .map_err(|err| internal("describing this host's CPU", err))??;
        Ok(HostCpuDescription {
            model: cpu.model,
            vendor: cpu.vendor,
            features: cpu.features.into_iter().collect(),
        })
    }

    /// Destination side, before anything of the migration happens here: the guest's CPU must
    /// be one this host provides. The refusal names what this host's CPU lacks.
    pub async fn check_incoming_cpu(
        self: &Arc<Self>,
        request: &PrepareMigration,
    ) -> DaemonResult<()> {
        let domain = oxvirt_domain::parse_domain_xml(&request.xml)
            .map_err(super::error::definition_error)?;
        // The models and features compared are QEMU's (TCG's max CPU, QEMU's model database);
        // a native guest's CPU is what KVM gives oxvirt-vmm, which this check does not know
        // (docs/migration.md, "Not yet"): its VMM's restore checks the saved machine's CPUs.
        if self.domains.engine.kind_of(&domain) == oxvirt_api::Engine::Native {
            return Ok(());
        }
        let source = request.source_cpu.as_ref().map(|cpu| HostCpu {
            origin: "the source".to_string(),
            model: cpu.model.clone(),
            vendor: cpu.vendor.clone(),
            features: cpu.features.iter().cloned().collect(),
        });
        let services = Arc::clone(self);
        let (destination, database) = tokio::task::spawn_blocking(move || {
            Ok::<_, DaemonError>((
                services.advertised_cpu()?,
                services.model_database("x86_64")?,
            ))
        })
        .await
        .map_err(|err| internal("describing this host's CPU", err))??;
        cpu_compare::check_migration(
            domain.cpu.as_ref(),
            source.as_ref(),
            &destination,
            &database,
        )
        .map_err(|err| {
            DaemonError::new(
                ErrorKind::InvalidState,
                format!(
                    "the CPU of domain '{}' cannot run on this host: {err}",
                    domain.name
                ),
            )
        })
    }
}
