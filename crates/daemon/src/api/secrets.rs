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

async fn list(State(services): Shared) -> Reply<Vec<SecretInfo>> {
    blocking(services, "secret-list", |d| d.secrets.list()).await
}

async fn define(State(services): Shared, bytes: Bytes) -> Reply<SecretInfo> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "secret-define", move |d| {
        d.secrets.define(&doc.xml)
    })
    .await
}

async fn info(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretInfo> {
    blocking(services, "secret-info", move |d| d.secrets.info(&uuid)).await
}

async fn undefine(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretInfo> {
    blocking(services, "secret-undefine", move |d| {
        d.secrets.undefine(&uuid)
    })
    .await
}

async fn xml(State(services): Shared, Path(uuid): Path<String>) -> Reply<XmlDocument> {
    blocking(services, "secret-dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.secrets.xml(&uuid)?,
        })
    })
    .await
}

async fn value(State(services): Shared, Path(uuid): Path<String>) -> Reply<SecretValue> {
    blocking(services, "secret-get-value", move |d| {
        d.secrets.value(&uuid)
    })
    .await
}

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
