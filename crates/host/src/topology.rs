//! The host as libvirt's `<capabilities><host>` describes it: the CPU's identity (vendor,
//! signature, microcode, TSC, address width, flags), its topology per NUMA cell (memory, pages
//! of each size, distances, CPUs with their socket, die, core and thread siblings), the
//! shared caches and whether an IOMMU is active. Read through a [`HostView`] from the same
//! files libvirt reads: `/proc/cpuinfo`, `/sys/devices/system/cpu` and `node`,
//! `/sys/kernel/iommu_groups`.

use std::collections::BTreeSet;

use crate::affinity::cpu_list;
use crate::node::{
    self, cell_hugepages_dir, cell_meminfo, cells, huge_page_sizes, meminfo_value, online_cpus,
    system_page_kib, NodeError,
};
use crate::HostView;

/// Everything `<capabilities><host>` says of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTopology {
    /// The machine's UUID: SMBIOS's (`/sys/class/dmi/id/product_uuid`), or else
    /// `/etc/machine-id` written as a UUID (stable across restarts, where libvirt would make
    /// up a new one).
    pub uuid: String,
    pub cpu: HostCpuId,
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    /// The system page size, then each huge page size, in KiB.
    pub page_sizes_kib: Vec<u64>,
    pub cells: Vec<Cell>,
    pub caches: Vec<CacheBank>,
    /// An IOMMU is active (`/sys/kernel/iommu_groups` has groups).
    pub iommu: bool,
}

/// The first processor's identity, as `/proc/cpuinfo` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostCpuId {
    /// CPUID's vendor string (`AuthenticAMD`).
    pub vendor_id: String,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    pub microcode: Option<u64>,
    /// The TSC's frequency in Hz, when Linux knows it is constant (`constant_tsc`).
    pub tsc_hz: Option<u64>,
    /// Physical address bits.
    pub phys_bits: Option<u32>,
    /// Linux's flags, in its order.
    pub flags: Vec<String>,
}

/// One NUMA cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub id: u32,
    pub memory_kib: u64,
    /// (page size in KiB, how many pages of it the cell has), the system page size first.
    pub pages: Vec<(u64, u64)>,
    /// (cell, distance) for every cell.
    pub distances: Vec<(u32, u32)>,
    pub cpus: Vec<CellCpu>,
}

/// One logical CPU of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCpu {
    pub id: u32,
    pub socket: u32,
    pub die: u32,
    pub core: u32,
    /// Its thread siblings, in the kernel's list format (`0-1`).
    pub siblings: String,
}

/// One shared cache (level 3 and above, as libvirt lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheBank {
    pub id: u32,
    pub level: u32,
    /// libvirt's names: `both`, `data`, `code`.
    pub kind: &'static str,
    pub size_kib: u64,
    /// The CPUs sharing it, in the kernel's list format.
    pub cpus: String,
}

/// The host's topology, CPU identity, caches and IOMMU.
pub fn host_topology(host: &HostView) -> Result<HostTopology, NodeError> {
    let info = node::node_info(host)?;
    let online = online_cpus(host)?;
    let mut cell_ids = cells(host);
    let numa = !cell_ids.is_empty();
    if !numa {
        cell_ids.insert(0);
    }
    let mut dies = BTreeSet::new();
    let mut cell_list = Vec::new();
    for id in &cell_ids {
        let cpus: BTreeSet<u32> = if numa {
            host.value(&format!("/sys/devices/system/node/node{id}/cpulist"))
                .map(|list| cpu_list(&list))
                .unwrap_or_default()
        } else {
            online.clone()
        };
        let cpus: Vec<CellCpu> = cpus
            .into_iter()
            .filter(|cpu| online.contains(cpu))
            .map(|cpu| {
                let topology = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
                let number = |file: &str| {
                    host.value(&format!("{topology}/{file}"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let place = CellCpu {
                    id: cpu,
                    socket: number("physical_package_id"),
                    die: number("die_id"),
                    core: number("core_id"),
                    siblings: host
                        .value(&format!("{topology}/thread_siblings_list"))
                        .unwrap_or_else(|| cpu.to_string()),
                };
                dies.insert((place.socket, place.die));
                place
            })
            .collect();
        let memory_kib = if numa {
            meminfo_value(&cell_meminfo(host, *id)?, "MemTotal").unwrap_or(0)
        } else {
            info.memory_kib
        };
        let mut pages = vec![(system_page_kib(), memory_kib / system_page_kib())];
        for size_kib in huge_page_sizes(host) {
            let count = if numa {
                host.value(&format!(
                    "{}/nr_hugepages",
                    cell_hugepages_dir(*id, size_kib)
                ))
            } else {
                host.value(&format!(
                    "/sys/kernel/mm/hugepages/hugepages-{size_kib}kB/nr_hugepages"
                ))
            };
            pages.push((size_kib, count.and_then(|v| v.parse().ok()).unwrap_or(0)));
        }
        let distances = host
            .value(&format!("/sys/devices/system/node/node{id}/distance"))
            .map(|line| {
                cell_ids
                    .iter()
                    .copied()
                    .zip(line.split_whitespace().filter_map(|d| d.parse().ok()))
                    .collect()
            })
            .unwrap_or_else(|| vec![(*id, 10)]);
        cell_list.push(Cell {
            id: *id,
            memory_kib,
            pages,
            distances,
            cpus,
        });
    }
    let sockets_total = cell_list
        .iter()
        .flat_map(|c| c.cpus.iter().map(|cpu| cpu.socket))
        .collect::<BTreeSet<_>>()
        .len()
        .max(1) as u32;
    let mut page_sizes_kib = vec![system_page_kib()];
    page_sizes_kib.extend(huge_page_sizes(host));
    Ok(HostTopology {
        uuid: host_uuid(host),
        cpu: cpu_id(host),
        sockets: info.sockets,
        dies: (dies.len() as u32 / sockets_total).max(1),
        cores: info.cores,
        threads: info.threads,
        page_sizes_kib,
        cells: cell_list,
        caches: caches(host, &online),
        iommu: std::fs::read_dir(host.path("/sys/kernel/iommu_groups"))
            .is_ok_and(|mut dir| dir.next().is_some()),
    })
}

fn host_uuid(host: &HostView) -> String {
    if let Some(uuid) = host
        .value("/sys/class/dmi/id/product_uuid")
        .filter(|u| u.len() == 36)
    {
        return uuid.to_lowercase();
    }
    let id = host.value("/etc/machine-id").unwrap_or_default();
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The first processor's fields of `/proc/cpuinfo`.
fn cpu_id(host: &HostView) -> HostCpuId {
    let Some(info) = host.read("/proc/cpuinfo") else {
        return HostCpuId::default();
    };
    let first = info.split("\n\n").next().unwrap_or_default();
    let field = |key: &str| {
        first.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_string())
        })
    };
    let number = |key: &str| field(key).and_then(|v| v.parse().ok());
    let flags = host.cpu_flags();
    let constant_tsc = flags.iter().any(|f| f == "constant_tsc");
    HostCpuId {
        vendor_id: field("vendor_id").unwrap_or_default(),
        family: number("cpu family"),
        model: number("model"),
        stepping: number("stepping"),
        microcode: field("microcode").and_then(|v| {
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |hex| u64::from_str_radix(hex, 16).ok())
        }),
        // The clock Linux measured, in kHz precision as /proc/cpuinfo prints it (libvirt asks
        // KVM, which gives the same figure on a constant TSC).
        tsc_hz: constant_tsc
            .then(|| field("cpu MHz")?.parse::<f64>().ok())
            .flatten()
            .map(|mhz| (mhz * 1000.0).round() as u64 * 1000),
        phys_bits: field("address sizes").and_then(|v| v.split_whitespace().next()?.parse().ok()),
        flags,
    }
}

/// The caches of level 3 and above, one per bank (CPUs sharing one bank list the same).
fn caches(host: &HostView, online: &BTreeSet<u32>) -> Vec<CacheBank> {
    let mut banks: Vec<CacheBank> = Vec::new();
    for cpu in online {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
        for index in 0.. {
            let entry = format!("{dir}/index{index}");
            let Some(level) = host.value(&format!("{entry}/level")) else {
                break;
            };
            let Ok(level) = level.parse::<u32>() else {
                continue;
            };
            if level < 3 {
                continue;
            }
            let kind = match host.value(&format!("{entry}/type")).as_deref() {
                Some("Data") => "data",
                Some("Instruction") => "code",
                _ => "both",
            };
            let id = host
                .value(&format!("{entry}/id"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let size_kib = host
                .value(&format!("{entry}/size"))
                .and_then(|v| v.trim_end_matches('K').parse().ok())
                .unwrap_or(0);
            let cpus = host
                .value(&format!("{entry}/shared_cpu_list"))
                .unwrap_or_else(|| cpu.to_string());
            if !banks
                .iter()
                .any(|b| b.level == level && b.id == id && b.kind == kind)
            {
                banks.push(CacheBank {
                    id,
                    level,
                    kind,
                    size_kib,
                    cpus,
                });
            }
        }
    }
    banks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, path: &str, text: &str) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// One cell, one socket, two cores: what this kind of machine shows.
    #[test]
    fn topology_of_a_two_core_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
                       model\t\t: 17\nstepping\t: 1\nmicrocode\t: 0x1000065\n\
                       cpu MHz\t\t: 2596.130\nflags\t\t: fpu constant_tsc nonstop_tsc\n\
                       address sizes\t: 48 bits physical, 48 bits virtual\n\nprocessor\t: 1\n";
        let node = "/sys/devices/system/node/node0";
        let files = [
            ("/proc/cpuinfo".to_string(), cpuinfo),
            ("/proc/meminfo".into(), "MemTotal:       24683568 kB\n"),
            ("/sys/devices/system/cpu/online".into(), "0-1\n"),
            ("/sys/devices/system/node/online".into(), "0\n"),
            (format!("{node}/cpulist"), "0-1\n"),
            (format!("{node}/distance"), "10\n"),
            (
                format!("{node}/meminfo"),
                "Node 0 MemTotal:       24683568 kB\n",
            ),
            (
                "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages".into(),
                "0\n",
            ),
            (
                format!("{node}/hugepages/hugepages-2048kB/nr_hugepages"),
                "3\n",
            ),
        ];
        for (path, text) in &files {
            write(root, path, text);
        }
        for cpu in 0..2 {
            let topology = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            write(root, &format!("{topology}/physical_package_id"), "0\n");
            write(root, &format!("{topology}/die_id"), "0\n");
            write(root, &format!("{topology}/core_id"), &format!("{cpu}\n"));
            write(
                root,
                &format!("{topology}/thread_siblings_list"),
                &format!("{cpu}\n"),
            );
            let cache = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
            for (index, level, kind, size) in [
                (0, 1, "Data", "32K"),
                (1, 2, "Unified", "1024K"),
                (2, 3, "Unified", "32768K"),
            ] {
                write(
                    root,
                    &format!("{cache}/index{index}/level"),
                    &format!("{level}\n"),
                );
                write(root, &format!("{cache}/index{index}/type"), kind);
                write(root, &format!("{cache}/index{index}/size"), size);
                write(root, &format!("{cache}/index{index}/id"), "0");
                write(
                    root,
                    &format!("{cache}/index{index}/shared_cpu_list"),
                    if level == 3 { "0-1" } else { "0" },
                );
            }
        }
        let topology = host_topology(&HostView::at(root)).expect("topology");
        assert_eq!(
            (
                topology.sockets,
                topology.dies,
                topology.cores,
                topology.threads
            ),
            (1, 1, 2, 1)
        );
        assert_eq!(topology.cpu.vendor_id, "AuthenticAMD");
        assert_eq!(topology.cpu.microcode, Some(16777317));
        assert_eq!(topology.cpu.tsc_hz, Some(2_596_130_000));
        assert_eq!(topology.cpu.phys_bits, Some(48));
        assert_eq!(topology.cells.len(), 1);
        let cell = &topology.cells[0];
        assert_eq!(cell.memory_kib, 24683568);
        assert_eq!(cell.pages[1], (2048, 3));
        assert_eq!(cell.distances, [(0, 10)]);
        assert_eq!(cell.cpus[1].core, 1);
        assert_eq!(
            topology.caches,
            [CacheBank {
                id: 0,
                level: 3,
                kind: "both",
                size_kib: 32768,
                cpus: "0-1".into()
            }]
        );
        assert!(!topology.iommu);
        // No SMBIOS, no machine-id: zeros, still a UUID's shape.
        assert_eq!(topology.uuid, "00000000-0000-0000-0000-000000000000");
        write(
            root,
            "/etc/machine-id",
            "3d1219c7c4c5404aaa1f6d2a48adfda4\n",
        );
        let topology = host_topology(&HostView::at(root)).expect("topology");
        assert_eq!(topology.uuid, "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4");
    }
}
