//! The domain model: what oxvirt understands of a libvirt `<domain>` definition.
//!
//! Every value here is already normalized: sizes are in KiB, defaults that libvirt fills in
//! are filled in (see `normalize.rs`), so two definitions that libvirt would print the same
//! way compare equal here.
//!
//! Elements a consumer may refuse (an engine, at define or at start) carry the line of the
//! definition text they were read from: a `line` field for the struct's own element and
//! `<child>_line` fields for children without a struct of their own ([`SourceLine`]; not part
//! of the value, so they change neither equality nor the XML).
//!
//! Compatibility rule for other crates: fields and variants are only ever added, never
//! renamed or removed.

use std::collections::BTreeSet;
use std::fmt;

use crate::iotune::IoTune;

pub use uuid::Uuid;

/// The line of the definition text a model element was read from, so that what refuses the
/// element later (an engine, at define or at start) can point at it. No line for an element
/// the normalizer added (a default device, an implicit controller) or a domain built in code.
///
/// A line is where an element came from, not part of the domain's value: every `SourceLine`
/// equals every other and hashes to nothing, so a domain still equals itself re-read from its
/// own `to_xml` (where the lines differ), and `to_xml` never prints one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceLine(Option<u32>);

impl SourceLine {
    /// Not read from text: added by the normalizer, or built in code.
    pub const NONE: SourceLine = SourceLine(None);

    pub fn at(line: u32) -> SourceLine {
        SourceLine(Some(line))
    }

    pub fn get(self) -> Option<u32> {
        self.0
    }
}

impl From<Option<u32>> for SourceLine {
    fn from(line: Option<u32>) -> SourceLine {
        SourceLine(line)
    }
}

impl PartialEq for SourceLine {
    fn eq(&self, _other: &SourceLine) -> bool {
        true
    }
}

impl Eq for SourceLine {}

impl std::hash::Hash for SourceLine {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

/// `at line N`, or `(added by default)` for an element not read from the text; messages put
/// it after the element, as the parser does: `<devices/disk/driver> at line 12`.
impl fmt::Display for SourceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "at line {line}"),
            None => f.write_str("(added by default)"),
        }
    }
}

/// The lines of a list of sibling elements kept as a list of values (`<os><boot>`), in the
/// list's order. Like [`SourceLine`], not part of the domain's value: all lists of lines are
/// equal, whatever their lengths.
#[derive(Debug, Clone, Default)]
pub struct SourceLines(pub Vec<SourceLine>);

impl SourceLines {
    /// The line of entry `index`; none for an entry that was not read from text.
    pub fn get(&self, index: usize) -> SourceLine {
        self.0.get(index).copied().unwrap_or_default()
    }
}

impl PartialEq for SourceLines {
    fn eq(&self, _other: &SourceLines) -> bool {
        true
    }
}

impl Eq for SourceLines {}

impl std::hash::Hash for SourceLines {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

/// A whole `<domain>` definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `<domain type=...>`.
    pub domain_type: DomainType,
    pub name: String,
    pub uuid: Uuid,
    pub title: Option<String>,
    pub description: Option<String>,
    /// `<metadata>`: other applications' data, kept verbatim and never interpreted (engines
    /// ignore it).
    pub metadata: Option<Metadata>,
    /// `<memory>`, in KiB (the maximum memory at boot).
    pub memory_kib: u64,
    /// `<currentMemory>`, in KiB (the balloon target). Defaults to `memory_kib`.
    pub current_memory_kib: u64,
    /// `<maxMemory slots=...>`: memory hotplug ceiling.
    pub max_memory: Option<MaxMemory>,
    /// `<blkiotune>`: the guest's block I/O weight and per-host-device weights and throttles.
    pub blkiotune: Option<BlkioTune>,
    /// `<memtune>`: limits on the host memory the guest's engine process may use.
    pub memtune: Option<MemTune>,
    pub memory_backing: Option<MemoryBacking>,
    pub vcpu: Vcpu,
    /// `<iothreads>` and `<iothreadids>`: the guest's IOThreads.
    pub iothreads: IoThreads,
    pub cputune: Option<CpuTune>,
    /// `<numatune>`: where on the host's NUMA nodes guest memory goes.
    pub numatune: Option<NumaTune>,
    /// `<sysinfo type='smbios'>`: SMBIOS strings (see sysinfo.rs).
    pub sysinfo: Option<Sysinfo>,
    pub os: Os,
    pub features: Features,
    pub cpu: Option<Cpu>,
    pub clock: Clock,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
    /// `<pm>`: whether the guest may suspend to RAM / to disk (ACPI S3 / S4).
    pub pm: Option<Pm>,
    pub devices: Devices,
    /// `<oxvirt:engine name=...>`: which engine runs the domain (QEMU unless asked otherwise).
    pub engine: Engine,
    /// Lines of `<domain>` and of its children that have no struct of their own (see
    /// [`SourceLine`]).
    pub line: SourceLine,
    pub memory_line: SourceLine,
    pub current_memory_line: SourceLine,
    pub iothreads_line: SourceLine,
    pub iothreadids_line: SourceLine,
    pub on_poweroff_line: SourceLine,
    pub on_reboot_line: SourceLine,
    pub on_crash_line: SourceLine,
}

/// The XML namespace of oxvirt's own extensions to the libvirt domain format, used as libvirt uses
/// `xmlns:qemu` for QEMU-specific ones: `<domain xmlns:oxvirt='urn:oxvirt:domain:1.0'>`.
pub const OXVIRT_NAMESPACE: &str = "urn:oxvirt:domain:1.0";

/// The engine that runs a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    /// `qemu-system-x86_64`, driven over QMP: full PCs (firmware, ISO installs, VNC).
    #[default]
    Qemu,
    /// `oxvirt-vmm`, oxvirt's own VMM: Linux guests booted directly from a kernel, on hardware KVM.
    Native,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Qemu => "qemu",
            Engine::Native => "native",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainType {
    Kvm,
    Qemu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxMemory {
    pub kib: u64,
    /// DIMM slots; 0 when not given (virtio-mem needs none).
    pub slots: u32,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryBacking {
    pub hugepages: Option<Hugepages>,
    /// `<nosharepages/>`: opt out of KSM.
    pub nosharepages: bool,
    /// `<locked/>`: guest memory locked in host RAM (never swapped).
    pub locked: bool,
    /// `<source type=>`: where guest RAM comes from.
    pub source: Option<MemorySource>,
    /// `<access mode=>`: whether the RAM is shared with other processes (vhost-user needs it).
    pub access: Option<MemoryAccess>,
    /// `<allocation mode=>`.
    pub allocation: Option<MemoryAllocation>,
    /// `<allocation threads=>`: threads that preallocate.
    pub allocation_threads: Option<u32>,
    /// `<discard/>`: drop a file backing's contents when the guest stops.
    pub discard: bool,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

impl MemoryBacking {
    /// Says nothing libvirt would print (it then drops `<memoryBacking>`).
    pub fn is_empty(&self) -> bool {
        self.hugepages.is_none()
            && !self.nosharepages
            && !self.locked
            && self.source.is_none()
            && self.access.is_none()
            && self.allocation.is_none()
            && self.allocation_threads.is_none()
            && !self.discard
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemorySource {
    File,
    Anonymous,
    Memfd,
}

/// `<memoryBacking><access mode=>` and a NUMA cell's `memAccess=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryAccess {
    Shared,
    Private,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryAllocation {
    Immediate,
    Ondemand,
}

/// `<hugepages>`; `page_sizes_kib` empty means "the host's default huge page size".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hugepages {
    pub page_sizes_kib: Vec<u64>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<vcpu placement= current= cpuset=>N</vcpu>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    pub placement: VcpuPlacement,
    /// Maximum vCPU count (the element's text).
    pub max: u32,
    /// vCPUs online at boot; `None` means all of `max`.
    pub current: Option<u32>,
    pub cpuset: Option<CpuSet>,
    /// `<vcpus>`: each vCPU's state, by id (empty: the element is absent, and the first
    /// `current` vCPUs are the online ones). libvirt prints it once vCPUs were hot-plugged.
    pub slots: Vec<VcpuSlot>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// One `<vcpus><vcpu id enabled hotpluggable order>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuSlot {
    pub id: u32,
    pub enabled: bool,
    pub hotpluggable: Option<bool>,
    /// The order vCPUs came online in (1 first); `None` for offline ones.
    pub order: Option<u32>,
}

impl Vcpu {
    /// vCPUs online at boot.
    pub fn online(&self) -> u32 {
        self.current.unwrap_or(self.max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuPlacement {
    Static,
    Auto,
}

/// A set of host CPU ids, as written `1-4,^3,8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CpuSet(pub BTreeSet<u32>);

impl CpuSet {
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Formats as libvirt does: ascending runs, `a-b` for runs longer than one.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end.wrapping_add(1))) && end != u32::MAX {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// `<blkiotune>`: the guest's share of block I/O (its cgroup's blkio/io controller). A value
/// of 0 in the definition is libvirt's "not set": kept as `None`, not written back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioTune {
    /// `<weight>`: the guest's overall I/O weight (10..1000).
    pub weight: Option<u32>,
    /// `<device>`: settings for one host block device, in the definition's order; a device
    /// with nothing set is dropped (libvirt does not print it).
    pub devices: Vec<BlkioDevice>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// One `<blkiotune><device>`: a host block device by path and what the guest may do with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioDevice {
    /// `<path>`: an absolute path to a host block device (checked when the guest starts).
    pub path: String,
    /// `<weight>`: the guest's I/O weight on this device (10..1000).
    pub weight: Option<u32>,
    pub read_iops_sec: Option<u32>,
    pub write_iops_sec: Option<u32>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
}

impl BlkioDevice {
    /// Nothing set: libvirt neither applies nor prints such a device.
    pub fn is_empty(&self) -> bool {
        self.weight.is_none()
            && self.read_iops_sec.is_none()
            && self.write_iops_sec.is_none()
            && self.read_bytes_sec.is_none()
            && self.write_bytes_sec.is_none()
    }
}

impl BlkioTune {
    /// Nothing set at all: not printed.
    pub fn is_empty(&self) -> bool {
        self.weight.is_none() && self.devices.is_empty()
    }
}

/// libvirt's documented range of a block I/O weight (kernels since 2.6.39).
pub const BLKIO_WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 10..=1000;

/// `<memtune>`: each limit in KiB, absent when unlimited (libvirt's "unlimited" is
/// [`MEMTUNE_UNLIMITED_KIB`] and is never written).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemTune {
    pub hard_limit_kib: Option<u64>,
    pub soft_limit_kib: Option<u64>,
    pub min_guarantee_kib: Option<u64>,
    pub swap_hard_limit_kib: Option<u64>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

impl MemTune {
    /// No limit at all: not printed.
    pub fn is_empty(&self) -> bool {
        self.hard_limit_kib.is_none()
            && self.soft_limit_kib.is_none()
            && self.min_guarantee_kib.is_none()
            && self.swap_hard_limit_kib.is_none()
    }
}

/// libvirt's "no limit" for memory tunables, in KiB (2^53 - 1: the largest integer a double
/// holds exactly).
pub const MEMTUNE_UNLIMITED_KIB: u64 = 9_007_199_254_740_991;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTune {
    pub shares: Option<u64>,
    pub period: Option<u64>,
    pub quota: Option<i64>,
    pub emulator_period: Option<u64>,
    pub emulator_quota: Option<i64>,
    pub vcpupins: Vec<VcpuPin>,
    pub emulatorpin: Option<CpuSet>,
    pub iothreadpins: Vec<IoThreadPin>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuPin {
    pub vcpu: u32,
    pub cpuset: CpuSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoThreadPin {
    pub iothread: u32,
    pub cpuset: CpuSet,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<iothreads>N</iothreads>` and `<iothreadids><iothread id='N'/>...`: the guest's IOThreads
/// (QEMU's `iothread` objects that virtio disks may run their I/O in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IoThreads {
    /// Their ids (each > 0, unique), in libvirt's order: those `<iothreadids>` lists, as it
    /// lists them, then the lowest free ids up to `<iothreads>`'s count (libvirt fills them
    /// in); an IOThread added while defined goes last.
    pub ids: Vec<u32>,
    /// Whether `<iothreadids>` is printed: libvirt prints it unless it filled in every id
    /// itself (then the ids are `1..=count` and the count says it all).
    pub ids_stated: bool,
}

impl IoThreads {
    pub fn contains(&self, id: u32) -> bool {
        self.ids.contains(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether `<iothreadids>` is printed: when stated, and whenever the ids are not what
    /// the count alone reads back as (`1..=count` in order).
    pub fn print_ids(&self) -> bool {
        let filled_in = self.ids.iter().copied().eq(1..=self.ids.len() as u32);
        !self.ids.is_empty() && (self.ids_stated || !filled_in)
    }

    /// The ids as a list for messages (`1, 2, 4`; `none`).
    pub fn list(&self) -> String {
        if self.ids.is_empty() {
            return "none".to_string();
        }
        self.ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `<cpu>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    pub mode: CpuMode,
    pub match_: Option<CpuMatch>,
    pub check: Option<CpuCheck>,
    pub migratable: Option<bool>,
    pub model: Option<CpuModel>,
    pub vendor: Option<String>,
    pub topology: Option<CpuTopology>,
    pub features: Vec<CpuFeature>,
    /// `<numa><cell>`: the guest's NUMA nodes, in id order (cell `i` has id `i`); empty: none.
    pub numa: Vec<NumaCell>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
    pub vendor_line: SourceLine,
}

/// `<cpu><numa><cell id= cpus= memory= memAccess= discard=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaCell {
    /// The guest's vCPUs on this node; none for a memory-only node.
    pub cpus: Option<CpuSet>,
    pub memory_kib: u64,
    /// Overrides `<memoryBacking><access>` for this node.
    pub mem_access: Option<MemoryAccess>,
    /// Overrides `<memoryBacking><discard>` for this node.
    pub discard: Option<bool>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<numatune>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NumaTune {
    /// `<memory>`: the policy for all guest memory.
    pub memory: Option<NumaMemory>,
    /// `<memnode>`: per guest NUMA cell policies, by cell id.
    pub memnodes: Vec<MemNode>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<numatune><memory mode= placement= nodeset=>`: `nodeset` is set exactly when the
/// placement is static (libvirt drops a nodeset given with `placement='auto'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaMemory {
    pub mode: NumaMode,
    pub placement: VcpuPlacement,
    pub nodeset: Option<CpuSet>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<numatune><memnode cellid= mode= nodeset=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemNode {
    pub cellid: u32,
    pub mode: NumaMode,
    pub nodeset: CpuSet,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumaMode {
    Strict,
    Preferred,
    Interleave,
    Restrictive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuMode {
    Custom,
    HostModel,
    HostPassthrough,
    Maximum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuMatch {
    Minimum,
    Exact,
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuCheck {
    None,
    Partial,
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuModel {
    pub name: String,
    pub fallback: Option<CpuFallback>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuFallback {
    Allow,
    Forbid,
}

/// `<topology>`; absent counts are 1 (libvirt prints dies and clusters as 1 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: u32,
    pub dies: u32,
    pub clusters: u32,
    pub cores: u32,
    pub threads: u32,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

impl CpuTopology {
    /// Total vCPU slots the topology describes (`None` on overflow).
    pub fn total(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.dies)?
            .checked_mul(self.clusters)?
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    pub policy: FeaturePolicy,
    pub name: String,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeaturePolicy {
    Force,
    Require,
    Optional,
    Disable,
    Forbid,
}

/// `<sysinfo type='smbios'>`: the `<system>` table's entries (name, value) in libvirt's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sysinfo {
    pub system: Vec<(String, String)>,
    pub line: SourceLine,
}

/// `<os><smbios mode=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmbiosMode {
    /// QEMU's own strings (the default).
    Emulate,
    /// The host's strings.
    Host,
    /// The strings of `<sysinfo>`.
    Sysinfo,
}

/// `<os>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Os {
    /// `<os firmware=...>`: automatic firmware selection.
    pub firmware: Option<Firmware>,
    /// `<type arch=...>`; normalized to `x86_64` when absent.
    pub arch: String,
    /// `<type machine=...>`; normalized to `pc` when absent.
    pub machine: String,
    pub loader: Option<Loader>,
    pub nvram: Option<Nvram>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// `<boot dev=...>` in order. libvirt adds `hd` when there is neither a boot element,
    /// a kernel, nor any per-device `<boot order>`.
    pub boot: Vec<BootDevice>,
    pub bootmenu: Option<BootMenu>,
    /// `<bios rebootTimeout=...>`, milliseconds; -1 disables rebooting.
    pub bios_reboot_timeout: Option<i32>,
    /// `<smbios mode=...>`: where the guest's SMBIOS strings come from.
    pub smbios: Option<SmbiosMode>,
    pub smbios_line: SourceLine,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
    pub type_line: SourceLine,
    pub kernel_line: SourceLine,
    pub initrd_line: SourceLine,
    pub cmdline_line: SourceLine,
    /// One per entry of `boot`.
    pub boot_lines: SourceLines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    Bios,
    Efi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Hd,
    Cdrom,
    Network,
    Fd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootMenu {
    pub enable: bool,
    /// Milliseconds.
    pub timeout: Option<u32>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    pub path: Option<String>,
    pub readonly: Option<bool>,
    pub secure: Option<bool>,
    pub loader_type: Option<LoaderType>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoaderType {
    Rom,
    Pflash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvram {
    pub path: Option<String>,
    pub template: Option<String>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    Destroy,
    Restart,
    Preserve,
    RenameRestart,
    CoredumpDestroy,
    CoredumpRestart,
}

/// `<features>`; each flag is the presence of the empty element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub acpi: bool,
    pub apic: bool,
    pub pae: bool,
    /// `<vmport state='on|off'/>`: VMware's I/O port (virt-install turns it off).
    pub vmport: Option<bool>,
    pub vmport_line: SourceLine,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<pm>`: `<suspend-to-mem enabled=>` and `<suspend-to-disk enabled=>`; `None` when the
/// element is absent (the hypervisor's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pm {
    pub suspend_to_mem: Option<bool>,
    pub suspend_to_disk: Option<bool>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<metadata>`, as written: namespace declarations printed on `<metadata>` itself and its
/// children (each in its own namespace). See `metadata.rs` for what libvirt keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub namespaces: Vec<XmlNamespace>,
    pub children: Vec<XmlElement>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// A namespace declaration: `xmlns:prefix='uri'`, or `xmlns='uri'` without a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XmlNamespace {
    pub prefix: Option<String>,
    pub uri: String,
}

/// An element of another application's XML, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XmlElement {
    /// The name as written, with its prefix (`libosinfo:os`).
    pub name: String,
    /// Namespace declarations written on this element.
    pub namespaces: Vec<XmlNamespace>,
    pub attributes: Vec<XmlAttribute>,
    pub children: Vec<XmlNode>,
}

/// An attribute, named as written (`r:attr`), with its value unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XmlAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XmlNode {
    Element(XmlElement),
    Text(String),
    Comment(String),
    ProcessingInstruction {
        target: String,
        value: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub offset: ClockOffset,
    pub timers: Vec<Timer>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockOffset {
    Utc,
    Localtime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub name: TimerName,
    pub present: Option<bool>,
    pub tickpolicy: Option<TickPolicy>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerName {
    Platform,
    Pit,
    Rtc,
    Hpet,
    Tsc,
    Kvmclock,
    HypervClock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickPolicy {
    Delay,
    Catchup,
    Merge,
    Discard,
}

/// `<devices>`. Devices are grouped by kind, in the order libvirt prints them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    pub emulator: Option<String>,
    pub disks: Vec<Disk>,
    pub controllers: Vec<Controller>,
    pub interfaces: Vec<Interface>,
    pub serials: Vec<CharDevice>,
    pub consoles: Vec<CharDevice>,
    pub inputs: Vec<Input>,
    pub graphics: Vec<Graphics>,
    pub audios: Vec<Audio>,
    pub videos: Vec<Video>,
    pub memballoon: Option<MemBalloon>,
    pub rngs: Vec<Rng>,
    /// `<hostdev>`: host PCI and USB devices given to the guest.
    pub hostdevs: Vec<HostDev>,
    /// `<channel>`: guest agent and SPICE agent ports on a virtio-serial controller.
    pub channels: Vec<Channel>,
    /// `<sound model=>`.
    pub sounds: Vec<Sound>,
    /// `<redirdev bus='usb' type='spicevmc'>`: USB redirection from a SPICE client.
    pub redirdevs: Vec<RedirDev>,
}

/// `<channel type=>`: a virtio-serial port the guest sees by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub source: ChannelSource,
    /// `<target type='virtio' name=>` (only virtio channels are modelled).
    pub target_name: String,
    /// A `virtio-serial` address (assigned by normalization as libvirt does).
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSource {
    /// `type='unix'`, `<source mode='bind' path=>`; a bind socket without a path is placed by
    /// the engine at start (libvirt: under its channel directory), and printed without source.
    Unix {
        mode: UnixMode,
        path: Option<String>,
    },
    /// `type='pty'`.
    Pty,
    /// `type='spicevmc'`: the SPICE agent channel, carried by the SPICE server.
    SpiceVmc,
}

/// `<redirdev bus='usb' type='spicevmc'>` (the only kind modelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirDev {
    /// A USB address, kept when given (libvirt assigns one; not assigned here, as for
    /// other USB devices).
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// A guest device address (`<address type=...>`), kept so definitions round-trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Pci(PciAddress),
    Drive(DriveAddress),
    Usb(UsbAddress),
    VirtioSerial(VirtioSerialAddress),
}

impl Address {
    /// The line of the `<address>` element (see [`SourceLine`]).
    pub fn line(&self) -> SourceLine {
        match self {
            Address::Pci(a) => a.line,
            Address::Drive(a) => a.line,
            Address::Usb(a) => a.line,
            Address::VirtioSerial(a) => a.line,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    pub multifunction: Option<bool>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DriveAddress {
    pub controller: u32,
    pub bus: u32,
    pub target: u32,
    pub unit: u32,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UsbAddress {
    pub bus: u32,
    /// Dotted port path, e.g. `1.2`.
    pub port: Option<String>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VirtioSerialAddress {
    pub controller: u32,
    pub bus: u32,
    pub port: u32,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<hostdev mode='subsystem' type='pci|usb' managed>`: a host device passed through to the
/// guest (VFIO for PCI, QEMU's usb-host for USB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDev {
    pub source: HostDevSource,
    /// `managed='yes'`: oxvirtd binds a PCI device to vfio-pci at start and gives it back to
    /// its host driver at stop; `no` (libvirt's default): it must already be bound.
    pub managed: bool,
    /// `<driver name='vfio'/>` (PCI; VFIO is the only backend, as in current libvirt).
    pub driver_vfio: bool,
    pub boot_order: Option<u32>,
    /// `<rom bar='on|off'/>` (PCI).
    pub rom_bar: Option<bool>,
    /// Where the device appears in the guest.
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostDevSource {
    /// `<source><address domain bus slot function/></source>`: the host PCI function.
    Pci {
        domain: u16,
        bus: u8,
        slot: u8,
        function: u8,
    },
    /// `<source startupPolicy><vendor id/><product id/><address bus device/></source>`: the
    /// host USB device by its ids, its place, or both.
    Usb {
        vendor: Option<u16>,
        product: Option<u16>,
        bus: Option<u32>,
        device: Option<u32>,
        /// `startupPolicy='optional'`: a missing device is left out at start, not an error.
        optional: bool,
    },
}

impl HostDevSource {
    /// The host PCI address in sysfs form (`0000:06:02.0`), for a PCI source.
    pub fn pci_name(&self) -> Option<String> {
        match self {
            HostDevSource::Pci {
                domain,
                bus,
                slot,
                function,
            } => Some(format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}")),
            HostDevSource::Usb { .. } => None,
        }
    }
}

/// `<disk>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub disk_type: DiskType,
    pub device: DiskDevice,
    pub driver: DiskDriver,
    /// `<source file=>` (type file) or `<source dev=>` (type block); `None` for a volume
    /// disk and for an empty cdrom tray.
    pub source: Option<String>,
    /// `<source pool= volume=>` (type volume); `None` for the other types and for an empty
    /// cdrom tray. The daemon resolves it to the volume's file when the domain starts.
    pub volume: Option<DiskVolume>,
    /// `<source protocol= name=>` with its hosts (type network); `None` for the other types.
    pub network: Option<NetworkSource>,
    /// `<auth>`: the credentials of a network disk, with a reference to a secret (never the
    /// secret's value, which the daemon's secret store holds).
    pub auth: Option<DiskAuth>,
    pub target: DiskTarget,
    /// `<iotune>`: the disk's I/O limits; `None` when it has none (libvirt then writes no
    /// element, also for an `<iotune>` without any limit or group).
    pub iotune: Option<IoTune>,
    pub readonly: bool,
    pub shareable: bool,
    pub serial: Option<String>,
    pub boot_order: Option<u32>,
    pub address: Option<Address>,
    /// The images below `source`, nearest first, as the host found them when the domain
    /// started (libvirt's live `<backingStore>` chain): read from qcow2 headers with their
    /// stated formats, never probed from contents. Not part of the definition XML: parsing
    /// leaves it empty, and empty means the engine opens no backing file at all.
    pub backing_chain: Vec<BackingLayer>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
    /// `<source>` (of any disk type).
    pub source_line: SourceLine,
    pub serial_line: SourceLine,
    pub shareable_line: SourceLine,
    pub iotune_line: SourceLine,
}

/// One image of a disk's backing chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackingLayer {
    pub path: String,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskType {
    File,
    Block,
    /// A volume of a storage pool, named by `<source pool= volume=>`.
    Volume,
    /// An image served over the network (`<source protocol=>`): NBD, iSCSI, RBD, HTTP(S),
    /// FTP(S), Gluster, opened by QEMU's own block drivers.
    Network,
}

/// `<source protocol= name= query=>` of a network disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkSource {
    pub protocol: NetworkProtocol,
    /// The export (nbd), `IQN/LUN` (iscsi), `pool/image` (rbd), path (http, ftp) or
    /// `volume/path` (gluster). Required except for nbd, whose default export is unnamed.
    pub name: Option<String>,
    /// `query=`: the URL's query string (http, https, ftp, ftps).
    pub query: Option<String>,
    pub hosts: Vec<NetworkHost>,
    /// `<ssl verify='yes|no'/>` (https, ftps).
    pub ssl_verify: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkProtocol {
    Nbd,
    Iscsi,
    Rbd,
    Http,
    Https,
    Ftp,
    Ftps,
    Gluster,
}

impl NetworkProtocol {
    /// The port libvirt fills in for a TCP host that names none; `None` where the protocol
    /// has no fixed port (rbd: the monitors' own configuration decides).
    pub fn default_port(self) -> Option<u16> {
        match self {
            NetworkProtocol::Nbd => Some(10809),
            NetworkProtocol::Iscsi => Some(3260),
            NetworkProtocol::Rbd => None,
            NetworkProtocol::Http => Some(80),
            NetworkProtocol::Https => Some(443),
            NetworkProtocol::Ftp => Some(21),
            NetworkProtocol::Ftps => Some(990),
            NetworkProtocol::Gluster => Some(24007),
        }
    }
}

/// `<host name port/>` (TCP) or `<host transport='unix' socket/>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetworkHost {
    Tcp { name: String, port: Option<u16> },
    Unix { socket: String },
}

/// `<auth username><secret type uuid|usage/></auth>`, under `<disk>` or under `<source>`:
/// libvirt prints it back where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskAuth {
    pub username: String,
    pub secret_type: SecretUsageType,
    pub secret: SecretLookup,
    /// Written under `<disk>` (libvirt's older place) rather than under `<source>`.
    pub under_disk: bool,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// The kinds of secret a disk's `<auth>` can name (`<secret type=>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretUsageType {
    Iscsi,
    Ceph,
}

/// How `<auth><secret>` names its secret: by UUID, or by the secret's usage name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretLookup {
    Uuid(Uuid),
    Usage(String),
}

/// A storage volume a disk refers to by name: `<source pool='P' volume='V'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskVolume {
    pub pool: String,
    pub volume: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

/// `<driver name='qemu' ...>`; `name` is always `qemu`, so it is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiskDriver {
    pub format: DiskFormat,
    /// Whether the definition states the format (`<driver type=>`). libvirt fills in `raw`
    /// for file and block disks when it parses them, so this is `false` only for a volume
    /// disk without `type=`: its format is the volume's, found when the domain starts (and
    /// `format` is then a placeholder).
    pub format_stated: bool,
    pub cache: Option<DiskCache>,
    pub io: Option<DiskIo>,
    pub discard: Option<DiskDiscard>,
    pub detect_zeroes: Option<DetectZeroes>,
    pub iothread: Option<u32>,
    /// `error_policy=`: what a write error does (libvirt also applies it to reads when
    /// `rerror_policy` is absent, except `enospace`).
    pub error_policy: Option<DiskErrorPolicy>,
    /// `rerror_policy=`: what a read error does (never `enospace`).
    pub rerror_policy: Option<DiskErrorPolicy>,
    /// `copy_on_read=on|off`.
    pub copy_on_read: Option<bool>,
    /// `queues=`: virtio-blk request queues (0, libvirt's "unset", is `None`).
    pub queues: Option<u32>,
    /// `queue_size=`: virtio-blk virtqueue size (0 is `None`).
    pub queue_size: Option<u32>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

impl Default for DiskDriver {
    fn default() -> Self {
        DiskDriver {
            format: DiskFormat::Raw,
            format_stated: true,
            cache: None,
            io: None,
            discard: None,
            detect_zeroes: None,
            iothread: None,
            error_policy: None,
            rerror_policy: None,
            copy_on_read: None,
            queues: None,
            queue_size: None,
            line: SourceLine::NONE,
        }
    }
}

/// `<driver error_policy= rerror_policy=>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskErrorPolicy {
    Stop,
    Report,
    Ignore,
    /// Stop on "no space left", report other errors (write errors only).
    Enospace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskCache {
    None,
    Writeback,
    Writethrough,
    Directsync,
    Unsafe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskIo {
    Native,
    Threads,
    IoUring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskDiscard {
    Unmap,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectZeroes {
    Off,
    On,
    Unmap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTarget {
    pub dev: String,
    pub bus: DiskBus,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
    Ide,
    Usb,
    Fdc,
}

/// `<controller type= index= model=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub controller_type: ControllerType,
    pub index: u32,
    /// libvirt's model name (`piix3-uhci`, `pci-root`, `virtio-scsi`, ...), kept as text
    /// because the valid set depends on the controller type.
    pub model: Option<String>,
    /// `<driver queues=>` (virtio-scsi).
    pub driver_queues: Option<u32>,
    pub address: Option<Address>,
    /// `ports=` (USB controllers): how many ports the controller has.
    pub ports: Option<u32>,
    /// `<model name=>` (PCI controllers): the QEMU device that implements the controller
    /// (`pcie-root-port`, `pci-bridge`, `i82801b11-bridge`, `pcie-pci-bridge`, `ioh3420`); the
    /// normalizer fills in libvirt's default for the model.
    pub model_name: Option<String>,
    /// `<target chassisNr= chassis= port=>` (PCI controllers).
    pub target: Option<ControllerTarget>,
    /// `<master startport=>` (USB companion controllers `ich9-uhci1`..`3` of an `ich9-ehci1`).
    pub master_startport: Option<u32>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
    pub driver_line: SourceLine,
    pub model_name_line: SourceLine,
    pub master_line: SourceLine,
}

impl Controller {
    /// A controller added by oxvirt, not read from a definition (no line): the ones the
    /// normalizer adds, and one the daemon adds for a hot-plugged disk.
    pub fn new(kind: ControllerType, index: u32, model: Option<&str>) -> Controller {
        Controller {
            controller_type: kind,
            index,
            model: model.map(str::to_string),
            driver_queues: None,
            address: None,
            ports: None,
            model_name: None,
            target: None,
            master_startport: None,
            line: SourceLine::NONE,
            driver_line: SourceLine::NONE,
            model_name_line: SourceLine::NONE,
            master_line: SourceLine::NONE,
        }
    }
}

/// `<controller type='pci'><target>`: the numbers a PCI bridge or root port shows the guest.
/// The normalizer fills them in as libvirt does (`chassisNr` of a pci-bridge, `chassis` and
/// `port` of a pcie-root-port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControllerTarget {
    /// `chassisNr=` (pci-bridge).
    pub chassis_nr: Option<u32>,
    /// `chassis=` (pcie-root-port).
    pub chassis: Option<u32>,
    /// `port=` (pcie-root-port).
    pub port: Option<u32>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControllerType {
    Ide,
    Fdc,
    Scsi,
    Sata,
    Usb,
    Pci,
    VirtioSerial,
}

/// `<interface>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub interface_type: InterfaceType,
    /// `<mac address=>`; generated (`52:54:00:..`) when absent.
    pub mac: Option<MacAddr>,
    pub source: InterfaceSource,
    /// `<model type=>`: `virtio`, `e1000`, `rtl8139`, ... (kept as text); normalized to
    /// libvirt's default `rtl8139` when absent.
    pub model: Option<String>,
    /// `<driver name=>`: `qemu` or `vhost`.
    pub driver_name: Option<InterfaceDriverName>,
    pub driver_queues: Option<u32>,
    /// `<target dev=>`: the host tap device name.
    pub target_dev: Option<String>,
    /// `<target managed=>`: `Some(false)` (ethernet only) means `target_dev` is a TAP the
    /// host already has, which nobody creates or deletes for the guest.
    pub target_managed: Option<bool>,
    pub mtu: Option<u32>,
    /// `<link state=>`: `Some(false)` is `down`.
    pub link_up: Option<bool>,
    pub boot_order: Option<u32>,
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
    pub model_line: SourceLine,
    pub driver_line: SourceLine,
    pub target_line: SourceLine,
    pub mtu_line: SourceLine,
    pub link_line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceType {
    Network,
    Bridge,
    User,
    /// A TAP device of its own, attached to nothing (or an existing one, `managed='no'`).
    Ethernet,
    /// A macvtap device on a host interface (`<source dev mode>`).
    Direct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// `type='user'`: no source.
    None,
    Network(String),
    Bridge(String),
    /// `type='direct'`: the host interface and the macvtap mode (libvirt's default `vepa`).
    Direct {
        dev: String,
        mode: DirectMode,
    },
}

/// `<interface type='direct'><source mode=>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectMode {
    Vepa,
    Bridge,
    Private,
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceDriverName {
    Qemu,
    Vhost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// `<serial>` or `<console>`.
///
/// After normalization, when there is a serial port, `consoles[0]` has target type
/// `serial` and is the *same device* as `serials[0]` (libvirt's console alias: same
/// source, printed twice); engines must not create it a second time. Other consoles are
/// virtio consoles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharDevice {
    pub source: CharSource,
    pub target: CharTarget,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharSource {
    Pty,
    File {
        path: String,
        append: Option<bool>,
    },
    Unix {
        path: String,
        mode: UnixMode,
    },
    /// `type='tcp'`: `<source mode= host= service=>` (mode `bind` listens) and
    /// `<protocol type=>` (libvirt's default `raw`, always printed).
    Tcp {
        mode: UnixMode,
        host: String,
        /// A port number or service name, as libvirt keeps it.
        service: String,
        protocol: TcpProtocol,
    },
    /// `type='udp'`: datagrams go to the `connect` address and come in on the `bind` one.
    Udp {
        bind_host: Option<String>,
        bind_service: Option<String>,
        connect_host: Option<String>,
        connect_service: String,
    },
    /// `type='null'`: output discarded, no input.
    Null,
    /// `type='stdio'`: the emulator's standard input and output.
    Stdio,
    /// `type='vc'`: a virtual console of the emulator's display.
    Vc,
}

/// `<serial type='tcp'><protocol type=>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpProtocol {
    Raw,
    Telnet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixMode {
    Bind,
    Connect,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharTarget {
    /// `<target type=>`: `isa-serial`, `serial`, `virtio`, ... (kept as text).
    pub target_type: Option<String>,
    pub port: Option<u32>,
    /// `<target><model name=>` (e.g. `isa-serial`).
    pub model: Option<String>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

/// `<input type= bus=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub input_type: InputType,
    pub bus: InputBus,
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    Mouse,
    Keyboard,
    Tablet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputBus {
    Ps2,
    Usb,
    Virtio,
}

/// `<graphics type='vnc'>` or `<graphics type='spice'>` (then `spice` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graphics {
    pub listen: VncListen,
    /// `port=`: fixed TCP port; `None` with `autoport` (and for socket displays).
    pub port: Option<u16>,
    pub autoport: bool,
    pub passwd: Option<String>,
    /// SPICE: what only a SPICE display has; `None` for VNC.
    pub spice: Option<Spice>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncListen {
    /// `listen=` address (or none: QEMU's default).
    Address(Option<String>),
    /// `socket=`: a UNIX socket path.
    Socket(String),
    /// `<listen type='none'/>`: no network listener (SPICE without any port, as libvirt
    /// normalizes it).
    None,
}

/// The SPICE-only part of `<graphics type='spice'>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spice {
    /// `port='-1'` without `autoport='yes'`: libvirt keeps it so and picks a free port at
    /// start, as with autoport.
    pub port_any: bool,
    /// `<image compression=>`.
    pub image_compression: Option<SpiceImageCompression>,
    pub image_line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpiceImageCompression {
    AutoGlz,
    AutoLz,
    Quic,
    Glz,
    Lz,
    Off,
}

/// `<audio id= type=>`: a host audio backend that sound devices play into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub id: u32,
    pub audio_type: AudioType,
    /// `timerPeriod=`, microseconds.
    pub timer_period: Option<u32>,
    /// `serverName=` (pulseaudio).
    pub server_name: Option<String>,
    /// `driver=` (sdl): SDL's own audio driver (`esd`, `alsa`, `arts`, `pulseaudio`).
    pub sdl_driver: Option<String>,
    /// `path=` (file): the WAV file written.
    pub path: Option<String>,
    pub input: Option<AudioStream>,
    pub output: Option<AudioStream>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioType {
    None,
    Alsa,
    Coreaudio,
    Jack,
    Oss,
    Pulseaudio,
    Sdl,
    Spice,
    File,
    Dbus,
}

/// `<audio><input>` or `<output>`: one direction of an audio backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioStream {
    pub mixing_engine: Option<bool>,
    pub fixed_settings: Option<bool>,
    pub voices: Option<u32>,
    /// `bufferLength=`, microseconds.
    pub buffer_length: Option<u32>,
    /// `<settings frequency= channels= format=>` (only with `fixedSettings='yes'`).
    pub settings: Option<AudioSettings>,
    /// `dev=` (alsa, oss).
    pub dev: Option<String>,
    /// `tryPoll=` (oss).
    pub try_poll: Option<bool>,
    /// `name=`, `streamName=`, `latency=` (pulseaudio).
    pub name: Option<String>,
    pub stream_name: Option<String>,
    pub latency: Option<u32>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioSettings {
    pub frequency: Option<u32>,
    pub channels: Option<u32>,
    pub format: Option<AudioFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    U8,
    S8,
    U16,
    S16,
    U32,
    S32,
    F32,
}

/// `<sound model=>`: an emulated sound card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sound {
    pub model: SoundModel,
    /// `<codec type=>` of an HD Audio controller (libvirt reads them for ich6/ich9 only);
    /// none means QEMU's duplex codec.
    pub codecs: Vec<SoundCodec>,
    /// `<audio id=>`: the backend it plays into; none means the first `<audio>`.
    pub audio_id: Option<u32>,
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundModel {
    Sb16,
    Es1370,
    Ac97,
    Ich6,
    Ich9,
    Usb,
    /// The PC speaker and ich7: read and printed; the qemu engine refuses them.
    Pcspk,
    Ich7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoundCodec {
    Duplex,
    Micro,
    Output,
}

/// `<video><model type= vram= heads= primary=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    pub model: VideoModel,
    /// `ram=` (qxl only), KiB.
    pub ram_kib: Option<u64>,
    pub vram_kib: Option<u64>,
    /// `vgamem=` (qxl only), KiB.
    pub vgamem_kib: Option<u64>,
    pub heads: Option<u32>,
    pub primary: bool,
    pub address: Option<Address>,
    /// Lines of `<video>` and of its `<model>`, which holds the other fields (see
    /// [`SourceLine`]).
    pub line: SourceLine,
    pub model_line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoModel {
    Vga,
    Cirrus,
    Virtio,
    Bochs,
    Ramfb,
    None,
    /// QXL, the paravirtual display card of SPICE.
    Qxl,
}

/// `<memballoon model= autodeflate=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBalloon {
    pub model: MemBalloonModel,
    pub autodeflate: Option<bool>,
    /// `<stats period=>`, seconds.
    pub stats_period: Option<u32>,
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemBalloonModel {
    Virtio,
    None,
}

/// `<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`.
/// The backend path defaults to `/dev/random` (libvirt's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    /// Path of the host entropy source.
    pub backend_random: String,
    pub address: Option<Address>,
    /// Where the element was in the definition text (not part of the value; see [`SourceLine`]).
    pub line: SourceLine,
}
