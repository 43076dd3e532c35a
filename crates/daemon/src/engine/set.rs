//! Per-domain engine selection: QEMU by default, the native engine for domains with
//! `<oxvirt:engine name='native'/>`.
//!
//! The daemon holds one [`Engine`]; [`EngineSet`] is that engine and routes each call to the
//! engine of the domain concerned. Calls that only get a run directory are routed by the marker
//! file `engine` written there at launch (a run directory without one is QEMU's, as before).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use oxvirt_api::{Accel, Engine as EngineKind};
use oxvirt_domain::Domain;
use uuid::Uuid;

use super::{
    AccelPlan, ConsolePaths, Control, DiskSecret, Engine, EngineError, EngineErrorKind, Events,
    Incoming,
};

pub struct EngineSet {
    qemu: Arc<dyn Engine>,
    native: Arc<dyn Engine>,
}

fn marker(run_dir: &Path) -> PathBuf {
    run_dir.join("engine")
}

impl EngineSet {
    pub fn new(qemu: Arc<dyn Engine>, native: Arc<dyn Engine>) -> EngineSet {
        EngineSet { qemu, native }
    }

    fn for_domain(&self, domain: &Domain) -> &dyn Engine {
        match domain.engine {
            oxvirt_domain::Engine::Qemu => self.qemu.as_ref(),
            oxvirt_domain::Engine::Native => self.native.as_ref(),
        }
    }

    fn for_run_dir(&self, run_dir: &Path) -> &dyn Engine {
        match std::fs::read_to_string(marker(run_dir)) {
            Ok(kind) if kind.trim() == EngineKind::Native.to_string() => self.native.as_ref(),
            _ => self.qemu.as_ref(),
        }
    }
}

#[async_trait]
impl Engine for EngineSet {
    /// The default engine's kind; per domain, see [`Engine::kind_of`].
    fn kind(&self) -> EngineKind {
        self.qemu.kind()
    }

    fn kind_of(&self, domain: &Domain) -> EngineKind {
        self.for_domain(domain).kind()
    }

    /// QEMU's version (what `oxvirt version` reports).
    fn version(&self) -> Option<String> {
        self.qemu.version()
    }

    fn plan_accel(&self, domain: &Domain) -> AccelPlan {
        self.for_domain(domain).plan_accel(domain)
    }

    fn check_definition(&self, domain: &Domain) -> Result<(), EngineError> {
        self.for_domain(domain).check_definition(domain)
    }

    fn check_host(&self, domain: &Domain) -> Result<(), EngineError> {
        self.for_domain(domain).check_host(domain)
    }

    fn live_internal_snapshots(&self, domain: &Domain) -> bool {
        self.for_domain(domain).live_internal_snapshots(domain)
    }

    fn runs_as_guest_user(&self, domain: &Domain) -> bool {
        self.for_domain(domain).runs_as_guest_user(domain)
    }

    fn resolve_files(&self, domain: &mut Domain) -> Result<(), EngineError> {
        self.for_domain(domain).resolve_files(domain)
    }

    fn nvram_file(&self, uuid: &Uuid) -> Option<PathBuf> {
        self.qemu
            .nvram_file(uuid)
            .or_else(|| self.native.nvram_file(uuid))
    }

    fn forget_domain(&self, uuid: &Uuid, keep_nvram: bool) {
        self.qemu.forget_domain(uuid, keep_nvram);
        self.native.forget_domain(uuid, keep_nvram);
    }

    fn after_exit(&self, run_dir: &Path) {
        self.for_run_dir(run_dir).after_exit(run_dir);
    }

    fn write_disk_secrets(
        &self,
        domain: &Domain,
        run_dir: &Path,
        secrets: &[DiskSecret],
    ) -> Result<(), EngineError> {
        self.for_domain(domain)
            .write_disk_secrets(domain, run_dir, secrets)
    }

    async fn launch(
        &self,
        domain: &Domain,
        run_dir: &Path,
        accel: Accel,
        incoming: Option<Incoming<'_>>,
        user: Option<u32>,
    ) -> Result<u32, EngineError> {
        let engine = self.for_domain(domain);
        std::fs::write(marker(run_dir), format!("{}\n", engine.kind())).map_err(|err| {
            EngineError {
                kind: EngineErrorKind::Failed,
                message: format!("cannot write {}: {err}", marker(run_dir).display()),
            }
        })?;
        engine.launch(domain, run_dir, accel, incoming, user).await
    }

    async fn is_alive(&self, pid: u32, uuid: &Uuid) -> bool {
        // Each engine recognises only its own processes.
        self.qemu.is_alive(pid, uuid).await || self.native.is_alive(pid, uuid).await
    }

    fn recorded_pid(&self, run_dir: &Path) -> Option<u32> {
        self.for_run_dir(run_dir).recorded_pid(run_dir)
    }

    async fn connect(&self, run_dir: &Path) -> Result<(Arc<dyn Control>, Events), EngineError> {
        self.for_run_dir(run_dir).connect(run_dir).await
    }

    fn console_paths(&self, run_dir: &Path) -> ConsolePaths {
        self.for_run_dir(run_dir).console_paths(run_dir)
    }
}
