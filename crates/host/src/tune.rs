//! `oxvirt host tune`: what a KVM host should be set to for its guests, read from the host
//! (through a [`HostView`]), each item with its reason and the persistent setting that applies
//! it; and `--apply`, which writes those settings into oxvirt's own files under `/etc`
//! (sysctl.d, modprobe.d, modules-load.d, tmpfiles.d, udev rules), idempotently.
//!
//! The advice is the usual one for hosts that run guests: nested virtualization on (it costs
//! nothing and lets guests run guests); huge pages reserved for the guest memory to be backed by
//! them; KSM on only when guests' memory overcommits the host (it costs CPU to scan); THP at
//! least `madvise` (QEMU and oxvirt-vmm ask for it); block devices with `none` (NVMe, and the
//! virtual disks of a host that is itself a guest) or `mq-deadline` (SATA/SAS SSDs and disks);
//! `fs.aio-max-nr` large enough for `io='native'`; vhost-net loaded at boot.
//!
//! A setting oxvirt wrote before stays in its file while it is still the advice, even if the
//! running kernel already has it (after a reboot it does): a second `--apply` changes nothing.

use std::collections::BTreeMap;

use crate::HostView;

/// What the operator plans to run on the host, for the advice that depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestPlan {
    /// The guests' memory together, in KiB.
    pub guest_memory_kib: Option<u64>,
    /// Back that memory with 2 MiB huge pages.
    pub hugepages: bool,
}

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The host is as advised.
    Ok,
    /// The host should change: the item has a setting.
    Change,
    /// Something to know, nothing oxvirt can set (no hardware virtualization, a missing input).
    Note,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Change => "change",
            Status::Note => "note",
        }
    }
}

/// One line of a persistent configuration file oxvirt owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The file, absolute (under the host view's root).
    pub file: &'static str,
    pub line: String,
    /// How to make it effective before the next boot.
    pub now: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub topic: String,
    pub status: Status,
    /// What the host has now.
    pub current: String,
    /// What to do and why.
    pub reason: String,
    pub setting: Option<Setting>,
}

pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-oxvirt.conf";
pub const MODPROBE_FILE: &str = "/etc/modprobe.d/oxvirt-kvm.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/oxvirt.conf";
pub const TMPFILES_FILE: &str = "/etc/tmpfiles.d/oxvirt.conf";
pub const UDEV_FILE: &str = "/etc/udev/rules.d/60-oxvirt-io-scheduler.rules";

/// `fs.aio-max-nr` for `io='native'` guests: QEMU takes up to 128 events per disk queue.
const AIO_MAX_NR: u64 = 1_048_576;

/// Guest memory above this share of the host's makes KSM worth its CPU time.
const KSM_OVERCOMMIT_PERCENT: u64 = 80;

/// Every item, in report order.
pub fn advise(host: &HostView, plan: &GuestPlan) -> Vec<Advice> {
    let mut items = vec![nested(host)];
    items.push(hugepages(host, plan));
    items.push(ksm(host, plan));
    items.push(thp(host));
    items.extend(io_schedulers(host));
    items.push(aio_max_nr(host));
    items.push(vhost_net(host));
    items
}

/// What `--apply` did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub file: &'static str,
    /// Its lines (without oxvirt's header), as written.
    pub lines: Vec<String>,
    /// False when the file already said exactly this.
    pub changed: bool,
}

/// Writes each file's settings (header and lines in report order); a file whose content is
/// already that is left alone.
pub fn apply(host: &HostView, items: &[Advice]) -> std::io::Result<Vec<Applied>> {
    let mut files: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for setting in items.iter().filter_map(|item| item.setting.as_ref()) {
        files
            .entry(setting.file)
            .or_default()
            .push(setting.line.clone());
    }
    let mut applied = Vec::new();
    for (file, lines) in files {
        let content = file_content(file, &lines);
        let path = host.path(file);
        let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str());
        if changed {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Written whole under a temporary name, then renamed: a reader never sees half.
            let temporary = path.with_extension("oxvirt-tmp");
            std::fs::write(&temporary, &content)?;
            std::fs::rename(&temporary, &path)?;
        }
        applied.push(Applied {
            file,
            lines,
            changed,
        });
    }
    Ok(applied)
}

fn file_content(file: &str, lines: &[String]) -> String {
    let mut content =
        String::from("# Written by `oxvirt host tune --apply`; it rewrites this file whole.\n");
    if file == UDEV_FILE {
        content.push_str("# The I/O scheduler of each kind of block device.\n");
    }
    for line in lines {
        content.push_str(line);
        content.push('\n');
    }
    content
}

/// Whether oxvirt's `file` already holds `line` (then the setting stays, see the module doc).
fn already_set(host: &HostView, file: &str, line: &str) -> bool {
    host.read(file)
        .is_some_and(|content| content.lines().any(|l| l == line))
}

/// An item whose runtime value is `ok` or not, with the setting that makes it so.
fn item(
    host: &HostView,
    topic: &str,
    ok: bool,
    current: String,
    reason: &str,
    setting: Setting,
) -> Advice {
    let keep = already_set(host, setting.file, &setting.line);
    Advice {
        topic: topic.to_string(),
        status: if ok { Status::Ok } else { Status::Change },
        current,
        reason: reason.to_string(),
        setting: (!ok || keep).then_some(setting),
    }
}

fn note(topic: &str, current: String, reason: String) -> Advice {
    Advice {
        topic: topic.to_string(),
        status: Status::Note,
        current,
        reason,
        setting: None,
    }
}

fn nested(host: &HostView) -> Advice {
    const TOPIC: &str = "nested virtualization";
    let Some(module) = host.kvm_module() else {
        return note(
            TOPIC,
            "no KVM module loaded".to_string(),
            "without kvm_intel or kvm_amd, guests run under TCG and cannot have KVM themselves"
                .to_string(),
        );
    };
    if module == "kvm_pvm" {
        return note(
            TOPIC,
            "kvm_pvm (paravirtual KVM)".to_string(),
            "kvm_pvm has no nested virtualization; guests that need KVM run in a nested lab \
             under TCG -cpu max (see docs/host.md)"
                .to_string(),
        );
    }
    let value = host
        .value(&format!("/sys/module/{module}/parameters/nested"))
        .unwrap_or_default();
    let on = matches!(value.as_str(), "1" | "Y" | "y");
    item(
        host,
        TOPIC,
        on,
        format!("{module} nested={value}"),
        "guests that run guests (a nested lab, CI runners, oxvirt inside a guest) need it; it \
         costs nothing to the others",
        Setting {
            file: MODPROBE_FILE,
            line: format!("options {module} nested=1"),
            now: format!("modprobe -r {module} && modprobe {module} (with no guest running)"),
        },
    )
}

fn meminfo_kib(host: &HostView, key: &str) -> u64 {
    host.read("/proc/meminfo")
        .and_then(|info| {
            info.lines().find_map(|line| {
                let rest = line.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

fn number(host: &HostView, path: &str) -> Option<u64> {
    host.value(path).and_then(|v| v.parse().ok())
}

fn hugepages(host: &HostView, plan: &GuestPlan) -> Advice {
    const TOPIC: &str = "huge pages (2 MiB)";
    let reserved = number(host, "/proc/sys/vm/nr_hugepages").unwrap_or(0);
    let current = format!("{reserved} reserved");
    match (plan.hugepages, plan.guest_memory_kib) {
        (true, Some(guest_kib)) => {
            let pages = guest_kib.div_ceil(2048);
            let total_kib = meminfo_kib(host, "MemTotal");
            if pages * 2048 > total_kib / 10 * 9 {
                return note(
                    TOPIC,
                    current,
                    format!(
                        "{pages} pages ({} MiB) would leave the host less than a tenth of its \
                         {} MiB: plan less guest memory on huge pages",
                        pages * 2,
                        total_kib / 1024
                    ),
                );
            }
            item(
                host,
                TOPIC,
                reserved == pages,
                current,
                "guests with <memoryBacking><hugepages/> take their memory from this pool: fewer \
                 TLB misses, memory never swapped or merged; reserved at boot, before memory \
                 fragments",
                Setting {
                    file: SYSCTL_FILE,
                    line: format!("vm.nr_hugepages = {pages}"),
                    now: format!(
                        "sysctl -w vm.nr_hugepages={pages} (may get fewer pages once memory is \
                         fragmented)"
                    ),
                },
            )
        }
        (true, None) => note(
            TOPIC,
            current,
            "say how much guest memory huge pages should back (--guest-memory)".to_string(),
        ),
        (false, _) => Advice {
            topic: TOPIC.to_string(),
            status: Status::Ok,
            current,
            reason: "guests use normal pages (with THP); --hugepages --guest-memory SIZE to \
                     reserve a pool"
                .to_string(),
            setting: None,
        },
    }
}

fn ksm(host: &HostView, plan: &GuestPlan) -> Advice {
    const TOPIC: &str = "KSM (same-page merging)";
    let run = number(host, "/sys/kernel/mm/ksm/run");
    let Some(run) = run else {
        return note(
            TOPIC,
            "not in this kernel".to_string(),
            "no /sys/kernel/mm/ksm".to_string(),
        );
    };
    let sharing = number(host, "/sys/kernel/mm/ksm/pages_sharing").unwrap_or(0);
    let current = format!(
        "{} (pages_sharing {sharing})",
        if run == 1 { "running" } else { "stopped" }
    );
    let Some(guest_kib) = plan.guest_memory_kib else {
        return note(
            TOPIC,
            current,
            "say how much memory the guests have together (--guest-memory): KSM pays when \
             they overcommit the host"
                .to_string(),
        );
    };
    let total_kib = meminfo_kib(host, "MemTotal").max(1);
    let overcommit = guest_kib * 100 > total_kib * KSM_OVERCOMMIT_PERCENT && !plan.hugepages;
    let (want, reason) = if overcommit {
        (
            1,
            format!(
                "the guests' {} MiB is over {KSM_OVERCOMMIT_PERCENT}% of the host's {} MiB: \
                 merging their identical pages is what lets them fit (guests that must not \
                 share: <nosharepages/>)",
                guest_kib / 1024,
                total_kib / 1024
            ),
        )
    } else {
        (
            0,
            format!(
                "the guests' {} MiB fit in the host's {} MiB{}: scanning for identical pages \
                 would only cost CPU",
                guest_kib / 1024,
                total_kib / 1024,
                if plan.hugepages {
                    " (and huge pages are never merged)"
                } else {
                    ""
                }
            ),
        )
    };
    item(
        host,
        TOPIC,
        run == want,
        current,
        &reason,
        Setting {
            file: TMPFILES_FILE,
            line: format!("w /sys/kernel/mm/ksm/run - - - - {want}"),
            now: format!("echo {want} > /sys/kernel/mm/ksm/run"),
        },
    )
}

fn thp(host: &HostView) -> Advice {
    const TOPIC: &str = "transparent huge pages";
    let Some(modes) = host.value("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return note(
            TOPIC,
            "not in this kernel".to_string(),
            "no /sys/kernel/mm/transparent_hugepage".to_string(),
        );
    };
    let mode = selected(&modes).unwrap_or_default();
    item(
        host,
        TOPIC,
        mode != "never",
        mode.clone(),
        "QEMU and oxvirt-vmm ask for huge pages for guest memory (madvise): with `never` every \
         guest runs on 4 KiB pages",
        Setting {
            file: TMPFILES_FILE,
            line: "w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise".to_string(),
            now: "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".to_string(),
        },
    )
}

/// The `[selected]` word of a sysfs choice list (`always [madvise] never`).
fn selected(choices: &str) -> Option<String> {
    choices.split_whitespace().find_map(|word| {
        word.strip_prefix('[')
            .and_then(|w| w.strip_suffix(']'))
            .map(str::to_string)
    })
}

/// The kinds of block devices the I/O scheduler advice tells apart, each with its udev match.
struct DiskKind {
    name: &'static str,
    scheduler: &'static str,
    udev_match: &'static str,
    reason: &'static str,
}

const NVME: DiskKind = DiskKind {
    name: "NVMe",
    scheduler: "none",
    udev_match: r#"KERNEL=="nvme[0-9]*n[0-9]*""#,
    reason: "NVMe queues are deep and fast: a scheduler only adds latency",
};
const VIRTUAL: DiskKind = DiskKind {
    name: "virtual disk",
    scheduler: "none",
    udev_match: r#"KERNEL=="vd[a-z]*|xvd[a-z]*""#,
    reason: "this host is itself a guest: the hypervisor below schedules the real device",
};
const SSD: DiskKind = DiskKind {
    name: "SSD",
    scheduler: "mq-deadline",
    udev_match: r#"KERNEL=="sd[a-z]*", ATTR{queue/rotational}=="0""#,
    reason: "mq-deadline keeps guests' reads from starving behind their writes at little cost",
};
const ROTATIONAL: DiskKind = DiskKind {
    name: "rotational disk",
    scheduler: "mq-deadline",
    udev_match: r#"KERNEL=="sd[a-z]*", ATTR{queue/rotational}=="1""#,
    reason: "mq-deadline bounds each request's wait: guests sharing a disk stay responsive",
};

fn disk_kind(name: &str, rotational: bool) -> Option<&'static DiskKind> {
    if name.starts_with("nvme") {
        Some(&NVME)
    } else if name.starts_with("vd") || name.starts_with("xvd") {
        Some(&VIRTUAL)
    } else if name.starts_with("sd") {
        Some(if rotational { &ROTATIONAL } else { &SSD })
    } else {
        // loop, zram, device-mapper, md: no scheduler of their own worth setting.
        None
    }
}

fn io_schedulers(host: &HostView) -> Vec<Advice> {
    let mut disks: Vec<String> = std::fs::read_dir(host.path("/sys/block"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    disks.sort();
    let mut items = Vec::new();
    for disk in disks {
        let queue = format!("/sys/block/{disk}/queue");
        let rotational = host.value(&format!("{queue}/rotational")).as_deref() == Some("1");
        let Some(kind) = disk_kind(&disk, rotational) else {
            continue;
        };
        let Some(choices) = host.value(&format!("{queue}/scheduler")) else {
            continue;
        };
        let topic = format!("I/O scheduler of {disk} ({})", kind.name);
        let current = selected(&choices).unwrap_or_else(|| choices.clone());
        if !choices
            .split_whitespace()
            .any(|c| c.trim_matches(['[', ']']) == kind.scheduler)
        {
            items.push(note(
                &topic,
                current,
                format!("this kernel does not offer {} for it", kind.scheduler),
            ));
            continue;
        }
        items.push(item(
            host,
            &topic,
            current == kind.scheduler,
            current.clone(),
            &format!("{}: {}", kind.scheduler, kind.reason),
            Setting {
                file: UDEV_FILE,
                line: format!(
                    r#"ACTION=="add|change", {}, ATTR{{queue/scheduler}}="{}""#,
                    kind.udev_match, kind.scheduler
                ),
                now: format!("echo {} > {queue}/scheduler", kind.scheduler),
            },
        ));
    }
    // One rule per kind of disk, not per disk.
    let mut seen = std::collections::BTreeSet::new();
    for advice in &mut items {
        if let Some(setting) = &advice.setting {
            if !seen.insert(setting.line.clone()) {
                advice.setting = None;
            }
        }
    }
    items
}

fn aio_max_nr(host: &HostView) -> Advice {
    let value = number(host, "/proc/sys/fs/aio-max-nr").unwrap_or(0);
    item(
        host,
        "fs.aio-max-nr",
        value >= AIO_MAX_NR,
        value.to_string(),
        "guests with io='native' take up to 128 aio events per disk queue from this host-wide \
         limit; when it runs out, QEMU cannot start them",
        Setting {
            file: SYSCTL_FILE,
            line: format!("fs.aio-max-nr = {AIO_MAX_NR}"),
            now: format!("sysctl -w fs.aio-max-nr={AIO_MAX_NR}"),
        },
    )
}

fn vhost_net(host: &HostView) -> Advice {
    let present = host.exists("/dev/vhost-net");
    item(
        host,
        "vhost-net",
        present,
        if present { "loaded" } else { "not loaded" }.to_string(),
        "virtio-net guests move packets in the host kernel instead of through QEMU's thread",
        Setting {
            file: MODULES_FILE,
            line: "vhost_net".to_string(),
            now: "modprobe vhost_net".to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, path: &str, text: &str) {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    }

    /// A kvm_amd host with nested off, KSM running, THP never, an NVMe with mq-deadline and an
    /// SSD with none, a low aio limit, no vhost-net; 16 GiB.
    fn untuned_host() -> (tempfile::TempDir, HostView) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "/sys/module/kvm_amd/parameters/nested", "0\n");
        write(root, "/proc/meminfo", "MemTotal:       16777216 kB\n");
        write(root, "/proc/sys/vm/nr_hugepages", "0\n");
        write(root, "/sys/kernel/mm/ksm/run", "1\n");
        write(root, "/sys/kernel/mm/ksm/pages_sharing", "0\n");
        write(
            root,
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "always madvise [never]\n",
        );
        write(
            root,
            "/sys/block/nvme0n1/queue/scheduler",
            "none [mq-deadline]\n",
        );
        write(root, "/sys/block/nvme0n1/queue/rotational", "0\n");
        write(
            root,
            "/sys/block/sda/queue/scheduler",
            "[none] mq-deadline bfq\n",
        );
        write(root, "/sys/block/sda/queue/rotational", "0\n");
        write(
            root,
            "/sys/block/loop0/queue/scheduler",
            "[none] mq-deadline\n",
        );
        write(root, "/proc/sys/fs/aio-max-nr", "65536\n");
        let host = HostView::at(root);
        (dir, host)
    }

    fn statuses(items: &[Advice]) -> Vec<(String, Status)> {
        items.iter().map(|a| (a.topic.clone(), a.status)).collect()
    }

    #[test]
    fn an_untuned_host_gets_every_change() {
        let (_dir, host) = untuned_host();
        let plan = GuestPlan {
            guest_memory_kib: Some(4 * 1024 * 1024),
            hugepages: true,
        };
        let items = advise(&host, &plan);
        assert_eq!(
            statuses(&items),
            [
                ("nested virtualization", Status::Change),
                ("huge pages (2 MiB)", Status::Change),
                ("KSM (same-page merging)", Status::Change),
                ("transparent huge pages", Status::Change),
                ("I/O scheduler of nvme0n1 (NVMe)", Status::Change),
                ("I/O scheduler of sda (SSD)", Status::Change),
                ("fs.aio-max-nr", Status::Change),
                ("vhost-net", Status::Change),
            ]
            .map(|(t, s)| (t.to_string(), s))
        );
        let lines: Vec<&str> = items
            .iter()
            .filter_map(|a| a.setting.as_ref().map(|s| s.line.as_str()))
            .collect();
        assert!(lines.contains(&"options kvm_amd nested=1"));
        assert!(lines.contains(&"vm.nr_hugepages = 2048"));
        assert!(lines.contains(&"w /sys/kernel/mm/ksm/run - - - - 0"));
    }

    #[test]
    fn apply_writes_once_then_changes_nothing() {
        let (dir, host) = untuned_host();
        let plan = GuestPlan {
            guest_memory_kib: Some(15 * 1024 * 1024),
            hugepages: false,
        };
        let first = apply(&host, &advise(&host, &plan)).expect("apply");
        assert!(first.iter().all(|a| a.changed), "{first:?}");
        let files: Vec<&str> = first.iter().map(|a| a.file).collect();
        assert_eq!(
            files,
            [
                MODPROBE_FILE,
                MODULES_FILE,
                SYSCTL_FILE,
                TMPFILES_FILE,
                UDEV_FILE
            ]
        );
        let sysctl = std::fs::read_to_string(dir.path().join(&SYSCTL_FILE[1..])).expect("sysctl");
        assert!(sysctl.ends_with("fs.aio-max-nr = 1048576\n"), "{sysctl}");
        let tmpfiles = std::fs::read_to_string(dir.path().join(&TMPFILES_FILE[1..])).expect("tmp");
        // Overcommitted, and KSM already runs: nothing to set for it.
        assert!(!tmpfiles.contains("ksm/run"), "{tmpfiles}");

        let second = apply(&host, &advise(&host, &plan)).expect("again");
        assert!(second.iter().all(|a| !a.changed), "{second:?}");

        // After a reboot the kernel has the settings: they stay in the files all the same.
        write(dir.path(), "/proc/sys/fs/aio-max-nr", "1048576\n");
        let after_boot = advise(&host, &plan);
        let aio = after_boot
            .iter()
            .find(|a| a.topic == "fs.aio-max-nr")
            .expect("aio");
        assert_eq!(aio.status, Status::Ok);
        let third = apply(&host, &after_boot).expect("after boot");
        assert!(third.iter().all(|a| !a.changed), "{third:?}");
    }

    #[test]
    fn what_cannot_be_set_is_a_note() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "/sys/module/kvm_pvm/parameters/x", "");
        let host = HostView::at(dir.path());
        let items = advise(&host, &GuestPlan::default());
        assert_eq!(items[0].status, Status::Note);
        assert!(items[0].reason.contains("kvm_pvm has no nested"));
        assert!(items
            .iter()
            .all(|a| a.status != Status::Change || a.setting.is_some()));
    }
}
