//! Value syntaxes shared by the parser and other crates: sizes with libvirt units,
//! cpusets, MAC addresses.

use std::collections::BTreeSet;

use crate::error::Location;
use crate::{CpuSet, DomainError, MacAddr};

/// Largest CPU id accepted in a cpuset (libvirt's bitmap bound for CPU masks).
pub const MAX_CPU_ID: u32 = 16383;

/// Largest size accepted, in bytes (libvirt caps memory sizes at `LLONG_MAX` bytes).
const MAX_SIZE_BYTES: u64 = i64::MAX as u64;

/// Converts a size `value` in `unit` to KiB, rounding up to whole KiB like libvirt.
///
/// `unit` follows libvirt: `None` or empty means KiB; `b`/`byte`/`bytes` are bytes; a
/// single letter (`k`, `M`, `G`, `T`, `P`, `E`) or `<letter>iB` is a power of 1024;
/// `<letter>B` (`KB`, `MB`, ...) is a power of 1000. Letters are case-insensitive.
/// Values above `i64::MAX` bytes are an overflow error.
pub fn parse_size_kib(value: &str, unit: Option<&str>) -> Result<u64, DomainError> {
    size_kib_at(value, unit, &Location::new("memory", None), "size")
}

/// Parses a size with an optional unit suffix, as a command line would take it: `512`
/// (KiB), `512M`, `2GiB`, `1 G`, `4096b`. Same units and rounding as [`parse_size_kib`].
pub fn parse_size_text_kib(text: &str) -> Result<u64, DomainError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    parse_size_kib(number, (!unit.is_empty()).then_some(unit))
}

/// Same as [`parse_size_kib`] with the error located at `location`/`attribute`.
pub(crate) fn size_kib_at(
    value: &str,
    unit: Option<&str>,
    location: &Location,
    attribute: &str,
) -> Result<u64, DomainError> {
    size_bytes_at(value, unit, 1024, location, attribute).map(|bytes| bytes.div_ceil(1024))
}

/// A size in bytes: `value` in `unit` (libvirt's units, as [`parse_size_kib`]), or in units of
/// `default_scale` bytes without one (domains default to KiB, storage to bytes). More than
/// `i64::MAX` bytes is an overflow error.
pub(crate) fn size_bytes_at(
    value: &str,
    unit: Option<&str>,
    default_scale: u64,
    location: &Location,
    attribute: &str,
) -> Result<u64, DomainError> {
    let invalid = |reason: &str| DomainError::InvalidValue {
        attribute: attribute.to_string(),
        value: match unit {
            Some(u) => format!("{value} {u}"),
            None => value.to_string(),
        },
        reason: reason.to_string(),
        location: location.clone(),
    };
    let number =
        parse_decimal_u64(value.trim()).ok_or_else(|| invalid("not an unsigned integer"))?;
    let scale = match unit.map(str::trim) {
        None | Some("") => default_scale,
        Some(u) => unit_scale(u).ok_or_else(|| DomainError::InvalidEnumValue {
            attribute: "attribute 'unit'".to_string(),
            value: u.to_string(),
            allowed:
                "b, bytes, k, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB, P, PiB, PB, E, EiB, EB"
                    .to_string(),
            location: location.clone(),
        })?,
    };
    number
        .checked_mul(scale)
        .filter(|b| *b <= MAX_SIZE_BYTES)
        .ok_or_else(|| invalid("size overflows (more than 2^63-1 bytes)"))
}

/// Bytes per `unit`, or `None` for an unknown unit.
fn unit_scale(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let letter = chars.next()?;
    let rest = chars.as_str();
    let base: u64 = match rest {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    let power = match letter {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    Some(base.pow(power))
}

/// Strict decimal: ASCII digits only, no sign, no overflow.
pub(crate) fn parse_decimal_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a libvirt cpuset such as `1-4,^3,8` into the set of CPU ids.
///
/// Entries are separated by commas: `N`, a range `N-M` (N ≤ M), or `^N` to remove `N`
/// from what earlier entries added. Spaces around entries are allowed. The result must be
/// non-empty and ids must not exceed [`MAX_CPU_ID`].
pub fn parse_cpuset(text: &str) -> Result<CpuSet, DomainError> {
    cpuset_at(text, &Location::new("vcpu", None), "cpuset")
}

pub(crate) fn cpuset_at(
    text: &str,
    location: &Location,
    attribute: &str,
) -> Result<CpuSet, DomainError> {
    let invalid = |reason: String| DomainError::InvalidValue {
        attribute: attribute.to_string(),
        value: text.to_string(),
        reason,
        location: location.clone(),
    };
    let cpu_id = |s: &str| -> Result<u32, DomainError> {
        let n = parse_decimal_u64(s.trim())
            .ok_or_else(|| invalid(format!("'{}' is not a CPU number", s.trim())))?;
        if n > u64::from(MAX_CPU_ID) {
            return Err(invalid(format!(
                "CPU {n} is above the maximum {MAX_CPU_ID}"
            )));
        }
        Ok(n as u32)
    };
    let mut set = BTreeSet::new();
    for entry in text.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(invalid("empty entry".to_string()));
        }
        if let Some(excluded) = entry.strip_prefix('^') {
            set.remove(&cpu_id(excluded)?);
        } else if let Some((start, end)) = entry.split_once('-') {
            let (start, end) = (cpu_id(start)?, cpu_id(end)?);
            if start > end {
                return Err(invalid(format!("range {start}-{end} is reversed")));
            }
            set.extend(start..=end);
        } else {
            set.insert(cpu_id(entry)?);
        }
    }
    if set.is_empty() {
        return Err(invalid("the set is empty".to_string()));
    }
    Ok(CpuSet(set))
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (hex digits, either case; one or two per byte).
pub fn parse_mac(text: &str) -> Result<MacAddr, DomainError> {
    mac_at(text, &Location::new("devices/interface/mac", None))
}

pub(crate) fn mac_at(text: &str, location: &Location) -> Result<MacAddr, DomainError> {
    let invalid = || DomainError::InvalidValue {
        attribute: "address".to_string(),
        value: text.to_string(),
        reason: "expected a MAC address like 52:54:00:12:34:56".to_string(),
        location: location.clone(),
    };
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for byte in bytes.iter_mut() {
        let part = parts.next().ok_or_else(invalid)?;
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(MacAddr(bytes))
}

/// A QEMU-style locally administered MAC `52:54:00:xx:xx:xx` from three random bytes
/// (the caller supplies the randomness, so this stays pure).
pub fn generate_mac(random: [u8; 3]) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, random[0], random[1], random[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_libvirt() {
        let cases: &[(&str, Option<&str>, u64)] = &[
            ("1024", None, 1024),
            ("1024", Some("KiB"), 1024),
            ("1024", Some("k"), 1024),
            ("1024", Some("K"), 1024),
            ("2048", Some("b"), 2),
            ("2049", Some("bytes"), 3),
            ("1000", Some("KB"), 977),
            ("1", Some("M"), 1024),
            ("1", Some("MiB"), 1024),
            ("1", Some("MB"), 977),
            ("1", Some("G"), 1024 * 1024),
            ("1", Some("GiB"), 1024 * 1024),
            ("1", Some("GB"), 976_563),
            ("1", Some("T"), 1 << 30),
            ("1", Some("TiB"), 1 << 30),
            ("1", Some("TB"), 976_562_500),
            ("1", Some("P"), 1 << 40),
            ("1", Some("E"), 1 << 50),
            ("1", Some("EiB"), 1 << 50),
            ("0", Some("G"), 0),
        ];
        for (value, unit, kib) in cases {
            assert_eq!(
                parse_size_kib(value, *unit).unwrap(),
                *kib,
                "{value} {unit:?}"
            );
        }
    }

    #[test]
    fn size_text_with_suffix() {
        assert_eq!(parse_size_text_kib("512").unwrap(), 512);
        assert_eq!(parse_size_text_kib("512M").unwrap(), 512 * 1024);
        assert_eq!(parse_size_text_kib(" 2 GiB ").unwrap(), 2 * 1024 * 1024);
        assert_eq!(parse_size_text_kib("4096b").unwrap(), 4);
        for bad in ["", "M", "1.5G", "-1G", "12Q"] {
            assert!(parse_size_text_kib(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn size_overflow_and_garbage_are_errors() {
        let err = parse_size_kib("8", Some("E")).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
        assert!(parse_size_kib("18446744073709551615", Some("k")).is_err());
        assert!(parse_size_kib("99999999999999999999999", None).is_err());
        let err = parse_size_kib("1", Some("QiB")).unwrap_err();
        assert!(err.to_string().contains("'QiB'"), "{err}");
        assert!(err.to_string().contains("MiB"), "{err}");
        for bad in ["", "-1", "1.5", "0x10", "+3", "1 2"] {
            assert!(parse_size_kib(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpuset_syntax() {
        let set = parse_cpuset("1-4,^3,8").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 2, 4, 8]);
        assert_eq!(set.to_string(), "1-2,4,8");
        assert_eq!(parse_cpuset(" 0 , 2-3 ").unwrap().to_string(), "0,2-3");
        assert_eq!(
            parse_cpuset("1-4,8-20,525").unwrap().to_string(),
            "1-4,8-20,525"
        );
        assert_eq!(parse_cpuset("16383").unwrap().to_string(), "16383");
        for bad in [
            "", ",", "1,,2", "a", "4-1", "^1", "1-", "-1", "16384", "1-2-3", "^1-2",
        ] {
            let err = parse_cpuset(bad).unwrap_err();
            assert!(err.to_string().contains("cpuset"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mac_parse_and_generate() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:0f").unwrap().to_string(),
            "52:54:00:ab:cd:0f"
        );
        assert_eq!(generate_mac([1, 2, 255]).to_string(), "52:54:00:01:02:ff");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:xg",
            "525:4:00:ab:cd:ef",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
    }
}
