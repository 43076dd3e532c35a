//! Install media: the `--cdrom` ISO must exist; a `--location` tree (a directory, or an ISO read
//! with xorriso) gives the kernel and initrd, found where virt-install looks for them, and, for
//! trees with a `.treeinfo`, the OS when `--os-variant` is not given.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Kernel and initrd paths inside install trees, as virt-install's urldetect finds them:
/// Debian/Ubuntu netboot and live trees, Red Hat family trees.
const KERNEL_PATHS: &[(&str, &str)] = &[
    ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"),
    ("install.amd/vmlinuz", "install.amd/initrd.gz"),
    ("install/vmlinuz", "install/initrd.gz"),
    ("casper/vmlinuz", "casper/initrd"),
    ("casper/vmlinuz", "casper/initrd.gz"),
    ("isolinux/vmlinuz", "isolinux/initrd.img"),
    ("boot/x86_64/loader/linux", "boot/x86_64/loader/initrd"),
];

/// Checks that the `--cdrom` ISO is a readable file (virt-install: "Validating install media").
pub fn check_iso(path: &str) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() || meta.file_type().is_block_device_like() => Ok(()),
        Ok(_) => bail!("Validating install media '{path}' failed: not a file"),
        Err(err) => bail!("Validating install media '{path}' failed: {err}"),
    }
}

trait BlockDeviceLike {
    fn is_block_device_like(&self) -> bool;
}

impl BlockDeviceLike for std::fs::FileType {
    fn is_block_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_block_device()
    }
}

/// A `--location`: a directory tree or an ISO holding one.
#[derive(Debug, Clone)]
pub struct Location {
    source: PathBuf,
    iso: bool,
}

impl Location {
    pub fn open(path: &str) -> anyhow::Result<Location> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("Validating install media '{path}' failed"))?;
        Ok(Location {
            source: PathBuf::from(path),
            iso: !meta.is_dir(),
        })
    }

    /// The bytes of one file of the tree, None when it is not there.
    fn read(&self, inner: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.iso {
            let path = self.source.join(inner);
            return match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
            };
        }
        let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
        let out = scratch.path().join("file");
        let status = Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(&self.source)
            .args(["-extract", &format!("/{inner}")])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run xorriso (Debian package xorriso) to read the ISO")?;
        if !status.success() || !out.is_file() {
            return Ok(None);
        }
        Ok(Some(std::fs::read(&out)?))
    }

    /// (kernel, initrd) paths inside the tree.
    pub fn find_kernel(&self) -> anyhow::Result<(&'static str, &'static str)> {
        for (kernel, initrd) in KERNEL_PATHS {
            if self.exists(kernel)? && self.exists(initrd)? {
                return Ok((kernel, initrd));
            }
        }
        bail!(
            "Could not find an installable distribution at '{}': no kernel and initrd in it (looked for {})",
            self.source.display(),
            KERNEL_PATHS
                .iter()
                .map(|(kernel, _)| *kernel)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn exists(&self, inner: &str) -> anyhow::Result<bool> {
        if self.iso {
            return Ok(self.read(inner)?.is_some());
        }
        Ok(self.source.join(inner).is_file())
    }

    /// Copies one file of the tree to `dest`.
    pub fn copy_out(&self, inner: &str, dest: &Path) -> anyhow::Result<()> {
        let bytes = self
            .read(inner)?
            .with_context(|| format!("{inner} vanished from the install tree"))?;
        std::fs::write(dest, bytes).with_context(|| format!("cannot write {}", dest.display()))
    }

    /// The `--os-variant` name the tree's `.treeinfo` names (family and version), if any.
    pub fn detect_os(&self) -> anyhow::Result<Option<String>> {
        let Some(bytes) = self.read(".treeinfo")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        Ok(detect_from_treeinfo(&text))
    }
}

/// CentOS 7 -> centos7.0, CentOS Stream 9 -> centos-stream9, Red Hat Enterprise Linux 8.6 ->
/// rhel8.6, Fedora 37 -> fedora37 (`[general]` or `[release]` name/family and version).
pub fn detect_from_treeinfo(text: &str) -> Option<String> {
    let (mut family, mut version) = (None, None);
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let (key, value) = (key.trim(), value.trim().to_string());
            match key {
                "family" => family = Some(value),
                "version" => version = Some(value),
                _ => {}
            }
        }
    }
    let (family, version) = (family?, version?);
    let major = version.split('.').next().unwrap_or(&version).to_string();
    let name = match family.as_str() {
        "CentOS Stream" => format!("centos-stream{major}"),
        "CentOS" | "CentOS Linux" if major == "7" => "centos7.0".to_string(),
        "CentOS" | "CentOS Linux" => format!("centos{major}"),
        "Fedora" => format!("fedora{major}"),
        "Red Hat Enterprise Linux" => format!("rhel{version}"),
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn treeinfo_names_the_os() {
        let centos = "[general]\nfamily = CentOS\nversion = 7\narch = x86_64\n";
        assert_eq!(detect_from_treeinfo(centos).as_deref(), Some("centos7.0"));
        let stream = "[release]\nname = CentOS Stream\nfamily = CentOS Stream\nversion = 9\n";
        assert_eq!(
            detect_from_treeinfo(stream).as_deref(),
            Some("centos-stream9")
        );
        assert_eq!(detect_from_treeinfo("[general]\n"), None);
    }

    #[test]
    fn a_directory_tree_gives_its_kernel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("casper")).unwrap();
        std::fs::write(dir.path().join("casper/vmlinuz"), "k").unwrap();
        std::fs::write(dir.path().join("casper/initrd"), "i").unwrap();
        let tree = Location::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            tree.find_kernel().unwrap(),
            ("casper/vmlinuz", "casper/initrd")
        );
        assert!(Location::open("/nonexistent/tree").is_err());
        assert!(check_iso("/nonexistent.iso").is_err());
    }

    /// An ISO tree is read with xorriso (skipped where xorriso is not installed).
    #[test]
    fn an_iso_tree_gives_its_kernel_and_os() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("images/pxeboot")).unwrap();
        std::fs::write(tree.join("images/pxeboot/vmlinuz"), "kernel-bytes").unwrap();
        std::fs::write(tree.join("images/pxeboot/initrd.img"), "initrd-bytes").unwrap();
        std::fs::write(
            tree.join(".treeinfo"),
            "[general]\nfamily = Fedora\nversion = 37\n",
        )
        .unwrap();
        let iso = dir.path().join("tree.iso");
        let made = Command::new("xorriso")
            .args(["-as", "genisoimage", "-o"])
            .arg(&iso)
            .args(["-V", "TREE", "-J", "-r"])
            .arg(&tree)
            .output();
        let Ok(made) = made else {
            eprintln!("xorriso is not installed: skipped");
            return;
        };
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let location = Location::open(iso.to_str().unwrap()).unwrap();
        assert_eq!(
            location.find_kernel().unwrap(),
            ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")
        );
        assert_eq!(location.detect_os().unwrap().as_deref(), Some("fedora37"));
        let out = dir.path().join("vmlinuz");
        location.copy_out("images/pxeboot/vmlinuz", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"kernel-bytes");
    }
}
