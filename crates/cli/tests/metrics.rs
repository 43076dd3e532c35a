//! `GET /metrics` of a private oxvirtd running a real QEMU (TCG) guest, read as Prometheus reads it: the
//! text goes through the Prometheus project's own OpenMetrics parser (Debian's python3-prometheus-client,
//! which refuses anything out of the format), and its figures are the guest's: the ones `domstats` gives
//! (state, memory, vCPUs, the disk's capacity) equal, the guests by state count it, and the counters the
//! guest moves (its disk reads, its vCPU time) grow between two scrapes.

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::{guest_kit, wait_for, BOOT_MARKER, PROMPT};
use support::{guest_xml, make_disk, Daemon};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const UUID: &str = "7b2d4f6a-8c1e-4a3b-9d5f-1e3a5c7e9b2d";

/// One sample: its metric name and labels (`name{k="v",...}` as written, labels sorted) and its value.
type Samples = BTreeMap<String, f64>;

/// Parses `text` with prometheus_client's OpenMetrics parser and returns its samples; panics (with the
/// parser's message) when the text is not valid OpenMetrics, or a family lacks its help or type.
fn parse(text: &str) -> Samples {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    if not family.documentation or family.type == "unknown":
        sys.exit("family %s has no help or no type" % family.name)
    for s in family.samples:
        labels = ",".join('%s=%s' % (k, json.dumps(v)) for k, v in sorted(s.labels.items()))
        print("%s{%s}\t%r" % (s.name, labels, s.value))
"#;
    // Debian's Python, where python3-prometheus-client is (a pyenv python3 may come first on PATH).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (scripts/setup.sh installs python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (sample, value) = line.split_once('\t').unwrap();
            (sample.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn scrape(daemon: &Daemon) -> (String, Samples) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--include",
            "--unix-socket",
        ])
        .arg(&daemon.socket)
        .arg("http://localhost/metrics")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = String::from_utf8(out.stdout).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    (body.to_string(), parse(body))
}

fn sample(samples: &Samples, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// `domstats DOMAIN`'s `name=value` fields.
fn domstats(daemon: &Daemon, domain: &str) -> BTreeMap<String, String> {
    daemon
        .oxvirt(&["domstats", domain])
        .ok()
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn metrics_parse_as_openmetrics_and_carry_the_guests_figures() {
    let daemon = Daemon::start();
    let disk = make_disk(daemon.dir.path(), "mx.img", 8192);
    daemon
        .define("mx.xml", &guest_xml("mx", UUID, &guest_kit(), &disk, 2))
        .1
        .ok();

    // Shut off: its state and the host's count, and none of the figures a running guest has.
    let (_, off) = scrape(&daemon);
    assert_eq!(sample(&off, r#"oxvirt_domain_state{domain="mx"}"#), 5.0);
    assert_eq!(sample(&off, r#"oxvirt_domains{state="shutoff"}"#), 1.0);
    assert_eq!(sample(&off, r#"oxvirt_domains{state="running"}"#), 0.0);
    assert!(!off.contains_key(r#"oxvirt_domain_cpu_time_seconds_total{domain="mx"}"#));

    let mut console = daemon.start_with_console("mx");
    console.expect_text(BOOT_MARKER, BOOT_TIMEOUT);
    console.expect_text(PROMPT, BOOT_TIMEOUT);
    let (text, first) = scrape(&daemon);
    assert!(
        text.contains("# TYPE oxvirt_domain_block_read_bytes counter"),
        "{text}"
    );
    assert_eq!(sample(&first, r#"oxvirt_domains{state="running"}"#), 1.0);
    assert_eq!(sample(&first, r#"oxvirt_domain_state{domain="mx"}"#), 1.0);
    let stats = domstats(&daemon, "mx");
    let kib = |key: &str| stats[key].parse::<f64>().unwrap() * 1024.0;
    assert_eq!(
        sample(&first, r#"oxvirt_domain_memory_maximum_bytes{domain="mx"}"#),
        kib("balloon.maximum")
    );
    assert_eq!(
        sample(&first, r#"oxvirt_domain_memory_balloon_bytes{domain="mx"}"#),
        kib("balloon.current")
    );
    assert_eq!(sample(&first, r#"oxvirt_domain_vcpus{domain="mx"}"#), 2.0);
    assert_eq!(
        sample(
            &first,
            r#"oxvirt_domain_block_capacity_bytes{domain="mx",target="vda"}"#
        ),
        (8192 * 512) as f64
    );
    assert!(sample(&first, r#"oxvirt_domain_memory_rss_bytes{domain="mx"}"#) > 0.0);
    assert!(
        sample(
            &first,
            r#"oxvirt_domain_cpu_time_seconds_total{domain="mx"}"#
        ) > 0.0
    );

    // The guest reads 64 blocks of 4 KiB past its page cache: the next scrape has them.
    console.send_line("dd if=/dev/vda of=/dev/null bs=4k count=64 iflag=direct; echo DD-DONE");
    console.expect_text("DD-DONE", BOOT_TIMEOUT);
    let reads = r#"oxvirt_domain_block_read_requests_total{domain="mx",target="vda"}"#;
    let bytes = r#"oxvirt_domain_block_read_bytes_total{domain="mx",target="vda"}"#;
    let vcpu = r#"oxvirt_domain_vcpu_time_seconds_total{domain="mx",vcpu="0"}"#;
    let mut last = first.clone();
    assert!(
        wait_for(Duration::from_secs(10), || {
            last = scrape(&daemon).1;
            sample(&last, reads) >= sample(&first, reads) + 64.0
        }),
        "read requests {} then {}",
        sample(&first, reads),
        sample(&last, reads)
    );
    assert!(sample(&last, bytes) >= sample(&first, bytes) + 64.0 * 4096.0);
    assert!(sample(&last, vcpu) >= sample(&first, vcpu));
}
