//! A domain carried to another oxvirtd: its inactive definition and the images of the disks a
//! clone would copy (shared ones, CD-ROMs and read-only disks, keep their paths). On the other
//! side each image becomes a new volume of a pool (`--pool`, default `default`), uploaded
//! through that oxvirtd's API (`vol-upload`: it may be on another host, with another file
//! system), and the definition names it as `<disk type='volume'>`.
//!
//! - `clone --to SOCKET`: the clone's definition (new name, UUID, MACs) and the images go
//!   straight from the original's files to the other oxvirtd.
//! - `export DOM FILE.tar` / `import FILE.tar`: the same through a tar file. Its members:
//!   `manifest.json` (what follows), `domain.xml` (the inactive definition), then one
//!   `disks/N-NAME` per disk, holding only the data extents of the image file (the manifest
//!   lists them; the rest is holes), so a sparse image stays small.
//!
//! An image that is a qcow2 overlay is flattened first (into a temporary file), so the copy
//! names no backing file that only this host has. An NVRAM file the definition names is not
//! carried: the other oxvirtd makes the clone's from the firmware's template at its first start.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oxvirt_api::{Client, CreateVolumeRequest};
use oxvirt_domain::{DiskType, DiskVolume, Domain};
use oxvirt_images::Format;
use serde::{Deserialize, Serialize};

use super::copy;
use super::flow::{domain_names, original, virtual_size, Created};
use super::plan::{self, clone_name, clone_path, disk_format, new_identity, Source};
use super::{CloneArgs, ExportArgs, ImportArgs};
use crate::commands::block_on;

/// `manifest.json` of an export.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// Always "oxvirt-export".
    kind: String,
    version: u32,
    domain: String,
    disks: Vec<ManifestDisk>,
}

const KIND: &str = "oxvirt-export";
const MANIFEST: &str = "manifest.json";
const DOMAIN_XML: &str = "domain.xml";
/// Manifests and definitions are small; a larger member is not one oxvirt wrote.
const MAX_TEXT_MEMBER: u64 = 8 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestDisk {
    /// The disk's index among the definition's disks, and its target (for messages).
    index: usize,
    dev: String,
    /// The archive member with the image's data.
    member: String,
    /// The original file's name (the new volume is named after it).
    file_name: String,
    /// "raw" or "qcow2".
    format: String,
    /// The image file's length; `extents` are its ranges that hold data, in order.
    length: u64,
    extents: Vec<(u64, u64)>,
}

/// An original disk ready to travel: its image (flattened into `_flat` if it was an overlay)
/// and the lock that keeps writers away while it is read.
struct Outgoing {
    index: usize,
    dev: String,
    source: Source,
    file: PathBuf,
    file_name: String,
    _lock: oxvirt_images::Image,
    _flat: Option<tempfile::TempPath>,
}

/// The disks of `domain` a clone copies (plan.rs's rule), opened for reading.
fn outgoing(client: &Client, domain: &Domain, paused: bool) -> anyhow::Result<Vec<Outgoing>> {
    let mut disks = Vec::new();
    for (index, disk) in domain.devices.disks.iter().enumerate() {
        if plan::shared_reason(disk).is_some() {
            continue;
        }
        let dev = disk.target.dev.clone();
        let source = block_on(plan::source_of(client, disk))??;
        let file_name = source
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{dev}.img"));
        let lock = oxvirt_images::Image::open(
            &source.path,
            &oxvirt_images::OpenOptions {
                format: Some(source.format),
                force_share: paused,
                ..oxvirt_images::OpenOptions::default()
            },
        )
        .with_context(|| format!("cannot open the disk {}", source.path.display()))?;
        let overlay = lock
            .as_qcow2()
            .is_some_and(|q| q.header().backing_file.is_some());
        let (file, flat) = if overlay {
            let flat = tempfile::Builder::new()
                .prefix("oxvirt-flat-")
                .tempfile()
                .context("cannot make a temporary file")?
                .into_temp_path();
            std::fs::remove_file(&flat).context("cannot make a temporary file")?;
            let bar = indicatif::ProgressBar::hidden();
            copy::copy(&source, &flat, paused, false, &bar)?;
            (flat.to_path_buf(), Some(flat))
        } else {
            (source.path.clone(), None)
        };
        disks.push(Outgoing {
            index,
            dev,
            source,
            file,
            file_name,
            _lock: lock,
            _flat: flat,
        });
    }
    Ok(disks)
}

/// Volume names in `pool` for the incoming disks: each after its original file (virt-clone's
/// clone rule when the domain is renamed), made unique among the pool's volumes.
fn volume_names(
    remote: &Client,
    pool: &str,
    files: &[String],
    original_name: &str,
    new_name: &str,
) -> anyhow::Result<Vec<String>> {
    let existing: Vec<String> = block_on(remote.list_volumes(pool))?
        .with_context(|| format!("storage pool '{pool}'"))?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut names: Vec<String> = Vec::new();
    for file in files {
        let taken = |p: &Path| {
            let name = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            existing.contains(&name) || names.contains(&name)
        };
        let path = if original_name == new_name {
            let plain = Path::new("/").join(file);
            if taken(&plain) {
                clone_path(&plain, original_name, new_name, None, taken)
            } else {
                plain
            }
        } else {
            clone_path(
                &Path::new("/").join(file),
                original_name,
                new_name,
                None,
                taken,
            )
        };
        names.push(
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(names)
}

/// Makes disk `index` of `domain` volume `name` of `pool`, in `format`.
fn point_at_volume(domain: &mut Domain, index: usize, pool: &str, name: &str, format: Format) {
    if let Some(disk) = domain.devices.disks.get_mut(index) {
        disk.disk_type = DiskType::Volume;
        disk.source = None;
        disk.volume = Some(DiskVolume {
            pool: pool.to_string(),
            volume: name.to_string(),
        });
        disk.driver.format = disk_format(format);
        disk.driver.format_stated = true;
    }
}

/// An image file's bytes from its data extents: zeros in between, `length` in all.
struct Expand<R> {
    data: R,
    extents: Vec<(u64, u64)>,
    next: usize,
    position: u64,
    length: u64,
}

impl<R: Read> Read for Expand<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.length || buf.is_empty() {
            return Ok(0);
        }
        while let Some(&(start, len)) = self.extents.get(self.next) {
            if self.position < start + len {
                break;
            }
            self.next += 1;
        }
        let (inside, until) = match self.extents.get(self.next) {
            Some(&(start, len)) if self.position >= start => (true, start + len),
            Some(&(start, _)) => (false, start),
            None => (false, self.length),
        };
        let want = (until - self.position).min(buf.len() as u64) as usize;
        let got = if inside {
            self.data.read(&mut buf[..want])?
        } else {
            buf[..want].fill(0);
            want
        };
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive member ends before its extents",
            ));
        }
        self.position += got as u64;
        Ok(got)
    }
}

/// Makes volume `name` of `pool` on `remote` and uploads `length` bytes of `reader` into it.
#[allow(clippy::too_many_arguments)]
fn deliver(
    remote: &Client,
    pool: &str,
    name: &str,
    format: Format,
    capacity: u64,
    reader: impl Read + Send + 'static,
    length: u64,
    created: &mut Created,
) -> anyhow::Result<()> {
    let request = CreateVolumeRequest {
        name: name.to_string(),
        capacity,
        format: format.name().to_string(),
        prealloc_metadata: false,
        allocation: Some(0),
        backing_vol: None,
        backing_format: None,
        cluster_size: None,
    };
    block_on(remote.create_volume(pool, &request))?
        .with_context(|| format!("cannot create volume '{name}' in pool '{pool}'"))?;
    created.volumes.push((pool.to_string(), name.to_string()));
    let bar = copy::allocating(Path::new(name));
    block_on(crate::pool::upload_reader(
        remote,
        pool,
        name,
        reader,
        length,
        Some(bar.clone()),
    ))?
    .with_context(|| format!("cannot upload volume '{name}' to pool '{pool}'"))?;
    bar.finish_and_clear();
    Ok(())
}

/// Defines `domain` on `remote`; on success nothing is removed any more.
fn define(remote: &Client, domain: &Domain, created: &mut Created) -> anyhow::Result<()> {
    let defined = block_on(remote.define_domain(&domain.to_xml()))?.with_context(|| {
        format!(
            "cannot define '{}' on {}",
            domain.name,
            remote.socket().display()
        )
    })?;
    created.domain = Some(defined.uuid);
    Ok(())
}

fn check_pool(remote: &Client, pool: &str) -> anyhow::Result<()> {
    let info = block_on(remote.pool_info(pool))?
        .with_context(|| format!("storage pool '{pool}' on {}", remote.socket().display()))?;
    if !info.active {
        bail!(
            "storage pool '{pool}' on {} is not active",
            remote.socket().display()
        );
    }
    Ok(())
}

/// `oxvirt clone --original DOM --name NEW --to SOCKET`.
pub fn clone_to(local: &Client, args: &CloneArgs, remote: &Client) -> anyhow::Result<()> {
    let (original, paused) = original(local, &args.original)?;
    let names = domain_names(remote)?;
    let taken = |n: &str| names.iter().any(|m| m == n);
    let name = match &args.name {
        Some(name) => name.clone(),
        None if args.auto_clone => clone_name(&original.name, taken),
        None => bail!("A name is required for the new virtual machine, use '--name NEW_VM_NAME' to specify one."),
    };
    if taken(&name) {
        bail!(
            "Invalid name for new guest: Guest name '{name}' is already in use on {}.",
            remote.socket().display()
        );
    }
    let mut domain = original.clone();
    for warning in new_identity(&mut domain, &name, &args.mac)? {
        eprintln!("WARNING  {warning}");
    }
    if let Some(nvram) = &mut domain.os.nvram {
        nvram.path = None;
    }
    check_pool(remote, &args.pool)?;
    let disks = outgoing(local, &original, paused)?;
    let files: Vec<String> = disks.iter().map(|d| d.file_name.clone()).collect();
    let volumes = volume_names(remote, &args.pool, &files, &original.name, &name)?;
    let mut created = Created::default();
    let result = (|| -> anyhow::Result<()> {
        for (disk, volume) in disks.iter().zip(&volumes) {
            let file = std::fs::File::open(&disk.file)
                .with_context(|| format!("cannot open {}", disk.file.display()))?;
            let length = file.metadata()?.len();
            let capacity = virtual_size(&Source {
                path: disk.file.clone(),
                format: disk.source.format,
            })?;
            deliver(
                remote,
                &args.pool,
                volume,
                disk.source.format,
                capacity,
                file,
                length,
                &mut created,
            )?;
            point_at_volume(
                &mut domain,
                disk.index,
                &args.pool,
                volume,
                disk.source.format,
            );
        }
        define(remote, &domain, &mut created)
    })();
    match result {
        Ok(()) => {
            println!("\nClone '{name}' created successfully.");
            Ok(())
        }
        Err(err) => {
            created.cleanup(remote);
            Err(err)
        }
    }
}

/// `oxvirt export DOM FILE.tar`.
pub fn export(client: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let (domain, paused) = original(client, &args.domain)?;
    let disks = outgoing(client, &domain, paused)?;
    let mut manifest = Manifest {
        kind: KIND.to_string(),
        version: 1,
        domain: domain.name.clone(),
        disks: Vec::new(),
    };
    for (n, disk) in disks.iter().enumerate() {
        let file = std::fs::File::open(&disk.file)
            .with_context(|| format!("cannot open {}", disk.file.display()))?;
        let length = file.metadata()?.len();
        manifest.disks.push(ManifestDisk {
            index: disk.index,
            dev: disk.dev.clone(),
            member: format!("disks/{n}-{}", disk.file_name),
            file_name: disk.file_name.clone(),
            format: disk.source.format.name().to_string(),
            length,
            extents: crate::builder::data_ranges(&file, length)
                .into_iter()
                .map(|(start, end)| (start, end - start))
                .collect(),
        });
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.file)
        .with_context(|| format!("cannot create {}", args.file.display()))?;
    let written = (|| -> anyhow::Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        let manifest_json = serde_json::to_vec_pretty(&manifest)?;
        append(
            &mut tar,
            MANIFEST,
            manifest_json.len() as u64,
            &manifest_json[..],
        )?;
        let xml = domain.to_xml();
        append(&mut tar, DOMAIN_XML, xml.len() as u64, xml.as_bytes())?;
        for (disk, entry) in disks.iter().zip(&manifest.disks) {
            let mut file = std::fs::File::open(&disk.file)?;
            let size: u64 = entry.extents.iter().map(|(_, len)| len).sum();
            let bar = copy::allocating(&disk.file);
            bar.set_length(size);
            let reader = Extents {
                file: &mut file,
                extents: &entry.extents,
                next: 0,
                left: 0,
                bar: &bar,
            };
            append(&mut tar, &entry.member, size, reader)?;
            bar.finish_and_clear();
        }
        tar.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(())
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&args.file);
        return Err(err.context(format!("cannot write {}", args.file.display())));
    }
    println!(
        "\nDomain '{}' exported to {}",
        domain.name,
        args.file.display()
    );
    Ok(())
}

fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> anyhow::Result<()> {
    // GNU headers: a long file name gets its own entry instead of being refused.
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .with_context(|| format!("cannot write the member {name}"))
}

/// The data extents of an image file, one after the other.
struct Extents<'a> {
    file: &'a mut std::fs::File,
    extents: &'a [(u64, u64)],
    next: usize,
    left: u64,
    bar: &'a indicatif::ProgressBar,
}

impl Read for Extents<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.left == 0 {
            let Some(&(start, len)) = self.extents.get(self.next) else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(start))?;
            self.left = len;
            self.next += 1;
        }
        let want = self.left.min(buf.len() as u64) as usize;
        let got = self.file.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the image file shrank while it was read",
            ));
        }
        self.left -= got as u64;
        self.bar.inc(got as u64);
        Ok(got)
    }
}

/// Where each member's data starts in the archive, and its size.
fn index(path: &Path) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut members = Vec::new();
    for entry in archive
        .entries_with_seek()
        .with_context(|| format!("{} is not a tar archive", path.display()))?
    {
        let entry = entry.with_context(|| format!("{} is not a tar archive", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        members.push((name, entry.raw_file_position(), entry.size()));
    }
    Ok(members)
}

fn member_text(path: &Path, members: &[(String, u64, u64)], name: &str) -> anyhow::Result<String> {
    let &(_, at, size) = members
        .iter()
        .find(|(n, _, _)| n == name)
        .with_context(|| {
            format!(
                "{} has no {name}: not an `oxvirt export` archive",
                path.display()
            )
        })?;
    if size > MAX_TEXT_MEMBER {
        bail!(
            "{}: {name} is {size} bytes, more than an export writes",
            path.display()
        );
    }
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    let mut text = String::new();
    file.take(size)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: cannot read {name}", path.display()))?;
    Ok(text)
}

/// Checks that the extents are in order, inside the file, and fill the member exactly.
fn check_extents(disk: &ManifestDisk, member_size: u64) -> anyhow::Result<()> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(start, len) in &disk.extents {
        let stop = start
            .checked_add(len)
            .filter(|&s| start >= end && s <= disk.length);
        let Some(stop) = stop else {
            bail!(
                "the manifest's extents of disk '{}' are out of order or past its end",
                disk.dev
            );
        };
        end = stop;
        total += len;
    }
    if total != member_size {
        bail!(
            "disk '{}': the member {} has {member_size} bytes, its extents {total}",
            disk.dev,
            disk.member
        );
    }
    Ok(())
}

/// `oxvirt import FILE.tar [--name NEW] [--pool POOL]`.
pub fn import(client: &Client, args: ImportArgs) -> anyhow::Result<()> {
    let members = index(&args.file)?;
    let manifest: Manifest = serde_json::from_str(&member_text(&args.file, &members, MANIFEST)?)
        .with_context(|| {
            format!(
                "{}: {MANIFEST} is not an export's manifest",
                args.file.display()
            )
        })?;
    if manifest.kind != KIND || manifest.version != 1 {
        bail!(
            "{}: not an `oxvirt export` archive of version 1",
            args.file.display()
        );
    }
    let xml = member_text(&args.file, &members, DOMAIN_XML)?;
    let original = oxvirt_domain::parse_domain_xml(&xml)
        .with_context(|| format!("{}: {DOMAIN_XML}", args.file.display()))?;
    let names = domain_names(client)?;
    let mut domain = original.clone();
    let name = match &args.name {
        Some(name) => {
            for warning in new_identity(&mut domain, name, &[])? {
                eprintln!("WARNING  {warning}");
            }
            name.clone()
        }
        None => original.name.clone(),
    };
    if names.contains(&name) {
        bail!("Guest name '{name}' is already in use.");
    }
    if let Some(nvram) = &mut domain.os.nvram {
        nvram.path = None;
    }
    check_pool(client, &args.pool)?;
    let mut disks = Vec::new();
    for disk in &manifest.disks {
        let &(_, at, size) = members
            .iter()
            .find(|(n, _, _)| *n == disk.member)
            .with_context(|| {
                format!(
                    "{}: the member {} is missing",
                    args.file.display(),
                    disk.member
                )
            })?;
        check_extents(disk, size)?;
        let format = Format::parse(&disk.format)
            .map_err(|_| anyhow::anyhow!("disk '{}': format '{}'", disk.dev, disk.format))?;
        if disk.index >= domain.devices.disks.len() {
            bail!(
                "the manifest names disk {} of a definition with fewer",
                disk.index
            );
        }
        disks.push((disk, at, size, format));
    }
    let files: Vec<String> = manifest.disks.iter().map(|d| d.file_name.clone()).collect();
    let volumes = volume_names(client, &args.pool, &files, &original.name, &name)?;
    let mut created = Created::default();
    let result = (|| -> anyhow::Result<()> {
        for ((disk, at, size, format), volume) in disks.iter().zip(&volumes) {
            let mut file = std::fs::File::open(&args.file)?;
            file.seek(SeekFrom::Start(*at))?;
            let reader = Expand {
                data: file.take(*size),
                extents: disk.extents.clone(),
                next: 0,
                position: 0,
                length: disk.length,
            };
            // The capacity the volume is made with is replaced by the uploaded image's.
            deliver(
                client,
                &args.pool,
                volume,
                *format,
                disk.length,
                reader,
                disk.length,
                &mut created,
            )?;
            point_at_volume(&mut domain, disk.index, &args.pool, volume, *format);
        }
        define(client, &domain, &mut created)
    })();
    match result {
        Ok(()) => {
            println!("\nDomain '{name}' imported from {}", args.file.display());
            Ok(())
        }
        Err(err) => {
            created.cleanup(client);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_expand_to_the_whole_file() {
        let data = b"AAAABB".to_vec();
        let mut reader = Expand {
            data: &data[..],
            extents: vec![(2, 4), (10, 2)],
            next: 0,
            position: 0,
            length: 14,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\0\0AAAA\0\0\0\0BB\0\0");
    }

    #[test]
    fn manifest_extents_are_checked() {
        let disk = ManifestDisk {
            index: 0,
            dev: "vda".into(),
            member: "disks/0-a".into(),
            file_name: "a".into(),
            format: "raw".into(),
            length: 100,
            extents: vec![(0, 10), (50, 10)],
        };
        assert!(check_extents(&disk, 20).is_ok());
        assert!(check_extents(&disk, 21).is_err());
        let backwards = ManifestDisk {
            extents: vec![(50, 10), (0, 10)],
            ..disk.clone()
        };
        assert!(check_extents(&backwards, 20).is_err());
        let past = ManifestDisk {
            extents: vec![(95, 10)],
            ..disk
        };
        assert!(check_extents(&past, 10).is_err());
    }
}
