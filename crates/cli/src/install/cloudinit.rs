//! The cloud-init NoCloud seed: an ISO 9660 image labelled `cidata` (Joliet and Rock Ridge, as
//! cloud-init reads it) holding `meta-data`, `user-data` and optionally `network-config`, made
//! with xorriso's genisoimage mode as virt-install makes it.
//!
//! user-data is the given file, or what virt-install 4.1 generates (#cloud-config with the
//! root password, root's SSH key, and cloud-init disabled after the first boot with
//! `disable=on`). meta-data is the given file, or `instance-id` and `local-hostname` (the domain
//! name): virt-install leaves it empty, but then the guest keeps the image's hostname, and the
//! domain's name is what an operator expects to see.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use super::options::CloudInitOption;

/// The seed's files and the root password generated for it (printed once by the caller).
#[derive(Debug, Clone)]
pub struct Seed {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: Option<String>,
    pub generated_password: Option<String>,
}

fn read(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("--cloud-init: cannot read {path}"))
}

/// The first line of a file (a password or an SSH public key), as virt-install reads them.
fn first_line(path: &str) -> anyhow::Result<String> {
    Ok(read(path)?.lines().next().unwrap_or_default().to_string())
}

/// 16 letters and digits from the kernel's random source.
fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
        .context("cannot read /dev/urandom")?;
    // Rejection sampling keeps the letters uniform (248 = 4 * 62).
    let password: String = bytes
        .iter()
        .filter(|byte| **byte < 248)
        .take(16)
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect();
    if password.len() < 16 {
        bail!("not enough random bytes for a password");
    }
    Ok(password)
}

/// Reads the given files and generates the rest, before anything is created.
pub fn prepare(option: &CloudInitOption, name: &str, uuid: &str) -> anyhow::Result<Seed> {
    let meta_data = match &option.meta_data {
        Some(path) => read(path)?,
        None => format!("instance-id: {uuid}\nlocal-hostname: {name}\n"),
    };
    let network_config = option.network_config.as_deref().map(read).transpose()?;
    let mut generated_password = None;
    let user_data = match &option.user_data {
        Some(path) => read(path)?,
        None => {
            let mut content = String::from("#cloud-config\n");
            let password = if option.root_password_generate {
                let password = generate_password()?;
                generated_password = Some(password.clone());
                Some(password)
            } else {
                option
                    .root_password_file
                    .as_deref()
                    .map(first_line)
                    .transpose()?
            };
            if let Some(password) = password {
                content.push_str("chpasswd:\n  list: |\n");
                content.push_str(&format!("    root:{password}\n"));
                let expire = if option.root_password_generate {
                    "True"
                } else {
                    "False"
                };
                content.push_str(&format!("  expire: {expire}\n"));
            }
            let root_key = option.root_ssh_key.as_deref().map(first_line).transpose()?;
            let user_key = option
                .clouduser_ssh_key
                .as_deref()
                .map(first_line)
                .transpose()?;
            if root_key.is_some() || user_key.is_some() {
                content.push_str("users:\n");
                if let Some(key) = root_key {
                    content.push_str(&format!(
                        "  - name: root\n    ssh-authorized-keys:\n      - {key}\n"
                    ));
                }
                if let Some(key) = user_key {
                    content.push_str(&format!("  - ssh-authorized-keys: {key}\n"));
                }
            }
            if option.disable {
                content.push_str("runcmd:\n");
                content.push_str(
                    "- echo \"Disabled by oxvirt install\" > /etc/cloud/cloud-init.disabled\n",
                );
            }
            content
        }
    };
    Ok(Seed {
        meta_data,
        user_data,
        network_config,
        generated_password,
    })
}

/// Writes the seed ISO at `iso` (which must not exist yet).
pub fn write_iso(seed: &Seed, iso: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
    let mut files = vec![
        ("meta-data", seed.meta_data.as_str()),
        ("user-data", seed.user_data.as_str()),
    ];
    if let Some(network) = &seed.network_config {
        files.push(("network-config", network));
    }
    for (name, content) in &files {
        std::fs::write(scratch.path().join(name), content)?;
    }
    let output = Command::new("xorriso")
        .args(["-as", "genisoimage", "-o"])
        .arg(iso)
        .args(["-V", "cidata", "-J", "-r"])
        .args(files.iter().map(|(name, _)| scratch.path().join(name)))
        .output()
        .context("cannot run xorriso (Debian package xorriso) to make the cloud-init seed")?;
    if !output.status.success() {
        let _ = std::fs::remove_file(iso);
        bail!(
            "xorriso could not make the cloud-init seed {}: {}",
            iso.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_user_data_is_virt_installs() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.pub");
        std::fs::write(&key, "ssh-ed25519 AAAA test@host\n").unwrap();
        let option = CloudInitOption {
            root_password_generate: true,
            root_ssh_key: Some(key.to_str().unwrap().to_string()),
            disable: true,
            ..CloudInitOption::default()
        };
        let seed = prepare(&option, "vm1", "u-u-i-d").unwrap();
        let password = seed.generated_password.clone().unwrap();
        assert_eq!(password.len(), 16);
        assert_eq!(
            seed.user_data,
            format!(
                "#cloud-config\nchpasswd:\n  list: |\n    root:{password}\n  expire: True\nusers:\n  - name: root\n    ssh-authorized-keys:\n      - ssh-ed25519 AAAA test@host\nruncmd:\n- echo \"Disabled by oxvirt install\" > /etc/cloud/cloud-init.disabled\n"
            )
        );
        assert_eq!(
            seed.meta_data,
            "instance-id: u-u-i-d\nlocal-hostname: vm1\n"
        );
    }
}
