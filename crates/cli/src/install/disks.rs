//! The disks of an install: existing images and volumes are used as they are; new ones are made
//! as volumes of oxvirtd's pools, after every check passed, so that a refused install creates
//! nothing.
//!
//! - `vol=POOL/VOL`: an existing volume.
//! - `pool=POOL,size=N`: a new volume `NAME.qcow2` (`NAME-1.qcow2`, ... when taken) there.
//! - `size=N` alone: the same in the pool `default`.
//! - `path=FILE`: an existing image; with `size=` and no such file, a new volume in the pool whose
//!   directory is the file's parent. As virt-install, a directory no pool has gets a dir pool of
//!   its own (named after it); a directory that does not exist is an error.

use std::path::Path;

use anyhow::{bail, Context};
use oxvirt_api::{Client, CreateVolumeRequest, PoolInfo};

use super::options::DiskOption;

/// What a `--disk` resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedDisk {
    pub path: String,
    pub format: String,
    /// Some: the volume is to be created (pool, volume name, bytes).
    pub create: Option<(String, String, u64)>,
    /// The pool to define for the image's directory first (`path=` in a directory no pool has).
    pub new_pool: Option<(String, String)>,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The format of an existing image, from its header (qcow2 magic, else raw), as libvirt's pool
/// probe gives virt-install.
pub fn probe_format(path: &str) -> String {
    let mut magic = [0u8; 4];
    let qcow2 = std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
        .is_ok()
        && magic == *b"QFI\xfb";
    if qcow2 { "qcow2" } else { "raw" }.to_string()
}

/// Resolves a `--disk` without creating anything. `name` is the domain's name (new volumes are
/// named after it); `taken` are the paths already planned by earlier `--disk`s. Without a
/// daemon (`client` None: `--print-xml` of paths only) no pool is consulted.
pub async fn resolve(
    client: Option<&Client>,
    disk: &DiskOption,
    name: &str,
    taken: &[String],
) -> anyhow::Result<ResolvedDisk> {
    let size = disk.size_gib.map(|gib| (gib * GIB).round() as u64);
    if let Some((pool, vol)) = &disk.vol {
        let client = client.context("--disk vol= needs oxvirtd")?;
        let info = client
            .volume_info(pool, vol)
            .await
            .with_context(|| format!("--disk vol={pool}/{vol}"))?;
        return Ok(ResolvedDisk {
            path: info.path,
            format: disk.format.clone().unwrap_or(info.format),
            create: None,
            new_pool: None,
        });
    }
    let format = disk.format.clone().unwrap_or_else(|| "qcow2".to_string());
    if let Some(path) = &disk.path {
        if Path::new(path).exists() {
            return Ok(ResolvedDisk {
                path: path.clone(),
                format: disk.format.clone().unwrap_or_else(|| probe_format(path)),
                create: None,
                new_pool: None,
            });
        }
        let file = Path::new(path);
        let (Some(dir), Some(vol)) = (file.parent(), file.file_name()) else {
            bail!("--disk path={path}: not a file path");
        };
        if !file.is_absolute() {
            bail!("--disk path={path}: give an absolute path");
        }
        if !dir.is_dir() {
            bail!(
                "--disk path={path}: the directory {} does not exist",
                dir.display()
            );
        }
        let Some(size) = size else {
            bail!("--disk path={path}: the image does not exist; give size= to create it");
        };
        let dir = dir.to_string_lossy().into_owned();
        let vol = vol.to_string_lossy().into_owned();
        let Some(client) = client else {
            return Ok(ResolvedDisk {
                path: path.clone(),
                format,
                create: Some((String::new(), vol, size)),
                new_pool: None,
            });
        };
        let pools = client.list_pools().await?;
        let (pool, new_pool) = match pools.iter().find(|pool| pool.target == dir) {
            Some(pool) => {
                check_space(pool, size, path)?;
                (pool.name.clone(), None)
            }
            None => {
                let name = free_pool_name(&pools, &dir);
                check_statvfs(&dir, size, path)?;
                (name.clone(), Some((name, dir)))
            }
        };
        return Ok(ResolvedDisk {
            path: path.clone(),
            format,
            create: Some((pool, vol, size)),
            new_pool,
        });
    }
    // pool=POOL,size=N or size=N alone.
    let pool_name = disk.pool.clone().unwrap_or_else(|| "default".to_string());
    let Some(size) = size else {
        bail!("--disk pool={pool_name}: give size= for the new volume");
    };
    let client = client.context("--disk pool= needs oxvirtd")?;
    let pool = client
        .pool_info(&pool_name)
        .await
        .with_context(|| format!("--disk: storage pool '{pool_name}'"))?;
    if !pool.active {
        bail!("--disk: storage pool '{pool_name}' is not active");
    }
    let volumes = client.list_volumes(&pool_name).await?;
    let extension = if format == "qcow2" { "qcow2" } else { "img" };
    let mut vol = format!("{name}.{extension}");
    let mut index = 1;
    while volumes.iter().any(|v| v.name == vol) || taken.contains(&format!("{}/{vol}", pool.target))
    {
        vol = format!("{name}-{index}.{extension}");
        index += 1;
    }
    let path = format!("{}/{vol}", pool.target);
    check_space(&pool, size, &path)?;
    Ok(ResolvedDisk {
        path,
        format,
        create: Some((pool_name, vol, size)),
        new_pool: None,
    })
}

/// A name for a new dir pool of `dir`: its last component (`images`), made unique.
fn free_pool_name(pools: &[PoolInfo], dir: &str) -> String {
    let base = Path::new(dir)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "root".to_string());
    let mut name = base.clone();
    let mut index = 1;
    while pools.iter().any(|pool| pool.name == name) {
        name = format!("{base}-{index}");
        index += 1;
    }
    name
}

fn too_big(path: &str, size: u64, available: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "--disk {path}: the requested volume capacity will exceed the available pool space ({} M requested capacity > {} M available)",
        size / (1024 * 1024),
        available / (1024 * 1024)
    )
}

fn check_space(pool: &PoolInfo, size: u64, path: &str) -> anyhow::Result<()> {
    match pool.available {
        Some(available) if size > available => Err(too_big(path, size, available)),
        _ => Ok(()),
    }
}

/// Free space of a directory no pool has yet (what the pool made for it will report).
fn check_statvfs(dir: &str, size: u64, path: &str) -> anyhow::Result<()> {
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("cannot stat {dir}"))?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if size > available {
        return Err(too_big(path, size, available));
    }
    Ok(())
}

/// Creates a resolved disk's volume (and its pool, when new). Returns the (pool, volume) made.
pub async fn create(
    client: &Client,
    disk: &ResolvedDisk,
) -> anyhow::Result<Option<(String, String)>> {
    let Some((pool, vol, size)) = &disk.create else {
        return Ok(None);
    };
    if let Some((name, dir)) = &disk.new_pool {
        let xml = format!(
            "<pool type=\"dir\">\n  <name>{}</name>\n  <target>\n    <path>{}</path>\n  </target>\n</pool>\n",
            oxvirt_xml::escape_text(name),
            oxvirt_xml::escape_text(dir)
        );
        client
            .define_pool(&xml)
            .await
            .with_context(|| format!("cannot define a storage pool for {dir}"))?;
        client
            .pool_action(name, "start")
            .await
            .with_context(|| format!("cannot start the storage pool '{name}' for {dir}"))?;
    }
    let request = CreateVolumeRequest {
        name: vol.clone(),
        capacity: *size,
        format: disk.format.clone(),
        prealloc_metadata: false,
        allocation: None,
        backing_vol: None,
        backing_format: None,
        cluster_size: None,
    };
    client
        .create_volume(pool, &request)
        .await
        .with_context(|| format!("cannot create {}", disk.path))?;
    Ok(Some((pool.clone(), vol.clone())))
}
