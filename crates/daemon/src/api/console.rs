//! `POST /v1/domains/{id}/console`: a domain's serial console over the API connection itself,
//! upgraded (`Upgrade: oxvirt-console`), for clients that cannot reach the console's Unix
//! socket: a remote `oxvirt console` over TLS. After the 101 reply the connection carries the
//! console's bytes both ways until either side closes. A write for `auth.rs` (it types into the
//! guest).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use oxvirt_api::{code, ApiError, CONSOLE_PROTOCOL};

use super::reply::{blocking, require_upgrade, switching_protocols, Failure};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/domains/{id}/console", post(console))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(console))]
pub(super) struct Doc;

#[utoipa::path(
    post,
    path = "/v1/domains/{id}/console",
    operation_id = "console_console",
    tag = "domains",
    params(super::openapi::DomainPath),
    responses((
        status = 101,
        description = "switched to the console byte stream (the request must carry `Connection: upgrade` and `Upgrade: oxvirt-console`)"
    )),
)]
async fn console(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    mut request: Request,
) -> Result<Response, Failure> {
    require_upgrade(
        &request,
        CONSOLE_PROTOCOL,
        "the console is reached by upgrading the connection",
    )?;
    let (name, console) = connect(services, id).await?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => oxvirt_api::splice(TokioIo::new(upgraded), console).await,
            Err(err) => tracing::info!(domain = %name, "console upgrade failed: {err}"),
        }
    });
    switching_protocols(CONSOLE_PROTOCOL)
}

/// A connection to the serial console of running domain `id`, and the domain's name: made
/// before any upgrade, so that a console that cannot be reached is an error reply (404 for no
/// such domain, 409 when it is not running).
pub(super) async fn connect(
    services: Arc<Services>,
    id: String,
) -> Result<(String, tokio::net::UnixStream), Failure> {
    let info = blocking(services, "console", move |d| d.domains.info(&id))
        .await?
        .0;
    let socket = match (&info.console_socket, info.state.is_active()) {
        (Some(socket), true) => socket.clone(),
        _ => {
            return Err(Failure(ApiError::new(
                code::INVALID_STATE,
                format!("domain '{}' is not running", info.name),
            )))
        }
    };
    let console = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            Failure(ApiError::new(
                code::INTERNAL,
                format!(
                    "cannot connect to the console of domain '{}' at {socket}: {e}",
                    info.name
                ),
            ))
        })?;
    Ok((info.name, console))
}
