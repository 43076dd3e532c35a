//! Disks of running and defined domains: wire types and [`Client`] calls (virsh's
//! `attach-disk`, `detach-disk`, `attach-device`/`detach-device`/`update-device` of a `<disk>`,
//! `domblkinfo`, `domblkstat`, `blkdeviotune`). `domblklist` is in [`crate::storage`].
//!
//! | method + path                               | body                   | reply            |
//! |---------------------------------------------|------------------------|------------------|
//! | `POST /v1/domains/{id}/attach-disk`         | [`AttachDiskRequest`]  | [`DiskChanged`]  |
//! | `POST /v1/domains/{id}/detach-disk`         | [`DetachDiskRequest`]  | [`DiskChanged`]  |
//! | `POST /v1/domains/{id}/device`              | [`DeviceRequest`]      | [`DiskChanged`]  |
//! | `GET /v1/domains/{id}/inactive-disks`      |                        | `[DomainDisk]`   |
//! | `GET /v1/domains/{id}/blkinfo`              |                        | `[BlockInfo]`    |
//! | `GET /v1/domains/{id}/blkstat`              |                        | `[BlockStat]`    |
//! | `POST /v1/domains/{id}/blkiotune`           | [`IoTuneRequest`]      | [`BlockIoTune`]  |
//!
//! `live` is the running guest, `config` the definition it starts with next; neither is
//! virsh's `--current` (the running guest, else the definition). A shut-off domain takes
//! `config` only.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{domain_path, to_json, Client, ClientError, DomainDisk};

/// Body of `attach-disk`: virsh's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachDiskRequest {
    /// The file or block device.
    pub source: String,
    /// The guest's name for it (`vdb`).
    pub target: String,
    /// `raw` or `qcow2` (`--subdriver`); `None`: raw, as libvirt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdriver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    /// `virtio` or `scsi`; `None`: the bus the target's name says (`vdb` virtio, `sdb` scsi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targetbus: Option<String>,
    /// `readonly` or `shareable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `file` or `block`; `None`: `block` for a block device, else `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Body of `detach-disk`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DetachDiskRequest {
    /// The disk's target (`vdb`) or source path.
    pub target: String,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// What `POST /v1/domains/{id}/device` does with the device XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceAction {
    Attach,
    Detach,
    Update,
}

/// Body of `attach-device`, `detach-device`, `update-device`: one device's XML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceRequest {
    pub action: DeviceAction,
    pub xml: String,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Reply of the disk changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskChanged {
    pub target: String,
    /// Whether the running guest and the definition changed.
    pub live: bool,
    pub config: bool,
}

/// One disk's sizes (`domblkinfo`), in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockInfo {
    pub target: String,
    /// What the guest sees.
    pub capacity: u64,
    /// What the image takes on the host.
    pub allocation: u64,
    /// The host file's (or device's) size.
    pub physical: u64,
}

/// One disk's I/O counters (`domblkstat`), virsh's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockStat {
    pub target: String,
    pub rd_req: u64,
    pub rd_bytes: u64,
    pub wr_req: u64,
    pub wr_bytes: u64,
    pub flush_operations: u64,
    pub rd_total_times: u64,
    pub wr_total_times: u64,
    pub flush_total_times: u64,
}

/// A disk's I/O limits (`blkdeviotune`), as virsh lists them. The names and their order are
/// oxvirt-domain's `IoLimit` (the one list of them), so this type does not repeat them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockIoTune {
    /// Every limit under libvirt's name, in libvirt's order (per second; 0: no limit).
    pub limits: Vec<(String, u64)>,
    /// The throttle group the disk shares its limits in (`group_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

/// Body of `blkdeviotune`: without `set` and `group_name`, it asks (`live` or `config`, not both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoTuneRequest {
    /// The disk's target or source path.
    pub target: String,
    /// Limits to change, by libvirt's names.
    #[serde(default)]
    pub set: Vec<(String, u64)>,
    /// The throttle group to put the disk in (`--group-name`; empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

impl Client {
    /// `POST /v1/domains/{id}/attach-disk`.
    pub async fn attach_disk(
        &self,
        domain: &str,
        request: &AttachDiskRequest,
    ) -> Result<DiskChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/attach-disk"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/detach-disk`.
    pub async fn detach_disk(
        &self,
        domain: &str,
        request: &DetachDiskRequest,
    ) -> Result<DiskChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/detach-disk"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/domains/{id}/device`.
    pub async fn change_device(
        &self,
        domain: &str,
        request: &DeviceRequest,
    ) -> Result<DiskChanged, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/device"),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/domains/{id}/inactive-disks` (`domblklist --inactive`).
    pub async fn inactive_disks(&self, domain: &str) -> Result<Vec<DomainDisk>, ClientError> {
        self.call(Method::GET, domain_path(domain, "/inactive-disks"), None)
            .await
    }

    /// `GET /v1/domains/{id}/blkinfo`.
    pub async fn block_info(&self, domain: &str) -> Result<Vec<BlockInfo>, ClientError> {
        self.call(Method::GET, domain_path(domain, "/blkinfo"), None)
            .await
    }

    /// `GET /v1/domains/{id}/blkstat`.
    pub async fn block_stats(&self, domain: &str) -> Result<Vec<BlockStat>, ClientError> {
        self.call(Method::GET, domain_path(domain, "/blkstat"), None)
            .await
    }

    /// `POST /v1/domains/{id}/blkiotune`.
    pub async fn block_io_tune(
        &self,
        domain: &str,
        request: &IoTuneRequest,
    ) -> Result<BlockIoTune, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/blkiotune"),
            Some(to_json(request)),
        )
        .await
    }
}
