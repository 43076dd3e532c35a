//! `event` and `qemu-monitor-event` against a private oxvirtd running a real QEMU (TCG) guest:
//! the lifecycle events of a start, suspend, resume and destroy in order, QEMU's STOP event
//! when the guest is suspended, a wait that times out as Debian's virsh's does, a client that
//! stops reading holding no one up (and told what it missed), and the refusals (`event` for a
//! domain that does not exist, `domtime`).

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxvirt_testkit::{guest_kit, wait_for};
use support::{guest_xml, make_disk, Daemon};

const UUID: &str = "7e3a9c51-2b4d-4e6f-8a1c-5d7e9f1a3b5c";
const WAIT: Duration = Duration::from_secs(60);

/// An `oxvirt` left running with its stdout collected line by line.
struct Listener {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Listener {
    fn spawn(daemon: &Daemon, args: &[&str]) -> Listener {
        let mut child = daemon.spawn_oxvirt(args, &[]);
        let stdout = child.stdout.take().expect("piped stdout");
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        Listener { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Does `act` until the output holds `text` (bounded): for a listener that may not have
    /// subscribed yet when the first event happens.
    fn repeat_until(&self, text: &str, mut act: impl FnMut()) -> bool {
        wait_for(WAIT, || {
            act();
            wait_for(Duration::from_secs(2), || self.output().contains(text))
        })
    }

    /// Waits (bounded) until the output holds `text`.
    #[track_caller]
    fn expect(&self, text: &str) {
        assert!(
            wait_for(WAIT, || self.output().contains(text)),
            "never printed {text:?}; printed:\n{}",
            self.output()
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn suspend_and_resume(daemon: &Daemon) {
    daemon.oxvirt(&["suspend", "ev"]).ok();
    daemon.oxvirt(&["resume", "ev"]).ok();
}

fn define_guest(daemon: &Daemon) -> std::path::PathBuf {
    let disk = make_disk(daemon.dir.path(), "ev.img", 2048);
    let (file, run) = daemon.define("ev.xml", &guest_xml("ev", UUID, &guest_kit(), &disk, 1));
    run.ok();
    file
}

#[test]
fn lifecycle_and_monitor_events_of_a_real_guest() {
    let daemon = Daemon::start();
    let file = define_guest(&daemon);
    let file = file.to_str().unwrap();

    let lifecycle = Listener::spawn(&daemon, &["event", "--loop", "--domain", "ev"]);
    // It prints nothing until an event comes: define again (each one is "Defined Updated")
    // until it shows one, so it is surely subscribed before the start.
    assert!(
        lifecycle.repeat_until("Defined Updated", || {
            daemon.oxvirt(&["define", file]).ok();
        }),
        "the listener never saw a define: {}",
        lifecycle.output()
    );
    daemon.oxvirt(&["start", "ev"]).ok();
    lifecycle.expect("Started Booted");
    daemon.oxvirt(&["suspend", "ev"]).ok();
    lifecycle.expect("Suspended Paused");
    daemon.oxvirt(&["resume", "ev"]).ok();
    lifecycle.expect("Resumed Unpaused");
    daemon.oxvirt(&["destroy", "ev"]).ok();
    lifecycle.expect("Stopped Destroyed");
    let output = lifecycle.output();
    let after_defines = output
        .rsplit_once("Defined Updated\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert_eq!(
        after_defines,
        "event 'lifecycle' for domain 'ev': Started Booted\n\
         event 'lifecycle' for domain 'ev': Suspended Paused\n\
         event 'lifecycle' for domain 'ev': Resumed Unpaused\n\
         event 'lifecycle' for domain 'ev': Stopped Destroyed\n"
    );
    assert!(
        output.lines().all(
            |l| l == "event 'lifecycle' for domain 'ev': Defined Updated"
                || after_defines.contains(l)
        ),
        "{output}"
    );

    // QEMU's STOP when the guest is suspended; without --loop the first one ends the wait.
    daemon.oxvirt(&["start", "ev"]).ok();
    let mut stop = Listener::spawn(
        &daemon,
        &["qemu-monitor-event", "--domain", "ev", "--event", "STOP"],
    );
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Suspend and resume until it has seen one (it may subscribe after the first).
    let exited = wait_for(WAIT, || {
        suspend_and_resume(&daemon);
        wait_for(Duration::from_secs(2), || {
            matches!(stop.child.try_wait(), Ok(Some(_)))
        })
    });
    assert!(exited, "qemu-monitor-event did not end: {}", stop.output());
    let status = stop.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader thread gets the rest once the pipe closes.
    assert!(wait_for(Duration::from_secs(5), || stop
        .output()
        .ends_with("events received: 1\n\n")));
    let output = stop.output();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert_eq!(&lines[1..], ["events received: 1", ""]);
    let stamp = lines[0]
        .strip_prefix("event STOP at ")
        .and_then(|rest| rest.strip_suffix(" for domain 'ev': <null>"))
        .unwrap_or_else(|| panic!("not virsh's line: {output}"));
    let (seconds, micros) = stamp.split_once('.').expect("seconds.micros");
    assert_eq!(micros.len(), 6, "{stamp}");
    let seconds: u64 = seconds.parse().unwrap();
    // QEMU's own timestamp of the stop, taken on this host's clock.
    assert!(
        seconds + 2 >= before && seconds <= before + WAIT.as_secs(),
        "{stamp}"
    );

    // Every QMP event is carried, its data as libvirt prints it: a pattern picks STOP and
    // SHUTDOWN (a destroy quits QEMU, which says why), and not RESUME.
    let picked = Listener::spawn(
        &daemon,
        &[
            "qemu-monitor-event",
            "--domain",
            "ev",
            "--loop",
            "--regex",
            "--event",
            "^(STOP|SHUTDOWN)$",
        ],
    );
    assert!(
        picked.repeat_until("event STOP", || suspend_and_resume(&daemon)),
        "{}",
        picked.output()
    );
    daemon.oxvirt(&["destroy", "ev"]).ok();
    picked.expect(" for domain 'ev': {\"guest\":false,\"reason\":\"host-qmp-quit\"}\n");
    assert!(!picked.output().contains("RESUME"), "{}", picked.output());
}

#[test]
fn a_client_that_stops_reading_holds_no_one_up() {
    let daemon = Daemon::start();
    let file = define_guest(&daemon);
    let xml = std::fs::read_to_string(&file).unwrap();

    // Subscribed, and never read from until the end.
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    stalled
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: oxvirtd\r\n\r\n")
        .unwrap();
    let reader = Listener::spawn(&daemon, &["event", "--loop", "--domain", "ev"]);
    assert!(wait_for(WAIT, || {
        daemon.oxvirt(&["define", file.to_str().unwrap()]).ok();
        wait_for(Duration::from_secs(2), || {
            reader.output().contains("Defined Updated")
        })
    }));

    // Far more events than the stalled connection's socket buffer and the bus's backlog hold;
    // every call answers meanwhile.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = oxvirt_api::Client::new(daemon.socket.clone());
    const DEFINES: usize = 1500;
    runtime.block_on(async {
        for i in 0..DEFINES {
            let answered = tokio::time::timeout(Duration::from_secs(10), async {
                client.define_domain(&xml).await.unwrap();
                if i % 100 == 0 {
                    client.version().await.unwrap();
                }
            })
            .await;
            assert!(answered.is_ok(), "define {i} did not answer within 10 s");
        }
    });
    // The reading subscriber got them all.
    assert!(
        wait_for(WAIT, || reader.output().matches("Defined Updated").count()
            > DEFINES),
        "the reading client fell behind: {} lines",
        reader.output().lines().count()
    );
    // The stalled one, once it reads, is told it missed some.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let told = wait_for(WAIT, || {
        match stalled.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return true,
        }
        String::from_utf8_lossy(&seen).contains("event: lagged\ndata: {\"missed\":")
    });
    assert!(
        told && String::from_utf8_lossy(&seen).contains("event: lagged"),
        "no lag notice in {} bytes",
        seen.len()
    );
}

#[test]
fn refusals_and_an_empty_wait_are_virshs() {
    let daemon = Daemon::start();
    define_guest(&daemon);

    let err = daemon.oxvirt(&["event", "--domain", "nosuch"]).error();
    assert!(err.contains("domain 'nosuch' not found"), "{err}");
    let err = daemon
        .oxvirt(&["qemu-monitor-event", "--domain", "nosuch"])
        .error();
    assert!(err.contains("domain 'nosuch' not found"), "{err}");
    let err = daemon
        .oxvirt(&[
            "qemu-monitor-event",
            "--regex",
            "--event",
            "(",
            "--timeout",
            "1",
        ])
        .error();
    assert!(err.contains("bad event name pattern '('"), "{err}");
    let err = daemon.oxvirt(&["event", "--event", "foo"]).error();
    assert_eq!(err, "error: unknown event type foo");
    let err = daemon.oxvirt(&["event", "--event", "reboot"]).error();
    assert!(err.contains("not delivered by oxvirt"), "{err}");

    let err = daemon.oxvirt(&["domtime", "ev"]).error();
    assert!(err.contains("guest agent"), "{err}");
    let err = daemon.oxvirt(&["domtime", "nosuch"]).error();
    assert!(err.contains("domain 'nosuch' not found"), "{err}");

    // Nothing happens for 2 s: the wait times out, says so and fails without a message.
    let run = daemon.oxvirt(&["qemu-monitor-event", "--domain", "ev", "--timeout", "2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.stdout, "event loop timed out\nevents received: 0\n\n");
    assert_eq!(run.stderr, "");

    // Debian's virsh does the same (libvirt's embedded driver, no daemon).
    let root = daemon.dir.path().join("libvirt");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for (ours, theirs) in [
        (
            vec!["event", "--all", "--timeout", "1"],
            "event --all --timeout 1",
        ),
        (
            vec!["qemu-monitor-event", "--timeout", "1"],
            "qemu-monitor-event --timeout 1",
        ),
        (vec!["event", "--event", "foo"], "event --event foo"),
    ] {
        let virsh = Command::new("virsh")
            .arg("-c")
            .arg(format!("qemu:///embed?root={}", root.display()))
            .arg(theirs)
            .stdin(Stdio::null())
            .output()
            .expect("run virsh (Debian's libvirt-clients, installed by scripts/setup.sh)");
        let run = daemon.oxvirt(&ours);
        assert_eq!(virsh.status.code(), run.code, "{theirs}: {run:#?}");
        assert_eq!(
            String::from_utf8_lossy(&virsh.stderr),
            run.stderr,
            "{theirs}"
        );
        if run.code == Some(1) && !run.stderr.is_empty() {
            // (virsh also prints its blank line after a failed command; oxvirt prints
            // nothing but the error.)
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&virsh.stdout),
            run.stdout,
            "{theirs}"
        );
    }
}
