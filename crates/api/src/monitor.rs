//! The engine's own monitor: wire types and [`Client`] calls (virsh's `qemu-monitor-command`).
//!
//! | method + path                          | body               | reply             |
//! |----------------------------------------|--------------------|-------------------|
//! | `POST /v1/domains/{id}/monitor`        | [`MonitorCommand`] | [`MonitorAnswer`] |
//!
//! The command goes to QEMU as the user wrote it, and QEMU's answer comes back as QEMU wrote
//! it: as with libvirt, this is for what oxvirt has no verb for, and oxvirt does not know what
//! it changed (oxvirtd logs that the domain was handled behind its back).

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

/// Body of `POST /v1/domains/{id}/monitor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorCommand {
    /// A QMP command as JSON (`{"execute": ..., "arguments": {...}}`), or with `hmp` a human
    /// monitor command line (`info status`).
    pub command: String,
    #[serde(default)]
    pub hmp: bool,
}

/// Reply of `POST /v1/domains/{id}/monitor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorAnswer {
    /// QMP: the answer's JSON line (`{"return": ...}` or `{"error": ...}`), keys in QEMU's
    /// order. HMP: the text the command printed.
    pub answer: String,
}

impl Client {
    /// `POST /v1/domains/{id}/monitor`: `command` to the running guest's QEMU monitor.
    pub async fn monitor_command(
        &self,
        domain: &str,
        command: &MonitorCommand,
    ) -> Result<MonitorAnswer, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/monitor"),
            Some(to_json(command)),
        )
        .await
    }
}
