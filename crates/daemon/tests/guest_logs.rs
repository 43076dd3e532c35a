//! Issue 16's acceptance for the logs, through the real oxvirtd and a QEMU (TCG) guest: with
//! `log_outputs="1:file:LOG"` and small sizes, a burst of API calls and a guest printing on its
//! console fill, rotate and cap both oxvirtd's log and the guest's console log; and the guest
//! keeps logging while oxvirtd is killed and restarted (its log writer is not oxvirtd).
//!
//! "Nothing lost" is checked as: what remains (the backups, oldest first, decompressed, then the
//! live file) holds a numbered sequence the guest (or the API client) produced, every number
//! from the first one that remains to the last one produced, once and in order. Numbers below
//! the first are what the cap (`*_max_backups`) dropped with the oldest file; nothing else may
//! be missing.
//! (`daemon-log-filters` changing the log from the next line on is `config.rs`'s
//! `log_filters_change_without_restart`.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::{raw_request, wait_until, TestEnv};
use oxvirt_api::DomainState;

const MAX_SIZE: u64 = 2048;
const BACKUPS: u32 = 2;

/// The files of a rotated log `name` in `dir`, sorted.
fn rotated_files(dir: &Path, name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name))
        .collect();
    names.sort();
    names
}

/// Checks the files of the rotated log at `path`: the live file and exactly `BACKUPS`
/// gzip-compressed backups, none larger than `MAX_SIZE` once decompressed, each backup
/// ending with a whole line. Returns everything that remains, oldest first.
fn check_rotated(path: &Path) -> String {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let expected: Vec<String> = std::iter::once(name.to_string())
        .chain((1..=BACKUPS).map(|n| format!("{name}.{n}.gz")))
        .collect();
    assert_eq!(
        rotated_files(dir, name),
        expected,
        "the rotated files of {name}"
    );
    assert!(std::fs::metadata(path).unwrap().len() <= MAX_SIZE);
    for n in 1..=BACKUPS {
        let gz = std::fs::File::open(dir.join(format!("{name}.{n}.gz"))).unwrap();
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut text)
            .expect("a gzip backup");
        assert!(
            text.len() as u64 <= MAX_SIZE,
            "{name}.{n}.gz holds {}",
            text.len()
        );
        assert!(
            text.ends_with(b"\n"),
            "{name}.{n}.gz ends with a whole line"
        );
    }
    String::from_utf8_lossy(&oxvirt_logfile::read_all(path, BACKUPS).unwrap()).into_owned()
}

/// The numbers of the lines `PREFIX<digits>` (serial lines end in "\r\n").
fn numbered(text: &str, prefix: &str) -> Vec<u32> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        .map(|rest| rest.parse().unwrap())
        .collect()
}

/// Every number from the first that remains to `last`, once, in order.
fn assert_complete(numbers: &[u32], last: u32, what: &str, text: &str) -> u32 {
    let first = *numbers
        .first()
        .unwrap_or_else(|| panic!("no {what} line remains"));
    let missing: Vec<u32> = (first..=last).filter(|n| !numbers.contains(n)).collect();
    assert!(
        numbers == (first..=last).collect::<Vec<_>>(),
        "{what}: lines from {first} to {last} missing ({missing:?}) or out of order in:\n{text}"
    );
    first
}

async fn wait_for_line(log: &Path, line: &str) -> bool {
    wait_until(Duration::from_secs(120), || {
        let log = log.to_path_buf();
        let line = line.to_string();
        async move {
            oxvirt_logfile::read_all(&log, BACKUPS)
                .map(|all| {
                    String::from_utf8_lossy(&all)
                        .lines()
                        .any(|l| l.trim_end_matches('\r') == line)
                })
                .unwrap_or(false)
        }
    })
    .await
}

/// Has the guest print `SEQ-from` .. `SEQ-(to-1)` and then `SEQ-DONE-run` on its console,
/// starting a second after this returns, with no console client connected: a client that
/// reads slowly makes QEMU log some bytes twice (QEMU 7.2's qemu_chr_write_buffer logs a
/// buffer the socket refused with EAGAIN, and again when the serial port retries it), and
/// without one QEMU only logs. (The empty line first ends the prompt the shell prints.)
async fn print_sequence(env: &TestEnv, from: u32, to: u32, run: u32) {
    let mut console = env.console("chatty").await;
    console
        .send_line(&format!(
            "(sleep 1; echo; i={from}; while [ $i -lt {to} ]; do echo SEQ-$i; i=$((i+1)); done; echo SEQ-DONE-{run}) &"
        ))
        .unwrap();
    // The line is echoed back once the guest has it.
    tokio::task::block_in_place(|| {
        assert!(console
            .wait_for_text(&format!("SEQ-DONE-{run}"), Duration::from_secs(30))
            .is_some())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_guest_logs_rotate_cap_and_survive_a_daemon_restart() {
    let mut env = TestEnv::new();
    let daemon_log = env.dir.path().join("oxvirtd.log");
    let conf = env.dir.path().join("oxvirtd.conf");
    std::fs::write(
        &conf,
        format!(
            "log_outputs = \"1:file:{}\"\nlog_max_size = {MAX_SIZE}\nlog_max_backups = {BACKUPS}\n\
             guest_log_max_size = {MAX_SIZE}\nguest_log_max_backups = {BACKUPS}\n",
            daemon_log.display()
        ),
    )
    .unwrap();
    let args = ["--config", conf.to_str().unwrap()];
    env.start_daemon_with(&args).await;
    let client = env.client();
    client
        .define_domain(&env.domain_xml("chatty", None))
        .await
        .unwrap();
    client.start("chatty").await.unwrap();
    let info = client.domain_info("chatty").await.unwrap();
    let console_log = std::path::PathBuf::from(info.console_log.expect("a console log"));
    // The boot messages alone may rotate the console log: look in the backups too.
    let booted = wait_until(common::BOOT_TIMEOUT, || {
        let log = console_log.clone();
        async move {
            oxvirt_logfile::read_all(&log, BACKUPS).is_ok_and(|all| {
                String::from_utf8_lossy(&all).contains(oxvirt_testkit::BOOT_MARKER)
            })
        }
    })
    .await;
    assert!(booted, "the guest did not boot; logs:\n{}", env.logs());

    // The guest prints SEQ-0 .. SEQ-799 while the API takes a burst of requests.
    const FIRST_BURST: u32 = 800;
    print_sequence(&env, 0, FIRST_BURST, 1).await;
    const REQUESTS: u32 = 300;
    for n in 0..REQUESTS {
        raw_request(&env.socket, "GET", &format!("/v1/seq-{n}"), "");
    }

    // oxvirtd's log: rotated, capped, every request line from the first that remains.
    let all = check_rotated(&daemon_log);
    let requests: Vec<u32> = all
        .lines()
        .filter_map(|l| l.split("path=/v1/seq-").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let first = assert_complete(&requests, REQUESTS - 1, "request", &all);
    assert!(first > 0, "the cap dropped the oldest requests");

    // The guest's console log: the same.
    assert!(wait_for_line(&console_log, "SEQ-DONE-1").await);
    let all = check_rotated(&console_log);
    let first = assert_complete(&numbered(&all, "SEQ-"), FIRST_BURST - 1, "console", &all);
    assert!(first > 0, "the cap dropped the oldest console lines");

    // Restart: the guest starts printing a second run a moment after oxvirtd is killed, and
    // goes on while no oxvirtd runs.
    const SECOND_RUN: u32 = 1000;
    print_sequence(&env, FIRST_BURST, SECOND_RUN, 2).await;
    env.kill_daemon();
    assert!(
        wait_for_line(&console_log, "SEQ-DONE-2").await,
        "the guest's console output stopped being logged while oxvirtd was down:\n{}\n{}",
        String::from_utf8_lossy(&oxvirt_logfile::read_all(&console_log, BACKUPS).unwrap()),
        String::from_utf8_lossy(
            &std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,sid,args"])
                .output()
                .unwrap()
                .stdout
        )
    );
    env.start_daemon_with(&args).await;
    env.wait_for_state("chatty", DomainState::Running).await;

    // Logging goes on under the new oxvirtd too.
    const LAST: u32 = 1100;
    print_sequence(&env, SECOND_RUN, LAST, 3).await;
    assert!(wait_for_line(&console_log, "SEQ-DONE-3").await);
    let all = check_rotated(&console_log);
    let first = assert_complete(&numbered(&all, "SEQ-"), LAST - 1, "console", &all);
    assert!(
        first < SECOND_RUN - 1,
        "what the guest printed while oxvirtd was down remains (from SEQ-{first})"
    );
    client.destroy("chatty").await.unwrap();
}
