//! virt-install's option grammar: `--disk path=X,size=1,format=qcow2,bus=virtio`, where a first
//! value without `=` stands for the option's main key (`--disk /x.img` is `path=/x.img`,
//! `--graphics vnc,listen=0.0.0.0` is `type=vnc`), and the old colon forms of `--network`
//! (`bridge:br0`, `network:default`).
//!
//! Each option is parsed into a typed struct here; what the values mean for the domain is
//! decided in xml.rs and disks.rs.

use anyhow::{anyhow, bail, Context};

/// `key=value` pairs of one comma option, in order; the first bare value under `main_key`.
fn split(option: &str, value: &str, main_key: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (index, part) in value.split(',').enumerate() {
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((key, value)) => pairs.push((key.to_string(), value.to_string())),
            None if index == 0 => pairs.push((main_key.to_string(), part.to_string())),
            // A bare word after the first is a flag (`--boot hd,cdrom`, `--cpu X,+vmx`): the
            // caller decides whether it takes it.
            None => pairs.push((part.to_string(), String::new())),
        }
    }
    if pairs.is_empty() {
        bail!("--{option}: an empty value");
    }
    Ok(pairs)
}

/// virt-install's message for keys an option does not know.
fn unknown(option: &str, keys: &[String]) -> anyhow::Error {
    let quoted: Vec<String> = keys.iter().map(|key| format!("'{key}'")).collect();
    anyhow!("Unknown --{option} options: [{}]", quoted.join(", "))
}

fn number<T: std::str::FromStr>(option: &str, key: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("--{option} {key}={value}: not a number"))
}

/// One `--disk`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskOption {
    pub path: Option<String>,
    /// `vol=POOL/VOL`.
    pub vol: Option<(String, String)>,
    /// `pool=POOL` (a new volume there, with `size=`).
    pub pool: Option<String>,
    /// GiB, as virt-install's `size=` (fractions allowed).
    pub size_gib: Option<f64>,
    pub format: Option<String>,
    pub bus: Option<String>,
    pub cache: Option<String>,
    pub io: Option<String>,
    /// `device=disk|cdrom` (default disk).
    pub device: String,
}

pub fn parse_disk(value: &str) -> anyhow::Result<DiskOption> {
    let mut disk = DiskOption {
        device: "disk".to_string(),
        ..DiskOption::default()
    };
    let mut bad = Vec::new();
    for (key, value) in split("disk", value, "path")? {
        match key.as_str() {
            "path" => disk.path = Some(value),
            "vol" => {
                let (pool, vol) = value
                    .split_once('/')
                    .ok_or_else(|| anyhow!("--disk vol={value}: expected POOL/VOLUME"))?;
                disk.vol = Some((pool.to_string(), vol.to_string()));
            }
            "pool" => disk.pool = Some(value),
            "size" => {
                let size: f64 = number("disk", "size", &value)?;
                if !(size > 0.0 && size.is_finite()) {
                    bail!("--disk size={value}: the size must be a positive number of GiB");
                }
                disk.size_gib = Some(size);
            }
            "format" => match value.as_str() {
                "raw" | "qcow2" => disk.format = Some(value),
                other => bail!("--disk format={other}: oxvirt makes raw and qcow2 images"),
            },
            "bus" => match value.as_str() {
                "virtio" | "sata" | "scsi" | "ide" | "usb" => disk.bus = Some(value),
                other => bail!("--disk bus={other}: expected virtio, sata, scsi, ide or usb"),
            },
            "cache" => match value.as_str() {
                "none" | "writeback" | "writethrough" | "directsync" | "unsafe" | "default" => {
                    disk.cache = Some(value)
                }
                other => bail!("--disk cache={other}: not a cache mode"),
            },
            "io" => match value.as_str() {
                "native" | "threads" | "io_uring" => disk.io = Some(value),
                other => bail!("--disk io={other}: expected native, threads or io_uring"),
            },
            "device" => match value.as_str() {
                "disk" | "cdrom" => disk.device = value,
                other => bail!("--disk device={other}: expected disk or cdrom"),
            },
            // virt-install's default is a sparse image; oxvirt's volumes are sparse anyway.
            "sparse" => {}
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("disk", &bad));
    }
    let sources = [disk.path.is_some(), disk.vol.is_some(), disk.pool.is_some()]
        .iter()
        .filter(|set| **set)
        .count();
    if sources > 1 {
        bail!("--disk: give one of path=, vol= and pool=");
    }
    if sources == 0 && disk.size_gib.is_none() {
        bail!("--disk: give path=, vol=, pool= or size=");
    }
    Ok(disk)
}

/// One `--network`.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkOption {
    None,
    Network {
        name: String,
        model: Option<String>,
        mac: Option<String>,
    },
    Bridge {
        name: String,
        model: Option<String>,
        mac: Option<String>,
    },
}

pub fn parse_network(value: &str) -> anyhow::Result<NetworkOption> {
    if value == "none" {
        return Ok(NetworkOption::None);
    }
    let mut kind: Option<(bool, String)> = None;
    let (mut model, mut mac) = (None, None);
    let mut bad = Vec::new();
    for (key, value) in split("network", value, "type")? {
        match key.as_str() {
            // `bridge:br0` and `network:default`, the forms older virt-install documented.
            "type" => match value.split_once(':') {
                Some(("bridge", name)) => kind = Some((true, name.to_string())),
                Some(("network", name)) => kind = Some((false, name.to_string())),
                None if value == "default" => kind = Some((false, "default".to_string())),
                _ => bail!("--network {value}: expected network=NAME, bridge=NAME or none"),
            },
            "network" => kind = Some((false, value)),
            "bridge" => kind = Some((true, value)),
            "model" | "model.type" => model = Some(value),
            "mac" | "mac.address" => {
                if !valid_mac(&value) {
                    bail!("--network mac={value}: not a MAC address");
                }
                mac = Some(value.to_ascii_lowercase());
            }
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("network", &bad));
    }
    match kind {
        Some((true, name)) => Ok(NetworkOption::Bridge { name, model, mac }),
        Some((false, name)) => Ok(NetworkOption::Network { name, model, mac }),
        None => bail!("--network: give network=NAME, bridge=NAME or none"),
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `--graphics`.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphicsOption {
    None,
    Vnc {
        listen: Option<String>,
        port: Option<i32>,
        password: Option<String>,
    },
    Spice {
        listen: Option<String>,
        port: Option<i32>,
        password: Option<String>,
    },
}

pub fn parse_graphics(value: &str) -> anyhow::Result<GraphicsOption> {
    let mut kind = None;
    let (mut listen, mut port, mut password) = (None, None, None);
    let mut bad = Vec::new();
    for (key, value) in split("graphics", value, "type")? {
        match key.as_str() {
            "type" => kind = Some(value),
            "listen" => listen = Some(value),
            "port" => port = Some(number("graphics", "port", &value)?),
            "password" | "passwd" => password = Some(value),
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("graphics", &bad));
    }
    match kind.as_deref() {
        Some("none") => Ok(GraphicsOption::None),
        Some("vnc") | None => Ok(GraphicsOption::Vnc {
            listen,
            port,
            password,
        }),
        Some("spice") => Ok(GraphicsOption::Spice {
            listen,
            port,
            password,
        }),
        Some(other) => bail!("--graphics {other}: expected vnc, spice or none"),
    }
}

/// `--boot`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootOption {
    pub uefi: bool,
    /// `hd`, `cdrom`, `network`, `fd`, in order.
    pub devices: Vec<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub kernel_args: Option<String>,
}

pub fn parse_boot(value: &str) -> anyhow::Result<BootOption> {
    let mut boot = BootOption::default();
    let mut bad = Vec::new();
    for (key, value) in split("boot", value, "first")? {
        let word = if key == "first" {
            value.clone()
        } else {
            key.clone()
        };
        match (key.as_str(), word.as_str()) {
            (_, "uefi") if key == "first" || value.is_empty() => boot.uefi = true,
            (_, "hd" | "cdrom" | "network" | "fd") if key == "first" || value.is_empty() => {
                boot.devices.push(word)
            }
            ("kernel", _) => boot.kernel = Some(value),
            ("initrd", _) => boot.initrd = Some(value),
            ("kernel_args" | "cmdline", _) => boot.kernel_args = Some(value),
            _ => bad.push(word),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("boot", &bad));
    }
    Ok(boot)
}

/// `--cpu`.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuOption {
    HostPassthrough,
    HostModel,
    Model {
        name: String,
        /// (`require`/`disable`, name) from `+feature`/`-feature`.
        features: Vec<(&'static str, String)>,
    },
}

pub fn parse_cpu(value: &str) -> anyhow::Result<CpuOption> {
    let mut parts = value.split(',');
    let first = parts.next().unwrap_or_default();
    let cpu = match first {
        "host-passthrough" => CpuOption::HostPassthrough,
        "host-model" | "host" => CpuOption::HostModel,
        "" => bail!("--cpu: an empty value"),
        model => {
            let model = model.strip_prefix("model=").unwrap_or(model);
            let mut features = Vec::new();
            for part in parts.by_ref() {
                if let Some(name) = part.strip_prefix('+') {
                    features.push(("require", name.to_string()));
                } else if let Some(name) = part.strip_prefix('-') {
                    features.push(("disable", name.to_string()));
                } else {
                    return Err(unknown("cpu", &[part.to_string()]));
                }
            }
            return Ok(CpuOption::Model {
                name: model.to_string(),
                features,
            });
        }
    };
    if let Some(extra) = parts.next() {
        return Err(unknown("cpu", &[extra.to_string()]));
    }
    Ok(cpu)
}

/// `--vcpus N[,maxvcpus=M]`: (current, maximum).
pub fn parse_vcpus(value: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let (mut current, mut max) = (None, None);
    let mut bad = Vec::new();
    for (key, value) in split("vcpus", value, "vcpus")? {
        match key.as_str() {
            "vcpus" => current = Some(number("vcpus", "vcpus", &value)?),
            "maxvcpus" => max = Some(number("vcpus", "maxvcpus", &value)?),
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("vcpus", &bad));
    }
    let current = current.or(max).context("--vcpus: give a number")?;
    if current == 0 {
        bail!("--vcpus: at least 1");
    }
    if let Some(max) = max {
        if max < current {
            bail!("--vcpus: maxvcpus={max} is less than {current}");
        }
    }
    Ok((current, max.filter(|max| *max != current)))
}

/// `--memory N` or `--memory memory=N[,currentMemory=N]`: MiB.
pub fn parse_memory(value: &str) -> anyhow::Result<u64> {
    let mut memory = None;
    let mut bad = Vec::new();
    for (key, value) in split("memory", value, "memory")? {
        match key.as_str() {
            "memory" | "currentMemory" => memory = Some(number("memory", &key, &value)?),
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("memory", &bad));
    }
    match memory {
        Some(0) | None => bail!("--memory: give a size in MiB"),
        Some(mib) => Ok(mib),
    }
}

/// `--console pty,target_type=serial|virtio`: the target type.
pub fn parse_console(value: &str) -> anyhow::Result<Option<String>> {
    let mut target = None;
    let mut bad = Vec::new();
    for (key, value) in split("console", value, "type")? {
        match key.as_str() {
            "type" if value == "pty" => {}
            "type" => bail!("--console {value}: oxvirt's consoles are pty"),
            "target_type" | "target.type" => match value.as_str() {
                "serial" | "virtio" => target = Some(value),
                other => bail!("--console target_type={other}: expected serial or virtio"),
            },
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("console", &bad));
    }
    Ok(target)
}

/// `--cloud-init`, virt-install 4.1's sub-options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudInitOption {
    pub user_data: Option<String>,
    pub meta_data: Option<String>,
    pub network_config: Option<String>,
    pub root_password_generate: bool,
    pub root_password_file: Option<String>,
    pub root_ssh_key: Option<String>,
    pub clouduser_ssh_key: Option<String>,
    pub disable: bool,
}

fn on_off(option: &str, key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "on" | "yes" | "true" | "1" | "" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        other => bail!("--{option} {key}={other}: expected on or off"),
    }
}

pub fn parse_cloud_init(value: &str) -> anyhow::Result<CloudInitOption> {
    let mut cloud = CloudInitOption::default();
    // `--cloud-init` alone (virt-install: root-password-generate=on,disable=on).
    if value.is_empty() {
        cloud.root_password_generate = true;
        cloud.disable = true;
        return Ok(cloud);
    }
    let mut bad = Vec::new();
    for (key, value) in split("cloud-init", value, "first")? {
        match key.as_str() {
            "user-data" => cloud.user_data = Some(value),
            "meta-data" => cloud.meta_data = Some(value),
            "network-config" => cloud.network_config = Some(value),
            "root-password-generate" => {
                cloud.root_password_generate = on_off("cloud-init", &key, &value)?
            }
            "root-password-file" => cloud.root_password_file = Some(value),
            "ssh-key" | "root-ssh-key" => cloud.root_ssh_key = Some(value),
            "clouduser-ssh-key" => cloud.clouduser_ssh_key = Some(value),
            "disable" => cloud.disable = on_off("cloud-init", &key, &value)?,
            _ => bad.push(key),
        }
    }
    if !bad.is_empty() {
        return Err(unknown("cloud-init", &bad));
    }
    Ok(cloud)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_takes_keys_and_a_bare_path() {
        let disk =
            parse_disk("path=/v/a.qcow2,format=qcow2,bus=virtio,cache=none,size=16").unwrap();
        assert_eq!(disk.path.as_deref(), Some("/v/a.qcow2"));
        assert_eq!(disk.size_gib, Some(16.0));
        assert_eq!(disk.cache.as_deref(), Some("none"));
        assert_eq!(
            parse_disk("/x.img").unwrap().path.as_deref(),
            Some("/x.img")
        );
        assert_eq!(
            parse_disk("vol=default/a.img").unwrap().vol,
            Some(("default".to_string(), "a.img".to_string()))
        );
        assert_eq!(parse_disk("size=1").unwrap().size_gib, Some(1.0));
        let err = parse_disk("path=/a,colour=red").unwrap_err();
        assert_eq!(err.to_string(), "Unknown --disk options: ['colour']");
        assert!(parse_disk("path=/a,vol=p/v").is_err());
        assert!(parse_disk("size=-1").is_err());
    }

    #[test]
    fn network_has_the_colon_and_the_key_forms() {
        let bridge = NetworkOption::Bridge {
            name: "br0".to_string(),
            model: None,
            mac: None,
        };
        assert_eq!(parse_network("bridge:br0").unwrap(), bridge);
        assert_eq!(parse_network("bridge=br0").unwrap(), bridge);
        assert_eq!(parse_network("none").unwrap(), NetworkOption::None);
        match parse_network("network=default,model=virtio,mac=52:54:00:AA:bb:cc").unwrap() {
            NetworkOption::Network { name, model, mac } => {
                assert_eq!(name, "default");
                assert_eq!(model.as_deref(), Some("virtio"));
                assert_eq!(mac.as_deref(), Some("52:54:00:aa:bb:cc"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_network("network=default,mac=nope").is_err());
    }

    #[test]
    fn boot_cpu_vcpus_graphics() {
        let boot = parse_boot("uefi").unwrap();
        assert!(boot.uefi);
        assert_eq!(parse_boot("hd,cdrom").unwrap().devices, ["hd", "cdrom"]);
        let boot = parse_boot("kernel=/k,initrd=/i,kernel_args=console=ttyS0").unwrap();
        assert_eq!(boot.kernel_args.as_deref(), Some("console=ttyS0"));
        assert_eq!(
            parse_cpu("host-passthrough").unwrap(),
            CpuOption::HostPassthrough
        );
        assert_eq!(
            parse_cpu("Skylake-Client,+vmx,-hle").unwrap(),
            CpuOption::Model {
                name: "Skylake-Client".to_string(),
                features: vec![
                    ("require", "vmx".to_string()),
                    ("disable", "hle".to_string())
                ]
            }
        );
        assert_eq!(parse_vcpus("2").unwrap(), (2, None));
        assert_eq!(parse_vcpus("2,maxvcpus=4").unwrap(), (2, Some(4)));
        assert!(parse_vcpus("4,maxvcpus=2").is_err());
        assert_eq!(parse_graphics("none").unwrap(), GraphicsOption::None);
        assert_eq!(
            parse_graphics("vnc,listen=0.0.0.0,port=5901,password=pw").unwrap(),
            GraphicsOption::Vnc {
                listen: Some("0.0.0.0".to_string()),
                port: Some(5901),
                password: Some("pw".to_string())
            }
        );
        assert_eq!(parse_memory("4096").unwrap(), 4096);
    }

    #[test]
    fn cloud_init_sub_options() {
        let cloud =
            parse_cloud_init("root-password-generate=on,ssh-key=/k.pub,disable=on").unwrap();
        assert!(cloud.root_password_generate && cloud.disable);
        assert_eq!(cloud.root_ssh_key.as_deref(), Some("/k.pub"));
        assert!(parse_cloud_init("root-password-generate=maybe").is_err());
        assert!(parse_cloud_init("bogus=1").is_err());
    }
}
