//! The host (libvirt's "node"): `nodeinfo`, `nodecpumap`, `nodecpustats`, `nodememstats`,
//! `freecell`, `freepages`, `allocpages`, `node-memory-tune`, with virsh's arguments and output.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use oxvirt_api::{AllocPages, Client, FreePages, KsmSettings, NodeValues};

use crate::commands::block_on;
use crate::pool::parse_size;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Show the host's CPUs, their topology and its memory size.
    Nodeinfo,
    /// Show which of the host's CPUs are present and online.
    Nodecpumap {
        /// The online CPUs as a list (0-3,6) instead of a map.
        #[arg(long)]
        pretty: bool,
    },
    /// Show the time the host's CPUs (or one) spent in each state, or the shares of the next
    /// second with --percent.
    Nodecpustats {
        /// One host CPU.
        #[arg(long)]
        cpu: Option<u32>,
        /// Shares of one second measured now, instead of totals since boot.
        #[arg(long)]
        percent: bool,
    },
    /// Show the host's memory (or one NUMA cell's).
    Nodememstats {
        /// One NUMA cell.
        #[arg(long)]
        cell: Option<u32>,
    },
    /// Show the free memory of the host, of one NUMA cell, or of each.
    Freecell {
        /// One NUMA cell.
        #[arg(long)]
        cellno: Option<u32>,
        /// Each cell, then the total.
        #[arg(long, conflicts_with = "cellno")]
        all: bool,
    },
    /// Show the free pages of each size (the system's and huge pages) of a NUMA cell, or of each.
    Freepages {
        /// The NUMA cell.
        #[arg(long)]
        cellno: Option<u32>,
        /// One page size (scaled integer, default KiB: 2048, 2M, 1G).
        #[arg(long)]
        pagesize: Option<String>,
        /// Each cell.
        #[arg(long, conflicts_with_all = ["cellno", "pagesize"])]
        all: bool,
    },
    /// Size a pool of huge pages: on the host, on one NUMA cell, or on each.
    Allocpages {
        /// The huge page size (scaled integer, default KiB: 2048, 2M, 1G).
        pagesize: String,
        /// How many pages the pool should have (with --add: how many more).
        pagecount: u64,
        /// One NUMA cell.
        #[arg(long)]
        cellno: Option<u32>,
        /// Grow the pool by PAGECOUNT instead of sizing it to PAGECOUNT.
        #[arg(long)]
        add: bool,
        /// Each NUMA cell.
        #[arg(long, conflicts_with = "cellno")]
        all: bool,
    },
    /// Show or set the host's kernel same-page merging (KSM) knobs.
    NodeMemoryTune {
        /// Pages KSM scans before it sleeps.
        #[arg(long)]
        shm_pages_to_scan: Option<u64>,
        /// Milliseconds KSM sleeps between scans.
        #[arg(long)]
        shm_sleep_millisecs: Option<u64>,
        /// 1: merge pages of different NUMA cells; 0: only within a cell.
        #[arg(long)]
        shm_merge_across_nodes: Option<u64>,
    },
}

pub fn run(client: &Client, command: NodeCommand) -> anyhow::Result<String> {
    match command {
        NodeCommand::Nodeinfo => {
            let info = block_on(client.node_info())??;
            let lines = [
                ("CPU model:", info.arch),
                ("CPU(s):", info.cpus.to_string()),
                ("CPU frequency:", format!("{} MHz", info.mhz)),
                ("CPU socket(s):", info.sockets.to_string()),
                ("Core(s) per socket:", info.cores.to_string()),
                ("Thread(s) per core:", info.threads.to_string()),
                ("NUMA cell(s):", info.cells.to_string()),
                ("Memory size:", format!("{} KiB", info.memory_kib)),
            ];
            Ok(lines
                .iter()
                .map(|(name, value)| format!("{name:<20} {value}\n"))
                .collect())
        }
        NodeCommand::Nodecpumap { pretty } => {
            let map = block_on(client.node_cpu_map())??;
            let cpu_map = if pretty {
                cpu_ranges(&map.online)
            } else {
                let last = map.present.iter().copied().max().unwrap_or(0);
                (0..=last)
                    .map(|cpu| if map.online.contains(&cpu) { 'y' } else { '-' })
                    .collect()
            };
            Ok(format!(
                "{:<15} {}\n{:<15} {}\n{:<15} {}\n",
                "CPUs present:",
                map.present.len(),
                "CPUs online:",
                map.online.len(),
                "CPU map:",
                cpu_map
            ))
        }
        NodeCommand::Nodecpustats { cpu, percent } => {
            let first = block_on(client.node_cpu_stats(cpu))??;
            if !percent {
                return Ok(first
                    .values
                    .iter()
                    .map(|v| format!("{:<15} {:>20}\n", format!("{}:", v.name), v.value))
                    .collect());
            }
            // As virsh: two samples one second apart, the shares of what happened between.
            std::thread::sleep(Duration::from_secs(1));
            let second = block_on(client.node_cpu_stats(cpu))??;
            Ok(cpu_shares(&first, &second))
        }
        NodeCommand::Nodememstats { cell } => {
            let stats = block_on(client.node_memory_stats(cell))??;
            Ok(stats
                .values
                .iter()
                .map(|v| format!("{:<7}: {:>20} KiB\n", v.name, v.value))
                .collect())
        }
        NodeCommand::Freecell { cellno, all } => {
            let cells = block_on(client.node_free_cells())??.cells;
            let total: u64 = cells.iter().map(|c| c.free_kib).sum();
            if let Some(cell) = cellno {
                let Some(found) = cells.iter().find(|c| c.cell == cell) else {
                    bail!(
                        "start cell {cell} out of range ({})",
                        cell_range(cells.iter().map(|c| c.cell))
                    );
                };
                return Ok(format!("{}: {} KiB\n", found.cell, found.free_kib));
            }
            if !all {
                return Ok(format!("Total: {total} KiB\n"));
            }
            let mut text: String = cells
                .iter()
                .map(|c| format!("{:>5}: {:>10} KiB\n", c.cell, c.free_kib))
                .collect();
            text.push_str("--------------------\n");
            text.push_str(&format!("{:>5}: {:>10} KiB\n", "Total", total));
            Ok(text)
        }
        NodeCommand::Freepages {
            cellno,
            pagesize,
            all,
        } => {
            let size_kib = pagesize.as_deref().map(page_size_kib).transpose()?;
            if all {
                let cells = block_on(client.node_free_cells())??.cells;
                let mut text = String::new();
                for cell in cells {
                    let pages = block_on(client.node_free_pages(cell.cell))??;
                    text.push_str(&format!("Node {}:\n{}\n", cell.cell, pages_text(&pages)));
                }
                return Ok(text);
            }
            let Some(cell) = cellno else {
                bail!("missing cellno argument");
            };
            let mut pages = block_on(client.node_free_pages(cell))??;
            if let Some(size_kib) = size_kib {
                pages.pages.retain(|p| p.size_kib == size_kib);
                if pages.pages.is_empty() {
                    bail!("page size {size_kib} is not available on node {cell}");
                }
            }
            Ok(pages_text(&pages))
        }
        NodeCommand::Allocpages {
            pagesize,
            pagecount,
            cellno,
            add,
            all,
        } => {
            let size_kib = page_size_kib(&pagesize)?;
            let cells: Vec<Option<u32>> = if all {
                let cells = block_on(client.node_free_cells())??.cells;
                cells.into_iter().map(|c| Some(c.cell)).collect()
            } else {
                vec![cellno]
            };
            for cell in cells {
                let request = AllocPages {
                    size_kib,
                    count: pagecount,
                    cell,
                    add,
                };
                block_on(client.node_alloc_pages(&request))??;
            }
            Ok(String::new())
        }
        NodeCommand::NodeMemoryTune {
            shm_pages_to_scan,
            shm_sleep_millisecs,
            shm_merge_across_nodes,
        } => {
            let settings = KsmSettings {
                pages_to_scan: shm_pages_to_scan,
                sleep_millisecs: shm_sleep_millisecs,
                merge_across_nodes: shm_merge_across_nodes,
            };
            if settings != KsmSettings::default() {
                block_on(client.node_set_ksm(&settings))??;
                return Ok(String::new());
            }
            let knobs = block_on(client.node_ksm())??;
            let mut text = String::from("Shared memory:\n");
            for v in &knobs.values {
                text.push_str(&format!("\t{:<15} {}\n", v.name, v.value));
            }
            Ok(text)
        }
    }
}

/// A page size argument: a scaled integer whose default unit is KiB, in KiB.
fn page_size_kib(text: &str) -> anyhow::Result<u64> {
    let bytes = parse_size(text, 1024)?;
    if bytes == 0 || bytes % 1024 != 0 {
        bail!("invalid argument: page size '{text}' is not a whole number of KiB");
    }
    Ok(bytes / 1024)
}

fn pages_text(pages: &FreePages) -> String {
    pages
        .pages
        .iter()
        .map(|p| format!("{}KiB: {}\n", p.size_kib, p.count))
        .collect()
}

/// virsh's `nodecpustats --percent`: each state's share of the time between two samples;
/// `usage` is user and system together.
fn cpu_shares(first: &NodeValues, second: &NodeValues) -> String {
    let delta = |name: &str| {
        let value = |sample: &NodeValues| {
            sample
                .values
                .iter()
                .find(|v| v.name == name)
                .map_or(0, |v| v.value)
        };
        value(second).saturating_sub(value(first)) as f64
    };
    let (user, system, idle, iowait) = (
        delta("user"),
        delta("system"),
        delta("idle"),
        delta("iowait"),
    );
    let total = (user + system + idle + iowait).max(1.0);
    let share = |part: f64| part / total * 100.0;
    [
        ("usage:", share(user + system)),
        ("user:", share(user)),
        ("system:", share(system)),
        ("idle:", share(idle)),
        ("iowait:", share(iowait)),
    ]
    .iter()
    .map(|(name, value)| format!("{name:<15} {value:>5.1}%\n"))
    .collect()
}

/// `0-1` for a sorted list of CPUs (libvirt's list format).
fn cpu_ranges(cpus: &[u32]) -> String {
    oxvirt_host::node::format_cpu_list(&cpus.iter().copied().collect())
}

fn cell_range(cells: impl Iterator<Item = u32>) -> String {
    let cells: Vec<u32> = cells.collect();
    format!(
        "{}-{}",
        cells.first().copied().unwrap_or(0),
        cells.last().copied().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::NodeValue;

    fn sample(values: [u64; 4]) -> NodeValues {
        NodeValues {
            values: ["user", "system", "idle", "iowait"]
                .iter()
                .zip(values)
                .map(|(name, value)| NodeValue {
                    name: name.to_string(),
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn shares_are_printed_as_virsh_prints_them() {
        let text = cpu_shares(&sample([0, 0, 0, 0]), &sample([10, 10, 970, 10]));
        assert_eq!(
            text,
            "usage:            2.0%\nuser:             1.0%\nsystem:           1.0%\nidle:            97.0%\niowait:           1.0%\n"
        );
    }

    #[test]
    fn page_sizes_default_to_kib() {
        assert_eq!(page_size_kib("2048").expect("kib"), 2048);
        assert_eq!(page_size_kib("2M").expect("mib"), 2048);
        assert_eq!(page_size_kib("1G").expect("gib"), 1048576);
        assert!(page_size_kib("0").is_err());
    }
}
