//! Network disks (`<disk type='network'>`) served by real servers on this host, and the secrets
//! their `<auth>` names: an NBD export (qemu-nbd on a Unix socket) and an HTTP image behind
//! Basic authentication (a small Python server with Range support, as QEMU's curl driver
//! needs). The guest must read each server's bytes; the password must reach QEMU without being
//! on its command line or left in a file.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::TestEnv;
use oxvirt_api::{code, ClientError};

const PASSWORD: &str = "s3cret-pw-for-http";
const SECRET_UUID: &str = "6f1c2a4e-0c1a-4d2b-9a51-0000000003aa";

/// An HTTP server for one file, with Range requests and Basic authentication (user `guest`,
/// password [`PASSWORD`]); prints its port on the first line.
const HTTP_SERVER: &str = r#"
import base64, http.server, os, sys
path, password = sys.argv[1], sys.argv[2]
expected = "Basic " + base64.b64encode(("guest:" + password).encode()).decode()
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def send_file(self, body):
        size = os.path.getsize(path)
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="disk"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, size - 1
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].partition("-")
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))
    def do_HEAD(self):
        self.send_file(False)
    def do_GET(self):
        self.send_file(True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A child process killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn image_with(path: &Path, marker: &str) {
    let mut bytes = marker.as_bytes().to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(path, bytes).unwrap();
}

fn start_nbd(image: &Path, socket: &Path) -> Server {
    let child = Command::new("qemu-nbd")
        .args(["--persistent", "--shared=4", "--read-only", "--format=raw"])
        .args(["--export-name=data", "--socket"])
        .arg(socket)
        .arg(image)
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-nbd (package qemu-utils)");
    let server = Server(child);
    assert!(
        oxvirt_testkit::wait_for(Duration::from_secs(10), || socket.exists()),
        "qemu-nbd did not create {}",
        socket.display()
    );
    server
}

fn start_http(image: &Path) -> (Server, u16) {
    let mut child = Command::new("python3")
        .args(["-c", HTTP_SERVER])
        .arg(image)
        .arg(PASSWORD)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().parse().expect("the HTTP server's port");
    (server, port)
}

async fn in_guest(env: &TestEnv, name: &str, command: &str) -> String {
    let mut console = env.console(name).await;
    tokio::task::block_in_place(|| console.run(command, Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("no answer from the guest to `{command}`"))
}

fn secret_xml() -> String {
    format!(
        "<secret ephemeral='no' private='yes'><uuid>{SECRET_UUID}</uuid>\
         <usage type='iscsi'><target>http-disk</target></usage></secret>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_read_nbd_and_authenticated_http_disks() {
    let mut env = TestEnv::new();
    env.start_daemon().await;
    let client = env.client();

    let nbd_image = env.dir.path().join("nbd.raw");
    image_with(&nbd_image, "NBD-EXPORT-DATA");
    let nbd_socket = env.dir.path().join("nbd.sock");
    let _nbd = start_nbd(&nbd_image, &nbd_socket);
    let http_image = env.dir.path().join("http.raw");
    image_with(&http_image, "HTTP-DISK-DATA!");
    let (_http, port) = start_http(&http_image);

    let disks = format!(
        "    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='data'>
        <host transport='unix' socket='{}'/>
      </source>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='http' name='/disk.raw'>
        <host name='127.0.0.1' port='{port}'/>
        <auth username='guest'>
          <secret type='iscsi' usage='http-disk'/>
        </auth>
      </source>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
",
        nbd_socket.display()
    );
    let xml = env
        .domain_xml("netdisks", None)
        .replace("  <devices>\n", &format!("  <devices>\n{disks}"));
    client.define_domain(&xml).await.unwrap();
    // dumpxml prints the network sources back as libvirt does.
    let dumped = client.domain_xml("netdisks").await.unwrap();
    assert!(
        dumped.contains(&format!(
            "<host transport='unix' socket='{}'/>",
            nbd_socket.display()
        )),
        "{dumped}"
    );
    assert!(
        dumped.contains("<secret type='iscsi' usage='http-disk'/>"),
        "{dumped}"
    );

    // No secret yet: the start is refused naming the disk, and nothing runs.
    match client.start("netdisks").await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::INVALID_STATE, "{}", e.message);
            assert!(e.message.contains("disk 'vdb'"), "{}", e.message);
            assert!(e.message.contains("usage 'http-disk'"), "{}", e.message);
        }
        other => panic!("start without its secret: {other:?}"),
    }

    // The secret, defined and set as virsh does it; a private one cannot be read back.
    let defined = client.define_secret(&secret_xml()).await.unwrap();
    assert_eq!(defined.uuid, SECRET_UUID);
    assert!(!defined.has_value);
    let encoded = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    let set = client
        .set_secret_value(SECRET_UUID, &encoded)
        .await
        .unwrap();
    assert!(set.has_value);
    match client.secret_value(SECRET_UUID).await {
        Err(ClientError::Api(e)) => assert!(e.message.contains("private"), "{}", e.message),
        other => panic!("reading a private secret: {other:?}"),
    }
    // One secret per usage.
    let clash = secret_xml().replace(SECRET_UUID, "6f1c2a4e-0c1a-4d2b-9a51-0000000003ab");
    match client.define_secret(&clash).await {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, code::ALREADY_EXISTS, "{}", e.message);
            assert!(e.message.contains(SECRET_UUID), "{}", e.message);
        }
        other => panic!("a second secret for the same usage: {other:?}"),
    }

    client.start("netdisks").await.unwrap();
    env.wait_for_boot("netdisks").await;
    let seen = in_guest(
        &env,
        "netdisks",
        "head -c 15 /dev/vda; echo; head -c 15 /dev/vdb; echo",
    )
    .await;
    assert!(seen.contains("NBD-EXPORT-DATA"), "{seen}");
    assert!(seen.contains("HTTP-DISK-DATA!"), "{seen}");

    // The password is on no command line and in no file of the run directory.
    let uuid = client.domain_info("netdisks").await.unwrap().uuid;
    let pids = env.pids_mentioning(&uuid);
    assert!(!pids.is_empty());
    // QEMU runs as the guest's user and never connects to the NBD server by path (the
    // server's socket is root's): oxvirtd connected and handed it the socket, at 100.
    let qemu = pids
        .iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("qemu"))
        })
        .expect("the guest's QEMU");
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .expect("a Uid line");
    assert_ne!(uid, "0", "QEMU runs as root:\n{status}");
    let argv = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let argv = String::from_utf8_lossy(&argv);
    assert!(
        !argv.contains(&*nbd_socket.to_string_lossy()),
        "QEMU names the NBD socket: {argv}"
    );
    assert!(
        argv.contains(r#""server":{"str":"100","type":"fd"}"#),
        "{argv}"
    );
    let passed = std::fs::read_link(format!("/proc/{qemu}/fd/100")).unwrap();
    assert!(
        passed.to_string_lossy().starts_with("socket:"),
        "{}",
        passed.display()
    );
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
            "the password is on a command line"
        );
    }
    for entry in walk(&env.state_dir) {
        if let Ok(bytes) = std::fs::read(&entry) {
            let is_database = entry
                .extension()
                .is_some_and(|e| e == "db" || e == "db-wal")
                || entry.to_string_lossy().contains("/backups/");
            assert!(
                is_database || !String::from_utf8_lossy(&bytes).contains(PASSWORD),
                "the password was left in {}",
                entry.display()
            );
        }
    }
    client.destroy("netdisks").await.unwrap();

    // A wrong password: QEMU is refused by the server, the start fails and nothing runs.
    let wrong = base64::engine::general_purpose::STANDARD.encode("wrong");
    client.set_secret_value(SECRET_UUID, &wrong).await.unwrap();
    assert!(
        client.start("netdisks").await.is_err(),
        "a start with a wrong password succeeded"
    );
    assert!(env.pids_mentioning(&uuid).is_empty());

    // An NBD socket nobody serves: oxvirtd's own connect fails, naming the disk and the path,
    // before any QEMU starts.
    let gone = env.dir.path().join("nobody.sock");
    let xml = env.domain_xml("nbdgone", None).replace(
        "  <devices>\n",
        &format!(
            "  <devices>\n    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd'><host transport='unix' socket='{}'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>\n",
            gone.display()
        ),
    );
    client.define_domain(&xml).await.unwrap();
    let gone_uuid = client.domain_info("nbdgone").await.unwrap().uuid;
    match client.start("nbdgone").await {
        Err(ClientError::Api(e)) => {
            assert!(
                e.message.contains("the NBD server of disk 'vda'")
                    && e.message.contains(&*gone.to_string_lossy()),
                "{}",
                e.message
            );
        }
        other => panic!("a start with nobody serving its NBD socket: {other:?}"),
    }
    assert!(env.pids_mentioning(&gone_uuid).is_empty());
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
