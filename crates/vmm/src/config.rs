//! Command line of `oxvirt-vmm` and the VM configuration it produces.

use std::path::PathBuf;

use clap::Parser;

use crate::cpuid::{CpuMode, FeatureOverrides, Topology};
use crate::devices::serial::SerialMode;
use crate::seccomp::SeccompMode;

/// A native KVM virtual machine monitor: boots a Linux kernel directly.
#[derive(Parser, Debug)]
#[command(name = "oxvirt-vmm", version, about)]
pub struct Cli {
    /// Kernel image (bzImage or ELF vmlinux).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
    /// Initial ramdisk (cpio, possibly several concatenated).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0 panic=-1")]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// sockets=S,cores=C,threads=T (product must equal --vcpus; default: one socket, N cores).
    #[arg(long, value_name = "SPEC")]
    pub topology: Option<Topology>,
    /// host-passthrough, host-model or custom:MODEL (qemu64, kvm64, Haswell-noTSX-IBRS).
    #[arg(long, value_name = "MODE", default_value = "host-passthrough")]
    pub cpu_mode: CpuMode,
    /// Feature overrides, e.g. +svm,-vmx.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cpu_features: FeatureOverrides,
    /// path=FILE[,readonly=on][,cache=none]; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<DiskSpec>,
    /// tap=NAME[,mac=MAC]; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<NetSpec>,
    /// Add a virtio-rng device.
    #[arg(long)]
    pub rng: bool,
    /// Console: stdio, file=PATH or socket=PATH.
    #[arg(long, value_name = "SPEC", default_value = "stdio", value_parser = parse_serial)]
    pub serial: SerialMode,
    /// Control API socket (JSON lines, see docs/native-vmm.md).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Back guest RAM with hugepages.
    #[arg(long)]
    pub hugepages: bool,
    /// Do not mark guest RAM mergeable for KSM (libvirt's <nosharepages/>).
    #[arg(long)]
    pub no_share_pages: bool,
    /// Seccomp filters: on (a forbidden system call kills the VMM), log (allowed but logged by the kernel,
    /// for debugging a filter) or off.
    #[arg(long, value_name = "MODE", default_value = "on")]
    pub seccomp: SeccompMode,
    /// Print the CPU flags (Linux /proc/cpuinfo names) the guest would see, then exit.
    #[arg(long)]
    pub print_cpu_flags: bool,
}

impl Cli {
    /// The topology to use, checked against the vCPU count.
    pub fn topology(&self) -> Result<Topology, String> {
        let t = self.topology.unwrap_or(Topology::flat(self.vcpus));
        if self.vcpus == 0 {
            return Err("--vcpus must be at least 1".into());
        }
        if t.vcpus() != self.vcpus {
            return Err(format!(
                "--topology sockets={},cores={},threads={} gives {} vCPUs but --vcpus is {}",
                t.sockets,
                t.cores,
                t.threads,
                t.vcpus(),
                self.vcpus
            ));
        }
        Ok(t)
    }
}

fn parse_serial(s: &str) -> Result<SerialMode, String> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        _ => match s.split_once('=') {
            Some(("file", p)) if !p.is_empty() => Ok(SerialMode::File(p.into())),
            Some(("socket", p)) if !p.is_empty() => Ok(SerialMode::Socket(p.into())),
            _ => Err(format!(
                "invalid --serial {s:?}: use stdio, file=PATH or socket=PATH"
            )),
        },
    }
}

/// Splits `k=v,k=v` and rejects unknown keys.
fn key_values<'a>(spec: &'a str, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    spec.split(',')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?} is not key=value"))?;
            if !allowed.contains(&k) {
                return Err(format!(
                    "unknown key {k:?} (allowed: {})",
                    allowed.join(", ")
                ));
            }
            Ok((k, v))
        })
        .collect()
}

fn on_off(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{k}={v:?}: use on or off")),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub readonly: bool,
    pub direct: bool,
    /// Stated, never guessed from the content (a raw disk may hold anything, a qcow2 header too).
    pub format: oxvirt_virtio::DiskFormat,
}

impl std::str::FromStr for DiskSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut d = DiskSpec {
            path: PathBuf::new(),
            readonly: false,
            direct: false,
            format: oxvirt_virtio::DiskFormat::Raw,
        };
        for (k, v) in key_values(s, &["path", "readonly", "cache", "format"])? {
            match k {
                "path" => d.path = v.into(),
                "readonly" => d.readonly = on_off(k, v)?,
                "format" => {
                    d.format = v.parse().map_err(|e: oxvirt_virtio::Error| e.to_string())?
                }
                _ => {
                    d.direct = match v {
                        "none" => true,
                        "writeback" => false,
                        _ => return Err(format!("cache={v:?}: use none or writeback")),
                    }
                }
            }
        }
        if d.path.as_os_str().is_empty() {
            return Err("disk needs path=FILE".into());
        }
        Ok(d)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("invalid MAC address {s:?}"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {s:?}"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("MAC address {s:?} is a multicast address"));
    }
    Ok(mac)
}

impl std::str::FromStr for NetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut n = NetSpec {
            tap: String::new(),
            mac: None,
        };
        for (k, v) in key_values(s, &["tap", "mac"])? {
            match k {
                "tap" => n.tap = v.into(),
                _ => n.mac = Some(parse_mac(v)?),
            }
        }
        if n.tap.is_empty() {
            return Err("net needs tap=NAME".into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let d: DiskSpec = "path=/x.img,readonly=on,cache=none".parse().unwrap();
        assert_eq!(
            d,
            DiskSpec {
                path: "/x.img".into(),
                readonly: true,
                direct: true,
                format: oxvirt_virtio::DiskFormat::Raw,
            }
        );
        let q: DiskSpec = "path=/x.qcow2,format=qcow2".parse().unwrap();
        assert_eq!(q.format, oxvirt_virtio::DiskFormat::Qcow2);
        let err = "path=/x,format=vmdk".parse::<DiskSpec>().unwrap_err();
        assert!(err.contains("vmdk"), "{err}");
        assert!("readonly=on"
            .parse::<DiskSpec>()
            .unwrap_err()
            .contains("path"));
        assert!("path=/x,colour=red"
            .parse::<DiskSpec>()
            .unwrap_err()
            .contains("colour"));
        assert!("path=/x,readonly=maybe".parse::<DiskSpec>().is_err());
    }

    #[test]
    fn net_specs() {
        let n: NetSpec = "tap=tap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!("tap=t,mac=01:00:00:00:00:00"
            .parse::<NetSpec>()
            .unwrap_err()
            .contains("multicast"));
        assert!("mac=52:54:00:12:34:56".parse::<NetSpec>().is_err());
    }

    #[test]
    fn full_command_line() {
        let cli = Cli::try_parse_from([
            "oxvirt-vmm",
            "--kernel",
            "k",
            "--memory",
            "256",
            "--vcpus",
            "4",
            "--topology",
            "sockets=2,cores=2",
            "--cpu-mode",
            "custom:kvm64",
            "--cpu-features",
            "-svm,+vmx",
            "--serial",
            "socket=/tmp/s",
            "--rng",
        ])
        .unwrap();
        assert_eq!(cli.topology().unwrap().vcpus(), 4);
        assert_eq!(cli.serial, SerialMode::Socket("/tmp/s".into()));
        assert_eq!(cli.cpu_features.disable, vec!["svm".to_string()]);
        let bad = Cli::try_parse_from([
            "oxvirt-vmm",
            "--kernel",
            "k",
            "--vcpus",
            "3",
            "--topology",
            "cores=2",
        ])
        .unwrap();
        assert!(bad.topology().unwrap_err().contains("gives 2 vCPUs"));
        assert!(Cli::try_parse_from(["oxvirt-vmm", "--kernel", "k", "--serial", "tcp"]).is_err());
    }
}
