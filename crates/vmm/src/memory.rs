//! Guest RAM: anonymous private mappings on 2 MiB boundaries with transparent huge pages (or on hugetlbfs pages
//! when asked), shared with KSM unless told not to.

use oxvirt_virtio::GuestRam;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion};

use crate::layout;

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Back RAM with hugepages (`MAP_HUGETLB`); needs `vm.nr_hugepages` set on the host.
    pub hugepages: bool,
    /// Mark RAM `MADV_MERGEABLE` so KSM can share identical pages (off with `--no-share-pages`).
    pub share_pages: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "guest memory of {requested_mib} MiB exceeds the host's total memory ({host_mib} MiB)"
    )]
    TooLarge { requested_mib: u64, host_mib: u64 },
    #[error("guest memory must be at least {min_mib} MiB, got {requested_mib} MiB")]
    TooSmall { requested_mib: u64, min_mib: u64 },
    #[error("cannot map {size_mib} MiB of guest memory{hint}: {source}")]
    Map {
        size_mib: u64,
        hint: &'static str,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("cannot assemble guest memory: {0}")]
    Regions(String),
}

/// Smallest guest we accept: the kernel, initramfs and boot structures need room.
pub const MIN_MEMORY_MIB: u64 = 32;

/// The host's total RAM in bytes (from /proc/meminfo), if known.
pub fn host_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Maps guest RAM for `mem_mib` MiB.
pub fn create_guest_memory(mem_mib: u64, options: MemoryOptions) -> Result<GuestRam, MemoryError> {
    if mem_mib < MIN_MEMORY_MIB {
        return Err(MemoryError::TooSmall {
            requested_mib: mem_mib,
            min_mib: MIN_MEMORY_MIB,
        });
    }
    if let Some(host) = host_memory_bytes() {
        if mem_mib.saturating_mul(1 << 20) > host {
            return Err(MemoryError::TooLarge {
                requested_mib: mem_mib,
                host_mib: host >> 20,
            });
        }
    }
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if options.hugepages {
        flags |= libc::MAP_HUGETLB;
    }
    let mut regions = Vec::new();
    for (addr, size) in layout::ram_ranges(mem_mib << 20) {
        let size = size as usize;
        let host = map_aligned(size, flags).map_err(|source| MemoryError::Map {
            size_mib: (size >> 20) as u64,
            hint: if options.hugepages {
                " on hugepages (is vm.nr_hugepages large enough?)"
            } else {
                ""
            },
            source,
        })?;
        if !options.hugepages {
            // SAFETY: the range is exactly the mapping we just created and still own; the hint only changes how
            // the kernel backs it (transparent huge pages, also where THP is in `madvise` mode), never its
            // contents. Failure (THP disabled) is harmless.
            unsafe {
                libc::madvise(host.cast(), size, libc::MADV_HUGEPAGE);
            }
        }
        // As QEMU's mem-merge: on by default, off with <nosharepages/>. Unmergeable is said explicitly, so a
        // process-wide KSM setting (prctl PR_SET_MEMORY_MERGE, inherited on newer kernels) does not apply.
        let advice = if options.share_pages {
            libc::MADV_MERGEABLE
        } else {
            libc::MADV_UNMERGEABLE
        };
        // SAFETY: as above; the advice only decides whether KSM may share identical pages. Failure (no KSM)
        // is harmless.
        unsafe {
            libc::madvise(host.cast(), size, advice);
        }
        // SAFETY: `host` is a fresh private mapping of `size` readable and writable bytes that nothing else
        // refers to, and it is never unmapped (see map_aligned), so it outlives the region.
        let region = unsafe {
            MmapRegion::<AtomicBitmap>::build_raw(
                host,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
            )
        }
        .map_err(|e| MemoryError::Regions(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(addr))
            .ok_or_else(|| MemoryError::Regions(format!("region at {addr:#x} overflows")))?;
        regions.push(region);
    }
    GuestRam::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))
}

/// Huge-page size KVM can map guest RAM with on x86-64.
const HUGE_PAGE: usize = 2 << 20;
/// Size of the inaccessible guard page kept on each side of guest RAM.
const GUARD: usize = 4096;

/// Maps `size` bytes of anonymous memory starting on a 2 MiB boundary, with a guard page on each side.
///
/// KVM maps guest memory with 2 MiB pages only where guest-physical and host-virtual addresses agree modulo
/// 2 MiB; the kernel's choice of address for a plain mmap (4 KiB aligned on hosts before Linux 6.7) would force
/// 4 KiB mappings for all of RAM, and in the nested lab the guest kernel then ran about 1.3x slower throughout
/// (QEMU aligns its RAM blocks the same way). The guard pages make a host-side access just outside RAM fault
/// instead of touching a neighbouring mapping, and they keep the next mapping (a thread stack, typically) off
/// the 2 MiB boundary, where THP `always` would back its few used kilobytes with a whole huge page.
///
/// The mapping lives as long as the process: guest memory is shared with device threads until the VMM exits,
/// and the kernel unmaps it then.
fn map_aligned(size: usize, flags: i32) -> Result<*mut u8, vm_memory::mmap::MmapRegionError> {
    let hugetlb = flags & libc::MAP_HUGETLB != 0;
    // hugetlbfs mappings come huge-page aligned and can only be split on huge-page boundaries: no slack.
    let slack = if hugetlb { 0 } else { HUGE_PAGE + GUARD };
    let total = size + slack;
    // SAFETY: a new anonymous private mapping at an address the kernel picks; it aliases nothing of ours.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(vm_memory::mmap::MmapRegionError::Mmap(
            std::io::Error::last_os_error(),
        ));
    }
    let base = base as usize;
    if hugetlb {
        return Ok(base as *mut u8);
    }
    // At least one page below the boundary for the lower guard, so at least one page above the end remains.
    let start = (base + GUARD).next_multiple_of(HUGE_PAGE);
    let end = start + size;
    // SAFETY: every range below lies inside the mapping just made, outside [start, end), and is page aligned
    // (`base`, `start` and `size` are); nothing points into them.
    unsafe {
        let unmap = |from: usize, to: usize| {
            if to > from {
                libc::munmap(from as *mut libc::c_void, to - from);
            }
        };
        unmap(base, start - GUARD);
        unmap(end + GUARD, base + total);
        libc::mprotect((start - GUARD) as *mut libc::c_void, GUARD, libc::PROT_NONE);
        libc::mprotect(end as *mut libc::c_void, GUARD, libc::PROT_NONE);
    }
    Ok(start as *mut u8)
}

/// (guest address, size, host address) of every RAM region, for KVM memory slots.
pub fn host_regions(mem: &GuestRam) -> Vec<(u64, u64, u64)> {
    mem.iter()
        .map(|r| {
            let host = mem
                .get_host_address(r.start_addr())
                .map(|p| p as u64)
                .unwrap_or(0);
            (r.start_addr().0, r.len(), host)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn maps_writable_ram_with_ksm_hint() {
        let mem = create_guest_memory(
            64,
            MemoryOptions {
                hugepages: false,
                share_pages: true,
            },
        )
        .unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert_eq!(host_regions(&mem).len(), 1);
    }

    /// Whether the page at `addr` is mapped with no access rights, from /proc/self/maps.
    fn inaccessible(addr: u64) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|line| {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
                return false;
            };
            let Some((from, to)) = range.split_once('-') else {
                return false;
            };
            let from = u64::from_str_radix(from, 16).unwrap();
            let to = u64::from_str_radix(to, 16).unwrap();
            (from..to).contains(&addr) && perms.starts_with("---")
        })
    }

    #[test]
    fn ram_starts_on_a_huge_page_boundary() {
        for _ in 0..4 {
            // 33 MiB: not a multiple of 2 MiB, so even Linux 6.7+ would not align a plain mapping by itself.
            let mem = create_guest_memory(33, MemoryOptions::default()).unwrap();
            for (guest, _, host) in host_regions(&mem) {
                assert_eq!(guest % HUGE_PAGE as u64, host % HUGE_PAGE as u64);
                assert_eq!(host % HUGE_PAGE as u64, 0, "{host:#x}");
                assert!(
                    inaccessible(host - GUARD as u64),
                    "no guard page below {host:#x}"
                );
                assert!(
                    inaccessible(host + (33 << 20)),
                    "no guard page above RAM at {host:#x}"
                );
            }
        }
    }

    /// The VmFlags line of the mapping that starts at `addr`, from /proc/self/smaps.
    fn vm_flags(addr: u64) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((from, _)) = first.split_once('-') {
                if let Ok(from) = u64::from_str_radix(from, 16) {
                    inside = from == addr;
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.trim().to_string();
                }
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    #[test]
    fn ram_is_mergeable_unless_told_not_to_share() {
        for (share_pages, mergeable) in [(true, true), (false, false)] {
            let mem = create_guest_memory(
                34,
                MemoryOptions {
                    hugepages: false,
                    share_pages,
                },
            )
            .unwrap();
            let (_, _, host) = host_regions(&mem)[0];
            let flags = vm_flags(host);
            assert_eq!(
                flags.split_whitespace().any(|f| f == "mg"),
                mergeable,
                "share_pages {share_pages}: VmFlags {flags}"
            );
        }
    }

    #[test]
    fn refuses_more_memory_than_the_host_has() {
        let err = create_guest_memory(1 << 30, MemoryOptions::default()).unwrap_err();
        assert!(matches!(err, MemoryError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn refuses_tiny_guests() {
        assert!(matches!(
            create_guest_memory(4, MemoryOptions::default()),
            Err(MemoryError::TooSmall { .. })
        ));
    }
}
