//! oxvirt-domain: the libvirt definition XML oxvirt understands (networks live in
//! `oxvirt-net`).
//!
//! [`parse_domain_xml`] parses, validates and normalizes a domain (filling in the defaults
//! libvirt fills in); [`Domain::to_xml`] prints libvirt's normalized form, as `virsh dumpxml`
//! would. [`pool`] and [`volume`] do the same for storage pools (type `dir`) and their volumes.
//! Anything not modelled is an error naming it and its line, never silently dropped. All text
//! is read through `oxvirt-xml` and its limits. The crate does no I/O.

#![forbid(unsafe_code)]

pub mod cpu_compare;
mod elem;
mod error;
mod iotune;
mod metadata;
mod model;
mod names;
mod normalize;
mod order;
mod parse;
mod pci;
mod placement;
pub mod pool;
mod rules;
pub mod secret;
pub mod snapshot;
mod storage;
mod sysinfo;
mod units;
mod validate;
pub mod volume;
mod write;

pub use error::{DomainError, Location};
pub use iotune::{IoDirection, IoLevel, IoLimit, IoTune, IoUnit, IO_LIMIT_MAX};
pub use model::*;
pub use normalize::{DEFAULT_CPU_MODEL, DEFAULT_EMULATOR};
pub use placement::Placement;
pub use rules::{validate_name, MAX_NAME_BYTES};
pub use units::MAX_CPU_ID;
pub use units::{generate_mac, parse_cpuset, parse_mac, parse_size_kib, parse_size_text_kib};
pub use validate::validate_blkiotune;

/// Parses, validates and normalizes a `<domain>` definition.
///
/// Normalization fills in what libvirt fills in (uuid, currentMemory, on_* actions, os
/// arch/machine, boot device, disk driver, default devices; see `docs/xml-support.md`).
pub fn parse_domain_xml(xml: &str) -> Result<Domain, DomainError> {
    let mut domain = parse::parse(xml)?;
    normalize::normalize(&mut domain);
    domain.validate()?;
    Ok(domain)
}

impl Domain {
    /// The definition in libvirt's normalized XML form.
    pub fn to_xml(&self) -> String {
        write::to_xml(self)
    }

    /// Checks cross-field consistency (names, counts, topology, memory bounds).
    pub fn validate(&self) -> Result<(), DomainError> {
        validate::validate(self)
    }

    /// Fills in libvirt's defaults (what [`parse_domain_xml`] does after parsing): for a
    /// domain built in code. Idempotent. A nil uuid, a zero `current_memory_kib` and
    /// interfaces without a MAC get generated values.
    pub fn normalize(&mut self) {
        normalize::normalize(self)
    }

    /// A minimal domain (no devices), normalized: `x86_64`/`pc`, defaults as libvirt.
    pub fn new(
        domain_type: DomainType,
        name: &str,
        memory_kib: u64,
        vcpus: u32,
    ) -> Result<Domain, DomainError> {
        validate_name(name)?;
        let mut domain = Domain {
            domain_type,
            name: name.to_string(),
            uuid: Uuid::nil(),
            title: None,
            description: None,
            metadata: None,
            memory_kib,
            current_memory_kib: 0,
            max_memory: None,
            blkiotune: None,
            memtune: None,
            memory_backing: None,
            vcpu: Vcpu {
                placement: VcpuPlacement::Static,
                max: vcpus,
                current: None,
                cpuset: None,
                slots: Vec::new(),
                line: SourceLine::NONE,
            },
            iothreads: IoThreads::default(),
            cputune: None,
            numatune: None,
            sysinfo: None,
            os: Os::default(),
            features: Features::default(),
            engine: Engine::Qemu,
            cpu: None,
            clock: Clock {
                offset: ClockOffset::Utc,
                timers: Vec::new(),
                line: SourceLine::NONE,
            },
            on_poweroff: LifecycleAction::Destroy,
            on_reboot: LifecycleAction::Restart,
            on_crash: LifecycleAction::Destroy,
            pm: None,
            devices: Devices::default(),
            // Built in code: no element has a line.
            line: SourceLine::NONE,
            memory_line: SourceLine::NONE,
            current_memory_line: SourceLine::NONE,
            iothreads_line: SourceLine::NONE,
            iothreadids_line: SourceLine::NONE,
            on_poweroff_line: SourceLine::NONE,
            on_reboot_line: SourceLine::NONE,
            on_crash_line: SourceLine::NONE,
        };
        domain.normalize();
        domain.validate()?;
        Ok(domain)
    }
}
