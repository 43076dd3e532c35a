//! `oxvirt admin ...` against a private oxvirtd: virt-admin's output; a log filter change that
//! shows in the daemon's log from the next request on, without a restart; the API connections
//! counted as they open and close, and refused beyond `max_clients`.

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use oxvirt_testkit::wait_for;
use support::Daemon;

#[test]
fn daemon_log_filters_and_outputs_change_at_run_time() {
    let daemon = Daemon::start();
    assert_eq!(
        daemon.oxvirt(&["admin", "daemon-log-filters"]).ok(),
        " Logging filters: \n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["admin", "daemon-log-outputs"]).ok(),
        " Logging outputs: 2:stderr\n\n"
    );
    // At the default level 2 the API's request lines (debug) are not logged.
    daemon.oxvirt(&["list", "--all"]).ok();
    assert!(
        !daemon.log().contains("path=/v1/domains"),
        "{}",
        daemon.log()
    );

    assert_eq!(
        daemon
            .oxvirt(&["admin", "daemon-log-outputs", "1:stderr"])
            .ok(),
        "\n"
    );
    assert_eq!(
        daemon
            .oxvirt(&["admin", "daemon-log-filters", "1:daemon.api 3:qemu"])
            .ok(),
        "\n"
    );
    assert_eq!(
        daemon.oxvirt(&["admin", "daemon-log-filters"]).ok(),
        " Logging filters: 1:daemon.api 3:qemu\n\n"
    );
    daemon.oxvirt(&["list", "--all"]).ok();
    assert!(
        daemon.log().contains("method=GET path=/v1/domains"),
        "{}",
        daemon.log()
    );

    let error = daemon
        .oxvirt(&["admin", "daemon-log-filters", "7:qemu"])
        .error();
    assert!(error.contains("bad log level '7'"), "{error}");
    let error = daemon
        .oxvirt(&["admin", "daemon-log-outputs", "1:file:relative.log"])
        .error();
    assert!(error.contains("absolute path"), "{error}");
}

/// A connection a test holds open, as a client that keeps its connection alive would.
struct Held {
    reader: BufReader<UnixStream>,
}

impl Held {
    /// Connected only: no request yet.
    fn connect(socket: &Path) -> Held {
        let stream = UnixStream::connect(socket).expect("connect to oxvirtd");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Held {
            reader: BufReader::new(stream),
        }
    }

    /// Connected, with one keep-alive request answered.
    fn after_a_request(socket: &Path) -> Held {
        let mut held = Held::connect(socket);
        assert!(held.get("/v1/version").contains("\"api\":1"));
        held
    }

    /// `GET path` on this connection, kept alive; the reply's body.
    fn get(&mut self, path: &str) -> String {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: oxvirtd\r\n\r\n"
        )
        .expect("send request");
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("reply header");
            assert!(!line.is_empty(), "oxvirtd closed the connection");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("reply body");
        String::from_utf8(body).expect("utf-8 reply")
    }

    /// nclients, as the daemon tells it on this connection.
    fn nclients(&mut self) -> u64 {
        let reply: serde_json::Value =
            serde_json::from_str(&self.get("/v1/admin/servers/oxvirtd/clients")).expect("json");
        reply["nclients"].as_u64().expect("nclients")
    }
}

fn clients_info(max: u32, open: u32) -> String {
    format!(
        "nclients_max        : {max}\n\
         nclients            : {open}\n\
         nclients_unauth_max : 0\n\
         nclients_unauth     : 0\n\n"
    )
}

/// `server-clients-info` until it shows `open` connections (the CLI's own included: the
/// connections of earlier commands close as they end, a moment later in the daemon).
#[track_caller]
fn wait_for_clients(daemon: &Daemon, max: u32, open: u32) {
    let want = clients_info(max, open);
    let mut last = String::new();
    let seen = wait_for(Duration::from_secs(10), || {
        last = daemon.oxvirt(&["admin", "server-clients-info"]).ok();
        last == want
    });
    assert!(seen, "want\n{want}got\n{last}");
}

#[test]
fn server_clients_info_counts_open_connections() {
    let daemon = Daemon::start();
    // The command's own connection is open while the daemon answers it.
    wait_for_clients(&daemon, 5000, 1);
    assert_eq!(
        daemon
            .oxvirt(&["admin", "server-clients-info", "oxvirtd"])
            .ok(),
        clients_info(5000, 1)
    );
    assert_eq!(
        daemon.oxvirt(&["admin", "srv-list"]).ok(),
        " Id   Name\n---------------\n 0    oxvirtd\n\n"
    );

    let mut held = vec![
        Held::after_a_request(&daemon.socket),
        Held::connect(&daemon.socket),
        Held::connect(&daemon.socket),
    ];
    wait_for_clients(&daemon, 5000, 4);
    held.pop();
    wait_for_clients(&daemon, 5000, 3);
    drop(held);
    wait_for_clients(&daemon, 5000, 1);

    // A new limit at run time, shown at once; as virt-admin, setting prints nothing.
    assert_eq!(
        daemon
            .oxvirt(&["admin", "server-clients-set", "--max-clients", "10"])
            .ok(),
        "\n"
    );
    assert_eq!(
        daemon.oxvirt(&["admin", "srv-clients-info"]).ok(),
        clients_info(10, 1)
    );

    let error = daemon
        .oxvirt(&["admin", "server-clients-info", "libvirtd"])
        .error();
    assert!(error.contains("no server named 'libvirtd'"), "{error}");
    let error = daemon
        .oxvirt(&["admin", "server-clients-set", "nope", "--max-clients", "3"])
        .error();
    assert!(error.contains("no server named 'nope'"), "{error}");
    // 0 would shut everybody out.
    let run = daemon.oxvirt(&["admin", "server-clients-set", "--max-clients", "0"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("invalid value '0' for '--max-clients <N>'"),
        "{run:#?}"
    );
}

#[test]
fn max_clients_refuses_connections_beyond_it() {
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("oxvirtd.conf");
    std::fs::write(&conf, "max_clients = 2\n").expect("write oxvirtd.conf");
    let daemon = Daemon::start_with(&["--config", conf.to_str().expect("utf-8 path")]);
    wait_for_clients(&daemon, 2, 1);

    let mut first = Held::after_a_request(&daemon.socket);
    let second = Held::connect(&daemon.socket);
    assert!(wait_for(Duration::from_secs(10), || first.nclients() == 2));

    // A third connection is closed at accept: the command fails, and the daemon says why.
    let error = daemon.oxvirt(&["admin", "server-clients-info"]).error();
    assert!(error.contains("max_clients"), "{error}");
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("too many active clients (2), dropping connection")),
        "{}",
        daemon.log()
    );
    // The connections already open keep working.
    assert!(first.get("/v1/version").contains("\"api\":1"));
    assert_eq!(first.nclients(), 2);

    // One closes: a new one gets its slot.
    drop(second);
    assert!(wait_for(Duration::from_secs(10), || first.nclients() == 1));
    assert_eq!(
        daemon.oxvirt(&["admin", "server-clients-info"]).ok(),
        clients_info(2, 2)
    );

    // A higher limit at run time lets more in.
    daemon
        .oxvirt(&["admin", "server-clients-set", "--max-clients", "3"])
        .ok();
    let _second = Held::connect(&daemon.socket);
    assert!(wait_for(Duration::from_secs(10), || first.nclients() == 2));
    assert_eq!(
        daemon.oxvirt(&["admin", "server-clients-info"]).ok(),
        clients_info(3, 3)
    );
}
