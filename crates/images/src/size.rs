//! Sizes as qemu-img spells them: `512`, `64k`, `1.5G`, `10M`, `2T` (binary units).

use crate::error::{ImageError, Result};

/// Parses a size with an optional binary suffix (b/B, k/K, M, G, T, P, E; case-insensitive),
/// as qemu-img does. Fractions are allowed with a suffix ("1.5G"); the result must be a whole
/// number of bytes and fit in an i64 (qemu's limit).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = |why: &str| ImageError::InvalidArgument(format!("invalid size '{text}': {why}"));
    let text_trim = text.trim();
    let split = text_trim
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text_trim.len());
    let (number, suffix) = text_trim.split_at(split);
    if number.is_empty() {
        return Err(bad("expected a number"));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return Err(bad("unknown suffix (use k, M, G, T, P or E)")),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if frac.contains('.') {
        return Err(bad("more than one decimal point"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("number too large"))?
    };
    let mut bytes = whole
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("too large"))?;
    if !frac.is_empty() {
        if frac.len() > 18 {
            return Err(bad("too many decimals"));
        }
        let digits: u64 = frac.parse().map_err(|_| bad("bad fraction"))?;
        let denom = 10u128.pow(frac.len() as u32);
        let scaled = (digits as u128) << shift;
        if scaled % denom != 0 {
            return Err(bad("fraction is not a whole number of bytes"));
        }
        bytes = bytes
            .checked_add((scaled / denom) as u64)
            .ok_or_else(|| bad("too large"))?;
    }
    if bytes > i64::MAX as u64 {
        return Err(bad("too large"));
    }
    Ok(bytes)
}

/// Formats a byte count like qemu-img's human output ("1 GiB", "196 KiB", "1.5 MiB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        // qemu prints up to three significant digits and drops trailing zeros.
        let text = if value >= 100.0 {
            format!("{value:.0}")
        } else if value >= 10.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        };
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        format!("{text} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("100b").unwrap(), 100);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "k",
            "12x",
            "1.2.3M",
            "99999999999999999999",
            "16E",
            "0.3",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn human_sizes_match_qemu_style() {
        assert_eq!(human_size(10 << 20), "10 MiB");
        assert_eq!(human_size(208896), "204 KiB");
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
