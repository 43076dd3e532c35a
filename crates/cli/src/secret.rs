//! Secret commands (`secret-*`), with virsh's names, messages and output formats.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Subcommand};
use oxvirt_api::{Client, SecretInfo};

use crate::commands::block_on;
use crate::format::table;

/// A secret, by UUID.
#[derive(Args, Debug)]
pub struct SecretArg {
    /// Secret UUID.
    secret: String,
}

// The variants are virsh's verbs (clap names the subcommands after them): all `secret-*`.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Define or modify a secret from an XML file.
    SecretDefine {
        /// File with the secret XML.
        file: PathBuf,
    },
    /// Undefine a secret (its value goes with it).
    SecretUndefine(SecretArg),
    /// Print a secret's XML definition.
    SecretDumpxml(SecretArg),
    /// List secrets.
    SecretList {
        /// Only ephemeral secrets.
        #[arg(long, conflicts_with = "no_ephemeral")]
        ephemeral: bool,
        /// Only persistent secrets.
        #[arg(long)]
        no_ephemeral: bool,
        /// Only private secrets.
        #[arg(long, conflicts_with = "no_private")]
        private: bool,
        /// Only non-private secrets.
        #[arg(long)]
        no_private: bool,
    },
    /// Set a secret's value.
    SecretSetValue {
        #[command(flatten)]
        secret: SecretArg,
        /// The value, base64-encoded (insecure: other users see command lines; prefer --file).
        #[arg(conflicts_with_all = ["file", "interactive", "base64"])]
        value: Option<String>,
        /// The value, base64-encoded (as the positional argument).
        #[arg(long, conflicts_with_all = ["file", "interactive"])]
        base64: Option<String>,
        /// Read the value from this file (base64, unless --plain).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The file or terminal holds the value itself, not its base64 form.
        #[arg(long)]
        plain: bool,
        /// Read the value from the terminal, without echo.
        #[arg(long, conflicts_with = "file")]
        interactive: bool,
    },
    /// Print a secret's value (base64, unless --plain).
    SecretGetValue {
        #[command(flatten)]
        secret: SecretArg,
        /// Print the value itself rather than its base64 form.
        #[arg(long)]
        plain: bool,
    },
}

/// `secret-list`: virsh's table (`Usage` is "TYPE ID", or "Unused").
pub fn secret_list(secrets: &[SecretInfo]) -> String {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let usage = match (&s.usage_type, &s.usage_id) {
                (Some(kind), Some(id)) => format!("{kind} {id}"),
                _ => "Unused".to_string(),
            };
            vec![s.uuid.clone(), usage]
        })
        .collect();
    table(&["UUID", "Usage"], &rows)
}

/// Runs a secret command; returns what it prints on success.
pub fn run(client: &Client, command: SecretCommand) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

async fn run_async(client: &Client, command: SecretCommand) -> anyhow::Result<String> {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let output = match command {
        SecretCommand::SecretDefine { file } => {
            let xml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let secret = client
                .define_secret(&xml)
                .await
                .with_context(|| format!("Failed to set attributes from {}", file.display()))?;
            format!("Secret {} created\n", secret.uuid)
        }
        SecretCommand::SecretUndefine(arg) => {
            let secret = client
                .undefine_secret(&arg.secret)
                .await
                .with_context(|| format!("Failed to delete secret {}", arg.secret))?;
            format!("Secret {} deleted\n", secret.uuid)
        }
        SecretCommand::SecretDumpxml(arg) => client
            .secret_xml(&arg.secret)
            .await
            .with_context(|| format!("failed to get secret '{}'", arg.secret))?,
        SecretCommand::SecretList {
            ephemeral,
            no_ephemeral,
            private,
            no_private,
        } => {
            let secrets: Vec<SecretInfo> = client
                .list_secrets()
                .await
                .context("Failed to list secrets")?
                .into_iter()
                .filter(|s| !(ephemeral && !s.ephemeral || no_ephemeral && s.ephemeral))
                .filter(|s| !(private && !s.private || no_private && s.private))
                .collect();
            secret_list(&secrets)
        }
        SecretCommand::SecretSetValue {
            secret,
            value,
            base64,
            file,
            plain,
            interactive,
        } => {
            let encoded = match (value.or(base64), file) {
                (Some(value), _) => {
                    if plain {
                        bail!("--plain applies to a value read from --file or --interactive");
                    }
                    eprintln!(
                        "warning: passing a secret value as a command-line argument is insecure: \
                         other users can read command lines (use --file or --interactive)"
                    );
                    value
                }
                (None, Some(file)) => {
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    if plain {
                        encode(&bytes)
                    } else {
                        String::from_utf8_lossy(&bytes).trim().to_string()
                    }
                }
                (None, None) if interactive => {
                    let line = read_hidden_line("Enter new value for secret:")?;
                    if plain {
                        encode(line.as_bytes())
                    } else {
                        line
                    }
                }
                (None, None) => bail!("give the value with --file FILE, --interactive or --base64"),
            };
            client
                .set_secret_value(&secret.secret, &encoded)
                .await
                .with_context(|| format!("Failed to set secret value of {}", secret.secret))?;
            "Secret value set\n".to_string()
        }
        SecretCommand::SecretGetValue { secret, plain } => {
            let value = client
                .secret_value(&secret.secret)
                .await
                .with_context(|| format!("Failed to get secret value of {}", secret.secret))?;
            if plain {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.base64.trim())
                    .context("the daemon sent a value that is not base64")?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                format!("{}\n", value.base64)
            }
        }
    };
    Ok(output)
}

/// One line from standard input; on a terminal, with echo off while it is typed.
fn read_hidden_line(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn terminal echo off")?;
        eprint!("{prompt} ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
        eprintln!();
    }
    read.context("cannot read the secret value")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uuid: &str, usage: Option<(&str, &str)>) -> SecretInfo {
        SecretInfo {
            uuid: uuid.to_string(),
            usage_type: usage.map(|u| u.0.to_string()),
            usage_id: usage.map(|u| u.1.to_string()),
            ephemeral: false,
            private: false,
            has_value: false,
        }
    }

    #[test]
    fn secret_list_is_virsh_s_table() {
        // virsh secret-list of libvirt 9.0 (secret:///embed) for the same secrets.
        let expected = " UUID                                   Usage\n\
------------------------------------------------------------------\n \
250bd877-8ded-4c59-9d43-9b6d946959a1   ceph client.admin secret\n \
6f1c2a4e-0c1a-4d2b-9a51-0000000002ff   iscsi libvirtiscsi\n \
b2f67e71-b009-473d-b3ff-2e4d68f306c4   volume /var/lib/x.img\n";
        let secrets = [
            info(
                "250bd877-8ded-4c59-9d43-9b6d946959a1",
                Some(("ceph", "client.admin secret")),
            ),
            info(
                "6f1c2a4e-0c1a-4d2b-9a51-0000000002ff",
                Some(("iscsi", "libvirtiscsi")),
            ),
            info(
                "b2f67e71-b009-473d-b3ff-2e4d68f306c4",
                Some(("volume", "/var/lib/x.img")),
            ),
        ];
        assert_eq!(secret_list(&secrets), expected);
        assert!(secret_list(&[info("u", None)]).contains("Unused"));
    }
}
