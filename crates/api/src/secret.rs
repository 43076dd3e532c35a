//! Secrets (passwords and keys that network disks' `<auth>` name): wire types and [`Client`]
//! calls. A secret's value travels base64-encoded, as virsh prints and takes it.
//!
//! Endpoints (`{uuid}` is the secret's UUID):
//!
//! | method + path                 | body              | reply            |
//! |-------------------------------|-------------------|------------------|
//! | `GET /v1/secrets`             |                   | `[SecretInfo]`   |
//! | `POST /v1/secrets`            | [`XmlDocument`]   | [`SecretInfo`]   |
//! | `GET /v1/secrets/{uuid}`      |                   | [`SecretInfo`]   |
//! | `DELETE /v1/secrets/{uuid}`   |                   | [`SecretInfo`]   |
//! | `GET /v1/secrets/{uuid}/xml`  |                   | [`XmlDocument`]  |
//! | `PUT /v1/secrets/{uuid}/value`|  [`SecretValue`]  | [`SecretInfo`]   |
//! | `GET /v1/secrets/{uuid}/value`|                   | [`SecretValue`]  |
//!
//! Reading the value of a secret defined `private='yes'` is refused (`forbidden`).

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{percent_encode_segment, to_json, Client, ClientError, XmlDocument};

/// A defined secret (`secret-list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    pub uuid: String,
    /// `<usage type=>` (`ceph`, `iscsi`, `volume`, `tls`, `vtpm`), if the secret has a usage.
    pub usage_type: Option<String>,
    /// The usage's name (Ceph user, iSCSI target, volume path, ...).
    pub usage_id: Option<String>,
    pub ephemeral: bool,
    pub private: bool,
    /// Whether a value was set.
    pub has_value: bool,
}

/// A secret's value, base64-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretValue {
    pub base64: String,
}

fn secret_path(uuid: &str, suffix: &str) -> String {
    format!("/v1/secrets/{}{suffix}", percent_encode_segment(uuid))
}

impl Client {
    /// `GET /v1/secrets`, sorted by UUID.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, ClientError> {
        self.call(Method::GET, "/v1/secrets".to_string(), None)
            .await
    }

    /// `POST /v1/secrets`: define a secret (or redefine the one with that UUID).
    pub async fn define_secret(&self, xml: &str) -> Result<SecretInfo, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, "/v1/secrets".to_string(), Some(body))
            .await
    }

    /// `GET /v1/secrets/{uuid}`.
    pub async fn secret_info(&self, uuid: &str) -> Result<SecretInfo, ClientError> {
        self.call(Method::GET, secret_path(uuid, ""), None).await
    }

    /// `GET /v1/secrets/{uuid}/xml`.
    pub async fn secret_xml(&self, uuid: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, secret_path(uuid, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `DELETE /v1/secrets/{uuid}`: the definition and its value.
    pub async fn undefine_secret(&self, uuid: &str) -> Result<SecretInfo, ClientError> {
        self.call(Method::DELETE, secret_path(uuid, ""), None).await
    }

    /// `PUT /v1/secrets/{uuid}/value`.
    pub async fn set_secret_value(
        &self,
        uuid: &str,
        base64: &str,
    ) -> Result<SecretInfo, ClientError> {
        let body = to_json(&SecretValue {
            base64: base64.to_string(),
        });
        self.call(Method::PUT, secret_path(uuid, "/value"), Some(body))
            .await
    }

    /// `GET /v1/secrets/{uuid}/value` (refused for a private secret).
    pub async fn secret_value(&self, uuid: &str) -> Result<SecretValue, ClientError> {
        self.call(Method::GET, secret_path(uuid, "/value"), None)
            .await
    }
}
