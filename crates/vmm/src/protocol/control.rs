//! The control API's requests and replies: JSON lines over the Unix socket
//! [`crate::protocol::VmConfig::api_socket`], one request per line, one reply per line.
//!
//! ```text
//! → {"command":"status"}    ← {"ok":true,"state":"running","vcpus":2}
//! → {"command":"pause"}     ← {"ok":true}
//! → {"command":"save","path":"/var/lib/x.state","offset":4096}   ← {"ok":true}
//! → {"command":"balloon","target_kib":262144}   ← {"ok":true}
//! → {"command":"balloon-stats"}   ← {"ok":true,"balloon":{"actual_kib":262144,"target_kib":262144,"stats_period_s":0,"guest":[["swap_in",0],...],"last_update":1780000000}}
//! → {"command":"balloon-stats-period","seconds":5}   ← {"ok":true}
//! → {"command":"migrate-send-fd","max_downtime_ms":300}   (a socket comes with it)   ← {"ok":true,"migration":{"passes":4,"bytes":104857600,"last_pass_bytes":61440,"paused_ms":42}}
//! → {"command":"migrate-status"}   ← {"ok":true,"live_migration":{"passes":2,"ram_bytes":73400320,"dirty_bytes":4194304,"dirty_rate":8388608,"max_downtime_ms":300}}
//! → {"command":"migrate-set-downtime","max_downtime_ms":2000}   ← {"ok":true}
//! → {"command":"migrate-cancel"}   ← {"ok":true}
//! → {"command":"block-stats"}   ← {"ok":true,"disks":[{"index":0,"id":"vda","read":{"requests":120,"bytes":2461696,"total_ns":8210331},"write":{...},"flush":{...}}]}
//! → {"command":"x"}         ← {"ok":false,"error":"unknown command \"x\" (status, pause, ...)"}
//! ```
//!
//! A bare word (`pause`) is accepted as a request too, for people at a shell.
//!
//! The protocol grows by new commands and new optional fields, never by changing what an existing
//! one means: a VMM older than a command refuses it as unknown (`"ok":false`, naming the commands
//! it has), which its manager reports as such.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use oxvirt_virtio::BlockStats;
use serde::{Deserialize, Serialize};

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireRequest", into = "WireRequest")]
pub enum Request {
    /// The run state and vCPU count.
    Status,
    /// Parks every vCPU; answered once all have stopped.
    Pause,
    Resume,
    /// Presses the ACPI power button: the guest shuts down and the VMM exits.
    Poweroff,
    /// Stops the VM at once (pulling the plug); the VMM exits.
    Stop,
    /// Writes the paused VM's whole machine state (`crate::snapshot`'s stream) into the existing
    /// file `path` from byte `offset` on (what is before it is kept), and syncs it. The VM stays
    /// paused. `{"command":"save","path":"/x","offset":4096}`.
    Save {
        path: PathBuf,
        offset: u64,
    },
    /// `save` into the file whose descriptor comes with the request line (`SCM_RIGHTS`): how a
    /// jailed VMM, which can name no file of the host, saves. `{"command":"save-fd","offset":N}`.
    SaveFd {
        offset: u64,
    },
    /// Asks the guest's balloon driver to leave the guest `target_kib` KiB of RAM (at most the
    /// configured memory); answered once asked, not once done. `{"command":"balloon","target_kib":N}`.
    Balloon {
        target_kib: u64,
    },
    /// The balloon's view of guest memory ([`BalloonReport`]).
    BalloonStats,
    /// How often the guest refreshes its statistics (0: never).
    /// `{"command":"balloon-stats-period","seconds":N}`.
    BalloonStatsPeriod {
        seconds: u32,
    },
    /// Each disk's I/O counters ([`DiskStats`]), in `VmConfig::disks` order.
    BlockStats,
    /// Live migration's source side (docs/migration.md, "The native engine"): writes the VM's
    /// state as a live stream (`crate::snapshot`, version 2) into the descriptor that comes with
    /// the request (a socket or pipe to whoever carries it to the destination) while the guest
    /// runs: all of RAM, then the pages written meanwhile (KVM's dirty log and the devices'
    /// writes), pass after pass, until what is left can go in `max_downtime_ms` at the rate the
    /// descriptor took the last pass (or the passes stop converging); then pauses the guest for
    /// the last pass and the devices' state. Answered once the stream is complete
    /// ([`Reply::Migrated`]): the VM stays paused with its disk images' locks released (the
    /// destination's VMM takes them) until `migrate-cancel` or `stop`. On any failure the
    /// locks are kept and the guest runs on as before.
    /// `{"command":"migrate-send-fd","max_downtime_ms":300}`.
    MigrateSendFd {
        max_downtime_ms: u64,
    },
    /// Undoes a completed `migrate-send-fd` (the destination failed): takes the disk images'
    /// locks again and resumes the guest if it ran before the migration.
    MigrateCancel,
    /// The live migration under way (`migrate-send-fd`, from another connection): how far it
    /// went ([`Reply::LiveMigration`]). Refused when none streams.
    MigrateStatus,
    /// Changes the downtime the live migration under way aims at; its next pass's end decides
    /// with it (a large one makes that pass's successor the last). Refused when none streams.
    /// `{"command":"migrate-set-downtime","max_downtime_ms":2000}`.
    MigrateSetDowntime {
        max_downtime_ms: u64,
    },
}

/// The downtime a live migration aims at unless told otherwise (QEMU's default too).
pub const DEFAULT_MAX_DOWNTIME_MS: u64 = 300;

/// Every command's name, in the order error messages list them.
const NAMES: [&str; 15] = [
    "status",
    "pause",
    "resume",
    "poweroff",
    "stop",
    "save",
    "save-fd",
    "balloon",
    "balloon-stats",
    "balloon-stats-period",
    "block-stats",
    "migrate-send-fd",
    "migrate-cancel",
    "migrate-status",
    "migrate-set-downtime",
];

impl Request {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Poweroff => "poweroff",
            Request::Stop => "stop",
            Request::Save { .. } => "save",
            Request::SaveFd { .. } => "save-fd",
            Request::Balloon { .. } => "balloon",
            Request::BalloonStats => "balloon-stats",
            Request::BalloonStatsPeriod { .. } => "balloon-stats-period",
            Request::BlockStats => "block-stats",
            Request::MigrateSendFd { .. } => "migrate-send-fd",
            Request::MigrateCancel => "migrate-cancel",
            Request::MigrateStatus => "migrate-status",
            Request::MigrateSetDowntime { .. } => "migrate-set-downtime",
        }
    }

    /// Parses one request line: `{"command": "NAME", ...}` or a bare `NAME`.
    pub fn parse_line(line: &str) -> Result<Request, RequestError> {
        let line = line.trim();
        if line.starts_with('{') {
            return serde_json::from_str::<Request>(line).map_err(|err| {
                // The messages about commands are ours (see `TryFrom<WireRequest>`); serde adds
                // its position, which a one-line request does not need.
                let text = err.to_string();
                let text = match text.rfind(" at line ") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                if text.starts_with("unknown command") || text.starts_with("command ") {
                    RequestError(text)
                } else {
                    RequestError(format!("invalid request: {text}"))
                }
            });
        }
        if !line.is_empty() && line.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return line.parse();
        }
        Err(RequestError(
            "invalid request: expected {\"command\": \"...\"}".to_string(),
        ))
    }

    /// The request as one line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"command\":\"{}\"}}", self.name()))
    }
}

impl FromStr for Request {
    type Err = RequestError;
    /// A bare command name (commands with arguments need the JSON form).
    fn from_str(name: &str) -> Result<Request, RequestError> {
        match name {
            "status" => Ok(Request::Status),
            "pause" => Ok(Request::Pause),
            "resume" => Ok(Request::Resume),
            "poweroff" => Ok(Request::Poweroff),
            "stop" => Ok(Request::Stop),
            "balloon-stats" => Ok(Request::BalloonStats),
            "block-stats" => Ok(Request::BlockStats),
            "migrate-cancel" => Ok(Request::MigrateCancel),
            "migrate-status" => Ok(Request::MigrateStatus),
            "migrate-set-downtime" => Err(RequestError(
                "command migrate-set-downtime needs a downtime: \
                 {\"command\":\"migrate-set-downtime\",\"max_downtime_ms\":N}"
                    .to_string(),
            )),
            "migrate-send-fd" => Ok(Request::MigrateSendFd {
                max_downtime_ms: DEFAULT_MAX_DOWNTIME_MS,
            }),
            "balloon" => Err(RequestError(
                "command balloon needs a target: {\"command\":\"balloon\",\"target_kib\":N}".to_string(),
            )),
            "balloon-stats-period" => Err(RequestError(
                "command balloon-stats-period needs seconds: {\"command\":\"balloon-stats-period\",\"seconds\":N}"
                    .to_string(),
            )),
            "save-fd" => Ok(Request::SaveFd { offset: 0 }),
            "save" => Err(RequestError(
                "command save needs a path and an offset: {\"command\":\"save\",\"path\":\"FILE\",\"offset\":N}"
                    .to_string(),
            )),
            _ => Err(RequestError(format!(
                "unknown command {name:?} ({})",
                NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request the server cannot read; the text goes back as the reply's `error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// A request as it is written: `{"command": NAME}`, plus `path` and `offset` for `save`,
/// `target_kib` for `balloon`, `seconds` for `balloon-stats-period`.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_kib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_downtime_ms: Option<u64>,
}

impl TryFrom<WireRequest> for Request {
    type Error = RequestError;
    fn try_from(wire: WireRequest) -> Result<Request, RequestError> {
        if wire.command == "save" {
            let Some(path) = wire.path else {
                return Err(RequestError(
                    "command save needs \"path\": the file to write the state into".to_string(),
                ));
            };
            if !path.is_absolute() {
                return Err(RequestError(format!(
                    "command save: path {} is not absolute",
                    path.display()
                )));
            }
            return Ok(Request::Save {
                path,
                offset: wire.offset.unwrap_or(0),
            });
        }
        if wire.command == "save-fd" {
            if wire.path.is_some() || wire.target_kib.is_some() || wire.seconds.is_some() {
                return Err(RequestError(
                    "command save-fd takes \"offset\" only: the file comes with the request"
                        .to_string(),
                ));
            }
            return Ok(Request::SaveFd {
                offset: wire.offset.unwrap_or(0),
            });
        }
        if wire.command == "migrate-send-fd" {
            if wire.path.is_some()
                || wire.offset.is_some()
                || wire.target_kib.is_some()
                || wire.seconds.is_some()
            {
                return Err(RequestError(
                    "command migrate-send-fd takes \"max_downtime_ms\" only: the descriptor \
                     comes with the request"
                        .to_string(),
                ));
            }
            return Ok(Request::MigrateSendFd {
                max_downtime_ms: wire.max_downtime_ms.unwrap_or(DEFAULT_MAX_DOWNTIME_MS),
            });
        }
        if wire.command == "migrate-set-downtime" {
            return match wire {
                WireRequest {
                    max_downtime_ms: Some(max_downtime_ms),
                    path: None,
                    offset: None,
                    target_kib: None,
                    seconds: None,
                    ..
                } => Ok(Request::MigrateSetDowntime { max_downtime_ms }),
                _ => Err(RequestError(
                    "command migrate-set-downtime takes \"max_downtime_ms\", and only that"
                        .to_string(),
                )),
            };
        }
        if wire.max_downtime_ms.is_some() {
            return Err(RequestError(format!(
                "command {} takes no max_downtime_ms",
                wire.command
            )));
        }
        if wire.command == "balloon" || wire.command == "balloon-stats-period" {
            if wire.path.is_some() || wire.offset.is_some() {
                return Err(RequestError(format!(
                    "command {} takes no path or offset",
                    wire.command
                )));
            }
            return match (wire.command.as_str(), wire.target_kib, wire.seconds) {
                ("balloon", Some(target_kib), None) => Ok(Request::Balloon { target_kib }),
                ("balloon-stats-period", None, Some(seconds)) => {
                    Ok(Request::BalloonStatsPeriod { seconds })
                }
                ("balloon", ..) => Err(RequestError(
                    "command balloon takes \"target_kib\" (KiB), and only that".to_string(),
                )),
                _ => Err(RequestError(
                    "command balloon-stats-period takes \"seconds\", and only that".to_string(),
                )),
            };
        }
        let request: Request = wire.command.parse()?;
        if wire.target_kib.is_some() || wire.seconds.is_some() {
            return Err(RequestError(format!(
                "command {} takes no target_kib or seconds",
                request.name()
            )));
        }
        if wire.path.is_some() || wire.offset.is_some() {
            return Err(RequestError(format!(
                "command {} takes no path or offset",
                request.name()
            )));
        }
        Ok(request)
    }
}

impl From<Request> for WireRequest {
    fn from(request: Request) -> WireRequest {
        let command = request.name().to_string();
        match request {
            Request::Save { path, offset } => WireRequest {
                command,
                path: Some(path),
                offset: Some(offset),
                ..WireRequest::default()
            },
            Request::SaveFd { offset } => WireRequest {
                command,
                offset: Some(offset),
                ..WireRequest::default()
            },
            Request::Balloon { target_kib } => WireRequest {
                command,
                target_kib: Some(target_kib),
                ..WireRequest::default()
            },
            Request::BalloonStatsPeriod { seconds } => WireRequest {
                command,
                seconds: Some(seconds),
                ..WireRequest::default()
            },
            Request::MigrateSendFd { max_downtime_ms }
            | Request::MigrateSetDowntime { max_downtime_ms } => WireRequest {
                command,
                max_downtime_ms: Some(max_downtime_ms),
                ..WireRequest::default()
            },
            _ => WireRequest {
                command,
                ..WireRequest::default()
            },
        }
    }
}

/// What the VM is doing, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Built, its vCPU threads started and held before the guest's first instruction until
    /// `resume` (a VM configured `start_paused`; QEMU's "prelaunch").
    Created,
    Running,
    Paused,
    /// An exit was requested; the VMM is tearing down.
    Stopping,
}

/// One reply. On the wire: `{"ok":true}`, `{"ok":true,"state":...,"vcpus":N}` or
/// `{"ok":false,"error":"..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireReply", into = "WireReply")]
pub enum Reply {
    /// The request was carried out.
    Done,
    /// The answer to `status`.
    Status { state: RunState, vcpus: u32 },
    /// The answer to `balloon-stats`.
    Balloon(BalloonReport),
    /// The answer to `block-stats`: one entry per disk.
    Block(Vec<DiskStats>),
    /// The answer to `migrate-send-fd`: how the live stream went.
    Migrated(MigrationReport),
    /// The answer to `migrate-status`.
    LiveMigration(LiveProgress),
    /// The request was refused or failed; `error` says why.
    Refused { error: String },
}

/// The balloon's view of guest memory, in `virsh dommemstat`'s terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonReport {
    /// The memory the guest has now (KiB): its configured size less what the balloon holds.
    pub actual_kib: u64,
    /// The memory the host asked the guest to keep (KiB).
    pub target_kib: u64,
    /// Seconds between two statistics refreshes (0: none).
    pub stats_period_s: u32,
    /// The guest's last statistics under virsh's names (`swap_in`, `unused`, `available`, ...),
    /// memory sizes in KiB, in the order the guest sent them; empty until it sent any.
    #[serde(default)]
    pub guest: Vec<(String, u64)>,
    /// When the device received them (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<u64>,
}

/// How a live migration's stream (`migrate-send-fd`) went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationReport {
    /// Passes over RAM: the first (all of it), then one per round of pages written meanwhile,
    /// the last one with the guest paused.
    pub passes: u32,
    /// The stream's length in bytes.
    pub bytes: u64,
    /// Bytes of RAM pages the last (paused) pass sent.
    pub last_pass_bytes: u64,
    /// How long the guest was paused until the stream was complete (ms): the last pass and
    /// the devices' state; the destination's restore comes on top.
    pub paused_ms: u64,
}

/// How far the live migration under way went (`migrate-status`), as of its last pass's end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveProgress {
    /// Passes over RAM done so far (0 during the first).
    pub passes: u32,
    /// Bytes of RAM pages those passes sent.
    pub ram_bytes: u64,
    /// Bytes of the pages the guest wrote during the last pass: what the next one sends.
    pub dirty_bytes: u64,
    /// How fast the guest wrote its RAM during the last pass, bytes per second.
    pub dirty_rate: u64,
    /// The downtime the migration aims at now, ms (`migrate-set-downtime` changes it).
    pub max_downtime_ms: u64,
}

/// One disk's I/O counters since the VMM opened it: its place and id, then the device's
/// counters ([`BlockStats`]: `read`, `write`, `flush`, each the requests that succeeded, their
/// bytes and the time spent on them in ns) in the same object. Fields it does not know are
/// ignored, so a VMM may report more counters than its manager reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// The disk's place in `VmConfig::disks` (from 0).
    pub index: usize,
    /// Its `id` in the configuration, if it has one (oxvirtd's: the disk's target, `vda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub counters: BlockStats,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<RunState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    balloon: Option<BalloonReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disks: Option<Vec<DiskStats>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    migration: Option<MigrationReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live_migration: Option<LiveProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Reply> for WireReply {
    fn from(reply: Reply) -> WireReply {
        let none = WireReply {
            ok: true,
            state: None,
            vcpus: None,
            balloon: None,
            disks: None,
            migration: None,
            live_migration: None,
            error: None,
        };
        match reply {
            Reply::Done => none,
            Reply::Status { state, vcpus } => WireReply {
                state: Some(state),
                vcpus: Some(vcpus),
                ..none
            },
            Reply::Balloon(report) => WireReply {
                balloon: Some(report),
                ..none
            },
            Reply::Block(disks) => WireReply {
                disks: Some(disks),
                ..none
            },
            Reply::Migrated(report) => WireReply {
                migration: Some(report),
                ..none
            },
            Reply::LiveMigration(progress) => WireReply {
                live_migration: Some(progress),
                ..none
            },
            Reply::Refused { error } => WireReply {
                ok: false,
                error: Some(error),
                ..none
            },
        }
    }
}

impl TryFrom<WireReply> for Reply {
    type Error = String;
    fn try_from(wire: WireReply) -> Result<Reply, String> {
        let WireReply {
            ok,
            state,
            vcpus,
            balloon,
            disks,
            migration,
            live_migration,
            error,
        } = wire;
        if !ok {
            return Ok(Reply::Refused {
                error: error.unwrap_or_else(|| "no reason given".to_string()),
            });
        }
        match (
            state,
            vcpus,
            balloon,
            disks,
            migration,
            live_migration,
            error,
        ) {
            (Some(state), Some(vcpus), None, None, None, None, None) => {
                Ok(Reply::Status { state, vcpus })
            }
            (None, None, Some(report), None, None, None, None) => Ok(Reply::Balloon(report)),
            (None, None, None, Some(disks), None, None, None) => Ok(Reply::Block(disks)),
            (None, None, None, None, Some(report), None, None) => Ok(Reply::Migrated(report)),
            (None, None, None, None, None, Some(progress), None) => {
                Ok(Reply::LiveMigration(progress))
            }
            (None, None, None, None, None, None, None) => Ok(Reply::Done),
            _ => Err(
                "a successful reply has state and vcpus, or balloon, or disks, or migration, or \
                 live_migration, or nothing, and no error"
                    .into(),
            ),
        }
    }
}

impl Reply {
    /// The reply as one line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"ok\":false}".to_string())
    }

    /// Parses one reply line.
    pub fn parse_line(line: &str) -> Result<Reply, String> {
        serde_json::from_str(line.trim()).map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_virtio::RequestStats;

    /// Each request line is refused with an error containing its phrase.
    #[track_caller]
    fn assert_refused(cases: &[(&str, &str)]) {
        for (bad, phrase) in cases {
            let err = Request::parse_line(bad).unwrap_err();
            assert!(err.0.contains(phrase), "{bad}: {err}");
        }
    }

    #[test]
    fn requests_parse_as_json_or_bare_words() {
        assert_eq!(
            Request::parse_line("{\"command\":\"pause\"}"),
            Ok(Request::Pause)
        );
        assert_eq!(Request::parse_line("resume\n"), Ok(Request::Resume));
        assert!(Request::parse_line("{\"cmd\":1}").is_err());
        assert!(Request::parse_line("rm -rf /").is_err());
        let unknown = Request::parse_line("{\"command\":\"reboot\"}").unwrap_err();
        assert_eq!(
            unknown.0,
            "unknown command \"reboot\" (status, pause, resume, poweroff, stop, save, save-fd, balloon, balloon-stats, balloon-stats-period, block-stats, migrate-send-fd, migrate-cancel, migrate-status, migrate-set-downtime)"
        );
        assert_eq!(Request::parse_line("reboot").unwrap_err(), unknown);
    }

    #[test]
    fn save_fd_carries_only_its_offset() {
        let save = Request::parse_line(r#"{"command":"save-fd","offset":4096}"#).unwrap();
        assert_eq!(save, Request::SaveFd { offset: 4096 });
        assert_eq!(Request::parse_line(&save.to_line()), Ok(save));
        let err =
            Request::parse_line(r#"{"command":"save-fd","path":"/x","offset":1}"#).unwrap_err();
        assert!(err.0.contains("offset\" only"), "{err}");
    }

    #[test]
    fn migrate_send_fd_carries_its_downtime_and_replies_with_a_report() {
        let send = Request::parse_line(r#"{"command":"migrate-send-fd","max_downtime_ms":50}"#);
        assert_eq!(
            send,
            Ok(Request::MigrateSendFd {
                max_downtime_ms: 50
            })
        );
        let send = send.unwrap();
        assert_eq!(Request::parse_line(&send.to_line()), Ok(send));
        assert_eq!(
            Request::parse_line("migrate-send-fd"),
            Ok(Request::MigrateSendFd {
                max_downtime_ms: DEFAULT_MAX_DOWNTIME_MS
            })
        );
        assert_eq!(
            Request::parse_line("migrate-cancel"),
            Ok(Request::MigrateCancel)
        );
        let err = Request::parse_line(r#"{"command":"migrate-send-fd","offset":1}"#).unwrap_err();
        assert!(err.0.contains("max_downtime_ms\" only"), "{err}");
        let err = Request::parse_line(r#"{"command":"pause","max_downtime_ms":1}"#).unwrap_err();
        assert!(err.0.contains("takes no max_downtime_ms"), "{err}");
        let report = Reply::Migrated(MigrationReport {
            passes: 3,
            bytes: 1 << 20,
            last_pass_bytes: 8192,
            paused_ms: 12,
        });
        assert_eq!(Reply::parse_line(&report.to_line()), Ok(report));
    }

    #[test]
    fn a_live_migration_is_followed_and_its_downtime_changed() {
        assert_eq!(
            Request::parse_line("migrate-status"),
            Ok(Request::MigrateStatus)
        );
        let set =
            Request::parse_line(r#"{"command":"migrate-set-downtime","max_downtime_ms":2000}"#);
        assert_eq!(
            set,
            Ok(Request::MigrateSetDowntime {
                max_downtime_ms: 2000
            })
        );
        let set = set.unwrap();
        assert_eq!(
            set.to_line(),
            r#"{"command":"migrate-set-downtime","max_downtime_ms":2000}"#
        );
        assert_eq!(Request::parse_line(&set.to_line()), Ok(set));
        assert_refused(&[
            ("migrate-set-downtime", "needs a downtime"),
            (
                r#"{"command":"migrate-set-downtime"}"#,
                "takes \"max_downtime_ms\"",
            ),
            (
                r#"{"command":"migrate-set-downtime","max_downtime_ms":1,"seconds":1}"#,
                "and only that",
            ),
            (
                r#"{"command":"migrate-status","max_downtime_ms":1}"#,
                "takes no max_downtime_ms",
            ),
        ]);
        let progress = Reply::LiveMigration(LiveProgress {
            passes: 2,
            ram_bytes: 73400320,
            dirty_bytes: 4194304,
            dirty_rate: 8388608,
            max_downtime_ms: 300,
        });
        assert_eq!(
            progress.to_line(),
            r#"{"ok":true,"live_migration":{"passes":2,"ram_bytes":73400320,"dirty_bytes":4194304,"dirty_rate":8388608,"max_downtime_ms":300}}"#
        );
        assert_eq!(Reply::parse_line(&progress.to_line()), Ok(progress));
        assert!(
            Reply::parse_line(r#"{"ok":true,"live_migration":{"passes":1},"vcpus":1}"#).is_err()
        );
    }

    #[test]
    fn save_carries_its_file_and_offset() {
        let save = Request::parse_line(r#"{"command":"save","path":"/x/state","offset":4096}"#);
        assert_eq!(
            save,
            Ok(Request::Save {
                path: "/x/state".into(),
                offset: 4096
            })
        );
        let line = save.unwrap().to_line();
        assert_eq!(
            line,
            r#"{"command":"save","path":"/x/state","offset":4096}"#
        );
        assert_refused(&[
            ("save", "needs a path and an offset"),
            (r#"{"command":"save"}"#, "needs \"path\""),
            (r#"{"command":"save","path":"rel"}"#, "not absolute"),
            (
                r#"{"command":"pause","offset":1}"#,
                "takes no path or offset",
            ),
            (
                r#"{"command":"save","path":"/x","offset":-1}"#,
                "invalid request",
            ),
        ]);
    }

    #[test]
    fn balloon_requests_carry_their_target_and_period() {
        for (line, request) in [
            (
                r#"{"command":"balloon","target_kib":131072}"#,
                Request::Balloon { target_kib: 131072 },
            ),
            (r#"{"command":"balloon-stats"}"#, Request::BalloonStats),
            (
                r#"{"command":"balloon-stats-period","seconds":5}"#,
                Request::BalloonStatsPeriod { seconds: 5 },
            ),
        ] {
            assert_eq!(Request::parse_line(line), Ok(request.clone()));
            assert_eq!(request.to_line(), line);
        }
        assert_refused(&[
            ("balloon", "needs a target"),
            (r#"{"command":"balloon"}"#, "takes \"target_kib\""),
            (
                r#"{"command":"balloon","seconds":1}"#,
                "takes \"target_kib\"",
            ),
            (
                r#"{"command":"balloon-stats-period","target_kib":1}"#,
                "takes \"seconds\"",
            ),
            (
                r#"{"command":"balloon","target_kib":1,"path":"/x"}"#,
                "takes no path",
            ),
            (
                r#"{"command":"pause","seconds":1}"#,
                "takes no target_kib or seconds",
            ),
            (
                r#"{"command":"balloon","target_kib":-1}"#,
                "invalid request",
            ),
        ]);
        let report = Reply::Balloon(BalloonReport {
            actual_kib: 200,
            target_kib: 100,
            stats_period_s: 0,
            guest: vec![("unused".into(), 5)],
            last_update: Some(9),
        });
        assert_eq!(
            report.to_line(),
            r#"{"ok":true,"balloon":{"actual_kib":200,"target_kib":100,"stats_period_s":0,"guest":[["unused",5]],"last_update":9}}"#
        );
        assert_eq!(Reply::parse_line(&report.to_line()), Ok(report));
    }

    #[test]
    fn requests_are_written_as_the_server_reads_them() {
        let simple = [
            Request::Status,
            Request::Pause,
            Request::Resume,
            Request::Poweroff,
            Request::Stop,
        ];
        for (request, name) in simple.into_iter().zip(NAMES) {
            assert_eq!(request.to_line(), format!("{{\"command\":\"{name}\"}}"));
            assert_eq!(serde_json::to_string(&request).unwrap(), request.to_line());
            assert_eq!(Request::parse_line(&request.to_line()), Ok(request.clone()));
        }
    }

    #[test]
    fn replies_keep_their_wire_format() {
        assert_eq!(Reply::Done.to_line(), "{\"ok\":true}");
        assert_eq!(
            Reply::Refused { error: "x".into() }.to_line(),
            "{\"ok\":false,\"error\":\"x\"}"
        );
        let status = Reply::Status {
            state: RunState::Running,
            vcpus: 2,
        };
        assert_eq!(
            status.to_line(),
            "{\"ok\":true,\"state\":\"running\",\"vcpus\":2}"
        );
        for reply in [Reply::Done, status, Reply::Refused { error: "no".into() }] {
            assert_eq!(Reply::parse_line(&reply.to_line()), Ok(reply));
        }
        // A VM started paused, before its first instruction (`start_paused`).
        assert_eq!(
            Reply::parse_line("{\"ok\":true,\"state\":\"created\",\"vcpus\":1}"),
            Ok(Reply::Status {
                state: RunState::Created,
                vcpus: 1
            })
        );
        assert!(Reply::parse_line("{\"ok\":true,\"state\":\"running\"}").is_err());
        assert!(Reply::parse_line("{\"ok\":true,\"extra\":1}").is_err());
    }

    #[test]
    fn block_stats_asks_for_every_disk_and_the_reply_carries_their_counters() {
        assert_eq!(Request::parse_line("block-stats"), Ok(Request::BlockStats));
        assert_eq!(
            Request::parse_line(r#"{"command":"block-stats"}"#),
            Ok(Request::BlockStats)
        );
        assert_eq!(
            Request::BlockStats.to_line(),
            r#"{"command":"block-stats"}"#
        );
        let err = Request::parse_line(r#"{"command":"block-stats","seconds":1}"#).unwrap_err();
        assert!(err.0.contains("takes no target_kib or seconds"), "{err}");
        let reply = Reply::Block(vec![
            DiskStats {
                index: 0,
                id: Some("vda".into()),
                counters: BlockStats {
                    read: RequestStats {
                        requests: 3,
                        bytes: 1536,
                        total_ns: 10,
                    },
                    write: RequestStats {
                        requests: 1,
                        bytes: 512,
                        total_ns: 20,
                    },
                    flush: RequestStats {
                        requests: 1,
                        bytes: 0,
                        total_ns: 30,
                    },
                },
            },
            DiskStats {
                index: 1,
                ..DiskStats::default()
            },
        ]);
        let line = reply.to_line();
        assert_eq!(
            line,
            r#"{"ok":true,"disks":[{"index":0,"id":"vda","read":{"requests":3,"bytes":1536,"total_ns":10},"write":{"requests":1,"bytes":512,"total_ns":20},"flush":{"requests":1,"bytes":0,"total_ns":30}},{"index":1,"read":{"requests":0,"bytes":0,"total_ns":0},"write":{"requests":0,"bytes":0,"total_ns":0},"flush":{"requests":0,"bytes":0,"total_ns":0}}]}"#
        );
        assert_eq!(Reply::parse_line(&line), Ok(reply));
        // No disks is an empty list, not a plain success.
        assert_eq!(
            Reply::parse_line(r#"{"ok":true,"disks":[]}"#),
            Ok(Reply::Block(Vec::new()))
        );
        assert!(Reply::parse_line(r#"{"ok":true,"disks":[],"vcpus":1}"#).is_err());
        // A counter this side does not know yet is ignored; a missing one is an error.
        let zero = r#"{"requests":0,"bytes":0,"total_ns":0}"#;
        let newer = format!(
            r#"{{"ok":true,"disks":[{{"index":0,"read":{zero},"write":{zero},"flush":{{"requests":8,"bytes":0,"total_ns":0}},"discard":{zero}}}]}}"#
        );
        let Ok(Reply::Block(disks)) = Reply::parse_line(&newer) else {
            panic!("{newer}");
        };
        assert_eq!(disks[0].counters.flush.requests, 8);
        let missing = format!(r#"{{"ok":true,"disks":[{{"index":0,"read":{zero}}}]}}"#);
        assert!(Reply::parse_line(&missing).is_err());
    }
}
