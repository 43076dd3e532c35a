//! HTTP routes of daemon administration (see `oxvirt_api::admin`): the log's filters and
//! outputs, changed without a restart (src/logging.rs); the API's client connections and
//! their limit (src/clients.rs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::get;
use axum::{Extension, Json, Router};
use oxvirt_api::{
    code, ApiError, ClientLimits, LogFilters, LogOutputs, ServerInfo, SetClientLimits,
};

use super::reply::{body, Failure, Reply};
use crate::clients::{Clients, SERVER_NAME};
use crate::logging;
use crate::services::Services;

pub fn routes(clients: Arc<Clients>) -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/admin/log-filters", get(filters).put(set_filters))
        .route("/v1/admin/log-outputs", get(outputs).put(set_outputs))
        .route("/v1/admin/servers", get(servers))
        .route(
            "/v1/admin/servers/{server}/clients",
            get(client_limits).put(set_client_limits),
        )
        .layer(Extension(clients))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    filters,
    set_filters,
    outputs,
    set_outputs,
    servers,
    client_limits,
    set_client_limits
))]
pub(super) struct Doc;

fn bad(message: String) -> Failure {
    Failure(ApiError::new(code::BAD_REQUEST, message))
}

#[utoipa::path(
    get,
    path = "/v1/admin/log-filters",
    operation_id = "admin_filters",
    tag = "admin",
    responses((status = 200, description = "success", body = LogFilters)),
)]
async fn filters() -> Reply<LogFilters> {
    Ok(Json(LogFilters {
        filters: logging::filters(),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/admin/log-filters",
    operation_id = "admin_set_filters",
    tag = "admin",
    request_body = LogFilters,
    responses((status = 200, description = "success", body = LogFilters)),
)]
async fn set_filters(bytes: Bytes) -> Reply<LogFilters> {
    let request: LogFilters = body(&bytes)?;
    logging::set_filters(&request.filters).map_err(bad)?;
    tracing::info!(filters = %logging::filters(), "log filters changed");
    filters().await
}

#[utoipa::path(
    get,
    path = "/v1/admin/log-outputs",
    operation_id = "admin_outputs",
    tag = "admin",
    responses((status = 200, description = "success", body = LogOutputs)),
)]
async fn outputs() -> Reply<LogOutputs> {
    Ok(Json(LogOutputs {
        outputs: logging::outputs(),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/admin/log-outputs",
    operation_id = "admin_set_outputs",
    tag = "admin",
    request_body = LogOutputs,
    responses((status = 200, description = "success", body = LogOutputs)),
)]
async fn set_outputs(bytes: Bytes) -> Reply<LogOutputs> {
    let request: LogOutputs = body(&bytes)?;
    // Opening files is blocking work; it is rare and quick, and the outputs' lock must be
    // taken anyway, so it runs on the blocking pool.
    let wanted = request.outputs.clone();
    tokio::task::spawn_blocking(move || logging::set_outputs(&wanted))
        .await
        .map_err(|e| bad(format!("changing the log outputs: {e}")))?
        .map_err(bad)?;
    tracing::info!(outputs = %logging::outputs(), "log outputs changed");
    outputs().await
}

#[utoipa::path(
    get,
    path = "/v1/admin/servers",
    operation_id = "admin_servers",
    tag = "admin",
    responses((status = 200, description = "success", body = Vec<ServerInfo>)),
)]
async fn servers() -> Reply<Vec<ServerInfo>> {
    Ok(Json(vec![ServerInfo {
        id: 0,
        name: SERVER_NAME.to_string(),
    }]))
}

/// The one server's name, or `not_found` (virt-admin: "No server named ...").
fn check_server(server: &str) -> Result<(), Failure> {
    if server == SERVER_NAME {
        return Ok(());
    }
    Err(Failure(ApiError::new(
        code::NOT_FOUND,
        format!("no server named '{server}' (oxvirtd has one server, '{SERVER_NAME}')"),
    )))
}

fn limits(clients: &Clients) -> ClientLimits {
    ClientLimits {
        nclients_max: clients.max(),
        nclients: clients.open(),
        // The Unix socket authenticates by its permissions at connect: nobody waits.
        nclients_unauth_max: 0,
        nclients_unauth: 0,
    }
}

#[utoipa::path(
    get,
    path = "/v1/admin/servers/{server}/clients",
    operation_id = "admin_client_limits",
    tag = "admin",
    params(super::openapi::ServerPath),
    responses((status = 200, description = "success", body = ClientLimits)),
)]
async fn client_limits(
    Path(server): Path<String>,
    Extension(clients): Extension<Arc<Clients>>,
) -> Reply<ClientLimits> {
    check_server(&server)?;
    Ok(Json(limits(&clients)))
}

#[utoipa::path(
    put,
    path = "/v1/admin/servers/{server}/clients",
    operation_id = "admin_set_client_limits",
    tag = "admin",
    params(super::openapi::ServerPath),
    request_body = SetClientLimits,
    responses((status = 200, description = "success", body = ClientLimits)),
)]
async fn set_client_limits(
    Path(server): Path<String>,
    Extension(clients): Extension<Arc<Clients>>,
    bytes: Bytes,
) -> Reply<ClientLimits> {
    check_server(&server)?;
    let request: SetClientLimits = body(&bytes)?;
    if let Some(max) = request.nclients_max {
        // 0 would shut out every client, the one that could raise it again too.
        if max == 0 {
            return Err(bad("nclients_max must be at least 1".to_string()));
        }
        clients.set_max(max);
        tracing::info!(max_clients = max, "client limit changed");
    }
    Ok(Json(limits(&clients)))
}
