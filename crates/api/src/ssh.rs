//! Another host's oxvirtd reached through ssh (`oxvirt+ssh://`, docs/migration.md "Over SSH"),
//! as libvirt's `qemu+ssh://` does with `nc`/virt-ssh-helper: each connection is an `ssh` child
//! process running `oxvirt tunnel-socket SOCKET` on that host, which copies its stdio to and from
//! that host's oxvirtd socket; HTTP goes over the child's stdin and stdout. No credentials
//! beyond ssh's: whoever ssh logs in as must be able to open the socket (root's).

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::{ClientError, DEFAULT_SOCKET};

/// The URI scheme.
pub const SSH_SCHEME: &str = "oxvirt+ssh://";
/// How much of ssh's stderr a failure quotes (its last bytes: its own error comes last).
const STDERR_KEPT: usize = 2048;
/// How long a failed exchange waits for ssh to exit and say why.
const STDERR_WAIT: Duration = Duration::from_secs(10);

/// `oxvirt+ssh://[USER@]HOST[:PORT][/PATH/TO/oxvirtd.sock][?keyfile=FILE&known_hosts=FILE&oxvirt=PATH&no_verify=1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDestination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The oxvirtd socket on that host ([`DEFAULT_SOCKET`] when the URI names none).
    pub socket: String,
    /// The private key ssh uses (`-i`), a file of the host that runs ssh.
    pub keyfile: Option<String>,
    /// The known hosts file that must hold that host's key (else ssh's default one).
    pub known_hosts: Option<String>,
    /// libvirt's `no_verify=1`: the host's key is not checked (nor remembered).
    pub no_verify: bool,
    /// The `oxvirt` binary on that host (default: `oxvirt` on the ssh user's PATH).
    pub oxvirt: String,
}

fn invalid(uri: &str, detail: impl Into<String>) -> ClientError {
    ClientError::InvalidUrl {
        url: uri.to_string(),
        detail: detail.into(),
    }
}

/// A word ssh or the remote shell could take for something else (an option, a separator).
fn plain_word(word: &str) -> bool {
    !word.is_empty()
        && !word.starts_with('-')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
}

impl SshDestination {
    pub fn parse(uri: &str) -> Result<SshDestination, ClientError> {
        let rest = uri
            .strip_prefix(SSH_SCHEME)
            .ok_or_else(|| invalid(uri, format!("not {SSH_SCHEME}[USER@]HOST[:PORT][/SOCKET]")))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) => {
                if !plain_word(user) {
                    return Err(invalid(uri, format!("bad user name '{user}'")));
                }
                (Some(user.to_string()), host_port)
            }
            None => (None, authority),
        };
        // `[v6]:PORT`, `[v6]`, `HOST:PORT` or `HOST`.
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port))
                if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) =>
            {
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid(uri, format!("bad port '{port}'")))?;
                (host, Some(port))
            }
            _ => (host_port, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !plain_word(host) {
            return Err(invalid(uri, format!("bad host '{host}'")));
        }
        let socket = match path {
            "" | "/" => DEFAULT_SOCKET.to_string(),
            path => path.to_string(),
        };
        let mut destination = SshDestination {
            user,
            host: host.to_string(),
            port,
            socket,
            keyfile: None,
            known_hosts: None,
            no_verify: false,
            oxvirt: "oxvirt".to_string(),
        };
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(uri, format!("parameter '{pair}' has no value")))?;
            let absolute = || -> Result<String, ClientError> {
                match value.starts_with('/') {
                    true => Ok(value.to_string()),
                    // The source's oxvirtd runs ssh, in a directory of its own.
                    false => Err(invalid(
                        uri,
                        format!("{key} '{value}' is not an absolute path"),
                    )),
                }
            };
            match key {
                "keyfile" => destination.keyfile = Some(absolute()?),
                "known_hosts" => destination.known_hosts = Some(absolute()?),
                "oxvirt" => destination.oxvirt = absolute()?,
                // As libvirt: any number but 0 turns the check off.
                "no_verify" => {
                    destination.no_verify = value.parse::<u64>().map_err(|_| {
                        invalid(uri, format!("no_verify '{value}' is not a number (0 or 1)"))
                    })? != 0
                }
                other => {
                    return Err(invalid(
                        uri,
                        format!(
                            "unknown parameter '{other}' (keyfile, known_hosts, oxvirt and \
                             no_verify are known)"
                        ),
                    ))
                }
            }
        }
        if destination.no_verify && destination.known_hosts.is_some() {
            return Err(invalid(
                uri,
                "no_verify=1 and known_hosts exclude each other: the host key is checked \
                 against the file, or not at all",
            ));
        }
        Ok(destination)
    }

    /// `[USER@]HOST[:PORT]`, what messages name.
    pub fn host(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|user| format!("{user}@"))
            .unwrap_or_default();
        let port = self.port.map(|port| format!(":{port}")).unwrap_or_default();
        format!("{user}{}{port}", self.host)
    }

    /// `ssh://[USER@]HOST[:PORT]/SOCKET`, what [`crate::Client::socket`] shows.
    pub fn url(&self) -> String {
        format!("ssh://{}{}", self.host(), self.socket)
    }

    /// ssh's arguments: never asks anything (BatchMode: an unknown host key or a refused key
    /// fails), checks the host key strictly unless `no_verify` (then neither checked nor
    /// written into any known hosts file), and gives up on a silent peer after about 20 s
    /// (ServerAlive: the tunnel's watch, as TCP keepalive is for the TLS API's).
    pub fn ssh_args(&self) -> Vec<String> {
        let host_key = match self.no_verify {
            false => "StrictHostKeyChecking=yes",
            true => "StrictHostKeyChecking=no",
        };
        let mut args: Vec<String> = [
            "-T",
            "-x",
            "-o",
            "BatchMode=yes",
            "-o",
            host_key,
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(port) = self.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        if let Some(keyfile) = &self.keyfile {
            args.extend(["-i".to_string(), keyfile.clone()]);
            args.extend(["-o".to_string(), "IdentitiesOnly=yes".to_string()]);
        }
        let known_hosts = match self.no_verify {
            true => Some("/dev/null"),
            false => self.known_hosts.as_deref(),
        };
        if let Some(known_hosts) = known_hosts {
            args.extend([
                "-o".to_string(),
                format!("UserKnownHostsFile={known_hosts}"),
            ]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".to_string(), user.clone()]);
        }
        args.push("--".to_string());
        args.push(self.host.clone());
        // ssh hands the command to the remote user's shell as one string.
        args.push(format!(
            "{} tunnel-socket {}",
            shell_quote(&self.oxvirt),
            shell_quote(&self.socket)
        ));
        args
    }
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The ssh transport of a [`crate::Client`].
#[derive(Debug)]
pub(crate) struct SshTransport {
    pub(crate) destination: SshDestination,
}

/// What ssh said on stderr, read until it exits (why it failed).
pub(crate) struct SshStderr {
    destination: String,
    said: tokio::task::JoinHandle<String>,
}

impl SshStderr {
    /// The error of a failed exchange: ssh's own words (it exits on failure), naming the host.
    pub(crate) async fn error(self, what: String) -> ClientError {
        let said = tokio::time::timeout(STDERR_WAIT, self.said)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let said = said.trim();
        ClientError::Ssh {
            destination: self.destination,
            detail: match said.is_empty() {
                true => what,
                false => format!("ssh says: {said}"),
            },
        }
    }
}

impl SshTransport {
    /// One connection: a new ssh child process.
    pub(crate) fn connect(&self) -> Result<(SshStream, SshStderr), ClientError> {
        let mut child = tokio::process::Command::new("ssh")
            .args(self.destination.ssh_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The connection ends with its stream (the hyper connection drops it).
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| ClientError::Ssh {
                destination: self.destination.host(),
                detail: format!("cannot run ssh: {err}"),
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ClientError::Ssh {
                destination: self.destination.host(),
                detail: "ssh's standard streams were not piped".to_string(),
            });
        };
        let said = tokio::spawn(async move {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        });
        Ok((
            SshStream {
                _child: child,
                stdin: Some(stdin),
                stdout,
            },
            SshStderr {
                destination: self.destination.host(),
                said,
            },
        ))
    }
}

/// An ssh child's stdout (read) and stdin (write) as one stream; shutting it down closes stdin
/// (the far end sees EOF); dropping it kills ssh.
pub(crate) struct SshStream {
    _child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the ssh connection's input is closed",
    )
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(stdin) = self.stdin.as_mut() {
            if let Poll::Ready(Err(err)) = Pin::new(stdin).poll_flush(cx) {
                return Poll::Ready(Err(err));
            }
        }
        // Dropping the pipe is what closes it.
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_uris() {
        let full = SshDestination::parse(
            "oxvirt+ssh://root@10.0.0.2:2222/run/b/oxvirtd.sock?keyfile=/k/id&known_hosts=/k/kh",
        )
        .unwrap();
        assert_eq!(full.user.as_deref(), Some("root"));
        assert_eq!(full.host, "10.0.0.2");
        assert_eq!(full.port, Some(2222));
        assert_eq!(full.socket, "/run/b/oxvirtd.sock");
        assert_eq!(full.host(), "root@10.0.0.2:2222");
        let args = full.ssh_args();
        let line = args.join(" ");
        assert!(line.contains("-p 2222 -i /k/id -o IdentitiesOnly=yes -o UserKnownHostsFile=/k/kh -l root -- 10.0.0.2 'oxvirt' tunnel-socket '/run/b/oxvirtd.sock'"), "{line}");
        assert!(line.contains("BatchMode=yes") && line.contains("StrictHostKeyChecking=yes"));
        let bare = SshDestination::parse("oxvirt+ssh://host-b").unwrap();
        assert_eq!((bare.user, bare.port), (None, None));
        assert_eq!(bare.socket, DEFAULT_SOCKET);
        let v6 = SshDestination::parse("oxvirt+ssh://[fd00::2]:22/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::2", Some(22)));
        for (bad, says) in [
            ("oxvirt+ssh://-oProxyCommand=x/", "bad host"),
            ("oxvirt+ssh://-l@h/", "bad user"),
            ("oxvirt+ssh://h:x/", "bad port"),
            ("oxvirt+ssh://h/?keyfile=id", "not an absolute path"),
            ("oxvirt+ssh://h/?verify=1", "unknown parameter 'verify'"),
            ("oxvirt+ssh://h/?no_verify=yes", "not a number"),
            (
                "oxvirt+ssh://h/?no_verify=1&known_hosts=/k",
                "exclude each other",
            ),
            ("oxvirt+ssh:///s", "bad host"),
        ] {
            let err = SshDestination::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
        let unchecked = SshDestination::parse("oxvirt+ssh://h/?no_verify=1").unwrap();
        let line = unchecked.ssh_args().join(" ");
        assert!(
            line.contains("StrictHostKeyChecking=no -o")
                && line.contains("UserKnownHostsFile=/dev/null"),
            "{line}"
        );
        let checked = SshDestination::parse("oxvirt+ssh://h/?no_verify=0").unwrap();
        assert!(!checked.no_verify);
        let quoted = SshDestination::parse("oxvirt+ssh://h/it's.sock").unwrap();
        assert!(quoted
            .ssh_args()
            .last()
            .unwrap()
            .ends_with(r"'/it'\''s.sock'"));
    }
}
