//! `event` and `qemu-monitor-event`: oxvirtd's event stream (`GET /v1/events`) printed as
//! virsh prints domain events, one line each as it comes; and `domtime`, which virsh answers
//! through the QEMU guest agent, refused (oxvirt has no guest agent channel).
//!
//! As virsh: without `--loop` the first event ends the wait; `--timeout S` ends it after S
//! seconds ("event loop timed out"), Ctrl-C at once ("event loop interrupted"); then
//! "events received: N", and the exit status is 1 when N is 0 (with no error message).

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use oxvirt_api::json_text::{compact, indent};
use oxvirt_api::{
    Client, Event, EventBody, EventFilter, EventKind, LifecycleEvent, MonitorEvent, StreamItem,
};

use crate::commands::block_on;

/// The event types virsh's `event` knows, in its order (`event --list`); oxvirt delivers
/// the first.
const VIRSH_EVENT_TYPES: &[&str] = &[
    "lifecycle",
    "reboot",
    "rtc-change",
    "watchdog",
    "io-error",
    "graphics",
    "io-error-reason",
    "control-error",
    "block-job",
    "disk-change",
    "tray-change",
    "pm-wakeup",
    "pm-suspend",
    "balloon-change",
    "pm-suspend-disk",
    "device-removed",
    "block-job-2",
    "tunable",
    "agent-lifecycle",
    "device-added",
    "migration-iteration",
    "job-completed",
    "device-removal-failed",
    "metadata-change",
    "block-threshold",
    "memory-failure",
    "memory-device-size-change",
    "nic-mac-change",
];

/// The event types oxvirt delivers.
const DELIVERED: &[&str] = &["lifecycle"];

#[derive(Subcommand, Debug)]
pub enum EventCommand {
    /// List event types, or wait for domain events and print them as they occur (virsh's
    /// `event`). Without --event or --all it waits for lifecycle events (virsh asks for one of
    /// them).
    Event(EventArgs),
    /// Wait for the QEMU monitor events of running domains and print them as they occur, with
    /// QEMU's timestamp and data.
    QemuMonitorEvent(MonitorEventArgs),
    /// The guest's clock (virsh asks the QEMU guest agent): refused, oxvirt has no guest agent
    /// channel.
    Domtime(DomtimeArgs),
}

/// What `event` and `qemu-monitor-event` share: which domain, and how long to wait.
#[derive(Args, Debug, Clone)]
pub struct Wait {
    /// Only this domain's events (name, UUID or id).
    #[arg(long)]
    pub domain: Option<String>,
    /// Go on after the first event, until the timeout or Ctrl-C.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Stop waiting after this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    pub timeout: Option<u64>,
    /// Start each event's line with its time (UTC, milliseconds).
    #[arg(long)]
    pub timestamp: bool,
}

#[derive(Args, Debug)]
pub struct EventArgs {
    #[command(flatten)]
    pub wait: Wait,
    /// Which event type to wait for (see --list).
    #[arg(long, conflicts_with_all = ["all", "list"])]
    pub event: Option<String>,
    /// Every event type.
    #[arg(long, conflicts_with = "list")]
    pub all: bool,
    /// List the event types and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug)]
pub struct MonitorEventArgs {
    #[command(flatten)]
    pub wait: Wait,
    /// Only events of this name (e.g. STOP); all without it.
    #[arg(long)]
    pub event: Option<String>,
    /// Print each event's data as indented JSON.
    #[arg(long)]
    pub pretty: bool,
    /// --event is a regular expression, matched anywhere in the name.
    #[arg(long, requires = "event")]
    pub regex: bool,
    /// --event matches regardless of case.
    #[arg(long = "no-case", requires = "event")]
    pub no_case: bool,
}

#[derive(Args, Debug)]
pub struct DomtimeArgs {
    /// Domain name, UUID or id.
    pub domain: String,
    /// Set the guest's time to the host's.
    #[arg(long)]
    pub now: bool,
    /// Print the time as a date.
    #[arg(long)]
    pub pretty: bool,
    /// Set the guest's time from its RTC.
    #[arg(long)]
    pub sync: bool,
    /// Set the guest's time to this many seconds since the epoch.
    #[arg(long)]
    pub time: Option<i64>,
}

/// The wait ended with no event: virsh exits 1 then, saying nothing more than what it printed.
#[derive(Debug)]
pub struct NoEvents;

impl std::fmt::Display for NoEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no event received")
    }
}

impl std::error::Error for NoEvents {}

pub fn run(client: &Client, command: EventCommand) -> anyhow::Result<()> {
    match command {
        EventCommand::Event(args) => event(client, args),
        EventCommand::QemuMonitorEvent(args) => monitor_event(client, args),
        EventCommand::Domtime(args) => domtime(client, &args),
    }
}

fn event(client: &Client, args: EventArgs) -> anyhow::Result<()> {
    if args.list {
        let mut out = DELIVERED.join("\n");
        out.push_str("\n\n");
        return write_out(&out);
    }
    if let Some(name) = &args.event {
        if !DELIVERED.contains(&name.as_str()) {
            if VIRSH_EVENT_TYPES.contains(&name.as_str()) {
                bail!(
                    "event type {name} is not delivered by oxvirt (it delivers: {})",
                    DELIVERED.join(", ")
                );
            }
            bail!("unknown event type {name}");
        }
    }
    let filter = EventFilter {
        domain: args.wait.domain.clone(),
        kind: Some(EventKind::Lifecycle),
        ..EventFilter::default()
    };
    follow(client, &filter, &args.wait, false)
}

fn monitor_event(client: &Client, args: MonitorEventArgs) -> anyhow::Result<()> {
    let filter = EventFilter {
        domain: args.wait.domain.clone(),
        kind: Some(EventKind::Monitor),
        event: args.event.clone(),
        regex: args.regex,
        nocase: args.no_case,
    };
    follow(client, &filter, &args.wait, args.pretty)
}

fn domtime(client: &Client, args: &DomtimeArgs) -> anyhow::Result<()> {
    // A domain that does not exist is that error first.
    let domain = block_on(client.domain_info(&args.domain))??;
    bail!(
        "cannot get or set the time of domain '{}': domtime needs the QEMU guest agent in the \
         guest, and oxvirt has no guest agent channel support (no org.qemu.guest_agent.0 \
         channel)",
        domain.name
    )
}

/// How a wait ended.
enum Ended {
    /// Without --loop: the first event came.
    Done,
    TimedOut,
    Interrupted,
    /// oxvirtd closed the stream (it stopped).
    Closed,
}

/// Subscribes with `filter`, prints each event as it comes (flushed: a reader sees it at
/// once; monitor events' data indented with `pretty`), until `wait` says to stop; then virsh's
/// closing lines.
fn follow(client: &Client, filter: &EventFilter, wait: &Wait, pretty: bool) -> anyhow::Result<()> {
    let mut count = 0u64;
    let ended = block_on(async {
        let mut stream = client.events(filter).await?;
        let deadline = wait
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = &mut expired => return Ok(Ended::TimedOut),
                _ = tokio::signal::ctrl_c() => return Ok(Ended::Interrupted),
            };
            match next {
                None => return Ok(Ended::Closed),
                Some(Err(err)) => return Err(anyhow::Error::from(err)),
                Some(Ok(StreamItem::Lagged(missed))) => {
                    // Not virsh's (libvirt never drops events), but the user must know.
                    let _ = writeln!(
                        std::io::stderr(),
                        "warning: this client read too slowly and missed {missed} events"
                    );
                }
                Some(Ok(StreamItem::Event(event))) => {
                    write_out(&event_line(&event, pretty, wait.timestamp))?;
                    count += 1;
                    if !wait.looping {
                        return Ok(Ended::Done);
                    }
                }
            }
        }
    })??;
    let mut out = String::new();
    match ended {
        Ended::Done => {}
        Ended::TimedOut => out.push_str("event loop timed out\n"),
        Ended::Interrupted => out.push_str("event loop interrupted\n"),
        Ended::Closed => {
            write_out(&format!("events received: {count}\n\n"))?;
            bail!("oxvirtd closed the event stream (it stopped)");
        }
    }
    out.push_str(&format!("events received: {count}\n\n"));
    write_out(&out)?;
    if count == 0 {
        return Err(NoEvents.into());
    }
    Ok(())
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// virsh's line of `event`.
fn event_line(event: &Event, pretty: bool, timestamp: bool) -> String {
    match &event.body {
        EventBody::Lifecycle(lifecycle) => lifecycle_line(&event.domain, lifecycle, timestamp),
        EventBody::Monitor(monitor) => monitor_line(&event.domain, monitor, pretty, timestamp),
    }
}

/// virsh's line of a lifecycle event; with `timestamp`, prefixed with the time it is printed
/// (virsh's: when it received it).
fn lifecycle_line(domain: &str, event: &LifecycleEvent, timestamp: bool) -> String {
    let line = format!(
        "event 'lifecycle' for domain '{domain}': {} {}\n",
        event.event.as_str(),
        event.detail.as_str()
    );
    if !timestamp {
        return line;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = i64::try_from(now.as_millis()).unwrap_or(0);
    format!("{}: {line}", utc_millis(millis))
}

/// virsh's line of a QEMU monitor event: with QEMU's timestamp as seconds.micros, or with
/// `timestamp` as a date first; its data compact in QEMU's order or indented (`pretty`), or
/// `<null>` when it has none.
fn monitor_line(domain: &str, event: &MonitorEvent, pretty: bool, timestamp: bool) -> String {
    let data = match &event.data {
        Some(data) if pretty => indent(data),
        Some(data) => compact(data),
        None => "<null>".to_string(),
    };
    if timestamp {
        let millis = event
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(event.microseconds / 1000));
        format!(
            "{}: event {} for domain '{domain}': {data}\n",
            utc_millis(millis),
            event.event
        )
    } else {
        format!(
            "event {} at {}.{:06} for domain '{domain}': {data}\n",
            event.event, event.seconds, event.microseconds
        )
    }
}

/// "YYYY-MM-DD HH:MM:SS.mmm+0000": libvirt's time strings (always UTC).
fn utc_millis(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    let Ok(time) = jiff::Timestamp::from_second(seconds) else {
        return millis.to_string();
    };
    let date = jiff::tz::TimeZone::UTC
        .to_datetime(time)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    format!("{date}.{:03}+0000", millis.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::{Lifecycle, LifecycleDetail};

    #[test]
    fn lines_are_virshs() {
        let line = |event, detail| lifecycle_line("web", &LifecycleEvent { event, detail }, false);
        assert_eq!(
            line(Lifecycle::Started, LifecycleDetail::Booted),
            "event 'lifecycle' for domain 'web': Started Booted\n"
        );
        assert_eq!(
            line(
                Lifecycle::Shutdown,
                LifecycleDetail::FinishedAfterGuestRequest
            ),
            "event 'lifecycle' for domain 'web': Shutdown Finished after guest request\n"
        );
        let monitor = |event: &str, seconds, microseconds, data: Option<&str>| MonitorEvent {
            event: event.into(),
            seconds,
            microseconds,
            data: data.map(str::to_string),
        };
        let stop = monitor("STOP", 1_700_000_000, 42, None);
        let data = r#"{"guest":false,"reason":"host-qmp-quit"}"#;
        let shutdown = monitor("SHUTDOWN", 5, 123_456, Some(data));
        // (event, --pretty, --timestamp, virsh's line)
        let cases = [
            (&stop, false, false, "event STOP at 1700000000.000042 for domain 'web': <null>\n"),
            (&stop, false, true, "2023-11-14 22:13:20.000+0000: event STOP for domain 'web': <null>\n"),
            (&shutdown, false, false, "event SHUTDOWN at 5.123456 for domain 'web': {\"guest\":false,\"reason\":\"host-qmp-quit\"}\n"),
            (&shutdown, true, false, "event SHUTDOWN at 5.123456 for domain 'web': {\n  \"guest\": false,\n  \"reason\": \"host-qmp-quit\"\n}\n"),
        ];
        for (event, pretty, timestamp, line) in cases {
            assert_eq!(monitor_line("web", event, pretty, timestamp), line);
        }
    }

    #[test]
    fn timestamps_are_libvirts() {
        assert_eq!(utc_millis(0), "1970-01-01 00:00:00.000+0000");
        assert_eq!(
            utc_millis(1_700_000_000_123),
            "2023-11-14 22:13:20.123+0000"
        );
    }
}
