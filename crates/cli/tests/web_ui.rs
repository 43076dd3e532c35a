//! The web UI (docs/web-ui.md), end to end in a real browser: a private oxvirtd with
//! `--listen 127.0.0.1:PORT` serving the embedded UI, an admin and a read-only user, a dir pool;
//! then `node tests/browser.mjs` in web/ drives Debian's headless Chromium through playwright-core
//! (both installed by scripts/setup.sh) and checks, in the page:
//!
//! - login; the host overview;
//! - the create-guest form defines the test kit's guest (direct kernel boot, a new volume, VNC);
//! - start; the serial console (xterm.js over the console WebSocket) shows the boot marker, and
//!   `uname -r` typed into it the kernel version; paste and copy through the clipboard;
//! - the graphical console's canvas (noVNC over the VNC WebSocket) differs from a blank one;
//! - shutdown from the guest page turns the list in another tab to "shut off" without a reload;
//! - an ISO upload with its progress bar; a read-only user sees no action buttons and the API
//!   refuses its session's actions with 403; delete asks first; logout ends the session.
//!
//! This file then checks from outside the browser what the page did: the guest is gone, the
//! uploaded volume holds the bytes the page sent.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use oxvirt_testkit::{guest_kit, BOOT_MARKER};
use support::{free_port, Daemon};

const GUEST: &str = "webguest";
const POOL: &str = "webpool";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Status line and body of `GET URL/`, by curl (the certificate is the daemon's self-signed one).
fn index_page(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--insecure", "--max-time", "30"])
        .args(["--write-out", "\nSTATUS=%{http_code}"])
        .arg(format!("{url}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once("\nSTATUS=").expect("curl's status line");
    (
        status.trim().parse().expect("a status code"),
        body.to_string(),
    )
}

#[test]
fn the_browser_ui_creates_runs_shows_and_stops_a_guest() {
    let web = web_dir();
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "{} has no node_modules: run scripts/setup.sh (it runs `npm ci` and `npm run build` there)",
        web.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/setup.sh (it installs Debian's chromium)"
    );

    let port = free_port();
    let daemon = Daemon::start_with(&["--listen", &format!("127.0.0.1:{port}")]);
    let url = format!("https://127.0.0.1:{port}");
    let (status, body) = index_page(&url);
    assert!(
        status == 200 && body.contains("<div id=\"app\">"),
        "GET / does not serve the built UI ({status}): build web/ (scripts/setup.sh) before oxvirtd\n{body}"
    );

    daemon.add_user("webadmin", "admin", "admin-password-1");
    daemon.add_user("webviewer", "read-only", "viewer-password-1");
    let pool_dir = daemon.dir.path().join("pool");
    std::fs::create_dir(&pool_dir).expect("pool directory");
    daemon
        .oxvirt(&["pool-define-as", POOL, "dir", "--target", utf8(&pool_dir)])
        .ok();
    daemon.oxvirt(&["pool-start", POOL]).ok();

    let kit = guest_kit();
    let artifacts = daemon.dir.path().join("browser");
    std::fs::create_dir(&artifacts).expect("artifacts directory");
    // Bounded: the script's own waits end well before this.
    let out = Command::new("timeout")
        .arg("900")
        .arg("node")
        .arg("tests/browser.mjs")
        .current_dir(&web)
        .env("OXVIRT_URL", &url)
        .env("OXVIRT_ADMIN_USER", "webadmin")
        .env("OXVIRT_ADMIN_PASSWORD", "admin-password-1")
        .env("OXVIRT_VIEWER_USER", "webviewer")
        .env("OXVIRT_VIEWER_PASSWORD", "viewer-password-1")
        .env("OXVIRT_POOL", POOL)
        .env("OXVIRT_GUEST", GUEST)
        .env("OXVIRT_KERNEL", &kit.kernel)
        .env("OXVIRT_INITRD", &kit.initramfs)
        .env("OXVIRT_KERNEL_VERSION", &kit.kernel_version)
        .env("OXVIRT_BOOT_MARKER", BOOT_MARKER)
        .env("OXVIRT_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (scripts/setup.sh installs Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Keep the screenshots: the tempdir goes with the daemon.
        let kept = std::env::temp_dir().join(format!("oxvirt-web-ui-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::fs::rename(&artifacts, &kept);
        panic!(
            "the browser test failed ({}); screenshots in {}\n{stdout}\n{stderr}\noxvirtd's log:\n{}",
            out.status,
            kept.display(),
            daemon.log()
        );
    }
    println!("{stdout}");

    // What the page did, seen from outside: the guest it deleted is gone, its disk volume stays,
    // and the ISO it uploaded holds the bytes it sent (3 MiB, "CD001" at 0x8001).
    let listed = daemon.oxvirt(&["list", "--all", "--name"]).ok();
    assert!(!listed.lines().any(|l| l.trim() == GUEST), "{listed}");
    assert!(pool_dir.join(format!("{GUEST}.qcow2")).exists());
    let iso = std::fs::read(pool_dir.join("web-test.iso")).expect("the uploaded volume");
    assert_eq!(iso.len(), 3 * 1024 * 1024);
    assert_eq!(&iso[0x8001..0x8006], b"CD001");
    let word = |at: usize| u32::from_le_bytes(iso[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(word(0x9000), 0x9000);
    assert_eq!(word(0x2f_f000), 0x2f_f000);
}
