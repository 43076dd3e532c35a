//! Routes of domains: definitions and the lifecycle (see `oxvirt_api`'s endpoint table).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::Router;
use oxvirt_api::{
    Action, AutostartRequest, DomainInfo, DomainSummary, ShutdownRequest, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::daemon::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    let mut router = Router::new()
        .route("/v1/domains", get(list).post(define))
        .route("/v1/domains/{id}", get(info).delete(undefine))
        .route("/v1/domains/{id}/xml", get(xml).put(replace_xml))
        .route("/v1/domains/{id}/autostart", put(autostart));
    for action in Action::ALL {
        router = router.route(
            &format!("/v1/domains/{{id}}/{}", action.as_str()),
            post(move |state, path, bytes| lifecycle(state, path, bytes, action)),
        );
    }
    router
}

async fn list(State(daemon): State<Arc<Daemon>>) -> Reply<Vec<DomainSummary>> {
    blocking(daemon, "list", |d| d.list()).await
}

async fn define(State(daemon): State<Arc<Daemon>>, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "define", move |d| d.define(&doc.xml)).await
}

async fn info(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<DomainInfo> {
    blocking(daemon, "dominfo", move |d| d.info(&id)).await
}

async fn undefine(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Reply<DomainSummary> {
    blocking(daemon, "undefine", move |d| d.undefine(&id)).await
}

async fn xml(State(daemon): State<Arc<Daemon>>, Path(id): Path<String>) -> Reply<XmlDocument> {
    blocking(daemon, "dumpxml", move |d| {
        Ok(XmlDocument { xml: d.xml(&id)? })
    })
    .await
}

async fn replace_xml(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(daemon, "edit", move |d| d.replace_xml(&id, &doc.xml)).await
}

async fn autostart(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(daemon, "autostart", move |d| {
        d.set_autostart(&id, request.enabled)
    })
    .await
}

async fn lifecycle(
    State(daemon): State<Arc<Daemon>>,
    Path(id): Path<String>,
    bytes: Bytes,
    action: Action,
) -> Reply<DomainSummary> {
    let timeout_secs = match action {
        Action::Shutdown if !bytes.is_empty() => body::<ShutdownRequest>(&bytes)?.timeout_secs,
        _ => None,
    };
    detached(daemon, action.as_str(), move |daemon| async move {
        match action {
            Action::Start => daemon.start(&id).await,
            Action::Shutdown => daemon.shutdown(&id, timeout_secs).await,
            Action::Destroy => daemon.destroy(&id).await,
            Action::Reboot => daemon.reboot(&id).await,
            Action::Reset => daemon.reset(&id).await,
            Action::Suspend => daemon.suspend(&id).await,
            Action::Resume => daemon.resume(&id).await,
        }
    })
    .await
}
