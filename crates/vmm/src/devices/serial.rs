//! COM1: a 16550A UART (vm-superio) whose output goes to stdout, a file or a Unix socket, and whose input
//! comes from stdin or the socket's client. The interrupt is an eventfd registered as a KVM irqfd on IRQ 4.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::{lock, PioDevice};
use crate::control::{ExitReason, VmControl};
use crate::seccomp::{Filters, ThreadRole};

pub use crate::protocol::SerialMode;

/// The serial interrupt: signalling the irqfd injects an edge on IRQ 4.
pub struct IrqFdTrigger(pub EventFd);

impl Trigger for IrqFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The current socket client, shared by the output writer and the input thread.
type SocketClient = Arc<Mutex<Option<UnixStream>>>;

enum Sink {
    Stdout(io::Stdout),
    File(File),
    Socket(SocketClient),
}

/// Console output. Errors are swallowed: a closed console must not stop the guest.
pub struct ConsoleWriter(Sink);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Sink::Stdout(s) => {
                let _ = s.write_all(buf);
                let _ = s.flush();
            }
            Sink::File(f) => {
                let _ = f.write_all(buf);
            }
            Sink::Socket(client) => {
                let mut guard = lock(client);
                if let Some(stream) = guard.as_mut() {
                    if stream.write_all(buf).is_err() {
                        *guard = None;
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub type Uart = Serial<IrqFdTrigger, vm_superio::serial::NoEvents, ConsoleWriter>;

/// The UART on the I/O bus (8 registers).
pub struct SerialPort(pub Uart);

/// The UART's saved registers and the input bytes the guest has not read yet (vm-superio's
/// `SerialState`, which has no serde of its own).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UartState {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

impl SerialPort {
    pub fn state(&self) -> UartState {
        let s = self.0.state();
        UartState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Takes back saved registers, keeping this UART's interrupt and output.
    pub fn restore(&mut self, state: &UartState) -> Result<(), String> {
        let saved = vm_superio::serial::SerialState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        let irq = |uart: &Uart| {
            uart.interrupt_evt()
                .0
                .try_clone()
                .map(IrqFdTrigger)
                .map_err(|e| format!("serial interrupt eventfd: {e}"))
        };
        // vm-superio builds a UART from a state only with a new trigger and writer: move ours over.
        let placeholder = Serial::new(irq(&self.0)?, ConsoleWriter(Sink::Stdout(io::stdout())));
        let old = std::mem::replace(&mut self.0, placeholder);
        let trigger = irq(&old)?;
        let writer = old.into_writer();
        self.0 = Serial::from_state(&saved, trigger, vm_superio::serial::NoEvents, writer)
            .map_err(|e| format!("the saved serial state: {e:?}"))?;
        Ok(())
    }
}

impl PioDevice for SerialPort {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.0.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let (Some(&b), Ok(off)) = (data.first(), u8::try_from(offset)) {
            let _ = self.0.write(off, b);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot open serial output file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("cannot listen on serial socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("cannot create the serial interrupt eventfd: {0}")]
    EventFd(io::Error),
}

/// A console ready to be put on the bus; `start_input` spawns the thread feeding guest input.
pub struct Console {
    pub port: Arc<Mutex<SerialPort>>,
    input: Option<InputSource>,
}

enum InputSource {
    Stdin,
    Socket(UnixListener, SocketClient),
}

/// Where the console goes, opened (before the jail: `crate::resources`): the file, the
/// listening socket, or stdio.
pub enum ConsoleEndpoint {
    Stdio,
    File(std::fs::File),
    Socket(UnixListener),
}

impl ConsoleEndpoint {
    pub fn open(mode: &SerialMode) -> Result<ConsoleEndpoint, SerialError> {
        Ok(match mode {
            SerialMode::Stdio => ConsoleEndpoint::Stdio,
            SerialMode::File(path) => ConsoleEndpoint::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SerialError::File {
                        path: path.clone(),
                        source,
                    })?,
            ),
            SerialMode::Socket(path) => {
                let _ = std::fs::remove_file(path);
                ConsoleEndpoint::Socket(UnixListener::bind(path).map_err(|source| {
                    SerialError::Socket {
                        path: path.clone(),
                        source,
                    }
                })?)
            }
        })
    }
}

impl Console {
    /// Creates the UART on `endpoint`; `irq` is the eventfd the VMM registers as the IRQ 4 irqfd.
    pub fn new(endpoint: ConsoleEndpoint, irq: EventFd) -> Console {
        let (sink, input) = match endpoint {
            ConsoleEndpoint::Stdio => (Sink::Stdout(io::stdout()), Some(InputSource::Stdin)),
            ConsoleEndpoint::File(file) => (Sink::File(file), None),
            ConsoleEndpoint::Socket(listener) => {
                let client: SocketClient = Arc::new(Mutex::new(None));
                (
                    Sink::Socket(client.clone()),
                    Some(InputSource::Socket(listener, client)),
                )
            }
        };
        let uart = Serial::new(IrqFdTrigger(irq), ConsoleWriter(sink));
        Console {
            port: Arc::new(Mutex::new(SerialPort(uart))),
            input,
        }
    }

    /// Whether the console is on stdio (so the terminal should go raw).
    pub fn is_stdio(&self) -> bool {
        matches!(self.input, Some(InputSource::Stdin))
    }

    /// Starts feeding input to the UART (stdin or socket clients). Input threads are detached: they end with
    /// the process.
    ///
    /// The input thread installs the serial-input seccomp filter before reading; if that fails, it asks
    /// `control` to stop the VM.
    pub fn start_input(
        &mut self,
        filters: Arc<Filters>,
        control: Arc<VmControl>,
    ) -> io::Result<()> {
        let port = self.port.clone();
        let sandbox = move || match filters.apply(ThreadRole::SerialInput) {
            Ok(()) => true,
            Err(e) => {
                control.request_exit(ExitReason::Error {
                    message: e.to_string(),
                });
                false
            }
        };
        match self.input.take() {
            None => {}
            Some(InputSource::Stdin) => {
                std::thread::Builder::new()
                    .name("serial-in".into())
                    .spawn(move || {
                        if !sandbox() {
                            return;
                        }
                        let mut stdin = io::stdin();
                        pump(&mut stdin, &port);
                    })?;
            }
            Some(InputSource::Socket(listener, client)) => {
                std::thread::Builder::new()
                    .name("serial-accept".into())
                    .spawn(move || {
                        if !sandbox() {
                            return;
                        }
                        for stream in listener.incoming().flatten() {
                            let Ok(mut reader) = stream.try_clone() else {
                                continue;
                            };
                            *lock(&client) = Some(stream);
                            pump(&mut reader, &port);
                        }
                    })?;
            }
        }
        Ok(())
    }
}

/// Copies bytes from `input` into the UART's receive FIFO, waiting while the FIFO is full.
fn pump(input: &mut dyn Read, port: &Mutex<SerialPort>) {
    let mut buf = [0u8; 64];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let taken = {
                let mut p = lock(port);
                let room = p.0.fifo_capacity();
                let chunk = &rest[..rest.len().min(room)];
                if chunk.is_empty() {
                    0
                } else {
                    p.0.enqueue_raw_bytes(chunk).unwrap_or(0)
                }
            };
            rest = &rest[taken..];
            if !rest.is_empty() {
                // The guest has not drained the FIFO yet.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Puts a terminal stdin into raw mode for the guest console and restores it on drop.
pub struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    pub fn enable_if_tty() -> RawTerminal {
        // SAFETY: isatty/tcgetattr/tcsetattr only read/write the termios struct we pass, for fd 0.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawTerminal { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            // Keep output post-processing so our own messages still end lines properly.
            t.c_oflag = saved.c_oflag;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerminal { saved: Some(saved) }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            // SAFETY: restores the attributes read in enable_if_tty for fd 0.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_console_receives_what_the_guest_transmits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let console = Console::new(
            ConsoleEndpoint::open(&SerialMode::File(path.clone())).unwrap(),
            irq.try_clone().unwrap(),
        );
        for b in b"hi\n" {
            lock(&console.port).write(0, &[*b]);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");
    }

    #[test]
    fn socket_console_forwards_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut console = Console::new(
            ConsoleEndpoint::open(&SerialMode::Socket(path.clone())).unwrap(),
            irq.try_clone().unwrap(),
        );
        let control = Arc::new(VmControl::new(0).unwrap());
        console
            .start_input(Arc::new(Filters::disabled()), control)
            .unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        // Enable the "data available" interrupt so we can see input arrive.
        lock(&console.port).write(1, &[1]);
        client.write_all(b"x").unwrap();
        assert!(oxvirt_testkit::wait_for(Duration::from_secs(5), || irq
            .read()
            .is_ok()));
        let mut b = [0u8];
        lock(&console.port).read(0, &mut b);
        assert_eq!(&b, b"x");
        // Output reaches the client once it is registered.
        assert!(oxvirt_testkit::wait_for(Duration::from_secs(5), || {
            lock(&console.port).write(0, b"y");
            let mut got = [0u8];
            client
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            client
                .read(&mut got)
                .map(|n| n == 1 && got[0] == b'y')
                .unwrap_or(false)
        }));
    }
}
