//! Routes of domains: definitions and the lifecycle (see `oxvirt_api`'s endpoint table).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::Router;
use oxvirt_api::{
    Action, AutostartRequest, DomainInfo, DomainSummary, NvramOnUndefine, ShutdownRequest,
    UndefineOptions, XmlDocument,
};

use super::reply::{blocking, body, detached, Reply};
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    let mut router = Router::new()
        .route("/v1/domains", get(list).post(define))
        .route("/v1/domains/{id}", get(info).delete(undefine))
        .route("/v1/domains/{id}/xml", get(xml).put(replace_xml))
        .route("/v1/domains/{id}/inactive-xml", get(inactive_xml))
        .route("/v1/domains/{id}/autostart", put(autostart));
    for action in Action::ALL {
        router = router.route(
            &format!("/v1/domains/{{id}}/{}", action.as_str()),
            post(move |state, path, bytes| lifecycle(state, path, bytes, action)),
        );
    }
    router
}

async fn list(State(services): State<Arc<Services>>) -> Reply<Vec<DomainSummary>> {
    blocking(services, "list", |d| d.domains.list()).await
}

async fn define(State(services): State<Arc<Services>>, bytes: Bytes) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "define", move |d| d.domains.define(&doc.xml)).await
}

async fn info(State(services): State<Arc<Services>>, Path(id): Path<String>) -> Reply<DomainInfo> {
    blocking(services, "dominfo", move |d| d.domains.info(&id)).await
}

/// `?nvram=remove|keep`: what to do with a UEFI guest's NVRAM file.
#[derive(serde::Deserialize)]
struct UndefineQuery {
    nvram: Option<NvramOnUndefine>,
    /// Forget the domain's snapshots (virsh's `--snapshots-metadata`).
    #[serde(default)]
    snapshots_metadata: bool,
    /// `?managed_save=true`: remove a managed save too (else a domain with one is refused).
    #[serde(default)]
    managed_save: bool,
}

async fn undefine(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    Query(query): Query<UndefineQuery>,
) -> Reply<DomainSummary> {
    blocking(services, "undefine", move |d| {
        d.domains.undefine(
            &id,
            &UndefineOptions {
                nvram: query.nvram,
                snapshots_metadata: query.snapshots_metadata,
                managed_save: query.managed_save,
            },
        )
    })
    .await
}

async fn xml(State(services): State<Arc<Services>>, Path(id): Path<String>) -> Reply<XmlDocument> {
    blocking(services, "dumpxml", move |d| {
        Ok(XmlDocument {
            xml: d.domains.xml(&id)?,
        })
    })
    .await
}

/// `dumpxml --inactive`: the definition for the next start.
async fn inactive_xml(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Reply<XmlDocument> {
    blocking(services, "dumpxml --inactive", move |d| {
        Ok(XmlDocument {
            xml: d.domains.inactive_xml(&id)?,
        })
    })
    .await
}

async fn replace_xml(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let doc: XmlDocument = body(&bytes)?;
    blocking(services, "edit", move |d| {
        d.domains.replace_xml(&id, &doc.xml)
    })
    .await
}

async fn autostart(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Reply<DomainSummary> {
    let request: AutostartRequest = body(&bytes)?;
    blocking(services, "autostart", move |d| {
        d.domains.set_autostart(&id, request.enabled)
    })
    .await
}

async fn lifecycle(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    bytes: Bytes,
    action: Action,
) -> Reply<DomainSummary> {
    let timeout_secs = match action {
        Action::Shutdown if !bytes.is_empty() => body::<ShutdownRequest>(&bytes)?.timeout_secs,
        _ => None,
    };
    detached(services, action.as_str(), move |services| async move {
        match action {
            Action::Start => services.domains.start(&id).await,
            Action::Shutdown => services.domains.shutdown(&id, timeout_secs).await,
            Action::Destroy => services.domains.destroy(&id).await,
            Action::Reboot => services.domains.reboot(&id).await,
            Action::Reset => services.domains.reset(&id).await,
            Action::Suspend => services.domains.suspend(&id).await,
            Action::Resume => services.domains.resume(&id).await,
        }
    })
    .await
}
