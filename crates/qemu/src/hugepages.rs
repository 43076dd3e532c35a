//! Whether the host's huge page pool can hold a `<hugepages/>` guest, checked before launch.
//!
//! QEMU preallocates huge-page-backed RAM at start (`prealloc=on`) and, without enough free
//! pages, dies with "unable to map backing store for guest RAM" or is killed by SIGBUS while
//! faulting them in; the daemon says beforehand what is missing instead: the page size, how
//! many pages the guest needs and how many the host has free.

use std::path::Path;

use oxvirt_domain::{Domain, MemorySource};

use crate::cmdline::HUGEPAGES_MOUNT;
use crate::QemuError;

/// Where the kernel describes its huge page pools, one directory per page size.
const SYSFS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// What the kernel says about one pool of huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugepagePool {
    pub page_kib: u64,
    /// `free_hugepages`: pages no mapping has faulted in yet.
    pub free: u64,
    /// `resv_hugepages`: free pages already promised to mappings that have not faulted them in.
    pub reserved: u64,
    /// `nr_hugepages`: the pool's size.
    pub total: u64,
}

impl HugepagePool {
    /// The pool of `page_kib` pages under `sysfs` (`/sys/kernel/mm/hugepages`); `None` when the
    /// host has no such page size.
    pub fn read(sysfs: &Path, page_kib: u64) -> Option<HugepagePool> {
        let dir = sysfs.join(format!("hugepages-{page_kib}kB"));
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some(HugepagePool {
            page_kib,
            free: read("free_hugepages")?,
            reserved: read("resv_hugepages").unwrap_or(0),
            total: read("nr_hugepages")?,
        })
    }

    /// Pages a new mapping can still get.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// The host's default huge page size (`Hugepagesize:` in /proc/meminfo), in KiB.
fn default_page_kib(meminfo: &str) -> Option<u64> {
    oxvirt_host::node::meminfo_value(meminfo, "Hugepagesize")
}

/// The page size of the hugetlbfs mounted at `mount_point` (its `pagesize=` option in
/// /proc/mounts), in KiB; `None` when it does not say (then it is the default size).
fn mount_page_kib(mounts: &str, mount_point: &str) -> Option<u64> {
    let options = mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, fstype, options) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        (point == mount_point && fstype == "hugetlbfs").then_some(options)
    })?;
    let size = options
        .split(',')
        .find_map(|option| option.strip_prefix("pagesize="))?;
    let (number, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = number.parse().ok()?;
    match unit {
        "K" | "k" => Some(number),
        "M" | "m" => number.checked_mul(1 << 10),
        "G" | "g" => number.checked_mul(1 << 20),
        _ => None,
    }
}

/// Before a start of `domain`: with `<memoryBacking><hugepages/>`, the pool of the page size
/// QEMU will use (hugetlbfs at /dev/hugepages, or the default size for memfd) must hold all of
/// the guest's memory.
pub fn check_hugepages(domain: &Domain) -> Result<(), QemuError> {
    let Some(backing) = &domain.memory_backing else {
        return Ok(());
    };
    let Some(hugepages) = &backing.hugepages else {
        return Ok(());
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let from_mount = (backing.source != Some(MemorySource::Memfd))
        .then(|| mount_page_kib(&mounts, HUGEPAGES_MOUNT))
        .flatten();
    let Some(page_kib) = from_mount.or_else(|| default_page_kib(&meminfo)) else {
        return Err(QemuError::invalid(
            "memoryBacking/hugepages",
            hugepages.line,
            "this host's kernel has no huge pages (no Hugepagesize in /proc/meminfo)",
        ));
    };
    let pool = HugepagePool::read(Path::new(SYSFS_HUGEPAGES), page_kib);
    match shortage(domain.memory_kib, page_kib, pool) {
        None => Ok(()),
        Some(reason) => Err(QemuError::invalid(
            "memoryBacking/hugepages",
            hugepages.line,
            reason,
        )),
    }
}

/// What is missing for `memory_kib` of guest RAM in pages of `page_kib` from `pool`, said for
/// a person; `None` when the pool holds it.
fn shortage(memory_kib: u64, page_kib: u64, pool: Option<HugepagePool>) -> Option<String> {
    let needed = memory_kib.div_ceil(page_kib);
    let Some(pool) = pool else {
        return Some(format!(
            "the guest needs {needed} huge pages of {page_kib} KiB, and the host has no pool of that size ({SYSFS_HUGEPAGES}/hugepages-{page_kib}kB)"
        ));
    };
    let available = pool.available();
    if available >= needed {
        return None;
    }
    let reserved = match pool.reserved {
        0 => String::new(),
        n => format!(", {n} of them reserved by other mappings"),
    };
    Some(format!(
        "the guest needs {needed} huge pages of {page_kib} KiB, and the host has {} free of {}{reserved} ({SYSFS_HUGEPAGES}/hugepages-{page_kib}kB/free_hugepages); reserve more, e.g. echo {} > {SYSFS_HUGEPAGES}/hugepages-{page_kib}kB/nr_hugepages",
        pool.free,
        pool.total,
        pool.total + (needed - available),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_come_from_meminfo_and_the_mount() {
        assert_eq!(
            default_page_kib("MemTotal: 100 kB\nHugepagesize:       2048 kB\n"),
            Some(2048)
        );
        assert_eq!(default_page_kib("MemTotal: 100 kB\n"), None);
        let mounts = "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1024M 0 0\n";
        assert_eq!(mount_page_kib(mounts, "/dev/hugepages"), Some(1 << 20));
        let plain = "hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0\n";
        assert_eq!(mount_page_kib(plain, "/dev/hugepages"), None);
        assert_eq!(mount_page_kib(mounts, "/mnt"), None);
    }

    #[test]
    fn a_short_pool_is_named_with_its_counts() {
        let pool = |free, reserved, total| {
            Some(HugepagePool {
                page_kib: 2048,
                free,
                reserved,
                total,
            })
        };
        assert_eq!(shortage(262144, 2048, pool(128, 0, 128)), None);
        let said = shortage(262144, 2048, pool(100, 0, 100)).unwrap();
        assert!(
            said.starts_with(
                "the guest needs 128 huge pages of 2048 KiB, and the host has 100 free of 100"
            ),
            "{said}"
        );
        assert!(said.contains("echo 128 > "), "{said}");
        let said = shortage(262144, 2048, pool(130, 10, 130)).unwrap();
        assert!(
            said.contains("130 free of 130, 10 of them reserved"),
            "{said}"
        );
        let said = shortage(1025, 1024, None).unwrap();
        assert!(said.contains("needs 2 huge pages of 1024 KiB"), "{said}");
    }
}
