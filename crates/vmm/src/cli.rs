//! `oxvirt-vmm`'s command line, one of the front ends of [`VmConfig`]: either `--config FILE`
//! (the config as JSON) or the VM flags, which build the same struct. Nothing else in the VMM
//! reads the command line.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::protocol::{
    BalloonSettings, ConfigError, CpuFeatures, CpuMode, CpusConfig, DiskCache, DiskConfig,
    JailConfig, MacAddress, MemoryConfig, NetConfig, RestoreSource, SeccompMode, SerialMode,
    Topology, VmConfig,
};

/// The flags that describe the VM; `--config` replaces them all.
const VM_FLAGS: [&str; 21] = [
    "kernel",
    "initrd",
    "cmdline",
    "memory",
    "vcpus",
    "topology",
    "cpu_mode",
    "cpu_features",
    "disk",
    "net",
    "rng",
    "balloon",
    "serial",
    "api_socket",
    "hugepages",
    "no_share_pages",
    "seccomp",
    "exit_record",
    "jail",
    "uid",
    "gid",
];

/// A native KVM virtual machine monitor: boots a Linux kernel directly.
#[derive(Parser, Debug)]
#[command(name = "oxvirt-vmm", version, about)]
pub struct Cli {
    /// The whole VM configuration as a JSON file (see docs/native-vmm.md), instead of the flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = VM_FLAGS)]
    pub config: Option<PathBuf>,
    /// Kernel image (bzImage or ELF vmlinux).
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (cpio, possibly several concatenated).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = crate::protocol::config::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = crate::protocol::config::DEFAULT_MEMORY_MIB)]
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
    pub cpu_features: CpuFeatures,
    /// path=FILE[,format=raw|qcow2][,readonly=on][,cache=none][,id=NAME]; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<DiskConfig>,
    /// tap=NAME[,mac=MAC]; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<NetConfig>,
    /// Add a virtio-rng device.
    #[arg(long)]
    pub rng: bool,
    /// Add a virtio-balloon device; its statistics refresh every SECONDS (0: never).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "0")]
    pub balloon: Option<u32>,
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
    /// Before exiting, write why the VM ended to this file (JSON, see docs/native-vmm.md).
    #[arg(long, value_name = "FILE")]
    pub exit_record: Option<PathBuf>,
    /// Confine the VMM once it has opened what the VM uses: DIR becomes its (empty, read-only)
    /// root, in new mount, IPC and network namespaces, as --uid/--gid with no new privileges
    /// (docs/native-vmm.md, "The jail"). It must be PID 1 of a new PID namespace: run it under
    /// `unshare --pid --fork`.
    #[arg(long, value_name = "DIR", requires_all = ["uid", "gid"])]
    pub jail: Option<PathBuf>,
    /// The user a jailed VMM runs as (not 0).
    #[arg(long, value_name = "UID", requires = "jail")]
    pub uid: Option<u32>,
    /// The group a jailed VMM runs as (not 0).
    #[arg(long, value_name = "GID", requires = "jail")]
    pub gid: Option<u32>,
    /// Start from the machine state saved in FILE (the control request `save`) instead of booting; the
    /// VM starts paused. The other options must describe the saved VM (memory, vCPUs, devices).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// Start every vCPU thread but hold it before the guest's first instruction until the control
    /// API's `resume` (`status`: created), so the launcher can place the threads first.
    #[arg(long, requires = "api_socket")]
    pub start_paused: bool,
    /// Where the saved state starts in the --restore file.
    #[arg(long, value_name = "BYTES", default_value_t = 0, requires = "restore")]
    pub restore_offset: u64,
    /// Print the CPU flags (Linux /proc/cpuinfo names) the guest would see, then exit.
    #[arg(long)]
    pub print_cpu_flags: bool,
}

impl Cli {
    /// The config file given with `--config`, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The VM's configuration: the `--config` file, or the flags. Not validated yet (see
    /// [`VmConfig::validate`]), so that its exit record can report a validation error.
    pub fn vm_config(&self) -> Result<VmConfig, ConfigError> {
        if let Some(path) = &self.config {
            return VmConfig::read_file(path);
        }
        Ok(VmConfig {
            // clap requires --kernel without --config; an empty path is refused by validation.
            kernel: self.kernel.clone().unwrap_or_default(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            memory: MemoryConfig {
                size_mib: self.memory,
                hugepages: self.hugepages,
                share_pages: !self.no_share_pages,
            },
            cpus: CpusConfig {
                count: self.vcpus,
                topology: self.topology,
                mode: self.cpu_mode.clone(),
                features: self.cpu_features.clone(),
            },
            disks: self.disk.clone(),
            nets: self.net.clone(),
            rng: self.rng,
            balloon: self.balloon.map(|stats_period_s| BalloonSettings {
                deflate_on_oom: false,
                stats_period_s,
                target_kib: None,
            }),
            serial: self.serial.clone(),
            api_socket: self.api_socket.clone(),
            seccomp: self.seccomp,
            exit_record: self.exit_record.clone(),
            restore: self.restore.clone().map(|path| RestoreSource {
                path,
                offset: self.restore_offset,
            }),
            start_paused: self.start_paused,
            jail: self.jail.clone().map(|root| JailConfig {
                root,
                // clap requires both with --jail; 0 is refused by validation.
                uid: self.uid.unwrap_or(0),
                gid: self.gid.unwrap_or(0),
                pid_namespace: true,
                net_namespace: true,
            }),
        })
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

/// `--disk path=FILE[,format=raw|qcow2][,readonly=on][,cache=none|writeback][,id=NAME]`.
impl std::str::FromStr for DiskConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut d = DiskConfig::new(PathBuf::new());
        for (k, v) in key_values(s, &["path", "readonly", "cache", "format", "id"])? {
            match k {
                "path" => d.path = v.into(),
                "id" => d.id = Some(v.into()),
                "readonly" => d.readonly = on_off(k, v)?,
                "format" => {
                    d.format = oxvirt_images::Format::parse(v).map_err(|e| e.to_string())?
                }
                _ => {
                    d.cache = match v {
                        "none" => DiskCache::None,
                        "writeback" => DiskCache::Writeback,
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

/// `--net tap=NAME[,mac=MAC]`.
impl std::str::FromStr for NetConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut n = NetConfig {
            tap: String::new(),
            mac: None,
        };
        for (k, v) in key_values(s, &["tap", "mac"])? {
            match k {
                "tap" => n.tap = v.into(),
                _ => n.mac = Some(v.parse::<MacAddress>()?),
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
    use oxvirt_images::Format;

    #[test]
    fn disk_specs() {
        let d: DiskConfig = "path=/x.img,readonly=on,cache=none".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/x.img".into(),
                format: Format::Raw,
                readonly: true,
                cache: DiskCache::None,
                backing_chain: None,
                id: None,
            }
        );
        let q: DiskConfig = "path=/x.qcow2,format=qcow2,id=data".parse().unwrap();
        assert_eq!(q.format, Format::Qcow2);
        assert_eq!(q.id.as_deref(), Some("data"));
        let err = "path=/x,format=vmdk".parse::<DiskConfig>().unwrap_err();
        assert!(err.contains("vmdk"), "{err}");
        assert!("readonly=on"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("path"));
        assert!("path=/x,colour=red"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("colour"));
        assert!("path=/x,readonly=maybe".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn net_specs() {
        let n: NetConfig = "tap=tap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.mac, Some(MacAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert!("tap=t,mac=01:00:00:00:00:00"
            .parse::<NetConfig>()
            .unwrap_err()
            .contains("multicast"));
        assert!("mac=52:54:00:12:34:56".parse::<NetConfig>().is_err());
    }

    #[test]
    fn full_command_line() {
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let kernel = kernel.path().to_str().unwrap();
        let cli = Cli::try_parse_from([
            "oxvirt-vmm",
            "--kernel",
            kernel,
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
        let config = cli.vm_config().unwrap();
        config.validate().unwrap();
        assert_eq!(config.cpus.topology().vcpus(), 4);
        assert_eq!(config.serial, SerialMode::Socket("/tmp/s".into()));
        assert_eq!(config.cpus.features.disable, vec!["svm".to_string()]);
        let bad = Cli::try_parse_from([
            "oxvirt-vmm",
            "--kernel",
            kernel,
            "--vcpus",
            "3",
            "--topology",
            "cores=2",
        ])
        .unwrap();
        let err = bad.vm_config().unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("gives 2 vCPUs"), "{err}");
        assert!(Cli::try_parse_from(["oxvirt-vmm", "--kernel", "k", "--serial", "tcp"]).is_err());
    }

    #[test]
    fn flags_and_a_config_file_give_the_same_config() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Cli::try_parse_from([
            "oxvirt-vmm",
            "--kernel",
            "/k/vmlinuz",
            "--initrd",
            "/k/initrd",
            "--cmdline",
            "console=ttyS0 quiet",
            "--memory",
            "256",
            "--vcpus",
            "2",
            "--topology",
            "sockets=1,cores=2,threads=1",
            "--cpu-mode",
            "custom:Haswell-noTSX-IBRS",
            "--cpu-features",
            "+svm,-pcid",
            "--disk",
            "path=/img/root.raw,cache=none",
            "--disk",
            "path=/img/data.qcow2,format=qcow2,readonly=on",
            "--net",
            "tap=oxtap7,mac=52:54:00:12:34:56",
            "--serial",
            "socket=/run/vm/vmm-serial.sock",
            "--api-socket",
            "/run/vm/vmm-api.sock",
            "--hugepages",
            "--no-share-pages",
            "--rng",
            "--seccomp",
            "log",
            "--exit-record",
            "/run/vm/vmm-exit.json",
        ])
        .unwrap()
        .vm_config()
        .unwrap();
        let file = dir.path().join("vm.json");
        std::fs::write(
            &file,
            r#"{
                "kernel": "/k/vmlinuz",
                "initrd": "/k/initrd",
                "cmdline": "console=ttyS0 quiet",
                "memory": {"size_mib": 256, "hugepages": true, "share_pages": false},
                "cpus": {
                    "count": 2,
                    "topology": {"sockets": 1, "cores": 2, "threads": 1},
                    "mode": {"custom": "Haswell-noTSX-IBRS"},
                    "features": {"enable": ["svm"], "disable": ["pcid"]}
                },
                "disks": [
                    {"path": "/img/root.raw", "cache": "none"},
                    {"path": "/img/data.qcow2", "format": "qcow2", "readonly": true}
                ],
                "nets": [{"tap": "oxtap7", "mac": "52:54:00:12:34:56"}],
                "rng": true,
                "serial": {"socket": "/run/vm/vmm-serial.sock"},
                "api_socket": "/run/vm/vmm-api.sock",
                "seccomp": "log",
                "exit_record": "/run/vm/vmm-exit.json"
            }"#,
        )
        .unwrap();
        let from_file = Cli::try_parse_from(["oxvirt-vmm", "--config", file.to_str().unwrap()])
            .unwrap()
            .vm_config()
            .unwrap();
        assert_eq!(flags, from_file);
        // And what a front end writes, the other reads back unchanged.
        std::fs::write(&file, flags.to_json()).unwrap();
        assert_eq!(VmConfig::read_file(&file).unwrap(), flags);

        // The defaults agree too.
        let minimal = Cli::try_parse_from(["oxvirt-vmm", "--kernel", "/k"])
            .unwrap()
            .vm_config()
            .unwrap();
        assert_eq!(minimal, VmConfig::new("/k"));
    }

    #[test]
    fn config_replaces_the_vm_flags_but_not_print_cpu_flags() {
        assert!(
            Cli::try_parse_from(["oxvirt-vmm", "--config", "vm.json", "--vcpus", "2"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["oxvirt-vmm", "--config", "vm.json", "--kernel", "k"]).is_err()
        );
        let cli = Cli::try_parse_from(["oxvirt-vmm", "--config", "vm.json", "--print-cpu-flags"])
            .unwrap();
        assert_eq!(cli.config_file(), Some(Path::new("vm.json")));
        assert!(
            Cli::try_parse_from(["oxvirt-vmm"]).is_err(),
            "neither --kernel nor --config"
        );
    }
}
