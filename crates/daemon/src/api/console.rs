//! `POST /v1/domains/{id}/console`: a domain's serial console over the API connection itself,
//! upgraded (`Upgrade: oxvirt-console`), for clients that cannot reach the console's Unix
//! socket: a remote `oxvirt console` over TLS. After the 101 reply the connection carries the
//! console's bytes both ways until either side closes. A write for `auth.rs` (it types into the
//! guest).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use oxvirt_api::{code, ApiError, CONSOLE_PROTOCOL};

use super::reply::{blocking, Failure};
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
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(CONSOLE_PROTOCOL));
    if !upgrade {
        return Err(Failure(ApiError::new(
            code::BAD_REQUEST,
            format!(
                "the console is reached by upgrading the connection: send 'Connection: upgrade' \
                 and 'Upgrade: {CONSOLE_PROTOCOL}'"
            ),
        )));
    }
    let (name, console) = connect(services, id).await?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => oxvirt_api::splice(TokioIo::new(upgraded), console).await,
            Err(err) => tracing::info!(domain = %name, "console upgrade failed: {err}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, CONSOLE_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| Failure(ApiError::new(code::INTERNAL, e.to_string())))
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
