//! The daemon's event bus: every domain event (lifecycle changes, the guest's QEMU monitor
//! events) goes to one bounded broadcast channel, and each `GET /v1/events` subscriber reads
//! its own receiver of it. A publisher never waits: a subscriber that falls more than
//! [`CAPACITY`] events behind loses the oldest ones, and its receiver says how many (the API
//! tells the client, `lagged`), while the others and the daemon go on.
//!
//! Who publishes what, one place per transition: `define`/`edit` (Defined) and `undefine`
//! (Undefined) in domains.rs; a start in `Domains::attach_new` (Started); a stop in the
//! supervisor's `finish` (Stopped, with why); every other state change through
//! `Guests::set_state` ([`lifecycle_of`]: Suspended, Resumed, Shutdown, Crashed); the
//! monitor's events as the supervisor receives them from the engine.

use oxvirt_api::{
    Event, EventBody, EventFilter, EventKind, Lifecycle, LifecycleDetail, LifecycleEvent,
    MonitorEvent,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::error::{bad_request, DaemonResult};

/// How many events a subscriber may fall behind before it loses some.
pub const CAPACITY: usize = 512;

/// The one channel every domain event goes through.
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends `body` about domain `name` to every subscriber; never waits.
    pub fn publish(&self, name: &str, uuid: &Uuid, body: EventBody) {
        tracing::debug!(domain = %name, ?body, "event");
        // An error only means nobody subscribes now.
        let _ = self.sender.send(Event {
            domain: name.to_string(),
            uuid: uuid.to_string(),
            body,
        });
    }

    pub fn lifecycle(&self, name: &str, uuid: &Uuid, event: Lifecycle, detail: LifecycleDetail) {
        self.publish(
            name,
            uuid,
            EventBody::Lifecycle(LifecycleEvent { event, detail }),
        );
    }

    pub fn monitor(&self, name: &str, uuid: &Uuid, event: MonitorEvent) {
        self.publish(name, uuid, EventBody::Monitor(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// A new subscriber of the events `filter` lets through (its domain already found:
    /// `uuid`): its name pattern compiled before any event, and its receiver.
    pub fn subscribe_with(
        &self,
        filter: &EventFilter,
        uuid: Option<&Uuid>,
    ) -> DaemonResult<(Subscription, broadcast::Receiver<Event>)> {
        let name = match &filter.event {
            None => None,
            Some(name) if filter.regex => Some(NameMatch::Pattern(
                regex::RegexBuilder::new(name)
                    .case_insensitive(filter.nocase)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| bad_request(format!("bad event name pattern '{name}': {e}")))?,
            )),
            Some(name) if filter.nocase => Some(NameMatch::NoCase(name.clone())),
            Some(name) => Some(NameMatch::Exact(name.clone())),
        };
        // Subscribed last: a refused filter leaves no receiver behind.
        let subscription = Subscription {
            uuid: uuid.map(Uuid::to_string),
            kind: filter.kind,
            name,
        };
        Ok((subscription, self.subscribe()))
    }
}

/// The lifecycle event of a running domain's change of state to `state` for `reason` (the
/// runtime reasons services record), if libvirt reports one. A guest's machine stopping on
/// the host's request (destroy, save) has none: its stop is the event.
pub fn lifecycle_of(
    state: oxvirt_api::DomainState,
    reason: &str,
) -> Option<(Lifecycle, LifecycleDetail)> {
    use oxvirt_api::DomainState as S;
    let snapshot = reason == "from snapshot";
    match state {
        S::Paused if snapshot => Some((Lifecycle::Suspended, LifecycleDetail::Snapshot)),
        S::Paused => Some((Lifecycle::Suspended, LifecycleDetail::Paused)),
        S::Running if snapshot => Some((Lifecycle::Resumed, LifecycleDetail::Snapshot)),
        S::Running => Some((Lifecycle::Resumed, LifecycleDetail::Unpaused)),
        S::InShutdown if reason == "shutdown" => Some((
            Lifecycle::Shutdown,
            LifecycleDetail::FinishedAfterGuestRequest,
        )),
        S::Crashed => Some((Lifecycle::Crashed, LifecycleDetail::Panicked)),
        S::InShutdown | S::ShutOff | S::PmSuspended => None,
    }
}

/// The Stopped event's detail for the supervisor's stop reason; `panicked`: the guest
/// reported a panic before it ended.
pub fn stopped_detail(reason: &str, panicked: bool) -> LifecycleDetail {
    match reason {
        "destroyed" => LifecycleDetail::Destroyed,
        "saved" => LifecycleDetail::Saved,
        "migrated" => LifecycleDetail::Migrated,
        "shutdown" => LifecycleDetail::Shutdown,
        _ if panicked => LifecycleDetail::Crashed,
        _ => LifecycleDetail::Failed,
    }
}

/// What one subscriber asked for, checked: its domain found, its name pattern compiled.
pub struct Subscription {
    uuid: Option<String>,
    kind: Option<EventKind>,
    name: Option<NameMatch>,
}

enum NameMatch {
    Exact(String),
    NoCase(String),
    Pattern(regex::Regex),
}

impl Subscription {
    /// Whether this subscriber wants `event`.
    pub fn wants(&self, event: &Event) -> bool {
        if self.uuid.as_ref().is_some_and(|uuid| *uuid != event.uuid) {
            return false;
        }
        if self.kind.is_some_and(|kind| kind != event.body.kind()) {
            return false;
        }
        match (&self.name, &event.body) {
            (None, _) => true,
            // Only monitor events have names to match.
            (Some(_), EventBody::Lifecycle(_)) => false,
            (Some(NameMatch::Exact(name)), EventBody::Monitor(m)) => m.event == *name,
            (Some(NameMatch::NoCase(name)), EventBody::Monitor(m)) => {
                m.event.eq_ignore_ascii_case(name)
            }
            (Some(NameMatch::Pattern(re)), EventBody::Monitor(m)) => re.is_match(&m.event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::DomainState;

    fn monitor_body(name: &str) -> MonitorEvent {
        MonitorEvent {
            event: name.into(),
            seconds: 1,
            microseconds: 0,
            data: None,
        }
    }

    fn monitor(name: &str) -> Event {
        Event {
            domain: "d".into(),
            uuid: "u".into(),
            body: EventBody::Monitor(monitor_body(name)),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_missed_and_holds_no_one_up() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        for i in 0..CAPACITY + 10 {
            bus.monitor("d", &Uuid::nil(), monitor_body(&format!("E{i}")));
            assert!(fast.recv().await.is_ok());
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
        assert!(slow.recv().await.is_ok());
    }

    #[test]
    fn names_match_exactly_without_case_or_by_pattern() {
        let sub = |name: NameMatch| Subscription {
            uuid: None,
            kind: None,
            name: Some(name),
        };
        assert!(sub(NameMatch::Exact("STOP".into())).wants(&monitor("STOP")));
        assert!(!sub(NameMatch::Exact("stop".into())).wants(&monitor("STOP")));
        assert!(sub(NameMatch::NoCase("stop".into())).wants(&monitor("STOP")));
        let re = regex::Regex::new("^(STOP|RESUME)$").unwrap();
        assert!(sub(NameMatch::Pattern(re.clone())).wants(&monitor("RESUME")));
        assert!(!sub(NameMatch::Pattern(re)).wants(&monitor("SHUTDOWN")));
        let started = LifecycleEvent {
            event: Lifecycle::Started,
            detail: LifecycleDetail::Booted,
        };
        let lifecycle = Event {
            body: EventBody::Lifecycle(started),
            ..monitor("none")
        };
        assert!(!sub(NameMatch::Exact("STOP".into())).wants(&lifecycle));
        let other_domain = Subscription {
            uuid: Some("v".into()),
            kind: None,
            name: None,
        };
        assert!(!other_domain.wants(&lifecycle));
    }

    #[test]
    fn state_changes_map_to_libvirts_events() {
        assert_eq!(
            lifecycle_of(DomainState::Paused, "user"),
            Some((Lifecycle::Suspended, LifecycleDetail::Paused))
        );
        assert_eq!(
            lifecycle_of(DomainState::Running, "unpaused"),
            Some((Lifecycle::Resumed, LifecycleDetail::Unpaused))
        );
        assert_eq!(lifecycle_of(DomainState::InShutdown, "destroyed"), None);
        assert_eq!(stopped_detail("crashed", false), LifecycleDetail::Failed);
        assert_eq!(stopped_detail("crashed", true), LifecycleDetail::Crashed);
    }
}
