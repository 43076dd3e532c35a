//! Saved machine states: wire types and [`Client`] calls (virsh's `save`, `restore`,
//! `save-image-dumpxml`, `managedsave`, `managedsave-remove`).
//!
//! | method + path                               | body                   | reply             |
//! |---------------------------------------------|------------------------|-------------------|
//! | `POST /v1/domains/{id}/save`                | [`SaveRequest`]        | `DomainSummary`   |
//! | `POST /v1/domains/{id}/managed-save`        | [`ManagedSaveRequest`] | `DomainSummary`   |
//! | `DELETE /v1/domains/{id}/managed-save`      |                        | `DomainSummary`   |
//! | `POST /v1/restore`                          | [`RestoreRequest`]     | `DomainSummary`   |
//! | `POST /v1/save-image/xml`                   | [`SaveImageRequest`]   | `XmlDocument`     |
//!
//! Files are paths on oxvirtd's host, as with libvirt; they must be absolute. A domain's managed
//! save lives in oxvirtd's state directory: `start` resumes the domain from it and removes it.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError, DomainSummary, XmlDocument};

/// How a restored guest is left (virsh's `--running` / `--paused`); without one, as the save
/// image says (the state the guest was saved in, or what `save` was told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunAfter {
    Running,
    Paused,
}

/// Body of `POST /v1/domains/{id}/save`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveRequest {
    /// Where the image goes (an absolute path on oxvirtd's host; an existing file is replaced
    /// once the new image is complete).
    pub file: String,
    /// How a restore leaves the guest, recorded in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RunAfter>,
}

/// Body of `POST /v1/domains/{id}/managed-save`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManagedSaveRequest {
    /// How the next start leaves the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RunAfter>,
}

/// Body of `POST /v1/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    /// The save image (an absolute path on oxvirtd's host).
    pub file: String,
    /// Overrides what the image says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RunAfter>,
}

/// Body of `POST /v1/save-image/xml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveImageRequest {
    /// The save image (an absolute path on oxvirtd's host).
    pub file: String,
}

impl Client {
    /// `POST /v1/domains/{id}/save`: the guest's state into `request.file`; the domain is then
    /// shut off.
    pub async fn save_domain(
        &self,
        domain: &str,
        request: &SaveRequest,
    ) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/save"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/managed-save`: the guest's state into its managed save; the
    /// domain is then shut off, and its next start resumes it.
    pub async fn managed_save(
        &self,
        domain: &str,
        request: &ManagedSaveRequest,
    ) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/managed-save"),
            Some(to_json(request)),
        )
        .await
    }

    /// `DELETE /v1/domains/{id}/managed-save`: discards the managed save (the next start boots).
    pub async fn managed_save_remove(&self, domain: &str) -> Result<DomainSummary, ClientError> {
        self.call(Method::DELETE, domain_path(domain, "/managed-save"), None)
            .await
    }

    /// `POST /v1/restore`: starts the domain saved in `request.file` where it left off.
    pub async fn restore(&self, request: &RestoreRequest) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            "/v1/restore".to_string(),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/save-image/xml`: the domain XML inside a save image.
    pub async fn save_image_xml(&self, file: &str) -> Result<String, ClientError> {
        let request = SaveImageRequest {
            file: file.to_string(),
        };
        let doc: XmlDocument = self
            .call(
                Method::POST,
                "/v1/save-image/xml".to_string(),
                Some(to_json(&request)),
            )
            .await?;
        Ok(doc.xml)
    }
}
