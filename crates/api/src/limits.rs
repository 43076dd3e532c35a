//! A guest's CPU, memory and block I/O limits (its cgroups): wire types and [`Client`] calls
//! behind virsh's `schedinfo`, `memtune` and `blkiotune`.
//!
//! | method + path                       | body              | reply            |
//! |-------------------------------------|-------------------|------------------|
//! | `POST /v1/domains/{id}/schedinfo`   | [`LimitsRequest`] | [`LimitValues`]  |
//! | `POST /v1/domains/{id}/memtune`     | [`LimitsRequest`] | [`LimitValues`]  |
//! | `POST /v1/domains/{id}/blkio`       | [`BlkioRequest`]  | [`BlkioValues`]  |
//!
//! (`/blkiotune` is `blkdeviotune`'s, a disk's QEMU throttle: `crate::disks`.)
//!
//! `schedinfo`'s names: `cpu_shares`, `vcpu_period`, `vcpu_quota`, `emulator_period`,
//! `emulator_quota` (periods and quotas in µs, a quota of -1: none). `memtune`'s:
//! `hard_limit`, `soft_limit`, `swap_hard_limit` (KiB, -1: unlimited). An empty `set` asks.
//! `live` is the running guest, `config` the definition; neither is virsh's `--current`.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitsRequest {
    #[serde(default)]
    pub set: Vec<LimitValue>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitValue {
    pub name: String,
    pub value: i64,
}

/// Every limit of the verb, in virsh's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitValues {
    pub values: Vec<LimitValue>,
}

/// `blkiotune`: what to set (nothing: ask). A device value of 0 removes that setting (and a
/// device left with nothing set goes), as in libvirt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlkioRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default)]
    pub devices: Vec<BlkioSetting>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// One host block device's value of one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlkioSetting {
    pub path: String,
    pub param: BlkioParam,
    pub value: u64,
}

/// virsh's names of the per-device parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BlkioParam {
    DeviceWeight,
    DeviceReadIopsSec,
    DeviceWriteIopsSec,
    DeviceReadBytesSec,
    DeviceWriteBytesSec,
}

impl BlkioParam {
    /// In virsh's order.
    pub const ALL: [BlkioParam; 5] = [
        BlkioParam::DeviceWeight,
        BlkioParam::DeviceReadIopsSec,
        BlkioParam::DeviceWriteIopsSec,
        BlkioParam::DeviceReadBytesSec,
        BlkioParam::DeviceWriteBytesSec,
    ];

    /// virsh's name (`device_weight`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BlkioParam::DeviceWeight => "device_weight",
            BlkioParam::DeviceReadIopsSec => "device_read_iops_sec",
            BlkioParam::DeviceWriteIopsSec => "device_write_iops_sec",
            BlkioParam::DeviceReadBytesSec => "device_read_bytes_sec",
            BlkioParam::DeviceWriteBytesSec => "device_write_bytes_sec",
        }
    }
}

/// A domain's block I/O settings (0: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlkioValues {
    pub weight: u32,
    pub devices: Vec<BlkioDeviceValues>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlkioDeviceValues {
    pub path: String,
    pub weight: u64,
    pub read_iops_sec: u64,
    pub write_iops_sec: u64,
    pub read_bytes_sec: u64,
    pub write_bytes_sec: u64,
}

impl BlkioDeviceValues {
    pub fn get(&self, param: BlkioParam) -> u64 {
        match param {
            BlkioParam::DeviceWeight => self.weight,
            BlkioParam::DeviceReadIopsSec => self.read_iops_sec,
            BlkioParam::DeviceWriteIopsSec => self.write_iops_sec,
            BlkioParam::DeviceReadBytesSec => self.read_bytes_sec,
            BlkioParam::DeviceWriteBytesSec => self.write_bytes_sec,
        }
    }
}

impl Client {
    /// `POST /v1/domains/{id}/blkio`.
    pub async fn blkiotune(
        &self,
        domain: &str,
        request: &BlkioRequest,
    ) -> Result<BlkioValues, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/blkio"),
            Some(to_json(request)),
        )
        .await
    }

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
