//! GRUB, for both firmware kinds, from the guest's own packages (so the guest can update it later):
//!
//! - BIOS: the MBR holds GRUB's boot.img, the BIOS boot partition its core.img; core.img finds the
//!   root filesystem by UUID and loads its modules from /boot/grub/i386-pc. core.img is made by the
//!   guest's grub-mkimage (chroot), so it matches the modules the guest carries. grub-bios-setup (the
//!   host's, from grub-pc-bin) writes both into the disk image file. It insists on finding the device
//!   that holds its `-d` directory and on knowing it as a GRUB disk, which a directory on the host's
//!   disk does not satisfy in general; so the two images are given to it on a small scratch ext2
//!   filesystem mounted through a loop device, which the device map names.
//! - UEFI: Debian's signed shim and GRUB in the removable-media path (EFI/BOOT/BOOTX64.EFI), so Secure
//!   Boot firmware with Microsoft's keys boots it too; a small grub.cfg beside it (and in EFI/debian,
//!   where Debian's signed GRUB looks first) finds the root filesystem by UUID and reads its grub.cfg.
//!
//! One /boot/grub/grub.cfg on the root filesystem serves both; it is written here rather than by
//! grub-mkconfig, which needs the disk as a block device. The guest's own update-grub replaces it
//! when the guest updates its kernel (with the serial console kept, see customize.rs).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::customize::KERNEL_CONSOLE;
use super::disk::sparse_file;
use super::tools::{self, Mount, CHROOT, GRUB_BIOS_SETUP, LOSETUP, MKE2FS};

/// /boot/grub/grub.cfg: one entry, on the serial console as well as the screen.
pub fn write_grub_cfg(root: &Path, root_uuid: &str, title: &str) -> anyhow::Result<()> {
    let cfg = format!(
        "set timeout=1\n\
         if serial --unit=0 --speed=115200; then\n\
         \x20 terminal_input --append serial\n\
         \x20 terminal_output --append serial\n\
         fi\n\
         menuentry '{title}' {{\n\
         \x20 search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         \x20 linux /vmlinuz root=UUID={root_uuid} ro {KERNEL_CONSOLE}\n\
         \x20 initrd /initrd.img\n\
         }}\n"
    );
    let dir = root.join("boot/grub");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("grub.cfg"), cfg).context("cannot write /boot/grub/grub.cfg")
}

/// The BIOS half, part 1 (before the root filesystem is made): GRUB's modules into /boot/grub, and
/// core.img + boot.img made for the disk. Returns the directory holding the two images.
pub fn prepare_bios(root: &Path, root_uuid: &str, work: &Path) -> anyhow::Result<PathBuf> {
    let modules = root.join("usr/lib/grub/i386-pc");
    let target = root.join("boot/grub/i386-pc");
    fs::create_dir_all(&target)?;
    for entry in fs::read_dir(&modules)
        .with_context(|| format!("the image has no GRUB for BIOS ({})", modules.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".mod") || name.ends_with(".lst") {
            fs::copy(entry.path(), target.join(&*name))?;
        }
    }
    // grub-mkimage runs in the guest's tree: its input and output live there for the moment.
    let early = "/boot/grub/i386-pc/oxvirt-early.cfg";
    let core = "/boot/grub/i386-pc/core.img";
    fs::write(
        root.join(early.trim_start_matches('/')),
        format!("search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n"),
    )?;
    let mut command = tools::command(CHROOT);
    command
        .arg(root)
        .args([
            "grub-mkimage",
            "-O",
            "i386-pc",
            "-d",
            "/usr/lib/grub/i386-pc",
        ])
        .args(["-c", early, "-p", "/boot/grub", "-o", core])
        .args(["biosdisk", "part_gpt", "ext2", "search_fs_uuid"]);
    tools::run(command, "making GRUB's core image")?;
    fs::remove_file(root.join(early.trim_start_matches('/')))?;
    let images = work.join("grub-bios");
    fs::create_dir_all(&images)?;
    fs::copy(
        root.join(core.trim_start_matches('/')),
        images.join("core.img"),
    )?;
    fs::copy(modules.join("boot.img"), images.join("boot.img"))?;
    Ok(images)
}

/// The BIOS half, part 2: boot.img into the MBR and core.img into the BIOS boot partition of `disk`.
pub fn install_bios(disk: &Path, images: &Path, work: &Path) -> anyhow::Result<()> {
    let scratch = work.join("grub-bios.ext2");
    sparse_file(&scratch, 8 * 1024 * 1024)?;
    let mut command = tools::command(MKE2FS);
    command
        .args(["-q", "-F", "-t", "ext2", "-d"])
        .arg(images)
        .arg(&scratch);
    tools::run(command, "making GRUB's scratch filesystem")?;
    let loop_device = LoopDevice::attach(&scratch)?;
    let mount_point = work.join("grub-bios-mnt");
    fs::create_dir_all(&mount_point)?;
    let mount = Mount::new(
        [&loop_device.path],
        &mount_point,
        false,
        "mounting GRUB's scratch filesystem",
    )?;
    let device_map = mount_point.join("device.map");
    fs::write(
        &device_map,
        format!(
            "(hd0) {}\n(hd1) {}\n",
            disk.display(),
            loop_device.path.display()
        ),
    )?;
    let mut command = tools::command(GRUB_BIOS_SETUP);
    command
        .arg("-d")
        .arg(&mount_point)
        .arg("-m")
        .arg(&device_map)
        .arg(disk);
    let result = tools::run(command, "installing GRUB for BIOS");
    drop(mount);
    drop(loop_device);
    result
}

/// The UEFI half: the files of the EFI system partition, as (path on the ESP, source) pairs. The
/// stub config is written into `work`.
pub fn efi_files(
    root: &Path,
    root_uuid: &str,
    work: &Path,
) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let stub = work.join("efi-grub.cfg");
    fs::write(
        &stub,
        format!(
            "search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n"
        ),
    )?;
    let from_guest = |path: &str| -> anyhow::Result<PathBuf> {
        let file = root.join(path);
        anyhow::ensure!(file.is_file(), "the image has no /{path}");
        Ok(file)
    };
    Ok(vec![
        (
            "/EFI/BOOT/BOOTX64.EFI",
            from_guest("usr/lib/shim/shimx64.efi.signed")?,
        ),
        (
            "/EFI/BOOT/mmx64.efi",
            from_guest("usr/lib/shim/mmx64.efi.signed")?,
        ),
        (
            "/EFI/BOOT/grubx64.efi",
            from_guest("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")?,
        ),
        ("/EFI/BOOT/grub.cfg", stub.clone()),
        ("/EFI/debian/grub.cfg", stub),
    ])
}

/// A loop device on a file, detached when dropped.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn attach(file: &Path) -> anyhow::Result<LoopDevice> {
        let mut command = tools::command(LOSETUP);
        command.arg("--find").arg("--show").arg(file);
        let out = tools::run_with_input(&mut command, "attaching a loop device", None)?;
        let path = PathBuf::from(String::from_utf8_lossy(&out).trim());
        Ok(LoopDevice { path })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let mut command = tools::command(LOSETUP);
        command.arg("--detach").arg(&self.path);
        if let Err(err) = tools::run(command, "detaching the loop device") {
            eprintln!("warning: {err:#}");
        }
    }
}
