//! What a template is: a distribution release, where its packages come from, and which packages make
//! it a bootable cloud guest. Only Debian today; a template is data, so another release is a table row.

/// One buildable template.
#[derive(Clone, Copy)]
pub struct Template {
    /// The name on the command line (`oxvirt builder debian-12`).
    pub name: &'static str,
    /// What `--list` prints beside the name.
    pub description: &'static str,
    /// The Debian suite mmdebstrap installs.
    pub suite: &'static str,
    /// The Debian archive; the security archive is added to the guest's apt sources.
    pub mirror: &'static str,
    pub security_mirror: &'static str,
    /// The kernel's metapackage (Debian signs both kernels for Secure Boot).
    pub kernel: &'static str,
    /// Packages on top of the `minbase` variant, besides the kernel. Why each group is there:
    /// - init and what boots it: systemd, GRUB for BIOS and the signed shim + GRUB for UEFI (Secure
    ///   Boot included), so the guest can update its own bootloader and kernel later;
    /// - cloud-init and what it configures: ifupdown with a DHCP client (Debian's cloud images use
    ///   them), OpenSSH, sudo, and cloud-guest-utils for growing the root partition to the disk;
    /// - what an operator expects to find: procps, iproute2, kmod, and locales (cloud-init's locale
    ///   module runs update-locale, and fails the whole run without it).
    pub packages: &'static [&'static str],
}

/// What every Debian 12 template installs besides its kernel (see [`Template::packages`]).
const DEBIAN_12_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-efi-amd64-signed",
    "shim-signed",
    "grub2-common",
    "cloud-init",
    "cloud-guest-utils",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "openssh-server",
    "sudo",
    "e2fsprogs",
    "dosfstools",
    "procps",
    "iproute2",
    "kmod",
    "locales",
];

/// Debian's two kinds of cloud image, as Debian names them: `generic` has the standard kernel,
/// `genericcloud` the cloud kernel, which is smaller but has no AHCI (SATA) driver. q35 machines, the
/// machine virt-install and `oxvirt install` choose for modern guests, put CD-ROM drives on SATA: a
/// guest with the cloud kernel there sees no CD-ROM, and so no cloud-init seed. `debian-12` is
/// therefore the standard kernel; `debian-12-genericcloud` suits i440fx machines and virtio-only guests.
pub static TEMPLATES: &[Template] = &[
    Template {
        name: "debian-12",
        description: "Debian 12 (bookworm), cloud-init, BIOS and UEFI (Debian's \"generic\" image)",
        suite: "bookworm",
        mirror: "http://deb.debian.org/debian",
        security_mirror: "http://deb.debian.org/debian-security",
        kernel: "linux-image-amd64",
        packages: DEBIAN_12_PACKAGES,
    },
    Template {
        name: "debian-12-genericcloud",
        description:
            "Debian 12 (bookworm) with the cloud kernel (no SATA: i440fx or virtio-only guests)",
        suite: "bookworm",
        mirror: "http://deb.debian.org/debian",
        security_mirror: "http://deb.debian.org/debian-security",
        kernel: "linux-image-cloud-amd64",
        packages: DEBIAN_12_PACKAGES,
    },
];

/// The template of that name.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|template| template.name == name)
}

/// `--list`, in virt-builder's columns: name, architecture, description.
pub fn list() -> String {
    TEMPLATES
        .iter()
        .map(|t| format!("{:<24} {:<10} {}\n", t.name, "x86_64", t.description))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_found_by_its_name_and_listed() {
        for template in TEMPLATES {
            assert!(std::ptr::eq(find(template.name).unwrap(), template));
            assert!(list().contains(template.name));
        }
        assert!(find("debian-99").is_none());
    }
}
