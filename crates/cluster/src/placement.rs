//! Where a cluster guest starts (docs/cluster.md, "Placement"): a pure function of what etcd
//! holds, so it is tested without etcd.
//!
//! A host can take the guest when its lease is alive, it runs an engine and it has the guest's
//! memory free. Among those, in order:
//! 1. with `<oxvirt:placement group='G' policy='spread'/>`, hosts running no other guest of G
//!    (a host running one only when no other host can take it);
//! 2. hosts of the larger CPU group (hosts with the same CPU model), which the guest can later
//!    be migrated between without a CPU change;
//! 3. the most free memory.
//!
//! Whether a host reaches the guest's files (disks, kernel) is the chosen host's own check
//! before it takes the guest's lock: the placing member then tries the next host.

use std::collections::HashMap;

use crate::{ClusterDomain, ClusterHost, ClusterPool, HostRecord, HostState};

/// How [`rank`] orders the eligible hosts, smallest first: lacking the guest's storage, running
/// a spread mate, the CPU group's size (larger first), free memory (more first), the name.
type RankKey<'a> = (
    bool,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<u64>,
    &'a str,
);

/// The hosts that can take `guest`, best first; or why none can, host by host.
///
/// `running` is (UUID, host) for each running cluster guest, `domains` every cluster guest.
pub fn rank(
    guest: &ClusterDomain,
    hosts: &[ClusterHost],
    running: &[(String, String)],
    domains: &[ClusterDomain],
) -> Result<Vec<String>, String> {
    let mut refused = Vec::new();
    let mut eligible = Vec::new();
    for member in hosts {
        let host = &member.host;
        if member.state != HostState::Up {
            refused.push(format!("{}: lease expired", host.name));
        } else if host.engines.is_empty() {
            refused.push(format!("{}: no engine", host.name));
        } else if host.free_memory_kib < guest.memory_kib {
            refused.push(format!(
                "{}: {} MiB free, the guest needs {} MiB",
                host.name,
                host.free_memory_kib / 1024,
                guest.memory_kib / 1024
            ));
        } else {
            eligible.push(member);
        }
    }
    if eligible.is_empty() {
        let why = if refused.is_empty() {
            "the cluster has no host".to_string()
        } else {
            refused.join("; ")
        };
        return Err(format!("no host can start '{}': {why}", guest.name));
    }
    // Guests of the same spread group, per host.
    let group_of: HashMap<&str, &str> = domains
        .iter()
        .filter_map(|d| Some((d.uuid.as_str(), d.group.as_deref()?)))
        .collect();
    let mates = |host: &str| -> usize {
        let Some(group) = guest.group.as_deref().filter(|_| guest.spread) else {
            return 0;
        };
        running
            .iter()
            .filter(|(uuid, on)| {
                on == host && *uuid != guest.uuid && group_of.get(uuid.as_str()) == Some(&group)
            })
            .count()
    };
    let cpu_group = |model: &str| {
        eligible
            .iter()
            .filter(|m| m.host.cpu_model == model)
            .count()
    };
    let mut ranked: Vec<RankKey> = eligible
        .iter()
        .map(|m| {
            (
                lacks_storage(guest, &m.host, hosts),
                mates(&m.host.name) > 0,
                std::cmp::Reverse(cpu_group(&m.host.cpu_model)),
                std::cmp::Reverse(m.host.free_memory_kib),
                m.host.name.as_str(),
            )
        })
        .collect();
    ranked.sort();
    Ok(ranked
        .into_iter()
        .map(|(_, _, _, _, name)| name.to_string())
        .collect())
}

/// Whether `host` lacks some of the guest's storage, as far as the cluster knows: the pool of a
/// volume disk, or a pool holding a disk's file that another member publishes (a file in no
/// member's pool does not count against any host: nobody knows where it is). Such a host is
/// ranked after the others, not refused: the start there fails naming what is missing.
fn lacks_storage(guest: &ClusterDomain, host: &HostRecord, hosts: &[ClusterHost]) -> bool {
    let holds = |pool: &ClusterPool, path: &str| {
        let dir = pool.target.trim_end_matches('/');
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let lacks_pool = guest
        .disk_pools
        .iter()
        .any(|name| !host.pools.iter().any(|pool| pool.name == *name));
    let lacks_file = guest.disk_paths.iter().any(|path| {
        let pooled = hosts
            .iter()
            .any(|m| m.host.pools.iter().any(|pool| holds(pool, path)));
        pooled && !host.pools.iter().any(|pool| holds(pool, path))
    });
    lacks_pool || lacks_file
}

/// The members a running `guest` of host `from` can migrate to, best first (as [`rank`]; its
/// own host excluded, and with `same_cpu`, for a guest whose CPU is the host's
/// (`host-passthrough`, `host-model`, `maximum`), only hosts of `from`'s CPU model); or why
/// none can. `running` says where the cluster's guests run now, so guests moved before count
/// for `spread`.
pub fn rank_migration(
    guest: &ClusterDomain,
    from: &str,
    same_cpu: bool,
    hosts: &[ClusterHost],
    running: &[(String, String)],
    domains: &[ClusterDomain],
) -> Result<Vec<String>, String> {
    let model = hosts
        .iter()
        .find(|m| m.host.name == from)
        .map(|m| m.host.cpu_model.as_str());
    let mut refused = Vec::new();
    let others: Vec<ClusterHost> = hosts
        .iter()
        .filter(|m| m.host.name != from)
        .filter(|m| {
            let fits = !same_cpu || Some(m.host.cpu_model.as_str()) == model;
            if !fits {
                refused.push(format!(
                    "{}: CPU {} (the guest needs {}'s, {})",
                    m.host.name,
                    m.host.cpu_model,
                    from,
                    model.unwrap_or("unknown")
                ));
            }
            fits
        })
        .cloned()
        .collect();
    rank(guest, &others, running, domains).map_err(|why| {
        let why = why.replacen("no host can start", "no other host can take", 1);
        if refused.is_empty() {
            why
        } else {
            format!("{why}; {}", refused.join("; "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, up: bool, free_mib: u64, cpu: &str) -> ClusterHost {
        ClusterHost {
            state: if up {
                HostState::Up
            } else {
                HostState::LeaseExpired
            },
            host: HostRecord {
                name: name.to_string(),
                api_address: None,
                cpus: 2,
                memory_kib: 1 << 24,
                free_memory_kib: free_mib * 1024,
                cpu_model: cpu.to_string(),
                cpu_features: vec![],
                engines: vec!["qemu".to_string()],
                pools: vec![],
                guests: 0,
                updated: 0,
            },
        }
    }

    fn guest(uuid: &str, group: Option<&str>, mib: u64) -> ClusterDomain {
        ClusterDomain {
            uuid: uuid.to_string(),
            name: format!("g{uuid}"),
            xml: String::new(),
            memory_kib: mib * 1024,
            group: group.map(str::to_string),
            spread: group.is_some(),
            ha: false,
            disk_paths: vec![],
            disk_pools: vec![],
        }
    }

    fn with_pool(mut member: ClusterHost, name: &str, target: &str) -> ClusterHost {
        member.host.pools.push(ClusterPool {
            name: name.to_string(),
            target: target.to_string(),
            shared: true,
        });
        member
    }

    #[test]
    fn hosts_with_the_guests_pools_first() {
        let hosts = [
            host("a", true, 9000, "X 1/1"),
            with_pool(host("b", true, 1000, "X 1/1"), "nfs", "/srv/nfs/"),
            with_pool(host("c", true, 2000, "X 1/1"), "vols", "/var/lib/vols"),
        ];
        // A file in b's pool: b first, then by free memory.
        let mut g = guest("1", None, 256);
        g.disk_paths = vec!["/srv/nfs/g1.qcow2".to_string()];
        assert_eq!(rank(&g, &hosts, &[], &[]).unwrap(), ["b", "a", "c"]);
        // A file in no member's pool (nor one whose name merely starts like one): nobody is
        // known to lack it.
        g.disk_paths = vec![
            "/srv/nfs-old/g1.qcow2".to_string(),
            "/data/g1.img".to_string(),
        ];
        assert_eq!(rank(&g, &hosts, &[], &[]).unwrap(), ["a", "c", "b"]);
        // A volume of pool vols: c first.
        g.disk_paths = vec![];
        g.disk_pools = vec!["vols".to_string()];
        assert_eq!(rank(&g, &hosts, &[], &[]).unwrap(), ["c", "a", "b"]);
        // Storage comes before spread: a host known to lack a disk cannot run the guest at all.
        let mut mate = guest("2", Some("web"), 256);
        mate.disk_pools = vec!["vols".to_string()];
        let other = guest("3", Some("web"), 256);
        let running = [("3".to_string(), "c".to_string())];
        let ranked = rank(&mate, &hosts, &running, &[mate.clone(), other]).unwrap();
        assert_eq!(ranked, ["c", "a", "b"]);
    }

    #[test]
    fn most_free_memory_among_live_hosts_with_room() {
        let hosts = [
            host("a", true, 1000, "X 1/1"),
            host("b", true, 3000, "X 1/1"),
            host("c", false, 9000, "X 1/1"),
            host("d", true, 100, "X 1/1"),
        ];
        let g = guest("1", None, 256);
        assert_eq!(rank(&g, &hosts, &[], &[]).unwrap(), ["b", "a"]);
        let big = guest("2", None, 5000);
        let err = rank(&big, &hosts, &[], &[]).unwrap_err();
        assert!(
            err.contains("c: lease expired") && err.contains("b: 3000 MiB free"),
            "{err}"
        );
    }

    #[test]
    fn spread_avoids_hosts_running_the_group_while_another_can_take_it() {
        let hosts = [
            host("a", true, 1000, "X 1/1"),
            host("b", true, 3000, "X 1/1"),
        ];
        let first = guest("1", Some("web"), 256);
        let second = guest("2", Some("web"), 256);
        let other = guest("3", Some("db"), 256);
        let domains = [first.clone(), second.clone(), other.clone()];
        let running = [("1".to_string(), "b".to_string())];
        assert_eq!(
            rank(&second, &hosts, &running, &domains).unwrap(),
            ["a", "b"]
        );
        // Another group does not mind.
        assert_eq!(
            rank(&other, &hosts, &running, &domains).unwrap(),
            ["b", "a"]
        );
        // Every host runs one: still placed (most free memory first).
        let running = [
            ("1".to_string(), "b".to_string()),
            ("3".to_string(), "a".to_string()),
            ("4".to_string(), "a".to_string()),
        ];
        let mut third = guest("4", Some("web"), 256);
        third.uuid = "5".to_string();
        let domains = [first, second, other, guest("4", Some("web"), 256)];
        assert_eq!(
            rank(&third, &hosts, &running, &domains).unwrap(),
            ["b", "a"]
        );
    }

    #[test]
    fn a_move_leaves_its_host_counts_moved_mates_and_keeps_a_host_cpu() {
        let hosts = [
            host("a", true, 1000, "X 1/1"),
            host("b", true, 9000, "X 1/1"),
            host("c", true, 3000, "X 1/1"),
            host("d", true, 5000, "X 1/1"),
        ];
        let web1 = guest("1", Some("web"), 256);
        let web2 = guest("2", Some("web"), 256);
        let domains = [web1.clone(), web2.clone()];
        // Both on b: the first goes where the most memory is, b excluded.
        let running = [
            ("1".to_string(), "b".to_string()),
            ("2".to_string(), "b".to_string()),
        ];
        let first = rank_migration(&web1, "b", false, &hosts, &running, &domains).unwrap();
        assert_eq!(first, ["d", "c", "a"]);
        // Once it moved there, the second goes elsewhere although d has the most memory.
        let running = [
            ("1".to_string(), "d".to_string()),
            ("2".to_string(), "b".to_string()),
        ];
        let second = rank_migration(&web2, "b", false, &hosts, &running, &domains).unwrap();
        assert_eq!(second, ["c", "a", "d"]);
        // A guest with the host's CPU stays among hosts of b's model, even one with less
        // memory.
        let mut hosts = hosts.to_vec();
        hosts[3].host.cpu_model = "Y 2/2".to_string();
        let cpu = rank_migration(&web1, "b", true, &hosts, &[], &domains).unwrap();
        assert_eq!(cpu, ["c", "a"]);
        let only_d = [hosts[1].clone(), hosts[3].clone()];
        let err = rank_migration(&web1, "b", true, &only_d, &[], &domains).unwrap_err();
        assert!(
            err.contains("no other host can take") && err.contains("d: CPU Y 2/2"),
            "{err}"
        );
    }

    #[test]
    fn the_larger_cpu_group_first() {
        let hosts = [
            host("a", true, 9000, "AMD 25/1"),
            host("b", true, 1000, "Intel 6/85"),
            host("c", true, 2000, "Intel 6/85"),
        ];
        let g = guest("1", None, 256);
        assert_eq!(rank(&g, &hosts, &[], &[]).unwrap(), ["c", "b", "a"]);
    }
}
