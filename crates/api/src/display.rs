//! Graphical consoles and removable media of running domains: wire types and [`Client`] calls
//! (virsh's `domdisplay`, `vncdisplay`, `screenshot`, `send-key`, `change-media`).
//!
//! | method + path                               | body                   | reply                   |
//! |---------------------------------------------|------------------------|-------------------------|
//! | `POST /v1/domains/{id}/displays`            | [`DisplaysRequest`]    | `[GraphicsDisplay]`     |
//! | `POST /v1/domains/{id}/screenshot`          | [`ScreenshotRequest`]  | [`Screenshot`]          |
//! | `POST /v1/domains/{id}/send-key`            | [`SendKeyRequest`]     | [`KeysSent`]            |
//! | `POST /v1/domains/{id}/change-media`        | [`ChangeMediaRequest`] | [`MediaChanged`]        |
//!
//! The screenshot travels base64-encoded in its JSON reply; oxvirtd has QEMU write it in the
//! domain's private run directory and removes it there.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

/// Body of `POST /v1/domains/{id}/displays`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DisplaysRequest {
    /// Include each display's password (`domdisplay --include-password`).
    pub include_password: bool,
}

/// A graphical display of a running domain, where it really listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphicsDisplay {
    /// `vnc` or `spice`.
    pub protocol: String,
    /// The listen address (`None` for a UNIX socket display).
    pub listen: Option<String>,
    /// The TCP port (`None` for a UNIX socket display).
    pub port: Option<u16>,
    pub tls_port: Option<u16>,
    /// A UNIX socket display's path.
    pub socket: Option<String>,
    /// Only when asked for and the definition sets one.
    pub password: Option<String>,
}

/// Body of `POST /v1/domains/{id}/screenshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScreenshotRequest {
    /// virsh's `--screen`: 0 is the primary display.
    pub screen: u32,
}

/// Reply of `POST /v1/domains/{id}/screenshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Screenshot {
    /// e.g. `image/png`.
    pub mime: String,
    pub base64: String,
}

/// Body of `POST /v1/domains/{id}/send-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendKeyRequest {
    /// virsh's code set name (`linux` when `None`).
    pub codeset: Option<String>,
    /// How long the keys are held, in milliseconds.
    pub holdtime_ms: Option<u32>,
    /// Numbers (decimal or `0x` hex) or, for the linux code set, key names (`KEY_LEFTCTRL`).
    pub keys: Vec<String>,
}

/// Reply of `POST /v1/domains/{id}/send-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeysSent {
    /// The QNUM codes pressed.
    pub qnum: Vec<u32>,
}

/// What `change-media` does (virsh's `--eject`, `--insert`, `--update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MediaAction {
    Eject,
    Insert,
    /// Eject, insert, or both, depending on the drive and on whether a source is given.
    Update,
}

/// Body of `POST /v1/domains/{id}/change-media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeMediaRequest {
    /// The drive: its target (`hdc`, `sda`) or its current source path.
    pub path: String,
    /// The medium to insert (a file, or with `block` a block device).
    pub source: Option<String>,
    pub action: MediaAction,
    /// The source is a block device (virsh's `--block`).
    pub block: bool,
    /// Open a tray the guest locked.
    pub force: bool,
    /// Change the running guest (`--live`).
    pub live: bool,
    /// Change the persistent definition (`--config`).
    pub config: bool,
}

/// Reply of `POST /v1/domains/{id}/change-media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaChanged {
    /// What was done: `eject`, `insert` or `update`.
    pub action: MediaAction,
    /// The drive's target.
    pub target: String,
}

impl Client {
    /// `POST /v1/domains/{id}/displays`: where a running domain's displays listen.
    pub async fn domain_displays(
        &self,
        domain: &str,
        request: &DisplaysRequest,
    ) -> Result<Vec<GraphicsDisplay>, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/displays"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/screenshot`.
    pub async fn screenshot(
        &self,
        domain: &str,
        request: &ScreenshotRequest,
    ) -> Result<Screenshot, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/screenshot"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/send-key`.
    pub async fn send_key(
        &self,
        domain: &str,
        request: &SendKeyRequest,
    ) -> Result<KeysSent, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/send-key"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/change-media`.
    pub async fn change_media(
        &self,
        domain: &str,
        request: &ChangeMediaRequest,
    ) -> Result<MediaChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/change-media"),
            Some(to_json(request)),
        )
        .await
    }
}
