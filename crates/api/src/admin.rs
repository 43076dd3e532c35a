//! Daemon administration (virt-admin's part): wire types and [`Client`] calls.
//!
//! | method + path                | body             | reply            |
//! |------------------------------|------------------|------------------|
//! | `GET /v1/admin/log-filters`  |                  | [`LogFilters`]   |
//! | `PUT /v1/admin/log-filters`  | [`LogFilters`]   | [`LogFilters`]   |
//! | `GET /v1/admin/log-outputs`  |                  | [`LogOutputs`]   |
//! | `PUT /v1/admin/log-outputs`  | [`LogOutputs`]   | [`LogOutputs`]   |
//!
//! The strings use oxvirtd.conf's syntax (`"3:qemu 1:daemon.engine"`,
//! `"1:file:/var/log/oxvirt/oxvirtd.log 3:stderr"`); a bad one is refused (`bad_request`)
//! and the running settings stay. Changes last until oxvirtd restarts.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{to_json, Client, ClientError};

/// oxvirtd's log filters (`log_filters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilters {
    pub filters: String,
}

/// oxvirtd's log outputs (`log_outputs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOutputs {
    pub outputs: String,
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
}
