//! The oxvirtd API: JSON over HTTP/1.1 on a Unix socket, or over TLS from another host
//! ([`remote`], docs/remote.md).
//!
//! This crate holds the wire types shared by the daemon (`oxvirtd`) and its clients (the `oxvirt`
//! CLI), plus an async [`Client`]. The types are a stable contract: fields are only ever added.
//!
//! Endpoints (all bodies JSON; `{id}` is a domain name or UUID, percent-encoded):
//!
//! | method + path                                   | body                  | reply             |
//! |-------------------------------------------------|-----------------------|-------------------|
//! | `GET /v1/version`                               |                       | [`VersionInfo`]   |
//! | `GET /v1/domains`                               |                       | `[DomainSummary]` |
//! | `POST /v1/domains`                              | [`XmlDocument`]       | [`DomainSummary`] |
//! | `GET /v1/domains/{id}`                          |                       | [`DomainInfo`]    |
//! | `GET /v1/domains/{id}/xml`                      |                       | [`XmlDocument`]   |
//! | `PUT /v1/domains/{id}/xml`                      | [`XmlDocument`]       | [`DomainSummary`] |
//! | `DELETE /v1/domains/{id}`                       |                       | [`DomainSummary`] |
//! | `POST /v1/domains/{id}/{action}` ([`Action`])   | [`ShutdownRequest`]*  | [`DomainSummary`] |
//! | `PUT /v1/domains/{id}/autostart`                | [`AutostartRequest`]  | [`DomainSummary`] |
//!
//! (*) only `shutdown` reads a body, and it is optional.
//!
//! Networks and guest interfaces: see the [`network`] module.
//! Storage pools, volumes and `blockresize`: see the [`storage`] module.
//! Graphical displays, screenshots, keys and removable media: see the [`display`] module.
//! Snapshots: see the [`snapshot`] module.
//! `qemu-monitor-command`: see the [`monitor`] module.
//! The event stream (`event`, `qemu-monitor-event`): see the [`events`] module.
//! `vcpuinfo`, `vcpupin`, `emulatorpin`, `vcpucount`, `setvcpus`: see the [`tuning`] module.
//! `iothreadinfo`, `iothreadpin`, `iothreadadd`, `iothreaddel`: see the [`iothreads`] module.
//! `save`, `restore` and managed saves: see the [`save`] module.
//! `setmem`, `setmaxmem`, `dommemstat`: see the [`memory`] module.
//! Users and tokens of the remote API: see the [`users`] module; the console over an upgraded
//! connection: the [`console`] module; the TLS transport: [`remote`].
//!
//! Errors come back as HTTP 4xx/5xx with an [`ApiError`] body.

#![forbid(unsafe_code)]

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

pub mod ssh;
pub use ssh::SshDestination;

pub mod storage;
pub use storage::{
    BlockResizeRequest, BlockResized, BodySender, ChannelBody, CloneVolumeRequest,
    CreateVolumeRequest, DomainDisk, PoolInfo, ResizeVolumeRequest, VolumeDownload, VolumeInfo,
};

pub mod display;
pub use display::{
    ChangeMediaRequest, DisplaysRequest, GraphicsDisplay, KeysSent, MediaAction, MediaChanged,
    Screenshot, ScreenshotRequest, SendKeyRequest,
};

pub mod migration;
pub use migration::{
    CopyStorage, DiskCopy, FileOwner, FinishMigration, HostCpuDescription, JobInfo, MigrateRequest,
    MigrationAborted, MigrationSettings, PrepareMigration, PreparedMigration, RemoteDestination,
    MIGRATION_PROTOCOL,
};
pub mod save;
pub use save::{ManagedSaveRequest, RestoreRequest, RunAfter, SaveImageRequest, SaveRequest};

pub mod admin;
pub use admin::{ClientLimits, LogFilters, LogOutputs, ServerInfo, SetClientLimits};

pub mod secret;
pub use secret::{SecretInfo, SecretValue};

pub mod memory;
pub use memory::{DomainMemoryStats, MemoryChanged, MemoryRequest, MemoryStat, StatsPeriodRequest};
pub mod events;
pub use events::{
    Event, EventBody, EventFilter, EventKind, EventStream, Lifecycle, LifecycleDetail,
    LifecycleEvent, MonitorEvent, StreamItem,
};
pub mod json_text;
pub mod monitor;
pub use monitor::{MonitorAnswer, MonitorCommand};

pub mod limits;
pub use limits::{
    BlkioDeviceValues, BlkioParam, BlkioRequest, BlkioSetting, BlkioValues, LimitValue,
    LimitValues, LimitsRequest,
};
pub mod capabilities;
pub use capabilities::{
    CacheBankInfo, CapabilityEnum, CapabilityGroup, CellCpuInfo, CpuModelInfo, CpuModels,
    DomainCapabilities, DomainCapabilitiesQuery, GuestCapabilities, GuestFeature, HostCapabilities,
    HostCpuCapabilities, MachineInfo, NumaCellInfo,
};

pub mod cluster;
pub use cluster::{
    ClusterDomain, ClusterHost, ClusterHosts, ClusterPool, HostRecord, HostState, LockHolder,
    MigrationTarget, MigrationTargets,
};
pub mod node;
pub mod stats;
pub use node::{
    AllocPages, CellFree, CellsFree, FreePages, KsmSettings, NodeCpuMap, NodeInfo, NodeValue,
    NodeValues, PageCount, PagePool,
};
pub use stats::{DomainStats, DomainsStats, StatField, StatsRequest};

pub mod iothreads;
pub use iothreads::{
    IoThreadAffinity, IoThreadInfo, IoThreadPinRequest, IoThreadRequest, IoThreadScope,
    IoThreadsChanged,
};

pub mod tuning;
pub use tuning::{Pin, PinRequest, Pins, SetVcpus, VcpuCounts, VcpuInfo, VcpuState};

pub mod disks;
pub use disks::{
    AttachDiskRequest, BlockInfo, BlockIoTune, BlockStat, DetachDiskRequest, DeviceAction,
    DeviceRequest, DiskChanged, IoTuneRequest,
};

pub mod snapshot;
pub use snapshot::{CreateSnapshot, DeleteSnapshot, RevertSnapshot, SnapshotSummary};

pub mod console;
pub use console::{splice, ConsoleStream, UpgradedStream, CONSOLE_PROTOCOL};
pub mod remote;
pub mod users;
pub use users::{
    AddUserRequest, CreateTokenRequest, LoginRequest, NewToken, PasswordRequest, Role, SessionInfo,
    TokenInfo, UserInfo, CSRF_HEADER, SESSION_COOKIE,
};

pub mod network;
pub use network::{
    AddressSource, AttachInterfaceRequest, DetachInterfaceRequest, DomainInterface,
    InterfaceAddress, InterfaceStats, NetworkInfo, NetworkLease,
};

/// Version of this API; bumped only on incompatible changes.
pub const API_VERSION: u32 = 1;

/// Where oxvirtd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/oxvirt/oxvirtd.sock";

/// Largest request body oxvirtd reads (bytes). Definitions are limited to 4 MiB of XML; JSON
/// escaping can make that up to twice as long on the wire. Larger bodies get `too_large` (413).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// Longest `shutdown` wait a client may ask for: one day. Longer waits are refused as
/// `bad_request`, never turned into a deadline that overflows the clock.
pub const MAX_SHUTDOWN_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Reply of `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// The daemon's package version, e.g. "0.1.0".
    pub daemon: String,
    /// [`API_VERSION`] of the daemon.
    pub api: u32,
    /// Version of the QEMU binary the daemon would use, e.g. "7.2.22"; `None` if none was found.
    pub qemu: Option<String>,
}

/// A domain's state, with virsh's words on the wire and in `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DomainState {
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "paused")]
    Paused,
    #[serde(rename = "shut off")]
    ShutOff,
    #[serde(rename = "crashed")]
    Crashed,
    #[serde(rename = "in shutdown")]
    InShutdown,
    #[serde(rename = "pmsuspended")]
    PmSuspended,
}

impl DomainState {
    /// virsh's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::ShutOff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::InShutdown => "in shutdown",
            DomainState::PmSuspended => "pmsuspended",
        }
    }

    /// Whether a process backs the domain in this state (it has a runtime id).
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::ShutOff | DomainState::Crashed)
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `undefine` does with a UEFI guest's NVRAM file (virsh's `--nvram` / `--keep-nvram`);
/// without either, a domain that has one is refused, as libvirt refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NvramOnUndefine {
    Remove,
    Keep,
}

/// What `undefine` may remove besides the definition (virsh's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndefineOptions {
    pub nvram: Option<NvramOnUndefine>,
    /// Forget the domain's snapshots' metadata (`--snapshots-metadata`); without it a domain
    /// with snapshots is refused.
    pub snapshots_metadata: bool,
    /// Remove the domain's managed save (`--managed-save`); without it a domain with one is
    /// refused.
    pub managed_save: bool,
}

/// One line of `GET /v1/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainSummary {
    /// Runtime id while the domain is active (like virsh's Id column), `None` when inactive.
    pub id: Option<u32>,
    pub name: String,
    /// Canonical lowercase hyphenated UUID.
    pub uuid: String,
    pub state: DomainState,
    pub autostart: bool,
    /// The domain has a managed save: its next start resumes the saved guest (`list`'s
    /// `--with-managed-save`). Only `list` fills it in.
    #[serde(default)]
    pub managed_save: bool,
    /// On a cluster member (docs/cluster.md): the host the guest runs on, empty while it runs
    /// nowhere; absent outside a cluster. Only `list` fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Which engine runs a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// qemu-system-x86_64 driven over QMP.
    Qemu,
    /// oxvirt's own VMM (`oxvirt-vmm`).
    Native,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Qemu => "qemu",
            Engine::Native => "native",
        })
    }
}

/// CPU virtualization used (or that would be used) for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's binary translator (software emulation).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Reply of `GET /v1/domains/{id}` (virsh dominfo and a little more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainInfo {
    pub id: Option<u32>,
    pub name: String,
    pub uuid: String,
    /// `<os><type>`, e.g. "hvm".
    pub os_type: String,
    pub state: DomainState,
    /// Why the domain is in its state, in virsh's words ("booted", "user", "destroyed", "shutdown",
    /// "crashed", "unknown", ...).
    pub state_reason: String,
    pub vcpus: u32,
    pub max_memory_kib: u64,
    /// Memory currently given to the guest (the configured current memory).
    pub used_memory_kib: u64,
    /// CPU time the domain's process has used, 0 when inactive.
    pub cpu_time_ns: u64,
    pub persistent: bool,
    pub autostart: bool,
    /// The domain has a managed save (dominfo's "Managed save").
    #[serde(default)]
    pub managed_save: bool,
    pub engine: Engine,
    /// The accelerator in use while active, or the one a start would use now.
    pub accel: Accel,
    /// Things the user should know, e.g. "TCG: no hardware KVM here (kvm_pvm)".
    pub warnings: Vec<String>,
    /// Unix socket of the serial console, while active.
    pub console_socket: Option<String>,
    /// File that collects the serial console's output, if any.
    pub console_log: Option<String>,
    /// The host's security model for guests' processes, as virsh's dominfo names it: "dac"
    /// (QEMU runs as a user of its own, its files given to that user), or "none" when guests
    /// run unconfined (`oxvirtd --no-sandbox`).
    #[serde(default = "no_security_model")]
    pub security_model: String,
    /// A running guest's label in that model: "+UID:+GID", the user and group its QEMU runs
    /// as.
    #[serde(default)]
    pub security_label: Option<String>,
    /// A cluster guest asked of a member that does not run it: the member that does (none
    /// while it runs nowhere), its state read from the cluster (docs/cluster.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn no_security_model() -> String {
    "none".to_string()
}

/// A domain XML document: body of define and edit, reply of dumpxml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct XmlDocument {
    pub xml: String,
}

/// Body of `POST /v1/domains/{id}/shutdown` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShutdownRequest {
    /// Wait up to this many seconds (at most [`MAX_SHUTDOWN_TIMEOUT_SECS`]) for the guest to
    /// power off; without it the call returns as soon as the request was sent to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Body of `PUT /v1/domains/{id}/autostart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutostartRequest {
    pub enabled: bool,
}

/// Lifecycle actions: `POST /v1/domains/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Shutdown,
    Destroy,
    Reboot,
    Reset,
    Suspend,
    Resume,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Start,
        Action::Shutdown,
        Action::Destroy,
        Action::Reboot,
        Action::Reset,
        Action::Suspend,
        Action::Resume,
    ];

    /// The action's path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Shutdown => "shutdown",
            Action::Destroy => "destroy",
            Action::Reboot => "reboot",
            Action::Reset => "reset",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
        }
    }

    pub fn from_path_segment(segment: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == segment)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable error codes of [`ApiError::code`].
pub mod code {
    pub const NOT_FOUND: &str = "not_found";
    pub const INVALID_XML: &str = "invalid_xml";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const INVALID_STATE: &str = "invalid_state";
    pub const BUSY: &str = "busy";
    pub const ENGINE: &str = "engine";
    pub const TIMEOUT: &str = "timeout";
    pub const INVALID_NAME: &str = "invalid_name";
    /// A malformed request (bad JSON body, unknown action, a number out of range).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request body is larger than [`MAX_REQUEST_BYTES`](crate::MAX_REQUEST_BYTES).
    pub const TOO_LARGE: &str = "too_large";
    /// A failure inside the daemon (its state store, the file system).
    pub const INTERNAL: &str = "internal";
    /// A service the daemon needs for this is out of reach (the cluster's etcd); retry later.
    pub const UNAVAILABLE: &str = "unavailable";
    /// Over TCP: no credentials, or wrong ones (HTTP 401).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Over TCP: the credentials' role may not do this (a read-only role changing state).
    pub const FORBIDDEN: &str = "forbidden";
    /// Over TCP: too many failed logins from this address or for this user; retry later.
    pub const TOO_MANY_REQUESTS: &str = "too_many_requests";
}

/// An error reply. `message` is a complete sentence naming the thing, e.g.
/// "domain 'web1' is already running".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{message}")]
pub struct ApiError {
    /// One of the constants in [`code`].
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The HTTP status the daemon sends with this error.
    pub fn http_status(&self) -> u16 {
        match self.code.as_str() {
            code::NOT_FOUND => 404,
            code::INVALID_XML | code::INVALID_NAME | code::BAD_REQUEST => 400,
            code::ALREADY_EXISTS | code::INVALID_STATE | code::BUSY => 409,
            code::UNSUPPORTED => 422,
            code::TOO_LARGE => 413,
            code::UNAUTHORIZED => 401,
            code::FORBIDDEN => 403,
            code::TOO_MANY_REQUESTS => 429,
            code::TIMEOUT => 504,
            code::UNAVAILABLE => 503,
            _ => 500,
        }
    }
}

/// What can go wrong talking to oxvirtd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (missing file or connection refused).
    #[error("cannot connect to oxvirtd at {}: is it running?", socket.display())]
    DaemonNotRunning { socket: PathBuf },
    /// The socket exists but could not be used (e.g. permission denied).
    #[error("cannot connect to oxvirtd at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The exchange failed or the reply was not what the API promises.
    #[error("bad exchange with oxvirtd at {}: {detail}", socket.display())]
    Protocol { socket: PathBuf, detail: String },
    /// `--connect` is not an `https://HOST:PORT` URL.
    #[error("bad oxvirtd URL '{url}': {detail}")]
    InvalidUrl { url: String, detail: String },
    /// The TLS connection to a remote oxvirtd failed (handshake, certificate not trusted).
    #[error("cannot talk TLS to oxvirtd at {endpoint}: {detail}")]
    Tls { endpoint: String, detail: String },
    /// The CA file given to check the server's certificate is unusable.
    #[error("CA file {}: {detail}", path.display())]
    CaFile { path: PathBuf, detail: String },
    /// ssh to another host's oxvirtd failed (`oxvirt+ssh://`: unreachable, refused, its host
    /// key unknown, or its `oxvirt tunnel-socket` could not reach the socket).
    #[error("cannot reach oxvirtd on {destination} through ssh: {detail}")]
    Ssh { destination: String, detail: String },
    /// The remote oxvirtd's certificate is not the one recorded at the first connection.
    #[error(
        "the certificate of oxvirtd at {endpoint} has changed: its SHA-256 fingerprint is \
         {seen}, but {} records {expected}. This may be an attack; if the server's certificate \
         was replaced on purpose, delete the line for {endpoint} from {} and connect again \
         (or use --ca)",
        known_hosts.display(),
        known_hosts.display()
    )]
    CertificateChanged {
        endpoint: String,
        expected: String,
        seen: String,
        known_hosts: PathBuf,
    },
}

impl ClientError {
    /// The API error code, if the daemon answered with an error.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// An oxvirtd client. Each call opens its own connection, so a `Client` is cheap to clone and
/// calls may run concurrently. It talks to the local oxvirtd over its Unix socket, or, made
/// with [`Client::remote`], to one on another host over TLS.
#[derive(Debug, Clone)]
pub struct Client {
    /// The Unix socket; for a remote oxvirtd its URL (what messages name).
    socket: PathBuf,
    /// The transport: `None` the Unix socket, else TLS to a remote oxvirtd.
    tls: Option<std::sync::Arc<remote::TlsTransport>>,
    /// Or a remote oxvirtd's socket through ssh (`oxvirt+ssh://`).
    ssh: Option<std::sync::Arc<ssh::SshTransport>>,
}

/// What [`Client::migration_stream`] does to the TCP socket of its TLS connection before using
/// it (the caller's keepalive and timeouts).
pub type TcpSocketHook = dyn Fn(std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> + Send + Sync;

/// One connection's byte stream, whichever the transport.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Connection for T {}

impl Default for Client {
    fn default() -> Self {
        Client::new(DEFAULT_SOCKET)
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            tls: None,
            ssh: None,
        }
    }

    /// A client of the oxvirtd at `url` (`https://HOST:PORT`), whose certificate `trust`
    /// checks, sending `credentials` with every request.
    pub fn remote(
        url: &str,
        trust: &remote::Trust,
        credentials: Option<&remote::Credentials>,
    ) -> Result<Client, ClientError> {
        let endpoint = remote::Endpoint::parse(url)?;
        Ok(Client {
            socket: PathBuf::from(endpoint.url()),
            tls: Some(std::sync::Arc::new(remote::TlsTransport::new(
                endpoint,
                trust,
                credentials,
            )?)),
            ssh: None,
        })
    }

    /// A client of another host's oxvirtd through ssh (`oxvirt+ssh://...`, [`ssh`]): each
    /// connection is an ssh child process.
    pub fn ssh(uri: &str) -> Result<Client, ClientError> {
        let destination = SshDestination::parse(uri)?;
        Ok(Client {
            socket: PathBuf::from(destination.url()),
            tls: None,
            ssh: Some(std::sync::Arc::new(ssh::SshTransport { destination })),
        })
    }

    /// The Unix socket, or for a remote oxvirtd its URL.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether this client talks to a remote oxvirtd (over TLS or ssh).
    pub fn is_remote(&self) -> bool {
        self.tls.is_some() || self.ssh.is_some()
    }

    /// `GET /v1/version`.
    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        self.call(Method::GET, "/v1/version".to_string(), None)
            .await
    }

    /// `GET /v1/domains`.
    pub async fn list_domains(&self) -> Result<Vec<DomainSummary>, ClientError> {
        self.call(Method::GET, "/v1/domains".to_string(), None)
            .await
    }

    /// `POST /v1/domains`: define (create, or update an inactive domain with the same name and uuid).
    pub async fn define_domain(&self, xml: &str) -> Result<DomainSummary, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, "/v1/domains".to_string(), Some(body))
            .await
    }

    /// `GET /v1/domains/{id}`; `id` is a name or UUID.
    pub async fn domain_info(&self, id: &str) -> Result<DomainInfo, ClientError> {
        self.call(Method::GET, domain_path(id, ""), None).await
    }

    /// `GET /v1/domains/{id}/xml`: the normalized definition.
    pub async fn domain_xml(&self, id: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, domain_path(id, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `GET /v1/domains/{id}/inactive-xml`: the definition for the next start (`dumpxml
    /// --inactive`): what `define` gave while the domain ran, else its definition.
    pub async fn domain_inactive_xml(&self, id: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, domain_path(id, "/inactive-xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `PUT /v1/domains/{id}/xml`: replace the definition (name and uuid must stay the same).
    pub async fn replace_domain_xml(
        &self,
        id: &str,
        xml: &str,
    ) -> Result<DomainSummary, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::PUT, domain_path(id, "/xml"), Some(body))
            .await
    }

    /// `DELETE /v1/domains/{id}`: undefine an inactive domain. Returns what was removed.
    /// A domain with an NVRAM file is refused unless `nvram` says what to do with it.
    pub async fn undefine_domain(
        &self,
        id: &str,
        nvram: Option<NvramOnUndefine>,
    ) -> Result<DomainSummary, ClientError> {
        self.undefine_domain_with(
            id,
            &UndefineOptions {
                nvram,
                ..UndefineOptions::default()
            },
        )
        .await
    }

    /// `DELETE /v1/domains/{id}` with every undefine option.
    pub async fn undefine_domain_with(
        &self,
        id: &str,
        options: &UndefineOptions,
    ) -> Result<DomainSummary, ClientError> {
        let mut query: Vec<&str> = Vec::new();
        match options.nvram {
            None => {}
            Some(NvramOnUndefine::Remove) => query.push("nvram=remove"),
            Some(NvramOnUndefine::Keep) => query.push("nvram=keep"),
        }
        if options.snapshots_metadata {
            query.push("snapshots_metadata=true");
        }
        if options.managed_save {
            query.push("managed_save=true");
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        self.call(Method::DELETE, domain_path(id, &query), None)
            .await
    }

    /// `POST /v1/domains/{id}/{action}` without a body.
    pub async fn action(&self, id: &str, action: Action) -> Result<DomainSummary, ClientError> {
        let path = domain_path(id, &format!("/{}", action.as_str()));
        self.call(Method::POST, path, None).await
    }

    pub async fn start(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Start).await
    }

    /// Press the ACPI power button. With `timeout_secs`, wait until the domain is off (error
    /// `timeout` if it is not within that time); without, return once the request was sent.
    pub async fn shutdown(
        &self,
        id: &str,
        timeout_secs: Option<u64>,
    ) -> Result<DomainSummary, ClientError> {
        let body = to_json(&ShutdownRequest { timeout_secs });
        self.call(Method::POST, domain_path(id, "/shutdown"), Some(body))
            .await
    }

    pub async fn destroy(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Destroy).await
    }

    pub async fn reboot(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Reboot).await
    }

    pub async fn reset(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Reset).await
    }

    pub async fn suspend(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Suspend).await
    }

    pub async fn resume(&self, id: &str) -> Result<DomainSummary, ClientError> {
        self.action(id, Action::Resume).await
    }

    /// `PUT /v1/domains/{id}/autostart`.
    pub async fn set_autostart(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<DomainSummary, ClientError> {
        let body = to_json(&AutostartRequest { enabled });
        self.call(Method::PUT, domain_path(id, "/autostart"), Some(body))
            .await
    }

    /// One request on a fresh connection; decodes a `T` from a 2xx reply, an [`ApiError`] otherwise.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(method, &path, body).await?;
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(format!("reply to {path}: {e}")))
        } else {
            Err(self.error_reply(&path, status, &bytes))
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let content_type = body.is_some().then_some("application/json");
        let body = Full::new(Bytes::from(body.unwrap_or_default()));
        let response = self.send(method, path, body, content_type).await?;
        let status = response.status();
        Ok((status, self.reply_body(path, response).await?))
    }

    /// The whole body of a (short: JSON) reply.
    pub(crate) async fn reply_body(
        &self,
        path: &str,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(format!("reading reply to {path}: {e}")))?
            .to_bytes())
    }

    /// Sends one request with any body (a JSON document, or a stream of image bytes) on a fresh
    /// connection and returns the response with its body still unread.
    pub(crate) async fn send<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.send_request(method, path, body, content_type, None, None)
            .await
    }

    /// A fresh connection over this client's transport; over TLS, its TCP socket handed to
    /// `tcp_socket` first (to set options on it).
    /// Through ssh, also what ssh says (why it failed, if it did).
    async fn connect(
        &self,
        tcp_socket: Option<&TcpSocketHook>,
    ) -> Result<(Box<dyn Connection>, Option<ssh::SshStderr>), ClientError> {
        if let Some(ssh) = &self.ssh {
            let (stream, stderr) = ssh.connect()?;
            return Ok((Box::new(stream), Some(stderr)));
        }
        if let Some(tls) = &self.tls {
            let stream = tls.connect().await?;
            if let Some(hook) = tcp_socket {
                hook(stream.get_ref().0.as_fd())
                    .map_err(|e| self.protocol(format!("setting up the connection: {e}")))?;
            }
            return Ok((Box::new(stream), None));
        }
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            use std::io::ErrorKind;
            match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    ClientError::DaemonNotRunning {
                        socket: self.socket.clone(),
                    }
                }
                _ => ClientError::Connect {
                    socket: self.socket.clone(),
                    source: e,
                },
            }
        })?;
        Ok((Box::new(stream), None))
    }

    /// [`Client::send`], asking to switch to `upgrade`'s protocol if given.
    pub(crate) async fn send_request<B>(
        &self,
        method: Method,
        path: &str,
        body: B,
        content_type: Option<&str>,
        upgrade: Option<&str>,
        tcp_socket: Option<&TcpSocketHook>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (stream, ssh_stderr) = self.connect(tcp_socket).await?;
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(e) => {
                    let detail = format!("HTTP handshake: {e}");
                    return Err(match ssh_stderr {
                        Some(stderr) => stderr.error(detail).await,
                        None => self.protocol(detail),
                    });
                }
            };
        // The connection future drives the socket; it ends when the exchange is done (or, for
        // an upgrade, hands the socket over to it).
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });

        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "oxvirtd");
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(authorization) = self.tls.as_ref().and_then(|tls| tls.authorization()) {
            builder = builder.header(hyper::header::AUTHORIZATION, authorization);
        }
        if let Some(protocol) = upgrade {
            builder = builder
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, protocol);
        }
        let request = builder
            .body(body)
            .map_err(|e| self.protocol(format!("building request for {path}: {e}")))?;
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            // ssh failed (it exits, closing the stream): its own words say why.
            Err(e) if ssh_stderr.is_some() => match ssh_stderr {
                Some(stderr) => Err(stderr.error(format!("request {path}: {e}")).await),
                None => Err(self.protocol(format!("request {path}: {e}"))),
            },
            Err(e) => {
                let hint = if closed_unanswered(&e) {
                    " (oxvirtd closed the connection without an answer: it closes those beyond \
                     its max_clients at once; see its log)"
                } else {
                    ""
                };
                Err(self.protocol(format!("request {path}: {e}{hint}")))
            }
        }
    }

    /// An error reply (`status` not 2xx) as the [`ClientError`] it is.
    pub(crate) fn error_reply(&self, path: &str, status: StatusCode, bytes: &[u8]) -> ClientError {
        match serde_json::from_slice::<ApiError>(bytes) {
            Ok(api_error) => ClientError::Api(api_error),
            Err(_) => self.protocol(format!(
                "{path} answered HTTP {status}: {}",
                String::from_utf8_lossy(bytes).trim()
            )),
        }
    }

    pub(crate) fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            detail,
        }
    }
}

/// Whether the daemon closed the connection before answering (it does so with the connections
/// beyond its `max_clients`, or when it stops mid-request).
fn closed_unanswered(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_closed() || err.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            return matches!(
                io.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys, no custom impls).
    serde_json::to_vec(value).unwrap_or_default()
}

/// `/v1/domains/<percent-encoded id><suffix>`.
fn domain_path(id: &str, suffix: &str) -> String {
    format!("/v1/domains/{}{suffix}", percent_encode_segment(id))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any domain name is one
/// path segment.
pub fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_state_uses_virsh_words_on_the_wire_and_in_display() {
        for (state, word) in [
            (DomainState::Running, "running"),
            (DomainState::Paused, "paused"),
            (DomainState::ShutOff, "shut off"),
            (DomainState::Crashed, "crashed"),
            (DomainState::InShutdown, "in shutdown"),
            (DomainState::PmSuspended, "pmsuspended"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(state.to_string(), word);
            let back: DomainState = serde_json::from_str(&format!("\"{word}\"")).unwrap();
            assert_eq!(back, state);
        }
    }

    #[test]
    fn percent_encoding_keeps_a_name_in_one_segment() {
        assert_eq!(percent_encode_segment("web-1.x_y~"), "web-1.x_y~");
        assert_eq!(percent_encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn shutdown_request_without_timeout_is_an_empty_object() {
        assert_eq!(to_json(&ShutdownRequest::default()), b"{}");
        let parsed: ShutdownRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed.timeout_secs, None);
    }

    #[test]
    fn api_error_displays_its_message() {
        let e = ApiError::new(code::INVALID_STATE, "domain 'web1' is already running");
        assert_eq!(e.to_string(), "domain 'web1' is already running");
        assert_eq!(e.http_status(), 409);
    }

    #[tokio::test]
    async fn missing_socket_means_daemon_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nope.sock");
        let err = Client::new(&socket).version().await.unwrap_err();
        assert!(
            matches!(err, ClientError::DaemonNotRunning { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to oxvirtd at {}: is it running?",
                socket.display()
            )
        );
    }
}
