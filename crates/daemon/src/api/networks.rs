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
use crate::daemon::Daemon;
type Shared = State<Arc<Daemon>>;

pub fn routes() -> Router<Arc<Daemon>> {
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

async fn list(State(daemon): Shared) -> Reply<Vec<NetworkInfo>> {
    blocking(daemon, "net-list", |d| d.list_networks()).await
}

async fn define(State(daemon): Shared, bytes: Bytes) -> Reply<NetworkInfo> {
    let doc: XmlDocument = body(&bytes)?;
    detached(daemon, "net-define", |d| async move {
        d.define_network(&doc.xml).await
    })
    .await
}

async fn info(State(daemon): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    blocking(daemon, "net-info", move |d| d.network_info(&id)).await
}

async fn undefine(State(daemon): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(daemon, "net-undefine", |d| async move {
        d.undefine_network(&id).await
    })
    .await
}

async fn xml(State(daemon): Shared, Path(id): Path<String>) -> Reply<XmlDocument> {
    blocking(daemon, "net-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.network_xml(&id)?,
        })
    })
    .await
}

async fn replace_xml(
    State(daemon): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<NetworkInfo> {
    let doc: XmlDocument = body(&bytes)?;
    detached(daemon, "net-edit", |d| async move {
        d.replace_network_xml(&id, &doc.xml).await
    })
    .await
}

async fn start(State(daemon): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(daemon, "net-start", |d| async move {
        d.start_network(&id).await
    })
    .await
}

async fn destroy(State(daemon): Shared, Path(id): Path<String>) -> Reply<NetworkInfo> {
    detached(daemon, "net-destroy", |d| async move {
        d.destroy_network(&id).await
    })
    .await
}

async fn autostart(
    State(daemon): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<NetworkInfo> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(daemon, "net-autostart", move |d| {
        d.set_network_autostart(&id, request.enabled)
    })
    .await
}

async fn leases(State(daemon): Shared, Path(id): Path<String>) -> Reply<Vec<NetworkLease>> {
    Ok(Json(daemon.network_leases(&id).await?))
}

async fn interfaces(State(daemon): Shared, Path(id): Path<String>) -> Reply<Vec<DomainInterface>> {
    blocking(daemon, "domiflist", move |d| d.domain_interfaces(&id)).await
}

async fn attach(
    State(daemon): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainInterface> {
    let request: AttachInterfaceRequest = body(&bytes)?;
    detached(daemon, "attach-interface", |d| async move {
        d.attach_interface(&id, &request).await
    })
    .await
}

async fn detach(
    State(daemon): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainInterface> {
    let request: DetachInterfaceRequest = body(&bytes)?;
    detached(daemon, "detach-interface", |d| async move {
        d.detach_interface(&id, &request).await
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

async fn addresses(
    State(daemon): Shared,
    Path(id): Path<String>,
    uri: Uri,
) -> Reply<Vec<InterfaceAddress>> {
    let source = address_source(&uri)?;
    Ok(Json(daemon.domain_interface_addresses(&id, source).await?))
}

async fn stats(
    State(daemon): Shared,
    Path((id, dev)): Path<(String, String)>,
) -> Reply<InterfaceStats> {
    Ok(Json(daemon.domain_interface_stats(&id, &dev).await?))
}
