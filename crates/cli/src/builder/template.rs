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
    /// Packages on top of the `minbase` variant. Why each group is there:
    /// - init, kernel, and what boots it: systemd, the cloud kernel (virtio drivers built in or in
    ///   its initramfs), GRUB for BIOS and the signed shim + GRUB for UEFI (Secure Boot included), so
    ///   the guest can update its own bootloader and kernel later;
    /// - cloud-init and what it configures: ifupdown with a DHCP client (Debian's cloud images use
    ///   them), OpenSSH, sudo, and cloud-guest-utils for growing the root partition to the disk;
    /// - what an operator expects to find: procps, iproute2, kmod, and locales (cloud-init's locale
    ///   module runs update-locale, and fails the whole run without it).
    pub packages: &'static [&'static str],
}

pub static TEMPLATES: &[Template] = &[Template {
    name: "debian-12",
    description: "Debian 12 (bookworm), cloud kernel, cloud-init, BIOS and UEFI",
    suite: "bookworm",
    mirror: "http://deb.debian.org/debian",
    security_mirror: "http://deb.debian.org/debian-security",
    packages: &[
        "systemd-sysv",
        "udev",
        "dbus",
        "linux-image-cloud-amd64",
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
    ],
}];

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
