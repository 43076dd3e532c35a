//! Domain snapshots: wire types and [`Client`] calls (virsh's `snapshot-*` verbs).
//!
//! | method + path                                          | body                    | reply                |
//! |--------------------------------------------------------|-------------------------|----------------------|
//! | `GET /v1/domains/{id}/snapshots`                       |                         | `[SnapshotSummary]`  |
//! | `POST /v1/domains/{id}/snapshots`                      | [`CreateSnapshot`]      | [`SnapshotSummary`]  |
//! | `GET /v1/domains/{id}/snapshots/{name}/xml`            |                         | [`XmlDocument`]      |
//! | `PUT /v1/domains/{id}/snapshots/{name}/xml`            | [`XmlDocument`]         | [`SnapshotSummary`]  |
//! | `POST /v1/domains/{id}/snapshots/{name}/revert`        | [`RevertSnapshot`]      | [`DomainSummary`]    |
//! | `POST /v1/domains/{id}/snapshots/{name}/delete`        | [`DeleteSnapshot`]      | `[String]` (deleted) |
//!
//! The list carries what every listing and `snapshot-info` need (parents, the current one),
//! so the CLI draws trees and filters without more calls.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::XmlDocument;
use crate::{domain_path, percent_encode_segment, to_json, Client, ClientError, DomainSummary};

/// One snapshot, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotSummary {
    pub name: String,
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub creation_time: i64,
    /// The domain's state when taken: `running`, `paused`, `shutoff`, `disk-snapshot`.
    pub state: String,
    /// `internal` or `external`.
    pub location: String,
    /// The domain's current snapshot (the one the next snapshot's parent is).
    pub current: bool,
}

/// Body of `POST /v1/domains/{id}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSnapshot {
    /// A `<domainsnapshot>` document (what `snapshot-create FILE` reads and what
    /// `snapshot-create-as` writes from its options); empty: every default.
    pub xml: String,
    /// Disks only, as external overlays (`--disk-only`).
    pub disk_only: bool,
    /// All disks or none (`--atomic`; oxvirt's snapshots always are).
    pub atomic: bool,
}

/// Body of `POST /v1/domains/{id}/snapshots/{name}/revert`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevertSnapshot {
    /// Run the guest afterwards, whatever the snapshot's state (`--running`).
    pub running: bool,
    /// Leave it paused afterwards (`--paused`).
    pub paused: bool,
}

/// Body of `POST /v1/domains/{id}/snapshots/{name}/delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteSnapshot {
    /// The snapshot and every descendant (`--children`).
    pub children: bool,
    /// Only its descendants (`--children-only`).
    pub children_only: bool,
    /// Only oxvirt's record, leaving the data in the images (`--metadata`).
    pub metadata_only: bool,
}

fn snapshot_path(domain: &str, name: &str, suffix: &str) -> String {
    domain_path(
        domain,
        &format!("/snapshots/{}{suffix}", percent_encode_segment(name)),
    )
}

impl Client {
    /// `GET /v1/domains/{id}/snapshots`, by name.
    pub async fn list_snapshots(&self, domain: &str) -> Result<Vec<SnapshotSummary>, ClientError> {
        self.call(Method::GET, domain_path(domain, "/snapshots"), None)
            .await
    }

    /// `POST /v1/domains/{id}/snapshots`.
    pub async fn create_snapshot(
        &self,
        domain: &str,
        request: &CreateSnapshot,
    ) -> Result<SnapshotSummary, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/snapshots"),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/domains/{id}/snapshots/{name}/xml`: as `snapshot-dumpxml` prints it.
    pub async fn snapshot_xml(&self, domain: &str, name: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, snapshot_path(domain, name, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `PUT /v1/domains/{id}/snapshots/{name}/xml` (`snapshot-edit`).
    pub async fn replace_snapshot_xml(
        &self,
        domain: &str,
        name: &str,
        xml: &str,
    ) -> Result<SnapshotSummary, ClientError> {
        let doc = XmlDocument {
            xml: xml.to_string(),
        };
        self.call(
            Method::PUT,
            snapshot_path(domain, name, "/xml"),
            Some(to_json(&doc)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/snapshots/{name}/revert`.
    pub async fn revert_snapshot(
        &self,
        domain: &str,
        name: &str,
        request: &RevertSnapshot,
    ) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            snapshot_path(domain, name, "/revert"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/snapshots/{name}/delete`: the names of the deleted snapshots.
    pub async fn delete_snapshot(
        &self,
        domain: &str,
        name: &str,
        request: &DeleteSnapshot,
    ) -> Result<Vec<String>, ClientError> {
        self.call(
            Method::POST,
            snapshot_path(domain, name, "/delete"),
            Some(to_json(request)),
        )
        .await
    }
}
