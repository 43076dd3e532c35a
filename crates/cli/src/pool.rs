//! Storage pool commands (`pool-*`), volume commands (`vol-*`) and `blockresize`, with virsh's
//! names, messages and output formats.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oxvirt_api::{
    BlockResizeRequest, Client, CreateVolumeRequest, DomainDisk, PoolInfo, ResizeVolumeRequest,
    VolumeInfo,
};

use crate::commands::block_on;
use crate::format::table;

/// A pool, by name or UUID.
#[derive(Args, Debug)]
pub struct PoolArg {
    /// Pool name or UUID.
    pool: String,
}

/// A volume: its name with `--pool`, or its path.
#[derive(Args, Debug)]
pub struct VolumeArg {
    /// Volume name (with --pool) or path.
    vol: String,
    /// The pool holding the volume.
    #[arg(long)]
    pool: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Define (but don't start) a pool from its name, type and target directory.
    PoolDefineAs {
        /// Name of the new pool.
        name: String,
        /// Pool type (only "dir").
        #[arg(value_name = "TYPE")]
        pool_type: String,
        /// The pool's directory.
        #[arg(long)]
        target: PathBuf,
    },
    /// Define (but don't start) a pool from an XML file.
    PoolDefine {
        /// File with the pool XML.
        file: PathBuf,
    },
    /// Create the directory of an inactive pool.
    PoolBuild(PoolArg),
    /// Start an inactive pool (its directory must exist).
    PoolStart(PoolArg),
    /// Stop an active pool (its files stay).
    PoolDestroy(PoolArg),
    /// Undefine an inactive pool (its directory stays).
    PoolUndefine(PoolArg),
    /// Re-check a pool's directory (volumes are listed fresh every time anyway).
    PoolRefresh(PoolArg),
    /// Mark a pool to start when oxvirtd starts (or unmark it with --disable).
    PoolAutostart {
        #[command(flatten)]
        pool: PoolArg,
        /// Unmark the pool instead.
        #[arg(long)]
        disable: bool,
    },
    /// List pools.
    PoolList {
        /// List active and inactive pools.
        #[arg(long)]
        all: bool,
        /// List only inactive pools.
        #[arg(long, conflicts_with = "all")]
        inactive: bool,
        /// Also show persistence and file system usage.
        #[arg(long)]
        details: bool,
        /// Print only names, one a line.
        #[arg(long, conflicts_with = "details")]
        name: bool,
    },
    /// Show pool information.
    PoolInfo(PoolArg),
    /// Print a pool's XML definition.
    PoolDumpxml(PoolArg),
    /// Create a volume (an image file in the pool's directory).
    VolCreateAs {
        /// Pool name or UUID.
        pool: String,
        /// Name of the new volume.
        name: String,
        /// Size (bytes, or with a suffix: K, M, G, T, KiB, MB, ...).
        capacity: String,
        /// Image format: raw or qcow2.
        #[arg(long, default_value = "raw")]
        format: String,
        /// qcow2: write all metadata up front.
        #[arg(long)]
        prealloc_metadata: bool,
        /// Back the new qcow2 volume by this volume (a name in the same pool, or a path).
        #[arg(long)]
        backing_vol: Option<String>,
        /// Format of the backing volume, raw or qcow2 (probed when absent).
        #[arg(long)]
        backing_vol_format: Option<String>,
    },
    /// Create a volume from an XML file (libvirt's <volume> format, as vol-dumpxml prints it).
    VolCreate {
        /// Pool name or UUID.
        pool: String,
        /// File with the volume XML.
        file: PathBuf,
    },
    /// List the volumes of a pool.
    VolList {
        /// Pool name or UUID.
        pool: String,
        /// Also show type, capacity and allocation.
        #[arg(long)]
        details: bool,
    },
    /// Show volume information.
    VolInfo(VolumeArg),
    /// Print a volume's path.
    VolPath(VolumeArg),
    /// Print a volume's XML description.
    VolDumpxml(VolumeArg),
    /// Delete a volume (refused while a running guest uses it).
    VolDelete(VolumeArg),
    /// Copy a volume into a new one in the same pool (same format, holes kept).
    VolClone {
        #[command(flatten)]
        volume: VolumeArg,
        /// Name of the copy.
        new_name: String,
    },
    /// Replace a volume's contents with a file (an image of the volume's format; zero blocks
    /// become holes).
    VolUpload {
        #[command(flatten)]
        volume: VolumeArg,
        /// The file to send.
        file: PathBuf,
    },
    /// Save a volume's file (holes kept where the volume reads zeros).
    VolDownload {
        #[command(flatten)]
        volume: VolumeArg,
        /// Where to write it (must not exist yet).
        file: PathBuf,
    },
    /// Change a volume's size (shrinking needs --shrink).
    VolResize {
        #[command(flatten)]
        volume: VolumeArg,
        /// New size (bytes, or with a suffix); "-SIZE" shrinks by SIZE (needs --shrink).
        #[arg(allow_hyphen_values = true)]
        capacity: String,
        /// SIZE is added to (or with --shrink taken from) the current size.
        #[arg(long)]
        delta: bool,
        /// Allow the volume to get smaller (data past the new end is lost).
        #[arg(long)]
        shrink: bool,
    },
    /// List a domain's disks (target and source).
    Domblklist {
        /// Domain name or UUID.
        domain: String,
        /// Also show each disk's type and device.
        #[arg(long)]
        details: bool,
        /// The disks of the definition the domain starts with next (without it, a running
        /// domain's are those of its live definition: hot-plugged disks, changed media).
        #[arg(long)]
        inactive: bool,
    },
    /// Grow a disk of a running domain (the guest sees the new size).
    Blockresize {
        /// Domain name or UUID.
        domain: String,
        /// The disk: its target (vda) or its source path.
        path: String,
        /// New size (KiB without a suffix, as virsh; B for bytes).
        size: String,
    },
}

/// `domblklist [--details]`: virsh's table; "-" for an empty CD-ROM tray.
pub fn domblklist(disks: &[DomainDisk], details: bool) -> String {
    let source = |d: &DomainDisk| d.source.clone().unwrap_or_else(|| "-".to_string());
    if details {
        let rows: Vec<Vec<String>> = disks
            .iter()
            .map(|d| {
                vec![
                    d.disk_type.clone(),
                    d.device.clone(),
                    d.target.clone(),
                    source(d),
                ]
            })
            .collect();
        table(&["Type", "Device", "Target", "Source"], &rows)
    } else {
        let rows: Vec<Vec<String>> = disks
            .iter()
            .map(|d| vec![d.target.clone(), source(d)])
            .collect();
        table(&["Target", "Source"], &rows)
    }
}

/// Runs a pool, volume or blockresize command; returns what it prints on success.
pub fn run(client: &Client, command: PoolCommand) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

async fn run_async(client: &Client, command: PoolCommand) -> anyhow::Result<String> {
    let output = match command {
        PoolCommand::PoolDefineAs {
            name,
            pool_type,
            target,
        } => {
            if pool_type != "dir" {
                bail!("Failed to define pool {name}: pool type '{pool_type}' is not supported (only 'dir')");
            }
            let xml = pool_xml(&name, &target)
                .with_context(|| format!("Failed to define pool {name}"))?;
            let pool = client
                .define_pool(&xml)
                .await
                .with_context(|| format!("Failed to define pool {name}"))?;
            format!("Pool {} defined\n", pool.name)
        }
        PoolCommand::PoolDefine { file } => {
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let pool = client
                .define_pool(&xml)
                .await
                .with_context(|| format!("Failed to define pool from {}", file.display()))?;
            format!("Pool {} defined from {}\n", pool.name, file.display())
        }
        PoolCommand::PoolBuild(arg) => {
            let pool = action(client, &arg.pool, "build", "Failed to build pool").await?;
            format!("Pool {} built\n", pool.name)
        }
        PoolCommand::PoolStart(arg) => {
            let pool = action(client, &arg.pool, "start", "Failed to start pool").await?;
            format!("Pool {} started\n", pool.name)
        }
        PoolCommand::PoolDestroy(arg) => {
            let pool = action(client, &arg.pool, "destroy", "Failed to destroy pool").await?;
            format!("Pool {} destroyed\n", pool.name)
        }
        PoolCommand::PoolRefresh(arg) => {
            let pool = action(client, &arg.pool, "refresh", "Failed to refresh pool").await?;
            format!("Pool {} refreshed\n", pool.name)
        }
        PoolCommand::PoolUndefine(arg) => {
            let pool = client
                .undefine_pool(&arg.pool)
                .await
                .with_context(|| format!("Failed to undefine pool {}", arg.pool))?;
            format!("Pool {} has been undefined\n", pool.name)
        }
        PoolCommand::PoolAutostart { pool, disable } => {
            let pool = client
                .set_pool_autostart(&pool.pool, !disable)
                .await
                .with_context(|| format!("failed to mark pool {} as autostarted", pool.pool))?;
            if disable {
                format!("Pool {} unmarked as autostarted\n", pool.name)
            } else {
                format!("Pool {} marked as autostarted\n", pool.name)
            }
        }
        PoolCommand::PoolList {
            all,
            inactive,
            details,
            name,
        } => {
            let pools: Vec<PoolInfo> = client
                .list_pools()
                .await?
                .into_iter()
                .filter(|p| all || p.active != inactive)
                .collect();
            if name {
                pools.iter().map(|p| format!("{}\n", p.name)).collect()
            } else if details {
                pool_list_details(&pools)
            } else {
                pool_list(&pools)
            }
        }
        PoolCommand::PoolInfo(arg) => pool_info(&client.pool_info(&arg.pool).await?),
        PoolCommand::PoolDumpxml(arg) => client.pool_xml(&arg.pool).await?,
        PoolCommand::VolCreateAs {
            pool,
            name,
            capacity,
            format,
            prealloc_metadata,
            backing_vol,
            backing_vol_format,
        } => {
            let capacity =
                parse_size(&capacity, 1).with_context(|| format!("Malformed size {capacity}"))?;
            let request = CreateVolumeRequest {
                name: name.clone(),
                capacity,
                format,
                prealloc_metadata,
                allocation: None,
                backing_vol,
                backing_format: backing_vol_format,
                cluster_size: None,
            };
            let volume = client
                .create_volume(&pool, &request)
                .await
                .with_context(|| format!("Failed to create vol {name}"))?;
            format!("Vol {} created\n", volume.name)
        }
        PoolCommand::VolCreate { pool, file } => {
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let volume = client
                .create_volume_from_xml(&pool, &xml)
                .await
                .with_context(|| format!("Failed to create vol from {}", file.display()))?;
            format!("Vol {} created from {}\n", volume.name, file.display())
        }
        PoolCommand::VolList { pool, details } => {
            let volumes = client.list_volumes(&pool).await?;
            if details {
                vol_list_details(&volumes)
            } else {
                vol_list(&volumes)
            }
        }
        PoolCommand::VolInfo(arg) => {
            let (pool, name) = locate_volume(client, &arg).await?;
            vol_info(&client.volume_info(&pool, &name).await?)
        }
        PoolCommand::VolPath(arg) => {
            let (pool, name) = locate_volume(client, &arg).await?;
            format!("{}\n", client.volume_info(&pool, &name).await?.path)
        }
        PoolCommand::VolDumpxml(arg) => {
            let (pool, name) = locate_volume(client, &arg).await?;
            client.volume_xml(&pool, &name).await?
        }
        PoolCommand::VolDelete(arg) => {
            let (pool, name) = locate_volume(client, &arg).await?;
            let volume = client
                .delete_volume(&pool, &name)
                .await
                .with_context(|| format!("Failed to delete vol {name}"))?;
            format!("Vol {} deleted\n", volume.name)
        }
        PoolCommand::VolClone { volume, new_name } => {
            let (pool, name) = locate_volume(client, &volume).await?;
            let clone = client
                .clone_volume(&pool, &name, &new_name)
                .await
                .with_context(|| format!("Failed to clone vol from {name}"))?;
            format!("Vol {} cloned from {name}\n", clone.name)
        }
        PoolCommand::VolUpload { volume, file } => {
            let (pool, name) = locate_volume(client, &volume).await?;
            upload_file(client, &pool, &name, &file, None)
                .await
                .with_context(|| format!("cannot upload to volume {name}"))?;
            String::new()
        }
        PoolCommand::VolDownload { volume, file } => {
            let (pool, name) = locate_volume(client, &volume).await?;
            download_file(client, &pool, &name, &file)
                .await
                .with_context(|| format!("cannot download from volume {name}"))?;
            String::new()
        }
        PoolCommand::VolResize {
            volume,
            capacity,
            delta,
            shrink,
        } => {
            let (pool, name) = locate_volume(client, &volume).await?;
            // As virsh: a negative size shrinks by that much, and says so with --shrink.
            let (amount, delta) = match capacity.strip_prefix('-') {
                Some(amount) if shrink => (amount, true),
                Some(_) => bail!(
                    "Failed to change size of volume '{name}' to {capacity}: a negative size needs --shrink"
                ),
                None => (capacity.as_str(), delta),
            };
            let bytes =
                parse_size(amount, 1).with_context(|| format!("Malformed size {capacity}"))?;
            client
                .resize_volume(
                    &pool,
                    &name,
                    ResizeVolumeRequest {
                        capacity: bytes,
                        delta,
                        shrink,
                    },
                )
                .await
                .with_context(|| {
                    format!("Failed to change size of volume '{name}' to {capacity}")
                })?;
            format!("Size of volume '{name}' successfully changed to {capacity}\n")
        }
        PoolCommand::Domblklist {
            domain,
            details,
            inactive,
        } => {
            let disks = if inactive {
                client.inactive_disks(&domain).await?
            } else {
                client.domain_disks(&domain).await?
            };
            domblklist(&disks, details)
        }
        PoolCommand::Blockresize { domain, path, size } => {
            let bytes =
                parse_size(&size, 1024).with_context(|| format!("Malformed size {size}"))?;
            client
                .block_resize(
                    &domain,
                    &BlockResizeRequest {
                        disk: path.clone(),
                        size: bytes,
                    },
                )
                .await
                .with_context(|| format!("Failed to resize block device '{path}'"))?;
            format!("Block device '{path}' is resized\n")
        }
    };
    Ok(output)
}

async fn action(
    client: &Client,
    pool: &str,
    action: &str,
    failure: &str,
) -> anyhow::Result<PoolInfo> {
    client
        .pool_action(pool, action)
        .await
        .with_context(|| format!("{failure} {pool}"))
}

/// The pool and name of a volume given by name (with `--pool`) or by path (the active pool
/// whose directory holds it).
/// Sends `file` as the new contents of volume `name` of `pool`; `bar` shows the bytes sent.
pub(crate) async fn upload_file(
    client: &Client,
    pool: &str,
    name: &str,
    file: &Path,
    bar: Option<indicatif::ProgressBar>,
) -> anyhow::Result<oxvirt_api::VolumeInfo> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let length = opened
        .metadata()
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    upload_reader(client, pool, name, opened, length, bar).await
}

/// Sends `length` bytes of `reader` as the new contents of volume `name` of `pool`.
pub(crate) async fn upload_reader(
    client: &Client,
    pool: &str,
    name: &str,
    reader: impl std::io::Read + Send + 'static,
    length: u64,
    bar: Option<indicatif::ProgressBar>,
) -> anyhow::Result<oxvirt_api::VolumeInfo> {
    if let Some(bar) = &bar {
        bar.set_length(length);
    }
    let shown = bar.clone();
    let body = oxvirt_api::ChannelBody::from_reader(reader, length, move |done| {
        if let Some(bar) = &shown {
            bar.set_position(done);
        }
    });
    let info = client.upload_volume(pool, name, body).await?;
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(info)
}

/// Writes volume `name` of `pool` into the new file `file`, zero blocks as holes; a failed
/// download removes the file again.
async fn download_file(client: &Client, pool: &str, name: &str, file: &Path) -> anyhow::Result<()> {
    let mut download = client.download_volume(pool, name).await?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    let mut writer = oxvirt_images::sparse::SparseWriter::new(created);
    let result = async {
        while let Some(chunk) = download.next_chunk().await? {
            writer
                .write_all(&chunk)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        if let Some(length) = download.length {
            if writer.len() != length {
                bail!(
                    "the download ended after {} of {length} bytes",
                    writer.len()
                );
            }
        }
        writer
            .finish()
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result
}

async fn locate_volume(client: &Client, arg: &VolumeArg) -> anyhow::Result<(String, String)> {
    if let Some(pool) = &arg.pool {
        return Ok((pool.clone(), arg.vol.clone()));
    }
    let path = Path::new(&arg.vol);
    let not_found = || {
        anyhow::anyhow!(
            "failed to get vol '{}': no storage volume with matching path '{}' (give a volume's path, or its name with --pool)",
            arg.vol,
            arg.vol
        )
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(not_found());
    };
    if !path.is_absolute() {
        return Err(not_found());
    }
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let pools = client.list_pools().await?;
    let pool = pools
        .iter()
        .filter(|p| p.active)
        .find(|p| {
            let target = Path::new(&p.target);
            std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()) == dir
        })
        .ok_or_else(not_found)?;
    Ok((pool.name.clone(), name.to_string()))
}

/// The XML `pool-define-as NAME dir --target DIR` sends.
fn pool_xml(name: &str, target: &Path) -> anyhow::Result<String> {
    let Some(target) = target.to_str() else {
        bail!("the target path {} is not UTF-8", target.display());
    };
    Ok(format!(
        "<pool type='dir'>\n  <name>{}</name>\n  <target>\n    <path>{}</path>\n  </target>\n</pool>\n",
        oxvirt_xml::escape_text(name),
        oxvirt_xml::escape_text(target)
    ))
}

/// A size as virsh's scaled integers and qemu-img's sizes: a number (fractions allowed, as
/// qemu-img) with an optional suffix: `b`/`bytes`; `k`, `KiB`, `M`, `MiB`, ... (powers of 1024);
/// `KB`, `MB`, ... (powers of 1000). Case does not matter. Without a suffix the number is in
/// units of `default_scale` bytes.
pub fn parse_size(text: &str, default_scale: u64) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
        bail!("invalid argument: '{text}' is not a size (a number with an optional suffix)");
    }
    let scale: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" => default_scale,
        "b" | "byte" | "bytes" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "e" | "eib" => 1 << 60,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "eb" => 1_000_000_000_000_000_000,
        _ => bail!("invalid argument: unknown suffix '{suffix}'"),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let too_large = || anyhow::anyhow!("invalid argument: size '{text}' is too large");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(u128::from(scale)).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        // At most 18 digits of fraction matter for a 64-bit byte count.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| too_large())?;
        let denominator = 10u128.pow(digits.len() as u32);
        bytes += numerator * u128::from(scale) / denominator;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// virsh's "1.00 GiB": two decimals in the largest binary unit that keeps the number >= 1.
pub fn pretty_capacity(bytes: u64) -> String {
    pretty_capacity_places(bytes, 2)
}

/// virsh's `vshPrettyCapacity` value with `places` decimals (pool-info: 2, domblkinfo: 3).
pub fn pretty_capacity_places(bytes: u64, places: usize) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.places$} {}", UNITS[unit])
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn pool_list(pools: &[PoolInfo]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.active { "active" } else { "inactive" }.to_string(),
                yes_no(p.autostart),
            ]
        })
        .collect();
    table(&["Name", "State", "Autostart"], &rows)
}

fn capacity_or_dash(value: Option<u64>) -> String {
    value
        .map(pretty_capacity)
        .unwrap_or_else(|| "-".to_string())
}

fn pool_list_details(pools: &[PoolInfo]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.active { "running" } else { "inactive" }.to_string(),
                yes_no(p.autostart),
                yes_no(p.persistent),
                capacity_or_dash(p.capacity),
                capacity_or_dash(p.allocation),
                capacity_or_dash(p.available),
            ]
        })
        .collect();
    table(
        &[
            "Name",
            "State",
            "Autostart",
            "Persistent",
            "Capacity",
            "Allocation",
            "Available",
        ],
        &rows,
    )
}

/// "Label:" padded to 15 columns, a space, the value (virsh's info layout).
fn fields(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(label, value)| format!("{label:<15} {value}\n"))
        .collect()
}

fn pool_info(pool: &PoolInfo) -> String {
    let mut lines = vec![
        ("Name:", pool.name.clone()),
        ("UUID:", pool.uuid.clone()),
        (
            "State:",
            if pool.active { "running" } else { "inactive" }.to_string(),
        ),
        ("Persistent:", yes_no(pool.persistent)),
        ("Autostart:", yes_no(pool.autostart)),
    ];
    if let (Some(capacity), Some(allocation), Some(available)) =
        (pool.capacity, pool.allocation, pool.available)
    {
        lines.push(("Capacity:", pretty_capacity(capacity)));
        lines.push(("Allocation:", pretty_capacity(allocation)));
        lines.push(("Available:", pretty_capacity(available)));
    }
    fields(&lines)
}

fn vol_list(volumes: &[VolumeInfo]) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| vec![v.name.clone(), v.path.clone()])
        .collect();
    table(&["Name", "Path"], &rows)
}

fn vol_list_details(volumes: &[VolumeInfo]) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.path.clone(),
                v.volume_type.clone(),
                pretty_capacity(v.capacity),
                pretty_capacity(v.allocation),
            ]
        })
        .collect();
    table(&["Name", "Path", "Type", "Capacity", "Allocation"], &rows)
}

fn vol_info(volume: &VolumeInfo) -> String {
    fields(&[
        ("Name:", volume.name.clone()),
        ("Type:", volume.volume_type.clone()),
        ("Capacity:", pretty_capacity(volume.capacity)),
        ("Allocation:", pretty_capacity(volume.allocation)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domblklist_is_virshs_table() {
        let disk = |disk_type: &str, device: &str, target: &str, source: Option<&str>| DomainDisk {
            disk_type: disk_type.to_string(),
            device: device.to_string(),
            target: target.to_string(),
            source: source.map(str::to_string),
        };
        let disks = [
            disk("file", "disk", "vda", Some("/img/a.qcow2")),
            disk("volume", "disk", "vdb", Some("data.raw")),
            disk("file", "cdrom", "hdc", None),
        ];
        assert_eq!(
            domblklist(&disks, false),
            " Target   Source\n\
             ------------------------\n \
             vda      /img/a.qcow2\n \
             vdb      data.raw\n \
             hdc      -\n"
        );
        assert_eq!(
            domblklist(&disks, true),
            " Type     Device   Target   Source\n\
             ------------------------------------------\n \
             file     disk     vda      /img/a.qcow2\n \
             volume   disk     vdb      data.raw\n \
             file     cdrom    hdc      -\n"
        );
    }

    #[test]
    fn sizes_take_virsh_and_qemu_img_suffixes() {
        assert_eq!(parse_size("1G", 1).unwrap(), 1 << 30);
        assert_eq!(parse_size("1GiB", 1).unwrap(), 1 << 30);
        assert_eq!(parse_size("1GB", 1).unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5k", 1).unwrap(), 1536);
        assert_eq!(parse_size("512", 1).unwrap(), 512);
        assert_eq!(parse_size("512b", 1024).unwrap(), 512);
        assert_eq!(parse_size("2048", 1024).unwrap(), 2 << 20);
        assert_eq!(
            parse_size("16E", 1).unwrap_err().to_string(),
            "invalid argument: size '16E' is too large"
        );
        assert_eq!(
            parse_size("1Gx", 1).unwrap_err().to_string(),
            "invalid argument: unknown suffix 'Gx'"
        );
        for bad in ["", "G", "-1", ".5G", "1..2", "1.2.3"] {
            assert!(parse_size(bad, 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capacities_print_like_virsh() {
        assert_eq!(pretty_capacity(0), "0.00 B");
        assert_eq!(pretty_capacity(1023), "1023.00 B");
        assert_eq!(pretty_capacity(1024), "1.00 KiB");
        assert_eq!(pretty_capacity(107374182400), "100.00 GiB");
        assert_eq!(pretty_capacity(1536 << 20), "1.50 GiB");
    }

    #[test]
    fn pool_listings_match_virsh() {
        let pool = |name: &str, active: bool| PoolInfo {
            name: name.to_string(),
            uuid: String::new(),
            pool_type: "dir".to_string(),
            active,
            persistent: true,
            autostart: false,
            target: "/x".to_string(),
            capacity: active.then_some(107374182400),
            allocation: active.then_some(0),
            available: active.then_some(107374182400),
        };
        let pools = [pool("default-pool", true), pool("p1", false)];
        // Captured from `virsh -c test:///default pool-list --all [--details]`.
        assert_eq!(
            pool_list(&pools),
            " Name           State      Autostart\n\
             --------------------------------------\n \
             default-pool   active     no\n \
             p1             inactive   no\n"
        );
        assert_eq!(
            pool_list_details(&pools),
            " Name           State      Autostart   Persistent   Capacity     Allocation   Available\n\
             ------------------------------------------------------------------------------------------\n \
             default-pool   running    no          yes          100.00 GiB   0.00 B       100.00 GiB\n \
             p1             inactive   no          yes          -            -            -\n"
        );
    }
}
