//! UEFI firmware for `<os firmware='efi'>`: chosen from QEMU's firmware descriptors (the JSON
//! files of `docs/interop/firmware.json` that distributions install, Debian's in
//! `/usr/share/qemu/firmware`), as libvirt chooses, and given a per-domain NVRAM (variable
//! store) copied from the descriptor's template.
//!
//! [`resolve_uefi`] runs at start on the launched copy of the definition: it fills in
//! `<loader type='pflash' readonly='yes' secure=...>CODE</loader>` and `<nvram template=...>`
//! as libvirt does in its live XML, and creates the NVRAM file on the first start. The
//! command-line builder then only sees explicit loader and NVRAM paths.

use std::path::{Path, PathBuf};

use oxvirt_domain::{Domain, Firmware, Loader, LoaderType, Nvram, SourceLine};
use serde::Deserialize;

use crate::QemuError;

/// Where descriptors are looked for, in libvirt's order: a file name in an earlier directory
/// hides the same name in a later one; then all are taken in file name order.
pub const FIRMWARE_DESCRIPTOR_DIRS: &[&str] = &["/etc/qemu/firmware", "/usr/share/qemu/firmware"];

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "interface-types")]
    interface_types: Vec<String>,
    mapping: Mapping,
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Mapping {
    device: String,
    executable: Option<FlashFile>,
    #[serde(rename = "nvram-template")]
    nvram_template: Option<FlashFile>,
}

#[derive(Debug, Deserialize)]
struct FlashFile {
    filename: String,
    format: String,
}

#[derive(Debug, Deserialize)]
struct Target {
    architecture: String,
    machines: Vec<String>,
}

/// The firmware a descriptor offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiFirmware {
    /// The descriptor it came from.
    pub descriptor: PathBuf,
    pub code: PathBuf,
    pub vars_template: PathBuf,
    /// Secure Boot: the firmware needs SMM (q35 only) and a secure flash.
    pub secure_boot: bool,
}

/// The versioned machine name descriptors match against (`pc-q35-*`, `pc-i440fx-*`): the
/// aliases `q35` and `pc` stand for the newest versions.
fn versioned_machine(machine: &str) -> String {
    match machine {
        "q35" => "pc-q35-latest".to_string(),
        "pc" => "pc-i440fx-latest".to_string(),
        other => other.to_string(),
    }
}

/// A descriptor's machine pattern: `*` matches any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(tail) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_matches(rest, &tail[i..]))
        }
    }
}

/// The descriptor files of `dirs`, earlier directories hiding same-named files of later ones,
/// in file name order.
fn descriptor_files(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !files.iter().any(|(n, _)| *n == name) {
                files.push((name, entry.path()));
            }
        }
    }
    files.sort();
    files.into_iter().map(|(_, path)| path).collect()
}

/// Every UEFI firmware of `dirs` an x86_64 `machine` can boot, in the descriptors' order
/// (libvirt's preference): what `domcapabilities` lists as `<loader>` values. Secure Boot
/// firmware needs SMM, which only q35 has.
pub fn uefi_firmwares(dirs: &[&Path], machine: &str) -> Vec<UefiFirmware> {
    let versioned = versioned_machine(machine);
    let q35 = versioned.starts_with("pc-q35-");
    let mut found = Vec::new();
    for path in descriptor_files(dirs) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // A descriptor this reader does not understand is skipped, as libvirt skips it.
        let Ok(descriptor) = serde_json::from_str::<Descriptor>(&text) else {
            continue;
        };
        let secure_boot = descriptor.features.iter().any(|f| f == "secure-boot");
        let needs_smm = descriptor.features.iter().any(|f| f == "requires-smm");
        let fits_machine = descriptor.targets.iter().any(|t| {
            t.architecture == "x86_64" && t.machines.iter().any(|m| glob_matches(m, &versioned))
        });
        let (Some(code), Some(vars)) = (
            descriptor.mapping.executable.as_ref(),
            descriptor.mapping.nvram_template.as_ref(),
        ) else {
            continue;
        };
        if !descriptor.interface_types.iter().any(|t| t == "uefi")
            || descriptor.mapping.device != "flash"
            || code.format != "raw"
            || vars.format != "raw"
            || !fits_machine
            || (needs_smm && !q35)
        {
            continue;
        }
        found.push(UefiFirmware {
            descriptor: path,
            code: PathBuf::from(&code.filename),
            vars_template: PathBuf::from(&vars.filename),
            secure_boot,
        });
    }
    found
}

/// The first UEFI firmware of `dirs` for an x86_64 `machine`, with Secure Boot as `secure`
/// asks (`None`: either, as the descriptors' order prefers).
pub fn select_uefi(
    dirs: &[&Path],
    machine: &str,
    secure: Option<bool>,
) -> Result<UefiFirmware, QemuError> {
    if let Some(firmware) = uefi_firmwares(dirs, machine)
        .into_iter()
        .find(|f| secure.is_none_or(|wanted| wanted == f.secure_boot))
    {
        return Ok(firmware);
    }
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(QemuError::invalid(
        "os/@firmware",
        SourceLine::NONE,
        format!(
            "no UEFI firmware for machine '{machine}'{} in {} (install Debian's ovmf package)",
            match secure {
                Some(true) => " with Secure Boot",
                Some(false) => " without Secure Boot",
                None => "",
            },
            dirs.join(", ")
        ),
    ))
}

/// Gives `domain` (the launched copy) its UEFI firmware: for `<os firmware='efi'>` without a
/// loader, the firmware [`select_uefi`] picks; for every pflash loader without an NVRAM path,
/// `nvram_dir/UUID_VARS.fd`, copied from the template (stated, or the descriptor's) when it
/// does not exist yet. NVRAM files are private (mode 0600): they hold the guest's UEFI
/// variables.
pub fn resolve_uefi(
    domain: &mut Domain,
    descriptor_dirs: &[&Path],
    nvram_dir: &Path,
) -> Result<(), QemuError> {
    let os = &mut domain.os;
    let mut template = None;
    if os.firmware == Some(Firmware::Efi) && os.loader.as_ref().is_none_or(|l| l.path.is_none()) {
        let secure = os.loader.as_ref().and_then(|l| l.secure);
        let chosen = select_uefi(descriptor_dirs, &os.machine, secure)?;
        let line = os.loader.as_ref().map_or(SourceLine::NONE, |l| l.line);
        os.loader = Some(Loader {
            path: Some(chosen.code.display().to_string()),
            readonly: Some(true),
            secure: Some(chosen.secure_boot),
            loader_type: Some(LoaderType::Pflash),
            line,
        });
        template = Some(chosen.vars_template);
    }
    let pflash = os
        .loader
        .as_ref()
        .is_some_and(|l| l.loader_type == Some(LoaderType::Pflash));
    if !pflash {
        return Ok(());
    }
    let nvram = os.nvram.get_or_insert(Nvram {
        path: None,
        template: None,
        line: SourceLine::NONE,
    });
    if nvram.template.is_none() {
        nvram.template = template.map(|t| t.display().to_string());
    }
    let path = nvram
        .path
        .get_or_insert_with(|| nvram_file(nvram_dir, &domain.uuid).display().to_string())
        .clone();
    if Path::new(&path).exists() {
        return Ok(());
    }
    let Some(template) = nvram.template.clone() else {
        return Err(QemuError::invalid(
            "os/nvram",
            nvram.line,
            format!("NVRAM {path} does not exist and no template is given to create it from"),
        ));
    };
    create_nvram(Path::new(&template), Path::new(&path)).map_err(|err| {
        QemuError::invalid(
            "os/nvram",
            nvram.line,
            format!("cannot create NVRAM {path} from {template}: {err}"),
        )
    })
}

/// The NVRAM oxvirt makes for domain `uuid` when its definition names none.
pub fn nvram_file(nvram_dir: &Path, uuid: &oxvirt_domain::Uuid) -> PathBuf {
    nvram_dir.join(format!("{uuid}_VARS.fd"))
}

fn create_nvram(template: &Path, path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let contents = std::fs::read(template)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written under another name, then renamed: a half-written store is never used.
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(&contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_patterns() {
        assert!(glob_matches("pc-q35-*", "pc-q35-7.2"));
        assert!(glob_matches("pc-q35-*", &versioned_machine("q35")));
        assert!(glob_matches("pc-i440fx-*", &versioned_machine("pc")));
        assert!(!glob_matches("pc-q35-*", "pc-i440fx-7.2"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b", "axxbc"));
    }

    fn descriptor(dir: &Path, name: &str, code: &str, machines: &str, features: &str) {
        std::fs::write(
            dir.join(name),
            format!(
                r#"{{"interface-types":["uefi"],"mapping":{{"device":"flash",
                "executable":{{"filename":"{code}","format":"raw"}},
                "nvram-template":{{"filename":"{code}.vars","format":"raw"}}}},
                "targets":[{{"architecture":"x86_64","machines":[{machines}]}}],
                "features":[{features}]}}"#
            ),
        )
        .unwrap();
    }

    #[test]
    fn selection_follows_descriptor_order_machine_and_secure_boot() {
        let etc = tempfile::tempdir().unwrap();
        let usr = tempfile::tempdir().unwrap();
        descriptor(
            usr.path(),
            "40-secure.json",
            "/fw/secure",
            r#""pc-q35-*""#,
            r#""requires-smm","secure-boot""#,
        );
        descriptor(
            usr.path(),
            "60-plain.json",
            "/fw/plain",
            r#""pc-i440fx-*","pc-q35-*""#,
            "",
        );
        std::fs::write(usr.path().join("10-broken.json"), "{not json").unwrap();
        let dirs = [etc.path(), usr.path()];
        let q35 = select_uefi(&dirs, "q35", None).unwrap();
        assert_eq!(q35.code, Path::new("/fw/secure"));
        assert!(q35.secure_boot);
        // Secure Boot needs SMM, which only q35 has.
        assert_eq!(
            select_uefi(&dirs, "pc", None).unwrap().code,
            Path::new("/fw/plain")
        );
        assert_eq!(
            select_uefi(&dirs, "pc-q35-7.2", Some(false)).unwrap().code,
            Path::new("/fw/plain")
        );
        let err = select_uefi(&dirs, "pc", Some(true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("with Secure Boot") && err.contains("ovmf"),
            "{err}"
        );
        // The same name under /etc hides the one under /usr/share.
        descriptor(
            etc.path(),
            "40-secure.json",
            "/fw/local",
            r#""pc-q35-*""#,
            "",
        );
        assert_eq!(
            select_uefi(&dirs, "q35", None).unwrap().code,
            Path::new("/fw/local")
        );
    }

    /// Debian's own descriptors (package ovmf) give what libvirt 9.0 chose for the same
    /// machines (`virsh domxml-to-native` of virt-install's `--boot uefi` output).
    #[test]
    fn debian_descriptors_give_libvirts_choice() {
        let usr = Path::new("/usr/share/qemu/firmware");
        assert!(
            usr.join("60-edk2-x86_64.json").exists(),
            "Debian's ovmf package is not installed"
        );
        let q35 = select_uefi(&[usr], "q35", None).unwrap();
        assert_eq!(q35.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"));
        assert_eq!(
            q35.vars_template,
            Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        let pc = select_uefi(&[usr], "pc", None).unwrap();
        assert_eq!(pc.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(!pc.secure_boot);
    }
}
