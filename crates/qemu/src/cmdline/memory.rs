//! Guest RAM as QEMU memory-backend objects, the way libvirt 9.0 builds them from
//! `<memoryBacking>` (and, for a NUMA cell, its `memAccess`/`discard`).

use oxvirt_domain::{Hugepages, MemoryAccess, MemoryAllocation, MemoryBacking, MemorySource};
use serde_json::{json, Map, Value};

use super::HUGEPAGES_MOUNT;
use crate::{QemuError, RunPaths};

/// What a NUMA cell says about its own memory, over `<memoryBacking>`'s.
#[derive(Clone, Copy, Default)]
pub(super) struct CellMemory {
    pub access: Option<MemoryAccess>,
    pub discard: Option<bool>,
}

/// The `-object` of backend `id` (`pc.ram`, `ram-node0`) holding `bytes` of guest RAM; `None`
/// when `<memoryBacking>` asks for nothing a backend object is needed for and `always` is
/// false (QEMU's built-in RAM then serves, as before libvirt's memory-backend days).
///
/// libvirt's choice of backend: memfd when `<source type='memfd'>` (with huge pages:
/// `hugetlb`); a file (in hugetlbfs with `<hugepages>`, else a file of the run directory)
/// with huge pages, `<source type='file'>` or any explicit access mode (in the run directory);
/// else plain RAM.
/// `share` follows the access mode, `prealloc` immediate allocation or huge pages, and
/// `discard-data` `<discard/>` on file backends.
pub(super) fn backend(
    run: &RunPaths,
    backing: Option<&MemoryBacking>,
    (id, bytes): (&str, u64),
    cell: CellMemory,
    always: bool,
) -> Result<Option<Value>, QemuError> {
    let empty = MemoryBacking::default();
    let MemoryBacking {
        hugepages,
        // Machine options (mem-merge, mem-lock), not the backend's.
        nosharepages: _,
        locked: _,
        source,
        access,
        allocation,
        allocation_threads,
        discard,
        line: _,
    } = backing.unwrap_or(&empty);
    let access = cell.access.or(*access);
    let discard = cell.discard.unwrap_or(*discard);
    if let Some(Hugepages {
        page_sizes_kib,
        line,
    }) = hugepages
    {
        if !page_sizes_kib.is_empty() {
            return Err(QemuError::unsupported(
                "memoryBacking/hugepages/page",
                *line,
                "explicit huge page sizes are not supported; <hugepages/> uses the host's default size from /dev/hugepages",
            ));
        }
    }
    let huge = hugepages.is_some();
    let mut object = Map::new();
    let qom_type = if *source == Some(MemorySource::Memfd) {
        if huge {
            object.insert("hugetlb".into(), json!(true));
        }
        "memory-backend-memfd"
    } else if huge || *source == Some(MemorySource::File) || access.is_some() {
        // A directory: QEMU creates its file there and unlinks it at once, so guest RAM never
        // outlives QEMU on disk (libvirt names a file and deletes it when the guest stops).
        let path = if huge {
            HUGEPAGES_MOUNT.into()
        } else {
            run.dir.clone()
        };
        object.insert("mem-path".into(), json!(path.to_string_lossy()));
        if discard {
            object.insert("discard-data".into(), json!(true));
        }
        "memory-backend-file"
    } else {
        let plain = allocation.is_none() && allocation_threads.is_none();
        if plain && !always {
            return Ok(None);
        }
        "memory-backend-ram"
    };
    if let Some(access) = access {
        object.insert("share".into(), json!(access == MemoryAccess::Shared));
    }
    if huge || *allocation == Some(MemoryAllocation::Immediate) {
        object.insert("prealloc".into(), json!(true));
        if let Some(threads) = allocation_threads {
            object.insert("prealloc-threads".into(), json!(threads));
        }
    }
    object.insert("size".into(), json!(bytes));
    let mut value = json!({"qom-type": qom_type, "id": id});
    for (key, v) in object {
        value[key] = v;
    }
    Ok(Some(value))
}
