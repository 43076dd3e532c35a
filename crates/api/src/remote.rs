//! A remote oxvirtd: the same API over TLS on TCP (`oxvirtd --listen`, docs/remote.md).
//!
//! [`Client::remote`](crate::Client::remote) makes a client whose requests go to
//! `https://HOST:PORT` instead of a Unix socket, each with the caller's credentials (a bearer
//! token or a user's password as HTTP Basic). The server's certificate is checked either against
//! a CA file (`--ca`) or against a SHA-256 fingerprint recorded at the first connection (trust on
//! first use: the CLI keeps the fingerprints; [`fingerprint`] reads one).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::ClientError;

/// How long a TCP connection and its TLS handshake may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates (PEM) of the CA that signed the server's, or the server's own.
    Ca(PathBuf),
    /// The same, the PEM text itself (a migration's source gets it from the client).
    CaPem(Vec<u8>),
    /// The server's certificate must have this SHA-256 fingerprint ([`fingerprint_text`]'s
    /// form), as recorded in `known_hosts` (named in the error when it differs).
    Pinned {
        fingerprint: String,
        known_hosts: PathBuf,
    },
}

/// Who the client is to the remote oxvirtd.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: Bearer TOKEN` (`oxvirt token create`).
    Token(String),
    /// A user's password, as HTTP Basic.
    Password { user: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself, not even in a debug print.
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
        }
    }
}

impl Credentials {
    /// The `Authorization` header's value.
    pub fn header(&self) -> String {
        match self {
            Credentials::Token(token) => format!("Bearer {token}"),
            Credentials::Password { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        }
    }
}

/// `https://HOST:PORT` taken apart: the host (without brackets) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://HOST:PORT` (a trailing `/` allowed; IPv6 in brackets). Nothing else: a
    /// plain `http://` URL is refused, the API never travels unencrypted.
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |detail: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            detail: detail.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("it must start with https:// (the remote API speaks only TLS)"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(bad("expected https://HOST:PORT, with no path or user"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => v6
                .split_once("]:")
                .ok_or_else(|| bad("expected https://[IPV6]:PORT"))?,
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| bad("the port is missing (https://HOST:PORT)"))?,
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// `HOST:PORT` as `known_hosts` keys it (IPv6 in brackets).
    pub fn key(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.key())
    }
}

/// The TLS side of a [`Client`](crate::Client): where, how the server is trusted, and the
/// credentials every request carries.
pub(crate) struct TlsTransport {
    endpoint: Endpoint,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    authorization: Option<String>,
    /// Set when the server's certificate is pinned; tells a changed certificate from other
    /// handshake failures.
    pin: Option<Arc<Pinning>>,
    pinned_file: Option<PathBuf>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the credentials.
        f.debug_struct("TlsTransport")
            .field("endpoint", &self.endpoint)
            .field("pinned_file", &self.pinned_file)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(endpoint: &Endpoint, detail: impl std::fmt::Display) -> ClientError {
    ClientError::Tls {
        endpoint: endpoint.url(),
        detail: detail.to_string(),
    }
}

impl TlsTransport {
    pub(crate) fn new(
        endpoint: Endpoint,
        trust: &Trust,
        credentials: Option<&Credentials>,
    ) -> Result<TlsTransport, ClientError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&endpoint, e))?;
        let (config, pin, pinned_file) = match trust {
            Trust::Ca(path) => {
                let config = builder.with_root_certificates(roots(path, read_certificates(path)?)?);
                (config.with_no_client_auth(), None, None)
            }
            Trust::CaPem(pem) => {
                let path = Path::new("(the CA certificates given)");
                let config =
                    builder.with_root_certificates(roots(path, parse_certificates(path, pem)?)?);
                (config.with_no_client_auth(), None, None)
            }
            Trust::Pinned {
                fingerprint,
                known_hosts,
            } => {
                let pin = Arc::new(Pinning::new(Some(fingerprint.clone()), provider));
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(pin.clone())
                    .with_no_client_auth();
                (config, Some(pin), Some(known_hosts.clone()))
            }
        };
        Ok(TlsTransport {
            server_name: server_name(&endpoint)?,
            connector: TlsConnector::from(Arc::new(config)),
            endpoint,
            authorization: credentials.map(Credentials::header),
            pin,
            pinned_file,
        })
    }

    pub(crate) fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// A TCP connection with its TLS handshake done.
    pub(crate) async fn connect(&self) -> Result<TlsStream<TcpStream>, ClientError> {
        let tcp = tcp_connect(&self.endpoint).await?;
        let handshake = self.connector.connect(self.server_name.clone(), tcp);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => {
                if let (Some(pin), Some(file)) = (&self.pin, &self.pinned_file) {
                    if let Some(seen) = pin.mismatch() {
                        return Err(ClientError::CertificateChanged {
                            endpoint: self.endpoint.key(),
                            expected: pin.expected.clone().unwrap_or_default(),
                            seen,
                            known_hosts: file.clone(),
                        });
                    }
                }
                Err(tls_error(&self.endpoint, format!("TLS handshake: {err}")))
            }
            Err(_) => Err(tls_error(&self.endpoint, "the TLS handshake timed out")),
        }
    }
}

/// A root store of `certs` (read from `path`, which errors name).
fn roots(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| ClientError::CaFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn server_name(endpoint: &Endpoint) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(endpoint.host.clone()).map_err(|e| ClientError::InvalidUrl {
        url: endpoint.url(),
        detail: format!("'{}' is not a host name or address: {e}", endpoint.host),
    })
}

async fn tcp_connect(endpoint: &Endpoint) -> Result<TcpStream, ClientError> {
    let address = (endpoint.host.as_str(), endpoint.port);
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ClientError::DaemonNotRunning {
                socket: PathBuf::from(endpoint.url()),
            })
        }
        Ok(Err(err)) => Err(ClientError::Connect {
            socket: PathBuf::from(endpoint.url()),
            source: err,
        }),
        Err(_) => Err(tls_error(endpoint, "connecting timed out")),
    }
}

/// Every certificate in a PEM file.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bad = |detail: String| ClientError::CaFile {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse_certificates(path, &text)
}

/// Every certificate in PEM `text` (read from `path`, which errors name).
fn parse_certificates(
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bad = |detail: String| ClientError::CaFile {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".to_string()));
    }
    Ok(certs)
}

/// The SHA-256 fingerprint of a certificate (DER), as `AB:CD:...` (as `openssl x509
/// -fingerprint -sha256` prints it).
pub fn fingerprint_text(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the certificate the server at `endpoint` presents, read in a handshake
/// that trusts it for nothing else (no request is sent): the first step of trust on first use.
pub async fn fingerprint(endpoint: &Endpoint) -> Result<String, ClientError> {
    let pin = Arc::new(Pinning::new(None, provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(endpoint, e))?
        .dangerous()
        .with_custom_certificate_verifier(pin.clone())
        .with_no_client_auth();
    let tcp = tcp_connect(endpoint).await?;
    let handshake = TlsConnector::from(Arc::new(config)).connect(server_name(endpoint)?, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(_stream)) => {}
        Ok(Err(err)) => return Err(tls_error(endpoint, format!("TLS handshake: {err}"))),
        Err(_) => return Err(tls_error(endpoint, "the TLS handshake timed out")),
    }
    pin.seen()
        .ok_or_else(|| tls_error(endpoint, "the server presented no certificate"))
}

/// A verifier that trusts one certificate by its fingerprint (or, with none expected, records
/// the fingerprint it saw). The handshake's signatures are still checked against that
/// certificate's key, so a peer that merely replays the certificate fails.
#[derive(Debug)]
struct Pinning {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl Pinning {
    fn new(expected: Option<String>, provider: Arc<CryptoProvider>) -> Pinning {
        Pinning {
            expected,
            seen: Mutex::new(None),
            provider,
        }
    }

    fn seen(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fingerprint seen, if it is not the expected one.
    fn mismatch(&self) -> Option<String> {
        let seen = self.seen()?;
        (Some(&seen) != self.expected.as_ref()).then_some(seen)
    }
}

impl ServerCertVerifier for Pinning {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint_text(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen.clone());
        match &self.expected {
            None => Ok(ServerCertVerified::assertion()),
            Some(expected) if expected.eq_ignore_ascii_case(&seen) => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_https_urls_only() {
        assert_eq!(
            Endpoint::parse("https://127.0.0.1:16514").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 16514
            }
        );
        let v6 = Endpoint::parse("https://[::1]:8443/").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.key(), "[::1]:8443");
        for bad in [
            "http://h:1",
            "https://h",
            "https://h:0",
            "https://h:x",
            "https://:1",
            "https://h:1/v1",
            "https://u@h:1",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let token = Credentials::Token("s3cret".into());
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(token.header(), "Bearer s3cret");
        let basic = Credentials::Password {
            user: "ann".into(),
            password: "pw".into(),
        };
        assert!(!format!("{basic:?}").contains("pw\""));
        assert_eq!(basic.header(), "Basic YW5uOnB3");
    }

    #[test]
    fn fingerprint_is_colon_separated_upper_hex() {
        let fp = fingerprint_text(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF"), "{fp}");
    }
}
