//! Daemon administration (virt-admin's part): wire types and [`Client`] calls.
//!
//! | method + path                | body             | reply            |
//! |------------------------------|------------------|------------------|
//! | `GET /v1/admin/log-filters`  |                  | [`LogFilters`]   |
//! | `PUT /v1/admin/log-filters`  | [`LogFilters`]   | [`LogFilters`]   |
//! | `GET /v1/admin/log-outputs`  |                  | [`LogOutputs`]   |
//! | `PUT /v1/admin/log-outputs`  | [`LogOutputs`]   | [`LogOutputs`]   |
//! | `GET /v1/admin/servers`      |                  | `Vec<`[`ServerInfo`]`>` |
//! | `GET /v1/admin/servers/{server}/clients` |      | [`ClientLimits`] |
//! | `PUT /v1/admin/servers/{server}/clients` | [`SetClientLimits`] | [`ClientLimits`] |
//!
//! The strings use oxvirtd.conf's syntax (`"3:qemu 1:daemon.engine"`,
//! `"1:file:/var/log/oxvirt/oxvirtd.log 3:stderr"`); a bad one is refused (`bad_request`)
//! and the running settings stay. Changes last until oxvirtd restarts.
//!
//! oxvirtd has one server, `oxvirtd` (libvirtd has `libvirtd` and `admin`: oxvirtd serves its
//! administration on the API socket itself); another name is `not_found`.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{to_json, Client, ClientError};

/// oxvirtd's log filters (`log_filters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogFilters {
    pub filters: String,
}

/// oxvirtd's log outputs (`log_outputs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogOutputs {
    pub outputs: String,
}

/// A server of the daemon (virt-admin's `srv-list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    pub id: u32,
    pub name: String,
}

/// A server's client connections and their limits, named as libvirt's typed parameters
/// (`virt-admin server-clients-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientLimits {
    /// The most API connections open at once (`max_clients`); more are closed at accept.
    pub nclients_max: u32,
    /// API connections open now, the one asking included.
    pub nclients: u32,
    /// Always 0: the Unix socket has no clients waiting for authentication.
    pub nclients_unauth_max: u32,
    pub nclients_unauth: u32,
}

/// A change of a server's client limits (`virt-admin server-clients-set`); the limits left
/// out stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetClientLimits {
    /// At least 1. Lower than the connections open now, it closes none of them: new ones are
    /// refused until the count drops below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nclients_max: Option<u32>,
}

fn clients_path(server: &str) -> String {
    format!(
        "/v1/admin/servers/{}/clients",
        crate::percent_encode_segment(server)
    )
}

impl Client {
    /// `GET /v1/admin/log-filters`.
    pub async fn log_filters(&self) -> Result<LogFilters, ClientError> {
        self.call(Method::GET, "/v1/admin/log-filters".to_string(), None)
            .await
    }

    /// `PUT /v1/admin/log-filters`: takes effect from the next line logged.
    pub async fn set_log_filters(&self, filters: &str) -> Result<LogFilters, ClientError> {
        let body = to_json(&LogFilters {
            filters: filters.to_string(),
        });
        self.call(Method::PUT, "/v1/admin/log-filters".to_string(), Some(body))
            .await
    }

    /// `GET /v1/admin/log-outputs`.
    pub async fn log_outputs(&self) -> Result<LogOutputs, ClientError> {
        self.call(Method::GET, "/v1/admin/log-outputs".to_string(), None)
            .await
    }

    /// `PUT /v1/admin/log-outputs`.
    pub async fn set_log_outputs(&self, outputs: &str) -> Result<LogOutputs, ClientError> {
        let body = to_json(&LogOutputs {
            outputs: outputs.to_string(),
        });
        self.call(Method::PUT, "/v1/admin/log-outputs".to_string(), Some(body))
            .await
    }

    /// `GET /v1/admin/servers`.
    pub async fn servers(&self) -> Result<Vec<ServerInfo>, ClientError> {
        self.call(Method::GET, "/v1/admin/servers".to_string(), None)
            .await
    }

    /// `GET /v1/admin/servers/{server}/clients`.
    pub async fn client_limits(&self, server: &str) -> Result<ClientLimits, ClientError> {
        self.call(Method::GET, clients_path(server), None).await
    }

    /// `PUT /v1/admin/servers/{server}/clients`.
    pub async fn set_client_limits(
        &self,
        server: &str,
        limits: &SetClientLimits,
    ) -> Result<ClientLimits, ClientError> {
        self.call(Method::PUT, clients_path(server), Some(to_json(limits)))
            .await
    }
}
