//! The network runtime on a real kernel, inside network namespaces made for each test (see `common`).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{
    dnsmasq_pids_with, in_fresh_netns, nft_table, run, run_in, runtime, udhcpc_script, SHORT,
};
use oxvirt_net::{MacvtapMode, MacvtapRequest, NetError, NetworkDef, NetworkManager, TapRequest};
use oxvirt_testkit::wait_for;

const NAT_XML: &str = "<network>
  <name>natnet</name>
  <forward mode='nat'/>
  <mtu size='1400'/>
  <domain name='oxtest'/>
  <dns><host ip='10.77.0.50'><hostname>db</hostname></host></dns>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.77.0.100' end='10.77.0.150'/></dhcp>
  </ip>
</network>";

async fn defined(nets: &NetworkManager, xml: &str) -> NetworkDef {
    let mut def = NetworkDef::from_xml(xml).expect("valid network XML");
    nets.fill_defaults(&mut def, &[])
        .await
        .expect("fill defaults");
    def
}

#[test]
fn nat_network_serves_dhcp_dns_and_masquerades() {
    in_fresh_netns("nat_network_serves_dhcp_dns_and_masquerades", 2, |ns| {
        let (guest, outside) = (&ns.extra[0], &ns.extra[1]);
        let state = tempfile::tempdir().unwrap();
        let rt = runtime();
        let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
        let def = rt.block_on(defined(&nets, NAT_XML));
        assert_eq!(def.bridge_name(), Some("oxbr0"));
        let status = rt.block_on(nets.start(&def)).unwrap();

        // The bridge exists, is up, carries the address and our mark.
        let bridge = rt.block_on(nets.device("oxbr0")).unwrap();
        assert_eq!(bridge.kind.as_deref(), Some("bridge"));
        assert!(bridge.up);
        assert_eq!(bridge.alias, Some(format!("oxvirt-net:{}", def.uuid)));
        assert_eq!(bridge.mac, def.mac);
        assert_eq!(bridge.mtu, Some(1400));
        assert!(run("ip", &["-4", "addr", "show", "dev", "oxbr0"]).contains("inet 10.77.0.1/24"));
        // dnsmasq runs with our configuration, exactly once.
        let files = nets.dnsmasq_files(&def);
        assert_eq!(
            dnsmasq_pids_with(&files.config),
            vec![status.dnsmasq_pid.unwrap()]
        );
        let config = std::fs::read_to_string(&files.config).unwrap();
        assert!(
            config.contains("interface=oxbr0\n")
                && config.contains("dhcp-range=10.77.0.100,10.77.0.150")
        );
        // The nft table has the masquerade rule.
        let table = nft_table().expect("oxvirt table exists");
        assert!(
            table.contains("ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 masquerade"),
            "{table}"
        );

        // A guest on a veth port of the bridge gets a lease with DHCP.
        run(
            "ip",
            &[
                "link", "add", "vguest", "type", "veth", "peer", "name", "eth0", "netns", guest,
            ],
        );
        run("ip", &["link", "set", "vguest", "master", "oxbr0", "up"]);
        run_in(guest, &["ip", "link", "set", "eth0", "up"]);
        let guest_mac = run_in(guest, &["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_string();
        let script = udhcpc_script(state.path());
        let dhcp = run_in(
            guest,
            &[
                "busybox",
                "udhcpc",
                "-i",
                "eth0",
                "-n",
                "-q",
                "-t",
                "5",
                "-T",
                "2",
                "-x",
                "hostname:oxguest",
                "-s",
                script.to_str().unwrap(),
            ],
        );
        let leased = run_in(guest, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        let guest_ip: Ipv4Addr = leased
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| {
                panic!("guest has no address after udhcpc: {leased}\nudhcpc said: {dhcp}")
            });
        let last = guest_ip.octets()[3];
        assert!(
            (100..=150).contains(&last) && guest_ip.octets()[..3] == [10, 77, 0],
            "{guest_ip}"
        );

        // Our lease parser shows that lease.
        let leases = rt.block_on(nets.leases(&def)).unwrap();
        let lease = leases
            .iter()
            .find(|l| l.ip == guest_ip)
            .unwrap_or_else(|| panic!("no lease for {guest_ip}: {leases:?}"));
        assert_eq!(lease.mac.to_string(), guest_mac);
        assert_eq!(lease.hostname.as_deref(), Some("oxguest"));
        assert!(lease.expiry.is_some());

        // The DNS host entry resolves through dnsmasq on the bridge address.
        let answer = run_in(guest, &["busybox", "nslookup", "db.oxtest", "10.77.0.1"]);
        assert!(answer.contains("10.77.0.50"), "{answer}");

        // NAT: the outside namespace has no route back to 10.77.0.0/24, so its replies reach the guest only
        // because the host masquerades the guest behind its uplink address.
        run(
            "ip",
            &[
                "link", "add", "uplink0", "type", "veth", "peer", "name", "out0", "netns", outside,
            ],
        );
        run("ip", &["addr", "add", "203.0.113.1/24", "dev", "uplink0"]);
        run("ip", &["link", "set", "uplink0", "up"]);
        run_in(
            outside,
            &["ip", "addr", "add", "203.0.113.2/24", "dev", "out0"],
        );
        run_in(outside, &["ip", "link", "set", "out0", "up"]);
        let ping = run_in(
            guest,
            &["busybox", "ping", "-c", "2", "-W", "3", "203.0.113.2"],
        );
        assert!(ping.contains("2 packets received"), "{ping}");
        // Without the masquerade rule the same ping goes unanswered (so the NAT above was real) ...
        run("nft", &["flush", "chain", "ip", "oxvirt", "nat_oxbr0"]);
        let unanswered = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                guest,
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "203.0.113.2",
            ])
            .output()
            .unwrap();
        assert!(
            !unanswered.status.success(),
            "{}",
            String::from_utf8_lossy(&unanswered.stdout)
        );
        // ... and adopting the running network (as after a daemon restart) re-applies its rules.
        assert_eq!(rt.block_on(nets.adopt(&def)).unwrap(), Some(status.clone()));
        let ping = run_in(
            guest,
            &["busybox", "ping", "-c", "1", "-W", "3", "203.0.113.2"],
        );
        assert!(ping.contains("1 packets received"), "{ping}");

        // The host learned the guest's MAC (ARP), and the bridge port counted the traffic.
        let guest_mac_parsed = guest_mac.parse().unwrap();
        assert!(wait_for(SHORT, || rt
            .block_on(nets.neighbours("oxbr0"))
            .unwrap()
            .iter()
            .any(|n| n.ip == guest_ip && n.mac == guest_mac_parsed)));
        let stats = rt.block_on(nets.interface_stats("vguest")).unwrap();
        assert!(
            stats.rx_packets >= 4 && stats.tx_packets >= 4 && stats.rx_bytes > 0,
            "{stats:?}"
        );

        // Stop: bridge, dnsmasq and table gone.
        rt.block_on(nets.stop(&def)).unwrap();
        assert!(matches!(
            rt.block_on(nets.device("oxbr0")),
            Err(NetError::NoSuchDevice { .. })
        ));
        assert!(dnsmasq_pids_with(&files.config).is_empty());
        assert_eq!(nft_table(), None);
        // Stopping again is harmless.
        rt.block_on(nets.stop(&def)).unwrap();
    });
}

#[test]
fn adopt_after_restart_creates_nothing_twice_and_orphans_are_cleaned() {
    in_fresh_netns(
        "adopt_after_restart_creates_nothing_twice_and_orphans_are_cleaned",
        0,
        |_| {
            let state = tempfile::tempdir().unwrap();
            let (def, first) = {
                let rt = runtime();
                let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
                let def = rt.block_on(defined(&nets, NAT_XML));
                let status = rt.block_on(nets.start(&def)).unwrap();
                assert!(matches!(
                    rt.block_on(nets.start(&def)),
                    Err(NetError::AlreadyRunning { .. })
                ));
                (def, status)
                // The "daemon" goes away: manager and runtime dropped, the network keeps running.
            };
            let rt = runtime();
            let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
            let files = nets.dnsmasq_files(&def);
            assert_eq!(rt.block_on(nets.status(&def)).unwrap(), Some(first.clone()));
            let adopted = rt
                .block_on(nets.adopt(&def))
                .unwrap()
                .expect("network is running");
            assert_eq!(adopted, first, "adopting found the same bridge and dnsmasq");
            assert_eq!(
                dnsmasq_pids_with(&files.config),
                vec![first.dnsmasq_pid.unwrap()]
            );
            let ours = |nets: &NetworkManager| {
                rt.block_on(nets.device("oxbr0"))
                    .map(|l| l.alias.is_some_and(|a| a.starts_with("oxvirt-net:")))
                    .unwrap_or(false)
            };
            assert!(ours(&nets));
            let table = nft_table().unwrap();
            assert_eq!(
                table.matches("masquerade").count(),
                1,
                "rules re-applied, not duplicated:\n{table}"
            );

            // dnsmasq died while the daemon was away: adopting starts exactly one new one.
            // SAFETY: killing the dnsmasq this test started.
            unsafe { libc::kill(first.dnsmasq_pid.unwrap() as i32, libc::SIGKILL) };
            assert!(wait_for(SHORT, || dnsmasq_pids_with(&files.config).is_empty()));
            let readopted = rt.block_on(nets.adopt(&def)).unwrap().unwrap();
            assert_ne!(readopted.dnsmasq_pid, first.dnsmasq_pid);
            assert_eq!(
                dnsmasq_pids_with(&files.config),
                vec![readopted.dnsmasq_pid.unwrap()]
            );

            // The network is no longer wanted: the orphan cleanup removes all of it.
            let removed = rt.block_on(nets.cleanup_orphans(&[])).unwrap();
            assert_eq!(removed.len(), 3, "{removed:?}");
            assert!(matches!(
                rt.block_on(nets.device("oxbr0")),
                Err(NetError::NoSuchDevice { .. })
            ));
            assert!(dnsmasq_pids_with(&files.config).is_empty());
            assert_eq!(nft_table(), None);
            // Not running any more: status and adopt say so.
            assert_eq!(rt.block_on(nets.status(&def)).unwrap(), None);
            assert_eq!(rt.block_on(nets.adopt(&def)).unwrap(), None);
        },
    );
}

#[test]
fn failed_start_leaves_nothing_behind() {
    in_fresh_netns("failed_start_leaves_nothing_behind", 0, |_| {
        let state = tempfile::tempdir().unwrap();
        let rt = runtime();
        let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
        let mut def = NetworkDef::from_xml(NAT_XML).unwrap();
        def.fill_defaults(&[], |_| false);

        // The bridge name belongs to a device that is not ours.
        run(
            "ip",
            &[
                "link",
                "add",
                "oxbr0",
                "type",
                "veth",
                "peer",
                "name",
                "oxbr0peer",
            ],
        );
        let err = rt.block_on(nets.start(&def)).unwrap_err();
        assert!(matches!(err, NetError::BridgeNameTaken { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("a veth device of that name exists"),
            "{err}"
        );
        assert_eq!(
            rt.block_on(nets.device("oxbr0")).unwrap().kind.as_deref(),
            Some("veth")
        );
        assert_eq!(nft_table(), None);
        // Stop must not delete the foreign device either.
        assert!(matches!(
            rt.block_on(nets.stop(&def)),
            Err(NetError::NotOurs { .. })
        ));
        assert!(rt.block_on(nets.device("oxbr0")).is_ok());

        // The subnet is already used on the host.
        run("ip", &["addr", "add", "10.77.0.9/16", "dev", "oxbr0"]);
        def.bridge.name = Some("oxbr9".into());
        let err = rt.block_on(nets.start(&def)).unwrap_err();
        assert!(
            err.to_string().contains(
                "subnet 10.77.0.0/24 is already in use on the host: address 10.77.0.9/16 on oxbr0"
            ),
            "{err}"
        );
        run("ip", &["link", "del", "oxbr0"]);

        // A late step fails (the network's state directory cannot be created: a file is in the way) after the
        // bridge, its address and the firewall chains were made: all of them are undone.
        std::fs::write(state.path().join("natnet"), "in the way").unwrap();
        let err = rt.block_on(nets.start(&def)).unwrap_err();
        assert!(err.to_string().contains("natnet"), "{err}");
        assert!(matches!(
            rt.block_on(nets.device("oxbr9")),
            Err(NetError::NoSuchDevice { .. })
        ));
        assert_eq!(nft_table(), None);
        assert!(dnsmasq_pids_with(&nets.dnsmasq_files(&def).config).is_empty());
        std::fs::remove_file(state.path().join("natnet")).unwrap();
        // With the obstacle gone the same definition starts.
        rt.block_on(nets.start(&def)).unwrap();
        rt.block_on(nets.stop(&def)).unwrap();
    });
}

#[test]
fn default_network_avoids_used_ranges_and_taps_are_managed() {
    in_fresh_netns(
        "default_network_avoids_used_ranges_and_taps_are_managed",
        0,
        |_| {
            let state = tempfile::tempdir().unwrap();
            let rt = runtime();
            let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
            let proposal = rt
                .block_on(nets.propose_default_network(&[]))
                .unwrap()
                .unwrap();
            assert_eq!(
                proposal.ip.as_ref().unwrap().address,
                Ipv4Addr::new(192, 168, 122, 1)
            );

            // 192.168.122.0/24 is routed somewhere on the host, and a veth named oxbr0 exists: the next free ones are proposed.
            run(
                "ip",
                &[
                    "link",
                    "add",
                    "oxbr0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "oxbr0peer",
                ],
            );
            run("ip", &["link", "set", "oxbr0", "up"]);
            run("ip", &["route", "add", "192.168.122.0/24", "dev", "oxbr0"]);
            let proposal = rt
                .block_on(nets.propose_default_network(&[]))
                .unwrap()
                .unwrap();
            assert_eq!(
                proposal.ip.as_ref().unwrap().address,
                Ipv4Addr::new(192, 168, 123, 1)
            );
            assert_eq!(proposal.bridge_name(), Some("oxbr1"));
            let xml = proposal.to_xml();
            assert!(
                xml.contains("<range start='192.168.123.2' end='192.168.123.254'/>"),
                "{xml}"
            );
            rt.block_on(nets.start(&proposal)).unwrap();

            // TAPs: generated name, attached to the bridge with the bridge's MTU, up, MAC derived from the guest's.
            let tap = rt
                .block_on(nets.create_tap(&TapRequest {
                    name: None,
                    bridge: "oxbr1",
                    guest_mac: Some("52:54:00:01:02:03".parse().unwrap()),
                    owner: "vm1",
                    queues: 1,
                }))
                .unwrap();
            assert!(tap.starts_with("oxtap"), "{tap}");
            let link = rt.block_on(nets.device(&tap)).unwrap();
            let bridge = rt.block_on(nets.device("oxbr1")).unwrap();
            assert_eq!(link.controller, Some(bridge.index));
            assert_eq!(link.kind.as_deref(), Some("tun"));
            assert_eq!(link.mac.unwrap().to_string(), "fe:54:00:01:02:03");
            assert_eq!(
                rt.block_on(nets.taps()).unwrap(),
                vec![(tap.clone(), "vm1".to_string())]
            );
            let named = rt
                .block_on(nets.create_tap(&TapRequest {
                    name: Some("vnet7"),
                    bridge: "oxbr1",
                    guest_mac: None,
                    owner: "vm2",
                    queues: 1,
                }))
                .unwrap();
            assert_eq!(named, "vnet7");
            let err = rt
                .block_on(nets.create_tap(&TapRequest {
                    name: Some("vnet7"),
                    bridge: "oxbr1",
                    guest_mac: None,
                    owner: "vm3",
                    queues: 1,
                }))
                .unwrap_err();
            assert!(matches!(err, NetError::DeviceExists { .. }), "{err}");
            let err = rt
                .block_on(nets.create_tap(&TapRequest {
                    name: Some("vnet8"),
                    bridge: "oxbr0",
                    guest_mac: None,
                    owner: "vm3",
                    queues: 1,
                }))
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("oxbr0 is a veth device, not a bridge"),
                "{err}"
            );
            assert!(matches!(
                rt.block_on(nets.device("vnet8")),
                Err(NetError::NoSuchDevice { .. })
            ));
            // Removal: ours go, a foreign device is refused.
            assert!(matches!(
                rt.block_on(nets.remove_tap("oxbr0")),
                Err(NetError::NotOurs { .. })
            ));
            // An ethernet interface's TAP: the same, attached to nothing.
            let loose = rt
                .block_on(nets.create_unattached_tap(&TapRequest {
                    name: Some("oxeth0"),
                    bridge: "",
                    guest_mac: Some("52:54:00:01:02:04".parse().unwrap()),
                    owner: "vm4",
                    queues: 1,
                }))
                .unwrap();
            let link = rt.block_on(nets.device(&loose)).unwrap();
            assert_eq!(link.controller, None);
            assert_eq!(link.kind.as_deref(), Some("tun"));
            assert_eq!(link.mac.unwrap().to_string(), "fe:54:00:01:02:04");
            rt.block_on(nets.remove_tap(&loose)).unwrap();
            // A direct interface's macvtap on a host interface: the guest's MAC, owned, removed like a TAP.
            run(
                "ip",
                &[
                    "link", "add", "oxlow0", "type", "veth", "peer", "name", "oxlow1",
                ],
            );
            run("ip", &["link", "set", "oxlow0", "up"]);
            let macvtap = rt
                .block_on(nets.create_macvtap(&MacvtapRequest {
                    name: None,
                    lower: "oxlow0",
                    mode: MacvtapMode::Bridge,
                    guest_mac: Some("52:54:00:01:02:05".parse().unwrap()),
                    owner: "vm5",
                }))
                .unwrap();
            assert_eq!(macvtap, "oxmvt0");
            let link = rt.block_on(nets.device(&macvtap)).unwrap();
            assert_eq!(link.kind.as_deref(), Some("macvtap"));
            assert_eq!(link.mac.unwrap().to_string(), "52:54:00:01:02:05");
            assert!(link.up);
            assert!(std::path::Path::new(&format!("/dev/tap{}", link.index)).exists());
            let err = rt
                .block_on(nets.create_macvtap(&MacvtapRequest {
                    name: None,
                    lower: "nosuchdev",
                    mode: MacvtapMode::Vepa,
                    guest_mac: None,
                    owner: "vm5",
                }))
                .unwrap_err();
            assert!(matches!(err, NetError::NoSuchDevice { .. }), "{err}");
            rt.block_on(nets.remove_tap(&macvtap)).unwrap();
            rt.block_on(nets.remove_tap(&tap)).unwrap();
            rt.block_on(nets.remove_tap("vnet7")).unwrap();
            assert!(rt.block_on(nets.taps()).unwrap().is_empty());
            rt.block_on(nets.stop(&proposal)).unwrap();
        },
    );
}

#[test]
fn qemu_guest_gets_a_lease_and_pings_the_bridge() {
    in_fresh_netns("qemu_guest_gets_a_lease_and_pings_the_bridge", 0, |_| {
        use oxvirt_testkit::{guest_kit, Console, BOOT_MARKER, PROMPT};
        let kit = guest_kit();
        let state = tempfile::tempdir().unwrap();
        let rt = runtime();
        let nets = rt.block_on(NetworkManager::new(state.path())).unwrap();
        let def = rt.block_on(defined(&nets, NAT_XML));
        rt.block_on(nets.start(&def)).unwrap();
        let guest_mac = "52:54:00:6f:78:01";
        let tap = rt
            .block_on(nets.create_tap(&TapRequest {
                name: None,
                bridge: "oxbr0",
                guest_mac: Some(guest_mac.parse().unwrap()),
                owner: "qemu-test",
                queues: 1,
            }))
            .unwrap();

        let serial = state.path().join("serial.sock");
        let qemu = std::process::Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kit.kernel)
            .arg("-initrd")
            .arg(&kit.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", serial.display()))
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={guest_mac}"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start qemu");
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut qemu = KillOnDrop(qemu);

        let mut console =
            Console::connect(&serial, Duration::from_secs(20)).expect("serial console");
        assert!(
            console
                .wait_for_text(BOOT_MARKER, Duration::from_secs(90))
                .is_some(),
            "guest did not boot: {}",
            console.pending()
        );
        assert!(console
            .wait_for_text(PROMPT, Duration::from_secs(30))
            .is_some());
        console
            .run("printf '#!/bin/sh\\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\\nexit 0\\n' > /tmp/dhcp.sh; chmod +x /tmp/dhcp.sh", SHORT)
            .unwrap();
        let dhcp = console
            .run(
                "ip link set eth0 up; udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh",
                Duration::from_secs(60),
            )
            .expect("udhcpc finished");
        let addr = console.run("ip -4 -o addr show dev eth0", SHORT).unwrap();
        assert!(
            addr.contains("inet 10.77.0.1") && addr.contains("/24"),
            "guest address: {addr}\nudhcpc: {dhcp}"
        );
        let ping = console
            .run("ping -c 2 -W 5 10.77.0.1", Duration::from_secs(30))
            .unwrap();
        assert!(ping.contains("2 packets received"), "{ping}");

        // The host side saw it all: the lease, and traffic on the guest's TAP.
        let leases = rt.block_on(nets.leases(&def)).unwrap();
        let lease = leases
            .iter()
            .find(|l| l.mac.to_string() == guest_mac)
            .unwrap_or_else(|| panic!("{leases:?}"));
        assert!(
            addr.contains(&format!("inet {}/24", lease.ip)),
            "lease {lease:?} vs guest {addr}"
        );
        let tap_link = rt.block_on(nets.device(&tap)).unwrap();
        assert_eq!(tap_link.mtu, Some(1400), "the TAP takes the bridge's MTU");
        assert!(
            tap_link.stats.rx_packets >= 4 && tap_link.stats.tx_packets >= 4,
            "{:?}",
            tap_link.stats
        );

        let _ = qemu.0.kill();
        let _ = qemu.0.wait();
        rt.block_on(nets.remove_tap(&tap)).unwrap();
        rt.block_on(nets.stop(&def)).unwrap();
    });
}
