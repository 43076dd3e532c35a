//! `migrate` to an `oxvirt+ssh://` destination: A and B in two network namespaces
//! (support/twohosts.rs), a real sshd of its own (Debian's OpenSSH, its own host key, config and
//! authorized keys in a temporary directory) in B's namespace on B's address. A's oxvirtd reaches
//! B's socket through `ssh ... oxvirt tunnel-socket SOCKET` and the stream goes through that
//! connection (always tunnelled): the counting guest moves live and goes on on B. A key B does
//! not authorize, or B's host key unknown: exit 1 naming ssh's refusal and B's host, the guest
//! untouched on A.

// Each test binary uses part of the shared harness.
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oxvirt_testkit::wait_for;
use support::counting::{assert_goes_on, boot_counting, boot_id, qcow2_disk};
use support::twohosts::{daemon_in, Lab, Netns, A_ADDRESS, B_ADDRESS};
use support::{oxvirt_bin, qemu_pids};

/// What the destination logs when a stream comes through its API (services/migration.rs).
const TUNNEL_LOG: &str = "the migration stream comes through the API connection (tunnelled)";
/// B's sshd's port (in B's namespace: nothing else listens there).
const SSH_PORT: u16 = 2222;

fn ssh_keygen(args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
}

/// An sshd in `ns` on B's address, everything of it in `dir`; killed on drop.
struct Sshd {
    child: Child,
    log: PathBuf,
}

impl Sshd {
    fn start(ns: &Netns, dir: &Path, authorized: &Path) -> Sshd {
        let host_key = dir.join("host_ed25519");
        ssh_keygen(&["-t", "ed25519", "-f", host_key.to_str().expect("utf-8")]);
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {SSH_PORT}\nListenAddress {B_ADDRESS}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile {}\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        // sshd's privilege separation directory (Debian's init makes it; none ran here).
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let log = dir.join("sshd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "/usr/sbin/sshd", "-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { child, log };
        let listening = wait_for(Duration::from_secs(30), || {
            Command::new("ip")
                .args(["netns", "exec", &ns.0, "ss", "-Htln"])
                .output()
                .map(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .contains(&format!("{B_ADDRESS}:{SSH_PORT}"))
                })
                .unwrap_or(false)
        });
        assert!(listening, "sshd never listened: {}", sshd.log());
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_guest_moves_live_through_ssh_and_a_refused_key_leaves_it_running() {
    let lab = Lab::new();
    // Shared storage: both namespaces see the same files.
    let disks = tempfile::Builder::new()
        .prefix("oxvirt-migssh-")
        .tempdir()
        .expect("tempdir");
    support::searchable(disks.path());
    let keys = tempfile::Builder::new()
        .prefix("oxvirt-migssh-keys-")
        .tempdir()
        .expect("tempdir");
    let api = |address: &str| format!("{address}:16514");
    let a = daemon_in(&lab.a, None, "3602000-3602099", &api(A_ADDRESS));
    let b = daemon_in(&lab.b, None, "3602100-3602199", &api(B_ADDRESS));

    let key = keys.path().join("id_ed25519");
    ssh_keygen(&["-t", "ed25519", "-f", key.to_str().expect("utf-8")]);
    let stranger = keys.path().join("stranger_ed25519");
    ssh_keygen(&["-t", "ed25519", "-f", stranger.to_str().expect("utf-8")]);
    let authorized = keys.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).expect("authorize the key");
    let sshd = Sshd::start(&lab.b, keys.path(), &authorized);
    let host_key = std::fs::read_to_string(keys.path().join("host_ed25519.pub")).expect("host key");
    let known_hosts = keys.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("[{B_ADDRESS}]:{SSH_PORT} {host_key}"))
        .expect("write known_hosts");
    let empty_known_hosts = keys.path().join("known_hosts.empty");
    std::fs::write(&empty_known_hosts, "").expect("write known_hosts.empty");
    let dest_with = |key: &Path, known_hosts: &Path| {
        format!(
            "oxvirt+ssh://root@{B_ADDRESS}:{SSH_PORT}{}?keyfile={}&known_hosts={}&oxvirt={}",
            b.socket.display(),
            key.display(),
            known_hosts.display(),
            oxvirt_bin().display()
        )
    };
    let dest = |key: &Path| dest_with(key, &known_hosts);

    let uuid = "5e0c9a7b-3d14-4f62-8b9e-a1c2d3e4f536";
    let disk = qcow2_disk(disks.path(), "ssh.qcow2");
    let mut console = boot_counting(&a, "ssh-vm", uuid, &disk);
    let booted = boot_id(&mut console, 3);
    drop(console);

    // The disks cannot be copied through ssh (the stream is tunnelled): refused up front.
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--copy-storage-all",
        "ssh-vm",
        &dest(&key),
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("cannot copy disks"), "{run:?}");

    // A key B does not authorize: ssh's refusal, naming B; nothing moved.
    let run = a.oxvirt(&["migrate", "--live", "ssh-vm", &dest(&stranger)]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!("root@{B_ADDRESS}:{SSH_PORT}"))
            && run.stderr.contains("Permission denied"),
        "{run:?}\nsshd's log:\n{}",
        sshd.log()
    );
    // B's host key unknown (ssh never asks: BatchMode): refused too.
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "ssh-vm",
        &dest_with(&key, &empty_known_hosts),
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!("root@{B_ADDRESS}:{SSH_PORT}"))
            && run.stderr.contains("Host key verification failed"),
        "{run:?}"
    );
    // libvirt's no_verify=1: the same unknown host key passes (ssh checks nothing and writes no
    // known hosts file). A domain of the guest's name on B makes it stop at B's prepare, which
    // ssh had to get through to refuse it.
    let other = a
        .oxvirt(&["dumpxml", "ssh-vm"])
        .ok()
        .replace(uuid, "5e0c9a7b-3d14-4f62-8b9e-a1c2d3e4f537");
    b.define("ssh-vm.xml", &other).1.ok();
    let unverified = format!(
        "oxvirt+ssh://root@{B_ADDRESS}:{SSH_PORT}{}?keyfile={}&oxvirt={}&no_verify=1",
        b.socket.display(),
        key.display(),
        oxvirt_bin().display()
    );
    let run = a.oxvirt(&["migrate", "--live", "ssh-vm", &unverified]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("already defined") && !run.stderr.contains("Host key"),
        "{run:?}\nsshd's log:\n{}",
        sshd.log()
    );
    // ssh would have added B's key to the known hosts of the user it runs as (root's: ssh takes
    // the home directory from the password database).
    let remembered = std::fs::read_to_string("/root/.ssh/known_hosts").unwrap_or_default();
    assert!(
        !remembered.contains(&format!("[{B_ADDRESS}]:{SSH_PORT}")),
        "{remembered}"
    );
    b.oxvirt(&["undefine", "ssh-vm"]).ok();
    assert_eq!(a.oxvirt(&["domstate", "ssh-vm"]).ok(), "running\n\n");
    assert_eq!(b.oxvirt(&["list", "--all", "--name"]).ok(), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert_goes_on(&a, "A", "ssh-vm", &booted, 10);

    // The key B authorizes: the guest moves live, its stream through the ssh connection.
    let run = a.oxvirt(&[
        "migrate",
        "--live",
        "--persistent",
        "--undefinesource",
        "ssh-vm",
        &dest(&key),
    ]);
    assert_eq!(
        run.code,
        Some(0),
        "{run:?}\nB's log:\n{}\nsshd's log:\n{}",
        b.log(),
        sshd.log()
    );
    assert!(b.log().contains(TUNNEL_LOG), "{}", b.log());
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
    assert_eq!(
        b.oxvirt(&["domstate", "--reason", "ssh-vm"]).ok(),
        "running (migrated)\n\n"
    );
    assert_eq!(a.oxvirt(&["list", "--all", "--name"]).ok(), "\n");
    assert_eq!(qemu_pids(uuid).len(), 1, "one QEMU of the guest runs");
    assert_goes_on(&b, "B", "ssh-vm", &booted, 30);
    b.oxvirt(&["destroy", "ssh-vm"]).ok();
}
