//! Guest memory: `setmem`, `setmaxmem`, `dommemstat`, with virsh's arguments and output.

use anyhow::bail;
use clap::Subcommand;
use oxvirt_api::{Client, DomainMemoryStats, MemoryRequest, StatsPeriodRequest};

use crate::commands::{block_on, Scope};
use crate::pool::parse_size;

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Change a domain's current memory: a running guest's through its balloon device, the
    /// next start's <currentMemory> with --config.
    Setmem {
        /// Domain name or UUID.
        domain: String,
        /// New size, a scaled integer (KiB without a suffix; b, K/KiB, M/MiB, G/GiB, KB, MB, ...).
        size: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Change a domain's maximum memory (<memory>) for its next start; a running guest's
    /// cannot change (no memory hotplug).
    Setmaxmem {
        /// Domain name or UUID.
        domain: String,
        /// New size, a scaled integer (KiB without a suffix; b, K/KiB, M/MiB, G/GiB, KB, MB, ...).
        size: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show a running domain's memory statistics (balloon size, the guest's own figures,
    /// the resident memory of its process), or with --period set how often the guest reports.
    Dommemstat {
        /// Domain name or UUID.
        domain: String,
        /// Seconds between the guest balloon driver's reports (0: none); with it, the
        /// command sets rather than shows (--live, --config, --current choose where).
        #[arg(long, allow_negative_numbers = true)]
        period: Option<i64>,
        #[command(flatten)]
        scope: Scope,
    },
}

/// A size argument in KiB, rounded up as libvirt rounds.
fn size_kib(text: &str) -> anyhow::Result<u64> {
    Ok(parse_size(text, 1024)?.div_ceil(1024))
}

fn memory_request(size: &str, scope: Scope) -> anyhow::Result<MemoryRequest> {
    Ok(MemoryRequest {
        size_kib: size_kib(size)?,
        live: scope.live,
        config: scope.config,
    })
}

pub fn run(client: &Client, command: MemoryCommand) -> anyhow::Result<String> {
    match command {
        MemoryCommand::Setmem {
            domain,
            size,
            scope,
        } => block_on(client.set_memory(&domain, &memory_request(&size, scope)?))??,
        MemoryCommand::Setmaxmem {
            domain,
            size,
            scope,
        } => block_on(client.set_max_memory(&domain, &memory_request(&size, scope)?))??,
        MemoryCommand::Dommemstat {
            domain,
            period,
            scope,
        } => return dommemstat(client, &domain, period, scope),
    };
    Ok(String::new())
}

/// Shows the statistics, or with `period` sets how often the guest reports them.
fn dommemstat(
    client: &Client,
    domain: &str,
    period: Option<i64>,
    scope: Scope,
) -> anyhow::Result<String> {
    let Some(period) = period else {
        if scope.live || scope.config || scope.current {
            bail!("--live, --config and --current go with --period (they say where the period is set)");
        }
        return Ok(stats_text(&block_on(client.memory_stats(domain))??));
    };
    let Ok(period) = u32::try_from(period) else {
        bail!("Invalid collection period value '{period}'");
    };
    let request = StatsPeriodRequest {
        period,
        live: scope.live,
        config: scope.config,
    };
    block_on(client.set_memory_stats_period(domain, &request))??;
    Ok(String::new())
}

/// virsh's lines: `name value`, one a statistic.
fn stats_text(stats: &DomainMemoryStats) -> String {
    stats
        .stats
        .iter()
        .map(|stat| format!("{} {}\n", stat.name, stat.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::MemoryStat;

    #[test]
    fn sizes_are_kib_unless_suffixed() {
        assert_eq!(size_kib("131072").unwrap(), 131072);
        assert_eq!(size_kib("128M").unwrap(), 131072);
        assert_eq!(size_kib("128MiB").unwrap(), 131072);
        assert_eq!(size_kib("1G").unwrap(), 1 << 20);
        assert_eq!(size_kib("1000b").unwrap(), 1);
        assert_eq!(size_kib("1MB").unwrap(), 977);
        assert!(size_kib("12X").is_err());
    }

    #[test]
    fn statistics_print_as_virsh() {
        let stats = DomainMemoryStats {
            stats: vec![
                MemoryStat {
                    name: "actual".into(),
                    value: 1_048_576,
                },
                MemoryStat {
                    name: "rss".into(),
                    value: 865_172,
                },
            ],
        };
        assert_eq!(stats_text(&stats), "actual 1048576\nrss 865172\n");
    }
}
