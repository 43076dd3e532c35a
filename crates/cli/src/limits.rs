//! A guest's CPU, memory and block I/O limits (its cgroups): `schedinfo`, `memtune` and
//! `blkiotune`, with virsh's arguments and output.

use anyhow::{bail, Context};
use clap::Subcommand;
use oxvirt_api::{
    BlkioParam, BlkioRequest, BlkioSetting, BlkioValues, Client, LimitValue, LimitValues,
    LimitsRequest,
};

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
    /// Show or set a domain's block I/O weight and its weights and throttles per host block
    /// device (its blkio cgroup; a device value of 0 removes that setting).
    Blkiotune {
        /// Domain name or UUID.
        domain: String,
        /// The guest's I/O weight (10..1000).
        #[arg(long, allow_hyphen_values = true)]
        weight: Option<String>,
        /// /path/to/device,weight[,/path/to/device,weight]...
        #[arg(long, value_name = "LIST")]
        device_weights: Option<String>,
        /// /path/to/device,IOPS[,...]: reads per second.
        #[arg(long, value_name = "LIST")]
        device_read_iops_sec: Option<String>,
        /// /path/to/device,IOPS[,...]: writes per second.
        #[arg(long, value_name = "LIST")]
        device_write_iops_sec: Option<String>,
        /// /path/to/device,BYTES[,...]: bytes read per second.
        #[arg(long, value_name = "LIST")]
        device_read_bytes_sec: Option<String>,
        /// /path/to/device,BYTES[,...]: bytes written per second.
        #[arg(long, value_name = "LIST")]
        device_write_bytes_sec: Option<String>,
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
        LimitsCommand::Blkiotune {
            domain,
            weight,
            device_weights,
            device_read_iops_sec,
            device_write_iops_sec,
            device_read_bytes_sec,
            device_write_bytes_sec,
            scope,
        } => blkiotune(
            client,
            &domain,
            weight,
            [
                (BlkioParam::DeviceWeight, device_weights),
                (BlkioParam::DeviceReadIopsSec, device_read_iops_sec),
                (BlkioParam::DeviceWriteIopsSec, device_write_iops_sec),
                (BlkioParam::DeviceReadBytesSec, device_read_bytes_sec),
                (BlkioParam::DeviceWriteBytesSec, device_write_bytes_sec),
            ],
            scope,
        ),
    }
}

/// `blkiotune`'s arguments as virsh reads them (and its words for bad ones), then its lines.
fn blkiotune(
    client: &Client,
    domain: &str,
    weight: Option<String>,
    lists: [(BlkioParam, Option<String>); 5],
    scope: Scope,
) -> anyhow::Result<String> {
    let weight = match weight {
        None => None,
        Some(text) => {
            let value: i64 = text.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "Numeric value '{text}' for <weight> option is malformed or out of range"
                )
            })?;
            if value <= 0 {
                bail!("Invalid value of {value} for I/O weight");
            }
            match u32::try_from(value) {
                Ok(value) => Some(value),
                Err(_) => {
                    bail!("Numeric value '{text}' for <weight> option is malformed or out of range")
                }
            }
        }
    };
    let mut devices = Vec::new();
    for (param, list) in lists {
        if let Some(list) = list {
            devices.extend(device_list(param, &list)?);
        }
    }
    let setting = weight.is_some() || !devices.is_empty();
    let request = BlkioRequest {
        weight,
        devices,
        live: scope.live,
        config: scope.config,
    };
    let answer = block_on(client.blkiotune(domain, &request))??;
    if setting {
        return Ok(String::new());
    }
    Ok(blkio_lines(&answer))
}

/// virsh's `/path,value[,/path,value]...` list of one parameter.
fn device_list(param: BlkioParam, list: &str) -> anyhow::Result<Vec<BlkioSetting>> {
    let name = param.name();
    let parts: Vec<&str> = list.split(',').collect();
    if parts.len() % 2 != 0 || parts.iter().any(|p| p.is_empty()) {
        bail!("invalid argument: unable to parse blkio device '{name}' '{list}'");
    }
    parts
        .chunks(2)
        .map(|pair| {
            let (path, value) = (pair[0], pair[1]);
            let value: u64 = value.parse().map_err(|_| {
                anyhow::anyhow!(
                    "invalid argument: invalid value '{value}' for parameter '{name}' of device '{path}'"
                )
            })?;
            Ok(BlkioSetting {
                path: path.to_string(),
                param,
                value,
            })
        })
        .collect()
}

/// virsh's lines: the weight, then per parameter the devices that have it, `path,value`
/// joined with commas (an empty list prints nothing after the colon).
fn blkio_lines(values: &BlkioValues) -> String {
    let mut text = format!("{:<15}: {}\n", "weight", values.weight);
    for param in BlkioParam::ALL {
        let list: Vec<String> = values
            .devices
            .iter()
            .filter(|d| d.get(param) != 0)
            .map(|d| format!("{},{}", d.path, d.get(param)))
            .collect();
        text.push_str(&format!("{:<15}: {}\n", param.name(), list.join(",")));
    }
    text
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
