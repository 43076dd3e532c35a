//! Domain statistics in virsh domstats' terms: wire types and [`Client`] call.
//!
//! | method + path             | body             | reply             |
//! |---------------------------|------------------|-------------------|
//! | `POST /v1/domain-stats`  | [`StatsRequest`] | [`DomainsStats`]  |
//!
//! Each domain's statistics are `name=value` fields under libvirt's names (`state.state`,
//! `cpu.time`, `balloon.current`, `vcpu.0.time`, `net.0.rx.bytes`, `block.0.rd.reqs`, ...), in
//! libvirt's order; times in ns, memory in KiB, sizes in bytes.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{to_json, Client, ClientError};

/// Body of `POST /v1/domain-stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsRequest {
    /// Domains by name or UUID; none: every domain.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Groups (`state`, `cpu-total`, `balloon`, `vcpu`, `interface`, `block`); none: all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only domains in these states (`running`, `paused`, `shutoff`); none: any.
    #[serde(default)]
    pub states: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainsStats {
    pub domains: Vec<DomainStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainStats {
    pub name: String,
    pub fields: Vec<StatField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatField {
    pub name: String,
    pub value: String,
}

impl Client {
    /// `POST /v1/domain-stats`.
    pub async fn domain_stats(&self, request: &StatsRequest) -> Result<DomainsStats, ClientError> {
        self.call(
            Method::POST,
            "/v1/domain-stats".to_string(),
            Some(to_json(request)),
        )
        .await
    }
}
