//! `GET /metrics`: every domain's statistics, the same `domstats` the API serves under libvirt's names
//! (services/stats.rs), in the Prometheus text format (OpenMetrics, encoded by `prometheus-client`), and the
//! host's guests by state. Names follow Prometheus' conventions: base units (seconds, bytes), `_total` on
//! counters, a `domain` label, and `vcpu`, `interface` or `target` where a figure is one device's. A figure
//! domstats does not have for a domain (a shut-off guest's CPU time, a NIC without a TAP) is left out, never
//! given as 0.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use oxvirt_api::{DomainStats, DomainsStats, StatsRequest};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::reply::detached;
use crate::services::Services;

/// What Prometheus asks for and gets: OpenMetrics text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/metrics", get(metrics))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics_metrics",
    tag = "events",
    responses((
        status = 200,
        description = "the per-domain and per-host metrics in the OpenMetrics text format",
        body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )),
)]
async fn metrics(State(services): State<Arc<Services>>) -> Response {
    let stats = detached(services, "metrics", |d| async move {
        d.domains.domain_stats(&StatsRequest::default()).await
    })
    .await;
    match stats {
        Ok(stats) => match render(&stats.0) {
            Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
            Err(err) => {
                tracing::error!("cannot encode the metrics: {err}");
                axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        },
        Err(failure) => failure.into_response(),
    }
}

type Labels = Vec<(String, String)>;

/// How a domstats figure becomes a metric's value.
#[derive(Clone, Copy)]
enum Scale {
    Same,
    /// Nanoseconds to seconds.
    Nanos,
    /// KiB to bytes.
    Kib,
}

impl Scale {
    fn apply(self, value: f64) -> f64 {
        match self {
            Scale::Same => value,
            Scale::Nanos => value / 1e9,
            Scale::Kib => value * 1024.0,
        }
    }
}

/// A domstats field (its name after the device number, for per-device ones), the metric it feeds, whether
/// that is a counter, its scale and help text.
struct Mapping {
    field: &'static str,
    metric: &'static str,
    counter: bool,
    scale: Scale,
    help: &'static str,
}

const fn gauge(
    field: &'static str,
    metric: &'static str,
    scale: Scale,
    help: &'static str,
) -> Mapping {
    mapping(field, metric, false, scale, help)
}

const fn counter(
    field: &'static str,
    metric: &'static str,
    scale: Scale,
    help: &'static str,
) -> Mapping {
    mapping(field, metric, true, scale, help)
}

const fn mapping(
    field: &'static str,
    metric: &'static str,
    counter: bool,
    scale: Scale,
    help: &'static str,
) -> Mapping {
    Mapping {
        field,
        metric,
        counter,
        scale,
        help,
    }
}

/// Whole-domain figures.
const DOMAIN: &[Mapping] = &[
    gauge(
        "state.state",
        "oxvirt_domain_state",
        Scale::Same,
        "libvirt's state number (1 running, 3 paused, 5 shut off, ...)",
    ),
    counter(
        "cpu.time",
        "oxvirt_domain_cpu_time_seconds",
        Scale::Nanos,
        "CPU time of the guest's processes",
    ),
    counter(
        "cpu.user",
        "oxvirt_domain_cpu_user_seconds",
        Scale::Nanos,
        "user CPU time of the engine process",
    ),
    counter(
        "cpu.system",
        "oxvirt_domain_cpu_system_seconds",
        Scale::Nanos,
        "system CPU time of the engine process",
    ),
    gauge(
        "balloon.current",
        "oxvirt_domain_memory_balloon_bytes",
        Scale::Kib,
        "memory the guest has (its balloon's size)",
    ),
    gauge(
        "balloon.maximum",
        "oxvirt_domain_memory_maximum_bytes",
        Scale::Kib,
        "the definition's memory",
    ),
    gauge(
        "balloon.rss",
        "oxvirt_domain_memory_rss_bytes",
        Scale::Kib,
        "resident memory of the engine process",
    ),
    gauge(
        "balloon.available",
        "oxvirt_domain_memory_guest_available_bytes",
        Scale::Kib,
        "memory the guest's kernel sees (its balloon driver's report)",
    ),
    gauge(
        "balloon.unused",
        "oxvirt_domain_memory_guest_unused_bytes",
        Scale::Kib,
        "memory the guest leaves unused (its balloon driver's report)",
    ),
    gauge(
        "balloon.usable",
        "oxvirt_domain_memory_guest_usable_bytes",
        Scale::Kib,
        "memory the guest could use without swapping (its balloon driver's report)",
    ),
    gauge(
        "vcpu.current",
        "oxvirt_domain_vcpus",
        Scale::Same,
        "vCPUs online",
    ),
    gauge(
        "vcpu.maximum",
        "oxvirt_domain_vcpus_maximum",
        Scale::Same,
        "the definition's maximum vCPUs",
    ),
];

/// Per-vCPU figures (`vcpu.N.*`), labelled `vcpu`.
const VCPU: &[Mapping] = &[counter(
    "time",
    "oxvirt_domain_vcpu_time_seconds",
    Scale::Nanos,
    "CPU time of the vCPU's thread",
)];

/// Per-NIC figures (`net.N.*`), labelled `interface` (the host side's TAP) and seen from the guest.
const NET: &[Mapping] = &[
    counter(
        "rx.bytes",
        "oxvirt_domain_interface_receive_bytes",
        Scale::Same,
        "bytes the guest received",
    ),
    counter(
        "rx.pkts",
        "oxvirt_domain_interface_receive_packets",
        Scale::Same,
        "packets the guest received",
    ),
    counter(
        "rx.errs",
        "oxvirt_domain_interface_receive_errors",
        Scale::Same,
        "receive errors",
    ),
    counter(
        "rx.drop",
        "oxvirt_domain_interface_receive_drops",
        Scale::Same,
        "packets dropped on the way to the guest",
    ),
    counter(
        "tx.bytes",
        "oxvirt_domain_interface_transmit_bytes",
        Scale::Same,
        "bytes the guest sent",
    ),
    counter(
        "tx.pkts",
        "oxvirt_domain_interface_transmit_packets",
        Scale::Same,
        "packets the guest sent",
    ),
    counter(
        "tx.errs",
        "oxvirt_domain_interface_transmit_errors",
        Scale::Same,
        "transmit errors",
    ),
    counter(
        "tx.drop",
        "oxvirt_domain_interface_transmit_drops",
        Scale::Same,
        "packets the guest sent that were dropped",
    ),
];

/// Per-disk figures (`block.N.*`), labelled `target` (the guest's device name).
const BLOCK: &[Mapping] = &[
    counter(
        "rd.reqs",
        "oxvirt_domain_block_read_requests",
        Scale::Same,
        "read requests completed",
    ),
    counter(
        "rd.bytes",
        "oxvirt_domain_block_read_bytes",
        Scale::Same,
        "bytes read",
    ),
    counter(
        "rd.times",
        "oxvirt_domain_block_read_time_seconds",
        Scale::Nanos,
        "time spent on reads",
    ),
    counter(
        "wr.reqs",
        "oxvirt_domain_block_write_requests",
        Scale::Same,
        "write requests completed",
    ),
    counter(
        "wr.bytes",
        "oxvirt_domain_block_write_bytes",
        Scale::Same,
        "bytes written",
    ),
    counter(
        "wr.times",
        "oxvirt_domain_block_write_time_seconds",
        Scale::Nanos,
        "time spent on writes",
    ),
    counter(
        "fl.reqs",
        "oxvirt_domain_block_flush_requests",
        Scale::Same,
        "flush requests completed",
    ),
    gauge(
        "capacity",
        "oxvirt_domain_block_capacity_bytes",
        Scale::Same,
        "the disk's size as the guest sees it",
    ),
    gauge(
        "physical",
        "oxvirt_domain_block_physical_bytes",
        Scale::Same,
        "space the disk's file takes on the host",
    ),
];

/// libvirt's state numbers (`virDomainState`) as the words of the `state` label.
const STATES: [&str; 8] = [
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
];

type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Counters = Family<Labels, Counter<f64, AtomicU64>>;

/// The families of one scrape, by metric name, with their help texts.
#[derive(Default)]
struct Families {
    gauges: BTreeMap<&'static str, (&'static str, Gauges)>,
    counters: BTreeMap<&'static str, (&'static str, Counters)>,
}

impl Families {
    fn record(&mut self, mapping: &Mapping, labels: Labels, raw: &str) {
        // A value domstats prints that is not a number (none of the mapped ones) is left out.
        let Ok(value) = raw.parse::<f64>() else {
            return;
        };
        let value = mapping.scale.apply(value);
        if mapping.counter {
            let (_, family) = self
                .counters
                .entry(mapping.metric)
                .or_insert_with(|| (mapping.help, Family::default()));
            family.get_or_create(&labels).inc_by(value);
        } else {
            let (_, family) = self
                .gauges
                .entry(mapping.metric)
                .or_insert_with(|| (mapping.help, Family::default()));
            family.get_or_create(&labels).set(value);
        }
    }
}

/// The scrape's text: every domain's figures, then the guests by state.
fn render(stats: &DomainsStats) -> Result<String, std::fmt::Error> {
    let mut families = Families::default();
    let mut by_state = [0u64; STATES.len()];
    for domain in &stats.domains {
        record_domain(&mut families, domain, &mut by_state);
    }
    let mut registry = Registry::default();
    for (name, (help, family)) in families.gauges {
        registry.register(name, help, family);
    }
    for (name, (help, family)) in families.counters {
        registry.register(name, help, family);
    }
    let guests = Family::<Labels, Gauge>::default();
    for (state, count) in STATES.iter().zip(by_state) {
        guests
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(count as i64);
    }
    registry.register("oxvirt_domains", "domains by state", guests);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

fn record_domain(families: &mut Families, domain: &DomainStats, by_state: &mut [u64]) {
    let fields: BTreeMap<&str, &str> = domain
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.value.as_str()))
        .collect();
    let with = |extra: Option<(&str, &str)>| -> Labels {
        let mut labels = vec![("domain".to_string(), domain.name.clone())];
        labels.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    };
    if let Some(state) = fields
        .get("state.state")
        .and_then(|s| s.parse::<usize>().ok())
    {
        if let Some(count) = by_state.get_mut(state) {
            *count += 1;
        }
    }
    for mapping in DOMAIN {
        if let Some(value) = fields.get(mapping.field) {
            families.record(mapping, with(None), value);
        }
    }
    // Per-device fields: `GROUP.N.FIELD`, with the device's label from `GROUP.N.name` (vCPUs: N itself).
    for (name, value) in &fields {
        let mut parts = name.splitn(3, '.');
        let (Some(group), Some(n), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if n.parse::<u32>().is_err() {
            continue;
        }
        let (mappings, label, device) = match group {
            "vcpu" => (VCPU, "vcpu", Some(n)),
            "net" => (
                NET,
                "interface",
                fields.get(format!("net.{n}.name").as_str()).copied(),
            ),
            "block" => (
                BLOCK,
                "target",
                fields.get(format!("block.{n}.name").as_str()).copied(),
            ),
            _ => continue,
        };
        let Some(device) = device else { continue };
        if let Some(mapping) = mappings.iter().find(|m| m.field == rest) {
            families.record(mapping, with(Some((label, device))), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::StatField;

    fn domain(name: &str, fields: &[(&str, &str)]) -> DomainStats {
        DomainStats {
            name: name.to_string(),
            fields: fields
                .iter()
                .map(|(n, v)| StatField {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn domstats_become_metrics_in_base_units_with_device_labels() {
        let stats = DomainsStats {
            domains: vec![
                domain(
                    "web",
                    &[
                        ("state.state", "1"),
                        ("state.reason", "1"),
                        ("cpu.time", "2500000000"),
                        ("balloon.current", "1048576"),
                        ("vcpu.0.time", "1500000000"),
                        ("vcpu.0.state", "1"),
                        ("net.0.name", "vnet0"),
                        ("net.0.rx.bytes", "4096"),
                        ("block.0.name", "vda"),
                        ("block.0.path", "/var/lib/oxvirt/images/web.qcow2"),
                        ("block.0.rd.reqs", "42"),
                    ],
                ),
                domain(
                    "off \"quoted\"",
                    &[("state.state", "5"), ("state.reason", "0")],
                ),
            ],
        };
        let text = render(&stats).unwrap();
        for line in [
            "oxvirt_domain_state{domain=\"web\"} 1.0",
            "oxvirt_domain_cpu_time_seconds_total{domain=\"web\"} 2.5",
            "oxvirt_domain_memory_balloon_bytes{domain=\"web\"} 1073741824.0",
            "oxvirt_domain_vcpu_time_seconds_total{domain=\"web\",vcpu=\"0\"} 1.5",
            "oxvirt_domain_interface_receive_bytes_total{domain=\"web\",interface=\"vnet0\"} 4096.0",
            "oxvirt_domain_block_read_requests_total{domain=\"web\",target=\"vda\"} 42.0",
            "oxvirt_domain_state{domain=\"off \\\"quoted\\\"\"} 5.0",
            "oxvirt_domains{state=\"running\"} 1",
            "oxvirt_domains{state=\"shutoff\"} 1",
            "oxvirt_domains{state=\"paused\"} 0",
            "# TYPE oxvirt_domain_cpu_time_seconds counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        // Not numbers, or no metric: left out; a shut-off guest has no CPU time at all (not 0).
        assert!(!text.contains("path"), "{text}");
        assert!(!text.contains("reason"), "{text}");
        assert!(
            !text.contains("cpu_time_seconds_total{domain=\"off"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
