//! The host as virsh's node verbs show it: `nodeinfo`, `nodecpumap`, `nodecpustats`,
//! `nodememstats`, `freecell`, `freepages`, `allocpages` and `node-memory-tune` (the kernel's
//! KSM knobs). Everything is read through a [`HostView`], the way libvirt reads it: CPU
//! topology from `/sys/devices/system/cpu`, NUMA cells from `/sys/devices/system/node`, CPU
//! times from `/proc/stat`, memory from `/proc/meminfo` and each cell's `meminfo`, huge pages
//! from `hugepages-SIZEkB` directories, KSM from `/sys/kernel/mm/ksm`.

use std::collections::BTreeSet;

use crate::affinity::cpu_list;
use crate::HostView;

/// Why a node question has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read {0}")]
    Unreadable(String),
    #[error("host CPU {cpu} does not exist (this host has CPUs {online})")]
    NoSuchCpu { cpu: u32, online: String },
    #[error("NUMA cell {cell} does not exist (this host has cells {cells})")]
    NoSuchCell { cell: u32, cells: String },
    #[error("page size {size_kib} KiB is not available on this host (it has {sizes})")]
    NoSuchPageSize { size_kib: u64, sizes: String },
    #[error("{size_kib} KiB pages are the system's page size, not a pool of huge pages: only huge page pools can be sized")]
    SystemPageSize { size_kib: u64 },
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("the kernel allocated {got} of the {asked} {size_kib} KiB pages asked for on {place} (not enough free contiguous memory)")]
    ShortAllocation {
        size_kib: u64,
        asked: u64,
        got: u64,
        place: String,
    },
}

/// `nodeinfo`'s answer. `sockets` counts per NUMA cell, `cores` per socket, `threads` per core,
/// as libvirt counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub arch: &'static str,
    pub cpus: u32,
    pub mhz: u32,
    pub cells: u32,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    pub memory_kib: u64,
}

/// The host's CPUs, their topology and its memory size.
pub fn node_info(host: &HostView) -> Result<NodeInfo, NodeError> {
    let online = online_cpus(host)?;
    let cells = cells(host).len().max(1) as u32;
    let mut packages = BTreeSet::new();
    let mut cores = BTreeSet::new();
    for cpu in &online {
        let topology = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let package = host.value(&format!("{topology}/physical_package_id"));
        let core = host.value(&format!("{topology}/core_id"));
        packages.insert(package.clone());
        cores.insert((package, core));
    }
    let cpus = online.len() as u32;
    let sockets = (packages.len() as u32 / cells).max(1);
    let cores_per_socket = (cores.len() as u32 / packages.len().max(1) as u32).max(1);
    let threads = (cpus / (cells * sockets * cores_per_socket)).max(1);
    // libvirt's fallback when the counts don't multiply out (CPUs offline, odd topologies):
    // one cell, one socket, every CPU a core.
    let (cells, sockets, cores, threads) = if cells * sockets * cores_per_socket * threads == cpus {
        (cells, sockets, cores_per_socket, threads)
    } else {
        (1, 1, cpus, 1)
    };
    Ok(NodeInfo {
        arch: std::env::consts::ARCH,
        cpus,
        mhz: cpu_mhz(host),
        cells,
        sockets,
        cores,
        threads,
        memory_kib: meminfo_value(&read(host, "/proc/meminfo")?, "MemTotal").unwrap_or(0),
    })
}

/// `nodecpumap`: how many CPUs are present, and which of them are online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMap {
    pub present: BTreeSet<u32>,
    pub online: BTreeSet<u32>,
}

pub fn cpu_map(host: &HostView) -> Result<CpuMap, NodeError> {
    let present = cpu_list(read(host, "/sys/devices/system/cpu/present")?.trim());
    Ok(CpuMap {
        present,
        online: online_cpus(host)?,
    })
}

/// Clock ticks per second of `/proc/stat` (USER_HZ, fixed at 100 on Linux for user space).
const NS_PER_TICK: u64 = 1_000_000_000 / 100;

/// `nodecpustats`: the time all CPUs (or `cpu`) spent in each state since boot, in ns, under
/// virsh's names: `user` (user and nice), `system` (system, irq and softirq), `idle`,
/// `iowait`.
pub fn cpu_times(host: &HostView, cpu: Option<u32>) -> Result<Vec<(&'static str, u64)>, NodeError> {
    let stat = read(host, "/proc/stat")?;
    let label = cpu.map_or("cpu".to_string(), |n| format!("cpu{n}"));
    let Some(line) = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(label.as_str()))
    else {
        let online = online_cpus(host)?;
        return Err(NodeError::NoSuchCpu {
            cpu: cpu.unwrap_or(0),
            online: format_cpu_list(&online),
        });
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let (user, nice, system, idle, iowait, irq, softirq) = (
        tick(0),
        tick(1),
        tick(2),
        tick(3),
        tick(4),
        tick(5),
        tick(6),
    );
    Ok(vec![
        ("user", (user + nice) * NS_PER_TICK),
        ("system", (system + irq + softirq) * NS_PER_TICK),
        ("idle", idle * NS_PER_TICK),
        ("iowait", iowait * NS_PER_TICK),
    ])
}

/// `nodememstats`: the host's memory (`total`, `free`, `buffers`, `cached`) or a cell's
/// (`total`, `free`), in KiB.
pub fn memory_stats(
    host: &HostView,
    cell: Option<u32>,
) -> Result<Vec<(&'static str, u64)>, NodeError> {
    match cell {
        None => {
            let meminfo = read(host, "/proc/meminfo")?;
            Ok([
                ("total", "MemTotal"),
                ("free", "MemFree"),
                ("buffers", "Buffers"),
                ("cached", "Cached"),
            ]
            .into_iter()
            .map(|(name, key)| (name, meminfo_value(&meminfo, key).unwrap_or(0)))
            .collect())
        }
        Some(cell) => {
            let meminfo = cell_meminfo(host, cell)?;
            Ok(vec![
                ("total", meminfo_value(&meminfo, "MemTotal").unwrap_or(0)),
                ("free", meminfo_value(&meminfo, "MemFree").unwrap_or(0)),
            ])
        }
    }
}

/// `freecell`: each NUMA cell's free memory in KiB, by cell number.
pub fn free_memory(host: &HostView) -> Result<Vec<(u32, u64)>, NodeError> {
    cells(host)
        .into_iter()
        .map(|cell| {
            let meminfo = cell_meminfo(host, cell)?;
            Ok((cell, meminfo_value(&meminfo, "MemFree").unwrap_or(0)))
        })
        .collect()
}

/// `freepages`: cell `cell`'s free pages of each size (the system page size first, then each
/// huge page size), as (size in KiB, count).
pub fn free_pages(host: &HostView, cell: u32) -> Result<Vec<(u64, u64)>, NodeError> {
    let meminfo = cell_meminfo(host, cell)?;
    let system_kib = system_page_kib();
    let mut pages = vec![(
        system_kib,
        meminfo_value(&meminfo, "MemFree").unwrap_or(0) / system_kib,
    )];
    for size_kib in huge_page_sizes(host) {
        let dir = cell_hugepages_dir(cell, size_kib);
        let free = host
            .value(&format!("{dir}/free_hugepages"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        pages.push((size_kib, free));
    }
    Ok(pages)
}

/// `allocpages`: sizes the pool of `size_kib` huge pages to `count` (or grows it by `count`
/// with `add`) on cell `cell`, or across the host without one. Returns the pool's size after,
/// and fails if the kernel could not allocate all of it.
pub fn alloc_pages(
    host: &HostView,
    size_kib: u64,
    count: u64,
    cell: Option<u32>,
    add: bool,
) -> Result<u64, NodeError> {
    if size_kib == system_page_kib() {
        return Err(NodeError::SystemPageSize { size_kib });
    }
    let sizes = huge_page_sizes(host);
    if !sizes.contains(&size_kib) {
        return Err(NodeError::NoSuchPageSize {
            size_kib,
            sizes: sizes_text(&sizes),
        });
    }
    let (dir, place) = match cell {
        Some(cell) => {
            cell_meminfo(host, cell)?;
            (
                cell_hugepages_dir(cell, size_kib),
                format!("NUMA cell {cell}"),
            )
        }
        None => (
            format!("/sys/kernel/mm/hugepages/hugepages-{size_kib}kB"),
            "this host".to_string(),
        ),
    };
    let file = format!("{dir}/nr_hugepages");
    let current: u64 = host
        .value(&file)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| NodeError::Unreadable(file.clone()))?;
    let asked = if add {
        current.saturating_add(count)
    } else {
        count
    };
    std::fs::write(host.path(&file), asked.to_string()).map_err(|err| NodeError::Unwritable {
        path: file.clone(),
        reason: err.to_string(),
    })?;
    let got: u64 = host
        .value(&file)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| NodeError::Unreadable(file.clone()))?;
    if got < asked {
        return Err(NodeError::ShortAllocation {
            size_kib,
            asked,
            got,
            place,
        });
    }
    Ok(got)
}

/// The KSM knobs and counters under virsh's `node-memory-tune` names, in its order
/// (`shm_merge_across_nodes` only where the kernel has NUMA-aware KSM).
pub fn ksm(host: &HostView) -> Result<Vec<(&'static str, u64)>, NodeError> {
    let mut values = Vec::new();
    for (name, file) in KSM_FILES {
        let path = format!("/sys/kernel/mm/ksm/{file}");
        match host.value(&path) {
            Some(value) => values.push((name, value.parse().unwrap_or(0))),
            None if file == "merge_across_nodes" => {}
            None => return Err(NodeError::Unreadable(path)),
        }
    }
    Ok(values)
}

const KSM_FILES: [(&str, &str); 8] = [
    ("shm_pages_to_scan", "pages_to_scan"),
    ("shm_sleep_millisecs", "sleep_millisecs"),
    ("shm_pages_shared", "pages_shared"),
    ("shm_pages_sharing", "pages_sharing"),
    ("shm_pages_unshared", "pages_unshared"),
    ("shm_pages_volatile", "pages_volatile"),
    ("shm_full_scans", "full_scans"),
    ("shm_merge_across_nodes", "merge_across_nodes"),
];

/// The KSM knobs `node-memory-tune` sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KsmSettings {
    pub pages_to_scan: Option<u64>,
    pub sleep_millisecs: Option<u64>,
    pub merge_across_nodes: Option<u64>,
}

/// Writes the knobs given, in virsh's order; the first the kernel refuses stops it (e.g.
/// `merge_across_nodes` while pages are shared: the kernel answers EBUSY).
pub fn set_ksm(host: &HostView, settings: &KsmSettings) -> Result<(), NodeError> {
    for (file, value) in [
        ("pages_to_scan", settings.pages_to_scan),
        ("sleep_millisecs", settings.sleep_millisecs),
        ("merge_across_nodes", settings.merge_across_nodes),
    ] {
        let Some(value) = value else { continue };
        let path = format!("/sys/kernel/mm/ksm/{file}");
        std::fs::write(host.path(&path), value.to_string()).map_err(|err| {
            NodeError::Unwritable {
                path: path.clone(),
                reason: err.to_string(),
            }
        })?;
    }
    Ok(())
}

/// `0-3,6` for a set of CPUs or cells (the kernel's and libvirt's list format).
pub fn format_cpu_list(cpus: &BTreeSet<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn read(host: &HostView, path: &str) -> Result<String, NodeError> {
    host.read(path)
        .ok_or_else(|| NodeError::Unreadable(path.to_string()))
}

pub(crate) fn online_cpus(host: &HostView) -> Result<BTreeSet<u32>, NodeError> {
    Ok(cpu_list(
        read(host, "/sys/devices/system/cpu/online")?.trim(),
    ))
}

/// The NUMA cells (`/sys/devices/system/node/online`); a host without NUMA support has one.
pub(crate) fn cells(host: &HostView) -> BTreeSet<u32> {
    host.value("/sys/devices/system/node/online")
        .map(|list| cpu_list(&list))
        .unwrap_or_default()
}

pub(crate) fn cell_meminfo(host: &HostView, cell: u32) -> Result<String, NodeError> {
    let cells = cells(host);
    if !cells.contains(&cell) {
        return Err(NodeError::NoSuchCell {
            cell,
            cells: format_cpu_list(&cells),
        });
    }
    read(
        host,
        &format!("/sys/devices/system/node/node{cell}/meminfo"),
    )
}

pub(crate) fn cell_hugepages_dir(cell: u32, size_kib: u64) -> String {
    format!("/sys/devices/system/node/node{cell}/hugepages/hugepages-{size_kib}kB")
}

/// `Key: value kB` of `/proc/meminfo` (or `/proc/PID/status`), or `Node 0 Key: value kB` of
/// a cell's `meminfo`.
pub fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.split_whitespace().last() == Some(key))
            .then(|| value.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// The first processor's clock in MHz, as `/proc/cpuinfo` says it (truncated, as libvirt).
fn cpu_mhz(host: &HostView) -> u32 {
    host.read("/proc/cpuinfo")
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("cpu MHz"))
                .and_then(|line| line.split_once(':'))
                .and_then(|(_, mhz)| mhz.trim().parse::<f64>().ok())
        })
        .map_or(0, |mhz| mhz as u32)
}

/// The huge page sizes the kernel offers, in KiB, smallest first.
pub(crate) fn huge_page_sizes(host: &HostView) -> Vec<u64> {
    let mut sizes: Vec<u64> = std::fs::read_dir(host.path("/sys/kernel/mm/hugepages"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    name.strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort_unstable();
    sizes
}

fn sizes_text(sizes: &[u64]) -> String {
    if sizes.is_empty() {
        return "no huge pages".to_string();
    }
    let sizes: Vec<String> = sizes.iter().map(|s| format!("{s} KiB")).collect();
    sizes.join(", ")
}

/// The system page size in KiB (4 on x86_64).
pub(crate) fn system_page_kib() -> u64 {
    rustix::param::page_size() as u64 / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host tree with two cells of one socket each, two cores per socket, two threads per
    /// core (CPUs 0-7), 2 MiB and 1 GiB pages.
    fn fake_host() -> (tempfile::TempDir, HostView) {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |path: &str, text: &str| {
            let file = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        };
        write("/sys/devices/system/cpu/online", "0-7\n");
        write("/sys/devices/system/cpu/present", "0-7\n");
        for cpu in 0..8 {
            let topology = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            write(
                &format!("{topology}/physical_package_id"),
                &format!("{}\n", cpu / 4),
            );
            write(
                &format!("{topology}/core_id"),
                &format!("{}\n", (cpu / 2) % 2),
            );
        }
        write("/sys/devices/system/node/online", "0-1\n");
        for cell in 0..2 {
            write(
                &format!("/sys/devices/system/node/node{cell}/meminfo"),
                &format!("Node {cell} MemTotal:  1000 kB\nNode {cell} MemFree:  400 kB\n"),
            );
            for (size, free) in [(2048, "3"), (1048576, "0")] {
                write(
                    &format!("{}/free_hugepages", cell_hugepages_dir(cell, size)),
                    free,
                );
                write(
                    &format!("{}/nr_hugepages", cell_hugepages_dir(cell, size)),
                    "5\n",
                );
            }
        }
        for size in [2048, 1048576] {
            write(
                &format!("/sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages"),
                "10\n",
            );
        }
        write("/proc/meminfo", "MemTotal:       2000 kB\nMemFree:         800 kB\nBuffers:  7 kB\nCached:  9 kB\nSwapCached: 1 kB\n");
        write("/proc/cpuinfo", "processor\t: 0\ncpu MHz\t\t: 2596.130\n");
        write(
            "/proc/stat",
            "cpu  10 2 30 400 5 6 7 0 0 0\ncpu0 1 0 3 40 0 0 0 0 0 0\nintr 1\n",
        );
        for (file, value) in [
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("pages_shared", "1"),
            ("pages_sharing", "2"),
            ("pages_unshared", "3"),
            ("pages_volatile", "4"),
            ("full_scans", "5"),
        ] {
            write(&format!("/sys/kernel/mm/ksm/{file}"), &format!("{value}\n"));
        }
        let host = HostView::at(dir.path());
        (dir, host)
    }

    #[test]
    fn topology_is_counted_per_cell_socket_and_core() {
        let (_dir, host) = fake_host();
        let info = node_info(&host).expect("info");
        assert_eq!(
            (
                info.cpus,
                info.mhz,
                info.cells,
                info.sockets,
                info.cores,
                info.threads,
                info.memory_kib
            ),
            (8, 2596, 2, 1, 2, 2, 2000)
        );
    }

    #[test]
    fn cpu_times_sum_as_libvirt_does() {
        let (_dir, host) = fake_host();
        assert_eq!(
            cpu_times(&host, None).expect("all"),
            vec![
                ("user", 120_000_000),
                ("system", 430_000_000),
                ("idle", 4_000_000_000),
                ("iowait", 50_000_000)
            ]
        );
        assert_eq!(
            cpu_times(&host, Some(0)).expect("cpu0")[2],
            ("idle", 400_000_000)
        );
        assert_eq!(
            cpu_times(&host, Some(9)).unwrap_err().to_string(),
            "host CPU 9 does not exist (this host has CPUs 0-7)"
        );
    }

    #[test]
    fn memory_of_the_host_and_of_a_cell() {
        let (_dir, host) = fake_host();
        assert_eq!(
            memory_stats(&host, None).expect("host"),
            vec![
                ("total", 2000),
                ("free", 800),
                ("buffers", 7),
                ("cached", 9)
            ]
        );
        assert_eq!(
            memory_stats(&host, Some(1)).expect("cell"),
            vec![("total", 1000), ("free", 400)]
        );
        assert!(matches!(
            memory_stats(&host, Some(2)),
            Err(NodeError::NoSuchCell { cell: 2, .. })
        ));
        assert_eq!(free_memory(&host).expect("free"), vec![(0, 400), (1, 400)]);
    }

    #[test]
    fn pages_per_size_and_pool_sizing() {
        let (_dir, host) = fake_host();
        assert_eq!(
            free_pages(&host, 1).expect("pages"),
            vec![(4, 100), (2048, 3), (1048576, 0)]
        );
        assert_eq!(alloc_pages(&host, 2048, 7, Some(1), false).expect("set"), 7);
        assert_eq!(alloc_pages(&host, 2048, 2, Some(1), true).expect("add"), 9);
        assert_eq!(
            alloc_pages(&host, 1048576, 1, None, true).expect("host"),
            11
        );
        assert!(matches!(
            alloc_pages(&host, 4, 1, None, false),
            Err(NodeError::SystemPageSize { .. })
        ));
        assert_eq!(
            alloc_pages(&host, 3072, 1, None, false)
                .unwrap_err()
                .to_string(),
            "page size 3072 KiB is not available on this host (it has 2048 KiB, 1048576 KiB)"
        );
    }

    #[test]
    fn ksm_knobs_in_virsh_order() {
        let (_dir, host) = fake_host();
        let names: Vec<&str> = ksm(&host).expect("ksm").iter().map(|(n, _)| *n).collect();
        assert_eq!(names[0], "shm_pages_to_scan");
        assert_eq!(names.len(), 7, "no merge_across_nodes on this kernel");
        set_ksm(
            &host,
            &KsmSettings {
                pages_to_scan: Some(64),
                ..KsmSettings::default()
            },
        )
        .expect("set");
        assert_eq!(ksm(&host).expect("ksm")[0], ("shm_pages_to_scan", 64));
    }

    #[test]
    fn lists_collapse_into_ranges() {
        assert_eq!(
            format_cpu_list(&BTreeSet::from([0, 1, 2, 5, 7, 8])),
            "0-2,5,7-8"
        );
        assert_eq!(format_cpu_list(&BTreeSet::new()), "");
    }
}
