//! Guest RAM: anonymous private mappings, optionally on hugepages, shared with KSM unless told not to.

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

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
pub fn create_guest_memory(
    mem_mib: u64,
    options: MemoryOptions,
) -> Result<GuestMemoryMmap, MemoryError> {
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
        let region = MmapRegion::build(None, size, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|source| MemoryError::Map {
                size_mib: (size >> 20) as u64,
                hint: if options.hugepages {
                    " on hugepages (is vm.nr_hugepages large enough?)"
                } else {
                    ""
                },
                source,
            })?;
        if options.share_pages {
            // SAFETY: the range is exactly the mapping we just created and still own; MADV_MERGEABLE only
            // changes how the kernel may back it, never its contents. Failure (no KSM) is harmless.
            unsafe {
                libc::madvise(region.as_ptr().cast(), size, libc::MADV_MERGEABLE);
            }
        }
        let region = GuestRegionMmap::new(region, GuestAddress(addr))
            .ok_or_else(|| MemoryError::Regions(format!("region at {addr:#x} overflows")))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))
}

/// (guest address, size, host address) of every RAM region, for KVM memory slots.
pub fn host_regions(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u64)> {
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
