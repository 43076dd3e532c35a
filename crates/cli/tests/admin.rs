//! `oxvirt admin daemon-log-filters/-outputs` against a private oxvirtd: virt-admin's output,
//! and a filter change that shows in the daemon's log from the next request on, without a
//! restart.

#[allow(dead_code)]
mod support;

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
