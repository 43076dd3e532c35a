//! The `--os-variant` names oxvirt knows and what virt-install derives from each.
//!
//! The traits are what virt-install 4.1 reads from Debian 12's osinfo-db (0.20221130) through
//! libosinfo (`supports_virtiodisk`, `supports_chipset_q35`, `supports_virtiogpu`, ...), taken once
//! with virtinst's own osdict module. Names that osinfo-db release does not know yet (debian12,
//! ubuntu24.04, fedora38..40) carry the traits of their predecessor and the id newer osinfo-db
//! releases give them.

/// One OS: its libosinfo id (for `<metadata>`) and the devices virt-install picks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Os {
    pub name: &'static str,
    /// None for `generic` (virt-install writes no `<metadata>` then).
    pub id: Option<&'static str>,
    /// virtio disk, net, balloon, rng, serial (guest agent channel).
    pub virtio: bool,
    /// virtio-gpu for the video device.
    pub virtio_gpu: bool,
    /// Windows: local time clock, Hyper-V enlightenments.
    pub windows: bool,
    /// The OS boots only with UEFI (win11).
    pub needs_efi: bool,
}

impl Os {
    /// virt-install picks q35 (with qemu-xhci) for what supports q35 and virtio 1.0.
    pub fn q35(&self) -> bool {
        self.virtio || self.windows
    }
}

const fn linux(name: &'static str, id: &'static str, virtio_gpu: bool) -> Os {
    Os {
        name,
        id: Some(id),
        virtio: true,
        virtio_gpu,
        windows: false,
        needs_efi: false,
    }
}

const fn windows(name: &'static str, id: &'static str, needs_efi: bool) -> Os {
    Os {
        name,
        id: Some(id),
        virtio: false,
        virtio_gpu: false,
        windows: true,
        needs_efi,
    }
}

pub const GENERIC: Os = Os {
    name: "generic",
    id: None,
    virtio: false,
    virtio_gpu: false,
    windows: false,
    needs_efi: false,
};

/// Every known name, as `--osinfo list` prints them.
pub const TABLE: &[Os] = &[
    GENERIC,
    linux("debian9", "http://debian.org/debian/9", false),
    linux("debian10", "http://debian.org/debian/10", false),
    linux("debian11", "http://debian.org/debian/11", true),
    linux("debian12", "http://debian.org/debian/12", true),
    linux("ubuntu18.04", "http://ubuntu.com/ubuntu/18.04", true),
    linux("ubuntu20.04", "http://ubuntu.com/ubuntu/20.04", true),
    linux("ubuntu22.04", "http://ubuntu.com/ubuntu/22.04", false),
    linux("ubuntu24.04", "http://ubuntu.com/ubuntu/24.04", false),
    linux("centos7.0", "http://centos.org/centos/7.0", false),
    linux("centos8", "http://centos.org/centos/8", true),
    linux("centos-stream8", "http://centos.org/centos-stream/8", false),
    linux("centos-stream9", "http://centos.org/centos-stream/9", false),
    linux("rhel7.9", "http://redhat.com/rhel/7.9", false),
    linux("rhel8.6", "http://redhat.com/rhel/8.6", true),
    linux("rhel9.0", "http://redhat.com/rhel/9.0", true),
    linux("fedora30", "http://fedoraproject.org/fedora/30", true),
    linux("fedora31", "http://fedoraproject.org/fedora/31", true),
    linux("fedora32", "http://fedoraproject.org/fedora/32", true),
    linux("fedora33", "http://fedoraproject.org/fedora/33", true),
    linux("fedora34", "http://fedoraproject.org/fedora/34", true),
    linux("fedora35", "http://fedoraproject.org/fedora/35", true),
    linux("fedora36", "http://fedoraproject.org/fedora/36", true),
    linux("fedora37", "http://fedoraproject.org/fedora/37", true),
    linux("fedora38", "http://fedoraproject.org/fedora/38", true),
    linux("fedora39", "http://fedoraproject.org/fedora/39", true),
    linux("fedora40", "http://fedoraproject.org/fedora/40", true),
    linux("almalinux8", "http://almalinux.org/almalinux/8", true),
    linux("almalinux9", "http://almalinux.org/almalinux/9", true),
    linux("rocky8", "http://rockylinux.org/rocky/8", true),
    linux("rocky9", "http://rockylinux.org/rocky/9", true),
    linux("opensuse15.4", "http://opensuse.org/opensuse/15.4", true),
    linux(
        "alpinelinux3.17",
        "http://alpinelinux.org/alpinelinux/3.17",
        false,
    ),
    linux("archlinux", "http://archlinux.org/archlinux/rolling", true),
    windows("win10", "http://microsoft.com/win/10", false),
    windows("win11", "http://microsoft.com/win/11", true),
    windows("win2k19", "http://microsoft.com/win/2k19", false),
    windows("win2k22", "http://microsoft.com/win/2k22", false),
];

/// Short names osinfo-db accepts for another entry (`centos7` is `centos7.0`), and the major
/// versions of RHEL, which oxvirt takes for the release the table has.
const ALIASES: &[(&str, &str)] = &[
    ("centos7", "centos7.0"),
    ("rhel7", "rhel7.9"),
    ("rhel8", "rhel8.6"),
    ("rhel9", "rhel9.0"),
];

/// The OS of a `--os-variant` value (`NAME`, `name=NAME`, `short-id=NAME` or its id URL).
pub fn lookup(value: &str) -> anyhow::Result<Os> {
    let name = value
        .strip_prefix("name=")
        .or_else(|| value.strip_prefix("short-id="))
        .unwrap_or(value);
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| *target);
    TABLE
        .iter()
        .find(|os| os.name == name || os.id == Some(name))
        .copied()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Unknown OS name '{name}'. See `oxvirt install --osinfo list` for valid values."
            )
        })
}

/// `--osinfo list`: the names, one a line.
pub fn list() -> String {
    let mut out = String::new();
    for os in TABLE {
        out.push_str(os.name);
        for (alias, target) in ALIASES {
            if *target == os.name {
                out.push_str(&format!(", {alias}"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_unknown_names() {
        assert_eq!(
            lookup("debian11").unwrap().id,
            Some("http://debian.org/debian/11")
        );
        assert_eq!(lookup("centos7").unwrap().name, "centos7.0");
        assert!(lookup("name=win11").unwrap().needs_efi);
        assert!(!lookup("generic").unwrap().q35());
        let err = lookup("plan9").unwrap_err().to_string();
        assert!(err.contains("oxvirt install --osinfo list"), "{err}");
        assert!(list().contains("centos7.0, centos7\n"));
    }
}
