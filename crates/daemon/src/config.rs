//! oxvirtd's configuration file, `/etc/oxvirt/oxvirtd.conf`, in libvirtd.conf's syntax:
//! `key = value` lines, values a double-quoted string or an integer, `#` starts a comment.
//!
//! Hand-written: no maintained crate reads libvirt's conf format (it is neither TOML nor INI:
//! `log_level = 1` and `log_outputs="1:file:/x"` are also valid TOML, but libvirt's files have
//! no sections, quote with double quotes only, and an operator's libvirtd.conf habits — `0770`
//! style octal strings, bare integers — are best checked by a reader that knows only this
//! grammar and names the line of any mistake). The grammar is a dozen lines below.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where oxvirtd looks for its configuration unless `--config` says otherwise. A missing file
/// at this path is not an error (every key has a default); a missing `--config FILE` is.
pub const DEFAULT_CONFIG: &str = "/etc/oxvirt/oxvirtd.conf";

/// One value as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// Where a setting came from, for error messages that name it.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// `FILE line N`.
    File(PathBuf, usize),
    /// A command-line flag (`--log-outputs`).
    Flag(&'static str),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path, line) => write!(f, "{} line {line}", path.display()),
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// Every key oxvirtd.conf accepts and the flag that overrides it (see etc/oxvirtd.conf).
pub const KEYS: &[(&str, &str)] = &[
    ("socket_path", "--socket"),
    ("socket_mode", "--socket-mode"),
    ("socket_group", "--socket-group"),
    ("max_clients", "--max-clients"),
    ("listen", "--listen"),
    ("tls_cert", "--tls-cert"),
    ("tls_key", "--tls-key"),
    ("state_dir", "--state-dir"),
    ("network_dir", "--network-dir"),
    ("default_network", "--no-default-network"),
    ("sandbox", "--no-sandbox"),
    ("native_user_range", "--native-user-range"),
    ("qemu_user_range", "--qemu-user-range"),
    ("host_cpu_file", "--host-cpu-file"),
    ("migration_port_range", "--migration-port-range"),
    ("backup_interval", "--backup-interval"),
    ("backup_keep", "--backup-keep"),
    ("log_level", "--log-level"),
    ("log_filters", "--log-filters"),
    ("log_outputs", "--log-outputs"),
    ("log_max_size", "--log-max-size"),
    ("log_max_backups", "--log-max-backups"),
    ("log_format", "--log-format"),
    ("guest_log_max_size", "--guest-log-max-size"),
    ("guest_log_max_backups", "--guest-log-max-backups"),
    ("cluster", "--cluster"),
    ("host_name", "--host-name"),
];

/// A parsed file: each key's value and line.
#[derive(Debug, Default)]
pub struct ConfFile {
    pub path: PathBuf,
    pub entries: HashMap<String, (Value, usize)>,
}

/// A configuration error: where, and what.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfError {
    pub origin: Origin,
    pub message: String,
}

impl ConfError {
    pub fn new(origin: Origin, message: impl Into<String>) -> ConfError {
        ConfError {
            origin,
            message: message.into(),
        }
    }
}

impl ConfFile {
    /// Reads `path`; `None` when it is the default path and does not exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Option<ConfFile>, ConfError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ConfFile::parse(path, &text).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
            Err(err) => Err(ConfError::new(
                Origin::Flag("--config"),
                format!("cannot read {}: {err}", path.display()),
            )),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<ConfFile, ConfError> {
        let mut file = ConfFile {
            path: path.to_path_buf(),
            entries: HashMap::new(),
        };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let at = || Origin::File(path.to_path_buf(), line);
            let content = strip_comment(raw).trim();
            if content.is_empty() {
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(ConfError::new(at(), "expected 'key = value'"));
            };
            let key = key.trim();
            if !KEYS.iter().any(|(k, _)| *k == key) {
                return Err(ConfError::new(at(), format!("unknown key '{key}'")));
            }
            let value = parse_value(value.trim())
                .map_err(|message| ConfError::new(at(), format!("key '{key}': {message}")))?;
            if file.entries.contains_key(key) {
                return Err(ConfError::new(at(), format!("key '{key}' set twice")));
            }
            file.entries.insert(key.to_string(), (value, line));
        }
        Ok(file)
    }

    fn origin(&self, line: usize) -> Origin {
        Origin::File(self.path.clone(), line)
    }

    /// A string key's value and where it was set.
    pub fn string(&self, key: &str) -> Result<Option<(String, Origin)>, ConfError> {
        match self.entries.get(key) {
            None => Ok(None),
            Some((Value::Str(s), line)) => Ok(Some((s.clone(), self.origin(*line)))),
            Some((Value::Int(_), line)) => Err(ConfError::new(
                self.origin(*line),
                format!("key '{key}' expects a string in double quotes"),
            )),
        }
    }

    /// A non-negative integer key's value and where it was set.
    pub fn integer(&self, key: &str) -> Result<Option<(u64, Origin)>, ConfError> {
        match self.entries.get(key) {
            None => Ok(None),
            Some((Value::Int(n), line)) => match u64::try_from(*n) {
                Ok(n) => Ok(Some((n, self.origin(*line)))),
                Err(_) => Err(ConfError::new(
                    self.origin(*line),
                    format!("key '{key}' must not be negative"),
                )),
            },
            Some((Value::Str(_), line)) => Err(ConfError::new(
                self.origin(*line),
                format!("key '{key}' expects an integer"),
            )),
        }
    }
}

/// The line without its `#` comment (a `#` inside a quoted string is text).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_value(text: &str) -> Result<Value, String> {
    if let Some(rest) = text.strip_prefix('"') {
        let Some(inner) = rest.strip_suffix('"') else {
            return Err("unterminated string".into());
        };
        if inner.contains('"') {
            return Err("a string holds no double quote".into());
        }
        return Ok(Value::Str(inner.to_string()));
    }
    if text.starts_with('[') {
        return Err("lists are not used by any oxvirtd key".into());
    }
    text.parse::<i64>()
        .map(Value::Int)
        .map_err(|_| format!("'{text}' is neither a string in double quotes nor an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libvirt_style() {
        let text = "# comment\nlog_level = 1\nlog_outputs=\"1:file:/x#y\" # trailing\n\n";
        let file = ConfFile::parse(Path::new("c"), text).expect("parses");
        assert_eq!(file.integer("log_level").unwrap().unwrap().0, 1);
        let (outputs, origin) = file.string("log_outputs").unwrap().unwrap();
        assert_eq!(outputs, "1:file:/x#y");
        assert_eq!(origin.to_string(), "c line 3");
    }

    #[test]
    fn names_unknown_key_and_line() {
        let err = ConfFile::parse(Path::new("/etc/oxvirt/oxvirtd.conf"), "\n\nlog_levle = 1\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/oxvirt/oxvirtd.conf line 3: unknown key 'log_levle'"
        );
    }

    #[test]
    fn refuses_bad_values() {
        for text in [
            "log_level = one",
            "log_level = \"1",
            "x",
            "log_outputs = [\"a\"]",
        ] {
            assert!(ConfFile::parse(Path::new("c"), text).is_err(), "{text}");
        }
        let file = ConfFile::parse(Path::new("c"), "log_level = \"1\"").unwrap();
        assert!(file.integer("log_level").is_err());
    }
}
