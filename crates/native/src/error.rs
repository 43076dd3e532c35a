//! The native engine's error type.

use std::path::PathBuf;

use oxvirt_domain::SourceLine;

use crate::VMM_BINARY;

/// One thing in a domain the native engine cannot honour: `element` names it as in the XML,
/// `line` is where it was written (none for an element the normalizer added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub element: String,
    pub line: Option<u32>,
    pub reason: String,
}

/// `<disk> vda: device='cdrom' at line 14 (no CD-ROM; use a virtio disk)`, or `... (added by
/// default) (...)` for an element the definition did not contain.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = SourceLine::from(self.line);
        write!(f, "{} {line} ({})", self.element, self.reason)
    }
}

/// Everything that can go wrong while running a domain on `oxvirt-vmm`.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The definition asks for what the engine cannot do; every offending element is named.
    #[error(
        "the native engine (<oxvirt:engine name='native'/>) cannot run: {}",
        refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Unsupported { refusals: Vec<Refusal> },

    /// The host has no hardware KVM (for example `kvm_pvm`); `reason` says what the probe saw.
    #[error(
        "the native engine needs hardware KVM and this host has none ({reason}); it cannot \
         emulate a CPU: run the domain with the QEMU engine (remove <oxvirt:engine name='native'/>)"
    )]
    NoHardwareKvm { reason: String },

    /// Resetting in place is not something the VMM can do.
    #[error("the native engine cannot reset a guest in place; use reboot, or destroy and start")]
    ResetUnsupported,

    /// A launch got a domain whose interface has no TAP device yet.
    #[error("<interface> #{index} has no TAP device (the network layer did not create one)")]
    NoTap { index: usize },

    /// A launch got a disk without a file (a volume the daemon did not resolve).
    #[error("<disk> {dev} has no <source>")]
    NoDiskSource { dev: String },

    #[error("{VMM_BINARY} was found neither next to oxvirtd nor in PATH")]
    VmmNotFound,

    /// Every id of the jailed VMMs' range is held by a running guest.
    #[error(
        "every user id of native_user_range ({first}-{last}) is taken by a running guest: \
         widen the range in oxvirtd's configuration"
    )]
    NoFreeUser { first: u32, last: u32 },

    /// A file in the run directory could not be written or read.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run {}: {source}", vmm.display())]
    Spawn {
        vmm: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The VMM ended before it served its API; `message` is its own error.
    #[error("{VMM_BINARY} exited at start: {message}")]
    EarlyExit { message: String },

    #[error("{VMM_BINARY} (pid {pid}) did not open its API socket within {seconds} s")]
    StartTimeout { pid: u32, seconds: u64 },

    #[error("no VMM pid recorded in {}", path.display())]
    NoPid { path: PathBuf },

    /// The API socket could not be reached or closed early.
    #[error("{VMM_BINARY} API {}: {reason}", socket.display())]
    Api { socket: PathBuf, reason: String },

    #[error("{VMM_BINARY} did not answer '{command}' within {seconds} s")]
    Timeout { command: String, seconds: u64 },

    /// The VMM answered something the protocol does not allow.
    #[error("{VMM_BINARY} sent an unreadable answer to '{command}': {reason}")]
    Protocol { command: String, reason: String },

    /// The VMM refused the request, saying why.
    #[error("{VMM_BINARY} refused '{command}': {reason}")]
    Refused { command: String, reason: String },
}

impl NativeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> NativeError {
        NativeError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the error means "the engine cannot do what is asked" (as opposed to a failure).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            NativeError::Unsupported { .. }
                | NativeError::NoHardwareKvm { .. }
                | NativeError::ResetUnsupported
                | NativeError::NoDiskSource { .. }
        )
    }
}
