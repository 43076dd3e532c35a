//! HTTP routes of virtual networks and guest interfaces (see `oxvirt_api::network`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oxvirt_api::{
    code, AddressSource, ApiError, AttachInterfaceRequest, AutostartRequest,
    DetachInterfaceRequest, DomainInterface, InterfaceAddress, InterfaceStats, NetworkInfo,
    NetworkLease, XmlDocument,
};

use super::reply::{blocking, body, detached, Failure, Reply};
use crate::services::Services;
type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/networks", get(list).post(define))
        .route("/v1/networks/{id}", get(info).delete(undefine))
        .route("/v1/networks/{id}/xml", get(xml).put(replace_xml))
        .route("/v1/networks/{id}/start", post(start))
        .route("/v1/networks/{id}/destroy", post(destroy))
        .route("/v1/networks/{id}/autostart", put(autostart))
        .route("/v1/networks/{id}/leases", get(leases))
        .route(
            "/v1/domains/{id}/interfaces",
            get(interfaces).post(attach).delete(detach),
        )
        .route("/v1/domains/{id}/interface-addresses", get(addresses))
        .route("/v1/domains/{id}/interface-stats/{dev}", get(stats))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list,
    define,
    info,
    undefine,
    xml,
    replace_xml,
    start,
    destroy,
    autostart,
    leases,
    interfaces,
    attach,
    detach,
    addresses,
    stats
))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/networks",
    operation_id = "networks_list",
    tag = "networks",
    responses((status = 200, description = "success", body = Vec<NetworkInfo>)),
)]
async fn list(State(services): Shared) -> Reply<Vec<NetworkInfo>> {
    blocking(services, "net-list", |d| d.networks.list_networks()).await
}

#[utoipa::path(
    post,
    path = "/v1/networks",
    operation_id = "networks_define",
    tag = "networks",
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn define(State(services): Shared, bytes: Bytes) -> Reply<NetworkInfo> {
    let doc: XmlDocument = body(&bytes)?;
    detached(services, "net-define", |d| async move {
        d.networks.define_network(&doc.xml).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/networks/{id}",
    operation_id = "networks_info",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn info(State(services): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    blocking(services, "net-info", move |d| d.networks.network_info(&id)).await
}

#[utoipa::path(
    delete,
    path = "/v1/networks/{id}",
    operation_id = "networks_undefine",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn undefine(State(services): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(services, "net-undefine", |d| async move {
        d.networks.undefine_network(&id).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/networks/{id}/xml",
    operation_id = "networks_xml",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn xml(State(services): Shared, Path(id): Path<String>) -> Reply<XmlDocument> {
    blocking(services, "net-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.networks.network_xml(&id)?,
        })
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/networks/{id}/xml",
    operation_id = "networks_replace_xml",
    tag = "networks",
    params(super::openapi::NetworkPath),
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn replace_xml(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<NetworkInfo> {
    let doc: XmlDocument = body(&bytes)?;
    detached(services, "net-edit", |d| async move {
        d.networks.replace_network_xml(&id, &doc.xml).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/networks/{id}/start",
    operation_id = "networks_start",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn start(State(services): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(services, "net-start", |d| async move {
        d.networks.start_network(&id).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/networks/{id}/destroy",
    operation_id = "networks_destroy",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn destroy(State(services): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(services, "net-destroy", |d| async move {
        d.networks.destroy_network(&id).await
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/networks/{id}/autostart",
    operation_id = "networks_autostart",
    tag = "networks",
    params(super::openapi::NetworkPath),
    request_body = AutostartRequest,
    responses((status = 200, description = "success", body = NetworkInfo)),
)]
async fn autostart(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<NetworkInfo> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(services, "net-autostart", move |d| {
        d.networks.set_network_autostart(&id, request.enabled)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/networks/{id}/leases",
    operation_id = "networks_leases",
    tag = "networks",
    params(super::openapi::NetworkPath),
    responses((status = 200, description = "success", body = Vec<NetworkLease>)),
)]
async fn leases(State(services): Shared, Path(id): Path<String>) -> Reply<Vec<NetworkLease>> {
    Ok(Json(services.networks.network_leases(&id).await?))
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/interfaces",
    operation_id = "networks_interfaces",
    tag = "networks",
    params(super::openapi::DomainPath),
    responses((status = 200, description = "success", body = Vec<DomainInterface>)),
)]
async fn interfaces(
    State(services): Shared,
    Path(id): Path<String>,
) -> Reply<Vec<DomainInterface>> {
    blocking(services, "domiflist", move |d| {
        d.interfaces.domain_interfaces(&id)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/interfaces",
    operation_id = "networks_attach",
    tag = "networks",
    params(super::openapi::DomainPath),
    request_body = AttachInterfaceRequest,
    responses((status = 200, description = "success", body = DomainInterface)),
)]
async fn attach(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainInterface> {
    let request: AttachInterfaceRequest = body(&bytes)?;
    detached(services, "attach-interface", |d| async move {
        d.interfaces.attach_interface(&id, &request).await
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/domains/{id}/interfaces",
    operation_id = "networks_detach",
    tag = "networks",
    params(super::openapi::DomainPath),
    request_body = DetachInterfaceRequest,
    responses((status = 200, description = "success", body = DomainInterface)),
)]
async fn detach(
    State(services): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainInterface> {
    let request: DetachInterfaceRequest = body(&bytes)?;
    detached(services, "detach-interface", |d| async move {
        d.interfaces.detach_interface(&id, &request).await
    })
    .await
}

/// `?source=lease|arp` (default: lease, as virsh).
fn address_source(uri: &Uri) -> Result<AddressSource, Failure> {
    let mut source = AddressSource::Lease;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("source", "lease")) => source = AddressSource::Lease,
            Some(("source", "arp")) => source = AddressSource::Arp,
            Some(("source", other)) => {
                return Err(Failure(ApiError::new(
                    code::BAD_REQUEST,
                    format!("address source '{other}' is not supported (use lease or arp)"),
                )))
            }
            _ => {
                return Err(Failure(ApiError::new(
                    code::BAD_REQUEST,
                    format!("unknown query parameter '{pair}'"),
                )))
            }
        }
    }
    Ok(source)
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/interface-addresses",
    operation_id = "networks_addresses",
    tag = "networks",
    params(
        super::openapi::DomainPath,
        (
            "source" = Option<String>,
            Query,
            description = "where the addresses come from: `lease` (the default, the network's DHCP leases) or `arp`"
        ),
    ),
    responses((status = 200, description = "success", body = Vec<InterfaceAddress>)),
)]
async fn addresses(
    State(services): Shared,
    Path(id): Path<String>,
    uri: Uri,
) -> Reply<Vec<InterfaceAddress>> {
    let source = address_source(&uri)?;
    Ok(Json(
        services
            .interfaces
            .domain_interface_addresses(&id, source)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/domains/{id}/interface-stats/{dev}",
    operation_id = "networks_stats",
    tag = "networks",
    params(super::openapi::InterfacePath),
    responses((status = 200, description = "success", body = InterfaceStats)),
)]
async fn stats(
    State(services): Shared,
    Path((id, dev)): Path<(String, String)>,
) -> Reply<InterfaceStats> {
    Ok(Json(
        services
            .interfaces
            .domain_interface_stats(&id, &dev)
            .await?,
    ))
}
