//! oxvirtd.conf and the daemon's log through the real oxvirtd binary: a bad configuration stops
//! oxvirtd (and fails `--check-config`) naming the key and line; a file output rotates by size
//! into gzip backups capped at `log_max_backups` without losing a line; the log filters change
//! at run time.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{raw_request, wait_until, TestEnv};

fn write_conf(env: &TestEnv, text: &str) -> PathBuf {
    let path = env.dir.path().join("oxvirtd.conf");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Each bad configuration, the message oxvirtd must give, for both a start and `--check-config`.
#[test]
fn bad_config_names_key_and_line() {
    let env = TestEnv::new();
    // A regular file where the log's directory should be: unwritable even for root.
    let not_a_dir = env.dir.path().join("plain-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let cases = [
        (
            "# oxvirtd.conf\nlog_level = 2\nlog_levle = 1\n".to_string(),
            "line 3: unknown key 'log_levle'",
        ),
        (
            "\nlog_level = 7\n".to_string(),
            "line 2: key 'log_level': bad log level '7'",
        ),
        (
            "log_level = \"debug\"\n".to_string(),
            "line 1: key 'log_level' expects an integer",
        ),
        (
            format!(
                "log_level = 1\n\nlog_outputs = \"1:file:{}/oxvirtd.log\"\n",
                not_a_dir.display()
            ),
            "line 3: key 'log_outputs': cannot ",
        ),
        (
            "log_filters = \"1:daemon 5:qemu\"\n".to_string(),
            "line 1: key 'log_filters': log filter '5:qemu': bad log level '5'",
        ),
        (
            "\n\nmax_clients = 0\n".to_string(),
            "line 3: key 'max_clients': must be at least 1",
        ),
        (
            "sandbox = 2\n".to_string(),
            "line 1: key 'sandbox': 2 is neither 0 nor 1",
        ),
        (
            "native_user_range = \"0-99\"\n".to_string(),
            "line 1: key 'native_user_range': '0-99' must run from a first id",
        ),
        (
            "\nnative_user_range = \"3001000\"\n".to_string(),
            "line 2: key 'native_user_range': '3001000' is not a range of ids",
        ),
        (
            "qemu_user_range = \"5-4\"\n".to_string(),
            "line 1: key 'qemu_user_range': '5-4' must run from a first id",
        ),
        (
            "migration_port_range = \"49215-49152\"\n".to_string(),
            "line 1: key 'migration_port_range': '49215-49152' is not a range of ports",
        ),
        (
            "\nmigration_port_range = \"0-70000\"\n".to_string(),
            "line 2: key 'migration_port_range': '0-70000' is not a range of ports",
        ),
        (
            "\nqemu_user_range = \"3001500-3002500\"\n".to_string(),
            "line 2: key 'qemu_user_range': 3001500-3002500 overlaps native_user_range (3001000-3001999)",
        ),
    ];
    for (text, expected) in cases {
        let conf = write_conf(&env, &text);
        let conf_arg = conf.to_str().unwrap();
        let expected = format!("oxvirtd: error: {conf_arg} {expected}");
        let check = env.run_oxvirtd(&["--config", conf_arg, "--check-config"]);
        assert_eq!(check.status.code(), Some(1), "{text}: {}", check.stderr);
        assert!(
            check.stderr.starts_with(&expected),
            "--check-config of {text:?}: expected {expected:?}, got {:?}",
            check.stderr
        );
        let start = env.run_oxvirtd(&["--config", conf_arg]);
        assert_eq!(start.status.code(), Some(1), "{text}: {}", start.stderr);
        assert!(
            start.stderr.starts_with(&expected),
            "start with {text:?}: expected {expected:?}, got {:?}",
            start.stderr
        );
    }
    // A flag wins over the file, and its errors name the flag.
    let conf = write_conf(&env, "log_level = 1\n");
    let run = env.run_oxvirtd(&[
        "--config",
        conf.to_str().unwrap(),
        "--log-level",
        "9",
        "--check-config",
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("--log-level: key 'log_level'"),
        "{}",
        run.stderr
    );
    // A valid file passes; a missing --config FILE does not.
    let conf = write_conf(
        &env,
        "log_level = 3 # warnings\nlog_filters = \"1:daemon.api 3:qemu\"\nlog_format = \"json\"\n",
    );
    let run = env.run_oxvirtd(&["--config", conf.to_str().unwrap(), "--check-config"]);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    // A host CPU description that cannot be read names its key and the file.
    let run = env.run_oxvirtd(&[
        "--config",
        conf.to_str().unwrap(),
        "--host-cpu-file",
        "/nonexistent/oxvirt/host-cpu.xml",
        "--check-config",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "--host-cpu-file: key 'host_cpu_file': cannot read /nonexistent/oxvirt/host-cpu.xml"
        ),
        "{}",
        run.stderr
    );
    let missing = env.dir.path().join("missing.conf");
    let run = env.run_oxvirtd(&["--config", missing.to_str().unwrap(), "--check-config"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
}

/// The example file shipped in etc/ is valid, and lists every key.
#[test]
fn example_config_is_valid() {
    let env = TestEnv::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/oxvirtd.conf");
    let text = std::fs::read_to_string(&example).expect("etc/oxvirtd.conf");
    // Uncommented, every default must parse and pass.
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("#")
                .filter(|r| r.contains(" = "))
                .unwrap_or(l)
        })
        .map(|l| format!("{}\n", if l.starts_with('#') { "" } else { l }))
        .collect();
    // host_cpu_file has no default: its example names a file this machine lacks, so it names
    // one written here instead.
    let cpu = env.dir.path().join("host-cpu.xml");
    std::fs::write(&cpu, "<cpu><model>Nehalem</model></cpu>\n").expect("write the CPU file");
    let uncommented = uncommented.replace("/etc/oxvirt/host-cpu.xml", cpu.to_str().unwrap());
    let conf = write_conf(&env, &uncommented);
    let run = env.run_oxvirtd(&["--config", conf.to_str().unwrap(), "--check-config"]);
    assert_eq!(run.status.code(), Some(0), "{}\n{uncommented}", run.stderr);
    for key in [
        "socket_path",
        "socket_mode",
        "socket_group",
        "max_clients",
        "listen",
        "tls_cert",
        "tls_key",
        "state_dir",
        "network_dir",
        "default_network",
        "sandbox",
        "native_user_range",
        "host_cpu_file",
        "backup_interval",
        "backup_keep",
        "log_level",
        "log_filters",
        "log_outputs",
        "log_max_size",
        "log_max_backups",
        "log_format",
        "guest_log_max_size",
        "guest_log_max_backups",
    ] {
        assert!(text.contains(&format!("#{key} = ")), "{key} missing");
    }
}

fn gunzip(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{} is not gzip", path.display());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// The request numbers (`/v1/seq-N`) a log text holds, in order.
fn sequence(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split("path=/v1/seq-").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_log_rotates_and_caps_backups() {
    let mut env = TestEnv::new();
    let log = env.dir.path().join("oxvirtd.log");
    let conf = write_conf(
        &env,
        &format!(
            "log_outputs = \"1:file:{}\"\nlog_max_size = 4096\nlog_max_backups = 2\n",
            log.display()
        ),
    );
    env.start_daemon_with(&["--config", conf.to_str().unwrap()])
        .await;
    const REQUESTS: u32 = 400;
    for n in 0..REQUESTS {
        raw_request(&env.socket, "GET", &format!("/v1/seq-{n}"), "");
    }
    let mut names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("oxvirtd.log"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["oxvirtd.log", "oxvirtd.log.1.gz", "oxvirtd.log.2.gz"],
        "{}",
        env.logs()
    );
    let live = std::fs::read_to_string(&log).unwrap();
    assert!(live.len() <= 4096, "live log {} bytes", live.len());
    let older = gunzip(&log.with_extension("log.2.gz"));
    let newer = gunzip(&log.with_extension("log.1.gz"));
    // Each backup ends with a whole line, and the live file goes on with the next one.
    assert!(older.ends_with('\n') && newer.ends_with('\n'));
    let all = sequence(&format!("{older}{newer}{live}"));
    let first = all[0];
    assert_eq!(all, (first..REQUESTS).collect::<Vec<_>>(), "lines lost");
    let (newer_seq, live_seq) = (sequence(&newer), sequence(&live));
    if let (Some(last), Some(next)) = (newer_seq.last(), live_seq.first()) {
        assert_eq!(last + 1, *next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_change_without_restart() {
    let mut env = TestEnv::new();
    let log = env.dir.path().join("oxvirtd.log");
    let outputs = format!("1:file:{}", log.display());
    // The harness starts at --log-level debug; the filter quiets the API's request lines.
    env.start_daemon_with(&["--log-outputs", &outputs, "--log-filters", "3:daemon.api"])
        .await;
    let client = env.client();
    assert_eq!(client.log_filters().await.unwrap().filters, "3:daemon.api");
    assert_eq!(client.log_outputs().await.unwrap().outputs, outputs);
    raw_request(&env.socket, "GET", "/v1/seq-1", "");
    client
        .set_log_filters("1:daemon.api  3:qemu")
        .await
        .unwrap();
    assert_eq!(
        client.log_filters().await.unwrap().filters,
        "1:daemon.api 3:qemu"
    );
    raw_request(&env.socket, "GET", "/v1/seq-2", "");
    let seen = wait_until(Duration::from_secs(5), || {
        let log = log.clone();
        async move { sequence(&std::fs::read_to_string(&log).unwrap_or_default()) == [2] }
    })
    .await;
    assert!(seen, "{}", std::fs::read_to_string(&log).unwrap());
    // A bad filter is refused and the running one stays.
    let err = client.set_log_filters("9:qemu").await.unwrap_err();
    assert!(err.to_string().contains("bad log level '9'"), "{err}");
    assert_eq!(
        client.log_filters().await.unwrap().filters,
        "1:daemon.api 3:qemu"
    );
    // The outputs change too: a second file gets the next lines.
    let second = env.dir.path().join("second.log");
    let outputs = format!("1:file:{}", second.display());
    client.set_log_outputs(&outputs).await.unwrap();
    raw_request(&env.socket, "GET", "/v1/seq-3", "");
    assert_eq!(
        sequence(&std::fs::read_to_string(&second).unwrap()),
        [3],
        "{}",
        env.logs()
    );
}

/// socket_mode and log_format from the file: the socket gets the mode, the log is JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_and_json_log_from_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new();
    let log = env.dir.path().join("oxvirtd.json.log");
    let conf = write_conf(
        &env,
        &format!(
            "socket_mode = \"0660\"\nsocket_group = \"0\"\nlog_format = \"json\"\nlog_outputs = \"1:file:{}\"\n",
            log.display()
        ),
    );
    env.start_daemon_with(&["--config", conf.to_str().unwrap()])
        .await;
    let mode = std::fs::metadata(&env.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    raw_request(&env.socket, "GET", "/v1/seq-7", "");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seen = false;
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        seen |= value["fields"]["path"] == "/v1/seq-7";
    }
    assert!(seen, "{text}");
}
