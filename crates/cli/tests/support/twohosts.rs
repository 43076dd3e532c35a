//! Two hosts on one machine for the migration tests to another host: A and B in two network
//! namespaces joined by a bridge (in a third namespace; nothing in the host's own), each
//! oxvirtd with its TLS API (migration_remote.rs, migration_tunnel.rs).

use std::path::Path;
use std::process::{Command, Stdio};

use super::Daemon;

pub const A_ADDRESS: &str = "10.79.0.11";
pub const B_ADDRESS: &str = "10.79.0.12";

pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// A network namespace, deleted (with what runs in it) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("oxmigr-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The switch (a bridge in a namespace of its own) and hosts A and B on it.
pub struct Lab {
    pub switch: Netns,
    pub a: Netns,
    pub b: Netns,
}

impl Lab {
    pub fn new() -> Lab {
        let switch = Netns::new("sw");
        ip(&["-n", &switch.0, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch.0, "link", "set", "br0", "up"]);
        let a = Netns::new("a");
        let b = Netns::new("b");
        for (ns, outer, address) in [(&a, "va", A_ADDRESS), (&b, "vb", B_ADDRESS)] {
            ip(&[
                "-n", &switch.0, "link", "add", outer, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.0,
            ]);
            ip(&["-n", &switch.0, "link", "set", outer, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns.0,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        }
        Lab { switch, a, b }
    }

    /// A's cable to the switch, pulled or plugged.
    pub fn a_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.switch.0,
            "link",
            "set",
            "va",
            if up { "up" } else { "down" },
        ]);
    }
}

/// oxvirtd in `ns`, with its TLS API on `listen`; with `covered`, in a mount namespace of its
/// own where an empty tmpfs covers that directory.
pub fn daemon_in(ns: &Netns, covered: Option<&Path>, users: &str, listen: &str) -> Daemon {
    let mut wrapper: Vec<String> = ["ip", "netns", "exec", &ns.0]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(covered) = covered {
        wrapper.extend(super::own_mounts_wrapper(covered));
    }
    Daemon::start_under(wrapper, &["--qemu-user-range", users, "--listen", listen])
}

/// Whether `path` exists in `daemon`'s mount namespace.
pub fn exists_for(daemon: &Daemon, path: &Path) -> bool {
    Command::new("nsenter")
        .args([
            "--mount",
            "--target",
            &daemon.pid().to_string(),
            "test",
            "-e",
        ])
        .arg(path)
        .status()
        .expect("run nsenter")
        .success()
}

pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn token(daemon: &Daemon) -> String {
    let out = daemon.oxvirt(&["token", "create", "--role", "admin"]).ok();
    let token = out.lines().next().expect("a token line").trim().to_string();
    assert!(token.starts_with("oxv_"), "{out}");
    token
}
