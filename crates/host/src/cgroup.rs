//! A guest's control groups: where its engine process and threads are placed, and the CPU,
//! memory and block I/O limits of `<cputune>`, `<memtune>` and `<blkiotune>`, on cgroup v1 (one mount per controller, or
//! several controllers co-mounted) and on cgroup v2 (one hierarchy), as libvirt supports both.
//!
//! Layout (libvirt's, under an `oxvirt` group instead of `machine.slice`):
//!
//! ```text
//! oxvirt/GROUP              the guest: its process; memory limits; cpu shares (v2: weight)
//! oxvirt/GROUP/emulator     the engine's threads but the vCPUs; emulator_period/quota
//! oxvirt/GROUP/vcpuN        vCPU N's thread; period/quota
//! ```
//!
//! On v1 the cpu and cpuacct controllers get the three levels (threads move through `tasks`),
//! memory and blkio only the guest's group. On v2 the guest's group is a threaded root: `emulator` and
//! `vcpuN` are threaded children (threads move through `cgroup.threads`), `+cpu` enabled for
//! them; memory and io stay domain controllers on the guest's group. A controller the host has in
//! neither hierarchy is an error naming it, when a setting needs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::HostView;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("this host has no cgroup controller '{controller}' (needed for {what}): mount it (cgroup v1) or enable it in the v2 hierarchy's cgroup.subtree_control")]
    NoController {
        controller: &'static str,
        what: &'static str,
    },
    #[error("cannot write '{value}' to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// libvirt's words for a `<blkiotune>` device path.
    #[error("Path '{}' is not accessible: {source}", path.display())]
    NotAccessible {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Path '{}' must be a block device", path.display())]
    NotBlockDevice { path: PathBuf },
    #[error("a weight for device '{}' needs the BFQ I/O scheduler on it (its schedulers: {scheduler}): echo bfq > /sys/block/NAME/queue/scheduler", path.display())]
    DeviceWithoutWeights { path: PathBuf, scheduler: String },
    #[error("this host's {controller} controller has no {what} file in {} ({files}): a block I/O weight needs the BFQ I/O scheduler (or CFQ on old kernels)", dir.display())]
    NoWeightFile {
        controller: &'static str,
        what: &'static str,
        files: &'static str,
        dir: PathBuf,
    },
}

/// The cgroup hierarchies of a host: each v1 controller's mount, and the v2 mount with the
/// controllers it offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    v1: BTreeMap<String, PathBuf>,
    v2: Option<(PathBuf, Vec<String>)>,
}

/// Where one controller lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Hierarchies {
    /// From `/proc/self/mounts` (mount points under the view's root).
    pub fn of(host: &HostView) -> Hierarchies {
        let mut found = Hierarchies::default();
        let mounts = host.read("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount_point, fs_type, options, ..] = fields[..] else {
                continue;
            };
            match fs_type {
                "cgroup" => {
                    for option in options.split(',') {
                        if KNOWN_V1.contains(&option) {
                            found.v1.insert(option.to_string(), host.path(mount_point));
                        }
                    }
                }
                "cgroup2" if found.v2.is_none() => {
                    let root = host.path(mount_point);
                    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    found.v2 = Some((root, controllers));
                }
                _ => {}
            }
        }
        found
    }

    /// Where `controller` is: its v1 mount, else the v2 hierarchy when it offers it.
    fn find(&self, controller: &str) -> Option<(Version, &Path)> {
        if let Some(mount) = self.v1.get(controller) {
            return Some((Version::V1, mount));
        }
        // cgroup v2 counts CPU time in the cpu controller (cpu.stat): there is no cpuacct; v1's
        // blkio is v2's io.
        let v2_name = match controller {
            "cpuacct" => "cpu",
            "blkio" => "io",
            other => other,
        };
        match &self.v2 {
            Some((root, offered)) if offered.iter().any(|c| c == v2_name) => {
                Some((Version::V2, root))
            }
            _ => None,
        }
    }

    /// Guest group `name` (a file name: oxvirtd uses the domain's UUID).
    pub fn guest(&self, name: &str) -> GuestCgroup {
        GuestCgroup {
            hierarchies: self.clone(),
            relative: Path::new(PARENT).join(name),
        }
    }
}

/// Guest group `name` on this host's hierarchies.
pub fn of_guest(name: &str) -> GuestCgroup {
    Hierarchies::of(&HostView::this_host()).guest(name)
}

const KNOWN_V1: [&str; 4] = ["cpu", "cpuacct", "memory", "blkio"];

/// The controllers a guest's groups are made in.
const CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "blkio"];

/// The group all guests' groups are in.
const PARENT: &str = "oxvirt";

/// What a guest's cgroups are set to. `None`: left as the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub shares: Option<u64>,
    pub vcpu_period: Option<u64>,
    pub vcpu_quota: Option<i64>,
    pub emulator_period: Option<u64>,
    pub emulator_quota: Option<i64>,
    pub hard_limit_kib: Option<u64>,
    pub soft_limit_kib: Option<u64>,
    pub swap_hard_limit_kib: Option<u64>,
    pub blkio: BlkioLimits,
}

/// `<blkiotune>` as the kernel takes it: the guest's I/O weight and, per host block device
/// (by its device number), a weight and throttles. `None`: left alone; a device value of 0:
/// its setting removed (libvirt's "none").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioLimits {
    pub weight: Option<u32>,
    pub devices: Vec<DeviceIo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// The device's path, for errors.
    pub path: PathBuf,
    /// Its `MAJ:MIN`.
    pub number: (u32, u32),
    pub weight: Option<u32>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
    pub read_iops_sec: Option<u64>,
    pub write_iops_sec: Option<u64>,
}

impl BlkioLimits {
    pub fn is_empty(&self) -> bool {
        self.weight.is_none() && self.devices.is_empty()
    }
}

/// The device number (`MAJ:MIN`) of the block device at `path`, with libvirt's errors for a
/// path that is missing or not a block device.
pub fn block_device_number(path: &Path) -> Result<(u32, u32), CgroupError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).map_err(|source| CgroupError::NotAccessible {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_block_device() {
        return Err(CgroupError::NotBlockDevice {
            path: path.to_path_buf(),
        });
    }
    let dev = meta.rdev();
    // glibc's gnu_dev_major/gnu_dev_minor: 12 bits of major and 20 of minor, split.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok((major as u32, minor as u32))
}

impl Limits {
    fn needs_cpu(&self) -> bool {
        self.shares.is_some()
            || self.vcpu_period.is_some()
            || self.vcpu_quota.is_some()
            || self.emulator_period.is_some()
            || self.emulator_quota.is_some()
    }

    fn needs_memory(&self) -> bool {
        self.hard_limit_kib.is_some()
            || self.soft_limit_kib.is_some()
            || self.swap_hard_limit_kib.is_some()
    }
}

/// One guest's groups in every hierarchy.
#[derive(Debug, Clone)]
pub struct GuestCgroup {
    hierarchies: Hierarchies,
    relative: PathBuf,
}

/// The kernel's default CFS period, in µs.
const DEFAULT_PERIOD_US: u64 = 100_000;

impl GuestCgroup {
    /// The guest's directory for `controller`, if the host has it.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .find(controller)
            .map(|(_, root)| root.join(&self.relative))
    }

    /// Creates the groups, places process `pid` (its vCPU threads `vcpu_threads`, by vCPU number,
    /// each in its own group, the others in `emulator`) and sets `limits`. Controllers the
    /// limits do not need and the host lacks are skipped; ones they need are an error.
    pub fn place(
        &self,
        pid: u32,
        vcpu_threads: &[u32],
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        if limits.needs_cpu() && self.hierarchies.find("cpu").is_none() {
            return Err(CgroupError::NoController {
                controller: "cpu",
                what: "<cputune> shares, period and quota",
            });
        }
        if limits.needs_memory() && self.hierarchies.find("memory").is_none() {
            return Err(CgroupError::NoController {
                controller: "memory",
                what: "<memtune>",
            });
        }
        if !limits.blkio.is_empty() && self.hierarchies.find("blkio").is_none() {
            return Err(CgroupError::NoController {
                controller: "blkio (v2: io)",
                what: "<blkiotune>",
            });
        }
        let threads = crate::affinity::threads(pid);
        let emulator: Vec<u32> = threads
            .iter()
            .copied()
            .filter(|tid| !vcpu_threads.contains(tid))
            .collect();
        // The CPU controllers: three levels, threads placed one by one.
        let mut cpu_roots: Vec<(Version, &Path)> = Vec::new();
        for controller in ["cpu", "cpuacct"] {
            if let Some(found) = self.hierarchies.find(controller) {
                if !cpu_roots.iter().any(|(_, root)| *root == found.1) {
                    cpu_roots.push(found);
                }
            }
        }
        // The memory controller: the guest's group only.
        if let Some((version, root)) = self.hierarchies.find("memory") {
            let dir = root.join(&self.relative);
            if version == Version::V2 {
                enable_down(root, &self.relative, &["memory"])?;
            }
            create(&dir)?;
            // The process once per hierarchy: v2's one is the CPU loop's below.
            if !cpu_roots.iter().any(|(_, cpu_root)| *cpu_root == root) {
                write(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
            set_memory(&dir, version, limits)?;
        }
        // The blkio controller: the guest's group only; every thread of the process (QEMU's
        // I/O workers too) submits its I/O from it.
        if let Some((version, root)) = self.hierarchies.find("blkio") {
            let dir = root.join(&self.relative);
            if version == Version::V2 {
                enable_down(root, &self.relative, &["io"])?;
            }
            create(&dir)?;
            if !cpu_roots.iter().any(|(_, cpu_root)| *cpu_root == root) {
                write(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
            set_blkio(&dir, version, &limits.blkio)?;
        }
        for (version, root) in cpu_roots {
            let dir = root.join(&self.relative);
            if version == Version::V2 {
                enable_down(root, &self.relative, &["cpu"])?;
            }
            create(&dir)?;
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
            let (threads_file, subgroups_ready) = match version {
                Version::V1 => ("tasks", true),
                Version::V2 => ("cgroup.threads", false),
            };
            let mut groups: Vec<(String, Vec<u32>)> =
                vec![("emulator".to_string(), emulator.clone())];
            for (vcpu, tid) in vcpu_threads.iter().enumerate() {
                groups.push((format!("vcpu{vcpu}"), vec![*tid]));
            }
            for (name, _) in &groups {
                create(&dir.join(name))?;
                if !subgroups_ready {
                    write(&dir.join(name).join("cgroup.type"), "threaded")?;
                }
            }
            if version == Version::V2 {
                write(&dir.join("cgroup.subtree_control"), "+cpu")?;
            }
            for (name, tids) in &groups {
                for tid in tids {
                    // A thread that ended meanwhile is not an error.
                    if let Err(err) = write(&dir.join(name).join(threads_file), &tid.to_string()) {
                        if Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                            return Err(err);
                        }
                    }
                }
            }
            // Limits in the cpu controller's hierarchy (cpuacct, mounted apart, only counts).
            if self
                .hierarchies
                .find("cpu")
                .is_some_and(|(_, cpu_root)| cpu_root == root)
            {
                set_cpu(&dir, version, limits, vcpu_threads.len())?;
            }
        }
        Ok(())
    }

    /// Changes the CPU settings of a placed guest (every `vcpuN` group it has).
    pub fn set_cpu_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        let Some((version, root)) = self.hierarchies.find("cpu") else {
            return Err(CgroupError::NoController {
                controller: "cpu",
                what: "CPU shares, period and quota",
            });
        };
        let dir = root.join(&self.relative);
        let vcpus = (0..)
            .take_while(|n| dir.join(format!("vcpu{n}")).is_dir())
            .count();
        set_cpu(&dir, version, limits, vcpus)
    }

    /// Changes the memory limits of a placed guest.
    pub fn set_memory_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        let Some((version, root)) = self.hierarchies.find("memory") else {
            return Err(CgroupError::NoController {
                controller: "memory",
                what: "memory limits",
            });
        };
        set_memory(&root.join(&self.relative), version, limits)
    }

    /// Changes the block I/O settings of a placed guest (a device value of 0 removes it).
    pub fn set_blkio_limits(&self, limits: &BlkioLimits) -> Result<(), CgroupError> {
        let Some((version, root)) = self.hierarchies.find("blkio") else {
            return Err(CgroupError::NoController {
                controller: "blkio (v2: io)",
                what: "block I/O tuning",
            });
        };
        set_blkio(&root.join(&self.relative), version, limits)
    }

    /// The guest's block I/O weight as the kernel has it (its weight file's default), if the
    /// host has the controller and a weight file.
    pub fn blkio_weight(&self) -> Option<u32> {
        let (_, root) = self.hierarchies.find("blkio")?;
        let dir = root.join(&self.relative);
        let names = [
            "blkio.bfq.weight",
            "blkio.weight",
            "io.bfq.weight",
            "io.weight",
        ];
        let text = std::fs::read_to_string(dir.join(first_existing(&dir, &names)?)).ok()?;
        // v1: "N"; v2: "default N" and a line per device.
        let first = text.lines().next()?;
        first
            .strip_prefix("default ")
            .unwrap_or(first)
            .trim()
            .parse()
            .ok()
    }

    /// The CPU time (ns) the threads of group `sub` (`""`: the whole guest, `vcpu0`, ...) used.
    pub fn cpu_time_ns(&self, sub: &str) -> Option<u64> {
        let (version, root) = self.hierarchies.find("cpuacct")?;
        let dir = root.join(&self.relative).join(sub);
        match version {
            Version::V1 => std::fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok(),
            Version::V2 => std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("usage_usec "))
                .and_then(|usec| usec.trim().parse::<u64>().ok())
                .map(|usec| usec * 1000),
        }
    }

    /// The processes with a thread in the groups or their children (each hierarchy's
    /// `cgroup.procs`; a v2 threaded child's cannot be read, its parent's lists them).
    pub fn processes(&self) -> std::collections::BTreeSet<u32> {
        let mut roots: Vec<PathBuf> = CONTROLLERS.iter().filter_map(|c| self.dir(c)).collect();
        roots.sort();
        roots.dedup();
        let mut dirs = Vec::new();
        for dir in roots {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|entry| entry.path()),
                );
            }
            dirs.push(dir);
        }
        dirs.iter()
            .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Removes the groups (children first); returns whether none is left. A group that still
    /// has tasks stays (the threads of an ended process may take a moment to leave it).
    pub fn remove(&self) -> bool {
        let mut roots: Vec<PathBuf> = CONTROLLERS.iter().filter_map(|c| self.dir(c)).collect();
        roots.sort();
        roots.dedup();
        for dir in roots {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        CONTROLLERS
            .iter()
            .filter_map(|c| self.dir(c))
            .all(|dir| !dir.exists())
    }
}

fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// v2: `controllers` enabled in the subtree_control of the root and of each group above
/// `relative`, so that the guest's group has them.
fn enable_down(root: &Path, relative: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let value = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut dir = root.to_path_buf();
    let parents: Vec<_> = relative
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .collect();
    write(&dir.join("cgroup.subtree_control"), &value)?;
    for component in parents {
        dir.push(component);
        create(&dir)?;
        write(&dir.join("cgroup.subtree_control"), &value)?;
    }
    Ok(())
}

/// cgroup v1's `cpu.shares` (2..262144, default 1024) as v2's `cpu.weight` (1..10000, default
/// 100), the kernel documentation's mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + (shares - 2) * 9999 / 262_142
}

fn set_cpu(dir: &Path, version: Version, limits: &Limits, vcpus: usize) -> Result<(), CgroupError> {
    if let Some(shares) = limits.shares {
        match version {
            Version::V1 => write(&dir.join("cpu.shares"), &shares.to_string())?,
            Version::V2 => write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?,
        }
    }
    let mut bandwidth = vec![(
        "emulator".to_string(),
        limits.emulator_period,
        limits.emulator_quota,
    )];
    for vcpu in 0..vcpus {
        bandwidth.push((format!("vcpu{vcpu}"), limits.vcpu_period, limits.vcpu_quota));
    }
    for (group, period, quota) in bandwidth {
        if period.is_none() && quota.is_none() {
            continue;
        }
        let dir = dir.join(group);
        match version {
            Version::V1 => {
                // The period first: a quota is checked against the current period.
                if let Some(period) = period {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
                if let Some(quota) = quota {
                    let quota = if quota < 0 { -1 } else { quota };
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Version::V2 => {
                let current = std::fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
                let mut words = current.split_whitespace();
                let (old_quota, old_period) = (words.next().unwrap_or("max"), words.next());
                let period = period
                    .map(|p| p.to_string())
                    .or(old_period.map(str::to_string))
                    .unwrap_or_else(|| DEFAULT_PERIOD_US.to_string());
                let quota = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    Some(_) => "max".to_string(),
                    None => old_quota.to_string(),
                };
                write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
            }
        }
    }
    Ok(())
}

/// A memory limit this large is no limit (libvirt's "unlimited", 2^53 - 1 KiB).
pub const UNLIMITED_KIB: u64 = 9_007_199_254_740_991;

fn set_memory(dir: &Path, version: Version, limits: &Limits) -> Result<(), CgroupError> {
    let bytes = |kib: u64| match (kib >= UNLIMITED_KIB, version) {
        (true, Version::V1) => "-1".to_string(),
        (true, Version::V2) => "max".to_string(),
        (false, _) => kib.saturating_mul(1024).to_string(),
    };
    match version {
        Version::V1 => {
            if let Some(kib) = limits.hard_limit_kib {
                write(&dir.join("memory.limit_in_bytes"), &bytes(kib))?;
            }
            if let Some(kib) = limits.soft_limit_kib {
                write(&dir.join("memory.soft_limit_in_bytes"), &bytes(kib))?;
            }
            if let Some(kib) = limits.swap_hard_limit_kib {
                // Memory and swap together (the kernel's memsw), as libvirt writes it.
                write(&dir.join("memory.memsw.limit_in_bytes"), &bytes(kib))?;
            }
        }
        Version::V2 => {
            if let Some(kib) = limits.hard_limit_kib {
                write(&dir.join("memory.max"), &bytes(kib))?;
            }
            if let Some(kib) = limits.soft_limit_kib {
                write(&dir.join("memory.high"), &bytes(kib))?;
            }
            if let Some(kib) = limits.swap_hard_limit_kib {
                // v2 limits swap alone: what the memory+swap limit leaves above the hard limit.
                let swap = if kib >= UNLIMITED_KIB {
                    kib
                } else {
                    kib.saturating_sub(limits.hard_limit_kib.unwrap_or(0))
                };
                write(&dir.join("memory.swap.max"), &bytes(swap))?;
            }
        }
    }
    Ok(())
}

/// The first of `names` that exists in `dir`.
fn first_existing(dir: &Path, names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|name| dir.join(name).exists())
}

/// `<blkiotune>` into the files of the guest's group `dir`, as libvirt writes them: v1 the
/// weight in `blkio.bfq.weight` (BFQ) or `blkio.weight` (CFQ), a device's in the matching
/// `*weight_device` as `MAJ:MIN W`, throttles in `blkio.throttle.{read,write}_{bps,iops}_device`
/// as `MAJ:MIN N`; v2 `io.bfq.weight` (`N`) or `io.weight` (`default N`), a device's weight
/// `MAJ:MIN W` in the same file, throttles in `io.max` (`MAJ:MIN rbps=N`). A device value of 0
/// removes the setting (throttles: 0, v2 `max`; weights: `default`, CFQ's 0); `None` leaves it
/// alone.
fn set_blkio(dir: &Path, version: Version, limits: &BlkioLimits) -> Result<(), CgroupError> {
    let (controller, weight_names, weight_files) = match version {
        Version::V1 => (
            "blkio",
            ["blkio.bfq.weight", "blkio.weight"],
            "blkio.bfq.weight or blkio.weight",
        ),
        Version::V2 => (
            "io",
            ["io.bfq.weight", "io.weight"],
            "io.bfq.weight or io.weight",
        ),
    };
    let weight_file = || {
        first_existing(dir, &weight_names).ok_or(CgroupError::NoWeightFile {
            controller,
            what: "weight",
            files: weight_files,
            dir: dir.to_path_buf(),
        })
    };
    if let Some(weight) = limits.weight {
        let file = weight_file()?;
        let value = if file == "io.weight" {
            format!("default {weight}")
        } else {
            weight.to_string()
        };
        write(&dir.join(file), &value)?;
    }
    for device in &limits.devices {
        let (major, minor) = device.number;
        let id = format!("{major}:{minor}");
        if let Some(weight) = device.weight {
            let file = match version {
                Version::V1 => {
                    first_existing(dir, &["blkio.bfq.weight_device", "blkio.weight_device"]).ok_or(
                        CgroupError::NoWeightFile {
                            controller,
                            what: "device weight",
                            files: "blkio.bfq.weight_device or blkio.weight_device",
                            dir: dir.to_path_buf(),
                        },
                    )?
                }
                Version::V2 => weight_file()?,
            };
            // Removing a device's weight: BFQ and v2 take "default", v1's CFQ takes 0.
            let value = match weight {
                0 if file != "blkio.weight_device" => "default".to_string(),
                weight => weight.to_string(),
            };
            write(&dir.join(file), &format!("{id} {value}")).map_err(|err| {
                match err {
                    // The kernel's answer when the device's I/O scheduler has no weights.
                    CgroupError::Write { ref source, .. } if source.raw_os_error() == Some(95) => {
                        CgroupError::DeviceWithoutWeights {
                            path: device.path.clone(),
                            scheduler: std::fs::read_to_string(format!(
                                "/sys/dev/block/{id}/queue/scheduler"
                            ))
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                        }
                    }
                    other => other,
                }
            })?;
        }
        let throttles = [
            ("read_bps_device", "rbps", device.read_bytes_sec),
            ("write_bps_device", "wbps", device.write_bytes_sec),
            ("read_iops_device", "riops", device.read_iops_sec),
            ("write_iops_device", "wiops", device.write_iops_sec),
        ];
        for (v1_name, v2_key, value) in throttles {
            let Some(value) = value else { continue };
            match version {
                Version::V1 => write(
                    &dir.join(format!("blkio.throttle.{v1_name}")),
                    &format!("{id} {value}"),
                )?,
                Version::V2 => {
                    let value = if value == 0 {
                        "max".to_string()
                    } else {
                        value.to_string()
                    };
                    write(&dir.join("io.max"), &format!("{id} {v2_key}={value}"))?
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(root: &Path, path: &str, text: &str) {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    }

    #[test]
    fn processes_are_read_from_the_groups_and_their_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_file(
            dir.path(),
            "/proc/self/mounts",
            "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n",
        );
        let group = Hierarchies::of(&HostView::at(dir.path())).guest("u");
        assert!(group.processes().is_empty(), "no group yet");
        write_file(
            dir.path(),
            "/sys/fs/cgroup/cpu,cpuacct/oxvirt/u/cgroup.procs",
            "",
        );
        write_file(
            dir.path(),
            "/sys/fs/cgroup/cpu,cpuacct/oxvirt/u/vcpu0/cgroup.procs",
            "41\n",
        );
        write_file(
            dir.path(),
            "/sys/fs/cgroup/memory/oxvirt/u/cgroup.procs",
            "41\n42\n",
        );
        assert_eq!(
            group.processes().into_iter().collect::<Vec<_>>(),
            vec![41, 42]
        );
    }

    #[test]
    fn hierarchies_come_from_the_mount_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_file(
            dir.path(),
            "/proc/self/mounts",
            "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        );
        write_file(
            dir.path(),
            "/sys/fs/cgroup/unified/cgroup.controllers",
            "\n",
        );
        let found = Hierarchies::of(&HostView::at(dir.path()));
        let group = found.guest("u");
        assert_eq!(group.dir("cpu"), group.dir("cpuacct"), "co-mounted");
        assert!(group
            .dir("memory")
            .expect("memory")
            .ends_with("sys/fs/cgroup/memory/oxvirt/u"));
        assert_eq!(group.dir("pids"), None);

        let dir = tempfile::tempdir().expect("tempdir");
        write_file(
            dir.path(),
            "/proc/self/mounts",
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
        );
        write_file(
            dir.path(),
            "/sys/fs/cgroup/cgroup.controllers",
            "cpu io memory pids\n",
        );
        let found = Hierarchies::of(&HostView::at(dir.path()));
        assert!(
            found.guest("u").dir("cpuacct").is_some(),
            "v2 counts time in cpu"
        );
        assert!(found.guest("u").dir("cpuset").is_none());
    }

    #[test]
    fn v2_limits_are_written_as_the_kernel_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path();
        for sub in ["vcpu0", "vcpu1", "emulator"] {
            std::fs::create_dir_all(group.join(sub)).expect("mkdir");
        }
        let limits = Limits {
            shares: Some(2048),
            vcpu_period: Some(50_000),
            vcpu_quota: Some(10_000),
            emulator_quota: Some(-1),
            hard_limit_kib: Some(1024),
            swap_hard_limit_kib: Some(3072),
            ..Limits::default()
        };
        set_cpu(group, Version::V2, &limits, 2).expect("cpu");
        set_memory(group, Version::V2, &limits).expect("memory");
        let read = |f: &str| std::fs::read_to_string(group.join(f)).expect(f);
        assert_eq!(read("cpu.weight"), shares_to_weight(2048).to_string());
        assert_eq!(read("vcpu1/cpu.max"), "10000 50000");
        assert_eq!(read("emulator/cpu.max"), "max 100000");
        assert_eq!(read("memory.max"), "1048576");
        assert_eq!(read("memory.swap.max"), (2048 * 1024).to_string());
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v1_quota_follows_its_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("vcpu0")).expect("mkdir");
        let limits = Limits {
            vcpu_period: Some(20_000),
            vcpu_quota: Some(-5),
            ..Limits::default()
        };
        set_cpu(dir.path(), Version::V1, &limits, 1).expect("cpu");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(read("vcpu0/cpu.cfs_period_us"), "20000");
        assert_eq!(read("vcpu0/cpu.cfs_quota_us"), "-1");
        assert!(!dir.path().join("emulator").exists());
    }

    fn blkio_limits() -> BlkioLimits {
        BlkioLimits {
            weight: Some(300),
            devices: vec![DeviceIo {
                path: PathBuf::from("/dev/loop9"),
                number: (7, 9),
                weight: Some(400),
                read_bytes_sec: Some(1_048_576),
                write_iops_sec: Some(0),
                ..DeviceIo::default()
            }],
        }
    }

    #[test]
    fn v1_blkio_prefers_bfq_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path();
        for file in [
            "blkio.bfq.weight",
            "blkio.bfq.weight_device",
            "blkio.weight",
            "blkio.weight_device",
        ] {
            std::fs::write(group.join(file), "").expect("write");
        }
        set_blkio(group, Version::V1, &blkio_limits()).expect("blkio");
        let read = |f: &str| std::fs::read_to_string(group.join(f)).expect(f);
        assert_eq!(read("blkio.bfq.weight"), "300");
        assert_eq!(read("blkio.bfq.weight_device"), "7:9 400");
        assert_eq!(read("blkio.weight"), "", "CFQ's file left alone under BFQ");
        assert_eq!(read("blkio.throttle.read_bps_device"), "7:9 1048576");
        assert_eq!(read("blkio.throttle.write_iops_device"), "7:9 0");
        assert!(!group.join("blkio.throttle.write_bps_device").exists());
    }

    #[test]
    fn v2_blkio_writes_io_weight_and_io_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path();
        std::fs::write(group.join("io.weight"), "default 100\n").expect("write");
        let mut limits = blkio_limits();
        limits.devices[0].weight = None;
        set_blkio(group, Version::V2, &limits).expect("blkio");
        let read = |f: &str| std::fs::read_to_string(group.join(f)).expect(f);
        assert_eq!(read("io.weight"), "default 300");
        // Each write to io.max is one key: the last one stays in this plain file.
        assert_eq!(read("io.max"), "7:9 wiops=max");
        limits.devices[0].weight = Some(0);
        limits.devices[0].write_iops_sec = None;
        set_blkio(group, Version::V2, &limits).expect("blkio");
        assert_eq!(read("io.weight"), "7:9 default");
        // v1 under BFQ: "default" too (BFQ refuses 0).
        let v1 = tempfile::tempdir().expect("tempdir");
        std::fs::write(v1.path().join("blkio.bfq.weight_device"), "").expect("write");
        std::fs::write(v1.path().join("blkio.bfq.weight"), "").expect("write");
        set_blkio(v1.path(), Version::V1, &limits).expect("blkio");
        let v1_text = std::fs::read_to_string(v1.path().join("blkio.bfq.weight_device"));
        assert_eq!(v1_text.expect("weight_device"), "7:9 default");
        assert_eq!(read("io.max"), "7:9 rbps=1048576");
    }

    #[test]
    fn blkio_without_a_weight_file_names_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = set_blkio(dir.path(), Version::V1, &blkio_limits()).expect_err("no file");
        let text = err.to_string();
        assert!(text.contains("blkio.bfq.weight or blkio.weight"), "{text}");
        assert!(text.contains("BFQ"), "{text}");
    }

    #[test]
    fn blkiotune_on_a_host_without_the_controller_names_it() {
        let limits = Limits {
            blkio: blkio_limits(),
            ..Limits::default()
        };
        let err = Hierarchies::default()
            .guest("u")
            .place(std::process::id(), &[], &limits)
            .expect_err("no blkio controller");
        let text = err.to_string();
        assert!(
            text.contains("no cgroup controller 'blkio (v2: io)'"),
            "{text}"
        );
        assert!(text.contains("<blkiotune>"), "{text}");
    }

    #[test]
    fn device_numbers_come_from_block_devices_only() {
        let err = block_device_number(Path::new("/etc/hostname")).expect_err("a file");
        assert_eq!(
            err.to_string(),
            "Path '/etc/hostname' must be a block device"
        );
        let err = block_device_number(Path::new("/dev/no-such-disk")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("Path '/dev/no-such-disk' is not accessible:"),
            "{err}"
        );
        // The project's hosts have the loop driver (major 7) and its first node.
        let number = block_device_number(Path::new("/dev/loop0")).expect("/dev/loop0");
        assert_eq!(number, (7, 0));
    }
}
