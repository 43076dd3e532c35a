//! The disk: a GPT layout, each filesystem made as a file of its own, then copied into the disk at its
//! partition's offset.
//!
//! Why not partitions on a loop device: that needs the host kernel to read partition tables on loop
//! devices, which this project's own test hosts' kernels do not; a file per filesystem needs nothing
//! from the kernel. `mke2fs -d` fills the root filesystem from the unpacked tree, and mtools writes
//! the EFI system partition, so nothing is mounted.
//!
//! Layout (as Debian's cloud images, root last so cloud-init's growpart can grow it):
//!   1 MiB   BIOS boot partition (1 MiB)   GRUB's core.img, for BIOS     (when BIOS is wanted)
//!   2 MiB   EFI system partition (126 MiB, FAT32)                         (when UEFI is wanted)
//!   128 MiB root, ext4, to the end of the disk

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context};

use super::tools::{self, MCOPY, MKE2FS, MKFS_VFAT, MMD, SFDISK};

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The Discoverable Partitions Specification's x86-64 root type.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The backup GPT at the end of the disk: header and 128 entries.
const BACKUP_GPT_SECTORS: u64 = 33;

/// The identifiers the filesystems are made with, chosen first so fstab and GRUB can name them.
pub struct FilesystemIds {
    pub root_uuid: String,
    /// FAT's volume id as fstab writes it (`ABCD-1234`); None without an EFI system partition.
    pub esp_volume_id: Option<String>,
}

impl FilesystemIds {
    pub fn new(with_esp: bool) -> FilesystemIds {
        let root_uuid = uuid::Uuid::new_v4().to_string();
        let esp_volume_id = with_esp.then(|| {
            let hex = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
            format!("{}-{}", &hex[..4], &hex[4..8])
        });
        FilesystemIds {
            root_uuid,
            esp_volume_id,
        }
    }
}

/// Where each partition is, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub bios_boot: Option<Partition>,
    pub esp: Option<Partition>,
    pub root: Partition,
}

impl Layout {
    pub fn new(disk_size: u64, bios: bool, uefi: bool) -> anyhow::Result<Layout> {
        let root_offset = 128 * MIB;
        // The root partition ends on a MiB boundary before the backup GPT.
        let end = (disk_size / SECTOR).saturating_sub(BACKUP_GPT_SECTORS) * SECTOR;
        let root_size = end.saturating_sub(root_offset) / MIB * MIB;
        if root_size < 256 * MIB {
            bail!(
                "a disk of {} MiB is too small: the first 128 MiB hold the boot partitions",
                disk_size / MIB
            );
        }
        Ok(Layout {
            disk_size,
            bios_boot: bios.then_some(Partition {
                offset: MIB,
                size: MIB,
            }),
            esp: uefi.then_some(Partition {
                offset: 2 * MIB,
                size: 126 * MIB,
            }),
            root: Partition {
                offset: root_offset,
                size: root_size,
            },
        })
    }

    /// sfdisk's script for this layout.
    fn sfdisk_script(&self) -> String {
        let mut script = String::from("label: gpt\nfirst-lba: 2048\n");
        let mut line = |part: &Partition, kind: &str, name: &str| {
            script.push_str(&format!(
                "start={}, size={}, type={kind}, name=\"{name}\"\n",
                part.offset / SECTOR,
                part.size / SECTOR
            ));
        };
        if let Some(part) = &self.bios_boot {
            line(part, BIOS_BOOT_TYPE, "BIOS boot");
        }
        if let Some(part) = &self.esp {
            line(part, ESP_TYPE, "EFI system");
        }
        line(&self.root, ROOT_TYPE, "root");
        script
    }
}

/// Creates (or truncates) `path` as a sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) -> anyhow::Result<()> {
    File::create(path)
        .and_then(|file| file.set_len(size))
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Makes `disk` a sparse file of the layout's size with its partition table.
pub fn partition(disk: &Path, layout: &Layout) -> anyhow::Result<()> {
    sparse_file(disk, layout.disk_size)?;
    let mut command = tools::command(SFDISK);
    command.arg("--quiet").arg(disk);
    tools::run_with_input(
        &mut command,
        "writing the partition table",
        Some(layout.sfdisk_script().as_bytes()),
    )
    .map(|_| ())
}

/// Makes the ext4 root filesystem image `file` of `size` bytes from the tree at `tree`.
pub fn make_root_filesystem(
    file: &Path,
    size: u64,
    tree: &Path,
    ids: &FilesystemIds,
) -> anyhow::Result<()> {
    sparse_file(file, size)?;
    let mut command = tools::command(MKE2FS);
    command
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-U"])
        .arg(&ids.root_uuid)
        .arg("-d")
        .arg(tree)
        .arg(file);
    tools::run(command, "making the root filesystem")
}

/// Makes the FAT32 EFI system partition image `file` of `size` bytes holding `files`
/// (path on the ESP, local source).
pub fn make_esp(
    file: &Path,
    size: u64,
    volume_id: &str,
    files: &[(&str, &Path)],
) -> anyhow::Result<()> {
    sparse_file(file, size)?;
    let mut command = tools::command(MKFS_VFAT);
    command
        .args(["-F", "32", "-n", "EFI", "-i"])
        .arg(volume_id.replace('-', ""))
        .arg(file);
    tools::run(command, "making the EFI system partition")?;
    // mmd makes one level at a time: every parent of every file, outermost first.
    let mut dirs: Vec<String> = Vec::new();
    for (target, _) in files {
        let parts: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        let mut at = String::new();
        for part in &parts[..parts.len() - 1] {
            at.push('/');
            at.push_str(part);
            if !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
    }
    let mtools_image = format!("{}", file.display());
    if !dirs.is_empty() {
        let mut command = tools::command(MMD);
        command
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&mtools_image)
            .args(dirs.iter().map(|dir| format!("::{dir}")));
        tools::run(command, "making directories on the EFI system partition")?;
    }
    for (target, source) in files {
        let mut command = tools::command(MCOPY);
        command
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&mtools_image)
            .arg(source)
            .arg(format!("::{target}"));
        tools::run(
            command,
            &format!("copying {target} to the EFI system partition"),
        )?;
    }
    Ok(())
}

/// Copies the filesystem image `image` into `disk` at `part`. Only the ranges the image holds data in
/// are read (a new filesystem is mostly holes), and chunks of zeros are not written: the disk file
/// starts sparse and stays so.
pub fn copy_into(image: &Path, disk: &Path, part: Partition) -> anyhow::Result<()> {
    let source = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let length = source.metadata()?.len();
    if length > part.size {
        bail!(
            "{} ({length} bytes) does not fit its partition ({} bytes)",
            image.display(),
            part.size
        );
    }
    let target = OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(|| format!("cannot open {}", disk.display()))?;
    let mut buffer = vec![0u8; MIB as usize];
    for (start, end) in data_ranges(&source, length) {
        let mut done = start;
        while done < end {
            let chunk = (end - done).min(MIB) as usize;
            source.read_exact_at(&mut buffer[..chunk], done)?;
            if buffer[..chunk].iter().any(|&byte| byte != 0) {
                target.write_all_at(&buffer[..chunk], part.offset + done)?;
            }
            done += chunk as u64;
        }
    }
    target
        .sync_all()
        .with_context(|| format!("cannot write {}", disk.display()))
}

/// The ranges of `file` that hold data, from SEEK_DATA and SEEK_HOLE; the whole file where the
/// filesystem cannot tell.
pub(crate) fn data_ranges(file: &File, length: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < length {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data after `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, length)],
        };
        let end = seek(file, SeekFrom::Hole(start)).map_or(length, |end| end.min(length));
        ranges.push((start, end));
        at = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_partition_ends_aligned_before_the_backup_gpt() {
        let layout = Layout::new(4 << 30, true, true).unwrap();
        assert_eq!(layout.root.offset, 128 * MIB);
        assert_eq!(layout.root.size, (4 << 30) - 129 * MIB);
        assert!(layout.root.offset + layout.root.size <= (4 << 30) - BACKUP_GPT_SECTORS * SECTOR);
        assert_eq!(layout.bios_boot.map(|p| p.offset), Some(MIB));
        assert_eq!(layout.esp.map(|p| p.offset), Some(2 * MIB));
        let script = layout.sfdisk_script();
        assert!(script.starts_with("label: gpt\n"), "{script}");
        assert_eq!(script.lines().count(), 5, "{script}");
    }

    #[test]
    fn firmware_choices_leave_out_their_partitions_and_tiny_disks_are_refused() {
        let bios_only = Layout::new(2 << 30, true, false).unwrap();
        assert!(bios_only.esp.is_none() && bios_only.bios_boot.is_some());
        let uefi_only = Layout::new(2 << 30, false, true).unwrap();
        assert!(uefi_only.bios_boot.is_none() && uefi_only.esp.is_some());
        let err = Layout::new(300 * MIB, true, true).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
    }

    #[test]
    fn filesystem_ids_have_the_forms_fstab_uses() {
        let ids = FilesystemIds::new(true);
        assert_eq!(ids.root_uuid.len(), 36);
        let esp = ids.esp_volume_id.unwrap();
        assert_eq!(esp.len(), 9);
        assert_eq!(&esp[4..5], "-");
        assert!(FilesystemIds::new(false).esp_volume_id.is_none());
    }

    #[test]
    fn a_sparse_image_is_copied_to_its_partition_offset_with_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let file = File::create(&image).unwrap();
        file.set_len(8 * MIB).unwrap();
        file.write_all_at(b"first", 0).unwrap();
        file.write_all_at(b"last", 8 * MIB - 4).unwrap();
        let disk = dir.path().join("disk.img");
        File::create(&disk).unwrap().set_len(32 * MIB).unwrap();
        let part = Partition {
            offset: 16 * MIB,
            size: 8 * MIB,
        };
        copy_into(&image, &disk, part).unwrap();
        let written = std::fs::read(&disk).unwrap();
        assert_eq!(&written[16 * MIB as usize..][..5], b"first");
        assert_eq!(&written[24 * MIB as usize - 4..][..4], b"last");
        assert!(written[..16 * MIB as usize].iter().all(|&b| b == 0));
        let too_small = Partition {
            offset: 0,
            size: MIB,
        };
        assert!(copy_into(&image, &disk, too_small).is_err());
    }
}
