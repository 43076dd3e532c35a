//! A template's root filesystem, made once by mmdebstrap and kept as a tarball in the cache, keyed by
//! everything that decides its contents: the template's suite, mirror and packages, mmdebstrap's
//! version, and this recipe's version. The same inputs never download twice; any change makes a new
//! tarball beside the old one.
//!
//! mmdebstrap and not debootstrap: debootstrap's own dependency resolver cannot install cloud-init
//! (python3-cryptography depends on virtual packages it does not resolve); mmdebstrap lets apt resolve
//! and writes the tarball directly.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::template::Template;
use super::tools::{self, MMDEBSTRAP, TAR};

/// Bump when what goes into the tarball changes without any input above changing.
const RECIPE_VERSION: &str = "2";

/// The cached tarball of `template`'s root filesystem, made when missing (or when `rebuild`).
/// Returns its path and whether it came from the cache.
pub fn tarball(
    template: &Template,
    cache_dir: &Path,
    rebuild: bool,
) -> anyhow::Result<(PathBuf, bool)> {
    let key = cache_key(template, &mmdebstrap_version()?);
    let path = cache_dir.join(format!("{}-{}.tar", template.name, &key[..16]));
    if path.is_file() && !rebuild {
        return Ok((path, true));
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create the cache directory {}", cache_dir.display()))?;
    // Written under a temporary name and renamed, so an interrupted build never leaves a tarball
    // that a later build would trust.
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}-", template.name))
        .suffix(".tar")
        .tempfile_in(cache_dir)
        .context("cannot create a file in the cache directory")?;
    let mut command = tools::command(MMDEBSTRAP);
    command
        .arg("--variant=minbase")
        .arg("--mode=root")
        .arg("--format=tar")
        .arg(format!(
            "--include={},{}",
            template.kernel,
            template.packages.join(",")
        ))
        // cloud-init's locale module sets en_US.UTF-8 with update-locale, which refuses a locale
        // that is not generated (Debian's locale-gen ignores the name cloud-init gives it): the
        // image carries it generated, as Debian's cloud images do.
        .arg("--customize-hook=echo 'en_US.UTF-8 UTF-8' > \"$1/etc/locale.gen\"")
        .arg("--customize-hook=chroot \"$1\" locale-gen")
        .arg(template.suite)
        .arg(partial.path())
        .arg(template.mirror);
    tools::run(command, &format!("installing {}'s packages", template.name))?;
    partial
        .persist(&path)
        .with_context(|| format!("cannot keep {}", path.display()))?;
    Ok((path, false))
}

/// Unpacks a tarball made by [`tarball`] into `dir` (which must exist), keeping owners and modes.
pub fn unpack(tarball: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut command = tools::command(TAR);
    command
        .arg("--extract")
        .arg("--numeric-owner")
        .arg("--preserve-permissions")
        .arg("--xattrs")
        .arg("--xattrs-include=*")
        .arg("--file")
        .arg(tarball)
        .arg("--directory")
        .arg(dir);
    tools::run(command, "unpacking the root filesystem")
}

fn mmdebstrap_version() -> anyhow::Result<String> {
    let mut command = tools::command(MMDEBSTRAP);
    command.arg("--version");
    let out = tools::run_with_input(&mut command, "asking mmdebstrap its version", None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// A hex digest of every input that decides the tarball's contents.
fn cache_key(template: &Template, mmdebstrap_version: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        RECIPE_VERSION,
        template.name,
        template.suite,
        template.mirror,
        template.kernel,
        mmdebstrap_version,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for package in template.packages {
        hasher.update(package.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::template::TEMPLATES;

    #[test]
    fn the_cache_key_changes_with_every_input() {
        let template = &TEMPLATES[0];
        let key = cache_key(template, "mmdebstrap 1.3.5");
        assert_eq!(key, cache_key(template, "mmdebstrap 1.3.5"));
        assert_ne!(key, cache_key(template, "mmdebstrap 1.3.6"));
        let fewer = Template {
            packages: &template.packages[1..],
            ..*template
        };
        assert_ne!(key, cache_key(&fewer, "mmdebstrap 1.3.5"));
        let other_kernel = Template {
            kernel: "linux-image-rt-amd64",
            ..*template
        };
        assert_ne!(key, cache_key(&other_kernel, "mmdebstrap 1.3.5"));
    }
}
