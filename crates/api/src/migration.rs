//! Live migration between two oxvirtd: wire types and [`Client`] calls (virsh's `migrate`,
//! `domjobinfo`, `domjobabort`).
//!
//! | method + path                               | body                  | reply               |
//! |---------------------------------------------|-----------------------|---------------------|
//! | `POST /v1/domains/{id}/migrate`             | [`MigrateRequest`]    | `DomainSummary`     |
//! | `GET /v1/domains/{id}/job`                  |                       | [`JobInfo`]         |
//! | `POST /v1/domains/{id}/job/abort`           |                       | [`JobInfo`]         |
//! | `GET /v1/domains/{id}/migration-settings`   |                       | [`MigrationSettings`] |
//! | `PUT /v1/domains/{id}/migration-settings`   | [`MigrationSettings`] | [`MigrationSettings`] |
//! | `POST /v1/migrations`                       | [`PrepareMigration`]  | [`PreparedMigration`] |
//! | `POST /v1/migrations/{id}/stream`           | (upgrade)             | 101, then the stream |
//! | `POST /v1/migrations/{id}/finish`           | [`FinishMigration`]   | `DomainSummary`     |
//! | `DELETE /v1/migrations/{id}`                |                       | `{}`                |
//!
//! The first three are the user's (asked of the source); the `/v1/migrations` routes are what
//! the source oxvirtd asks of the destination oxvirtd (docs/migration.md). The stream route is
//! `--tunnelled`'s: the source's connection to the destination's API, upgraded
//! (`Upgrade: oxvirt-migration`), carries the migration stream itself.

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::cluster::LockHolder;
use crate::{
    domain_path, percent_encode_segment, to_json, Client, ClientError, DomainSummary,
    UpgradedStream,
};

/// The upgrade protocol of `POST /v1/migrations/{id}/stream` (`--tunnelled`).
pub const MIGRATION_PROTOCOL: &str = "oxvirt-migration";

/// Body of `POST /v1/domains/{id}/migrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrateRequest {
    /// The destination oxvirtd: its API socket (an absolute path on this host: the
    /// `oxvirt+unix:///PATH` of the command line), or its TLS API, `https://HOST:PORT`
    /// (`oxvirt+https://HOST:PORT`), reached with [`MigrateRequest::remote`]'s credentials,
    /// or the whole `oxvirt+ssh://[USER@]HOST[:PORT][/SOCKET][?keyfile=..&known_hosts=..]` URI:
    /// that host's socket through ssh ([`crate::ssh`]; the stream always tunnelled).
    pub destination: String,
    /// The guest runs while its memory is copied (`--live`); without, it is paused first and
    /// runs again on the destination.
    #[serde(default)]
    pub live: bool,
    /// Undefine the domain here once it runs there (`--undefinesource`).
    #[serde(default)]
    pub undefine_source: bool,
    /// Move only the definition (`--offline`): the destination defines the domain, nothing
    /// starts there or stops here; a shut-off domain moves too.
    #[serde(default)]
    pub offline: bool,
    /// QEMU slows the guest's vCPUs down while its memory changes faster than it is sent
    /// (`--auto-converge`, QEMU's `auto-converge` capability).
    #[serde(default)]
    pub auto_converge: bool,
    /// Pages sent again go as XOR-encoded differences (`--compressed`, QEMU's `xbzrle`).
    #[serde(default)]
    pub compressed: bool,
    /// `--timeout S --timeout-suspend`: seconds after which the guest is paused so the live
    /// migration converges (it runs again on the destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Post-copy may be switched to (`--postcopy`, QEMU's `postcopy-ram` capability on both
    /// QEMUs): the migration starts as pre-copy; `migrate-postcopy` (or the two flags below)
    /// switches it, and the guest then runs on the destination while its memory still comes.
    /// Needs `live`.
    #[serde(default)]
    pub postcopy: bool,
    /// With `postcopy` and `timeout_s`: switch to post-copy at the timeout instead of pausing
    /// the guest (`--timeout-postcopy`).
    #[serde(default)]
    pub timeout_postcopy: bool,
    /// With `postcopy`: switch to post-copy once the first pass over the memory ended
    /// (`--postcopy-after-precopy`).
    #[serde(default)]
    pub postcopy_after_precopy: bool,
    /// Bandwidth limit of the migration stream, MiB/s (`--bandwidth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib: Option<u64>,
    /// Copy the guest's writable disks to the destination too (`--copy-storage-all`,
    /// `--copy-storage-inc`); without, they must be on storage both reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_storage: Option<CopyStorage>,
    /// With an `https://` destination: how the source's oxvirtd logs in to it and trusts its
    /// certificate (the CLI passes the user's; used for this migration only, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteDestination>,
    /// The stream goes through a connection to the destination's API, upgraded
    /// (`--tunnelled`), instead of a socket or port the destination opens for it.
    #[serde(default)]
    pub tunnelled: bool,
}

/// The credentials and the certificate trust the source's oxvirtd uses for a remote destination
/// (the same ones `--connect https://` uses): a token or a user's password, and the CA
/// certificates (PEM) or the pinned SHA-256 fingerprint of the destination's certificate.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteDestination {
    /// A token of the destination (`oxvirt token create` there, role admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Or a user of the destination (role admin) and its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The certificates (PEM) that the destination's must chain to, or be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Or the SHA-256 fingerprint its certificate must have (`AB:CD:...`), as recorded in the
    /// client's `known_hosts` (named in the error when it differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

impl std::fmt::Debug for RemoteDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, not even in a debug print.
        f.debug_struct("RemoteDestination")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl RemoteDestination {
    /// A client of the oxvirtd at `url` (`https://HOST:PORT`) with these credentials and trust.
    pub fn client(&self, url: &str) -> Result<Client, ClientError> {
        let endpoint = crate::remote::Endpoint::parse(url)?;
        let invalid = |detail: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            detail: detail.to_string(),
        };
        let credentials = match (&self.token, &self.user, &self.password) {
            (Some(token), None, None) => crate::remote::Credentials::Token(token.clone()),
            (None, Some(user), Some(password)) => crate::remote::Credentials::Password {
                user: user.clone(),
                password: password.clone(),
            },
            _ => {
                return Err(invalid(
                    "the destination needs credentials: a token, or a user and its password",
                ))
            }
        };
        let trust = match (&self.ca_pem, &self.fingerprint) {
            (Some(pem), None) => crate::remote::Trust::CaPem(pem.clone().into_bytes()),
            (None, Some(fingerprint)) => crate::remote::Trust::Pinned {
                fingerprint: fingerprint.clone(),
                known_hosts: self
                    .known_hosts
                    .clone()
                    .unwrap_or_else(|| "known_hosts".to_string())
                    .into(),
            },
            _ => {
                return Err(invalid(
                    "the destination's certificate needs a CA (PEM) or a pinned fingerprint",
                ))
            }
        };
        Client::remote(&endpoint.url(), &trust, Some(&credentials))
    }
}

/// What of the disks a migration copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CopyStorage {
    /// Each disk whole (`--copy-storage-all`): the destination creates empty ones.
    All,
    /// Each disk's top image only (`--copy-storage-inc`): the destination creates a qcow2
    /// over the same backing file, which it must have.
    Inc,
}

/// A disk the destination creates for a migration to copy into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskCopy {
    /// The disk's target (`vda`).
    pub dev: String,
    /// Its file: the same path on both hosts.
    pub path: String,
    /// `raw` or `qcow2`.
    pub format: String,
    /// Its virtual size, bytes.
    pub size: u64,
    /// `--copy-storage-inc`: the backing file (as the image names it) and its format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_format: Option<String>,
}

/// What `domjobinfo` shows: the domain's current (or last) migration job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// virsh's job types: "None", "Unbounded", "Completed", "Failed", "Cancelled".
    pub job_type: String,
    /// "Outgoing migration" while one runs or ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub time_elapsed_ms: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    pub data_total: u64,
    pub memory_processed: u64,
    pub memory_remaining: u64,
    pub memory_total: u64,
    /// The disks' copy (`--copy-storage-*`): bytes copied, left, in all.
    #[serde(default)]
    pub disk_processed: u64,
    #[serde(default)]
    pub disk_remaining: u64,
    #[serde(default)]
    pub disk_total: u64,
    /// Bytes per second of RAM pages the guest dirties.
    pub dirty_rate: u64,
    /// Passes over the memory so far (virsh's "Iteration"; QEMU's `dirty-sync-count`, the
    /// native VMM's passes), 0 when not known.
    #[serde(default)]
    pub memory_iteration: u64,
    /// MiB/s of the stream.
    pub bandwidth_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Why a failed job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// QEMU's phase of the migration ("active", "postcopy-active", "completed", ...), as last
    /// seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Since the switch to post-copy: pages the destination asked for because the guest
    /// touched them there before they came.
    #[serde(default)]
    pub postcopy_requests: u64,
}

/// A running guest's migration settings (`migrate-setmaxdowntime`, `migrate-setspeed`,
/// `migrate-getspeed`). In a `PUT`, a member left out stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationSettings {
    /// The longest the guest may be paused for the last pass, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downtime_ms: Option<u64>,
    /// The stream's bandwidth limit, MiB/s (0 in a `PUT`: none; read back as QEMU's largest,
    /// 8796093022207). A running migration follows a new one at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mib: Option<u64>,
}

/// Body of `POST /v1/migrations`: the source asks the destination to get ready for a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrepareMigration {
    /// The definition the guest runs with (its live XML).
    pub xml: String,
    /// The guest was running (it runs again there; else it stays paused).
    #[serde(default)]
    pub running: bool,
    /// The owners the guest's files had before the source gave them to its QEMU's user: they
    /// get them back when the guest stops on the destination (shared storage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<FileOwner>,
    /// The disks the destination creates and serves for the source to copy into
    /// (`--copy-storage-*`); none on shared storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskCopy>,
    /// The source host's CPU as its oxvirtd advertises it: the destination compares the guest's
    /// CPU with its own before anything moves (a `host-passthrough` guest needs the same CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cpu: Option<HostCpuDescription>,
    /// A cluster guest: the source's hold of its lock. The destination must be a live member of
    /// the same cluster, and takes the lock over from exactly this holder at the finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<LockHolder>,
    /// The source may switch to post-copy (`--postcopy`): the destination's QEMU needs
    /// `postcopy-ram` too, and userfaultfd; the destination refuses the prepare when it lacks it.
    #[serde(default)]
    pub postcopy: bool,
    /// The stream comes through `POST /v1/migrations/{id}/stream` (`--tunnelled`): the
    /// destination opens no socket or port for it.
    #[serde(default)]
    pub tunnelled: bool,
}

/// A host's CPU as its oxvirtd advertises it (`oxvirt capabilities`' host `<cpu>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCpuDescription {
    /// The named model it is (the closest one when the description names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// libvirt's vendor name (`Intel`, `AMD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Every feature, the model's too, under libvirt's names.
    pub features: Vec<String>,
}

/// A file and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileOwner {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
}

/// Reply to `POST /v1/migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreparedMigration {
    /// Names this incoming migration in the later calls.
    pub id: String,
    /// The Unix socket the destination listens on for the migration stream (one connection);
    /// empty when it listens on TCP ([`PreparedMigration::address`]).
    #[serde(default)]
    pub socket: String,
    /// Prepared over the TLS API (another host): the `IP:PORT` the destination listens on for
    /// the stream instead, for one connection from the address the prepare came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// With disks to copy over TCP: the `IP:PORT` of the disks' NBD server (one connection per
    /// disk, from the source's address). It accepts once the disks are served (refused before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_address: Option<String>,
    /// With disks to copy: the Unix socket the destination's NBD server serves them on (one
    /// connection per disk). It exists once they are served, after the stream's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_socket: Option<String>,
    /// For a cluster guest: the destination's host name in the cluster (the source checks it is
    /// a live member other than itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_host: Option<String>,
    /// The destination waits for the stream on `POST /v1/migrations/{id}/stream` (an
    /// oxvirtd that knows no `--tunnelled` leaves this out, and the source gives up).
    #[serde(default)]
    pub tunnelled: bool,
}

/// Body of `POST /v1/migrations/{id}/finish` (may be empty: `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FinishMigration {
    /// A cluster guest: the etcd revision of the source's lock once its QEMU completed (the
    /// guest paused there). The destination takes the lock over only if it is still that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_revision: Option<i64>,
}

/// Reply to `DELETE /v1/migrations/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationAborted {}

fn migration_path(id: &str, suffix: &str) -> String {
    format!("/v1/migrations/{}{suffix}", percent_encode_segment(id))
}

impl Client {
    /// `POST /v1/domains/{id}/migrate`: moves the running domain to the destination; returns
    /// once it runs there (the domain is shut off here, reason migrated).
    pub async fn migrate(
        &self,
        domain: &str,
        request: &MigrateRequest,
    ) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/migrate"),
            Some(to_json(request)),
        )
        .await
    }

    /// `GET /v1/domains/{id}/job`: the domain's migration job.
    pub async fn job_info(&self, domain: &str) -> Result<JobInfo, ClientError> {
        self.call(Method::GET, domain_path(domain, "/job"), None)
            .await
    }

    /// `POST /v1/domains/{id}/job/abort`: cancels the running migration job.
    pub async fn job_abort(&self, domain: &str) -> Result<JobInfo, ClientError> {
        self.call(Method::POST, domain_path(domain, "/job/abort"), None)
            .await
    }

    /// `POST /v1/domains/{id}/job/postcopy`: virsh migrate-postcopy.
    pub async fn start_postcopy(&self, domain: &str) -> Result<JobInfo, ClientError> {
        self.call(Method::POST, domain_path(domain, "/job/postcopy"), None)
            .await
    }

    /// `GET /v1/domains/{id}/migration-settings`.
    pub async fn migration_settings(&self, domain: &str) -> Result<MigrationSettings, ClientError> {
        self.call(
            Method::GET,
            domain_path(domain, "/migration-settings"),
            None,
        )
        .await
    }

    /// `PUT /v1/domains/{id}/migration-settings`.
    pub async fn set_migration_settings(
        &self,
        domain: &str,
        settings: &MigrationSettings,
    ) -> Result<MigrationSettings, ClientError> {
        self.call(
            Method::PUT,
            domain_path(domain, "/migration-settings"),
            Some(to_json(settings)),
        )
        .await
    }

    /// `POST /v1/migrations` (destination side).
    pub async fn prepare_migration(
        &self,
        request: &PrepareMigration,
    ) -> Result<PreparedMigration, ClientError> {
        self.call(
            Method::POST,
            "/v1/migrations".to_string(),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/migrations/{id}/stream` upgraded (destination side, `--tunnelled`): the
    /// connection that carries the migration stream from here on, both ways. Over TLS,
    /// `tcp_socket` sets up its TCP socket first (the source's keepalive and timeouts).
    pub async fn migration_stream(
        &self,
        id: &str,
        tcp_socket: &crate::TcpSocketHook,
    ) -> Result<UpgradedStream, ClientError> {
        self.upgrade(
            &migration_path(id, "/stream"),
            MIGRATION_PROTOCOL,
            Some(tcp_socket),
        )
        .await
    }

    /// `POST /v1/migrations/{id}/finish` (destination side): the stream was sent whole; the
    /// guest runs there once it is loaded.
    pub async fn finish_migration(
        &self,
        id: &str,
        request: &FinishMigration,
    ) -> Result<DomainSummary, ClientError> {
        self.call(
            Method::POST,
            migration_path(id, "/finish"),
            Some(to_json(request)),
        )
        .await
    }

    /// `DELETE /v1/migrations/{id}` (destination side): nothing of it stays.
    pub async fn abort_migration(&self, id: &str) -> Result<MigrationAborted, ClientError> {
        self.call(Method::DELETE, migration_path(id, ""), None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_destination_needs_credentials_and_trust_and_hides_its_secrets() {
        let remote = RemoteDestination {
            token: Some("oxv_1_s3cret".into()),
            user: None,
            password: None,
            ca_pem: None,
            fingerprint: Some("AB:CD".into()),
            known_hosts: Some("/root/.config/oxvirt/known_hosts".into()),
        };
        assert!(!format!("{remote:?}").contains("s3cret"));
        assert!(remote.client("https://10.0.0.2:16514").is_ok());
        let err = remote.client("http://10.0.0.2:16514").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let no_credentials = RemoteDestination {
            token: None,
            ..remote.clone()
        };
        let err = no_credentials.client("https://h:1").unwrap_err();
        assert!(err.to_string().contains("needs credentials"), "{err}");
        let no_trust = RemoteDestination {
            fingerprint: None,
            ..remote.clone()
        };
        let err = no_trust.client("https://h:1").unwrap_err();
        assert!(err.to_string().contains("CA (PEM) or a pinned"), "{err}");
        let password = RemoteDestination {
            token: None,
            user: Some("ann".into()),
            password: Some("pw-s3cret".into()),
            ..remote
        };
        assert!(!format!("{password:?}").contains("s3cret"));
        assert!(password.client("https://h:1").is_ok());
    }
}
