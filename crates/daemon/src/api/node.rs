//! HTTP routes of the host's own state (see `oxvirt_api::node`): read from `/proc` and `/sys`
//! by `oxvirt_host::node` on each request; nothing of it is stored.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use oxvirt_api::{
    AllocPages, CellFree, CellsFree, FreePages, KsmSettings, NodeCpuMap, NodeInfo, NodeValue,
    NodeValues, PageCount, PagePool,
};
use oxvirt_host::node::{self, NodeError};
use oxvirt_host::HostView;
use serde::Deserialize;

use super::reply::{blocking, body, Reply};
use crate::services::error::{bad_request, internal, DaemonError};
use crate::services::Services;

type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/node", get(info))
        .route("/v1/node/cpumap", get(cpu_map))
        .route("/v1/node/cpustats", get(cpu_stats))
        .route("/v1/node/memstats", get(memory_stats))
        .route("/v1/node/freecells", get(free_cells))
        .route("/v1/node/pages", get(free_pages).post(alloc_pages))
        .route("/v1/node/ksm", get(ksm).post(set_ksm))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    info,
    cpu_map,
    cpu_stats,
    memory_stats,
    free_cells,
    free_pages,
    alloc_pages,
    ksm,
    set_ksm
))]
pub(super) struct Doc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CpuQuery {
    cpu: Option<u32>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CellQuery {
    cell: Option<u32>,
}

fn host_error(err: NodeError) -> DaemonError {
    match err {
        NodeError::NoSuchCpu { .. }
        | NodeError::NoSuchCell { .. }
        | NodeError::NoSuchPageSize { .. }
        | NodeError::SystemPageSize { .. } => bad_request(err.to_string()),
        NodeError::Unreadable(_)
        | NodeError::Unwritable { .. }
        | NodeError::ShortAllocation { .. } => internal("the host refused", err),
    }
}

fn values(values: Vec<(&'static str, u64)>) -> NodeValues {
    NodeValues {
        values: values
            .into_iter()
            .map(|(name, value)| NodeValue {
                name: name.to_string(),
                value,
            })
            .collect(),
    }
}

fn list(set: BTreeSet<u32>) -> Vec<u32> {
    set.into_iter().collect()
}

#[utoipa::path(
    get,
    path = "/v1/node",
    operation_id = "node_info",
    tag = "host",
    responses((status = 200, description = "success", body = NodeInfo)),
)]
async fn info(State(services): Shared) -> Reply<NodeInfo> {
    blocking(services, "nodeinfo", |_| {
        let info = node::node_info(&HostView::this_host()).map_err(host_error)?;
        Ok(NodeInfo {
            arch: info.arch.to_string(),
            cpus: info.cpus,
            mhz: info.mhz,
            cells: info.cells,
            sockets: info.sockets,
            cores: info.cores,
            threads: info.threads,
            memory_kib: info.memory_kib,
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/cpumap",
    operation_id = "node_cpu_map",
    tag = "host",
    responses((status = 200, description = "success", body = NodeCpuMap)),
)]
async fn cpu_map(State(services): Shared) -> Reply<NodeCpuMap> {
    blocking(services, "nodecpumap", |_| {
        let map = node::cpu_map(&HostView::this_host()).map_err(host_error)?;
        Ok(NodeCpuMap {
            present: list(map.present),
            online: list(map.online),
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/cpustats",
    operation_id = "node_cpu_stats",
    tag = "host",
    params(CpuQuery),
    responses((status = 200, description = "success", body = NodeValues)),
)]
async fn cpu_stats(State(services): Shared, Query(query): Query<CpuQuery>) -> Reply<NodeValues> {
    blocking(services, "nodecpustats", move |_| {
        node::cpu_times(&HostView::this_host(), query.cpu)
            .map(values)
            .map_err(host_error)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/memstats",
    operation_id = "node_memory_stats",
    tag = "host",
    params(CellQuery),
    responses((status = 200, description = "success", body = NodeValues)),
)]
async fn memory_stats(
    State(services): Shared,
    Query(query): Query<CellQuery>,
) -> Reply<NodeValues> {
    blocking(services, "nodememstats", move |_| {
        node::memory_stats(&HostView::this_host(), query.cell)
            .map(values)
            .map_err(host_error)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/freecells",
    operation_id = "node_free_cells",
    tag = "host",
    responses((status = 200, description = "success", body = CellsFree)),
)]
async fn free_cells(State(services): Shared) -> Reply<CellsFree> {
    blocking(services, "freecell", |_| {
        let cells = node::free_memory(&HostView::this_host()).map_err(host_error)?;
        Ok(CellsFree {
            cells: cells
                .into_iter()
                .map(|(cell, free_kib)| CellFree { cell, free_kib })
                .collect(),
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/pages",
    operation_id = "node_free_pages",
    tag = "host",
    params(CellQuery),
    responses((status = 200, description = "success", body = FreePages)),
)]
async fn free_pages(State(services): Shared, Query(query): Query<CellQuery>) -> Reply<FreePages> {
    blocking(services, "freepages", move |_| {
        let cell = query.cell.unwrap_or(0);
        let pages = node::free_pages(&HostView::this_host(), cell).map_err(host_error)?;
        Ok(FreePages {
            cell,
            pages: pages
                .into_iter()
                .map(|(size_kib, count)| PageCount { size_kib, count })
                .collect(),
        })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/node/pages",
    operation_id = "node_alloc_pages",
    tag = "host",
    request_body = AllocPages,
    responses((status = 200, description = "success", body = PagePool)),
)]
async fn alloc_pages(State(services): Shared, bytes: Bytes) -> Reply<PagePool> {
    let request: AllocPages = body(&bytes)?;
    blocking(services, "allocpages", move |_| {
        let pages = node::alloc_pages(
            &HostView::this_host(),
            request.size_kib,
            request.count,
            request.cell,
            request.add,
        )
        .map_err(host_error)?;
        Ok(PagePool {
            size_kib: request.size_kib,
            pages,
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/node/ksm",
    operation_id = "node_ksm",
    tag = "host",
    responses((status = 200, description = "success", body = NodeValues)),
)]
async fn ksm(State(services): Shared) -> Reply<NodeValues> {
    blocking(services, "node-memory-tune", |_| {
        node::ksm(&HostView::this_host())
            .map(values)
            .map_err(host_error)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/node/ksm",
    operation_id = "node_set_ksm",
    tag = "host",
    request_body = KsmSettings,
    responses((status = 200, description = "success", body = NodeValues)),
)]
async fn set_ksm(State(services): Shared, bytes: Bytes) -> Reply<NodeValues> {
    let request: KsmSettings = body(&bytes)?;
    blocking(services, "node-memory-tune", move |_| {
        let host = HostView::this_host();
        node::set_ksm(
            &host,
            &node::KsmSettings {
                pages_to_scan: request.pages_to_scan,
                sleep_millisecs: request.sleep_millisecs,
                merge_across_nodes: request.merge_across_nodes,
            },
        )
        .map_err(host_error)?;
        node::ksm(&host).map(values).map_err(host_error)
    })
    .await
}
