//! The event stream: wire types and [`Client`] calls (virsh's `event` and
//! `qemu-monitor-event`).
//!
//! | method + path     | query           | reply                                   |
//! |-------------------|-----------------|-----------------------------------------|
//! | `GET /v1/events`  | [`EventFilter`] | `text/event-stream`: [`Event`]s as SSE  |
//!
//! Each Server-Sent Event's `data:` line is one [`Event`] as JSON. A subscriber that reads
//! too slowly is not waited for: the events it could not take are dropped for it alone, and it
//! gets one SSE event named `lagged` whose data is a [`Lagged`] saying how many it missed.
//! A filter naming a domain that does not exist is refused (404) before the stream starts.

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{percent_encode_segment, Client, ClientError};

/// One event of one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// The domain's name when the event happened.
    pub domain: String,
    pub uuid: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened: a lifecycle change (virsh `event`'s `lifecycle`) or an event of the guest's
/// QEMU monitor (virsh `qemu-monitor-event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EventBody {
    Lifecycle(LifecycleEvent),
    Monitor(MonitorEvent),
}

/// The two kinds of events, as `?kind=` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Lifecycle,
    Monitor,
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Lifecycle(_) => EventKind::Lifecycle,
            EventBody::Monitor(_) => EventKind::Monitor,
        }
    }
}

/// A domain lifecycle event, libvirt's event type and detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleEvent {
    pub event: Lifecycle,
    pub detail: LifecycleDetail,
}

/// libvirt's lifecycle event types (`virDomainEventType`), in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Lifecycle {
    Defined,
    Undefined,
    Started,
    Suspended,
    Resumed,
    Stopped,
    Shutdown,
    #[serde(rename = "PMSuspended")]
    PmSuspended,
    Crashed,
}

impl Lifecycle {
    /// The word virsh prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Defined => "Defined",
            Lifecycle::Undefined => "Undefined",
            Lifecycle::Started => "Started",
            Lifecycle::Suspended => "Suspended",
            Lifecycle::Resumed => "Resumed",
            Lifecycle::Stopped => "Stopped",
            Lifecycle::Shutdown => "Shutdown",
            Lifecycle::PmSuspended => "PMSuspended",
            Lifecycle::Crashed => "Crashed",
        }
    }
}

/// The details oxvirt reports, each as libvirt names it for its event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LifecycleDetail {
    /// Defined: a new domain.
    Added,
    /// Defined: a new definition of an existing domain.
    Updated,
    /// Undefined.
    Removed,
    /// Started: a normal boot.
    Booted,
    /// Started: from a save image (restore, a managed save).
    Restored,
    /// Started, Suspended, Resumed: by a snapshot revert.
    Snapshot,
    /// Suspended: paused by the user (or QEMU's monitor).
    Paused,
    /// Resumed: the user let it run again.
    Unpaused,
    /// Stopped: the guest shut down.
    Shutdown,
    /// Stopped: destroyed.
    Destroyed,
    /// Stopped: after a guest crash.
    Crashed,
    /// Stopped: its state was saved (save, managedsave).
    Saved,
    /// Started: migrated in from another oxvirtd; Stopped: migrated away to another.
    Migrated,
    /// Stopped: its process ended unexpectedly.
    Failed,
    /// Shutdown: the guest asked to power off; its process ends next.
    FinishedAfterGuestRequest,
    /// Shutdown: the host asked the guest's machine to power off.
    FinishedAfterHostRequest,
    /// Crashed: the guest reported a kernel panic.
    Panicked,
}

impl LifecycleDetail {
    /// The words virsh prints.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleDetail::Added => "Added",
            LifecycleDetail::Updated => "Updated",
            LifecycleDetail::Removed => "Removed",
            LifecycleDetail::Booted => "Booted",
            LifecycleDetail::Restored => "Restored",
            LifecycleDetail::Snapshot => "Snapshot",
            LifecycleDetail::Paused => "Paused",
            LifecycleDetail::Unpaused => "Unpaused",
            LifecycleDetail::Shutdown => "Shutdown",
            LifecycleDetail::Destroyed => "Destroyed",
            LifecycleDetail::Crashed => "Crashed",
            LifecycleDetail::Saved => "Saved",
            LifecycleDetail::Migrated => "Migrated",
            LifecycleDetail::Failed => "Failed",
            LifecycleDetail::FinishedAfterGuestRequest => "Finished after guest request",
            LifecycleDetail::FinishedAfterHostRequest => "Finished after host request",
            LifecycleDetail::Panicked => "Panicked",
        }
    }
}

/// An event of the guest's QEMU monitor, every one QEMU sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorEvent {
    /// QEMU's name, e.g. `STOP`.
    pub event: String,
    /// QEMU's timestamp: seconds and microseconds since the epoch.
    pub seconds: i64,
    pub microseconds: u32,
    /// The event's `data` member as compact JSON in QEMU's member order (libvirt's "details"),
    /// or `None` when the event has none.
    pub data: Option<String>,
}

/// The query of `GET /v1/events`: which events to send (all, without any). Any member may
/// be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(default)]
pub struct EventFilter {
    /// Only this domain's (name or UUID).
    pub domain: Option<String>,
    pub kind: Option<EventKind>,
    /// Only monitor events of this name (lifecycle events have none and are not sent).
    pub event: Option<String>,
    /// `event` is a regular expression, matched anywhere in the name.
    pub regex: bool,
    /// `event` matches without regard to case.
    pub nocase: bool,
}

/// Data of the SSE event `lagged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lagged {
    pub missed: u64,
}

/// What the stream gives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Event(Event),
    /// This subscriber read too slowly and missed this many events.
    Lagged(u64),
}

/// The SSE event name of [`Lagged`].
pub const LAGGED: &str = "lagged";

/// An open event stream ([`Client::events`]).
pub struct EventStream {
    socket: std::path::PathBuf,
    body: Incoming,
    buffer: Vec<u8>,
}

/// One SSE event is at most this long; a longer one is a protocol error (QMP lines are
/// bounded by the daemon's QMP reader).
const MAX_SSE_EVENT: usize = 32 * 1024 * 1024;

impl EventStream {
    /// The next event; `None` once the daemon closed the stream.
    pub async fn next(&mut self) -> Option<Result<StreamItem, ClientError>> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end.1).collect();
                match parse_block(&block[..end.0]) {
                    Ok(Some(item)) => return Some(Ok(item)),
                    Ok(None) => continue,
                    Err(detail) => {
                        return Some(Err(ClientError::Protocol {
                            socket: self.socket.clone(),
                            detail,
                        }))
                    }
                }
            }
            if self.buffer.len() > MAX_SSE_EVENT {
                return Some(Err(ClientError::Protocol {
                    socket: self.socket.clone(),
                    detail: "an event of the stream is too long".to_string(),
                }));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(err) => {
                    return Some(Err(ClientError::Protocol {
                        socket: self.socket.clone(),
                        detail: format!("reading the event stream: {err}"),
                    }))
                }
            }
        }
    }
}

/// Where the first SSE event in `buffer` ends: (its text's end, past the blank line).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2))
}

/// One SSE event block: its `event:` name and `data:` lines (comments and other fields
/// skipped); `None` for a block without data (a keep-alive).
fn parse_block(block: &[u8]) -> Result<Option<StreamItem>, String> {
    let text = std::str::from_utf8(block).map_err(|e| format!("event stream: {e}"))?;
    let mut name = "message";
    let mut data = String::new();
    for line in text.split('\n') {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim_start();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    if name == LAGGED {
        let lagged: Lagged =
            serde_json::from_str(&data).map_err(|e| format!("event stream: {e}: {data}"))?;
        return Ok(Some(StreamItem::Lagged(lagged.missed)));
    }
    let event: Event =
        serde_json::from_str(&data).map_err(|e| format!("event stream: {e}: {data}"))?;
    Ok(Some(StreamItem::Event(event)))
}

impl EventFilter {
    /// The query string (`?a=b&...`, or empty).
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(domain) = &self.domain {
            parts.push(format!("domain={}", percent_encode_segment(domain)));
        }
        if let Some(kind) = self.kind {
            parts.push(format!(
                "kind={}",
                match kind {
                    EventKind::Lifecycle => "lifecycle",
                    EventKind::Monitor => "monitor",
                }
            ));
        }
        if let Some(event) = &self.event {
            parts.push(format!("event={}", percent_encode_segment(event)));
        }
        if self.regex {
            parts.push("regex=true".to_string());
        }
        if self.nocase {
            parts.push("nocase=true".to_string());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

impl Client {
    /// `GET /v1/events`: the events `filter` lets through, from now on, until the stream is
    /// dropped. A filter oxvirtd refuses (a domain that does not exist, a bad pattern) is an
    /// error here, before any event.
    pub async fn events(&self, filter: &EventFilter) -> Result<EventStream, ClientError> {
        let path = format!("/v1/events{}", filter.query());
        let body = http_body_util::Empty::<Bytes>::new();
        let response = self.send(Method::GET, &path, body, None).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let bytes = self.reply_body(&path, response).await?;
            return Err(self.error_reply(&path, status, &bytes));
        }
        Ok(EventStream {
            socket: self.socket.clone(),
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_flat_json() {
        let event = Event {
            domain: "web".into(),
            uuid: "u".into(),
            body: EventBody::Lifecycle(LifecycleEvent {
                event: Lifecycle::Stopped,
                detail: LifecycleDetail::Destroyed,
            }),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"domain":"web","uuid":"u","kind":"lifecycle","event":"Stopped","detail":"destroyed"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        let monitor = Event {
            domain: "web".into(),
            uuid: "u".into(),
            body: EventBody::Monitor(MonitorEvent {
                event: "STOP".into(),
                seconds: 1,
                microseconds: 2,
                data: None,
            }),
        };
        let json = serde_json::to_string(&monitor).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), monitor);
    }

    #[test]
    fn sse_blocks_are_parsed() {
        assert_eq!(parse_block(b": keep-alive").unwrap(), None);
        assert_eq!(
            parse_block(b"event: lagged\ndata: {\"missed\":3}").unwrap(),
            Some(StreamItem::Lagged(3))
        );
        let item = parse_block(
            b"data: {\"domain\":\"a\",\"uuid\":\"u\",\"kind\":\"monitor\",\"event\":\"STOP\",\"seconds\":5,\"microseconds\":6,\"data\":null}",
        )
        .unwrap();
        assert!(matches!(item, Some(StreamItem::Event(e)) if e.domain == "a"));
        assert!(parse_block(b"data: {nope").is_err());
    }

    #[test]
    fn filters_become_a_query() {
        assert_eq!(EventFilter::default().query(), "");
        let filter = EventFilter {
            domain: Some("a b".into()),
            kind: Some(EventKind::Monitor),
            event: Some("STOP".into()),
            regex: true,
            nocase: true,
        };
        assert_eq!(
            filter.query(),
            "?domain=a%20b&kind=monitor&event=STOP&regex=true&nocase=true"
        );
    }
}
