//! Guest memory: wire types and [`Client`] calls (virsh's `setmem`, `setmaxmem`,
//! `dommemstat`).
//!
//! | method + path                              | body                   | reply                 |
//! |--------------------------------------------|------------------------|-----------------------|
//! | `POST /v1/domains/{id}/setmem`             | [`MemoryRequest`]      | [`MemoryChanged`]     |
//! | `POST /v1/domains/{id}/setmaxmem`          | [`MemoryRequest`]      | [`MemoryChanged`]     |
//! | `GET /v1/domains/{id}/memstats`            |                        | [`DomainMemoryStats`] |
//! | `POST /v1/domains/{id}/memstats-period`    | [`StatsPeriodRequest`] | [`MemoryChanged`]     |
//!
//! `live` is the running guest, `config` the definition it starts with next; neither is
//! virsh's `--current` (the running guest, else the definition).

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

/// Body of `setmem` (the guest's current memory, `<currentMemory>`) and `setmaxmem` (its
/// maximum, `<memory>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryRequest {
    pub size_kib: u64,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Body of `memstats-period`: how often (seconds; 0: never) the guest's balloon driver
/// reports its statistics (`<memballoon><stats period=>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsPeriodRequest {
    pub period: u32,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Reply of the memory changes: the domain's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryChanged {
    pub name: String,
}

/// Reply of `GET /v1/domains/{id}/memstats`: virsh dommemstat's lines, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainMemoryStats {
    pub stats: Vec<MemoryStat>,
}

/// One statistic: `actual`, `swap_in`, ..., `rss` (sizes in KiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryStat {
    pub name: String,
    pub value: u64,
}

impl Client {
    /// `POST /v1/domains/{id}/setmem`.
    pub async fn set_memory(
        &self,
        domain: &str,
        request: &MemoryRequest,
    ) -> Result<MemoryChanged, ClientError> {
        self.memory_change(domain, "/setmem", to_json(request))
            .await
    }

    /// `POST /v1/domains/{id}/setmaxmem`.
    pub async fn set_max_memory(
        &self,
        domain: &str,
        request: &MemoryRequest,
    ) -> Result<MemoryChanged, ClientError> {
        self.memory_change(domain, "/setmaxmem", to_json(request))
            .await
    }

    /// `GET /v1/domains/{id}/memstats`.
    pub async fn memory_stats(&self, domain: &str) -> Result<DomainMemoryStats, ClientError> {
        self.call(Method::GET, domain_path(domain, "/memstats"), None)
            .await
    }

    /// `POST /v1/domains/{id}/memstats-period`.
    pub async fn set_memory_stats_period(
        &self,
        domain: &str,
        request: &StatsPeriodRequest,
    ) -> Result<MemoryChanged, ClientError> {
        self.memory_change(domain, "/memstats-period", to_json(request))
            .await
    }

    async fn memory_change(
        &self,
        domain: &str,
        verb: &str,
        body: Vec<u8>,
    ) -> Result<MemoryChanged, ClientError> {
        self.call(Method::POST, domain_path(domain, verb), Some(body))
            .await
    }
}
