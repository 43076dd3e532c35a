//! The workloads `oxvirt bench` runs on every target, their command lines and how their figures are read from
//! the tools' output. The same argv runs on the host (as a process) and in a guest (typed on its console), so
//! the only difference between targets is where it runs and which block device or file it reads.

use anyhow::{bail, Context};
use serde_json::Value;

/// How long each workload runs and how big the data disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A few seconds per workload: for tests and a quick look.
    Short,
    /// Half a minute per workload on a 1 GiB disk: figures worth comparing.
    Full,
}

impl Profile {
    pub const NAMES: &'static str = "short, full";

    pub fn parse(name: &str) -> anyhow::Result<Profile> {
        match name {
            "short" => Ok(Profile::Short),
            "full" => Ok(Profile::Full),
            other => bail!("unknown profile '{other}' (known: {})", Profile::NAMES),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Short => "short",
            Profile::Full => "full",
        }
    }

    /// Seconds each workload runs for.
    pub fn seconds(self) -> u32 {
        match self {
            Profile::Short => 2,
            Profile::Full => 30,
        }
    }

    /// Size of the data disk (and of the region fio works on), in MiB.
    pub fn disk_mib(self) -> u64 {
        match self {
            Profile::Short => 64,
            Profile::Full => 1024,
        }
    }
}

/// What a workload measures.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// sysbench cpu: prime numbers by trial division, one thread.
    Cpu,
    /// sysbench memory: sequential writes of 1 MiB blocks, one thread.
    Memory,
    /// fio on the data disk with direct I/O and libaio.
    Fio {
        rw: &'static str,
        block: &'static str,
        depth: u32,
    },
}

/// One workload: a row of every table.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Stable name, the key in the JSON report.
    pub id: &'static str,
    /// The unit of its figure (higher is better for every workload).
    pub unit: &'static str,
    kind: Kind,
}

const fn fio(id: &'static str, rw: &'static str, block: &'static str, depth: u32) -> Workload {
    let unit = if block.len() == 2 && block.as_bytes()[0] == b'4' {
        "IOPS"
    } else {
        "MiB/s"
    };
    Workload {
        id,
        unit,
        kind: Kind::Fio { rw, block, depth },
    }
}

/// Every workload, in the order they run and are printed.
pub const ALL: [Workload; 10] = [
    Workload {
        id: "cpu",
        unit: "events/s",
        kind: Kind::Cpu,
    },
    Workload {
        id: "memory",
        unit: "MiB/s",
        kind: Kind::Memory,
    },
    fio("randread-4k-qd1", "randread", "4k", 1),
    fio("randread-4k-qd32", "randread", "4k", 32),
    fio("randwrite-4k-qd1", "randwrite", "4k", 1),
    fio("randwrite-4k-qd32", "randwrite", "4k", 32),
    fio("read-1m-qd1", "read", "1M", 1),
    fio("read-1m-qd32", "read", "1M", 32),
    fio("write-1m-qd1", "write", "1M", 1),
    fio("write-1m-qd32", "write", "1M", 32),
];

impl Workload {
    /// The command line, with `disk` the file or block device fio works on. Every word is plain (no quoting
    /// needed), because the guest's shell reads it as typed.
    pub fn argv(&self, profile: Profile, disk: &str) -> Vec<String> {
        let seconds = profile.seconds();
        let words: Vec<String> = match self.kind {
            Kind::Cpu => vec![
                "sysbench".into(),
                "cpu".into(),
                "--threads=1".into(),
                format!("--time={seconds}"),
                "run".into(),
            ],
            Kind::Memory => vec![
                "sysbench".into(),
                "memory".into(),
                "--threads=1".into(),
                format!("--time={seconds}"),
                "--memory-block-size=1M".into(),
                // Large enough that the time limit, not the total, ends the run.
                "--memory-total-size=100000G".into(),
                "run".into(),
            ],
            Kind::Fio { rw, block, depth } => vec![
                "fio".into(),
                format!("--name={}", self.id),
                format!("--filename={disk}"),
                "--direct=1".into(),
                "--ioengine=libaio".into(),
                format!("--rw={rw}"),
                format!("--bs={block}"),
                format!("--iodepth={depth}"),
                format!("--size={}M", profile.disk_mib()),
                format!("--runtime={seconds}"),
                "--time_based".into(),
                "--randrepeat=0".into(),
                "--output-format=json".into(),
            ],
        };
        words
    }

    /// The figure in the tool's output (`output` may carry other lines around it).
    pub fn parse(&self, output: &str) -> anyhow::Result<f64> {
        let value = match self.kind {
            Kind::Cpu => sysbench_figure(output, "events per second:", "")?,
            Kind::Memory => sysbench_figure(output, "MiB transferred (", " MiB/sec)")?,
            Kind::Fio { rw, .. } => fio_figure(output, rw, self.unit)?,
        };
        if !(value.is_finite() && value > 0.0) {
            bail!("{} measured {value}, not a positive figure", self.id);
        }
        Ok(value)
    }
}

/// The number after `after` (up to `before`, or the end of the line) in sysbench's report.
fn sysbench_figure(output: &str, after: &str, before: &str) -> anyhow::Result<f64> {
    for line in output.lines() {
        if let Some((_, rest)) = line.split_once(after) {
            let number = match before {
                "" => rest,
                end => rest.split_once(end).map(|(n, _)| n).unwrap_or(rest),
            };
            return number
                .trim()
                .parse()
                .with_context(|| format!("sysbench printed '{}'", line.trim()));
        }
    }
    bail!("sysbench's output has no '{after}' line:\n{}", tail(output))
}

/// IOPS or MiB/s of the first job of fio's JSON report, which may follow other lines (fio's notices).
fn fio_figure(output: &str, rw: &str, unit: &str) -> anyhow::Result<f64> {
    let start = output
        .find("{\n")
        .or_else(|| output.find('{'))
        .with_context(|| format!("fio printed no JSON report:\n{}", tail(output)))?;
    let report: Value = serde_json::Deserializer::from_str(&output[start..])
        .into_iter::<Value>()
        .next()
        .context("fio's JSON report is empty")?
        .with_context(|| format!("fio's JSON report does not parse:\n{}", tail(output)))?;
    let direction = if rw.contains("read") { "read" } else { "write" };
    let job = &report["jobs"][0][direction];
    let figure = if unit == "IOPS" {
        job["iops"].as_f64()
    } else {
        // fio's "bw" is in KiB/s.
        job["bw"].as_f64().map(|kib| kib / 1024.0)
    };
    figure.with_context(|| format!("fio's JSON report has no jobs[0].{direction} figures"))
}

/// The last lines of a tool's output, for an error message.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_tools_reports() {
        let cpu = "CPU speed:\n    events per second:  1234.56\n\nGeneral statistics:\n";
        assert_eq!(ALL[0].parse(cpu).unwrap(), 1234.56);
        let memory = "Total operations: 10 ( 5.00 per second)\n\n10240.00 MiB transferred (5120.50 MiB/sec)\n";
        assert_eq!(ALL[1].parse(memory).unwrap(), 5120.5);
        let fio = "fio: some notice\n{\n  \"jobs\": [{\"read\": {\"iops\": 250.5, \"bw\": 1002}, \
                   \"write\": {\"iops\": 0, \"bw\": 0}}]\n}\n";
        assert_eq!(ALL[2].parse(fio).unwrap(), 250.5);
        let seq = "{\"jobs\": [{\"read\": {\"iops\": 0, \"bw\": 0}, \"write\": {\"iops\": 3, \"bw\": 2048}}]}";
        assert_eq!(ALL[8].parse(seq).unwrap(), 2.0);
        assert!(ALL[2].parse(seq).is_err(), "a zero figure is refused");
        assert!(ALL[0].parse("nothing").is_err());
    }

    #[test]
    fn units_follow_block_sizes() {
        let units: Vec<&str> = ALL.iter().map(|w| w.unit).collect();
        assert_eq!(
            units,
            [
                "events/s", "MiB/s", "IOPS", "IOPS", "IOPS", "IOPS", "MiB/s", "MiB/s", "MiB/s",
                "MiB/s"
            ]
        );
    }
}
