//! A guest's CPU and memory limits (its cgroups): wire types and [`Client`] calls behind
//! virsh's `schedinfo` and `memtune`.
//!
//! | method + path                       | body              | reply            |
//! |-------------------------------------|-------------------|------------------|
//! | `POST /v1/domains/{id}/schedinfo`   | [`LimitsRequest`] | [`LimitValues`]  |
//! | `POST /v1/domains/{id}/memtune`     | [`LimitsRequest`] | [`LimitValues`]  |
//!
//! `schedinfo`'s names: `cpu_shares`, `vcpu_period`, `vcpu_quota`, `emulator_period`,
//! `emulator_quota` (periods and quotas in µs, a quota of -1: none). `memtune`'s:
//! `hard_limit`, `soft_limit`, `swap_hard_limit` (KiB, -1: unlimited). An empty `set` asks.
//! `live` is the running guest, `config` the definition; neither is virsh's `--current`.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRequest {
    #[serde(default)]
    pub set: Vec<LimitValue>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitValue {
    pub name: String,
    pub value: i64,
}

/// Every limit of the verb, in virsh's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitValues {
    pub values: Vec<LimitValue>,
}

impl Client {
    /// `POST /v1/domains/{id}/schedinfo`.
    pub async fn schedinfo(
        &self,
        domain: &str,
        request: &LimitsRequest,
    ) -> Result<LimitValues, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/schedinfo"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/memtune`.
    pub async fn memtune(
        &self,
        domain: &str,
        request: &LimitsRequest,
    ) -> Result<LimitValues, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/memtune"),
            Some(to_json(request)),
        )
        .await
    }
}
