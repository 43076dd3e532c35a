//! `--connect https://HOST:PORT`: the client of a remote oxvirtd (docs/remote.md), with its
//! credentials (`--token`, or `--user` and a password prompt) and the server's certificate
//! checked against `--ca`, or trusted on first use: the first connection records the
//! certificate's SHA-256 fingerprint in `known_hosts` (under `$XDG_CONFIG_HOME/oxvirt`, else
//! `~/.config/oxvirt`), later ones refuse any other certificate.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use oxvirt_api::remote::{Credentials, Endpoint, Trust};
use oxvirt_api::Client;
use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};

use crate::commands::block_on;

/// The options that choose the oxvirtd a command talks to, beside `--socket`.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Talk to a remote oxvirtd (its --listen) at https://HOST:PORT instead of the local socket.
    #[arg(long, global = true, env = "OXVIRT_CONNECT", value_name = "URL")]
    pub connect: Option<String>,
    /// With --connect: authenticate with this token (`oxvirt token create`).
    #[arg(
        long,
        global = true,
        env = "OXVIRT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// With --connect: authenticate as this user; the password is asked for (read from stdin
    /// when it is not a terminal).
    #[arg(long, global = true, value_name = "USER")]
    pub user: Option<String>,
    /// With --connect: check the server's certificate against this CA certificate (PEM), or
    /// the server's own, instead of trusting it on first use.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl ConnectArgs {
    pub fn is_remote(&self) -> bool {
        self.connect.is_some()
    }
}

/// The client for these options: the Unix socket's, or a remote one.
pub fn client(args: &ConnectArgs, socket: &Path) -> anyhow::Result<Client> {
    let Some(url) = &args.connect else {
        if args.user.is_some() || args.ca.is_some() {
            bail!("--user and --ca go with --connect https://HOST:PORT");
        }
        return Ok(Client::new(socket));
    };
    let endpoint = Endpoint::parse(url)?;
    let credentials = match (&args.token, &args.user) {
        (Some(_), Some(_)) => bail!("give --token or --user, not both"),
        (Some(token), None) => Some(Credentials::Token(token.clone())),
        (None, Some(user)) => Some(Credentials::Password {
            user: user.clone(),
            password: prompt_password(&format!("Password for {user} at {}: ", endpoint.key()))?,
        }),
        // Every request will be refused (401), with the server's message saying why.
        (None, None) => None,
    };
    let trust = trust(&endpoint, args.ca.as_deref())?;
    Ok(Client::remote(url, &trust, credentials.as_ref())?)
}

/// How the certificate of the oxvirtd at `endpoint` is trusted: against the CA file `ca`, or
/// pinned to the fingerprint `known_hosts` records for it (recorded now, at the first
/// connection: trust on first use).
pub fn trust(endpoint: &Endpoint, ca: Option<&Path>) -> anyhow::Result<Trust> {
    if let Some(ca) = ca {
        return Ok(Trust::Ca(ca.to_path_buf()));
    }
    let file = known_hosts_file()?;
    let key = endpoint.key();
    let fingerprint = match lookup(&file, &key)? {
        Some(fingerprint) => fingerprint,
        None => {
            let fingerprint = block_on(oxvirt_api::remote::fingerprint(endpoint))??;
            record(&file, &key, &fingerprint)?;
            eprintln!(
                "oxvirt: first connection to {key}: trusting its certificate, SHA-256 \
                 fingerprint {fingerprint} (recorded in {})",
                file.display()
            );
            fingerprint
        }
    };
    Ok(Trust::Pinned {
        fingerprint,
        known_hosts: file,
    })
}

/// `$XDG_CONFIG_HOME/oxvirt/known_hosts`, else `$HOME/.config/oxvirt/known_hosts`.
pub fn known_hosts_file() -> anyhow::Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!(
                "neither XDG_CONFIG_HOME nor HOME is set: no place for the known_hosts file of \
                 trusted certificates (or use --ca FILE)"
            ),
        },
    };
    Ok(config.join("oxvirt").join("known_hosts"))
}

/// The fingerprint `file` records for `key` (`HOST:PORT FINGERPRINT` lines, `#` comments).
fn lookup(file: &Path, key: &str) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", file.display())),
    };
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(host), Some(fingerprint), None) = (words.next(), words.next(), words.next())
        else {
            bail!(
                "{} line {}: expected 'HOST:PORT SHA256-FINGERPRINT'",
                file.display(),
                index + 1
            );
        };
        if host == key {
            return Ok(Some(fingerprint.to_string()));
        }
    }
    Ok(None)
}

fn record(file: &Path, key: &str, fingerprint: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    writeln!(out, "{key} {fingerprint}").with_context(|| format!("writing {}", file.display()))
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks for a password on stderr and reads it from stdin, without echo on a terminal.
pub fn prompt_password(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let saved = if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let saved = tcgetattr(&stdin).context("cannot read terminal settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet)
            .context("cannot switch the terminal's echo off")?;
        Some(saved)
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
        eprintln!();
    }
    read.context("reading the password")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_are_found_by_host_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        assert_eq!(lookup(&file, "h:1").unwrap(), None);
        record(&file, "h:1", "AA:BB").unwrap();
        record(&file, "[::1]:2", "CC:DD").unwrap();
        assert_eq!(lookup(&file, "h:1").unwrap().as_deref(), Some("AA:BB"));
        assert_eq!(lookup(&file, "[::1]:2").unwrap().as_deref(), Some("CC:DD"));
        assert_eq!(lookup(&file, "h:2").unwrap(), None);
        std::fs::write(&file, "# comment\n\nh:1\n").unwrap();
        let err = lookup(&file, "h:1").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
