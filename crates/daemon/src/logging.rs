//! oxvirtd's own log, configured as libvirtd's is (see docs/configuration.md):
//!
//! - `log_level` 1-4 (1 debug, 2 info, 3 warning, 4 error): the level for every module no
//!   filter names;
//! - `log_filters` (`"3:qemu 1:daemon.engine"`): per-module levels. A libvirt-style name maps
//!   onto a tracing target: `daemon` is oxvirtd's own code (`oxvirtd`, `daemon.engine` is
//!   `oxvirtd::engine`), any other first part `X` is the crate `oxvirt_X` (`qemu` is
//!   `oxvirt_qemu`, `net.dnsmasq` is `oxvirt_net::dnsmasq`);
//! - `log_outputs` (`"1:file:/var/log/oxvirt/oxvirtd.log 3:stderr 2:syslog:oxvirtd"`): where
//!   lines go, each output with its own minimum level (also `LEVEL:journald`);
//! - files rotate by size (`log_max_size` bytes, `log_max_backups` gzip-compressed backups
//!   `FILE.1.gz` newest .. `FILE.N.gz` oldest), so no logrotate is needed: oxvirt-logfile's
//!   `RotatingFile`, which also writes the guests' logs.
//!
//! Filters and outputs change at run time (`oxvirt admin daemon-log-filters`): the filter is a
//! tracing-subscriber reload layer, the outputs a list behind a mutex that the writer reads for
//! each line. Both live in one process-wide [`LogControl`], as the tracing subscriber does.

use std::io::Write;
use std::path::{Path, PathBuf};

use oxvirt_logfile::{RotatingFile, Rotation};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Defaults, as etc/oxvirtd.conf documents them.
pub const DEFAULT_LEVEL: u8 = 2;
pub const DEFAULT_MAX_SIZE: u64 = 2 * 1024 * 1024;
pub const DEFAULT_MAX_BACKUPS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown log format '{other}' (text or json)")),
        }
    }
}

/// A libvirt log priority, 1 (debug) to 4 (error), as a tracing level.
fn priority(text: &str) -> Result<Level, String> {
    match text {
        "1" => Ok(Level::DEBUG),
        "2" => Ok(Level::INFO),
        "3" => Ok(Level::WARN),
        "4" => Ok(Level::ERROR),
        other => Err(format!(
            "bad log level '{other}' (1 debug, 2 info, 3 warning, 4 error)"
        )),
    }
}

/// `log_level`: 1-4, or (the flag's older spelling) debug, info, warn, error.
pub fn parse_level(text: &str) -> Result<u8, String> {
    match text {
        "1" | "debug" | "trace" => Ok(1),
        "2" | "info" => Ok(2),
        "3" | "warn" | "warning" => Ok(3),
        "4" | "error" => Ok(4),
        other => Err(format!(
            "bad log level '{other}' (1 debug, 2 info, 3 warning, 4 error)"
        )),
    }
}

fn level_name(level: u8) -> &'static str {
    match level {
        1 => "debug",
        2 => "info",
        3 => "warn",
        _ => "error",
    }
}

/// The tracing target of a libvirt-style module name (see the module documentation).
fn target(name: &str) -> Result<String, String> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    if !valid(first) || !rest.iter().all(|p| valid(p)) {
        return Err(format!("bad module name '{name}' in log filter"));
    }
    let mut target = match first {
        "daemon" | "oxvirtd" => "oxvirtd".to_string(),
        other => format!("oxvirt_{}", other.replace('-', "_")),
    };
    for part in rest {
        target.push_str("::");
        target.push_str(part);
    }
    Ok(target)
}

/// `log_filters` as a tracing filter directive list, with `level` for everything else.
pub fn filter_directives(level: u8, filters: &str) -> Result<String, String> {
    let mut directives = vec![level_name(level).to_string()];
    for filter in filters.split_whitespace() {
        let Some((prio, name)) = filter.split_once(':') else {
            return Err(format!(
                "bad log filter '{filter}' (expected LEVEL:NAME, e.g. 3:qemu)"
            ));
        };
        let prio = parse_level(prio).map_err(|e| format!("log filter '{filter}': {e}"))?;
        directives.push(format!("{}={}", target(name)?, level_name(prio)));
    }
    Ok(directives.join(","))
}

fn env_filter(level: u8, filters: &str) -> Result<EnvFilter, String> {
    let directives = filter_directives(level, filters)?;
    EnvFilter::try_new(&directives).map_err(|e| format!("bad log filter: {e}"))
}

/// One parsed `log_outputs` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Stderr,
    File(PathBuf),
    Syslog(String),
    Journald,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub level: Level,
    pub sink: Sink,
}

/// Parses `log_outputs` (space-separated `LEVEL:stderr`, `LEVEL:file:PATH`,
/// `LEVEL:syslog:IDENT`).
pub fn parse_outputs(text: &str) -> Result<Vec<OutputSpec>, String> {
    let mut outputs = Vec::new();
    for entry in text.split_whitespace() {
        let mut parts = entry.splitn(3, ':');
        let level = priority(parts.next().unwrap_or_default())
            .map_err(|e| format!("log output '{entry}': {e}"))?;
        let sink = match (parts.next(), parts.next()) {
            (Some("stderr"), None) => Sink::Stderr,
            (Some("file"), Some(path)) if path.starts_with('/') => Sink::File(path.into()),
            (Some("file"), _) => {
                return Err(format!(
                    "log output '{entry}': a file output needs an absolute path"
                ))
            }
            (Some("syslog"), Some(ident)) if !ident.is_empty() && !ident.contains('\0') => {
                Sink::Syslog(ident.to_string())
            }
            (Some("journald"), None) => Sink::Journald,
            _ => {
                return Err(format!(
                    "bad log output '{entry}' (LEVEL:stderr, LEVEL:file:PATH or LEVEL:syslog:IDENT)"
                ))
            }
        };
        outputs.push(OutputSpec { level, sink });
    }
    if outputs.is_empty() {
        return Err("log_outputs names no output".into());
    }
    Ok(outputs)
}

/// Checks, without creating anything, that a file output could be opened for appending.
pub fn check_writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let target = if path.exists() {
        path.to_path_buf()
    } else {
        match path.parent() {
            Some(parent) if parent.is_dir() => parent.to_path_buf(),
            _ => {
                return Err(format!(
                    "cannot write log file {}: its directory does not exist",
                    path.display()
                ))
            }
        }
    };
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| format!("bad log file path {}", path.display()))?;
    // SAFETY: access() reads a NUL-terminated path and touches nothing else.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 || (path.exists() && path.is_dir()) {
        return Err(format!(
            "cannot write log file {}: {}",
            path.display(),
            if path.is_dir() {
                "it is a directory".to_string()
            } else {
                std::io::Error::last_os_error().to_string()
            }
        ));
    }
    Ok(())
}

enum Output {
    Stderr,
    File(RotatingFile),
    Syslog,
    Journald(std::os::unix::net::UnixDatagram),
}

struct ActiveOutput {
    level: Level,
    output: Output,
}

/// Opens the outputs `specs` names. A file that cannot be opened is an error naming it.
fn open_outputs(
    specs: &[OutputSpec],
    max_size: u64,
    max_backups: u32,
) -> Result<Vec<ActiveOutput>, String> {
    let mut outputs = Vec::new();
    for spec in specs {
        let output = match &spec.sink {
            Sink::Stderr => Output::Stderr,
            Sink::File(path) => Output::File(
                RotatingFile::open(
                    path,
                    Rotation {
                        max_size,
                        max_backups,
                    },
                )
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
            ),
            Sink::Syslog(ident) => {
                open_syslog(ident);
                Output::Syslog
            }
            Sink::Journald => Output::Journald(open_journald()?),
        };
        outputs.push(ActiveOutput {
            level: spec.level,
            output,
        });
    }
    Ok(outputs)
}

/// openlog() keeps the ident pointer, so it must live for the process: syslog's ident is
/// process-wide anyway (the last syslog output configured names it).
fn open_syslog(ident: &str) {
    let Ok(ident) = std::ffi::CString::new(ident) else {
        return;
    };
    let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
    // SAFETY: ident is NUL-terminated and lives for the rest of the process.
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

fn syslog(level: Level, line: &[u8]) {
    let priority = match level {
        Level::ERROR => libc::LOG_ERR,
        Level::WARN => libc::LOG_WARNING,
        Level::INFO => libc::LOG_INFO,
        _ => libc::LOG_DEBUG,
    };
    let text: Vec<u8> = line
        .iter()
        .copied()
        .filter(|&b| b != 0 && b != b'\n')
        .chain(std::iter::once(0))
        .collect();
    // SAFETY: both strings are NUL-terminated; "%s" takes exactly the one argument given.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// journald's native protocol socket (systemd.journal-fields(7), sd_journal_sendv).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether a journald output could be opened (`--check-config`).
pub fn check_journald() -> Result<(), String> {
    if !Path::new(JOURNAL_SOCKET).exists() {
        return Err(format!(
            "log output journald: no journal here ({JOURNAL_SOCKET} does not exist)"
        ));
    }
    Ok(())
}

fn open_journald() -> Result<std::os::unix::net::UnixDatagram, String> {
    check_journald()?;
    std::os::unix::net::UnixDatagram::unbound()
        .map_err(|e| format!("log output journald: creating a socket: {e}"))
}

/// One journal entry: PRIORITY, SYSLOG_IDENTIFIER and MESSAGE, the message in the protocol's
/// length-prefixed form (it may hold newlines of its own).
fn journal_entry(level: Level, line: &[u8]) -> Vec<u8> {
    let priority = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    };
    let message = line.strip_suffix(b"\n").unwrap_or(line);
    let mut entry =
        format!("PRIORITY={priority}\nSYSLOG_IDENTIFIER=oxvirtd\nMESSAGE\n").into_bytes();
    entry.extend_from_slice(&(message.len() as u64).to_le_bytes());
    entry.extend_from_slice(message);
    entry.push(b'\n');
    entry
}

/// The fmt layer's writer: one formatted line per event, sent to every output whose level
/// admits the event's.
#[derive(Clone)]
struct Outputs(Arc<Mutex<Vec<ActiveOutput>>>);

struct LineWriter {
    outputs: Arc<Mutex<Vec<ActiveOutput>>>,
    level: Level,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        for output in outputs.iter_mut() {
            if self.level > output.level {
                continue;
            }
            match &mut output.output {
                Output::Stderr => {
                    let _ = std::io::stderr().write_all(buf);
                }
                Output::File(file) => {
                    file.write_line(buf);
                    if let Some(err) = file.take_error() {
                        // Reported once; logging carries on in the live file.
                        eprintln!("oxvirtd: {err}");
                    }
                }
                Output::Syslog => syslog(self.level, buf),
                Output::Journald(socket) => {
                    let _ = socket.send_to(&journal_entry(self.level, buf), JOURNAL_SOCKET);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Outputs {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            outputs: self.0.clone(),
            level: Level::ERROR,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            outputs: self.0.clone(),
            level: *meta.level(),
        }
    }
}

/// One JSON object per line: timestamp, level, target and the event's fields.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": event.metadata().level().as_str(),
            "target": event.metadata().target(),
            "fields": fields.0,
        });
        writeln!(writer, "{line}")
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The logging settings after the config file and flags are merged.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: u8,
    pub filters: String,
    pub outputs: String,
    pub max_size: u64,
    pub max_backups: u32,
    pub format: Format,
}

/// What `admin daemon-log-filters/-outputs` change at run time.
pub struct LogControl {
    level: u8,
    filters: Mutex<String>,
    outputs_text: Mutex<String>,
    filter: reload::Handle<EnvFilter, Registry>,
    outputs: Arc<Mutex<Vec<ActiveOutput>>>,
    max_size: u64,
    max_backups: u32,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Which setting an error is about, so the caller can name its key and line.
#[derive(Debug)]
pub enum LogError {
    Filters(String),
    Outputs(String),
}

/// Installs the process's tracing subscriber.
pub fn init(settings: &LogSettings) -> Result<(), LogError> {
    let filter = env_filter(settings.level, &settings.filters).map_err(LogError::Filters)?;
    let specs = parse_outputs(&settings.outputs).map_err(LogError::Outputs)?;
    let outputs = Arc::new(Mutex::new(
        open_outputs(&specs, settings.max_size, settings.max_backups).map_err(LogError::Outputs)?,
    ));
    let (filter, handle) = reload::Layer::new(filter);
    let writer = Outputs(outputs.clone());
    let registry = tracing_subscriber::registry().with(filter);
    // One subscriber either way; only the line format differs.
    let installed = match settings.format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonFormat)
                    .with_writer(writer),
            )
            .try_init(),
    };
    installed.map_err(|e| LogError::Outputs(format!("installing the logger: {e}")))?;
    let _ = CONTROL.set(LogControl {
        level: settings.level,
        filters: Mutex::new(settings.filters.clone()),
        outputs_text: Mutex::new(settings.outputs.clone()),
        filter: handle,
        outputs,
        max_size: settings.max_size,
        max_backups: settings.max_backups,
    });
    Ok(())
}

fn control() -> Result<&'static LogControl, String> {
    CONTROL
        .get()
        .ok_or_else(|| "logging is not initialised".to_string())
}

pub fn filters() -> String {
    CONTROL
        .get()
        .map(|c| c.filters.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

pub fn outputs() -> String {
    CONTROL
        .get()
        .map(|c| {
            c.outputs_text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
        .unwrap_or_default()
}

/// Replaces the filters; takes effect from the next line logged.
pub fn set_filters(filters: &str) -> Result<(), String> {
    let control = control()?;
    let filter = env_filter(control.level, filters)?;
    control
        .filter
        .reload(filter)
        .map_err(|e| format!("reloading the log filter: {e}"))?;
    *control.filters.lock().unwrap_or_else(|e| e.into_inner()) =
        filters.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(())
}

/// Replaces the outputs (opening the new ones first: on error the old ones stay).
pub fn set_outputs(outputs: &str) -> Result<(), String> {
    let control = control()?;
    let specs = parse_outputs(outputs)?;
    let opened = open_outputs(&specs, control.max_size, control.max_backups)?;
    *control.outputs.lock().unwrap_or_else(|e| e.into_inner()) = opened;
    *control
        .outputs_text
        .lock()
        .unwrap_or_else(|e| e.into_inner()) =
        outputs.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_map_onto_targets() {
        assert_eq!(
            filter_directives(3, "3:qemu 1:daemon.engine").unwrap(),
            "warn,oxvirt_qemu=warn,oxvirtd::engine=debug"
        );
        assert!(filter_directives(2, "5:qemu").is_err());
        assert!(filter_directives(2, "qemu").is_err());
        assert!(filter_directives(2, "1:qemu..x").is_err());
    }

    #[test]
    fn outputs_parse() {
        let outputs = parse_outputs("1:file:/var/log/x.log 2:stderr 3:syslog:oxvirtd").unwrap();
        assert_eq!(outputs.len(), 3);
        assert_eq!(outputs[0].sink, Sink::File("/var/log/x.log".into()));
        assert_eq!(outputs[2].level, Level::WARN);
        assert_eq!(parse_outputs("1:journald").unwrap()[0].sink, Sink::Journald);
        for bad in [
            "",
            "0:stderr",
            "1:file:rel",
            "1:disk",
            "1:syslog:",
            "1:journald:x",
        ] {
            assert!(parse_outputs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn journal_entries_use_the_length_prefixed_message() {
        let entry = journal_entry(Level::WARN, b"a\nb\n");
        let head = b"PRIORITY=4\nSYSLOG_IDENTIFIER=oxvirtd\nMESSAGE\n";
        assert_eq!(&entry[..head.len()], head);
        assert_eq!(&entry[head.len()..head.len() + 8], &3u64.to_le_bytes());
        assert_eq!(&entry[head.len() + 8..], b"a\nb\n");
    }
}
