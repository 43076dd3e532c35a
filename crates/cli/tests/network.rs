//! Virtual networks end to end: the `oxvirt` CLI against oxvirtd running inside a network
//! namespace each test creates, with real QEMU (TCG) guests from the guest kit. What the guests
//! see (DHCP leases, pings, DNS answers, NICs in /sys) is checked from inside them.

mod netsupport;

use netsupport::{boot_shell, dhcp, guest, network_interface, NetDaemon, Netns, SHORT};
use std::path::Path;

use oxvirt_testkit::wait_for;

/// The TAP devices in the namespace (named by oxvirt: `oxtapN`).
fn taps(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.starts_with("oxtap"))
        .collect()
}

/// The nftables rules of `ruleset` that belong to bridge `bridge`'s chains.
fn chain_count(ruleset: &str, chain: &str) -> usize {
    ruleset.matches(&format!("chain {chain} ")).count()
}

#[test]
fn nat_network_gives_guests_leases_dns_and_each_other() {
    let ns = Netns::new();
    let daemon = NetDaemon::start(&ns, true);

    // A fresh daemon defines libvirt's default network, inactive and not autostarted.
    assert_eq!(
        daemon.oxvirt(&["net-list", "--all"]).ok(),
        " Name      State      Autostart   Persistent\n\
         ----------------------------------------------\n \
         default   inactive   no          yes\n\n"
    );
    assert!(
        !ns.has_link("oxbr0"),
        "the default network must not start by itself"
    );
    start_default_network(&daemon);
    assert_eq!(
        daemon.oxvirt(&["net-list", "--all"]).ok(),
        " Name      State    Autostart   Persistent\n\
         --------------------------------------------\n \
         default   active   yes         yes\n\n"
    );
    let info = daemon.oxvirt(&["net-info", "default"]).ok();
    assert!(info.contains("Bridge:         oxbr0\n"), "{info}");
    assert!(ns
        .ip(&["-4", "addr", "show", "oxbr0"])
        .contains("192.168.122.1/24"));

    // Give the network a DNS host: net-edit needs the network inactive.
    daemon.oxvirt(&["net-destroy", "default"]).ok();
    let edit = daemon
        .oxvirt_with_env(
            &["net-edit", "default"],
            &[(
                "EDITOR",
                "sed -i \"s#  <ip #  <dns><host ip='192.168.122.50'><hostname>db</hostname></host></dns>\\n  <ip #\"",
            )],
        )
        .ok();
    assert_eq!(edit, "Network default XML configuration edited.\n\n");
    assert!(daemon
        .oxvirt(&["net-dumpxml", "default"])
        .ok()
        .contains("<hostname>db</hostname>"));
    daemon.oxvirt(&["net-start", "default"]).ok();

    for name in ["g1", "g2"] {
        daemon
            .define_guest(name, &network_interface("default", None))
            .ok();
        daemon.oxvirt(&["start", name]).ok();
    }
    let mut g1 = daemon.console("g1");
    let mut g2 = daemon.console("g2");
    boot_shell(&mut g1);
    boot_shell(&mut g2);
    let a1 = dhcp(&mut g1, "eth0");
    let a2 = dhcp(&mut g2, "eth0");
    assert!(a1.starts_with("192.168.122.") && a2.starts_with("192.168.122."));

    // domifaddr and net-dhcp-leases report what the guests got.
    let (tap1, mac1) = daemon.interfaces("g1")[0].clone();
    assert!(tap1.starts_with("oxtap"), "{tap1}");
    let addr = daemon.oxvirt(&["domifaddr", "g1"]).ok();
    let row = format!(" {tap1:<10} {mac1:<17}    ipv4         {a1}/24\n");
    assert!(addr.contains(&row), "want {row:?} in:\n{addr}");
    let leases = daemon.oxvirt(&["net-dhcp-leases", "default"]).ok();
    assert!(
        leases.contains(&format!("{a1}/24")) && leases.contains(&format!("{a2}/24")),
        "{leases}"
    );

    // The bridge answers, dnsmasq resolves the network's DNS host, the guests reach each other.
    let ping = guest(&mut g1, "ping -c 2 -W 5 192.168.122.1", SHORT);
    assert!(ping.contains("2 packets received"), "{ping}");
    let lookup = guest(&mut g1, "nslookup db 192.168.122.1", SHORT);
    assert!(lookup.contains("192.168.122.50"), "{lookup}");
    let ping = guest(&mut g1, &format!("ping -c 2 -W 5 {a2}"), SHORT);
    assert!(ping.contains("2 packets received"), "{ping}");
    let stats = daemon.oxvirt(&["domifstat", "g1", &tap1]).ok();
    let rx_packets: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tap1} rx_packets ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rx_packets >= 2, "{stats}");

    // Hotplug: the running guest sees a second NIC.
    assert_eq!(
        attach_live_nic(&daemon, "g1"),
        "Interface attached successfully\n\n"
    );
    assert_eq!(daemon.interfaces("g1").len(), 2);
    let seen = wait_for(SHORT, || {
        guest(&mut g1, "ls /sys/class/net", SHORT).contains("eth1")
    });
    assert!(seen, "the guest never saw eth1");
    // Live only: the definition still has one interface.
    let stored = daemon.oxvirt(&["dumpxml", "g1"]).ok();
    assert_eq!(stored.matches("<interface ").count(), 1, "{stored}");
    // The hot-plugged NIC gets a lease too, and can be unplugged again.
    let (hot_tap, hot_mac) = daemon.interfaces("g1")[1].clone();
    let a1b = dhcp(&mut g1, "eth1");
    let addr = daemon.oxvirt(&["domifaddr", "g1"]).ok();
    assert!(
        addr.contains(&format!(
            " {hot_tap:<10} {hot_mac:<17}    ipv4         {a1b}/24\n"
        )),
        "{addr}"
    );
    assert_eq!(
        daemon
            .oxvirt(&[
                "detach-interface",
                "g1",
                "--type",
                "network",
                "--mac",
                &hot_mac
            ])
            .ok(),
        "Interface detached successfully\n\n"
    );
    let gone = wait_for(SHORT, || {
        !guest(&mut g1, "ls /sys/class/net", SHORT).contains("eth1")
    });
    assert!(gone, "the guest still has eth1");
    assert!(!ns.has_link(&hot_tap));
    assert_eq!(daemon.interfaces("g1").len(), 1);

    // The host's ARP table saw g1 (it pinged the bridge).
    let arp = daemon.oxvirt(&["domifaddr", "g1", "--source", "arp"]).ok();
    assert!(arp.contains(&format!("{a1}/0")), "{arp}");

    // A network in use cannot be undefined.
    let error = daemon.oxvirt(&["net-undefine", "default"]).error();
    assert_eq!(error, "error: network default is in use by domain g1");

    // A guest that stops takes its TAPs with it.
    assert_eq!(taps(&ns).len(), 2);
    daemon.oxvirt(&["destroy", "g1"]).ok();
    assert_eq!(taps(&ns).len(), 1, "{:?}", ns.links());

    // net-destroy with g2 running is allowed: bridge, dnsmasq and the nft table go.
    daemon.oxvirt(&["net-destroy", "default"]).ok();
    assert!(!ns.has_link("oxbr0"));
    assert!(ns.processes_matching("dnsmasq").is_empty());
    assert!(!ns.nft_ruleset().contains("table ip oxvirt"));
    let tap2 = daemon.interfaces("g2")[0].0.clone();
    assert!(!ns.link_details(&tap2).contains("master"));
    // net-start puts g2's TAP back on the bridge; g2 renews its lease through it.
    daemon.oxvirt(&["net-start", "default"]).ok();
    assert!(ns.link_details(&tap2).contains("master oxbr0"));
    // The new bridge port goes through STP's listening and learning states first.
    let mut ping = String::new();
    let reached = wait_for(SHORT, || {
        ping = guest(&mut g2, "ping -c 1 -W 2 192.168.122.1", SHORT);
        ping.contains("1 packets received")
    });
    assert!(reached, "{ping}");
}

#[test]
fn bridged_guest_talks_to_a_veth_peer() {
    let ns = Netns::new();
    let peer = Netns::new();
    // A host bridge with a veth whose other end is in a second namespace, 10.77.0.2/24.
    ns.ip(&["link", "add", "brtest", "type", "bridge"]);
    ns.ip(&["link", "set", "brtest", "up"]);
    ns.ip(&[
        "link", "add", "vhost0", "type", "veth", "peer", "name", "vpeer0",
    ]);
    ns.ip(&["link", "set", "vhost0", "master", "brtest", "up"]);
    ns.ip(&["link", "set", "vpeer0", "netns", &peer.name]);
    peer.ip(&["addr", "add", "10.77.0.2/24", "dev", "vpeer0"]);
    peer.ip(&["link", "set", "vpeer0", "up"]);

    let daemon = NetDaemon::start(&ns, false);
    assert_eq!(
        daemon.oxvirt(&["net-list", "--all"]).ok(),
        " Name   State   Autostart   Persistent\n----------------------------------------\n\n"
    );

    // A bridge that does not exist: a clear error, nothing left behind.
    daemon
        .define_guest(
            "nobridge",
            "    <interface type='bridge'><source bridge='nosuchbr'/><model type='virtio'/></interface>",
        )
        .ok();
    let error = daemon.oxvirt(&["start", "nobridge"]).error();
    assert!(
        error.contains("bridge 'nosuchbr'") && error.contains("nosuchbr"),
        "{error}"
    );
    assert!(taps(&ns).is_empty());

    daemon
        .define_guest(
            "bridged",
            "    <interface type='bridge'><source bridge='brtest'/><model type='virtio'/></interface>",
        )
        .ok();
    daemon.oxvirt(&["start", "bridged"]).ok();
    let (tap, _mac) = daemon.interfaces("bridged")[0].clone();
    assert!(ns.link_details(&tap).contains("master brtest"));
    let listed = daemon.oxvirt(&["domiflist", "bridged"]).ok();
    assert!(
        listed.contains(&format!(" {tap}      bridge   brtest   virtio ")),
        "{listed}"
    );

    let mut console = daemon.console("bridged");
    boot_shell(&mut console);
    guest(
        &mut console,
        "ip addr add 10.77.0.3/24 dev eth0; ip link set eth0 up",
        SHORT,
    );
    // The bridge may still be learning; a few tries.
    let mut answer = String::new();
    let reached = wait_for(SHORT, || {
        answer = guest(&mut console, "ping -c 1 -W 2 10.77.0.2", SHORT);
        answer.contains("1 packets received")
    });
    assert!(reached, "{answer}");
    // The peer saw the guest's MAC.
    let neighbours = peer.ip(&["neigh", "show", "dev", "vpeer0"]);
    assert!(neighbours.contains("10.77.0.3"), "{neighbours}");

    daemon.oxvirt(&["destroy", "bridged"]).ok();
    assert!(taps(&ns).is_empty());
    assert!(ns.has_link("brtest"), "a host bridge is never removed");
}

/// `<interface type='ethernet'>`: oxvirtd makes the guest a TAP of its own on no bridge (the
/// host routes it as it likes) and removes it when the guest stops; with `managed='no'` the
/// guest uses the host's TAP, which outlives it.
#[test]
fn ethernet_guest_gets_a_tap_of_its_own() {
    let ns = Netns::new();
    let daemon = NetDaemon::start(&ns, false);
    daemon
        .define_guest(
            "eth",
            "    <interface type='ethernet'><model type='virtio'/></interface>",
        )
        .ok();
    daemon.oxvirt(&["start", "eth"]).ok();
    let (tap, _mac) = daemon.interfaces("eth")[0].clone();
    assert!(tap.starts_with("oxtap"), "{tap}");
    assert!(
        !ns.link_details(&tap).contains("master"),
        "attached to nothing"
    );
    let listed = daemon.oxvirt(&["domiflist", "eth"]).ok();
    assert!(listed.contains("ethernet"), "{listed}");
    // The host side routes to the guest through the TAP.
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", &tap]);
    let mut console = daemon.console("eth");
    boot_shell(&mut console);
    guest(
        &mut console,
        "ip addr add 10.78.0.2/24 dev eth0; ip link set eth0 up",
        SHORT,
    );
    let mut answer = String::new();
    let reached = wait_for(SHORT, || {
        answer = guest(&mut console, "ping -c 1 -W 2 10.78.0.1", SHORT);
        answer.contains("1 packets received")
    });
    assert!(reached, "{answer}");
    daemon.oxvirt(&["destroy", "eth"]).ok();
    assert!(taps(&ns).is_empty(), "the guest's TAP goes with it");

    // managed='no': the host's TAP, opened by name, never removed.
    ns.ip(&[
        "tuntap", "add", "dev", "hosttap0", "mode", "tap", "vnet_hdr",
    ]);
    daemon
        .define_guest(
            "ethhost",
            "    <interface type='ethernet'><target dev='hosttap0' managed='no'/><model type='virtio'/></interface>",
        )
        .ok();
    daemon.oxvirt(&["start", "ethhost"]).ok();
    assert_eq!(daemon.interfaces("ethhost")[0].0, "hosttap0");
    assert!(taps(&ns).is_empty(), "no TAP made for it");
    daemon.oxvirt(&["destroy", "ethhost"]).ok();
    assert!(ns.has_link("hosttap0"), "the host's TAP stays");
}

/// `<interface type='direct'>`: oxvirtd makes a macvtap device on the host interface with the
/// guest's MAC, QEMU gets its /dev/tapN, and the guest talks to a macvlan sibling on the same
/// interface (bridge mode); the device goes at destroy.
#[test]
fn direct_guest_talks_through_a_macvtap() {
    let ns = Netns::new();
    ns.ip(&[
        "link", "add", "low0", "type", "veth", "peer", "name", "low1",
    ]);
    ns.ip(&["link", "set", "low0", "up"]);
    ns.ip(&["link", "set", "low1", "up"]);
    ns.ip(&[
        "link", "add", "link", "low0", "name", "mvl0", "type", "macvlan", "mode", "bridge",
    ]);
    ns.ip(&["addr", "add", "10.79.0.1/24", "dev", "mvl0"]);
    ns.ip(&["link", "set", "mvl0", "up"]);
    let daemon = NetDaemon::start(&ns, false);
    daemon
        .define_guest(
            "direct",
            "    <interface type='direct'><mac address='52:54:00:79:00:02'/><source dev='low0' mode='bridge'/><model type='virtio'/></interface>",
        )
        .ok();
    daemon.oxvirt(&["start", "direct"]).ok();
    let (macvtap, _mac) = daemon.interfaces("direct")[0].clone();
    assert!(macvtap.starts_with("oxmvt"), "{macvtap}");
    let details = ns.link_details(&macvtap);
    assert!(details.contains("52:54:00:79:00:02"), "{details}");
    let mut console = daemon.console("direct");
    boot_shell(&mut console);
    guest(
        &mut console,
        "ip addr add 10.79.0.2/24 dev eth0; ip link set eth0 up",
        SHORT,
    );
    let mut answer = String::new();
    let reached = wait_for(SHORT, || {
        answer = guest(&mut console, "ping -c 1 -W 2 10.79.0.1", SHORT);
        answer.contains("1 packets received")
    });
    assert!(reached, "{answer}");
    daemon.oxvirt(&["destroy", "direct"]).ok();
    assert!(!ns.has_link(&macvtap), "the macvtap goes with the guest");
    assert!(ns.has_link("low0"), "the host interface stays");
}

#[test]
fn restarts_adopt_networks_and_a_killed_daemon_leaves_no_orphans() {
    let ns = Netns::new();
    let mut daemon = NetDaemon::start(&ns, true);
    start_default_network(&daemon);
    daemon
        .define_guest("keeper", &network_interface("default", None))
        .ok();
    daemon.oxvirt(&["start", "keeper"]).ok();
    let (tap, _) = daemon.interfaces("keeper")[0].clone();
    let bridge_index = |ns: &Netns| {
        ns.ip(&["-o", "link", "show", "oxbr0"])
            .split(':')
            .next()
            .map(str::to_string)
    };
    let index_before = bridge_index(&ns);
    let dnsmasq_before = ns.processes_matching("dnsmasq");
    assert_eq!(dnsmasq_before.len(), 1);

    // A clean stop and start: the network and the guest are adopted, nothing is duplicated.
    daemon.stop();
    assert!(ns.has_link("oxbr0") && ns.has_link(&tap));
    daemon.launch();
    let list = daemon.oxvirt(&["net-list"]).ok();
    assert_eq!(list.matches("default").count(), 1, "{list}");
    assert!(list.contains(" default   active   yes "), "{list}");
    assert_eq!(bridge_index(&ns), index_before);
    assert_eq!(ns.processes_matching("dnsmasq"), dnsmasq_before);
    let ruleset = ns.nft_ruleset();
    assert_eq!(chain_count(&ruleset, "nat_oxbr0"), 1, "{ruleset}");
    assert_eq!(chain_count(&ruleset, "fwd_oxbr0"), 1, "{ruleset}");
    assert_eq!(ns.processes_matching("qemu-system").len(), 1);
    assert!(daemon.oxvirt(&["list"]).ok().contains("keeper"));
    assert!(ns.link_details(&tap).contains("master oxbr0"));

    // SIGKILL the daemon, then the guest dies while nobody watches: the next start finds the
    // guest gone and removes its TAP.
    daemon.kill();
    for pid in ns.processes_matching("qemu-system") {
        // SAFETY: kill(2) on the test guest in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(wait_for(SHORT, || ns
        .processes_matching("qemu-system")
        .is_empty()));
    assert!(
        ns.has_link(&tap),
        "the TAP outlives its guest until oxvirtd runs"
    );
    daemon.launch();
    assert!(!ns.has_link(&tap), "orphan TAP left: {:?}", ns.links());
    assert!(taps(&ns).is_empty());
    assert_eq!(daemon.oxvirt(&["domstate", "keeper"]).ok(), "shut off\n\n");
    assert_eq!(ns.processes_matching("dnsmasq"), dnsmasq_before);
    // The guest starts again on the adopted network.
    daemon.oxvirt(&["start", "keeper"]).ok();
    assert_eq!(taps(&ns).len(), 1);
    daemon.oxvirt(&["destroy", "keeper"]).ok();
    assert!(taps(&ns).is_empty());
}

#[test]
fn bad_network_input_is_refused_and_nothing_is_half_created() {
    let ns = Netns::new();
    let daemon = NetDaemon::start(&ns, true);
    let links_before = ns.links();
    let listing = daemon.oxvirt(&["net-list", "--all"]).ok();
    let define = |name: &str, xml: &str| {
        let file = daemon.write(&format!("{name}.xml"), xml);
        daemon.oxvirt(&["net-define", &file])
    };
    let unchanged = || {
        assert_eq!(daemon.oxvirt(&["net-list", "--all"]).ok(), listing);
        assert_eq!(ns.links(), links_before);
    };

    let error = define(
        "overlap",
        "<network><name>overlap</name><ip address='192.168.122.129' prefix='25'/></network>",
    )
    .error();
    assert!(
        error.contains("conflicts with defined network 'default'") && error.contains("overlaps"),
        "{error}"
    );
    unchanged();

    let error = define(
        "longbridge",
        "<network><name>longbridge</name><bridge name='averyveryverylongbridgename'/></network>",
    )
    .error();
    assert!(error.contains("averyveryverylongbridgename"), "{error}");
    unchanged();

    ns.ip(&[
        "link", "add", "taken0", "type", "veth", "peer", "name", "taken0p",
    ]);
    let links_before = ns.links();
    let error = define(
        "taken",
        "<network><name>taken</name><bridge name='taken0'/><ip address='10.50.0.1' prefix='24'/></network>",
    )
    .error();
    assert!(
        error.contains("taken0") && error.contains("not this network's"),
        "{error}"
    );
    assert_eq!(daemon.oxvirt(&["net-list", "--all"]).ok(), listing);
    assert_eq!(ns.links(), links_before);

    let error = define(
        "range",
        "<network><name>range</name><ip address='10.60.0.1' prefix='24'><dhcp><range start='10.60.1.2' end='10.60.1.9'/></dhcp></ip></network>",
    )
    .error();
    assert!(error.contains("10.60.1.2"), "{error}");
    assert_eq!(daemon.oxvirt(&["net-list", "--all"]).ok(), listing);

    // A device that takes the bridge name after the definition: the start fails cleanly.
    let file = daemon.write(
        "late.xml",
        "<network><name>late</name><bridge name='late0'/><ip address='10.70.0.1' prefix='24'><dhcp><range start='10.70.0.2' end='10.70.0.9'/></dhcp></ip></network>",
    );
    assert_eq!(
        daemon.oxvirt(&["net-define", &file]).ok(),
        format!("Network late defined from {file}\n\n")
    );
    ns.ip(&[
        "link", "add", "late0", "type", "veth", "peer", "name", "late0p",
    ]);
    let dnsmasq_before = ns.processes_matching("dnsmasq");
    let error = daemon.oxvirt(&["net-start", "late"]).error();
    assert!(error.contains("late0"), "{error}");
    assert!(daemon
        .oxvirt(&["net-list", "--all"])
        .ok()
        .contains(" late      inactive   no          yes"));
    assert_eq!(ns.processes_matching("dnsmasq"), dnsmasq_before);
    assert!(!ns.nft_ruleset().contains("late0"));

    // A guest on an inactive network does not start, and leaves no TAP.
    daemon
        .define_guest("onlate", &network_interface("late", None))
        .ok();
    let error = daemon.oxvirt(&["start", "onlate"]).error();
    assert_eq!(
        error,
        "error: domain 'onlate': network 'late' is not active"
    );
    assert!(taps(&ns).is_empty());
    assert_eq!(
        daemon.oxvirt(&["net-undefine", "late"]).ok(),
        "Network late has been undefined\n\n"
    );

    // Duplicate MACs are refused at define time.
    daemon
        .define_guest(
            "mac1",
            &network_interface("default", Some("52:54:00:aa:bb:cc")),
        )
        .ok();
    let error = daemon
        .define_guest(
            "mac2",
            &network_interface("default", Some("52:54:00:AA:BB:CC")),
        )
        .error();
    assert!(
        error.contains("52:54:00:aa:bb:cc") && error.contains("already used by domain 'mac1'"),
        "{error}"
    );
    let domains = daemon.oxvirt(&["list", "--all", "--name"]).ok();
    assert!(!domains.contains("mac2"), "{domains}");
    // Generated MACs never collide with a defined one.
    daemon
        .define_guest("mac3", &network_interface("default", None))
        .ok();
    let (_, generated) = daemon.interfaces("mac3")[0].clone();
    assert!(generated.starts_with("52:54:00:") && generated != "52:54:00:aa:bb:cc");

    // Bad requests of the interface commands.
    let error = daemon.oxvirt(&["domifaddr", "mac1"]).error();
    assert_eq!(error, "error: domain 'mac1' is not running");
    let error = daemon.oxvirt(&["net-info", "nope"]).error();
    assert_eq!(error, "error: network 'nope' not found");
    let error = daemon
        .oxvirt(&[
            "attach-interface",
            "mac1",
            "--type",
            "network",
            "--source",
            "default",
            "--live",
        ])
        .error();
    assert!(error.contains("not running"), "{error}");
    // --config on an inactive domain changes the definition.
    daemon
        .oxvirt(&[
            "attach-interface",
            "mac1",
            "--type",
            "network",
            "--source",
            "default",
            "--mac",
            "52:54:00:aa:bb:cd",
            "--config",
        ])
        .ok();
    assert_eq!(daemon.interfaces("mac1").len(), 2);
    let error = daemon
        .oxvirt(&["detach-interface", "mac1", "--type", "network"])
        .error();
    assert!(error.contains("give --mac"), "{error}");
    daemon
        .oxvirt(&[
            "detach-interface",
            "mac1",
            "--type",
            "network",
            "--mac",
            "52:54:00:aa:bb:cd",
            "--config",
        ])
        .ok();
    assert_eq!(daemon.interfaces("mac1").len(), 1);
}

#[test]
fn multiqueue_guest_gets_its_queue_pairs_and_a_lease() {
    let ns = Netns::new();
    let daemon = NetDaemon::start(&ns, true);
    start_default_network(&daemon);
    daemon
        .define_guest_with_vcpus(
            "mq",
            2,
            "    <interface type='network'><source network='default'/><model type='virtio'/><driver queues='2'/></interface>",
        )
        .ok();
    daemon.oxvirt(&["start", "mq"]).ok();

    // The TAP is multiqueue; QEMU opened both queues (it keeps the second one disabled until the
    // guest's driver turns it on).
    let (tap, _mac) = daemon.interfaces("mq")[0].clone();
    let details = ns.link_details(&tap);
    assert!(
        details.contains(" multi_queue ") && details.contains("master oxbr0"),
        "{details}"
    );

    // The guest's virtio-net driver uses two queue pairs (one per vCPU).
    let mut console = daemon.console("mq");
    boot_shell(&mut console);
    let cpus = guest(&mut console, "grep -c ^processor /proc/cpuinfo", SHORT);
    assert_eq!(cpus.trim(), "2", "the guest should have 2 vCPUs");
    let queues = guest(&mut console, "ls /sys/class/net/eth0/queues/", SHORT);
    let mut seen: Vec<&str> = queues
        .split_whitespace()
        .filter(|q| q.starts_with("rx-") || q.starts_with("tx-"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ["rx-0", "rx-1", "tx-0", "tx-1"], "{queues}");

    // And it works as a network card: a lease from the default network, the bridge answers.
    let address = dhcp(&mut console, "eth0");
    assert!(address.starts_with("192.168.122."), "{address}");
    let ping = guest(&mut console, "ping -c 2 -W 5 192.168.122.1", SHORT);
    assert!(ping.contains("2 packets received"), "{ping}");
    // Host side: both queues of the TAP are now in use.
    let details = ns.link_details(&tap);
    assert!(
        details.contains(" multi_queue numqueues 2 numdisabled 0 "),
        "{details}"
    );

    daemon.oxvirt(&["destroy", "mq"]).ok();
    assert!(!ns.has_link(&tap), "{:?}", ns.links());
}

/// What an operator does once to use libvirt's default network: mark it autostart and start it.
fn start_default_network(daemon: &NetDaemon) {
    assert_eq!(
        daemon.oxvirt(&["net-autostart", "default"]).ok(),
        "Network default marked as autostarted\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["net-start", "default"]).ok(),
        "Network default started\n\n"
    );
}

/// Plugs a virtio NIC on the default network into the running `domain`; returns what
/// `attach-interface` printed.
fn attach_live_nic(daemon: &NetDaemon, domain: &str) -> String {
    daemon
        .oxvirt(&[
            "attach-interface",
            domain,
            "--type",
            "network",
            "--source",
            "default",
            "--model",
            "virtio",
            "--live",
        ])
        .ok()
}

/// The QEMU of guest `name` in `ns`.
fn qemu_of(ns: &Netns, name: &str) -> i32 {
    let pids: Vec<i32> = ns
        .processes()
        .into_iter()
        .filter(|(_, cmdline)| {
            cmdline.contains("qemu-system") && cmdline.contains(&format!("guest={name},"))
        })
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(pids.len(), 1, "one QEMU for {name}: {:?}", ns.processes());
    pids[0]
}

/// How many TAP files (`/dev/net/tun`) QEMU `pid` holds open.
fn tap_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("QEMU's descriptors")
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("/dev/net/tun"))
        })
        .count()
}

/// A guest on a TAP runs as a user of its own (no more root for NICs): oxvirtd opens the TAP
/// and hands QEMU the descriptor (QEMU's /dev has no /dev/net/tun, its command line no
/// ifname=), the TAP belongs to that user alone, and the guest's network works, a hot-plugged
/// NIC's too (its TAP passed over QMP).
#[test]
fn tap_guests_run_as_their_own_user_with_the_tap_handed_over() {
    let ns = Netns::new();
    let daemon = NetDaemon::start(&ns, true);
    daemon
        .define_guest("tapped", &network_interface("default", None))
        .ok();
    start_default_network(&daemon);
    daemon.oxvirt(&["start", "tapped"]).ok();
    let pid = qemu_of(&ns, "tapped");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert_ne!(uid, 0, "QEMU of a guest with a TAP runs as a guest user");
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert!(!argv.contains("ifname="), "{argv}");
    assert!(argv.contains("\"fd\":\""), "{argv}");
    assert_eq!(tap_files(pid), 1);
    assert!(
        !Path::new(&format!("/proc/{pid}/root/dev/net/tun")).exists(),
        "QEMU's /dev has no /dev/net/tun"
    );
    // Only that user (or the host's administrator) may attach to the TAP.
    let (tap, _mac) = daemon.interfaces("tapped")[0].clone();
    let owner = ns.exec("cat", &[&format!("/sys/class/net/{tap}/owner")]);
    assert_eq!(
        String::from_utf8_lossy(&owner.stdout).trim(),
        uid.to_string()
    );

    let mut console = daemon.console("tapped");
    boot_shell(&mut console);
    let address = dhcp(&mut console, "eth0");
    assert!(address.starts_with("192.168.122."), "{address}");
    let ping = guest(&mut console, "ping -c 2 -W 5 192.168.122.1", SHORT);
    assert!(ping.contains("2 packets received"), "{ping}");

    // Hot-plugged: its TAP comes over QMP, and works.
    attach_live_nic(&daemon, "tapped");
    assert_eq!(tap_files(pid), 2);
    let (hot_tap, _) = daemon.interfaces("tapped")[1].clone();
    let owner = ns.exec("cat", &[&format!("/sys/class/net/{hot_tap}/owner")]);
    assert_eq!(
        String::from_utf8_lossy(&owner.stdout).trim(),
        uid.to_string()
    );
    let seen = wait_for(SHORT, || {
        guest(&mut console, "ls /sys/class/net", SHORT).contains("eth1")
    });
    assert!(seen, "the guest never saw eth1");
    let second = dhcp(&mut console, "eth1");
    assert!(second.starts_with("192.168.122."), "{second}");
    daemon.oxvirt(&["destroy", "tapped"]).ok();
}
