//! virsh's output formats, as pure functions of the API's data (unit-tested with fixed data).

use oxvirt_api::{DomainInfo, DomainSummary, VersionInfo};

use crate::ListArgs;

/// The domains `list` shows, in virsh's order: active ones by id, then inactive ones by name
/// (case-insensitively).
pub fn select_domains(domains: Vec<DomainSummary>, args: ListArgs) -> Vec<DomainSummary> {
    let mut selected: Vec<DomainSummary> = domains
        .into_iter()
        .filter(|d| {
            let active = d.state.is_active();
            let by_activity = if args.all {
                true
            } else if args.inactive {
                !active
            } else {
                active
            };
            let by_autostart = if args.autostart {
                d.autostart
            } else if args.no_autostart {
                !d.autostart
            } else {
                true
            };
            let by_managed_save = if args.with_managed_save {
                d.managed_save
            } else if args.without_managed_save {
                !d.managed_save
            } else {
                true
            };
            by_activity && by_autostart && by_managed_save
        })
        .collect();
    selected.sort_by(|a, b| match (a.state.is_active(), b.state.is_active()) {
        (true, true) => a.id.cmp(&b.id),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a
            .name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase()),
    });
    selected
}

/// `list`'s output for already selected domains: the table, or names / UUIDs one a line.
pub fn list(domains: &[DomainSummary], args: ListArgs) -> String {
    match (args.name, args.uuid) {
        (false, false) => {
            // On a cluster member each row says where the guest runs (docs/cluster.md).
            let cluster = domains.iter().any(|d| d.host.is_some());
            let rows: Vec<Vec<String>> = domains
                .iter()
                .map(|d| {
                    let id = match (d.state.is_active(), d.id) {
                        (true, Some(id)) => id.to_string(),
                        _ => "-".to_string(),
                    };
                    let mut row = vec![id, d.name.clone(), d.state.to_string()];
                    if cluster {
                        row.push(match d.host.as_deref() {
                            Some(host) if !host.is_empty() => host.to_string(),
                            _ => "-".to_string(),
                        });
                    }
                    row
                })
                .collect();
            if cluster {
                table(&["Id", "Name", "State", "Host"], &rows)
            } else {
                table(&["Id", "Name", "State"], &rows)
            }
        }
        (true, false) => lines(domains.iter().map(|d| d.name.clone())),
        (false, true) => lines(domains.iter().map(|d| d.uuid.clone())),
        (true, true) => lines(domains.iter().map(|d| format!("{} {}", d.uuid, d.name))),
    }
}

fn lines(items: impl Iterator<Item = String>) -> String {
    items.map(|item| item + "\n").collect()
}

/// virsh's table layout: a leading space, columns as wide as their widest cell, three spaces
/// between columns, the last column unpadded, and a dash line two characters longer than a
/// full-width row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::from(" ");
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        line.push('\n');
        line
    };

    let mut out = render_row(&mut header.iter().copied());
    let full_width = 1 + widths.iter().sum::<usize>() + 3 * widths.len().saturating_sub(1);
    out.push_str(&"-".repeat(full_width + 2));
    out.push('\n');
    for row in rows {
        out.push_str(&render_row(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `dominfo`: virsh's fields and alignment, then oxvirt's own (engine, accelerator, warnings).
pub fn dominfo(info: &DomainInfo) -> String {
    let mut fields: Vec<(&str, String)> = Vec::new();
    let id = match (info.state.is_active(), info.id) {
        (true, Some(id)) => id.to_string(),
        _ => "-".to_string(),
    };
    fields.push(("Id:", id));
    fields.push(("Name:", info.name.clone()));
    fields.push(("UUID:", info.uuid.clone()));
    fields.push(("OS Type:", info.os_type.clone()));
    fields.push(("State:", info.state.to_string()));
    fields.push(("CPU(s):", info.vcpus.to_string()));
    // virsh leaves the line out when the domain has used no CPU time (it is not running).
    if info.cpu_time_ns != 0 {
        fields.push((
            "CPU time:",
            format!("{:.1}s", info.cpu_time_ns as f64 / 1e9),
        ));
    }
    fields.push(("Max memory:", format!("{} KiB", info.max_memory_kib)));
    fields.push(("Used memory:", format!("{} KiB", info.used_memory_kib)));
    fields.push(("Persistent:", yes_no(info.persistent).to_string()));
    let autostart = if info.autostart { "enable" } else { "disable" };
    fields.push(("Autostart:", autostart.to_string()));
    fields.push(("Managed save:", yes_no(info.managed_save).to_string()));
    fields.push(("Security model:", info.security_model.clone()));
    fields.push(("Security DOI:", "0".to_string()));
    // As virsh: a label only for a guest that has one (a running one), always enforced.
    if let Some(label) = &info.security_label {
        fields.push(("Security label:", format!("{label} (enforcing)")));
    }
    if let Some(host) = &info.host {
        fields.push(("Host:", host.clone()));
    }
    fields.push(("Engine:", info.engine.to_string()));
    fields.push(("Accel:", info.accel.to_string()));
    for warning in &info.warnings {
        fields.push(("Warning:", warning.clone()));
    }
    fields
        .into_iter()
        .map(|(label, value)| format!("{label:<15} {value}\n"))
        .collect()
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// `domstate [--reason]`: "running" or "running (booted)".
pub fn domstate(info: &DomainInfo, with_reason: bool) -> String {
    if with_reason {
        format!("{} ({})\n", info.state, info.state_reason)
    } else {
        format!("{}\n", info.state)
    }
}

/// `version`, in virsh's four lines (library = this CLI, API = the daemon).
pub fn version(cli_version: &str, daemon: &VersionInfo) -> String {
    let hypervisor = match &daemon.qemu {
        Some(qemu) => format!("QEMU {qemu}"),
        None => "none (no QEMU binary found)".to_string(),
    };
    format!(
        "Compiled against library: oxvirt {cli_version}\n\
         Using library: oxvirt {cli_version}\n\
         Using API: oxvirtd {} (API {})\n\
         Running hypervisor: {hypervisor}\n",
        daemon.daemon, daemon.api
    )
}

/// What a verb prints, and whether virsh's blank line follows it (most verbs print one; a
/// few, such as `snapshot-parent` or `qemu-monitor-command --pretty`, do not).
pub struct Output {
    pub text: String,
    pub blank_line: bool,
}

/// "YYYY-MM-DD HH:MM:SS" in the local time zone (`TZ`, else /etc/localtime, as for libc's
/// `localtime`), as virsh prints lease expiry times; with `offset`, followed by the zone's
/// offset (" +0000"), as virsh prints snapshots' creation times. The plain number if it is no
/// date.
pub fn local_time(unix: u64, offset: bool) -> String {
    let Some(time) = i64::try_from(unix)
        .ok()
        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
    else {
        return unix.to_string();
    };
    let zone = jiff::tz::TimeZone::system();
    let local = zone.to_datetime(time).strftime("%Y-%m-%d %H:%M:%S");
    if !offset {
        return local.to_string();
    }
    let seconds = zone.to_offset(time).seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{local} {sign}{:02}{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxvirt_api::{Accel, DomainState, Engine};

    fn summary(id: Option<u32>, name: &str, state: DomainState, autostart: bool) -> DomainSummary {
        DomainSummary {
            id,
            name: name.to_string(),
            uuid: format!("00000000-0000-0000-0000-{:0>12}", name.len()),
            state,
            autostart,
            // Domains whose name starts with a capital have a managed save.
            managed_save: name.starts_with(char::is_uppercase),
            host: None,
        }
    }

    fn sample() -> Vec<DomainSummary> {
        vec![
            summary(None, "Abc", DomainState::ShutOff, false),
            summary(Some(12), "web", DomainState::Paused, false),
            summary(
                None,
                "a-much-longer-domain-name",
                DomainState::ShutOff,
                true,
            ),
            summary(Some(1), "test", DomainState::Running, true),
        ]
    }

    fn all() -> ListArgs {
        ListArgs {
            all: true,
            ..ListArgs::default()
        }
    }

    // Expected texts below are what virsh 9.0 prints for the same domains.

    #[test]
    fn list_all_matches_virsh_layout_and_order() {
        let args = all();
        let out = list(&select_domains(sample(), args), args);
        let expected = " Id   Name                        State\n\
                        --------------------------------------------\n \
                        1    test                        running\n \
                        12   web                         paused\n \
                        -    a-much-longer-domain-name   shut off\n \
                        -    Abc                         shut off\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn list_on_a_cluster_member_has_a_host_column() {
        let args = all();
        let mut domains = sample();
        for d in &mut domains {
            d.host = Some(if d.state.is_active() {
                "host-b".to_string()
            } else {
                String::new()
            });
        }
        let out = list(&select_domains(domains, args), args);
        let expected = " Id   Name                        State      Host\n\
                        -----------------------------------------------------\n \
                        1    test                        running    host-b\n \
                        12   web                         paused     host-b\n \
                        -    a-much-longer-domain-name   shut off   -\n \
                        -    Abc                         shut off   -\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn managed_save_filters() {
        let names = |args: ListArgs| -> Vec<String> {
            select_domains(sample(), args)
                .into_iter()
                .map(|d| d.name)
                .collect()
        };
        let with = ListArgs {
            with_managed_save: true,
            ..all()
        };
        assert_eq!(names(with), ["Abc"]);
        let without = ListArgs {
            without_managed_save: true,
            ..all()
        };
        assert_eq!(names(without), ["test", "web", "a-much-longer-domain-name"]);
        let mut saved = info(DomainState::ShutOff, None, 0);
        saved.managed_save = true;
        assert!(dominfo(&saved).contains("Managed save:   yes\n"));
    }

    #[test]
    fn empty_list_has_header_and_dashes_only() {
        let args = ListArgs::default();
        let out = list(&select_domains(Vec::new(), args), args);
        assert_eq!(out, " Id   Name   State\n--------------------\n");
    }

    #[test]
    fn default_list_shows_active_domains_only() {
        let args = ListArgs::default();
        let out = list(
            &select_domains(vec![sample()[3].clone(), sample()[0].clone()], args),
            args,
        );
        assert_eq!(
            out,
            " Id   Name   State\n----------------------\n 1    test   running\n"
        );
    }

    #[test]
    fn inactive_and_autostart_filters() {
        let args = ListArgs {
            inactive: true,
            ..ListArgs::default()
        };
        let names: Vec<String> = select_domains(sample(), args)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["a-much-longer-domain-name", "Abc"]);

        let args = ListArgs {
            all: true,
            autostart: true,
            ..ListArgs::default()
        };
        let names: Vec<String> = select_domains(sample(), args)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["test", "a-much-longer-domain-name"]);

        let args = ListArgs {
            all: true,
            no_autostart: true,
            ..ListArgs::default()
        };
        let names: Vec<String> = select_domains(sample(), args)
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["web", "Abc"]);
    }

    #[test]
    fn name_and_uuid_modes() {
        let domains = select_domains(sample(), all());
        let names = list(
            &domains,
            ListArgs {
                name: true,
                ..all()
            },
        );
        assert_eq!(names, "test\nweb\na-much-longer-domain-name\nAbc\n");
        let both = list(
            &domains[..1],
            ListArgs {
                name: true,
                uuid: true,
                ..all()
            },
        );
        assert_eq!(both, "00000000-0000-0000-0000-000000000004 test\n");
    }

    fn info(state: DomainState, id: Option<u32>, cpu_time_ns: u64) -> DomainInfo {
        DomainInfo {
            id,
            name: "demo".to_string(),
            uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f".to_string(),
            os_type: "hvm".to_string(),
            state,
            state_reason: "booted".to_string(),
            vcpus: 2,
            max_memory_kib: 524288,
            used_memory_kib: 262144,
            cpu_time_ns,
            persistent: true,
            autostart: false,
            managed_save: false,
            engine: Engine::Qemu,
            accel: Accel::Tcg,
            warnings: vec!["TCG: no hardware KVM here (kvm_pvm)".to_string()],
            console_socket: None,
            console_log: None,
            security_model: "dac".to_string(),
            security_label: id.map(|_| "+3002000:+3002000".to_string()),
            host: None,
        }
    }

    #[test]
    fn dominfo_of_a_cluster_guest_running_elsewhere_names_its_host() {
        let mut elsewhere = info(DomainState::Running, None, 0);
        elsewhere.host = Some("host-b".to_string());
        let out = dominfo(&elsewhere);
        assert!(out.contains("\nHost:           host-b\n"), "{out}");
        assert!(!dominfo(&info(DomainState::Running, None, 0)).contains("Host:"));
    }

    #[test]
    fn dominfo_of_a_running_domain_matches_virsh_fields() {
        let out = dominfo(&info(DomainState::Running, Some(3), 1_795_349_540_000));
        let expected = "\
Id:             3
Name:           demo
UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f
OS Type:        hvm
State:          running
CPU(s):         2
CPU time:       1795.3s
Max memory:     524288 KiB
Used memory:    262144 KiB
Persistent:     yes
Autostart:      disable
Managed save:   no
Security model: dac
Security DOI:   0
Security label: +3002000:+3002000 (enforcing)
Engine:         qemu
Accel:          tcg
Warning:        TCG: no hardware KVM here (kvm_pvm)
";
        assert_eq!(out, expected);
    }

    #[test]
    fn dominfo_of_an_inactive_domain_has_no_id_and_no_cpu_time() {
        let out = dominfo(&info(DomainState::ShutOff, None, 0));
        assert!(out.starts_with("Id:             -\n"), "{out}");
        assert!(!out.contains("CPU time:"), "{out}");
        assert!(out.contains("State:          shut off\n"), "{out}");
    }

    #[test]
    fn domstate_with_and_without_reason() {
        let mut i = info(DomainState::Paused, Some(1), 1);
        i.state_reason = "user".to_string();
        assert_eq!(domstate(&i, false), "paused\n");
        assert_eq!(domstate(&i, true), "paused (user)\n");
    }

    #[test]
    fn version_lines() {
        let out = version(
            "0.1.0",
            &VersionInfo {
                daemon: "0.1.0".to_string(),
                api: 1,
                qemu: Some("7.2.22".to_string()),
            },
        );
        assert_eq!(
            out,
            "Compiled against library: oxvirt 0.1.0\nUsing library: oxvirt 0.1.0\n\
             Using API: oxvirtd 0.1.0 (API 1)\nRunning hypervisor: QEMU 7.2.22\n"
        );
    }
}
