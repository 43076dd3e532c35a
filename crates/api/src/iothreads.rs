//! IOThreads: wire types and [`Client`] calls (virsh's `iothreadinfo`, `iothreadpin`,
//! `iothreadadd`, `iothreaddel`).
//!
//! | method + path                             | body                   | reply                |
//! |-------------------------------------------|------------------------|----------------------|
//! | `POST /v1/domains/{id}/iothreadinfo`      | [`IoThreadScope`]      | [`IoThreadInfo`]     |
//! | `POST /v1/domains/{id}/iothreadpin`       | [`IoThreadPinRequest`] | [`IoThreadsChanged`] |
//! | `POST /v1/domains/{id}/iothreadadd`       | [`IoThreadRequest`]    | [`IoThreadsChanged`] |
//! | `POST /v1/domains/{id}/iothreaddel`       | [`IoThreadRequest`]    | [`IoThreadsChanged`] |
//!
//! `live` is the running guest, `config` the definition it starts with next; neither is
//! virsh's `--current` (the running guest, else the definition).

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

/// Body of `iothreadinfo`: which side to describe (one at most).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadScope {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Reply of `iothreadinfo`: each IOThread, in the definition's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadInfo {
    pub iothreads: Vec<IoThreadAffinity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadAffinity {
    pub id: u32,
    /// The host CPUs it may run on, as libvirt prints them (`0-1`).
    pub cpulist: String,
}

/// Body of `iothreadpin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadPinRequest {
    pub iothread: u32,
    /// Host CPUs as libvirt writes them (`0-2,^1`).
    pub cpulist: String,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Body of `iothreadadd` and `iothreaddel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadRequest {
    pub iothread: u32,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Reply of the calls that change IOThreads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoThreadsChanged {
    pub name: String,
}

impl Client {
    /// `POST /v1/domains/{id}/iothreadinfo`.
    pub async fn iothread_info(
        &self,
        domain: &str,
        scope: &IoThreadScope,
    ) -> Result<IoThreadInfo, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/iothreadinfo"),
            Some(to_json(scope)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/iothreadpin`.
    pub async fn iothread_pin(
        &self,
        domain: &str,
        request: &IoThreadPinRequest,
    ) -> Result<IoThreadsChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/iothreadpin"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/iothreadadd`.
    pub async fn iothread_add(
        &self,
        domain: &str,
        request: &IoThreadRequest,
    ) -> Result<IoThreadsChanged, ClientError> {
        self.iothread_change(domain, "/iothreadadd", request).await
    }

    /// `POST /v1/domains/{id}/iothreaddel`.
    pub async fn iothread_del(
        &self,
        domain: &str,
        request: &IoThreadRequest,
    ) -> Result<IoThreadsChanged, ClientError> {
        self.iothread_change(domain, "/iothreaddel", request).await
    }

    async fn iothread_change(
        &self,
        domain: &str,
        verb: &str,
        request: &IoThreadRequest,
    ) -> Result<IoThreadsChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, verb),
            Some(to_json(request)),
        )
        .await
    }
}
