//! `send-key`'s key codes: virsh's code sets (`linux`, `xt`, `xt_kbd`, `atset1`, `usb`, `qnum`,
//! `rfb`), their numbers and the Linux key names, translated to the QNUM codes QMP `send-key`
//! takes (libvirt does the same translation for QEMU). The table comes from libvirt's
//! `virkeycode-*(7)` pages (`scripts/keycodes.py`).

mod table;

use table::KEYS;

/// (Linux key name, linux, qnum, xt, atset1, usb): one key in every code set that has it.
type Row = (
    &'static str,
    u32,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<u32>,
);

/// A code set virsh's `send-key --codeset` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codeset {
    Linux,
    /// `xt` and `xt_kbd`: the XT keyboard's scan codes (extended keys as `0xe0`-prefixed
    /// values are those of `xt_kbd`).
    Xt,
    Atset1,
    Usb,
    /// `qnum` and `rfb` (the same numbers): what QEMU takes.
    Qnum,
}

impl Codeset {
    /// virsh's names; `None` for a code set oxvirt does not translate.
    pub fn parse(name: &str) -> Option<Codeset> {
        Some(match name {
            "linux" => Codeset::Linux,
            "xt" | "xt_kbd" => Codeset::Xt,
            "atset1" => Codeset::Atset1,
            "usb" => Codeset::Usb,
            "qnum" | "rfb" => Codeset::Qnum,
            _ => return None,
        })
    }

    /// The code sets [`Codeset::parse`] knows, for error messages.
    pub const NAMES: &'static str = "linux, xt, xt_kbd, atset1, usb, qnum, rfb";

    fn column(self, row: &Row) -> Option<u32> {
        match self {
            Codeset::Linux => Some(row.1),
            Codeset::Qnum => row.2,
            Codeset::Xt => row.3,
            Codeset::Atset1 => row.4,
            Codeset::Usb => row.5,
        }
    }
}

/// Why a key could not be translated, in virsh's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid keycode: '{0}'")]
    Invalid(String),
    #[error("cannot translate keycode {code} of {codeset} codeset to qnum keycode")]
    NoQnum { code: u32, codeset: String },
}

/// The value of `key` in `codeset`: a number (decimal, or hex with `0x`, as virsh's strtol), or
/// for the linux code set a Linux key name (`KEY_LEFTCTRL`).
pub fn key_value(codeset: Codeset, key: &str) -> Result<u32, KeyError> {
    let number = match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => key.parse::<u32>().ok(),
    };
    if let Some(number) = number {
        return Ok(number);
    }
    if codeset == Codeset::Linux {
        if let Some(row) = KEYS.iter().find(|row| row.0 == key) {
            return Ok(row.1);
        }
    }
    Err(KeyError::Invalid(key.to_string()))
}

/// The QNUM code QEMU wants for `code` of `codeset`.
pub fn to_qnum(codeset: Codeset, code: u32, codeset_name: &str) -> Result<u32, KeyError> {
    if codeset == Codeset::Qnum {
        return Ok(code);
    }
    KEYS.iter()
        .find(|row| codeset.column(row) == Some(code))
        .and_then(|row| row.2)
        .ok_or_else(|| KeyError::NoQnum {
            code,
            codeset: codeset_name.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_become_qnum() {
        let linux = Codeset::Linux;
        assert_eq!(key_value(linux, "KEY_LEFTCTRL"), Ok(29));
        assert_eq!(key_value(linux, "0x1e"), Ok(30));
        assert_eq!(to_qnum(linux, 30, "linux"), Ok(30));
        // Extended keys: KEY_RIGHTCTRL is 97 in linux, 0x9d (0xe0 0x1d) in qnum.
        assert_eq!(to_qnum(linux, 97, "linux"), Ok(0x9d));
        assert_eq!(to_qnum(Codeset::Usb, 4, "usb"), Ok(30), "usb 4 is KEY_A");
        assert_eq!(to_qnum(Codeset::Xt, 30, "xt"), Ok(30));
        assert_eq!(to_qnum(Codeset::Qnum, 0x9d, "qnum"), Ok(0x9d));
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            key_value(Codeset::Linux, "KEY_NOPE")
                .unwrap_err()
                .to_string(),
            "invalid keycode: 'KEY_NOPE'"
        );
        // Names belong to the linux code set only, as in virsh.
        assert!(key_value(Codeset::Usb, "KEY_A").is_err());
        assert_eq!(
            to_qnum(Codeset::Linux, 9999, "linux")
                .unwrap_err()
                .to_string(),
            "cannot translate keycode 9999 of linux codeset to qnum keycode"
        );
        assert_eq!(Codeset::parse("rfb"), Some(Codeset::Qnum));
        assert_eq!(Codeset::parse("win32"), None);
    }
}
