//! The hypervisor's capabilities. The CPU model database (`oxvirt cpu-models`,
//! `hypervisor-cpu-baseline`, `hypervisor-cpu-compare`) and the machine types (`capabilities`,
//! `domcapabilities`) are asked of QEMU (`oxvirt_qemu::cpu_models::probe`,
//! `oxvirt_qemu::machines::probe`) once per QEMU version and kept in
//! STATE_DIR/cache/{cpu-models,machines}-ARCH-VERSION.json, so only the first request after an
//! upgrade of QEMU starts one. The host's side comes from `oxvirt_host::topology`; what a
//! definition may hold from the engine itself (`oxvirt_qemu::domcaps`: libvirt's vocabulary
//! tried through the parser and the engine's check). See docs/capabilities.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oxvirt_api::{
    CacheBankInfo, CapabilityEnum, CapabilityGroup, CellCpuInfo, CpuModelInfo, CpuModels,
    DomainCapabilities, DomainCapabilitiesQuery, GuestCapabilities, GuestFeature, HostCapabilities,
    HostCpuCapabilities, MachineInfo, NumaCellInfo,
};
use oxvirt_domain::cpu_compare::{self, HostCpu, ModelDatabase, NamedModel};
use oxvirt_host::topology::host_topology;
use oxvirt_host::HostView;
use oxvirt_qemu::cpu_models::{self, CpuDatabase};
use oxvirt_qemu::domcaps::{self, Support};
use oxvirt_qemu::machines::{self, MachineDatabase};
use oxvirt_qemu::{probe_accel, Accel};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{bad_request, internal, DaemonResult};
use super::Services;

impl Services {
    /// The models of `arch` and the CPU that `virttype` (`qemu` or `kvm`) provides here.
    pub fn cpu_models(&self, arch: &str, virttype: &str) -> DaemonResult<CpuModels> {
        if !matches!(virttype, "qemu" | "kvm") {
            return Err(bad_request(format!(
                "unknown virttype '{virttype}': expected qemu or kvm"
            )));
        }
        if arch != "x86_64" {
            return Err(bad_request(format!(
                "no CPU models for architecture '{arch}': this host's QEMU engine runs x86_64"
            )));
        }
        // Only hardware KVM provides "the host CPU".
        kvm_if_asked(virttype)?;
        let database = self.cpu_database(arch)?;
        let provided = self.advertised_cpu()?;
        Ok(CpuModels {
            qemu_version: database.qemu_version,
            arch: database.arch,
            models: database
                .models
                .into_iter()
                .map(|model| CpuModelInfo {
                    name: model.name,
                    vendor: model.vendor,
                    usable: model.usable,
                    features: model.features.into_iter().collect(),
                })
                .collect(),
            virttype: virttype.to_string(),
            // TCG's max (or the configured description); under hardware KVM `-cpu host` would
            // be the answer, which this database does not probe yet (a KVM host reports TCG's
            // set: see docs/cpu-models.md).
            host_features: provided.features.into_iter().collect(),
            host_vendor: cpu_compare::vendor_id(provided.vendor.as_deref().unwrap_or_default())
                .to_string(),
        })
    }

    /// The named models of `arch`, as the CPU comparison takes them.
    pub fn model_database(&self, arch: &str) -> DaemonResult<ModelDatabase> {
        Ok(model_database(&self.cpu_database(arch)?))
    }

    /// The CPU this host provides to guests, as oxvirtd advertises it (capabilities,
    /// `hypervisor-cpu-*` and a migration's CPU check): the description of key host_cpu_file,
    /// or TCG's max CPU. Its model is the one the description names, else the closest named
    /// model.
    pub fn advertised_cpu(&self) -> DaemonResult<HostCpu> {
        let database = self.cpu_database("x86_64")?;
        let models = model_database(&database);
        let mut cpu = match &self.host_cpu {
            Some((path, text)) => {
                cpu_compare::parse_cpus(&path.display().to_string(), text, &models)
                    .map_err(|err| bad_request(err.to_string()))?
                    .remove(0)
            }
            None => HostCpu {
                origin: "this host".to_string(),
                model: None,
                vendor: Some(cpu_compare::vendor_name(&database.tcg_max_vendor).to_string())
                    .filter(|vendor| !vendor.is_empty()),
                features: database.tcg_max,
            },
        };
        if cpu.model.is_none() {
            cpu.model = cpu_compare::closest_model(&models, &cpu)
                .ok()
                .map(|base| base.model);
        }
        Ok(cpu)
    }

    fn cpu_database(&self, arch: &str) -> DaemonResult<CpuDatabase> {
        // Found on PATH as a domain without `<emulator>` finds it.
        let emulator = Path::new(oxvirt_qemu::DEFAULT_EMULATOR);
        self.cached(
            "cpu-models",
            arch,
            |database: &CpuDatabase| &database.qemu_version,
            || {
                cpu_models::probe(emulator, arch)
                    .map_err(|err| internal("asking QEMU for its CPU models", err))
            },
        )
    }

    /// The machine types of this host's QEMU (x86_64).
    fn machine_database(&self) -> DaemonResult<MachineDatabase> {
        let emulator = oxvirt_qemu::default_emulator();
        self.cached(
            "machines",
            "x86_64",
            |database: &MachineDatabase| &database.qemu_version,
            || {
                machines::probe(&emulator)
                    .map_err(|err| internal("asking QEMU for its machine types", err))
            },
        )
    }

    /// `probe`'s answer, kept in STATE_DIR/cache/WHAT-ARCH-VERSION.json by QEMU's version.
    fn cached<T: Serialize + DeserializeOwned>(
        &self,
        what: &str,
        arch: &str,
        version_of: impl Fn(&T) -> &String,
        probe: impl FnOnce() -> DaemonResult<T>,
    ) -> DaemonResult<T> {
        let cache_dir = self.domains.guests.state_dir().join("cache");
        let version = self.engine.version().unwrap_or_default();
        if !version.is_empty() {
            if let Some(answer) = read_cache(&cache_file(&cache_dir, what, arch, &version)) {
                return Ok(answer);
            }
        }
        let answer = probe()?;
        let cache = cache_file(&cache_dir, what, arch, version_of(&answer));
        // A cache that cannot be written costs a QEMU start next time, nothing more.
        if let Err(err) = write_cache(&cache_dir, &cache, &answer) {
            tracing::warn!("cannot cache {what} in {}: {err}", cache.display());
        }
        Ok(answer)
    }

    /// `<capabilities>`: this host and the guests its QEMU runs.
    pub fn host_capabilities(&self) -> DaemonResult<HostCapabilities> {
        let topology = host_topology(&HostView::this_host())
            .map_err(|err| internal("reading the host's topology", err))?;
        let cpus = self.cpu_database("x86_64")?;
        let machines = self.machine_database()?;
        // Every feature name the model database knows, to tell CPU features from Linux's own
        // flags.
        let known = cpus
            .models
            .iter()
            .flat_map(|m| m.features.iter().cloned())
            .chain(cpus.tcg_max.iter().cloned())
            .collect();
        let cpu = &topology.cpu;
        let mut vendor_id = cpu.vendor_id.clone();
        let mut features = cpu_models::host_cpu_features(&cpu.flags, &known);
        if self.host_cpu.is_some() {
            // The configured description stands for the host's CPU (it describes, under TCG
            // it does not change what guests run on).
            let advertised = self.advertised_cpu()?;
            vendor_id = cpu_compare::vendor_id(advertised.vendor.as_deref().unwrap_or_default())
                .to_string();
            features = advertised.features.into_iter().collect();
        }
        Ok(HostCapabilities {
            uuid: topology.uuid.clone(),
            cpu: HostCpuCapabilities {
                arch: std::env::consts::ARCH.to_string(),
                vendor_id,
                microcode: cpu.microcode,
                family: cpu.family,
                model: cpu.model,
                stepping: cpu.stepping,
                tsc_hz: cpu.tsc_hz,
                sockets: topology.sockets,
                dies: topology.dies,
                cores: topology.cores,
                threads: topology.threads,
                phys_bits: cpu.phys_bits,
                features,
                page_sizes_kib: topology.page_sizes_kib.clone(),
            },
            iommu: topology.iommu,
            cells: topology
                .cells
                .iter()
                .map(|cell| NumaCellInfo {
                    id: cell.id,
                    memory_kib: cell.memory_kib,
                    pages: cell.pages.clone(),
                    distances: cell.distances.clone(),
                    cpus: cell
                        .cpus
                        .iter()
                        .map(|cpu| CellCpuInfo {
                            id: cpu.id,
                            socket: cpu.socket,
                            die: cpu.die,
                            core: cpu.core,
                            siblings: cpu.siblings.clone(),
                        })
                        .collect(),
                })
                .collect(),
            caches: topology
                .caches
                .iter()
                .map(|bank| CacheBankInfo {
                    id: bank.id,
                    level: bank.level,
                    kind: bank.kind.to_string(),
                    size_kib: bank.size_kib,
                    cpus: bank.cpus.clone(),
                })
                .collect(),
            // QEMU runs as oxvirtd's user and nothing is relabelled: no DAC, SELinux or
            // AppArmor model applies.
            secmodels: vec!["none".to_string()],
            guests: vec![GuestCapabilities {
                os_type: "hvm".to_string(),
                arch: "x86_64".to_string(),
                wordsize: 64,
                emulator: oxvirt_qemu::default_emulator().display().to_string(),
                machines: machine_list(&machines),
                domain_types: domain_types(),
                features: guest_features(),
            }],
        })
    }

    /// `<domainCapabilities>` for a domain type, emulator, architecture and machine.
    pub fn domain_capabilities(
        &self,
        query: &DomainCapabilitiesQuery,
    ) -> DaemonResult<DomainCapabilities> {
        let virttype = query.virttype.as_deref().unwrap_or("qemu");
        let arch = query.arch.as_deref().unwrap_or("x86_64");
        if !matches!(virttype, "qemu" | "kvm") {
            return Err(bad_request(format!(
                "unknown virttype '{virttype}': expected qemu or kvm"
            )));
        }
        if arch != "x86_64" {
            return Err(bad_request(format!(
                "no domain capabilities for architecture '{arch}': this host's QEMU engine \
                 runs x86_64 guests only"
            )));
        }
        kvm_if_asked(virttype)?;
        let emulator = oxvirt_qemu::default_emulator();
        if let Some(asked) = query.emulatorbin.as_deref() {
            // The engine runs one QEMU binary per architecture; another one's answers would
            // not be what a definition here gets.
            let same = std::fs::canonicalize(asked)
                .ok()
                .zip(std::fs::canonicalize(&emulator).ok())
                .is_some_and(|(a, b)| a == b);
            if !same {
                return Err(bad_request(format!(
                    "emulator '{asked}' is not this host's x86_64 QEMU ({})",
                    emulator.display()
                )));
            }
        }
        let machines = self.machine_database()?;
        let machine = match query.machine.as_deref() {
            Some(name) => machines.find(name).ok_or_else(|| {
                bad_request(format!(
                    "unknown machine type '{name}' for {}: see `oxvirt capabilities` for the \
                     machine types of this QEMU",
                    emulator.display()
                ))
            })?,
            None => machines
                .default_machine()
                .ok_or_else(|| internal("QEMU's machine types", "no default machine"))?,
        };
        let support = domcaps::engine_support(virttype, &machine.name, machine.max_cpus);
        let dirs: Vec<&Path> = oxvirt_qemu::firmware::FIRMWARE_DESCRIPTOR_DIRS
            .iter()
            .map(Path::new)
            .collect();
        let mut loader_values: Vec<String> = Vec::new();
        for firmware in oxvirt_qemu::firmware::uefi_firmwares(&dirs, &machine.name) {
            let code = firmware.code.display().to_string();
            if !loader_values.contains(&code) {
                loader_values.push(code);
            }
        }
        Ok(DomainCapabilities {
            path: emulator.display().to_string(),
            domain: virttype.to_string(),
            machine: machine.name.clone(),
            arch: arch.to_string(),
            vcpu_max: support.vcpu_max,
            iothreads: support.iothreads,
            os: group(&support.os),
            loader: group(&support.loader),
            loader_values,
            host_passthrough: support.host_passthrough,
            maximum: support
                .maximum
                .map(|values| values.into_iter().map(String::from).collect()),
            host_model: support.host_model,
            custom: support.custom,
            memory_backing: group(&support.memory_backing),
            devices: support.devices.iter().map(group).collect(),
            features: support.features.iter().map(group).collect(),
        })
    }
}

/// For `virttype` kvm, that this host has hardware KVM: a paravirtual /dev/kvm (kvm_pvm) is
/// not, and the refusal gives the probe's reason.
fn kvm_if_asked(virttype: &str) -> DaemonResult<()> {
    if virttype != "kvm" {
        return Ok(());
    }
    let probe = probe_accel();
    if probe.accel != Accel::Kvm {
        return Err(bad_request(format!(
            "virttype kvm is not available on this host: {}",
            probe.reason
        )));
    }
    Ok(())
}

/// The machine types as `<guest>` lists them: each alias right after its machine.
fn machine_list(database: &MachineDatabase) -> Vec<MachineInfo> {
    let mut list = Vec::new();
    for machine in &database.machines {
        list.push(MachineInfo {
            name: machine.name.clone(),
            canonical: None,
            max_cpus: machine.max_cpus,
            deprecated: machine.deprecated,
        });
        if let Some(alias) = &machine.alias {
            list.push(MachineInfo {
                name: alias.clone(),
                canonical: Some(machine.name.clone()),
                max_cpus: machine.max_cpus,
                deprecated: machine.deprecated,
            });
        }
    }
    list
}

/// `qemu` always (TCG); `kvm` only with hardware KVM: a paravirtual /dev/kvm (kvm_pvm) cannot
/// run what a `type='kvm'` guest expects, and the engine would fall back to TCG.
fn domain_types() -> Vec<String> {
    let mut types = vec!["qemu".to_string()];
    if probe_accel().accel == Accel::Kvm {
        types.push("kvm".to_string());
    }
    types
}

/// `<guest><features>` of x86_64, as the domain model has them: ACPI can be turned off
/// (`<features>` without `<acpi/>`), the APIC cannot (QEMU always gives one); `<cpu>` is
/// honoured; boot order per device (`<boot order=>`); snapshots of disks.
fn guest_features() -> Vec<GuestFeature> {
    let feature = |name: &str, default: Option<&str>, toggle: Option<&str>| GuestFeature {
        name: name.to_string(),
        default: default.map(String::from),
        toggle: toggle.map(String::from),
    };
    vec![
        feature("acpi", Some("on"), Some("yes")),
        feature("apic", Some("on"), Some("no")),
        feature("cpuselection", None, None),
        feature("deviceboot", None, None),
        feature("disksnapshot", Some("on"), Some("no")),
    ]
}

fn group(support: &Support) -> CapabilityGroup {
    CapabilityGroup {
        name: support.name.to_string(),
        supported: support.supported,
        enums: support
            .enums
            .iter()
            .map(|e| CapabilityEnum {
                name: e.name.to_string(),
                values: e.values.iter().map(|v| v.to_string()).collect(),
            })
            .collect(),
    }
}

fn model_database(database: &CpuDatabase) -> ModelDatabase {
    ModelDatabase {
        arch: database.arch.clone(),
        models: database
            .models
            .iter()
            .map(|model| NamedModel {
                name: model.name.clone(),
                vendor: model.vendor.clone(),
                features: model.features.clone(),
            })
            .collect(),
    }
}

fn cache_file(dir: &Path, what: &str, arch: &str, version: &str) -> PathBuf {
    dir.join(format!("{what}-{arch}-{version}.json"))
}

/// A cache file that is missing or unreadable is asked of QEMU again.
fn read_cache<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_cache<T: Serialize>(dir: &Path, path: &Path, database: &T) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Two requests may probe at once: each writes its own file, and a rename is atomic.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temporary = path.with_extension(format!("tmp{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&temporary, serde_json::to_vec(database)?)?;
    std::fs::rename(&temporary, path)
}
