//! Small rules of the domain format that more than one step applies (the parser while it
//! reads, the normalizer while it fills in, the validator on the finished model), each stated
//! once here.
//!
//! A leaf module: it imports nothing of this crate but the error type, so parse, normalize and
//! validate can all use it without importing each other.

use uuid::Uuid;

use crate::error::{DomainError, Location};

/// Controller indexes above this are rejected (PCI has at most 256 buses).
pub(crate) const MAX_CONTROLLER_INDEX: u32 = 255;
/// Placeholder for a controller index the definition left out (the normalizer assigns one).
pub(crate) const UNSET_INDEX: u32 = u32::MAX;

/// Longest accepted domain name, in bytes (a name becomes a file name under libvirt's
/// and our state directories, so it stays below NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a domain name: non-empty, at most [`MAX_NAME_BYTES`] bytes, no `/`, no NUL or
/// other control characters, and not starting with `.` (names become file names).
pub fn validate_name(name: &str) -> Result<(), DomainError> {
    check_name("domain", "name", MAX_NAME_BYTES, name)
}

/// The rules of a name that becomes part of a file name (a domain's, a snapshot's): the error
/// names `what` and the element at `path`.
pub(crate) fn check_name(
    what: &'static str,
    path: &'static str,
    max_bytes: usize,
    name: &str,
) -> Result<(), DomainError> {
    let fail = |reason: &str| {
        Err(DomainError::InvalidName {
            what,
            name: name.escape_debug().to_string(),
            reason: reason.to_string(),
            location: Location::new(path, None),
        })
    };
    if name.is_empty() {
        return fail("name is empty");
    }
    if name.len() > max_bytes {
        return fail(&format!("name is longer than {max_bytes} bytes"));
    }
    if name.contains('/') {
        return fail("name contains '/'");
    }
    if name.chars().any(char::is_control) {
        return fail("name contains a control character");
    }
    if name.starts_with('.') {
        return fail("name starts with '.'");
    }
    if name.trim() != name {
        return fail("name starts or ends with whitespace");
    }
    Ok(())
}

/// libvirt accepts a UUID with or without dashes (32 hex digits, dashes anywhere between
/// byte pairs); we accept the canonical dashed form and the plain 32-digit form.
pub(crate) fn parse_uuid(text: &str) -> Option<Uuid> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if text.len() != 32 && Uuid::parse_str(text).is_err() {
        return None;
    }
    Uuid::parse_str(&hex).ok()
}

/// Whether a machine type is a q35 (ICH9) machine; everything else oxvirt knows is i440fx.
pub(crate) fn is_q35(machine: &str) -> bool {
    machine == "q35" || machine.starts_with("pc-q35")
}

/// libvirt's index of a disk target name: the letters after the bus prefix in bijective
/// base 26 (`a`=0, `z`=25, `aa`=26, ...).
pub(crate) fn disk_index(dev: &str) -> Option<u32> {
    let letters = ["hd", "sd", "vd", "fd", "xvd", "ubd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))?;
    if letters.is_empty() || letters.len() > 6 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut index: u32 = 0;
    for b in letters.bytes() {
        index = index * 26 + u32::from(b - b'a') + 1;
    }
    Some(index - 1)
}

/// A host network interface name (`<interface><target dev=>`): 1-15 bytes (IFNAMSIZ), no
/// `/`, whitespace or control characters.
pub(crate) fn is_host_ifname(dev: &str) -> bool {
    !dev.is_empty()
        && dev.len() <= 15
        && !dev.contains('/')
        && !dev.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A disk `<serial>`: the characters libvirt allows (`A-Za-z0-9_+-.` and space), not empty.
pub(crate) fn is_disk_serial(serial: &str) -> bool {
    !serial.is_empty()
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-. ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        for good in ["vm1", "my guest", "ünïcode-名前", &"a".repeat(255)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"a".repeat(256), "longer than 255"),
            ("a/b", "'/'"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a\x7fb", "control"),
            (".hidden", "starts with '.'"),
            (" padded", "whitespace"),
        ];
        for (bad, why) in cases {
            let err = validate_name(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn disk_index_is_bijective_base26() {
        assert_eq!(disk_index("vda"), Some(0));
        assert_eq!(disk_index("hdd"), Some(3));
        assert_eq!(disk_index("sdz"), Some(25));
        assert_eq!(disk_index("sdaa"), Some(26));
        assert_eq!(disk_index("vd"), None);
        assert_eq!(disk_index("vda1"), None);
        assert_eq!(disk_index("nvme0"), None);
    }

    #[test]
    fn interface_names_and_disk_serials() {
        assert!(is_host_ifname("tap0") && is_host_ifname(&"x".repeat(15)));
        for bad in ["", "a/b", "a b", "a\tb", &"x".repeat(16)] {
            assert!(!is_host_ifname(bad), "{bad:?}");
        }
        assert!(is_disk_serial("WD-1234 A_b+c.d"));
        assert!(!is_disk_serial("") && !is_disk_serial("a,b") && !is_disk_serial("ü"));
    }
}
