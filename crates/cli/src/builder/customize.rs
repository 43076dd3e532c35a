//! What makes one image out of the template's root filesystem, done in its unpacked directory: the
//! identity every copy must not share (SSH host keys, machine-id), the operator's choices (hostname,
//! root password, SSH key, extra packages), and the files that tie it to its disk (fstab, GRUB's
//! defaults for a serial console).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::disk::FilesystemIds;
use super::template::Template;
use super::tools::{self, Mount, CHROOT};

/// The kernel command line of every boot entry: the serial console first-class, as cloud images have.
pub const KERNEL_CONSOLE: &str = "console=tty0 console=ttyS0,115200";

/// Generates SSH host keys on the first boot when none exist. cloud-init does it too, but an image
/// booted without a cloud-init data source must still start sshd (Debian's unit fails without keys).
const SSH_HOST_KEYS_UNIT: &str = "[Unit]
Description=Generate missing SSH host keys (made by oxvirt builder)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

/// Writes a file in the guest's tree, creating its directory.
fn write(root: &Path, path: &str, contents: &str) -> anyhow::Result<()> {
    let target = guest_path(root, path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {} in the image", parent.display()))?;
    }
    fs::write(&target, contents).with_context(|| format!("cannot write {path} in the image"))
}

fn guest_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn remove_if_present(root: &Path, path: &str) -> anyhow::Result<()> {
    match fs::remove_file(guest_path(root, path)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {path} from the image"))
        }
        _ => Ok(()),
    }
}

/// Makes the unpacked tree a fresh guest: no identity shared with other images of the same
/// template, its disk's filesystems in fstab, its name, apt sources with security updates.
pub fn prepare(
    root: &Path,
    template: &Template,
    ids: &FilesystemIds,
    hostname: &str,
) -> anyhow::Result<()> {
    // Every image from one cached tarball would otherwise share these.
    for entry in fs::read_dir(guest_path(root, "/etc/ssh")).context("no /etc/ssh in the image")? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }
    // An empty machine-id makes systemd generate one at first boot (a missing file would not).
    write(root, "/etc/machine-id", "")?;
    remove_if_present(root, "/var/lib/dbus/machine-id")?;
    remove_if_present(root, "/var/lib/systemd/random-seed")?;

    write(root, "/etc/hostname", &format!("{hostname}\n"))?;
    write(
        root,
        "/etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
    )?;
    let mut fstab = format!("UUID={} / ext4 errors=remount-ro 0 1\n", ids.root_uuid);
    if let Some(esp) = &ids.esp_volume_id {
        fstab.push_str(&format!("UUID={esp} /boot/efi vfat umask=0077 0 1\n"));
        fs::create_dir_all(guest_path(root, "/boot/efi"))?;
    }
    write(root, "/etc/fstab", &fstab)?;
    write(
        root,
        "/etc/apt/sources.list",
        &format!(
            "deb {m} {s} main\ndeb {m} {s}-updates main\ndeb {sec} {s}-security main\n",
            m = template.mirror,
            s = template.suite,
            sec = template.security_mirror
        ),
    )?;
    // When the guest updates its kernel, update-grub keeps the serial console.
    write(
        root,
        "/etc/default/grub",
        &format!(
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
             GRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"{KERNEL_CONSOLE}\"\n\
             GRUB_TERMINAL=\"console serial\"\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"
        ),
    )?;
    write(
        root,
        "/etc/systemd/system/oxvirt-ssh-host-keys.service",
        SSH_HOST_KEYS_UNIT,
    )?;
    let wants = guest_path(root, "/etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    let link = wants.join("oxvirt-ssh-host-keys.service");
    if !link.exists() {
        symlink("/etc/systemd/system/oxvirt-ssh-host-keys.service", &link)
            .context("cannot enable the SSH host key unit")?;
    }
    Ok(())
}

/// Sets root's password (hashed by the guest's own chpasswd, with its PAM defaults).
pub fn set_root_password(root: &Path, password: &str) -> anyhow::Result<()> {
    let mut command = tools::command(CHROOT);
    command.arg(root).arg("chpasswd");
    tools::run_with_input(
        &mut command,
        "setting root's password",
        Some(format!("root:{password}\n").as_bytes()),
    )
    .map(|_| ())
}

/// Adds public keys to root's authorized_keys.
pub fn inject_ssh_keys(root: &Path, keys: &[(PathBuf, String)]) -> anyhow::Result<()> {
    let dir = guest_path(root, "/root/.ssh");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let mut text = String::new();
    for (_, key) in keys {
        text.push_str(key.trim_end());
        text.push('\n');
    }
    let file = dir.join("authorized_keys");
    fs::write(&file, text).context("cannot write root's authorized_keys")?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Installs more packages with the guest's apt, from the template's archive.
pub fn install_packages(root: &Path, packages: &[String]) -> anyhow::Result<()> {
    let _mounts = ChrootMounts::new(root)?;
    // No service may start inside the build (policy-rc.d is Debian's switch for that).
    write(root, "/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(
        guest_path(root, "/usr/sbin/policy-rc.d"),
        fs::Permissions::from_mode(0o755),
    )?;
    let resolv = guest_path(root, "/etc/resolv.conf");
    let had_resolv = fs::symlink_metadata(&resolv).is_ok();
    if !had_resolv {
        fs::copy("/etc/resolv.conf", &resolv).context("cannot give the build a resolv.conf")?;
    }
    let result = (|| {
        apt(root, &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(packages.iter().map(String::as_str));
        apt(root, &args)?;
        apt(root, &["clean"])
    })();
    remove_if_present(root, "/usr/sbin/policy-rc.d")?;
    if !had_resolv {
        remove_if_present(root, "/etc/resolv.conf")?;
    }
    result.with_context(|| format!("installing {}", packages.join(", ")))
}

fn apt(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut command = tools::command(CHROOT);
    command
        .arg(root)
        .arg("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    tools::run(command, &format!("apt-get {}", args[0]))
}

/// /proc, /sys and /dev inside the tree while apt runs there; unmounted when dropped, in reverse.
struct ChrootMounts(Vec<Mount>);

impl ChrootMounts {
    fn new(root: &Path) -> anyhow::Result<ChrootMounts> {
        let mut mounts = ChrootMounts(Vec::new());
        for (what, args) in [
            ("/proc", &["-t", "proc", "proc"][..]),
            ("/sys", &["-t", "sysfs", "sysfs"][..]),
            ("/dev", &["--bind", "/dev"][..]),
            ("/dev/pts", &["--bind", "/dev/pts"][..]),
        ] {
            let target = guest_path(root, what);
            fs::create_dir_all(&target)?;
            // Lazy: a process apt left behind must not keep the host's /dev bound into a
            // directory that is removed next.
            let mount = Mount::new(
                args,
                &target,
                true,
                &format!("mounting {what} for the build"),
            )?;
            mounts.0.push(mount);
        }
        Ok(mounts)
    }
}

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        // /dev/pts before /dev.
        while let Some(mount) = self.0.pop() {
            drop(mount);
        }
    }
}
