//! The host (libvirt's "node"): wire types and [`Client`] calls behind virsh's `nodeinfo`,
//! `nodecpumap`, `nodecpustats`, `nodememstats`, `freecell`, `freepages`, `allocpages` and
//! `node-memory-tune`.
//!
//! | method + path                  | query / body        | reply            |
//! |--------------------------------|---------------------|------------------|
//! | `GET /v1/node`                 |                     | [`NodeInfo`]     |
//! | `GET /v1/node/cpumap`          |                     | [`NodeCpuMap`]   |
//! | `GET /v1/node/cpustats`        | `?cpu=N`            | [`NodeValues`]   |
//! | `GET /v1/node/memstats`        | `?cell=N`           | [`NodeValues`]   |
//! | `GET /v1/node/freecells`       |                     | [`CellsFree`]    |
//! | `GET /v1/node/pages`           | `?cell=N`           | [`FreePages`]    |
//! | `POST /v1/node/pages`          | [`AllocPages`]      | [`PagePool`]     |
//! | `GET /v1/node/ksm`             |                     | [`NodeValues`]   |
//! | `POST /v1/node/ksm`            | [`KsmSettings`]     | [`NodeValues`]   |
//!
//! CPU times are in nanoseconds, memory in KiB, each value under virsh's name.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{to_json, Client, ClientError};

/// Reply of `GET /v1/node`: `sockets` counts per NUMA cell, `cores` per socket, `threads` per
/// core, as libvirt counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub arch: String,
    pub cpus: u32,
    pub mhz: u32,
    pub cells: u32,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    pub memory_kib: u64,
}

/// Reply of `GET /v1/node/cpumap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeCpuMap {
    pub present: Vec<u32>,
    pub online: Vec<u32>,
}

/// Named counters, in the order virsh prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeValues {
    pub values: Vec<NodeValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeValue {
    pub name: String,
    pub value: u64,
}

/// Reply of `GET /v1/node/freecells`: each NUMA cell's free memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CellsFree {
    pub cells: Vec<CellFree>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CellFree {
    pub cell: u32,
    pub free_kib: u64,
}

/// Free pages of each size on one cell, the system page size first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FreePages {
    pub cell: u32,
    pub pages: Vec<PageCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageCount {
    pub size_kib: u64,
    pub count: u64,
}

/// Body of `POST /v1/node/pages`: size the pool of `size_kib` huge pages to `count` (grow it
/// by `count` with `add`) on `cell`, or across the host without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllocPages {
    pub size_kib: u64,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
    #[serde(default)]
    pub add: bool,
}

/// Reply of `POST /v1/node/pages`: the pool's size after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PagePool {
    pub size_kib: u64,
    pub pages: u64,
}

/// Body of `POST /v1/node/ksm`: the knobs to set (the others stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KsmSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_to_scan: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_millisecs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_across_nodes: Option<u64>,
}

impl Client {
    /// `GET /v1/node`.
    pub async fn node_info(&self) -> Result<NodeInfo, ClientError> {
        self.call(Method::GET, "/v1/node".to_string(), None).await
    }

    /// `GET /v1/node/cpumap`.
    pub async fn node_cpu_map(&self) -> Result<NodeCpuMap, ClientError> {
        self.call(Method::GET, "/v1/node/cpumap".to_string(), None)
            .await
    }

    /// `GET /v1/node/cpustats`: all CPUs, or `cpu`.
    pub async fn node_cpu_stats(&self, cpu: Option<u32>) -> Result<NodeValues, ClientError> {
        let query = cpu.map_or(String::new(), |cpu| format!("?cpu={cpu}"));
        self.call(Method::GET, format!("/v1/node/cpustats{query}"), None)
            .await
    }

    /// `GET /v1/node/memstats`: the host, or `cell`.
    pub async fn node_memory_stats(&self, cell: Option<u32>) -> Result<NodeValues, ClientError> {
        let query = cell.map_or(String::new(), |cell| format!("?cell={cell}"));
        self.call(Method::GET, format!("/v1/node/memstats{query}"), None)
            .await
    }

    /// `GET /v1/node/freecells`.
    pub async fn node_free_cells(&self) -> Result<CellsFree, ClientError> {
        self.call(Method::GET, "/v1/node/freecells".to_string(), None)
            .await
    }

    /// `GET /v1/node/pages?cell=N`.
    pub async fn node_free_pages(&self, cell: u32) -> Result<FreePages, ClientError> {
        self.call(Method::GET, format!("/v1/node/pages?cell={cell}"), None)
            .await
    }

    /// `POST /v1/node/pages`.
    pub async fn node_alloc_pages(&self, request: &AllocPages) -> Result<PagePool, ClientError> {
        self.call(
            Method::POST,
            "/v1/node/pages".to_string(),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/node/ksm`.
    pub async fn node_ksm(&self) -> Result<NodeValues, ClientError> {
        self.call(Method::GET, "/v1/node/ksm".to_string(), None)
            .await
    }

    /// `POST /v1/node/ksm`.
    pub async fn node_set_ksm(&self, settings: &KsmSettings) -> Result<NodeValues, ClientError> {
        self.call(
            Method::POST,
            "/v1/node/ksm".to_string(),
            Some(to_json(settings)),
        )
        .await
    }
}
