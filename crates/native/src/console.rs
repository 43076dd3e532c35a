//! The console relay: the VMM's serial socket has one client and drops output while none is
//! connected, so the engine keeps a relay connected to it. The relay appends everything the
//! guest prints to `console.log` and serves `console.sock` to any number of clients, whose
//! input goes to the serial port. `console.log` rotates (oxvirt-logfile, the guest log
//! settings): the relay writes it directly, as it lives in oxvirtd. While oxvirtd restarts no
//! relay runs and the VMM drops what the guest prints (as before: the VMM's serial socket keeps
//! nothing without a client); the next oxvirtd's relay appends to the same files.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use oxvirt_host::lock;
use oxvirt_logfile::{RotatingFile, Rotation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use crate::paths::RunPaths;

/// The run directories whose relay runs (one relay per VM, also across reconnects).
#[derive(Clone, Default)]
pub(crate) struct Relays {
    running: Arc<Mutex<HashSet<PathBuf>>>,
    /// How console.log rotates.
    rotation: Rotation,
}

impl Relays {
    pub(crate) fn new(rotation: Rotation) -> Relays {
        Relays {
            running: Arc::default(),
            rotation,
        }
    }

    pub(crate) fn is_running(&self, run: &RunPaths) -> bool {
        lock(&self.running).contains(&run.dir)
    }

    /// Connects the relay of `run` unless it runs already (after a daemon restart it does not).
    pub(crate) async fn ensure(&self, run: &RunPaths) {
        if self.is_running(run) {
            return;
        }
        match UnixStream::connect(run.serial_socket()).await {
            Ok(serial) => self.start(run, serial),
            Err(err) => tracing::warn!(
                "cannot connect to the guest console {}: {err}",
                run.serial_socket().display()
            ),
        }
    }

    /// Tries once to connect the relay; true when it runs.
    pub(crate) async fn try_start(&self, run: &RunPaths) -> bool {
        if !self.is_running(run) {
            if let Ok(serial) = UnixStream::connect(run.serial_socket()).await {
                self.start(run, serial);
            }
        }
        self.is_running(run)
    }

    fn start(&self, run: &RunPaths, serial: UnixStream) {
        if !lock(&self.running).insert(run.dir.clone()) {
            return;
        }
        let running = self.running.clone();
        let run = run.clone();
        let rotation = self.rotation;
        tokio::spawn(async move {
            if let Err(err) = relay(serial, &run, rotation).await {
                tracing::warn!("console relay of {}: {err}", run.dir.display());
            }
            let _ = std::fs::remove_file(run.console_socket());
            lock(&running).retain(|dir| !run.is(dir));
        });
    }
}

/// Copies the VMM's serial output to the console log and to every client of the console
/// socket, and the clients' input to the serial port, until the VMM closes the serial socket.
async fn relay(serial: UnixStream, run: &RunPaths, rotation: Rotation) -> std::io::Result<()> {
    let socket = run.console_socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut log = RotatingFile::open(&run.console_log(), rotation)?;
    let (mut serial_in, serial_out) = serial.into_split();
    let serial_out = Arc::new(tokio::sync::Mutex::new(serial_out));
    let (output_tx, _) = broadcast::channel::<Arc<[u8]>>(1024);

    let accept = {
        let output_tx = output_tx.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve_client(
                    client,
                    output_tx.subscribe(),
                    serial_out.clone(),
                ));
            }
        })
    };
    let mut buf = vec![0u8; 4096];
    let result = loop {
        match serial_in.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                // The log is best effort: a full disk must not stop the console.
                log.write_stream(&buf[..n]);
                if let Some(err) = log.take_error() {
                    tracing::warn!("console log of {}: {err}", run.dir.display());
                }
                let _ = output_tx.send(Arc::from(&buf[..n]));
            }
            Err(err) => break Err(err),
        }
    };
    accept.abort();
    // Dropping the sender ends every client's output task, which closes its connection.
    drop(output_tx);
    result
}

async fn serve_client(
    client: UnixStream,
    mut output: broadcast::Receiver<Arc<[u8]>>,
    serial_out: Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>,
) {
    let (mut client_in, mut client_out) = client.into_split();
    let input = tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        loop {
            match client_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if serial_out.lock().await.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    loop {
        match output.recv().await {
            Ok(bytes) => {
                if client_out.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            // A slow client misses output rather than holding the guest back.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    input.abort();
    let _ = client_out.shutdown().await;
}
