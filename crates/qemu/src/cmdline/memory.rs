//! Guest RAM as QEMU memory-backend objects, the way libvirt 9.0 builds them from
//! `<memoryBacking>` (and, for a NUMA cell, its `memAccess`/`discard`).

use oxvirt_domain::{
    CpuSet, Hugepages, MemNode, MemoryAccess, MemoryAllocation, MemoryBacking, MemorySource,
    NumaMemory, NumaMode, NumaTune, SourceLine, VcpuPlacement,
};
use serde_json::{json, Map, Value};

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
/// `hugetlb`); a file (in hugetlbfs with `<hugepages>`, else one of the run directory's `qemu`)
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
        // Not on hugetlbfs: the one of the run directory QEMU may write as a guest user.
        let path = if huge {
            run.hugepages_dir()
        } else {
            run.qemu_dir()
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

/// QEMU's `policy` of a host-nodes binding for a numatune mode. libvirt applies `strict` and
/// `restrictive` through the cgroup cpuset controller; oxvirt manages no cgroups, so `strict`
/// binds the backend (the same placement, enforced by the kernel's mbind) and `restrictive`
/// (cgroups only, by definition) is refused.
fn policy(mode: NumaMode, element: &str, line: SourceLine) -> Result<&'static str, QemuError> {
    match mode {
        NumaMode::Strict => Ok("bind"),
        NumaMode::Preferred => Ok("preferred"),
        NumaMode::Interleave => Ok("interleave"),
        NumaMode::Restrictive => Err(QemuError::unsupported(
            format!("{element}@mode"),
            line,
            "mode='restrictive' is enforced through cgroups, which oxvirt does not manage",
        )),
    }
}

/// The host nodes and policy a backend is bound to: the cell's `<memnode>` (`cell` is its id),
/// else `<numatune><memory>`; none without numatune.
pub(super) fn binding(
    tune: Option<&NumaTune>,
    cell: Option<usize>,
) -> Result<Option<(Vec<u32>, &'static str)>, QemuError> {
    let Some(NumaTune {
        memory,
        memnodes,
        line: _,
    }) = tune
    else {
        return Ok(None);
    };
    if let Some(node) = cell.and_then(|id| memnodes.iter().find(|n| n.cellid as usize == id)) {
        let MemNode {
            cellid,
            mode,
            nodeset,
            line,
        } = node;
        let element = format!("numatune/memnode[@cellid='{cellid}']");
        return Ok(Some((
            nodeset.iter().collect(),
            policy(*mode, &element, *line)?,
        )));
    }
    let Some(NumaMemory {
        mode,
        placement,
        nodeset,
        line,
    }) = memory
    else {
        return Ok(None);
    };
    match (placement, nodeset) {
        (VcpuPlacement::Static, Some(nodeset)) => Ok(Some((
            nodeset.iter().collect(),
            policy(*mode, "numatune/memory", *line)?,
        ))),
        _ => Err(QemuError::unsupported(
            "numatune/memory@placement",
            *line,
            "placement='auto' needs numad, which this engine does not use",
        )),
    }
}

/// Puts a host-nodes binding on a backend object.
pub(super) fn bind(backend: &mut Value, binding: Option<(Vec<u32>, &'static str)>) {
    if let Some((nodes, policy)) = binding {
        backend["host-nodes"] = json!(nodes);
        backend["policy"] = json!(policy);
    }
}

/// `-numa node,nodeid=N,cpus=A-B[,cpus=C],memdev=ram-nodeN` (QEMU takes one `cpus=` per range).
pub(super) fn numa_node(id: usize, cpus: Option<&CpuSet>) -> String {
    let mut node = format!("node,nodeid={id}");
    if let Some(cpus) = cpus {
        for range in cpus.to_string().split(',') {
            node.push_str(&format!(",cpus={range}"));
        }
    }
    node.push_str(&format!(",memdev=ram-node{id}"));
    node
}
