//! A QMP (QEMU Machine Protocol) client.
//!
//! One connection carries both command responses and asynchronous events. A reader task owns the
//! read half: it hands each response to the caller waiting for that command `id` and each event to
//! the event channel. When the connection closes (normally because QEMU exited) the reader task
//! ends, every pending command fails with [`QemuError::Disconnected`] and the event receiver
//! yields `None`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxvirt_host::lock;
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::QemuError;

/// How long we wait for QEMU's greeting. QEMU serves one QMP client at a time; a second client
/// waits in the listen backlog without a greeting, which this bound turns into an error.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command may take before we give up on it. QMP commands that do long work
/// (migration, block jobs) return at once and report completion through events.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// QMP messages are single JSON lines; a line longer than this is treated as a protocol error
/// rather than buffered without bound (events can carry guest-provided strings).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;

/// The VM's run state as `query-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    /// Waiting for `cont` after start with `-S`.
    Prelaunch,
    /// The guest shut down and QEMU stays (only with `-no-shutdown`).
    Shutdown,
    /// Paused after an outgoing migration completed; `cont` runs it here again (after a
    /// migration whose destination did not take the guest).
    PostMigrate,
    GuestPanicked,
    InternalError,
    IoError,
    Suspended,
    Watchdog,
    Debug,
    /// Any of QEMU's other states (migration, snapshot, ...), by QEMU's name.
    Other(String),
}

impl RunState {
    fn from_qmp(status: &str) -> RunState {
        match status {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "prelaunch" => RunState::Prelaunch,
            "shutdown" => RunState::Shutdown,
            "postmigrate" => RunState::PostMigrate,
            "guest-panicked" => RunState::GuestPanicked,
            "internal-error" => RunState::InternalError,
            "io-error" => RunState::IoError,
            "suspended" => RunState::Suspended,
            "watchdog" => RunState::Watchdog,
            "debug" => RunState::Debug,
            other => RunState::Other(other.to_string()),
        }
    }
}

/// An asynchronous QMP event, the ones the daemon acts on spelled out.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpEvent {
    /// The VM is shutting down: `guest` is true when the guest asked (e.g. poweroff), `reason`
    /// is QEMU's reason (`guest-shutdown`, `host-qmp-quit`, `guest-reset` with -no-reboot, ...).
    Shutdown { guest: bool, reason: String },
    /// The VM was reset; `guest` is true when the guest asked for it (e.g. `reboot`).
    Reset { guest: bool },
    /// Execution stopped (QMP `stop`, I/O error, ...).
    Stop,
    /// Execution resumed.
    Resume,
    /// The guest reported a panic (needs a pvpanic device).
    GuestPanicked,
    /// Any other event, with its data (`Value::Null` if it had none).
    Other { name: String, data: Value },
}

/// One event as QEMU sent it: what the daemon acts on ([`QmpEvent`]) and the whole of it, for
/// whoever follows the guest's monitor events (`qemu-monitor-event`).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEventMessage {
    pub event: QmpEvent,
    /// QEMU's name of the event (`STOP`, `SHUTDOWN`, ...).
    pub name: String,
    /// QEMU's timestamp: seconds and microseconds since the epoch (-1, -1 without one).
    pub seconds: i64,
    pub microseconds: i64,
    /// The message as QEMU wrote it (one JSON line, its members in QEMU's order).
    pub line: String,
}

impl QmpEvent {
    fn from_message(name: &str, data: Value) -> QmpEvent {
        let guest = data.get("guest").and_then(Value::as_bool).unwrap_or(false);
        match name {
            "SHUTDOWN" => QmpEvent::Shutdown {
                guest,
                reason: data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            "RESET" => QmpEvent::Reset { guest },
            "STOP" => QmpEvent::Stop,
            "RESUME" => QmpEvent::Resume,
            "GUEST_PANICKED" => QmpEvent::GuestPanicked,
            _ => QmpEvent::Other {
                name: name.to_string(),
                data,
            },
        }
    }
}

type Reply = Result<Value, QemuError>;

/// Commands sent and not yet answered, by id. `None` once the connection has closed.
type Pending = Arc<Mutex<Option<HashMap<u64, Waiter>>>>;

/// A caller waiting for the answer to the command it sent.
#[derive(Debug)]
struct Waiter {
    command: String,
    /// The answer as QEMU wrote it (a JSON string value holding the line), error or not.
    verbatim: bool,
    reply: oneshot::Sender<Reply>,
}

/// A connected QMP session (capabilities already negotiated).
#[derive(Debug)]
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Dropping the client closes the connection; the event receiver then ends.
        self.reader.abort();
    }
}

impl Qmp {
    /// Connect to a QMP socket, read the greeting and leave capabilities-negotiation mode.
    /// Returns the client and the receiver of the VM's asynchronous events.
    pub async fn connect(
        socket: &Path,
    ) -> Result<(Qmp, mpsc::UnboundedReceiver<QmpEventMessage>), QemuError> {
        let stream = UnixStream::connect(socket).await.map_err(|err| {
            QemuError::io(
                format!("connecting to QMP socket {}", socket.display()),
                err,
            )
        })?;
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);

        let greeting = tokio::time::timeout(GREETING_TIMEOUT, read_message(&mut reader))
            .await
            .map_err(|_| QemuError::Timeout {
                what: format!(
                    "the QMP greeting on {} (is another client connected?)",
                    socket.display()
                ),
                seconds: GREETING_TIMEOUT.as_secs(),
                log_tail: None,
            })??;
        if greeting.get("QMP").is_none() {
            return Err(QemuError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }

        write_message(&mut write_half, &json!({ "execute": "qmp_capabilities" })).await?;
        // In negotiation mode QEMU sends no events, so the next message is the answer.
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, read_message(&mut reader))
            .await
            .map_err(|_| QemuError::Timeout {
                what: "the answer to qmp_capabilities".into(),
                seconds: COMMAND_TIMEOUT.as_secs(),
                log_tail: None,
            })??;
        reply_to_result("qmp_capabilities", answer)?;

        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(reader, pending.clone(), events_tx));
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(write_half),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        };
        Ok((qmp, events_rx))
    }

    /// Run one QMP command and return its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        self.execute_passing(command, arguments, None).await
    }

    /// Hands QEMU the open file `fd` under `name` (QMP `getfd`: the descriptor travels with the
    /// command as SCM_RIGHTS ancillary data), for a later command to use as `fd:NAME`. QEMU
    /// keeps its own copy; the caller may close `fd` once this returns.
    pub async fn pass_fd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QemuError> {
        self.execute_passing(
            "getfd",
            Some(json!({ "fdname": name })),
            Some(fd.as_raw_fd()),
        )
        .await
        .map(drop)
    }

    /// Adds the open file `fd` to QEMU's descriptor set `set` (QMP `add-fd`; a new set when
    /// `None`), for a block node to open as `/dev/fdset/SET`; returns the set's id. QEMU keeps
    /// its own copy; the caller may close `fd` once this returns.
    pub async fn add_fd(&self, fd: BorrowedFd<'_>, set: Option<i64>) -> Result<i64, QemuError> {
        let arguments = match set {
            Some(set) => json!({ "fdset-id": set }),
            None => json!({}),
        };
        let reply = self
            .execute_passing("add-fd", Some(arguments), Some(fd.as_raw_fd()))
            .await?;
        reply["fdset-id"].as_i64().ok_or_else(|| {
            QemuError::Protocol(format!("add-fd answered without a set id: {reply}"))
        })
    }

    /// Runs one QMP command and returns QEMU's answer as QEMU wrote it, `return` or `error`
    /// (keys in QEMU's order, the id ours), for a user who speaks QMP through oxvirt
    /// (`qemu-monitor-command`).
    pub async fn execute_verbatim(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<String, QemuError> {
        match self.send(command, arguments, None, true).await? {
            Value::String(line) => Ok(line),
            other => Err(QemuError::Protocol(format!(
                "answer to {command} not kept verbatim: {other}"
            ))),
        }
    }

    /// [`Qmp::execute`], with `fd` attached to the command's bytes when given.
    async fn execute_passing(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<RawFd>,
    ) -> Result<Value, QemuError> {
        self.send(command, arguments, fd, false).await
    }

    async fn send(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<RawFd>,
        verbatim: bool,
    ) -> Result<Value, QemuError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            let Some(waiting) = pending.as_mut() else {
                return Err(QemuError::Disconnected);
            };
            waiting.insert(
                id,
                Waiter {
                    command: command.to_string(),
                    verbatim,
                    reply: reply_tx,
                },
            );
        }
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let sent = {
            let mut writer = self.writer.lock().await;
            match fd {
                None => write_message(&mut writer, &message).await,
                Some(fd) => write_message_with_fd(&mut writer, &message, fd).await,
            }
        };
        if let Err(err) = sent {
            self.forget(id);
            return Err(err);
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, reply_rx).await {
            Ok(Ok(reply)) => reply,
            // The reader dropped our sender: the connection closed.
            Ok(Err(_)) => Err(QemuError::Disconnected),
            Err(_) => {
                self.forget(id);
                Err(QemuError::Timeout {
                    what: format!("QEMU to answer {command}"),
                    seconds: COMMAND_TIMEOUT.as_secs(),
                    log_tail: None,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(waiting) = lock(&self.pending).as_mut() {
            waiting.remove(&id);
        }
    }

    /// The VM's current run state.
    pub async fn query_status(&self) -> Result<RunState, QemuError> {
        let status = self.execute("query-status", None).await?;
        let name = status
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| QemuError::Protocol(format!("query-status returned {status}")))?;
        Ok(RunState::from_qmp(name))
    }

    /// Pause the guest's vCPUs.
    pub async fn stop(&self) -> Result<(), QemuError> {
        self.execute("stop", None).await.map(drop)
    }

    /// Resume the guest's vCPUs.
    pub async fn cont(&self) -> Result<(), QemuError> {
        self.execute("cont", None).await.map(drop)
    }

    /// Press the ACPI power button; the guest decides whether to power off.
    pub async fn system_powerdown(&self) -> Result<(), QemuError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// Hard-reset the machine.
    pub async fn system_reset(&self) -> Result<(), QemuError> {
        self.execute("system_reset", None).await.map(drop)
    }

    /// Make QEMU exit at once. QEMU may close the connection before its answer arrives; that
    /// counts as success.
    pub async fn quit(&self) -> Result<(), QemuError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QemuError::Disconnected) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    pending: Pending,
    events: mpsc::UnboundedSender<QmpEventMessage>,
) {
    loop {
        let (message, line) = match read_line_message(&mut reader).await {
            Ok(read) => read,
            Err(QemuError::Disconnected) => break,
            Err(err) => {
                tracing::warn!("closing QMP connection: {err}");
                break;
            }
        };
        if let Some(name) = message.get("event").and_then(Value::as_str) {
            let data = message.get("data").cloned().unwrap_or(Value::Null);
            let stamp = |unit: &str| message["timestamp"][unit].as_i64().unwrap_or(-1);
            let received = QmpEventMessage {
                event: QmpEvent::from_message(name, data),
                name: name.to_string(),
                seconds: stamp("seconds"),
                microseconds: stamp("microseconds"),
                line: String::from_utf8_lossy(&line).trim_end().to_string(),
            };
            // A dropped receiver only means nobody listens for events; commands still work.
            let _ = events.send(received);
            continue;
        }
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            tracing::warn!("QMP message with neither event nor our id: {message}");
            continue;
        };
        let waiter = lock(&pending)
            .as_mut()
            .and_then(|waiting| waiting.remove(&id));
        match waiter {
            Some(waiter) => {
                let reply = if waiter.verbatim {
                    Ok(Value::String(
                        String::from_utf8_lossy(&line).trim_end().to_string(),
                    ))
                } else {
                    reply_to_result(&waiter.command, message)
                };
                let _ = waiter.reply.send(reply);
            }
            None => tracing::debug!("QMP answer to command #{id} that nobody waits for"),
        }
    }
    // Dropping the map drops every waiter's sender: they all see Disconnected.
    lock(&pending).take();
}

/// Turn `{"return": v}` into `Ok(v)` and `{"error": {...}}` into [`QemuError::Command`].
fn reply_to_result(command: &str, message: Value) -> Reply {
    if let Some(value) = message.get("return") {
        return Ok(value.clone());
    }
    if let Some(error) = message.get("error") {
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(QemuError::Command {
            command: command.to_string(),
            class: field("class"),
            desc: field("desc"),
        });
    }
    Err(QemuError::Protocol(format!(
        "answer to {command} has neither return nor error: {message}"
    )))
}

/// Read one newline-terminated JSON message. EOF before any byte is `Disconnected`.
async fn read_message<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Value, QemuError> {
    read_line_message(reader).await.map(|(message, _)| message)
}

/// [`read_message`], with the message's line as QEMU wrote it.
async fn read_line_message<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<(Value, Vec<u8>), QemuError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|err| QemuError::io("reading from QMP socket", err))?;
        if read == 0 {
            return Err(QemuError::Disconnected);
        }
        if line.last() != Some(&b'\n') {
            return Err(if read as u64 >= MAX_LINE_BYTES {
                QemuError::Protocol(format!("QMP message longer than {MAX_LINE_BYTES} bytes"))
            } else {
                QemuError::Disconnected
            });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return match serde_json::from_slice(&line) {
            Ok(message) => Ok((message, line)),
            Err(err) => Err(QemuError::Protocol(format!(
                "malformed JSON from QEMU ({err}): {}",
                String::from_utf8_lossy(&line).trim_end()
            ))),
        };
    }
}

async fn write_message(writer: &mut OwnedWriteHalf, message: &Value) -> Result<(), QemuError> {
    let mut bytes = message.to_string().into_bytes();
    bytes.push(b'\n');
    writer
        .write_all(&bytes)
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                QemuError::Disconnected
            }
            _ => QemuError::io("writing to QMP socket", err),
        })
}

/// Writes `message` with `fd` attached as SCM_RIGHTS to its first bytes. The caller holds the
/// writer's lock, so no other command's bytes interleave: QEMU takes the descriptor with the
/// bytes it arrived with, and `getfd` then names it.
async fn write_message_with_fd(
    writer: &mut OwnedWriteHalf,
    message: &Value,
    fd: RawFd,
) -> Result<(), QemuError> {
    let mut bytes = message.to_string().into_bytes();
    bytes.push(b'\n');
    let stream = writer.as_ref();
    let socket = stream.as_raw_fd();
    let sent = stream
        .async_io(Interest::WRITABLE, || send_with_fd(socket, &bytes, fd))
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                QemuError::Disconnected
            }
            _ => QemuError::io("passing a file descriptor over the QMP socket", err),
        })?;
    // A stream socket may take fewer bytes; the descriptor went with the first of them.
    if sent < bytes.len() {
        writer
            .write_all(&bytes[sent..])
            .await
            .map_err(|err| QemuError::io("writing to QMP socket", err))?;
    }
    Ok(())
}

/// One `sendmsg` of `bytes` on the socket `socket` with `fd` as SCM_RIGHTS; the bytes sent.
fn send_with_fd(socket: RawFd, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
    const FD_BYTES: u32 = std::mem::size_of::<RawFd>() as u32;
    // A u64 buffer keeps the control message aligned as cmsghdr needs.
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(FD_BYTES) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all zeroes is an empty message, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points to `space` writable, aligned bytes, room for one cmsghdr with
    // one descriptor (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA lies inside it.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(FD_BYTES) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        // iov and control live until sendmsg returns; the kernel copies what it sends.
        libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP peer: greets, accepts capabilities, then answers `query-status` with an
    /// event first, answers `bogus` with an error, and closes the connection on `quit`.
    async fn fake_qemu(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let send = |value: Value| format!("{value}\r\n");
        write_half
            .write_all(send(json!({"QMP": {"version": {}, "capabilities": []}})).as_bytes())
            .await
            .unwrap();
        loop {
            let Ok(message) = read_message(&mut reader).await else {
                return;
            };
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let reply = match message["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}}),
                "query-status" => {
                    let event = json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"},
                                       "timestamp": {"seconds": 1, "microseconds": 2}});
                    write_half.write_all(send(event).as_bytes()).await.unwrap();
                    json!({"return": {"status": "paused", "running": false}, "id": id})
                }
                "quit" => return,
                _ => {
                    json!({"error": {"class": "CommandNotFound", "desc": "no such command"}, "id": id})
                }
            };
            write_half.write_all(send(reply).as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commands_errors_events_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(fake_qemu(listener));

        let (qmp, mut events) = Qmp::connect(&socket).await.unwrap();
        assert_eq!(qmp.query_status().await.unwrap(), RunState::Paused);
        let received = events.recv().await.unwrap();
        assert_eq!(
            received.event,
            QmpEvent::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            }
        );
        assert_eq!(
            (
                received.name.as_str(),
                received.seconds,
                received.microseconds
            ),
            ("SHUTDOWN", 1, 2)
        );
        assert!(received.line.contains(r#""reason":"guest-shutdown""#));
        match qmp.execute("bogus", Some(json!({"a": 1}))).await {
            Err(QemuError::Command {
                command,
                class,
                desc,
            }) => {
                assert_eq!(command, "bogus");
                assert_eq!(class, "CommandNotFound");
                assert_eq!(desc, "no such command");
            }
            other => panic!("expected a command error, got {other:?}"),
        }
        qmp.quit().await.unwrap();
        server.await.unwrap();
        assert_eq!(
            events.recv().await,
            None,
            "event stream ends when the peer closes"
        );
        assert!(matches!(qmp.stop().await, Err(QemuError::Disconnected)));
    }

    #[test]
    fn one_client_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Qmp>();
        shareable::<QemuError>();
    }

    #[tokio::test]
    async fn non_qmp_peer_is_a_protocol_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"hello\": 1}\n").await.unwrap();
        });
        let err = Qmp::connect(&socket).await.unwrap_err();
        assert!(matches!(err, QemuError::Protocol(_)), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_is_reported_not_panicked_on() {
        let mut input: &[u8] = b"not json\n";
        let err = read_message(&mut input).await.unwrap_err();
        assert!(err.to_string().contains("malformed JSON"), "{err}");
        let mut truncated: &[u8] = b"{\"return\": {}";
        assert!(matches!(
            read_message(&mut truncated).await,
            Err(QemuError::Disconnected)
        ));
    }
}
