//! The HTTP face of the services: the oxvirt API (see the `oxvirt-api` crate) on a Unix socket,
//! and over TLS behind [`auth`] (src/remote.rs). One module of routes per resource; [`reply`] is
//! how every route answers.

mod admin;
pub(crate) mod auth;
mod capabilities;
mod cluster;
mod console;
mod disks;
mod display;
mod domains;
mod events;
mod iothreads;
mod limits;
mod memory;
mod metrics;
mod migration;
mod monitor;
mod networks;
mod node;
pub(crate) mod openapi;
mod pools;
pub(crate) mod reply;
mod saves;
mod secrets;
mod session;
mod snapshots;
mod stats;
mod tuning;
mod users;
mod web;
mod websocket;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use oxvirt_api::{code, ApiError, VersionInfo};

use crate::clients::Clients;
use crate::services::Services;
use reply::{json_errors, Failure};

/// The API's router; with `auth`, every request must authenticate first (the TLS listener's),
/// and the browser's parts are there too: sessions, the consoles' WebSockets and the web UI.
pub fn router(
    services: Arc<Services>,
    clients: Arc<Clients>,
    auth: Option<Arc<auth::Auth>>,
) -> Router {
    let router = routes(clients, auth.is_some());
    // Around everything else, unknown paths included: nothing answers before authentication
    // (but the web UI's files, which hold no data: auth.rs `public`). The UI's replies are its
    // own (a plain page when it was not built), not the API's JSON errors, and it is no part of
    // the API's OpenAPI document.
    let router = match auth {
        Some(checks) => router
            .merge(web::routes())
            .layer(middleware::from_fn_with_state(checks, auth::authenticate)),
        None => router,
    };
    router
        .layer(middleware::from_fn(log_requests))
        .with_state(services)
}

/// Every route of the API, with the JSON error replies around them; with `browser` (the TLS
/// listener), the browser's sessions and WebSocket consoles too. What the OpenAPI document
/// describes: src/api/openapi.rs, whose test reads the routes from here.
fn routes(clients: Arc<Clients>, browser: bool) -> Router<Arc<Services>> {
    let browser = if browser {
        Router::new()
            .merge(auth::routes())
            .merge(websocket::routes())
    } else {
        Router::new()
    };
    Router::new()
        .merge(browser)
        .route("/v1/version", get(version))
        .merge(admin::routes(clients))
        .merge(disks::routes())
        .merge(capabilities::routes())
        .merge(cluster::routes())
        .merge(console::routes())
        .merge(display::routes())
        .merge(domains::routes())
        .merge(events::routes())
        .merge(iothreads::routes())
        .merge(memory::routes())
        .merge(metrics::routes())
        .merge(migration::routes())
        .merge(monitor::routes())
        .merge(networks::routes())
        .merge(pools::routes())
        .merge(saves::routes())
        .merge(secrets::routes())
        .merge(snapshots::routes())
        .merge(limits::routes())
        .merge(node::routes())
        .merge(openapi::routes())
        .merge(stats::routes())
        .merge(tuning::routes())
        .merge(users::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(oxvirt_api::MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(json_errors))
}

/// One debug line per request (target `oxvirtd::api`, filter name `daemon.api`), for an
/// operator who turns it on with `oxvirt admin daemon-log-filters "1:daemon.api"`.
async fn log_requests(request: axum::extract::Request, next: middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// Reads and drops what is left of a request's body before an error reply that did not need it.
/// Else hyper closes the keep-alive connection after the reply without saying so (no
/// `Connection: close`), and a client that sends its next request on it gets a broken
/// connection instead of an answer (seen with schemathesis: a 405 to a GET with a body, then
/// EOF on the next request). A body over the size limit is not read: that connection closes.
async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, oxvirt_api::MAX_REQUEST_BYTES).await;
}

async fn method_not_allowed(body: Body) -> Response {
    drain(body).await;
    let error = ApiError::new(
        code::BAD_REQUEST,
        "this API endpoint does not accept that HTTP method",
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}

async fn not_found(body: Body) -> Failure {
    drain(body).await;
    Failure(ApiError::new(
        code::NOT_FOUND,
        "no such API endpoint (this services speaks API version 1 under /v1/)",
    ))
}

/// The daemon's version and the API version it speaks.
#[utoipa::path(
    get,
    path = "/v1/version",
    operation_id = "version",
    tag = "meta",
    responses((status = 200, description = "success", body = VersionInfo)),
)]
async fn version(State(services): State<Arc<Services>>) -> Json<VersionInfo> {
    Json(services.version())
}
