//! What a clone gets, decided before anything is made (virt-clone 4.1's rules, cloner.py):
//!
//! - a name (`--name`, or with `--auto-clone` `ORIG-clone`, `ORIG-clone1`, ...) no domain has;
//! - a new UUID (also in `<sysinfo>`'s `uuid` entry), a new MAC per interface (`--mac` in
//!   order, RANDOM or none: random), no host TAP name, graphics on fixed ports moved to autoport,
//!   no title;
//! - per disk: shared as it is (CD-ROMs, `<readonly/>`, `<shareable/>`, an empty tray), kept as
//!   the `--file` given (`--preserve-data`), or copied to a new file: the next `--file`, or
//!   virt-clone's derived name next to the original. A new file in an active pool's directory
//!   becomes a volume of that pool (made through oxvirtd, so the pool records it); elsewhere it is
//!   a plain file the CLI makes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oxvirt_api::{Client, PoolInfo};
use oxvirt_domain::{DiskDevice, DiskFormat, DiskType, DiskVolume, Domain, Uuid};
use oxvirt_images::Format;

use super::CloneArgs;

/// How the new disks are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Copy,
    Reflink,
    Linked,
    Preserve,
}

/// An original disk's image.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
}

/// Where a new disk goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A new volume `name` of `pool` (its file is `path`).
    Volume {
        pool: String,
        name: String,
        path: PathBuf,
    },
    /// A file outside every pool.
    File(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Volume { path, .. } | Target::File(path) => path,
        }
    }
}

/// One disk of the clone that is not shared with the original.
#[derive(Debug, Clone)]
pub struct NewDisk {
    /// Its index in the definition's disks.
    pub index: usize,
    pub source: Source,
    pub target: Target,
    /// The clone's image format (qcow2 for a linked clone, else the original's).
    pub format: Format,
}

/// Everything a local clone makes.
#[derive(Debug)]
pub struct Plan {
    pub domain: Domain,
    pub mode: Mode,
    pub disks: Vec<NewDisk>,
    /// An NVRAM file the definition names, and its copy (virt-clone's `NAME_VARS.fd` beside it).
    pub nvram: Option<(PathBuf, PathBuf)>,
    pub warnings: Vec<String>,
}

pub fn image_format(format: DiskFormat) -> Format {
    match format {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
    }
}

pub fn disk_format(format: Format) -> DiskFormat {
    match format {
        Format::Raw => DiskFormat::Raw,
        Format::Qcow2 => DiskFormat::Qcow2,
    }
}

/// virt-clone's clone name: `foo` -> `foo-clone`, `foo-clone` -> `foo-clone1`, `foo-clone1` ->
/// `foo-clone2`, the first that `taken` does not refuse.
pub fn clone_name(original: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut base = original;
    let mut start = 1;
    let mut force_number = false;
    if let Some(at) = original.rfind("-clone") {
        let tail = &original[at + "-clone".len()..];
        if tail.chars().all(|c| ('1'..='9').contains(&c)) {
            force_number = true;
            start = tail.parse::<u64>().map_or(1, |n| n + 1);
            base = &original[..at];
        }
    }
    let base = format!("{base}-clone");
    if !force_number && !taken(&base) {
        return base;
    }
    let mut n = start;
    loop {
        let name = format!("{base}{n}");
        if !taken(&name) {
            return name;
        }
        n += 1;
    }
}

/// virt-clone's path for a disk's copy: `DIR/ORIG.qcow2` -> `DIR/NEW.qcow2` when the file is
/// named after the original domain, else `DIR/BASE-clone.EXT`; `-1`, `-2`, ... before the
/// extension while `taken`. An extension longer than 7 characters is part of the name.
/// `extension` replaces the original's (a linked clone is qcow2 whatever the original is).
pub fn clone_path(
    original_path: &Path,
    original_name: &str,
    new_name: &str,
    extension: Option<&str>,
    taken: impl Fn(&Path) -> bool,
) -> PathBuf {
    let dir = original_path.parent().unwrap_or(Path::new("/"));
    let file = original_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (base, suffix) = match file.rsplit_once('.') {
        Some((base, ext)) if ext.len() <= 7 => (base.to_string(), format!(".{ext}")),
        _ => (file.clone(), String::new()),
    };
    let suffix = extension.map_or(suffix, |ext| format!(".{ext}"));
    let stem = if base == original_name {
        new_name.to_string()
    } else {
        format!("{base}-clone")
    };
    let first = dir.join(format!("{stem}{suffix}"));
    if !taken(&first) {
        return first;
    }
    let mut n = 1;
    loop {
        let path = dir.join(format!("{stem}-{n}{suffix}"));
        if !taken(&path) {
            return path;
        }
        n += 1;
    }
}

/// A random locally administered MAC in QEMU's range, as virt-clone generates them.
fn random_mac() -> oxvirt_domain::MacAddr {
    // A v4 UUID's first bytes are random (from the OS's generator).
    let uuid = Uuid::new_v4();
    let b = uuid.as_bytes();
    oxvirt_domain::generate_mac([b[0], b[1], b[2]])
}

/// The changes every clone gets, local or remote: name, UUID (and `<sysinfo>`'s), MACs
/// (`macs` in order; RANDOM or missing: random), no host TAP names, autoport displays, no
/// title. Returns virt-clone's warnings.
pub fn new_identity(
    domain: &mut Domain,
    name: &str,
    macs: &[String],
) -> anyhow::Result<Vec<String>> {
    oxvirt_domain::validate_name(name)
        .map_err(|e| anyhow::anyhow!("Invalid name for new guest: {e}"))?;
    let interfaces = domain.devices.interfaces.len();
    if macs.len() > interfaces && !(macs.len() == 1 && macs[0] == "RANDOM") {
        bail!(
            "{} --mac given, but '{}' has {interfaces} network interface(s)",
            macs.len(),
            domain.name
        );
    }
    let mut warnings = Vec::new();
    domain.name = name.to_string();
    domain.title = None;
    domain.uuid = Uuid::new_v4();
    let uuid = domain.uuid.to_string();
    if let Some(sysinfo) = &mut domain.sysinfo {
        for (key, value) in &mut sysinfo.system {
            if key == "uuid" {
                *value = uuid.clone();
            }
        }
    }
    for (i, interface) in domain.devices.interfaces.iter_mut().enumerate() {
        interface.mac = Some(match macs.get(i).map(String::as_str) {
            None | Some("RANDOM") => random_mac(),
            Some(text) => oxvirt_domain::parse_mac(text).map_err(|_| {
                anyhow::anyhow!("--mac {text}: not a MAC address like 52:54:00:12:34:56")
            })?,
        });
        // A TAP the host already has (managed='no') is the operator's: it stays named.
        if interface.target_managed != Some(false) {
            interface.target_dev = None;
        }
    }
    for graphics in &mut domain.devices.graphics {
        if graphics.port.is_some() && !graphics.autoport {
            warnings.push(
                "Setting the graphics device port to autoport, in order to avoid conflicting."
                    .to_string(),
            );
            graphics.port = None;
            graphics.autoport = true;
        }
    }
    Ok(warnings)
}

/// Why a disk is shared with the clone as it is (virt-clone's rule), if it is.
pub(super) fn shared_reason(disk: &oxvirt_domain::Disk) -> Option<&'static str> {
    if disk.source.is_none() && disk.volume.is_none() && disk.network.is_none() {
        return Some("No storage to clone.");
    }
    if disk.device == DiskDevice::Cdrom || disk.readonly {
        return Some("Read Only");
    }
    if disk.shareable {
        return Some("Marked as shareable");
    }
    None
}

/// The image of a disk that is to be cloned: its file and the format its definition states
/// (never probed); a volume disk's from oxvirtd.
pub async fn source_of(client: &Client, disk: &oxvirt_domain::Disk) -> anyhow::Result<Source> {
    let dev = &disk.target.dev;
    if let Some(network) = &disk.network {
        bail!(
            "Could not determine original disk information: Disk network type '{}' is not cloneable (disk '{dev}')",
            network.protocol.as_str()
        );
    }
    if let Some(volume) = &disk.volume {
        let info = client
            .volume_info(&volume.pool, &volume.volume)
            .await
            .with_context(|| {
                format!(
                    "disk '{dev}': volume '{}' of pool '{}'",
                    volume.volume, volume.pool
                )
            })?;
        let format = Format::parse(&info.format)
            .map_err(|_| anyhow::anyhow!("disk '{dev}': volume format '{}'", info.format))?;
        return Ok(Source {
            path: PathBuf::from(info.path),
            format,
        });
    }
    let path = disk.source.clone().context("a disk without a source")?;
    if disk.disk_type == DiskType::Block {
        bail!("disk '{dev}': {path} is a block device; oxvirt clones file disks (give an existing --file with --preserve-data to use another device)");
    }
    if !Path::new(&path).is_file() {
        bail!("Could not determine original disk information: Disk path '{path}' does not exist. (disk '{dev}')");
    }
    Ok(Source {
        path: PathBuf::from(path),
        format: image_format(disk.driver.format),
    })
}

/// The active pool whose directory is `dir`, if any.
pub fn pool_of_dir<'a>(pools: &'a [PoolInfo], dir: &Path) -> Option<&'a PoolInfo> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    pools.iter().filter(|p| p.active).find(|p| {
        let target = Path::new(&p.target);
        std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()) == dir
    })
}

/// Plans a local clone of `original` (its inactive definition, parsed). `domain_taken` says
/// whether oxvirtd has a domain of that name.
pub async fn plan(
    client: &Client,
    original: &Domain,
    args: &CloneArgs,
    domain_taken: impl Fn(&str) -> bool,
) -> anyhow::Result<Plan> {
    if args.file.is_empty() && !args.auto_clone {
        bail!("Either --auto-clone or --file is required, use '--auto-clone or --file' and try again.");
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None if args.auto_clone => clone_name(&original.name, &domain_taken),
        None => bail!("A name is required for the new virtual machine, use '--name NEW_VM_NAME' to specify one."),
    };
    if domain_taken(&name) {
        bail!("Invalid name for new guest: Guest name '{name}' is already in use.");
    }
    let mode = match (args.linked, args.reflink, args.preserve_data) {
        (true, _, _) => Mode::Linked,
        (_, true, _) => Mode::Reflink,
        (_, _, true) => Mode::Preserve,
        _ => Mode::Copy,
    };
    let mut domain = original.clone();
    let warnings = new_identity(&mut domain, &name, &args.mac)?;
    let pools = client.list_pools().await?;
    let mut files = args.file.iter();
    let mut disks = Vec::new();
    let mut planned: Vec<PathBuf> = Vec::new();
    for (index, disk) in original.devices.disks.iter().enumerate() {
        if shared_reason(disk).is_some() {
            continue;
        }
        let dev = disk.target.dev.clone();
        let given = files.next();
        if given.is_none() && !args.auto_clone {
            bail!("disk '{dev}' needs a new path: give one more --file, or --auto-clone");
        }
        if mode == Mode::Preserve {
            let path =
                absolute(given.context("--preserve-data needs a --file for every disk to clone")?)?;
            if !path.exists() {
                bail!(
                    "--preserve-data: {} does not exist (disk '{dev}')",
                    path.display()
                );
            }
            disks.push(NewDisk {
                index,
                source: Source {
                    path: path.clone(),
                    format: image_format(disk.driver.format),
                },
                target: Target::File(path),
                format: image_format(disk.driver.format),
            });
            continue;
        }
        let source = source_of(client, disk).await?;
        let format = if mode == Mode::Linked {
            Format::Qcow2
        } else {
            source.format
        };
        let path = match given {
            Some(path) => {
                let path = absolute(path)?;
                if std::fs::symlink_metadata(&path).is_ok() {
                    bail!(
                        "Could not use path '{}' for cloning: the file exists (disk '{dev}'); remove it, or use it as it is with --preserve-data",
                        path.display()
                    );
                }
                if planned.contains(&path) {
                    bail!("--file {} is given for two disks", path.display());
                }
                path
            }
            None => {
                let extension =
                    (mode == Mode::Linked && source.format != Format::Qcow2).then_some("qcow2");
                clone_path(&source.path, &original.name, &name, extension, |p| {
                    std::fs::symlink_metadata(p).is_ok() || planned.iter().any(|q| q == p)
                })
            }
        };
        let dir = path.parent().context("a disk path without a directory")?;
        if !dir.is_dir() {
            bail!(
                "Could not use path '{}' for cloning: the directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
        if same_file(&path, &source.path) {
            bail!(
                "--file {} is the original's disk '{dev}' itself",
                path.display()
            );
        }
        let target = match pool_of_dir(&pools, dir) {
            Some(pool) => Target::Volume {
                pool: pool.name.clone(),
                name: path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .context("a disk path without a file name")?,
                path: path.clone(),
            },
            None => Target::File(path.clone()),
        };
        planned.push(path);
        disks.push(NewDisk {
            index,
            source,
            target,
            format,
        });
    }
    if files.next().is_some() {
        bail!(
            "more --file paths than disks to clone ({} of '{}')",
            disks.len(),
            original.name
        );
    }
    for disk in &disks {
        point_disk_at(&mut domain, disk);
    }
    // virt-clone copies an NVRAM file the definition names to NAME_VARS.fd beside it. One
    // oxvirtd keeps for a UEFI guest that names none (STATE_DIR/nvram/UUID_VARS.fd) is not the
    // CLI's to read: the clone's new UUID gets a fresh one from the template at its first start.
    let mut nvram = None;
    if let Some(path) = domain.os.nvram.as_mut().and_then(|n| n.path.as_mut()) {
        let old = PathBuf::from(path.as_str());
        let dir = old.parent().unwrap_or(Path::new("/"));
        let new = dir.join(format!("{name}_VARS.fd"));
        if old.exists() && mode != Mode::Preserve {
            if new.exists() {
                bail!(
                    "Could not use path '{}' for the clone's NVRAM: the file exists",
                    new.display()
                );
            }
            nvram = Some((old, new.clone()));
        }
        *path = new.display().to_string();
    }
    Ok(Plan {
        domain,
        mode,
        disks,
        nvram,
        warnings,
    })
}

/// Points disk `disk.index` of `domain` at its new image: a volume reference when the original
/// was one and the copy is a volume too, else the file.
pub fn point_disk_at(domain: &mut Domain, disk: &NewDisk) {
    let Some(xml) = domain.devices.disks.get_mut(disk.index) else {
        return;
    };
    match (&disk.target, xml.volume.is_some()) {
        (Target::Volume { pool, name, .. }, true) => {
            xml.volume = Some(DiskVolume {
                pool: pool.clone(),
                volume: name.clone(),
            });
            xml.source = None;
        }
        (target, _) => {
            let block = std::fs::metadata(target.path())
                .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
                .unwrap_or(false);
            xml.disk_type = if block {
                DiskType::Block
            } else {
                DiskType::File
            };
            xml.source = Some(target.path().display().to_string());
            xml.volume = None;
        }
    }
    xml.driver.format = disk_format(disk.format);
    xml.driver.format_stated = true;
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot find the current directory")?
        .join(path))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_names_follow_virt_clone() {
        let none = |_: &str| false;
        assert_eq!(clone_name("web", none), "web-clone");
        assert_eq!(clone_name("web-clone", none), "web-clone1");
        assert_eq!(clone_name("web-clone3", none), "web-clone4");
        assert_eq!(clone_name("web", |n| n == "web-clone"), "web-clone1");
        assert_eq!(clone_name("web-clones", none), "web-clones-clone");
    }

    #[test]
    fn clone_paths_follow_virt_clone() {
        let none = |_: &Path| false;
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            clone_path(&p("/i/a.qcow2"), "a", "b", None, none),
            p("/i/b.qcow2")
        );
        assert_eq!(
            clone_path(&p("/i/disk.img"), "a", "b", None, none),
            p("/i/disk-clone.img")
        );
        assert_eq!(
            clone_path(&p("/i/disk"), "a", "b", None, none),
            p("/i/disk-clone")
        );
        assert_eq!(
            clone_path(&p("/i/a.verylongext"), "a", "b", None, none),
            p("/i/a.verylongext-clone")
        );
        assert_eq!(
            clone_path(&p("/i/a.qcow2"), "a", "b", None, |q| q
                == Path::new("/i/b.qcow2")),
            p("/i/b-1.qcow2")
        );
        assert_eq!(
            clone_path(&p("/i/a.img"), "a", "b", Some("qcow2"), none),
            p("/i/b.qcow2")
        );
    }
}
