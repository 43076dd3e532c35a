//! Guest CPUID: the CPU mode (host-passthrough, host-model, or a named model), feature overrides, the
//! hypervisor bit, and per-vCPU topology (APIC ids, core/thread counts).
//!
//! Named models list their features with QEMU's names and the same signatures (vendor, family, model,
//! stepping, levels, model id) as QEMU's definitions; the tables are written here. A named model is exact:
//! every feature register we model is rebuilt from the list, and a listed feature that KVM cannot provide
//! is an error (drop it with `--cpu-features -name`).

use std::collections::BTreeSet;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

pub use crate::protocol::{CpuFeatures, CpuMode, Topology};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One CPUID feature bit.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// QEMU's / libvirt's name, used on our command line.
    pub name: &'static str,
    /// The flag Linux shows in /proc/cpuinfo, when it shows this bit as such.
    pub linux: Option<&'static str>,
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
}

macro_rules! f {
    ($name:literal, $linux:expr, $leaf:expr, $sub:expr, $reg:ident, $bit:expr) => {
        Feature {
            name: $name,
            linux: $linux,
            leaf: $leaf,
            subleaf: $sub,
            reg: Reg::$reg,
            bit: $bit,
        }
    };
}

const L1: u32 = 1;
const L7: u32 = 7;
const X1: u32 = 0x8000_0001;

/// The feature bits we know by name. Registers listed in [`MODEL_REGISTERS`] are rebuilt entirely from these
/// for named models.
pub const FEATURES: &[Feature] = &[
    // CPUID.1:EDX
    f!("fpu", Some("fpu"), L1, 0, Edx, 0),
    f!("vme", Some("vme"), L1, 0, Edx, 1),
    f!("de", Some("de"), L1, 0, Edx, 2),
    f!("pse", Some("pse"), L1, 0, Edx, 3),
    f!("tsc", Some("tsc"), L1, 0, Edx, 4),
    f!("msr", Some("msr"), L1, 0, Edx, 5),
    f!("pae", Some("pae"), L1, 0, Edx, 6),
    f!("mce", Some("mce"), L1, 0, Edx, 7),
    f!("cx8", Some("cx8"), L1, 0, Edx, 8),
    f!("apic", Some("apic"), L1, 0, Edx, 9),
    f!("sep", Some("sep"), L1, 0, Edx, 11),
    f!("mtrr", Some("mtrr"), L1, 0, Edx, 12),
    f!("pge", Some("pge"), L1, 0, Edx, 13),
    f!("mca", Some("mca"), L1, 0, Edx, 14),
    f!("cmov", Some("cmov"), L1, 0, Edx, 15),
    f!("pat", Some("pat"), L1, 0, Edx, 16),
    f!("pse36", Some("pse36"), L1, 0, Edx, 17),
    f!("clflush", Some("clflush"), L1, 0, Edx, 19),
    f!("ds", Some("dts"), L1, 0, Edx, 21),
    f!("acpi", Some("acpi"), L1, 0, Edx, 22),
    f!("mmx", Some("mmx"), L1, 0, Edx, 23),
    f!("fxsr", Some("fxsr"), L1, 0, Edx, 24),
    f!("sse", Some("sse"), L1, 0, Edx, 25),
    f!("sse2", Some("sse2"), L1, 0, Edx, 26),
    f!("ss", Some("ss"), L1, 0, Edx, 27),
    // Set by us from the topology (more than one logical CPU per package), not by the model.
    f!("ht", None, L1, 0, Edx, 28),
    f!("tm", Some("tm"), L1, 0, Edx, 29),
    f!("pbe", Some("pbe"), L1, 0, Edx, 31),
    // CPUID.1:ECX
    f!("pni", Some("pni"), L1, 0, Ecx, 0),
    f!("pclmulqdq", Some("pclmulqdq"), L1, 0, Ecx, 1),
    f!("dtes64", Some("dtes64"), L1, 0, Ecx, 2),
    f!("monitor", Some("monitor"), L1, 0, Ecx, 3),
    f!("ds-cpl", Some("ds_cpl"), L1, 0, Ecx, 4),
    f!("vmx", Some("vmx"), L1, 0, Ecx, 5),
    f!("smx", Some("smx"), L1, 0, Ecx, 6),
    f!("est", Some("est"), L1, 0, Ecx, 7),
    f!("tm2", Some("tm2"), L1, 0, Ecx, 8),
    f!("ssse3", Some("ssse3"), L1, 0, Ecx, 9),
    f!("fma", Some("fma"), L1, 0, Ecx, 12),
    f!("cx16", Some("cx16"), L1, 0, Ecx, 13),
    f!("xtpr", Some("xtpr"), L1, 0, Ecx, 14),
    f!("pdcm", Some("pdcm"), L1, 0, Ecx, 15),
    f!("pcid", Some("pcid"), L1, 0, Ecx, 17),
    f!("dca", Some("dca"), L1, 0, Ecx, 18),
    f!("sse4.1", Some("sse4_1"), L1, 0, Ecx, 19),
    f!("sse4.2", Some("sse4_2"), L1, 0, Ecx, 20),
    f!("x2apic", Some("x2apic"), L1, 0, Ecx, 21),
    f!("movbe", Some("movbe"), L1, 0, Ecx, 22),
    f!("popcnt", Some("popcnt"), L1, 0, Ecx, 23),
    f!("tsc-deadline", Some("tsc_deadline_timer"), L1, 0, Ecx, 24),
    f!("aes", Some("aes"), L1, 0, Ecx, 25),
    f!("xsave", Some("xsave"), L1, 0, Ecx, 26),
    f!("avx", Some("avx"), L1, 0, Ecx, 28),
    f!("f16c", Some("f16c"), L1, 0, Ecx, 29),
    f!("rdrand", Some("rdrand"), L1, 0, Ecx, 30),
    f!("hypervisor", Some("hypervisor"), L1, 0, Ecx, 31),
    // CPUID.6:EAX
    f!("arat", Some("arat"), 6, 0, Eax, 2),
    // CPUID.(7,0):EBX
    f!("fsgsbase", Some("fsgsbase"), L7, 0, Ebx, 0),
    f!("tsc-adjust", Some("tsc_adjust"), L7, 0, Ebx, 1),
    f!("bmi1", Some("bmi1"), L7, 0, Ebx, 3),
    f!("hle", Some("hle"), L7, 0, Ebx, 4),
    f!("avx2", Some("avx2"), L7, 0, Ebx, 5),
    f!("smep", Some("smep"), L7, 0, Ebx, 7),
    f!("bmi2", Some("bmi2"), L7, 0, Ebx, 8),
    f!("erms", Some("erms"), L7, 0, Ebx, 9),
    f!("invpcid", Some("invpcid"), L7, 0, Ebx, 10),
    f!("rtm", Some("rtm"), L7, 0, Ebx, 11),
    f!("mpx", Some("mpx"), L7, 0, Ebx, 14),
    f!("avx512f", Some("avx512f"), L7, 0, Ebx, 16),
    f!("avx512dq", Some("avx512dq"), L7, 0, Ebx, 17),
    f!("rdseed", Some("rdseed"), L7, 0, Ebx, 18),
    f!("adx", Some("adx"), L7, 0, Ebx, 19),
    f!("smap", Some("smap"), L7, 0, Ebx, 20),
    f!("clflushopt", Some("clflushopt"), L7, 0, Ebx, 23),
    f!("clwb", Some("clwb"), L7, 0, Ebx, 24),
    f!("sha-ni", Some("sha_ni"), L7, 0, Ebx, 29),
    // CPUID.(7,0):ECX
    f!("umip", Some("umip"), L7, 0, Ecx, 2),
    f!("pku", Some("pku"), L7, 0, Ecx, 3),
    f!("gfni", Some("gfni"), L7, 0, Ecx, 8),
    f!("vaes", Some("vaes"), L7, 0, Ecx, 9),
    f!("vpclmulqdq", Some("vpclmulqdq"), L7, 0, Ecx, 10),
    f!("rdpid", Some("rdpid"), L7, 0, Ecx, 22),
    // CPUID.(7,0):EDX. Linux does not print the speculation-control bits under these names.
    f!("md-clear", Some("md_clear"), L7, 0, Edx, 10),
    f!("spec-ctrl", None, L7, 0, Edx, 26),
    f!("stibp", None, L7, 0, Edx, 27),
    f!(
        "arch-capabilities",
        Some("arch_capabilities"),
        L7,
        0,
        Edx,
        29
    ),
    f!("ssbd", None, L7, 0, Edx, 31),
    // CPUID.(0xd,1):EAX
    f!("xsaveopt", Some("xsaveopt"), 0xd, 1, Eax, 0),
    f!("xsavec", Some("xsavec"), 0xd, 1, Eax, 1),
    f!("xgetbv1", Some("xgetbv1"), 0xd, 1, Eax, 2),
    f!("xsaves", Some("xsaves"), 0xd, 1, Eax, 3),
    // CPUID.80000001h:ECX
    f!("lahf-lm", Some("lahf_lm"), X1, 0, Ecx, 0),
    f!("cmp-legacy", Some("cmp_legacy"), X1, 0, Ecx, 1),
    f!("svm", Some("svm"), X1, 0, Ecx, 2),
    f!("extapic", Some("extapic"), X1, 0, Ecx, 3),
    f!("cr8legacy", Some("cr8_legacy"), X1, 0, Ecx, 4),
    f!("abm", Some("abm"), X1, 0, Ecx, 5),
    f!("sse4a", Some("sse4a"), X1, 0, Ecx, 6),
    f!("misalignsse", Some("misalignsse"), X1, 0, Ecx, 7),
    // Linux sets 3dnowprefetch itself on AMD CPUs with long mode, so it is not a faithful witness.
    f!("3dnowprefetch", None, X1, 0, Ecx, 8),
    f!("osvw", Some("osvw"), X1, 0, Ecx, 9),
    f!("xop", Some("xop"), X1, 0, Ecx, 11),
    f!("fma4", Some("fma4"), X1, 0, Ecx, 16),
    f!("tbm", Some("tbm"), X1, 0, Ecx, 21),
    f!("topoext", Some("topoext"), X1, 0, Ecx, 22),
    f!("perfctr-core", Some("perfctr_core"), X1, 0, Ecx, 23),
    // CPUID.80000001h:EDX
    f!("syscall", Some("syscall"), X1, 0, Edx, 11),
    f!("nx", Some("nx"), X1, 0, Edx, 20),
    f!("mmxext", Some("mmxext"), X1, 0, Edx, 22),
    f!("fxsr-opt", Some("fxsr_opt"), X1, 0, Edx, 25),
    f!("pdpe1gb", Some("pdpe1gb"), X1, 0, Edx, 26),
    f!("rdtscp", Some("rdtscp"), X1, 0, Edx, 27),
    f!("lm", Some("lm"), X1, 0, Edx, 29),
    f!("3dnowext", Some("3dnowext"), X1, 0, Edx, 30),
    f!("3dnow", Some("3dnow"), X1, 0, Edx, 31),
];

/// Registers a named model defines completely (all bits not in its list are cleared).
pub const MODEL_REGISTERS: &[(u32, u32, Reg)] = &[
    (L1, 0, Reg::Ecx),
    (L1, 0, Reg::Edx),
    (6, 0, Reg::Eax),
    (L7, 0, Reg::Ebx),
    (L7, 0, Reg::Ecx),
    (L7, 0, Reg::Edx),
    (0xd, 1, Reg::Eax),
    (X1, 0, Reg::Ecx),
    (X1, 0, Reg::Edx),
];

pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// A named CPU model.
#[derive(Debug)]
pub struct CpuModel {
    pub name: &'static str,
    pub vendor: &'static str,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    pub level: u32,
    pub xlevel: u32,
    pub model_id: &'static str,
    pub features: &'static [&'static str],
}

macro_rules! with_base {
    ($($extra:literal),* $(,)?) => {
        &[
            "fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca", "cmov",
            "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "syscall", "nx", "lm", "hypervisor",
            $($extra),*
        ]
    };
}

pub const MODELS: &[CpuModel] = &[
    CpuModel {
        name: "qemu64",
        vendor: "AuthenticAMD",
        family: 15,
        model: 107,
        stepping: 1,
        level: 0xd,
        xlevel: 0x8000_000a,
        model_id: "QEMU Virtual CPU version 2.5+",
        features: with_base!("pni", "cx16", "lahf-lm", "svm"),
    },
    CpuModel {
        name: "kvm64",
        vendor: "GenuineIntel",
        family: 15,
        model: 6,
        stepping: 1,
        level: 0xd,
        xlevel: 0x8000_0008,
        model_id: "Common KVM processor",
        features: with_base!("pni", "cx16"),
    },
    CpuModel {
        name: "Haswell-noTSX-IBRS",
        vendor: "GenuineIntel",
        family: 6,
        model: 60,
        stepping: 1,
        level: 0xd,
        xlevel: 0x8000_0008,
        model_id: "Intel Core Processor (Haswell, no TSX, IBRS)",
        features: with_base!(
            "pni",
            "pclmulqdq",
            "ssse3",
            "fma",
            "cx16",
            "pcid",
            "sse4.1",
            "sse4.2",
            "x2apic",
            "movbe",
            "popcnt",
            "tsc-deadline",
            "aes",
            "xsave",
            "avx",
            "f16c",
            "rdrand",
            "arat",
            "fsgsbase",
            "bmi1",
            "avx2",
            "smep",
            "bmi2",
            "erms",
            "invpcid",
            "spec-ctrl",
            "xsaveopt",
            "lahf-lm",
            "abm",
            "rdtscp",
        ),
    },
];

pub fn model(name: &str) -> Option<&'static CpuModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// `--cpu-mode`: `host-passthrough`, `host-model` or `custom:MODEL`.
impl std::str::FromStr for CpuMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host-passthrough" => Ok(CpuMode::HostPassthrough),
            "host-model" => Ok(CpuMode::HostModel),
            _ => match s.strip_prefix("custom:") {
                Some(name) if model(name).is_some() => Ok(CpuMode::Custom(name.to_string())),
                Some(name) => Err(format!(
                    "unknown CPU model {name:?} (known: {})",
                    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                )),
                None => Err(format!(
                    "invalid CPU mode {s:?}: use host-passthrough, host-model or custom:MODEL"
                )),
            },
        }
    }
}

/// `--cpu-features`: `+name` / `-name` overrides, comma-separated.
impl std::str::FromStr for CpuFeatures {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut o = CpuFeatures::default();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let (on, name) = match item.split_at(1) {
                ("+", n) => (true, n),
                ("-", n) => (false, n),
                _ => return Err(format!("CPU feature {item:?} must start with + or -")),
            };
            if feature(name).is_none() {
                return Err(format!("unknown CPU feature {name:?}"));
            }
            if on {
                o.enable.push(name.into())
            } else {
                o.disable.push(name.into())
            }
        }
        Ok(o)
    }
}

/// APIC ids: threads of a core, then cores of a socket, get consecutive ids; each level's field is a power of
/// two wide.
impl Topology {
    fn thread_bits(&self) -> u32 {
        ceil_log2(self.threads)
    }

    fn core_bits(&self) -> u32 {
        ceil_log2(self.cores)
    }

    /// APIC id of vCPU `index` (threads of a core, then cores of a socket, are numbered consecutively).
    pub fn apic_id(&self, index: u32) -> u32 {
        let thread = index % self.threads;
        let core = (index / self.threads) % self.cores;
        let socket = index / (self.threads * self.cores);
        (socket << (self.core_bits() + self.thread_bits())) | (core << self.thread_bits()) | thread
    }
}

/// `--topology`: `sockets=S,cores=C,threads=T`, absent counts 1.
impl std::str::FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut t = Topology {
            sockets: 1,
            cores: 1,
            threads: 1,
        };
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("topology item {kv:?} is not key=value"))?;
            let n: u32 = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("topology {k}={v:?} is not a positive number"))?;
            match k {
                "sockets" => t.sockets = n,
                "cores" => t.cores = n,
                "threads" => t.threads = n,
                _ => {
                    return Err(format!(
                        "unknown topology key {k:?} (sockets, cores, threads)"
                    ))
                }
            }
        }
        Ok(t)
    }
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("KVM on this host cannot provide CPU features {missing} required by {what}")]
    Unsupported { what: String, missing: String },
    #[error("invalid CPUID table: {0}")]
    Table(String),
}

fn reg_mut(e: &mut kvm_cpuid_entry2, r: Reg) -> &mut u32 {
    match r {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

fn reg(e: &kvm_cpuid_entry2, r: Reg) -> u32 {
    match r {
        Reg::Eax => e.eax,
        Reg::Ebx => e.ebx,
        Reg::Ecx => e.ecx,
        Reg::Edx => e.edx,
    }
}

fn find(entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    entries.iter().find(|e| {
        e.function == leaf && (e.index == subleaf || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
    })
}

fn find_mut(
    entries: &mut [kvm_cpuid_entry2],
    leaf: u32,
    subleaf: u32,
) -> Option<&mut kvm_cpuid_entry2> {
    entries.iter_mut().find(|e| {
        e.function == leaf && (e.index == subleaf || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
    })
}

/// Whether `f` is set in `entries`.
pub fn has_feature(entries: &[kvm_cpuid_entry2], f: &Feature) -> bool {
    find(entries, f.leaf, f.subleaf).is_some_and(|e| reg(e, f.reg) & (1 << f.bit) != 0)
}

fn set_feature(entries: &mut Vec<kvm_cpuid_entry2>, f: &Feature, on: bool) {
    if find(entries, f.leaf, f.subleaf).is_none() {
        if !on {
            return;
        }
        let flags = if f.leaf == L7 || f.leaf == 0xd {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        };
        entries.push(kvm_cpuid_entry2 {
            function: f.leaf,
            index: f.subleaf,
            flags,
            ..Default::default()
        });
    }
    if let Some(e) = find_mut(entries, f.leaf, f.subleaf) {
        if on {
            *reg_mut(e, f.reg) |= 1 << f.bit;
        } else {
            *reg_mut(e, f.reg) &= !(1 << f.bit);
        }
    }
}

/// Linux /proc/cpuinfo names of the features set in `entries` (only features Linux reports faithfully).
pub fn linux_flags(entries: &[kvm_cpuid_entry2]) -> BTreeSet<&'static str> {
    FEATURES
        .iter()
        .filter(|f| has_feature(entries, f))
        .filter_map(|f| f.linux)
        .collect()
}

/// All Linux flag names we can vouch for (the universe an exactness check compares on).
pub fn known_linux_flags() -> BTreeSet<&'static str> {
    FEATURES.iter().filter_map(|f| f.linux).collect()
}

/// The CPUID shared by all vCPUs (before per-vCPU topology fix-ups).
pub fn build_cpuid(
    supported: &[kvm_cpuid_entry2],
    mode: &CpuMode,
    overrides: &CpuFeatures,
) -> Result<Vec<kvm_cpuid_entry2>, CpuidError> {
    let mut entries: Vec<kvm_cpuid_entry2> = supported.to_vec();
    // Features the request needs that KVM must support ("hypervisor" is ours to set).
    let mut wanted: Vec<&'static Feature> = Vec::new();
    let what = match mode {
        CpuMode::HostPassthrough => "host-passthrough".to_string(),
        CpuMode::HostModel => {
            // Keep only named features, drop non-migratable invariant TSC.
            for &(leaf, sub, r) in MODEL_REGISTERS {
                if let Some(e) = find_mut(&mut entries, leaf, sub) {
                    let known: u32 = FEATURES
                        .iter()
                        .filter(|f| f.leaf == leaf && f.subleaf == sub && f.reg == r)
                        .fold(0, |m, f| m | (1 << f.bit));
                    *reg_mut(e, r) &= known;
                }
            }
            if let Some(e) = find_mut(&mut entries, 0x8000_0007, 0) {
                e.edx &= !(1 << 8);
            }
            "host-model".to_string()
        }
        CpuMode::Custom(name) => {
            let m = model(name)
                .ok_or_else(|| CpuidError::Table(format!("unknown CPU model {name}")))?;
            apply_model(&mut entries, supported, m)?;
            wanted.extend(m.features.iter().filter_map(|n| feature(n)));
            format!("CPU model {name}")
        }
    };
    for name in &overrides.enable {
        let f = feature(name)
            .ok_or_else(|| CpuidError::Table(format!("unknown CPU feature {name}")))?;
        wanted.push(f);
        set_feature(&mut entries, f, true);
    }
    for name in &overrides.disable {
        if let Some(f) = feature(name) {
            wanted.retain(|w| w.name != f.name);
            set_feature(&mut entries, f, false);
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|f| f.name != "hypervisor" && !has_feature(supported, f))
        .map(|f| f.name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        return Err(CpuidError::Unsupported {
            what,
            missing: missing.join(", "),
        });
    }
    // Always tell the guest it runs on a hypervisor.
    if let Some(f) = feature("hypervisor") {
        set_feature(&mut entries, f, true);
    }
    // Without SVM the SVM leaf must go; the same for XSAVE state when xsave is off.
    if !feature("svm").is_some_and(|f| has_feature(&entries, f)) {
        entries.retain(|e| e.function != 0x8000_000a);
    }
    Ok(entries)
}

fn vendor_regs(vendor: &str) -> (u32, u32, u32) {
    let mut b = [0u8; 12];
    for (d, s) in b.iter_mut().zip(vendor.bytes()) {
        *d = s;
    }
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (w(0), w(4), w(8))
}

fn apply_model(
    entries: &mut Vec<kvm_cpuid_entry2>,
    supported: &[kvm_cpuid_entry2],
    m: &CpuModel,
) -> Result<(), CpuidError> {
    let max_basic = find(supported, 0, 0).map(|e| e.eax).unwrap_or(1);
    let max_ext = find(supported, 0x8000_0000, 0)
        .map(|e| e.eax)
        .unwrap_or(0x8000_0001);
    let level = m.level.min(max_basic);
    let xlevel = m.xlevel.min(max_ext);
    entries.retain(|e| {
        let f = e.function;
        (f <= level)
            || (0x4000_0000..0x8000_0000).contains(&f)
            || (0x8000_0000..=xlevel).contains(&f)
    });
    // Topology leaves we do not model for named CPUs.
    entries.retain(|e| e.function != 0x1f);
    let (ebx, edx, ecx) = vendor_regs(m.vendor);
    for leaf in [0, 0x8000_0000] {
        if let Some(e) = find_mut(entries, leaf, 0) {
            e.ebx = ebx;
            e.ecx = ecx;
            e.edx = edx;
            e.eax = if leaf == 0 { level } else { xlevel };
        }
    }
    if let Some(e) = find_mut(entries, 1, 0) {
        let (fam, ext_fam) = if m.family > 15 {
            (15, m.family - 15)
        } else {
            (m.family, 0)
        };
        e.eax = m.stepping
            | ((m.model & 0xf) << 4)
            | (fam << 8)
            | (((m.model >> 4) & 0xf) << 16)
            | (ext_fam << 20);
    }
    for &(leaf, sub, r) in MODEL_REGISTERS {
        if let Some(e) = find_mut(entries, leaf, sub) {
            *reg_mut(e, r) = 0;
        }
    }
    for name in m.features {
        let f = feature(name).ok_or_else(|| {
            CpuidError::Table(format!("model {} lists unknown feature {name}", m.name))
        })?;
        set_feature(entries, f, true);
    }
    // AMD speculation-control and other extended feature bits of 0x80000008:EBX are not part of any model.
    if let Some(e) = find_mut(entries, 0x8000_0008, 0) {
        e.ebx = 0;
    }
    // Brand string.
    let mut brand = [0u8; 48];
    for (d, s) in brand.iter_mut().zip(m.model_id.bytes()) {
        *d = s;
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        if leaf > xlevel {
            continue;
        }
        let w = |j: usize| {
            u32::from_le_bytes(
                brand[i * 16 + j * 4..i * 16 + j * 4 + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            )
        };
        match find_mut(entries, leaf, 0) {
            Some(e) => (e.eax, e.ebx, e.ecx, e.edx) = (w(0), w(1), w(2), w(3)),
            None => entries.push(kvm_cpuid_entry2 {
                function: leaf,
                eax: w(0),
                ebx: w(1),
                ecx: w(2),
                edx: w(3),
                ..Default::default()
            }),
        }
    }
    // XSAVE state components: x87 and SSE always, AVX when the model has it; nothing beyond.
    let has = |n: &str| m.features.contains(&n);
    if has("xsave") {
        let mask: u32 = if has("avx") { 0b111 } else { 0b11 };
        let size = if has("avx") { 832 } else { 576 };
        if let Some(e) = find_mut(entries, 0xd, 0) {
            e.eax &= mask;
            e.edx = 0;
            e.ecx = size;
            e.ebx = size;
        }
        if let Some(e) = find_mut(entries, 0xd, 1) {
            e.ecx = 0;
            e.edx = 0;
        }
        entries.retain(|e| {
            e.function != 0xd || e.index <= 1 || (e.index < 32 && mask & (1 << e.index) != 0)
        });
    } else {
        entries.retain(|e| e.function != 0xd);
    }
    Ok(())
}

/// The XSAVE state components the CPUID offers (CPUID.(0xd,0):EDX:EAX), when XSAVE is offered at all.
pub fn xcr0_mask(entries: &[kvm_cpuid_entry2]) -> Option<u64> {
    if !feature("xsave").is_some_and(|f| has_feature(entries, f)) {
        return None;
    }
    find(entries, 0xd, 0)
        .map(|e| u64::from(e.eax) | (u64::from(e.edx) << 32))
        .filter(|m| m & 3 == 3)
}

/// Per-vCPU CPUID: APIC id and topology in leaves 1, 4, 0xb, 0x80000008 and 0x8000001e.
pub fn for_vcpu(
    base: &[kvm_cpuid_entry2],
    index: u32,
    topo: Topology,
) -> Result<CpuId, CpuidError> {
    let mut entries = base.to_vec();
    let apic_id = topo.apic_id(index);
    let per_package = topo.cores * topo.threads;
    let package_bits = topo.core_bits() + topo.thread_bits();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx =
                    (apic_id << 24) | ((per_package.min(255)) << 16) | (8 << 8) | (e.ebx & 0xff);
                if per_package > 1 {
                    e.edx |= 1 << 28;
                } else {
                    e.edx &= !(1 << 28);
                }
            }
            4 if e.eax & 0x1f != 0 => {
                let cache_level = (e.eax >> 5) & 7;
                let sharing = if cache_level >= 3 {
                    per_package
                } else {
                    topo.threads
                };
                e.eax = (e.eax & 0x3fff) | ((sharing - 1) << 14) | ((topo.cores - 1) << 26);
            }
            0xb => {
                e.edx = apic_id;
                match e.index {
                    0 => (e.eax, e.ebx, e.ecx) = (topo.thread_bits(), topo.threads, 1 << 8),
                    1 => (e.eax, e.ebx, e.ecx) = (package_bits, per_package, (2 << 8) | 1),
                    n => (e.eax, e.ebx, e.ecx) = (0, 0, n),
                }
            }
            0x8000_0008 => e.ecx = (package_bits << 12) | (per_package - 1),
            0x8000_001e => {
                e.eax = apic_id;
                e.ebx = ((topo.threads - 1) << 8) | ((index / topo.threads) % topo.cores);
                e.ecx = index / per_package;
            }
            _ => {}
        }
    }
    CpuId::from_entries(&entries).map_err(|e| CpuidError::Table(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible KVM_GET_SUPPORTED_CPUID: every known feature plus an unknown bit in each register.
    fn supported_everything() -> Vec<kvm_cpuid_entry2> {
        let mut v = vec![
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0x1f,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 6,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                index: 0,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax: 0xff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                index: 5,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x4000_0000,
                eax: 0x4000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0000,
                eax: 0x8000_0021,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                ebx: 0x1234,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_000a,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0021,
                ..Default::default()
            },
        ];
        for f in FEATURES.iter().filter(|f| f.name != "hypervisor") {
            set_feature(&mut v, f, true);
        }
        v
    }

    #[test]
    fn named_model_has_exactly_its_features() {
        let supported = supported_everything();
        for m in MODELS {
            let cpuid = build_cpuid(
                &supported,
                &CpuMode::Custom(m.name.into()),
                &CpuFeatures::default(),
            )
            .unwrap();
            let got: BTreeSet<&str> = FEATURES
                .iter()
                .filter(|f| has_feature(&cpuid, f))
                .map(|f| f.name)
                .collect();
            let want: BTreeSet<&str> = m.features.iter().copied().collect();
            assert_eq!(got, want, "model {}", m.name);
            assert!(cpuid
                .iter()
                .all(|e| e.function <= m.level || e.function >= 0x4000_0000));
            assert!(cpuid
                .iter()
                .all(|e| e.function < 0x8000_0000 || e.function <= m.xlevel));
        }
    }

    #[test]
    fn model_signature_and_vendor() {
        let cpuid = build_cpuid(
            &supported_everything(),
            &CpuMode::Custom("Haswell-noTSX-IBRS".into()),
            &Default::default(),
        )
        .unwrap();
        let l1 = find(&cpuid, 1, 0).unwrap();
        assert_eq!(l1.eax, 0x306c1, "family 6 model 60 stepping 1");
        let l0 = find(&cpuid, 0, 0).unwrap();
        assert_eq!(vendor_regs("GenuineIntel"), (l0.ebx, l0.edx, l0.ecx));
        let q = build_cpuid(
            &supported_everything(),
            &CpuMode::Custom("qemu64".into()),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            find(&q, 1, 0).unwrap().eax,
            0x60fb1,
            "family 15, model 0x6b (extended model 6), stepping 1"
        );
    }

    #[test]
    fn missing_features_are_named_in_the_error() {
        let mut supported = supported_everything();
        set_feature(&mut supported, feature("fma").unwrap(), false);
        set_feature(&mut supported, feature("avx2").unwrap(), false);
        let err = build_cpuid(
            &supported,
            &CpuMode::Custom("Haswell-noTSX-IBRS".into()),
            &Default::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("avx2, fma"), "{err}");
        let ok = build_cpuid(
            &supported,
            &CpuMode::Custom("Haswell-noTSX-IBRS".into()),
            &"-fma,-avx2".parse().unwrap(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn svm_can_be_hidden_and_its_leaf_goes_with_it() {
        let cpuid = build_cpuid(
            &supported_everything(),
            &CpuMode::HostPassthrough,
            &"-svm".parse().unwrap(),
        )
        .unwrap();
        assert!(!has_feature(&cpuid, feature("svm").unwrap()));
        assert!(cpuid.iter().all(|e| e.function != 0x8000_000a));
        assert!(has_feature(&cpuid, feature("hypervisor").unwrap()));
    }

    #[test]
    fn overrides_parse_and_reject_unknown_names() {
        let o: CpuFeatures = "+svm,-vmx".parse().unwrap();
        assert_eq!(
            (o.enable, o.disable),
            (vec!["svm".to_string()], vec!["vmx".to_string()])
        );
        assert!("+nosuch".parse::<CpuFeatures>().is_err());
        assert!("svm".parse::<CpuFeatures>().is_err());
    }

    #[test]
    fn topology_apic_ids_pack_threads_and_cores() {
        let t: Topology = "sockets=2,cores=3,threads=2".parse().unwrap();
        assert_eq!(t.vcpus(), 12);
        // threads: 1 bit, cores: 2 bits.
        assert_eq!(t.apic_id(0), 0);
        assert_eq!(t.apic_id(1), 1);
        assert_eq!(t.apic_id(2), 2);
        assert_eq!(t.apic_id(6), 8);
        let cpuid = for_vcpu(&supported_everything(), 3, t).unwrap();
        let l1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 6);
    }

    #[test]
    fn cpu_mode_parsing() {
        assert_eq!(
            "custom:qemu64".parse::<CpuMode>().unwrap(),
            CpuMode::Custom("qemu64".into())
        );
        assert!("custom:pentium9"
            .parse::<CpuMode>()
            .unwrap_err()
            .contains("unknown CPU model"));
        assert!("fast".parse::<CpuMode>().is_err());
    }
}
