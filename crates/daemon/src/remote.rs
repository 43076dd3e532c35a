//! The API over TLS on TCP (`--listen ADDR:PORT`, docs/remote.md): the same router as the Unix
//! socket's, behind `api/auth.rs`'s authentication, never in plain text.
//!
//! The certificate is the operator's (`--tls-cert`/`--tls-key`) or one oxvirtd makes on its
//! first start: self-signed, for `localhost`, the host's name and the listen address, kept in
//! `STATE_DIR/tls/` (key mode 0600) so that clients that trusted it on first use keep trusting
//! it after a restart. Each connection's TLS handshake runs in its own task with a deadline, so
//! a client that stalls holds nothing but its own connection; connections count against
//! `max_clients` like the socket's.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::auth::{Local, Peer};
use crate::clients::Clients;

/// The generated certificate and key, under the state directory.
pub const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server.key";

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait, its handshake done, before a request's headers have all
/// come: a client that connects and says nothing (or too little) is closed then, so idle
/// connections cannot hold `max_clients`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS listener, bound and with its certificate loaded: everything that can fail at start
/// has failed here, before oxvirtd says it is listening.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    /// The certificate file in use (for the log).
    pub cert: PathBuf,
}

impl TlsListener {
    /// Binds `address` and loads `files` (certificate, key), or the generated pair (made now
    /// if missing).
    pub async fn bind(
        address: SocketAddr,
        files: Option<&(PathBuf, PathBuf)>,
        state_dir: &Path,
    ) -> anyhow::Result<TlsListener> {
        let (cert, key) = match files {
            Some((cert, key)) => (cert.clone(), key.clone()),
            None => generated_pair(state_dir, address)?,
        };
        let config = server_config(&cert, &key)?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (--listen)"))?;
        Ok(TlsListener {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped; each is served by `app` with its peer's
    /// address in the request's extensions (for auth's rate limits).
    pub async fn serve(self, app: Router, clients: Arc<Clients>) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accepting a TLS connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(guard) = clients.admit() else {
                tracing::warn!(
                    "too many active clients ({}), dropping connection from {peer}",
                    clients.max()
                );
                continue;
            };
            // The address the client reached (a migration's ports listen there).
            let local = match tcp.local_addr() {
                Ok(local) => local.ip(),
                Err(err) => {
                    tracing::warn!(%peer, "the connection's local address: {err}");
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::info!(%peer, "TLS handshake failed: {err}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service =
                    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(Peer(peer.ip()));
                        request.extensions_mut().insert(Local(local));
                        let mut app = app.clone();
                        async move { tower_service::Service::call(&mut app, request).await }
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(IDLE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, "TLS connection ended: {err}");
                }
            });
        }
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {} is not PEM certificates", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {} holds no PEM certificate", cert.display());
    }
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read --tls-key {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("--tls-key {} holds no PEM private key", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair",
                cert.display(),
                key.display()
            )
        })
}

/// `STATE_DIR/tls/server.pem` and `server.key`, made self-signed if either is missing.
fn generated_pair(state_dir: &Path, address: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = state_dir.join(TLS_DIR);
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    crate::state_dir::create_private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = host_name() {
        names.push(host);
    }
    if !address.ip().is_unspecified() {
        names.push(address.ip().to_string());
    }
    names.dedup();
    let made = rcgen::generate_simple_self_signed(names)
        .context("making a self-signed TLS certificate")?;
    // The key first, created 0600 from the start: never readable by others, not even briefly.
    write_new(&key, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, made.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(
        cert = %cert.display(),
        fingerprint = %oxvirt_api::remote::fingerprint_text(made.cert.der()),
        "made a self-signed TLS certificate"
    );
    Ok((cert, key))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    // Only a name a certificate can carry as a DNS name; anything else is left out, not fatal.
    let usable = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    usable.then(|| name.to_string())
}
