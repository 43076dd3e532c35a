//! A guest's CPU and memory limits (its cgroups): `schedinfo` and `memtune`, with virsh's
//! arguments and output.

use anyhow::{bail, Context};
use clap::Subcommand;
use oxvirt_api::{Client, LimitValue, LimitValues, LimitsRequest};

use crate::commands::{block_on, Scope};
use crate::pool::parse_size;

#[derive(Subcommand, Debug)]
pub enum LimitsCommand {
    /// Show or set a domain's CPU shares and its vCPUs' and emulator's CFS period and quota.
    Schedinfo {
        /// Domain name or UUID.
        domain: String,
        /// NAME=VALUE to set (cpu_shares, vcpu_period, vcpu_quota, emulator_period,
        /// emulator_quota; a quota of -1 is none).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// NAME=VALUE to set, as --set.
        #[arg(value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show or set a domain's memory limits (scaled integers, default KiB; -1: unlimited).
    Memtune {
        /// Domain name or UUID.
        domain: String,
        /// The most host memory the guest's process may use.
        #[arg(long, allow_hyphen_values = true)]
        hard_limit: Option<String>,
        /// What it is pushed back to when the host runs short.
        #[arg(long, allow_hyphen_values = true)]
        soft_limit: Option<String>,
        /// The most memory and swap together.
        #[arg(long, allow_hyphen_values = true)]
        swap_hard_limit: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
}

pub fn run(client: &Client, command: LimitsCommand) -> anyhow::Result<String> {
    match command {
        LimitsCommand::Schedinfo {
            domain,
            set,
            params,
            scope,
        } => {
            let mut values = Vec::new();
            for pair in set.iter().chain(&params) {
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("invalid argument: '{pair}' is not NAME=VALUE"))?;
                let value: i64 = value.trim().parse().with_context(|| {
                    format!("invalid argument: '{value}' is not a number (in '{pair}')")
                })?;
                values.push(LimitValue {
                    name: name.trim().to_string(),
                    value,
                });
            }
            let request = LimitsRequest {
                set: values,
                live: scope.live,
                config: scope.config,
            };
            let answer = block_on(client.schedinfo(&domain, &request))??;
            let mut text = format!("{:<15}: posix\n", "Scheduler");
            text.push_str(&lines(&answer, |v| v.to_string()));
            Ok(text)
        }
        LimitsCommand::Memtune {
            domain,
            hard_limit,
            soft_limit,
            swap_hard_limit,
            scope,
        } => {
            let mut values = Vec::new();
            for (name, size) in [
                ("hard_limit", hard_limit),
                ("soft_limit", soft_limit),
                ("swap_hard_limit", swap_hard_limit),
            ] {
                if let Some(size) = size {
                    values.push(LimitValue {
                        name: name.to_string(),
                        value: memory_kib(&size)
                            .with_context(|| format!("--{}", name.replace('_', "-")))?,
                    });
                }
            }
            let setting = !values.is_empty();
            let request = LimitsRequest {
                set: values,
                live: scope.live,
                config: scope.config,
            };
            let answer = block_on(client.memtune(&domain, &request))??;
            if setting {
                return Ok(String::new());
            }
            Ok(lines(&answer, |v| {
                if v < 0 {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            }))
        }
    }
}

/// virsh's `name           : value` lines.
fn lines(values: &LimitValues, show: impl Fn(i64) -> String) -> String {
    values
        .values
        .iter()
        .map(|v| format!("{:<15}: {}\n", v.name, show(v.value)))
        .collect()
}

/// A memory size in KiB: a scaled integer (default KiB), or -1 for unlimited.
fn memory_kib(text: &str) -> anyhow::Result<i64> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    let kib = parse_size(text, 1024)? / 1024;
    match i64::try_from(kib) {
        Ok(kib) => Ok(kib),
        Err(_) => bail!("invalid argument: '{text}' is too large"),
    }
}
