//! [`VmConfig`]: everything `oxvirt-vmm` needs to run one VM, as one serde type.
//!
//! Front ends: `oxvirt-vmm --config FILE` (this type as JSON), the command-line flags (see
//! `cli.rs`, which builds the same struct) and oxvirtd's native engine (which plans a libvirt
//! domain into it and writes it to the run directory). Nothing downstream re-parses strings:
//! the VM builder takes a `&VmConfig`.
//!
//! Every struct refuses unknown fields, so a misspelt key is an error rather than a silently
//! ignored setting. Fields with a default may be left out of a file. [`VmConfig::validate`] checks
//! what types cannot say (counts, combinations, names of models and features, that the boot
//! files exist) and names the offending field as a path (`disks[1].cache`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oxvirt_images::Format;
use serde::{Deserialize, Serialize};

use crate::cpuid;
use crate::memory::MIN_MEMORY_MIB;

/// The kernel command line when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";
/// Guest RAM when none is given.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Longest network interface name Linux accepts (IFNAMSIZ without the NUL).
const MAX_TAP_NAME: usize = 15;

/// One VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// bzImage (64-bit boot protocol) or ELF vmlinux.
    pub kernel: PathBuf,
    /// Initial ramdisk (cpio archives, possibly concatenated).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub cpus: CpusConfig,
    /// virtio-blk disks, in PCI slot order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs, after the disks.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// A virtio-rng device (after the NICs).
    #[serde(default)]
    pub rng: bool,
    /// A virtio-balloon device (after the rng); none without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonSettings>,
    /// Where COM1 goes.
    #[serde(default)]
    pub serial: SerialMode,
    /// The control API socket (see [`crate::protocol::control`]); none without it.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// Where the VMM writes its [`crate::protocol::ExitReason`] before it exits; none without it.
    #[serde(default)]
    pub exit_record: Option<PathBuf>,
    /// Start from a saved machine state (the control request `save`) instead of booting the kernel:
    /// the VM is built as configured (same memory, vCPUs and devices as the saved one), takes
    /// RAM and every state from the stream, and starts paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSource>,
    /// Boot with every vCPU thread started but held before its first instruction, until the
    /// control API's `resume` (`status` says `created` meanwhile, QEMU's `-S`): whoever launched
    /// the VMM places its threads first (oxvirtd: the guest's cgroups and CPU pins). The API
    /// socket answers only once every vCPU thread exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_paused: bool,
    /// Confine the VMM before it sets up the VM (`crate::jail`); none: it runs as started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<JailConfig>,
}

/// The jail `oxvirt-vmm` enters once it has opened every host file and device the VM uses
/// (docs/native-vmm.md, "The jail"): new mount, IPC and network namespaces, `root` as its `/`,
/// the ids `uid`/`gid`, no new privileges, resource limits; then KVM setup and the seccomp
/// filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// An existing directory that becomes the VMM's root (an empty, read-only file system is
    /// mounted on it, in the VMM's own mount namespace only).
    pub root: PathBuf,
    /// The user the VMM runs as (not 0).
    pub uid: u32,
    /// Its group (not 0); it keeps no supplementary groups.
    pub gid: u32,
    /// The VMM must be the first process of a new PID namespace, which only its launcher can
    /// create (oxvirtd does; by hand `unshare --pid --fork oxvirt-vmm ...`). Off: it checks
    /// nothing and sees the host's processes' ids (it still cannot signal them: other uid).
    #[serde(default = "yes")]
    pub pid_namespace: bool,
    /// A new, empty network namespace: the VMM's TAPs are opened before, and it needs no other
    /// network.
    #[serde(default = "yes")]
    pub net_namespace: bool,
}

fn yes() -> bool {
    true
}

/// Where a saved machine state is: the stream starts at byte `offset` of the file `path` (what is
/// before it belongs to whoever wrote the file, oxvirtd's own header for instance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSource {
    pub path: PathBuf,
    #[serde(default)]
    pub offset: u64,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

/// The virtio-balloon device (libvirt's `<memballoon model='virtio'>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalloonSettings {
    /// Let the guest take pages back from the balloon when it runs out of memory
    /// (`VIRTIO_BALLOON_F_DEFLATE_ON_OOM`, libvirt's `autodeflate='on'`).
    pub deflate_on_oom: bool,
    /// Seconds between two refreshes of the guest's memory statistics; 0: none
    /// (`<stats period=...>`; the control request `balloon-stats-period` changes it).
    pub stats_period_s: u32,
    /// The memory (KiB) the guest is asked to keep from the start (libvirt's `<currentMemory>`
    /// below `<memory>`); none: all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kib: Option<u64>,
}

/// Guest RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// MiB of RAM (at least 32, at most the host's MemTotal).
    pub size_mib: u64,
    /// Back RAM with `MAP_HUGETLB` (needs `vm.nr_hugepages`).
    pub hugepages: bool,
    /// Mark RAM mergeable for KSM (libvirt's `<nosharepages/>` turns it off).
    pub share_pages: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size_mib: DEFAULT_MEMORY_MIB,
            hugepages: false,
            share_pages: true,
        }
    }
}

/// vCPUs and the CPU they show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpusConfig {
    /// Number of vCPUs.
    pub count: u32,
    /// How the vCPUs are arranged; none: one socket of `count` cores.
    pub topology: Option<Topology>,
    pub mode: CpuMode,
    pub features: CpuFeatures,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            count: 1,
            topology: None,
            mode: CpuMode::HostPassthrough,
            features: CpuFeatures::default(),
        }
    }
}

impl CpusConfig {
    /// The topology in effect (a valid config's product equals `count`).
    pub fn topology(&self) -> Topology {
        self.topology.unwrap_or(Topology::flat(self.count))
    }
}

/// sockets x cores x threads = vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    /// One socket of `vcpus` single-threaded cores.
    pub fn flat(vcpus: u32) -> Self {
        Topology {
            sockets: 1,
            cores: vcpus,
            threads: 1,
        }
    }

    /// The number of vCPUs the topology describes (`None` when it overflows).
    pub fn total(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }

    /// [`Topology::total`] of a validated topology.
    pub fn vcpus(&self) -> u32 {
        self.total().unwrap_or(u32::MAX)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sockets={},cores={},threads={}",
            self.sockets, self.cores, self.threads
        )
    }
}

/// How the guest CPU is defined (see `cpuid.rs`). In JSON: `"host-passthrough"`,
/// `"host-model"` or `{"custom": "qemu64"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    /// Everything KVM supports, as reported.
    #[default]
    HostPassthrough,
    /// The host's signature with the named features KVM supports, minus non-migratable ones (invtsc).
    HostModel,
    /// A named model from [`cpuid::MODELS`].
    Custom(String),
}

/// CPU feature overrides, by QEMU's names (`svm`, `avx2`, `sse4.2`...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuFeatures {
    /// Added; KVM must support them.
    pub enable: Vec<String>,
    /// Removed.
    pub disable: Vec<String>,
}

/// One virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// Stated, never guessed from the content (a guest can write any header into a raw disk).
    #[serde(default = "raw")]
    pub format: Format,
    /// Opened read-only; the guest sees a read-only disk.
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub cache: DiskCache,
    /// The images below a qcow2 `path`, nearest first, as its manager resolved them from the
    /// headers. `None`: the VMM follows the headers itself (every backing file's format must be
    /// recorded in the image naming it). `Some(chain)`: the headers must name exactly this chain
    /// (paths and formats), else the disk is refused; `Some([])` means no backing file at all.
    #[serde(default)]
    pub backing_chain: Option<Vec<BackingFile>>,
    /// The disk's name for its manager, given back with its I/O counters (`block-stats`);
    /// oxvirtd's native engine sets the disk's target (`vda`). Unique among the disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn raw() -> Format {
    Format::Raw
}

impl DiskConfig {
    /// A writable raw disk with the default cache mode.
    pub fn new(path: impl Into<PathBuf>) -> DiskConfig {
        DiskConfig {
            path: path.into(),
            format: Format::Raw,
            readonly: false,
            cache: DiskCache::Writeback,
            backing_chain: None,
            id: None,
        }
    }
}

/// One image below a qcow2 disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackingFile {
    pub path: PathBuf,
    pub format: Format,
}

/// How a disk's writes reach the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskCache {
    /// Through the host page cache; a guest flush is an fdatasync.
    #[default]
    Writeback,
    /// `O_DIRECT` (raw images only).
    None,
}

/// One virtio-net NIC on a TAP device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Created (non-persistent) if it does not exist, so it disappears with the VMM.
    pub tap: String,
    /// None: `52:54:00:0a:00:<index>`.
    #[serde(default)]
    pub mac: Option<MacAddress>,
}

/// A unicast MAC address; in JSON and on the command line `52:54:00:12:34:56`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl FromStr for MacAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let mut mac = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {s:?}"));
        }
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!("invalid MAC address {s:?}"));
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| format!("invalid MAC address {s:?}"))?;
        }
        if mac[0] & 1 != 0 {
            return Err(format!("MAC address {s:?} is a multicast address"));
        }
        Ok(MacAddress(mac))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the console (COM1) goes. In JSON: `"stdio"`, `{"file": PATH}` or `{"socket": PATH}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    /// Output to stdout, input from stdin (raw mode when stdin is a terminal).
    #[default]
    Stdio,
    /// Output appended to a file, no input.
    File(PathBuf),
    /// A listening Unix socket; one client at a time gets output and may type.
    Socket(PathBuf),
}

/// System call filters (see `seccomp.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Any system call outside the thread's list kills the process (SIGSYS).
    #[default]
    On,
    /// Calls outside the list are allowed but logged by the kernel (`audit: type=1326 ... syscall=N` in the
    /// kernel log): for finding what a filter misses.
    Log,
    /// No filters.
    Off,
}

/// A config that cannot be read, parsed, or run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, an unknown field, a value of the wrong type. `field` is the path to the value
    /// (`cpus.count`), `None` when the text is not JSON at all.
    #[error("{}{}{message}", file_prefix(file), field_prefix(field))]
    Malformed {
        file: Option<PathBuf>,
        field: Option<String>,
        message: String,
    },
    /// Well-formed but not runnable (0 vCPUs, an unknown CPU model, a missing kernel...).
    #[error("{}{field}: {reason}", file_prefix(file))]
    Invalid {
        file: Option<PathBuf>,
        field: String,
        reason: String,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!("config file {}: ", path.display()),
        None => String::new(),
    }
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(field) => format!("{field}: "),
        None => String::new(),
    }
}

impl ConfigError {
    /// The same error, naming the config file it is about.
    pub fn in_file(self, path: &Path) -> ConfigError {
        match self {
            ConfigError::Malformed { field, message, .. } => ConfigError::Malformed {
                file: Some(path.to_path_buf()),
                field,
                message,
            },
            ConfigError::Invalid { field, reason, .. } => ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                field,
                reason,
            },
            read @ ConfigError::Read { .. } => read,
        }
    }

    /// The path of the offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Malformed { field, .. } => field.as_deref(),
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } => None,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: None,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl VmConfig {
    /// A config for `kernel` with every other setting at its default.
    pub fn new(kernel: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            memory: MemoryConfig::default(),
            cpus: CpusConfig::default(),
            disks: Vec::new(),
            nets: Vec::new(),
            rng: false,
            balloon: None,
            serial: SerialMode::default(),
            api_socket: None,
            seccomp: SeccompMode::default(),
            exit_record: None,
            restore: None,
            start_paused: false,
            jail: None,
        }
    }

    /// Parses a config from JSON (not validated: see [`VmConfig::validate`]).
    pub fn from_json(text: &str) -> Result<VmConfig, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: VmConfig =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
                let field = err.path().to_string();
                let inner = err.into_inner();
                let field = match inner.classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof => None,
                    _ if field == "." => None,
                    _ => Some(field),
                };
                ConfigError::Malformed {
                    file: None,
                    field,
                    message: inner.to_string(),
                }
            })?;
        // Trailing text after the object is as malformed as a missing brace.
        deserializer.end().map_err(|err| ConfigError::Malformed {
            file: None,
            field: None,
            message: err.to_string(),
        })?;
        Ok(config)
    }

    /// Reads and parses a config file (not validated); errors name the file.
    pub fn read_file(path: &Path) -> Result<VmConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        VmConfig::from_json(&text).map_err(|err| err.in_file(path))
    }

    /// The config as the JSON a config file holds.
    pub fn to_json(&self) -> String {
        // Every field is a string, number, bool, list or map with string keys: nothing here can
        // fail to serialize, but a failure would still be reported rather than panic.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|err| format!("{{\"unserializable\": \"{err}\"}}"))
    }

    /// Checks what the types cannot: the first problem found, naming its field. Also checks that
    /// the kernel and initrd are files (the VMM reads them before it creates the VM).
    pub fn validate(&self) -> Result<(), ConfigError> {
        existing_file("kernel", &self.kernel)?;
        if let Some(restore) = &self.restore {
            existing_file("restore.path", &restore.path)?;
        }
        if let Some(initrd) = &self.initrd {
            existing_file("initrd", initrd)?;
        }
        if let Some(jail) = &self.jail {
            jail.validate()?;
        }
        self.validate_settings()
    }

    /// [`Self::validate`] without looking at the host's files: what a jailed VMM, which no
    /// longer sees them, checks again before it builds the VM.
    pub fn validate_settings(&self) -> Result<(), ConfigError> {
        if self.restore.is_some() && self.api_socket.is_none() {
            return Err(ConfigError::invalid(
                "restore",
                "needs api_socket: a restored VM starts paused, and only the control API resumes it",
            ));
        }
        if self.start_paused && self.api_socket.is_none() {
            return Err(ConfigError::invalid(
                "start_paused",
                "needs api_socket: only the control API resumes a VM that starts paused",
            ));
        }
        if self.memory.size_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::invalid(
                "memory.size_mib",
                format!(
                    "{} MiB is below the minimum of {MIN_MEMORY_MIB} MiB",
                    self.memory.size_mib
                ),
            ));
        }
        self.validate_cpus()?;
        if let Some(target) = self.balloon.and_then(|b| b.target_kib) {
            let memory_kib = self.memory.size_mib.saturating_mul(1024);
            if target > memory_kib {
                return Err(ConfigError::invalid(
                    "balloon.target_kib",
                    format!("{target} KiB is above memory.size_mib ({memory_kib} KiB)"),
                ));
            }
        }
        for (index, disk) in self.disks.iter().enumerate() {
            disk.validate(&format!("disks[{index}]"))?;
            if let Some(id) = &disk.id {
                if self.disks[..index]
                    .iter()
                    .any(|d| d.id.as_ref() == Some(id))
                {
                    return Err(ConfigError::invalid(
                        format!("disks[{index}].id"),
                        format!("{id:?} is the id of an earlier disk too"),
                    ));
                }
            }
        }
        for (index, net) in self.nets.iter().enumerate() {
            let field = format!("nets[{index}].tap");
            if net.tap.is_empty() {
                return Err(ConfigError::invalid(field, "is empty: name a TAP device"));
            }
            if net.tap.len() > MAX_TAP_NAME {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "{:?} is longer than the {MAX_TAP_NAME} bytes of a network interface name",
                        net.tap
                    ),
                ));
            }
        }
        match &self.serial {
            SerialMode::File(path) | SerialMode::Socket(path) if path.as_os_str().is_empty() => {
                return Err(ConfigError::invalid("serial", "the path is empty"));
            }
            _ => {}
        }
        for (field, path) in [
            ("api_socket", &self.api_socket),
            ("exit_record", &self.exit_record),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(field, "the path is empty"));
            }
        }
        Ok(())
    }

    fn validate_cpus(&self) -> Result<(), ConfigError> {
        let cpus = &self.cpus;
        if cpus.count == 0 {
            return Err(ConfigError::invalid("cpus.count", "must be at least 1"));
        }
        if let Some(topology) = cpus.topology {
            if topology.sockets == 0 || topology.cores == 0 || topology.threads == 0 {
                return Err(ConfigError::invalid(
                    "cpus.topology",
                    format!("{topology}: sockets, cores and threads must each be at least 1"),
                ));
            }
            if topology.total() != Some(cpus.count) {
                let total = topology
                    .total()
                    .map_or_else(|| "more than 2^32".to_string(), |n| n.to_string());
                return Err(ConfigError::invalid(
                    "cpus.topology",
                    format!(
                        "{topology} gives {total} vCPUs but cpus.count is {}",
                        cpus.count
                    ),
                ));
            }
        }
        if let CpuMode::Custom(name) = &cpus.mode {
            if cpuid::model(name).is_none() {
                return Err(ConfigError::invalid(
                    "cpus.mode",
                    format!(
                        "unknown CPU model {name:?} (known: {})",
                        cpuid::MODELS
                            .iter()
                            .map(|m| m.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for (field, names) in [
            ("cpus.features.enable", &cpus.features.enable),
            ("cpus.features.disable", &cpus.features.disable),
        ] {
            if let Some(name) = names.iter().find(|n| cpuid::feature(n).is_none()) {
                return Err(ConfigError::invalid(
                    field,
                    format!("unknown CPU feature {name:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl DiskConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(format!("{field}.path"), "is empty"));
        }
        if self.id.as_ref().is_some_and(|id| id.is_empty()) {
            return Err(ConfigError::invalid(format!("{field}.id"), "is empty"));
        }
        if self.cache == DiskCache::None && self.format != Format::Raw {
            return Err(ConfigError::invalid(
                format!("{field}.cache"),
                "direct I/O (cache=none) is supported for raw disks only; use writeback for qcow2",
            ));
        }
        let Some(chain) = &self.backing_chain else {
            return Ok(());
        };
        if !chain.is_empty() && self.format != Format::Qcow2 {
            return Err(ConfigError::invalid(
                format!("{field}.backing_chain"),
                "only a qcow2 image can have a backing chain",
            ));
        }
        for (index, layer) in chain.iter().enumerate() {
            if layer.path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.backing_chain[{index}].path"),
                    "is empty",
                ));
            }
            if layer.format == Format::Raw && index + 1 < chain.len() {
                return Err(ConfigError::invalid(
                    format!("{field}.backing_chain[{index}]"),
                    format!(
                        "raw image {} cannot have a backing file below it",
                        layer.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl JailConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.root.is_absolute() {
            return Err(ConfigError::invalid(
                "jail.root",
                format!("{} is not an absolute path", self.root.display()),
            ));
        }
        if !self.root.is_dir() {
            return Err(ConfigError::invalid(
                "jail.root",
                format!(
                    "{} does not exist or is not a directory",
                    self.root.display()
                ),
            ));
        }
        // Root would keep every file of the host in reach: the jail is for another user.
        if self.uid == 0 {
            return Err(ConfigError::invalid("jail.uid", "must not be 0 (root)"));
        }
        if self.gid == 0 {
            return Err(ConfigError::invalid(
                "jail.gid",
                "must not be 0 (root's group)",
            ));
        }
        Ok(())
    }
}

fn existing_file(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(field, "is empty: name a file"));
    }
    if !path.is_file() {
        return Err(ConfigError::invalid(
            field,
            format!("{} does not exist or is not a file", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that exists, for the kernel and initrd fields.
    fn some_file() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    fn parse(json: &str) -> Result<VmConfig, ConfigError> {
        VmConfig::from_json(json)
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let config = parse(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(config, VmConfig::new("/k"));
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
        assert_eq!(config.memory.size_mib, 512);
        assert!(config.memory.share_pages);
        assert_eq!(config.cpus.count, 1);
        assert_eq!(config.serial, SerialMode::Stdio);
        assert_eq!(config.seccomp, SeccompMode::On);
    }

    #[test]
    fn every_field_round_trips_through_json() {
        let mut config = VmConfig::new("/k/vmlinuz");
        config.initrd = Some("/k/initrd".into());
        config.cpus = CpusConfig {
            count: 4,
            topology: Some(Topology {
                sockets: 2,
                cores: 2,
                threads: 1,
            }),
            mode: CpuMode::Custom("kvm64".into()),
            features: CpuFeatures {
                enable: vec!["vmx".into()],
                disable: vec!["svm".into()],
            },
        };
        config.disks = vec![DiskConfig {
            path: "/d.qcow2".into(),
            format: Format::Qcow2,
            readonly: true,
            cache: DiskCache::Writeback,
            backing_chain: Some(vec![BackingFile {
                path: "/base.raw".into(),
                format: Format::Raw,
            }]),
            id: Some("vda".into()),
        }];
        config.nets = vec![NetConfig {
            tap: "tap0".into(),
            mac: Some(MacAddress([0x52, 0x54, 0, 1, 2, 3])),
        }];
        config.serial = SerialMode::Socket("/s.sock".into());
        config.seccomp = SeccompMode::Log;
        config.exit_record = Some("/run/exit.json".into());
        config.restore = Some(RestoreSource {
            path: "/var/lib/saved".into(),
            offset: 8192,
        });
        let json = config.to_json();
        assert!(json.contains(r#""custom": "kvm64""#), "{json}");
        assert!(json.contains(r#""mac": "52:54:00:01:02:03""#), "{json}");
        assert!(json.contains(r#""format": "qcow2""#), "{json}");
        assert_eq!(parse(&json).unwrap(), config);
    }

    #[test]
    fn malformed_json_names_the_field_or_the_position() {
        let not_json = parse("{\"kernel\": ").unwrap_err();
        assert!(matches!(
            not_json,
            ConfigError::Malformed { field: None, .. }
        ));
        assert!(not_json.to_string().contains("line 1"), "{not_json}");

        let unknown =
            parse(r#"{"kernel": "/k", "disks": [{"path": "/d", "colour": "red"}]}"#).unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        assert_eq!(unknown.field(), Some("disks[0].colour"), "{unknown}");

        let wrong_type = parse(r#"{"kernel": "/k", "cpus": {"count": "two"}}"#).unwrap_err();
        assert_eq!(wrong_type.field(), Some("cpus.count"), "{wrong_type}");

        let bad_mac =
            parse(r#"{"kernel": "/k", "nets": [{"tap": "t", "mac": "01:00:00:00:00:00"}]}"#)
                .unwrap_err();
        assert_eq!(bad_mac.field(), Some("nets[0].mac"), "{bad_mac}");
        assert!(bad_mac.to_string().contains("multicast"), "{bad_mac}");

        let missing = parse(r#"{"initrd": "/i"}"#).unwrap_err();
        assert!(missing.to_string().contains("kernel"), "{missing}");

        let trailing = parse(r#"{"kernel": "/k"} x"#).unwrap_err();
        assert!(
            matches!(trailing, ConfigError::Malformed { .. }),
            "{trailing}"
        );
    }

    #[test]
    fn errors_in_a_file_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        std::fs::write(&path, r#"{"kernel": "/k", "cpus": {"cuont": 2}}"#).unwrap();
        let err = VmConfig::read_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config file {}: cpus", path.display())),
            "{err}"
        );
        assert!(err.contains("cuont"), "{err}");
        let missing = VmConfig::read_file(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains("nope.json"), "{missing}");
    }

    fn invalid_field(config: &VmConfig) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn each_unsupported_setting_is_refused_naming_its_field() {
        let kernel = some_file();
        let valid = VmConfig::new(kernel.path());
        valid.validate().unwrap();

        let missing_kernel = VmConfig::new("/nonexistent/vmlinuz");
        assert_eq!(invalid_field(&missing_kernel), "kernel");
        let message = missing_kernel.validate().unwrap_err().to_string();
        assert!(message.contains("/nonexistent/vmlinuz"), "{message}");

        let mut c = valid.clone();
        c.initrd = Some("/nonexistent/initrd".into());
        assert_eq!(invalid_field(&c), "initrd");

        let mut c = valid.clone();
        c.restore = Some(RestoreSource {
            path: "/nonexistent/state".into(),
            offset: 0,
        });
        assert_eq!(invalid_field(&c), "restore.path");
        c.restore = Some(RestoreSource {
            path: kernel.path().to_path_buf(),
            offset: 4096,
        });
        assert_eq!(invalid_field(&c), "restore");
        c.api_socket = Some("/run/api.sock".into());
        c.validate().unwrap();

        let mut c = valid.clone();
        c.start_paused = true;
        assert_eq!(invalid_field(&c), "start_paused");
        c.api_socket = Some("/run/api.sock".into());
        c.validate().unwrap();

        let mut c = valid.clone();
        c.memory.size_mib = 16;
        assert_eq!(invalid_field(&c), "memory.size_mib");

        let mut c = valid.clone();
        c.cpus.count = 0;
        assert_eq!(invalid_field(&c), "cpus.count");

        let mut c = valid.clone();
        c.cpus.count = 3;
        c.cpus.topology = Some(Topology {
            sockets: 1,
            cores: 2,
            threads: 1,
        });
        assert_eq!(invalid_field(&c), "cpus.topology");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("gives 2 vCPUs"));

        let mut c = valid.clone();
        c.cpus.topology = Some(Topology {
            sockets: 0,
            cores: 1,
            threads: 1,
        });
        assert_eq!(invalid_field(&c), "cpus.topology");

        let mut c = valid.clone();
        c.cpus.mode = CpuMode::Custom("Skylake-Client".into());
        assert_eq!(invalid_field(&c), "cpus.mode");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("Skylake-Client"));

        let mut c = valid.clone();
        c.cpus.features.disable = vec!["nosuch".into()];
        assert_eq!(invalid_field(&c), "cpus.features.disable");

        let mut c = valid.clone();
        c.disks = vec![DiskConfig::new("/d.raw"), DiskConfig::new("/d.qcow2")];
        c.disks[1].format = Format::Qcow2;
        c.disks[1].cache = DiskCache::None;
        assert_eq!(invalid_field(&c), "disks[1].cache");

        let mut c = valid.clone();
        let mut disk = DiskConfig::new("/d.raw");
        disk.backing_chain = Some(vec![BackingFile {
            path: "/base".into(),
            format: Format::Raw,
        }]);
        c.disks = vec![disk];
        assert_eq!(invalid_field(&c), "disks[0].backing_chain");

        let mut c = valid.clone();
        let mut disk = DiskConfig::new("/d.qcow2");
        disk.format = Format::Qcow2;
        disk.backing_chain = Some(vec![
            BackingFile {
                path: "/mid.raw".into(),
                format: Format::Raw,
            },
            BackingFile {
                path: "/base.raw".into(),
                format: Format::Raw,
            },
        ]);
        c.disks = vec![disk];
        assert_eq!(invalid_field(&c), "disks[0].backing_chain[0]");

        let mut c = valid.clone();
        c.disks = vec![DiskConfig::new("/a.raw"), DiskConfig::new("/b.raw")];
        c.disks[0].id = Some("vda".into());
        c.disks[1].id = Some("vda".into());
        assert_eq!(invalid_field(&c), "disks[1].id");
        c.disks[1].id = Some(String::new());
        assert_eq!(invalid_field(&c), "disks[1].id");
        c.disks[1].id = None;
        assert!(c.validate().is_ok());

        let mut c = valid.clone();
        c.nets = vec![NetConfig {
            tap: "a-much-too-long-tap-name".into(),
            mac: None,
        }];
        assert_eq!(invalid_field(&c), "nets[0].tap");

        let mut c = valid.clone();
        c.serial = SerialMode::Socket(PathBuf::new());
        assert_eq!(invalid_field(&c), "serial");
    }
}
