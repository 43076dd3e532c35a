//! HTTP routes of secrets (see `oxvirt_api::secret`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use oxvirt_api::{SecretInfo, SecretValue, XmlDocument};

use super::reply::{blocking, body, Reply};
use crate::services::Services;
type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/secrets", get(list).post(define))
        .route("/v1/secrets/{uuid}", get(info).delete(undefine))
        .route("/v1/secrets/{uuid}/xml", get(xml))
        .route("/v1/secrets/{uuid}/value", get(value).put(set_value))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, define, info, undefine, xml, value, set_value))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/secrets",
    operation_id = "secrets_list",
    tag = "secrets",
    responses((status = 200, description = "success", body = Vec<SecretInfo>)),
)]
async fn list(State(services): Shared) -> Reply<Vec<SecretInfo>> {
    blocking(services, "secret-list", |d| d.secrets.list()).await
}

#[utoipa::path(
    post,
    path = "/v1/secrets",
    operation_id = "secrets_define",
    tag = "secrets",
    request_body = XmlDocument,
    responses((status = 200, description = "success", body = SecretInfo)),
)]
async fn define(State(services): Shared, bytes: Bytes) -> Reply<SecretInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "secret-define", move |d| {
        d.secrets.define(&doc.xml)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/secrets/{uuid}",
    operation_id = "secrets_info",
    tag = "secrets",
    params(super::openapi::SecretPath),
    responses((status = 200, description = "success", body = SecretInfo)),
)]
async fn info(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretInfo> {
    blocking(services, "secret-info", move |d| d.secrets.info(&uuid)).await
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{uuid}",
    operation_id = "secrets_undefine",
    tag = "secrets",
    params(super::openapi::SecretPath),
    responses((status = 200, description = "success", body = SecretInfo)),
)]
async fn undefine(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretInfo> {
    blocking(services, "secret-undefine", move |d| {
        d.secrets.undefine(&uuid)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/secrets/{uuid}/xml",
    operation_id = "secrets_xml",
    tag = "secrets",
    params(super::openapi::SecretPath),
    responses((status = 200, description = "success", body = XmlDocument)),
)]
async fn xml(State(services): Shared, Path(uuid): Path<String>) -> Reply<XmlDocument> {
    blocking(services, "secret-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.secrets.xml(&uuid)?,
        })
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/secrets/{uuid}/value",
    operation_id = "secrets_value",
    tag = "secrets",
    params(super::openapi::SecretPath),
    responses((status = 200, description = "success", body = SecretValue)),
)]
async fn value(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretValue> {
    blocking(services, "secret-get-value", move |d| {
        d.secrets.value(&uuid)
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/secrets/{uuid}/value",
    operation_id = "secrets_set_value",
    tag = "secrets",
    params(super::openapi::SecretPath),
    request_body = SecretValue,
    responses((status = 200, description = "success", body = SecretInfo)),
)]
async fn set_value(
    State(services): Shared,
    Path(uuid): Path<String>,
    bytes: Bytes,
) -> Reply<SecretInfo> {
    let value: SecretValue = body(&bytes)?;
    blocking(services, "secret-set-value", move |d| {
        d.secrets.set_value(&uuid, &value)
    })
    .await
}
