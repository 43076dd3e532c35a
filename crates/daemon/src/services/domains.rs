//! Domains: definitions (define, edit, undefine, autostart), what they are (list, dominfo,
//! dumpxml) and their lifecycle (start, shutdown, destroy, reboot, reset, suspend, resume,
//! blockresize), on top of the store, the engines, the guests' slots, networks and volumes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxvirt_api::{
    Accel, BlockResizeRequest, BlockResized, DomainDisk, DomainInfo, DomainState, DomainSummary,
    Event, EventFilter, Lifecycle, LifecycleDetail, NvramOnUndefine, UndefineOptions,
};
use oxvirt_domain::{DiskDevice, Domain};
use oxvirt_host::lock;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::dac::Dac;
use super::error::{
    bad_request, db, definition_error, engine_failure, internal, invalid_state, not_found,
    DaemonError, DaemonResult, ErrorKind,
};
use super::events::Subscription;
use super::guests::{state_of_status, stored_domain, Guests, Intent, Live, Vm};
use super::hostdevs::HostDevs;
use super::networks::{refuse_mac_clash, Networks};
use super::secrets::Secrets;
use super::supervisor::{Restart, Supervisor, KILL_WAIT};
use super::volumes::Volumes;
use super::xml::names_uuid;
use crate::engine::{process, Control, Engine, Events, GuestStatus, Incoming};
use crate::state_dir::create_private_dir;
use crate::store::{self, DomainRecord, RuntimeRecord, Store};

/// How long destroy waits for a quit to take effect before killing the process.
const QUIT_GRACE: Duration = Duration::from_secs(5);

pub struct Domains {
    pub(super) store: Arc<Store>,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) guests: Arc<Guests>,
    networks: Arc<Networks>,
    pub(super) volumes: Arc<Volumes>,
    secrets: Arc<Secrets>,
    hostdevs: Arc<HostDevs>,
    /// The users QEMU guests run as, and their files' owners (libvirt's DAC model).
    pub(super) dac: Arc<Dac>,
    /// Where supervisors ask for a domain to be started again.
    restarts: mpsc::UnboundedSender<Restart>,
    /// Live migrations in and out (services/migration.rs).
    pub(super) migrations: super::jobs::Migrations,
}

/// A guest process just started for a domain.
struct Launched {
    pid: u32,
    accel: Accel,
    run_dir: PathBuf,
    /// Runtime id to keep (restart of a running guest), or `None` for a fresh one.
    keep_id: Option<u32>,
    /// How it started: booted, restored from a save image, or migrated in.
    detail: LifecycleDetail,
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Domains {
    /// The domains service, with its task that restarts domains when their supervisors ask.
    pub fn new(
        store: Arc<Store>,
        engine: Arc<dyn Engine>,
        guests: Arc<Guests>,
        networks: Arc<Networks>,
        volumes: Arc<Volumes>,
        secrets: Arc<Secrets>,
        dac: Arc<Dac>,
    ) -> Arc<Domains> {
        let hostdevs = Arc::new(HostDevs::default());
        let (restarts, mut requests) = mpsc::unbounded_channel::<Restart>();
        let domains = Arc::new(Domains {
            store,
            engine,
            guests,
            networks,
            volumes,
            secrets,
            hostdevs,
            dac,
            restarts,
            migrations: Default::default(),
        });
        let weak = Arc::downgrade(&domains);
        tokio::spawn(async move {
            while let Some(restart) = requests.recv().await {
                let Some(domains) = weak.upgrade() else {
                    return;
                };
                tokio::spawn(async move { domains.restart(restart).await });
            }
        });
        domains
    }

    /// Starts a domain again after its guest stopped, as its definition asks (reboot,
    /// on_poweroff/on_crash='restart'), once any operation in progress on it has finished.
    async fn restart(self: Arc<Self>, restart: Restart) {
        let vm = self.guests.slot(&restart.uuid);
        let _guard = vm.op.clone().lock_owned().await;
        let record = match self.store.domain_by_uuid(&restart.uuid) {
            Ok(Some(record)) => record,
            _ => return,
        };
        match self
            .start_locked(&vm, &record, Some(restart.runtime_id))
            .await
        {
            Ok(_) => tracing::info!(domain = %record.name, "started again"),
            Err(err) => tracing::error!(domain = %record.name, "restart failed: {err}"),
        }
    }
}

impl Domains {
    /// A new subscriber of the events `filter` lets through (services/events.rs): its domain
    /// must exist.
    pub fn subscribe_events(
        &self,
        filter: &EventFilter,
    ) -> DaemonResult<(Subscription, broadcast::Receiver<Event>)> {
        let uuid = match &filter.domain {
            Some(id) => Some(self.guests.resolve(id)?.uuid),
            None => None,
        };
        self.guests.events().subscribe_with(filter, uuid.as_ref())
    }

    /// Publishes lifecycle `event` of `record`'s domain (services/events.rs).
    fn published(&self, record: &DomainRecord, event: Lifecycle, detail: LifecycleDetail) {
        self.guests
            .events()
            .lifecycle(&record.name, &record.uuid, event, detail);
    }

    pub(super) fn summary(&self, record: &DomainRecord) -> DaemonResult<DomainSummary> {
        let runtime = self.store.runtime(&record.uuid).map_err(db)?;
        Ok(DomainSummary {
            managed_save: self.has_managed_save(&record.uuid),
            ..summary_of(record, runtime.as_ref())
        })
    }

    /// The runtime rows of the running guests, by UUID.
    pub(super) fn runtimes_by_uuid(&self) -> DaemonResult<HashMap<Uuid, RuntimeRecord>> {
        Ok(self
            .store
            .list_runtime()
            .map_err(db)?
            .into_iter()
            .map(|r| (r.uuid, r))
            .collect())
    }

    pub fn list(&self) -> DaemonResult<Vec<DomainSummary>> {
        let records = self.store.list_domains().map_err(db)?;
        let runtime = self.runtimes_by_uuid()?;
        Ok(records
            .iter()
            .map(|record| DomainSummary {
                managed_save: self.has_managed_save(&record.uuid),
                ..summary_of(record, runtime.get(&record.uuid))
            })
            .collect())
    }

    /// `dominfo` of a guest defined as `domain` that this host does not run nor keep (a
    /// cluster guest, services/cluster.rs): its definition's figures, the state given, nothing
    /// of a process.
    pub fn info_of_definition(
        &self,
        domain: &oxvirt_domain::Domain,
        state: DomainState,
        state_reason: &str,
        host: Option<String>,
    ) -> DomainInfo {
        let plan = self.engine.plan_accel(domain);
        DomainInfo {
            id: None,
            name: domain.name.clone(),
            uuid: domain.uuid.to_string(),
            os_type: "hvm".to_string(),
            state,
            state_reason: state_reason.to_string(),
            vcpus: domain.vcpu.online(),
            max_memory_kib: domain.memory_kib,
            used_memory_kib: domain.current_memory_kib,
            cpu_time_ns: 0,
            persistent: true,
            autostart: false,
            managed_save: false,
            engine: self.engine.kind_of(domain),
            accel: plan.accel,
            warnings: plan.warnings,
            console_socket: None,
            console_log: None,
            security_model: self.dac.model().to_string(),
            security_label: None,
            host,
        }
    }

    pub fn info(&self, id: &str) -> DaemonResult<DomainInfo> {
        let record = self.guests.resolve(id)?;
        let runtime = self.store.runtime(&record.uuid).map_err(db)?;
        let domain = stored_domain(&record)?;
        let plan = self.engine.plan_accel(&domain);
        let (state, state_reason) = match &runtime {
            Some(r) => (r.state, r.reason.clone()),
            None => (DomainState::ShutOff, record.off_reason.clone()),
        };
        let accel = match runtime.as_ref().map(|r| r.accel.as_str()) {
            Some("kvm") => Accel::Kvm,
            Some(_) => Accel::Tcg,
            None => plan.accel,
        };
        let console = self
            .engine
            .console_paths(&self.guests.run_dir(&record.uuid));
        let console_socket = runtime
            .as_ref()
            .filter(|_| console.socket.exists())
            .map(|_| console.socket.display().to_string());
        let console_log = console
            .log
            .exists()
            .then(|| console.log.display().to_string());
        Ok(DomainInfo {
            id: runtime.as_ref().map(|r| r.id),
            name: record.name.clone(),
            uuid: record.uuid.to_string(),
            os_type: "hvm".to_string(),
            state,
            state_reason,
            vcpus: domain.vcpu.online(),
            max_memory_kib: domain.memory_kib,
            // A running guest's balloon may have changed it (setmem --live).
            used_memory_kib: self
                .current_domain(&record)
                .map_or(domain.current_memory_kib, |d| d.current_memory_kib),
            cpu_time_ns: runtime
                .as_ref()
                .and_then(|r| process::cpu_time_ns(r.pid))
                .unwrap_or(0),
            persistent: true,
            autostart: record.autostart,
            managed_save: self.has_managed_save(&record.uuid),
            engine: self.engine.kind_of(&domain),
            accel,
            warnings: plan.warnings,
            console_socket,
            console_log,
            security_model: self.dac.model().to_string(),
            // A QEMU's user is in the store (it gets its files back at stop); a jailed
            // oxvirt-vmm's is its own process's, as the kernel says. Root is no label.
            security_label: runtime.as_ref().and_then(|r| {
                self.dac.label(&record.uuid).or_else(|| {
                    oxvirt_host::real_ids(r.pid)
                        .filter(|&(uid, _)| uid != 0)
                        .map(|(uid, gid)| format!("+{uid}:+{gid}"))
                })
            }),
            host: None,
        })
    }

    /// dumpxml: the live definition while the domain runs (see `display.rs`), else the stored one.
    pub fn xml(&self, id: &str) -> DaemonResult<String> {
        let record = self.guests.resolve(id)?;
        Ok(self.live_xml(&record)?.unwrap_or(record.xml))
    }

    /// `dumpxml --inactive`: the definition the domain has when it next starts (what `define`
    /// gave while it ran, else its definition).
    pub fn inactive_xml(&self, id: &str) -> DaemonResult<String> {
        let record = self.guests.resolve(id)?;
        self.next_start_xml(&record)
    }

    /// The definition `record`'s domain starts with next: what `define` gave while it ran,
    /// else its stored one.
    pub(super) fn next_start_xml(&self, record: &DomainRecord) -> DaemonResult<String> {
        let next = self.store.transaction_or(db, |tx| {
            store::next_definition(tx, &record.uuid).map_err(db)
        })?;
        Ok(next.unwrap_or_else(|| record.xml.clone()))
    }

    /// The definition the domain starts with next (`define` while it runs may have given
    /// one), parsed.
    pub(super) fn persistent_domain(&self, record: &DomainRecord) -> DaemonResult<Domain> {
        oxvirt_domain::parse_domain_xml(&self.next_start_xml(record)?).map_err(|err| {
            internal(
                &format!("definition of domain '{}' does not parse", record.name),
                err,
            )
        })
    }

    /// Stores `xml` as the definition the domain starts with next: its definition, or while
    /// it runs its next one (libvirt's persistent config of a running domain).
    pub(super) fn store_next_start_xml(
        &self,
        record: &DomainRecord,
        xml: &str,
        engine: &str,
    ) -> DaemonResult<()> {
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            if store::runtime(tx, &record.uuid).map_err(db)?.is_some() {
                return store::set_next_definition(tx, &record.uuid, xml, engine).map_err(db);
            }
            store::update_domain_xml(tx, &record.uuid, xml, engine).map_err(db)?;
            refuse_mac_clash(tx, &record.uuid, &record.name)
        })
    }

    /// virsh define: create, or update an inactive domain with the same name and uuid.
    pub fn define(&self, xml: &str) -> DaemonResult<DomainSummary> {
        let mut domain = oxvirt_domain::parse_domain_xml(xml).map_err(definition_error)?;
        let names_uuid = names_uuid(xml);
        self.networks.ensure_unique_macs(&mut domain, xml)?;
        self.engine
            .check_definition(&domain)
            .map_err(|e| engine_failure(&domain.name, e))?;
        // A definition without <uuid> updates the domain of that name, as in libvirt.
        let existing = match self.store.find_domain(&domain.name).map_err(db)? {
            Some(record) if record.name == domain.name => Some(record),
            _ => self.store.domain_by_uuid(&domain.uuid).map_err(db)?,
        };
        if let Some(record) = &existing {
            if !names_uuid && record.name == domain.name {
                domain.uuid = record.uuid;
            }
        }
        let _guard = match &existing {
            Some(record) => Some(self.guests.begin(record)?),
            None => None,
        };
        let new_xml = domain.to_xml();
        let engine = self.engine.kind_of(&domain).to_string();
        let record = self
            .store
            .transaction_or(db, |tx| -> DaemonResult<DomainRecord> {
                let by_name = store::domain_by_name(tx, &domain.name).map_err(db)?;
                let by_uuid = store::domain_by_uuid(tx, &domain.uuid).map_err(db)?;
                match (by_name, by_uuid) {
                    (None, None) => {
                        let record = DomainRecord {
                            uuid: domain.uuid,
                            name: domain.name.clone(),
                            xml: new_xml.clone(),
                            autostart: false,
                            engine: engine.clone(),
                            off_reason: "unknown".to_string(),
                        };
                        store::insert_domain(tx, &record).map_err(db)?;
                        refuse_mac_clash(tx, &record.uuid, &record.name)?;
                        Ok(record)
                    }
                    (Some(a), Some(b)) if a.uuid == b.uuid => {
                        if store::runtime(tx, &a.uuid).map_err(db)?.is_some() {
                            // libvirt's define of a running domain: the new definition is for
                            // its next start; the running guest keeps what it was started with.
                            store::set_next_definition(tx, &a.uuid, &new_xml, &engine)
                                .map_err(db)?;
                            return Ok(a);
                        }
                        store::update_domain_xml(tx, &a.uuid, &new_xml, &engine).map_err(db)?;
                        refuse_mac_clash(tx, &a.uuid, &a.name)?;
                        Ok(DomainRecord {
                            xml: new_xml.clone(),
                            engine: engine.clone(),
                            ..a
                        })
                    }
                    (Some(a), _) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!("domain '{}' already exists with uuid {}", a.name, a.uuid),
                    )),
                    (None, Some(b)) => Err(DaemonError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "domain with uuid {} already exists with name '{}'",
                            b.uuid, b.name
                        ),
                    )),
                }
            })?;
        tracing::info!(domain = %record.name, uuid = %record.uuid, "defined");
        let detail = match existing {
            Some(_) => LifecycleDetail::Updated,
            None => LifecycleDetail::Added,
        };
        self.published(&record, Lifecycle::Defined, detail);
        self.summary(&record)
    }

    /// virsh edit's write: replace the definition (same name and uuid); of a running domain, the
    /// definition for its next start.
    pub fn replace_xml(&self, id: &str, xml: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let mut domain = oxvirt_domain::parse_domain_xml(xml).map_err(definition_error)?;
        if domain.name != record.name {
            return Err(DaemonError::new(
                ErrorKind::InvalidXml,
                format!(
                    "the new definition of domain '{}' names it '{}'; renaming is not supported",
                    record.name, domain.name
                ),
            ));
        }
        if !names_uuid(xml) {
            domain.uuid = record.uuid;
        }
        if domain.uuid != record.uuid {
            return Err(DaemonError::new(
                ErrorKind::InvalidXml,
                format!(
                    "the new definition of domain '{}' has uuid {}, not {}; the uuid cannot change",
                    record.name, domain.uuid, record.uuid
                ),
            ));
        }
        self.networks.ensure_unique_macs(&mut domain, xml)?;
        self.engine
            .check_definition(&domain)
            .map_err(|e| engine_failure(&domain.name, e))?;
        let engine = self.engine.kind_of(&domain).to_string();
        let (_vm, _guard) = self.guests.begin(&record)?;
        let new_xml = domain.to_xml();
        // As `virsh edit` of a running domain: the edit is for its next start.
        self.store_next_start_xml(&record, &new_xml, &engine)?;
        tracing::info!(domain = %record.name, "definition replaced");
        self.published(&record, Lifecycle::Defined, LifecycleDetail::Updated);
        self.summary(&DomainRecord {
            xml: new_xml,
            ..record
        })
    }

    /// virsh undefine. A UEFI guest's NVRAM file is removed with `Remove`, kept with `Keep`; with
    /// neither, the domain stays defined and the answer says why (libvirt: "cannot undefine
    /// domain with nvram"). A managed save is removed with `managed_save`, else refused too, and
    /// snapshots are forgotten with `snapshots_metadata`, else refused too.
    pub fn undefine(&self, id: &str, options: &UndefineOptions) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (_vm, _guard) = self.guests.begin(&record)?;
        if !options.managed_save && self.has_managed_save(&record.uuid) {
            return Err(invalid_state(format!(
                "cannot undefine domain '{}' while it has a managed save image (--managed-save removes it)",
                record.name
            )));
        }
        let snapshots = self.snapshot_count(&record)?;
        if snapshots > 0 && !options.snapshots_metadata {
            return Err(invalid_state(format!(
                "cannot delete inactive domain '{}' with {snapshots} snapshots (--snapshots-metadata forgets them; their data stays in the images)",
                record.name
            )));
        }
        if options.nvram.is_none() {
            if let Some(path) = self.engine.nvram_file(&record.uuid) {
                return Err(invalid_state(format!(
                    "cannot undefine domain '{}' with nvram {} (--nvram removes it, --keep-nvram keeps it)",
                    record.name,
                    path.display()
                )));
            }
        }
        self.store.transaction_or(db, |tx| -> DaemonResult<()> {
            if store::runtime(tx, &record.uuid).map_err(db)?.is_some() {
                return Err(invalid_state(format!(
                    "domain '{}' is running; destroy it before undefining it",
                    record.name
                )));
            }
            store::delete_domain(tx, &record.uuid).map_err(db)
        })?;
        if let Err(err) = self.remove_managed_save(&record) {
            tracing::warn!(domain = %record.name, "{err}");
        }
        // The run directory, and the snapshots' machine states (the native engine's) that
        // went with the snapshots' metadata.
        for dir in [
            self.guests.run_dir(&record.uuid),
            self.guests.snapshot_state_dir(&record.uuid),
        ] {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {err}", dir.display());
                }
            }
        }
        self.engine
            .forget_domain(&record.uuid, options.nvram == Some(NvramOnUndefine::Keep));
        self.guests.forget(&record.uuid);
        tracing::info!(domain = %record.name, "undefined");
        self.published(&record, Lifecycle::Undefined, LifecycleDetail::Removed);
        Ok(summary_of(&record, None))
    }

    pub fn set_autostart(&self, id: &str, enabled: bool) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        self.store
            .set_autostart(&record.uuid, enabled)
            .map_err(db)?;
        self.summary(&DomainRecord {
            autostart: enabled,
            ..record
        })
    }

    pub async fn start(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        self.start_locked(&vm, &record, None).await
    }

    /// Starts a domain; the caller holds its operation lock. `keep_id` is the runtime id of a
    /// guest being restarted (reboot, on_crash=restart): it keeps its id, as in libvirt.
    pub(super) async fn start_locked(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        keep_id: Option<u32>,
    ) -> DaemonResult<DomainSummary> {
        // Re-read under the lock: the definition may have changed since it was resolved.
        let record = self
            .store
            .domain_by_uuid(&record.uuid)
            .map_err(db)?
            .ok_or_else(|| {
                DaemonError::new(
                    ErrorKind::NotFound,
                    format!("domain '{}' not found", record.name),
                )
            })?;
        if let Some(runtime) = self.store.runtime(&record.uuid).map_err(db)? {
            return Err(invalid_state(format!(
                "domain '{}' is already {}",
                record.name, runtime.state
            )));
        }
        // A managed save is where the domain left off: it resumes rather than boots (libvirt).
        if let Some(image) = self.managed_save_image(&record)? {
            return self
                .start_from_managed_save(vm, &record, image, keep_id)
                .await;
        }
        let domain = stored_domain(&record)?;
        self.launch_locked(vm, &record, domain, keep_id, None).await
    }

    /// Launches `domain` (of `record`, whose XML becomes its live definition) and records it
    /// as running; with `incoming`, its machine state is loaded from that file instead of it
    /// booting, and it stays paused. The caller holds the operation lock and checked that the
    /// domain is not running.
    pub(super) async fn launch_locked(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        mut domain: Domain,
        keep_id: Option<u32>,
        incoming: Option<Incoming<'_>>,
    ) -> DaemonResult<DomainSummary> {
        // Engines open files only: `<disk type='volume'>` becomes its volume's file in this
        // launched copy (the stored definition keeps the reference).
        self.volumes.resolve_volume_disks(&mut domain)?;
        // The definition may predate the engine's current limits; the host may lack what the
        // engine needs (the native engine: hardware KVM).
        self.engine
            .check_definition(&domain)
            .and_then(|()| self.engine.check_host(&domain))
            .map_err(|e| engine_failure(&record.name, e))?;
        check_files_exist(&domain)?;
        self.check_pins_fit_host(&domain)?;
        self.check_blkio_fits_host(&domain)?;
        // Engines open exactly the backing images the host read from trusted metadata.
        self.volumes.resolve_backing_chains(&mut domain)?;
        // Network disks' credentials, found before anything is set up for the start.
        let disk_secrets = self.secrets.disk_secrets(&domain)?;
        let plan = self.engine.plan_accel(&domain);
        for warning in &plan.warnings {
            tracing::warn!(domain = %record.name, "{warning}");
        }
        let run_dir = self.guests.run_dir(&record.uuid);
        create_private_dir(&run_dir)
            .map_err(|e| internal(&format!("cannot create {}", run_dir.display()), e))?;
        self.engine
            .write_disk_secrets(&domain, &run_dir, &disk_secrets)
            .map_err(|e| engine_failure(&record.name, e))?;
        drop(disk_secrets);
        // Host devices: checked, and managed PCI functions bound to vfio-pci.
        self.hostdevs.prepare(&record.uuid, &mut domain)?;

        // TAPs for the guest's network interfaces; `domain` becomes the launched (live) copy.
        if let Err(err) = self.networks.plug_interfaces(record, &mut domain).await {
            self.hostdevs.release(&record.uuid);
            return Err(err);
        }
        // QEMU as a user of its own: the files it opens by name become that user's.
        let user = if self.engine.runs_as_guest_user(&domain) {
            // Every file it opens, the ones the engine chooses (UEFI's) too.
            let mut files = domain.clone();
            let given = self
                .engine
                .resolve_files(&mut files)
                .map_err(|e| engine_failure(&record.name, e))
                .and_then(|()| self.dac.give(&record.uuid, &files, &run_dir));
            match given {
                Ok(user) => user,
                Err(err) => {
                    self.networks.unplug_interfaces(&record.uuid).await;
                    self.hostdevs.release(&record.uuid);
                    return Err(err);
                }
            }
        } else {
            None
        };
        let pid = match self
            .engine
            .launch(&domain, &run_dir, plan.accel, incoming, user)
            .await
        {
            Ok(pid) => pid,
            Err(err) => {
                self.networks.unplug_interfaces(&record.uuid).await;
                self.hostdevs.release(&record.uuid);
                self.dac.restore(&record.uuid);
                return Err(engine_failure(&record.name, err));
            }
        };
        let launched = Launched {
            pid,
            accel: plan.accel,
            run_dir,
            keep_id,
            detail: match incoming {
                None => LifecycleDetail::Booted,
                Some(Incoming::Saved(_)) => LifecycleDetail::Restored,
                Some(
                    Incoming::Stream(_)
                    | Incoming::StreamPostcopy(_)
                    | Incoming::StreamCopyingDisks(..),
                ) => LifecycleDetail::Migrated,
            },
        };
        match self.attach_new(vm, record, &domain, &launched).await {
            Ok(summary) => Ok(summary),
            Err(err) => {
                // Never leave a guest running that the store does not know about.
                process::kill_and_reap(pid, &record.uuid, self.engine.as_ref()).await;
                self.networks.unplug_interfaces(&record.uuid).await;
                self.hostdevs.release(&record.uuid);
                self.dac.restore(&record.uuid);
                Err(err)
            }
        }
    }

    /// Connects to a just-launched guest, records it as active and starts its supervisor.
    async fn attach_new(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        domain: &Domain,
        launched: &Launched,
    ) -> DaemonResult<DomainSummary> {
        let Launched {
            pid,
            accel,
            ref run_dir,
            keep_id,
            detail,
        } = *launched;
        let (control, events) = self
            .engine
            .connect(run_dir)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        let mut status = control
            .status()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        // Pinned before the guest runs its first instruction.
        self.apply_cputune(domain, pid, control.as_ref()).await?;
        self.apply_cgroups(domain, pid, control.as_ref()).await?;
        if status == GuestStatus::NotStarted {
            control
                .resume()
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            status = GuestStatus::Running;
        }
        let (state, reason) = state_of_status(&status, "booted");
        self.record_live_definition(record, control.as_ref(), run_dir)
            .await;
        let runtime = self
            .store
            .transaction(|tx| -> rusqlite::Result<RuntimeRecord> {
                let runtime = RuntimeRecord {
                    uuid: record.uuid,
                    pid,
                    run_dir: run_dir.to_path_buf(),
                    state,
                    reason: reason.to_string(),
                    id: match keep_id {
                        Some(id) => id,
                        None => store::next_runtime_id(tx)?,
                    },
                    accel: accel.to_string(),
                    started_at: now_unix(),
                };
                store::insert_runtime(tx, &runtime)?;
                Ok(runtime)
            });
        let runtime = runtime.map_err(db)?;
        tracing::info!(domain = %record.name, pid, id = runtime.id, "started");
        self.published(record, Lifecycle::Started, detail);
        self.supervise(vm, record, domain, pid, Some((control, events)));
        Ok(summary_of(record, Some(&runtime)))
    }

    pub async fn destroy(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        self.destroy_locked(&vm, &record).await
    }

    /// Self-fencing of a cluster member (services/cluster.rs): kills the guest's process at once,
    /// whatever operation holds the domain, and waits until it is shut off. Unlike `destroy` it
    /// does not take the operation lock: a fence that waited for (or was refused by) a
    /// migration out would let the member's lease expire with the guest still running here,
    /// while another member restarts it. The operation then fails as its process is gone.
    pub async fn fence(&self, id: &str) -> DaemonResult<()> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let mut changes = vm.changed.subscribe();
        let Some(live) = lock(&vm.live).clone() else {
            return Ok(());
        };
        *lock(&live.intent) = Intent::Destroy;
        process::kill(live.pid, &record.uuid, self.engine.as_ref()).await;
        if self
            .guests
            .wait_inactive(&record, &mut changes, KILL_WAIT)
            .await?
        {
            return Ok(());
        }
        Err(DaemonError::new(
            ErrorKind::Engine,
            format!(
                "domain '{}' (pid {}) did not stop after SIGKILL",
                record.name, live.pid
            ),
        ))
    }

    /// Stops a guest at once; the caller holds its operation lock.
    pub(super) async fn destroy_locked(
        self: &Arc<Self>,
        vm: &Vm,
        record: &DomainRecord,
    ) -> DaemonResult<DomainSummary> {
        let live = self.guests.live_or_not_running(vm, record)?;
        self.end_guest(vm, record, &live, Intent::Destroy).await?;
        self.summary(record)
    }

    /// Ends the guest's process (quit, then kill) and waits until the domain is shut off;
    /// `intent` tells the supervisor why. The caller holds the operation lock.
    pub(super) async fn end_guest(
        &self,
        vm: &Vm,
        record: &DomainRecord,
        live: &Live,
        intent: Intent,
    ) -> DaemonResult<()> {
        *lock(&live.intent) = intent;
        let mut changes = vm.changed.subscribe();
        if let Some(control) = &live.control {
            if let Err(err) = control.quit().await {
                tracing::warn!(domain = %record.name, "quit failed, killing: {err}");
            }
        }
        if !self
            .guests
            .wait_inactive(record, &mut changes, QUIT_GRACE)
            .await?
        {
            process::kill(live.pid, &record.uuid, self.engine.as_ref()).await;
            if !self
                .guests
                .wait_inactive(record, &mut changes, KILL_WAIT)
                .await?
            {
                return Err(DaemonError::new(
                    ErrorKind::Engine,
                    format!(
                        "domain '{}' (pid {}) did not stop even after SIGKILL",
                        record.name, live.pid
                    ),
                ));
            }
        }
        Ok(())
    }

    pub async fn shutdown(
        self: &Arc<Self>,
        id: &str,
        timeout_secs: Option<u64>,
    ) -> DaemonResult<DomainSummary> {
        // Checked before the guest is asked anything: a wait that long would overflow the
        // clock's deadline arithmetic.
        let timeout = match timeout_secs {
            Some(seconds) if seconds > oxvirt_api::MAX_SHUTDOWN_TIMEOUT_SECS => {
                return Err(DaemonError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "shutdown timeout {seconds} s is too long (at most {} s)",
                        oxvirt_api::MAX_SHUTDOWN_TIMEOUT_SECS
                    ),
                ))
            }
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => None,
        };
        let record = self.guests.resolve(id)?;
        let mut changes;
        {
            let (vm, _guard) = self.guests.begin(&record)?;
            let live = self.guests.live_or_not_running(&vm, &record)?;
            // A shutdown overrides a reboot requested earlier that the guest has not acted on.
            *lock(&live.intent) = Intent::None;
            changes = vm.changed.subscribe();
            let control = self.guests.control_of(&live, &record)?;
            control
                .power_button()
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            tracing::info!(domain = %record.name, "shutdown requested");
        }
        // Wait without the operation lock, so a destroy can still come through.
        if let Some(timeout) = timeout {
            if !self
                .guests
                .wait_inactive(&record, &mut changes, timeout)
                .await?
            {
                return Err(DaemonError::new(ErrorKind::Timeout,
                    format!(
                        "domain '{}' did not stop within {} s after the shutdown request; it is still running",
                        record.name,
                        timeout.as_secs()
                    ),
                ));
            }
        }
        self.summary(&record)
    }

    /// Reboot: press the power button and start the guest again once it powered off.
    pub async fn reboot(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let live = self.guests.live_or_not_running(&vm, &record)?;
        let control = self.guests.control_of(&live, &record)?;
        *lock(&live.intent) = Intent::Reboot;
        if let Err(err) = control.power_button().await {
            *lock(&live.intent) = Intent::None;
            return Err(engine_failure(&record.name, err));
        }
        tracing::info!(domain = %record.name, "reboot requested");
        self.summary(&record)
    }

    pub async fn reset(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let live = self.guests.live_or_not_running(&vm, &record)?;
        let control = self.guests.control_of(&live, &record)?;
        control
            .reset()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        self.summary(&record)
    }

    pub async fn suspend(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        self.set_paused(id, true).await
    }

    pub async fn resume(self: &Arc<Self>, id: &str) -> DaemonResult<DomainSummary> {
        self.set_paused(id, false).await
    }

    /// suspend (`pause`) a running guest, or resume a paused one.
    async fn set_paused(self: &Arc<Self>, id: &str, pause: bool) -> DaemonResult<DomainSummary> {
        let (from, to, reason, wanted) = if pause {
            (DomainState::Running, DomainState::Paused, "user", "running")
        } else {
            (
                DomainState::Paused,
                DomainState::Running,
                "unpaused",
                "paused",
            )
        };
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let live = self.guests.live_or_not_running(&vm, &record)?;
        let state = self.guests.current_state(&record)?;
        if state != from {
            return Err(invalid_state(format!(
                "domain '{}' is {state}, not {wanted}",
                record.name
            )));
        }
        let control = self.guests.control_of(&live, &record)?;
        let done = if pause {
            control.pause().await
        } else {
            control.resume().await
        };
        done.map_err(|e| engine_failure(&record.name, e))?;
        self.guests.set_state(&vm, &record.uuid, to, reason);
        self.summary(&record)
    }

    /// Runs the supervisor of an active domain in the background.
    fn supervise(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        record: &DomainRecord,
        domain: &Domain,
        pid: u32,
        connection: Option<(Arc<dyn Control>, Events)>,
    ) {
        let intent = Arc::new(Mutex::new(Intent::None));
        *lock(&vm.live) = Some(Live {
            pid,
            control: connection.as_ref().map(|(c, _)| c.clone()),
            intent: intent.clone(),
        });
        let supervisor = Supervisor {
            guests: self.guests.clone(),
            engine: self.engine.clone(),
            store: self.store.clone(),
            networks: self.networks.clone(),
            hostdevs: self.hostdevs.clone(),
            dac: self.dac.clone(),
            restarts: self.restarts.clone(),
            vm: vm.clone(),
            uuid: record.uuid,
            name: record.name.clone(),
            run_dir: self.guests.run_dir(&record.uuid),
            pid,
            on_crash: domain.on_crash,
            on_reboot: domain.on_reboot,
            on_poweroff: domain.on_poweroff,
            intent,
        };
        tokio::spawn(supervisor.run(connection));
    }

    /// After a daemon restart: reattach to guests that still run, forget the ones that do not.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        self.adopt_orphans().await?;
        for runtime in self.store.list_runtime().map_err(store::named)? {
            let Some(record) = self
                .store
                .domain_by_uuid(&runtime.uuid)
                .map_err(store::named)?
            else {
                continue;
            };
            if !self.engine.is_alive(runtime.pid, &runtime.uuid).await {
                tracing::info!(domain = %record.name, pid = runtime.pid, "found stopped while oxvirtd was down");
                self.store
                    .mark_stopped(&runtime.uuid, "unknown")
                    .map_err(store::named)?;
                continue;
            }
            let domain = match stored_domain(&record) {
                Ok(domain) => domain,
                Err(err) => {
                    tracing::error!(domain = %record.name, "stored definition unreadable: {err}");
                    continue;
                }
            };
            let vm = self.guests.slot(&record.uuid);
            let connection = match self.engine.connect(&runtime.run_dir).await {
                Ok((control, events)) => {
                    match control.status().await {
                        Ok(status) => {
                            let (state, reason) = state_of_status(&status, &runtime.reason);
                            let reason = if state == runtime.state {
                                runtime.reason.clone()
                            } else {
                                reason.to_string()
                            };
                            self.guests.set_state(&vm, &record.uuid, state, &reason);
                        }
                        Err(err) => tracing::warn!(domain = %record.name, "query status: {err}"),
                    }
                    Some((control, events))
                }
                Err(err) => {
                    tracing::warn!(domain = %record.name, "cannot reconnect yet: {err}");
                    None
                }
            };
            tracing::info!(domain = %record.name, pid = runtime.pid, "reattached");
            self.supervise(&vm, &record, &domain, runtime.pid, connection);
        }
        // Users of the guests that run stay taken; the files of those that stopped meanwhile
        // get their owners back.
        self.dac.recover(&self.active_uuids()?)?;
        Ok(())
    }

    /// The domains with a runtime row (running, paused, ...).
    fn active_uuids(&self) -> anyhow::Result<Vec<Uuid>> {
        Ok(self
            .store
            .list_runtime()
            .map_err(store::named)?
            .iter()
            .map(|r| r.uuid)
            .collect())
    }

    /// A guest launched just before the daemon died, before its start was recorded, still runs
    /// without a runtime row: record it, so the loop in `recover` reattaches it.
    async fn adopt_orphans(&self) -> anyhow::Result<()> {
        let active = self.active_uuids()?;
        for record in self.store.list_domains().map_err(store::named)? {
            if active.contains(&record.uuid) {
                continue;
            }
            let run_dir = self.guests.run_dir(&record.uuid);
            let Some(pid) = self.engine.recorded_pid(&run_dir) else {
                continue;
            };
            if !self.engine.is_alive(pid, &record.uuid).await {
                continue;
            }
            let accel = match stored_domain(&record) {
                Ok(domain) => self.engine.plan_accel(&domain).accel,
                Err(_) => Accel::Tcg,
            };
            tracing::warn!(domain = %record.name, pid, "adopting a guest whose start was not recorded");
            self.store
                .transaction(|tx| {
                    let runtime = RuntimeRecord {
                        uuid: record.uuid,
                        pid,
                        run_dir: run_dir.clone(),
                        state: DomainState::Running,
                        reason: "booted".to_string(),
                        id: store::next_runtime_id(tx)?,
                        accel: accel.to_string(),
                        started_at: now_unix(),
                    };
                    store::insert_runtime(tx, &runtime)
                })
                .map_err(store::named)?;
        }
        Ok(())
    }

    /// Starts every autostart domain that is not running.
    pub async fn autostart(self: &Arc<Self>) {
        let records = match self.store.list_domains() {
            Ok(records) => records,
            Err(err) => {
                tracing::error!("autostart: cannot list domains: {}", store::named(err));
                return;
            }
        };
        for record in records.into_iter().filter(|r| r.autostart) {
            let vm = self.guests.slot(&record.uuid);
            let _guard = vm.op.clone().lock_owned().await;
            match self.store.runtime(&record.uuid) {
                Ok(None) => match self.start_locked(&vm, &record, None).await {
                    Ok(_) => tracing::info!(domain = %record.name, "autostarted"),
                    Err(err) => tracing::error!(domain = %record.name, "autostart failed: {err}"),
                },
                Ok(Some(_)) => {}
                Err(err) => {
                    tracing::error!(domain = %record.name, "autostart: {}", store::named(err))
                }
            }
        }
    }

    /// `domblklist`: the disks of a domain's definition (the live one while it runs), in
    /// order, as virsh lists them (a volume disk by its volume's name, an empty CD-ROM tray
    /// without a source).
    pub fn disks(&self, id: &str) -> DaemonResult<Vec<DomainDisk>> {
        let record = self.guests.resolve(id)?;
        Ok(disk_list(&self.current_domain(&record)?))
    }
}

/// `domain`'s disks as `domblklist` lists them.
pub(super) fn disk_list(domain: &Domain) -> Vec<DomainDisk> {
    domain
        .devices
        .disks
        .iter()
        .map(|disk| DomainDisk {
            disk_type: disk.disk_type.as_str().to_string(),
            device: match disk.device {
                DiskDevice::Disk => "disk",
                DiskDevice::Cdrom => "cdrom",
            }
            .to_string(),
            target: disk.target.dev.clone(),
            source: disk
                .source
                .clone()
                .or_else(|| disk.volume.as_ref().map(|v| v.volume.clone()))
                // virsh shows a network disk's source name.
                .or_else(|| disk.network.as_ref().and_then(|n| n.name.clone())),
        })
        .collect()
}

impl Domains {
    /// Grows a disk of a running guest; the guest sees the new size at once.
    pub async fn block_resize(
        self: &Arc<Self>,
        id: &str,
        request: &BlockResizeRequest,
    ) -> DaemonResult<BlockResized> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let control = self.guests.running_control(&vm, &record)?;
        let domain = stored_domain(&record)?;
        let disk = domain
            .devices
            .disks
            .iter()
            .find(|d| d.target.dev == request.disk || d.source.as_deref() == Some(&request.disk))
            .ok_or_else(|| {
                not_found(format!(
                    "domain '{}' has no disk '{}' (give its target, e.g. vda, or its source path)",
                    record.name, request.disk
                ))
            })?;
        let dev = disk.target.dev.clone();
        let has_medium = disk.source.is_some() || disk.volume.is_some();
        if !has_medium || disk.device == DiskDevice::Cdrom || disk.readonly {
            return Err(invalid_state(format!(
                "disk '{dev}' of domain '{}' is read-only or has no medium; it cannot be resized",
                record.name
            )));
        }
        // QEMU wants whole sectors (qcow2 insists); round up as libvirt does.
        let size = request
            .size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .ok_or_else(|| bad_request(format!("size {} is too large", request.size)))?;
        let current = control
            .block_size(&dev)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        if size < current {
            return Err(bad_request(format!(
                "disk '{dev}' of domain '{}' is {current} bytes; shrinking a running guest's disk to {size} bytes is not supported",
                record.name
            )));
        }
        control
            .block_resize(&dev, size)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        tracing::info!(domain = %record.name, disk = %dev, size, "disk resized");
        Ok(BlockResized { target: dev, size })
    }
}

fn summary_of(record: &DomainRecord, runtime: Option<&RuntimeRecord>) -> DomainSummary {
    DomainSummary {
        id: runtime.map(|r| r.id),
        name: record.name.clone(),
        uuid: record.uuid.to_string(),
        state: runtime.map(|r| r.state).unwrap_or(DomainState::ShutOff),
        autostart: record.autostart,
        managed_save: false,
        host: None,
    }
}

/// A start must not fail deep inside the engine because a file is missing: name it.
pub(super) fn check_files_exist(domain: &Domain) -> DaemonResult<()> {
    let mut files: Vec<(&str, &str)> = Vec::new();
    if let Some(kernel) = &domain.os.kernel {
        files.push(("kernel", kernel));
    }
    if let Some(initrd) = &domain.os.initrd {
        files.push(("initrd", initrd));
    }
    for disk in &domain.devices.disks {
        if let Some(source) = &disk.source {
            files.push(("disk source", source));
        }
    }
    for (what, path) in files {
        // stat, not open: a FIFO or device named here must not make the daemon (or the
        // engine, which would open it) wait.
        let problem = match std::fs::metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(DaemonError::new(
                    ErrorKind::NotFound,
                    format!(
                        "cannot start domain '{}': {what} '{path}' does not exist",
                        domain.name
                    ),
                ))
            }
            Err(err) => Some(err.to_string()),
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                let kind = meta.file_type();
                let disk = what == "disk source";
                if kind.is_file() || (disk && kind.is_block_device()) {
                    None
                } else if disk {
                    Some("it is neither a regular file nor a block device".to_string())
                } else {
                    Some("it is not a regular file".to_string())
                }
            }
        };
        if let Some(problem) = problem {
            return Err(DaemonError::new(
                ErrorKind::BadRequest,
                format!(
                    "cannot start domain '{}': {what} '{path}': {problem}",
                    domain.name
                ),
            ));
        }
    }
    Ok(())
}
