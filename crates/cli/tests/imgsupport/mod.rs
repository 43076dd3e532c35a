//! Shared helpers for the `oxvirt img` tests (img_*.rs): run qemu-img/qemu-io and
//! `oxvirt img`, and write known content while keeping an in-memory copy of what the disk
//! should hold.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oxvirt_images::{Image, OpenOptions};

// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use oxvirt_testkit::process::{close, ok, p, run, spawn, spawn_guard, text};

/// `oxvirt img`, ready for its arguments.
pub fn ours_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxvirt"));
    command.arg("img");
    command
}

/// `args` after `oxvirt img`.
fn img_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["img"];
    all.extend_from_slice(args);
    all
}

pub fn ours(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_oxvirt"), &img_args(args))
}

pub fn ours_ok(args: &[&str]) -> String {
    ok(env!("CARGO_BIN_EXE_oxvirt"), &img_args(args))
}

/// `qemu-img check` must find nothing wrong.
pub fn qemu_check_clean(path: &Path) {
    let out = run("qemu-img", &["check", p(path)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {}: {}",
        path.display(),
        text(&out)
    );
}

/// `qemu-img compare` must call the two identical.
pub fn qemu_compare_identical(a: &Path, b: &Path) {
    let out = run("qemu-img", &["compare", p(a), p(b)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img compare {} {}: {}",
        a.display(),
        b.display(),
        text(&out)
    );
}

pub fn qemu_info_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&ok("qemu-img", &["info", "--output", "json", p(path)]))
        .expect("qemu-img json")
}

pub fn our_info_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&ours_ok(&["info", "--output", "json", p(path)])).expect("our json")
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes a set of unaligned, cluster-crossing, overlapping extents through our library and
/// applies the same writes to `expected`.
pub fn write_known_content(image_path: &Path, expected: &mut [u8], cluster: usize) {
    let mut image = Image::open(
        image_path,
        &OpenOptions {
            write: true,
            ..OpenOptions::default()
        },
    )
    .expect("open for writing");
    let size = expected.len();
    let extents = [
        (0usize, 4096usize),
        (cluster - 100, 300),                // crosses a cluster boundary
        (3 * cluster + 17, 2 * cluster + 5), // unaligned, several clusters
        (size / 2, cluster),                 // aligned whole cluster
        (size / 2 + 10, 20),                 // overwrite inside an allocated cluster
        (size - 777, 777),                   // the very end
    ];
    for (i, &(offset, len)) in extents.iter().enumerate() {
        let data = pattern(len, i as u64 + 1);
        image.write_at(&data, offset as u64).expect("write");
        expected[offset..offset + len].copy_from_slice(&data);
    }
    image.flush().expect("flush");
    close(image);
}

pub fn write_file(path: &Path, data: &[u8]) -> PathBuf {
    std::fs::write(path, data).expect("write expected file");
    path.to_path_buf()
}

/// Runs our tool like [`ours`], but gives up on it after `deadline`: a command that blocks
/// (e.g. opening a FIFO) is killed and the test fails saying so, instead of hanging the suite.
pub fn ours_within(deadline: std::time::Duration, args: &[&str]) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = spawn(
        ours_command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // The pipes reach end-of-file when the child exits; readers collect them meanwhile, so
    // the child never blocks on a full pipe, and this thread keeps `child` to kill it.
    let (sender, finished) = std::sync::mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout is piped")),
        Box::new(child.stderr.take().expect("stderr is piped")),
    ];
    for (index, mut pipe) in pipes.into_iter().enumerate() {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((index, bytes));
        });
    }
    let give_up = std::time::Instant::now() + deadline;
    let mut captured = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        match finished.recv_timeout(left) {
            Ok((index, bytes)) => captured[index] = bytes,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "oxvirt img {args:?} was still running after {deadline:?}: it blocked (killed it)"
                );
            }
        }
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("cannot wait for oxvirt img {args:?}: {e}"));
    let [stdout, stderr] = captured;
    Output {
        status,
        stdout,
        stderr,
    }
}
