//! `oxvirt user ...` and `oxvirt token ...`: who may use oxvirtd's remote API (docs/remote.md).
//! An admin's verbs: on the local socket (root), or over `--connect` with an admin's
//! credentials.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use oxvirt_api::{AddUserRequest, Client, CreateTokenRequest, Role};

use crate::commands::block_on;
use crate::format::{local_time, table};

/// A role, as the command line spells it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Only reads (GET): no change of state, no console, no users or tokens.
    ReadOnly,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::ReadOnly => Role::ReadOnly,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user of the remote API; the password is asked for (twice) unless
    /// --password-file gives it.
    Add {
        /// The user's name (letters, digits, '.', '_', '-').
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from the first line of this file instead of asking.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Change a user's password (asked for, or from --password-file).
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Delete a user.
    Del { name: String },
    /// List the users and their roles.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for scripts and print it (the only time it is shown: oxvirtd keeps a
    /// digest of it).
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A name to tell it by in `token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tokens (their ids, names and roles; never the tokens themselves).
    List,
    /// Revoke a token: requests carrying it are refused from now on.
    Revoke {
        /// The token's id (`token list`).
        id: u64,
    },
}

/// The password: the first line of `file`, or asked for twice on the terminal.
fn new_password(file: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the password file {}", file.display()))?;
        let password = text.lines().next().unwrap_or_default().to_string();
        if password.is_empty() {
            bail!(
                "the password file {} starts with an empty line",
                file.display()
            );
        }
        return Ok(password);
    }
    let password = crate::remote::prompt_password("New password: ")?;
    if crate::remote::stdin_is_terminal() {
        let again = crate::remote::prompt_password("Retype the password: ")?;
        if again != password {
            bail!("the passwords do not match; nothing changed");
        }
    }
    Ok(password)
}

fn date(created: i64) -> String {
    local_time(u64::try_from(created).unwrap_or(0), false)
}

pub fn run_user(client: &Client, command: UserCommand) -> anyhow::Result<String> {
    // Prompts first, outside the async runtime.
    let password = match &command {
        UserCommand::Add { password_file, .. } | UserCommand::Passwd { password_file, .. } => {
            Some(new_password(password_file.as_ref())?)
        }
        _ => None,
    };
    block_on(async {
        Ok::<_, anyhow::Error>(match command {
            UserCommand::Add { name, role, .. } => {
                let user = client
                    .add_user(&AddUserRequest {
                        name,
                        password: password.unwrap_or_default(),
                        role: role.into(),
                    })
                    .await?;
                format!("User '{}' added with role {}\n", user.name, user.role)
            }
            UserCommand::Passwd { name, .. } => {
                let user = client
                    .set_user_password(&name, &password.unwrap_or_default())
                    .await?;
                format!("Password of user '{}' changed\n", user.name)
            }
            UserCommand::Del { name } => {
                let user = client.delete_user(&name).await?;
                format!("User '{}' deleted\n", user.name)
            }
            UserCommand::List => {
                let rows: Vec<Vec<String>> = client
                    .list_users()
                    .await?
                    .into_iter()
                    .map(|u| vec![u.name, u.role.to_string(), date(u.created)])
                    .collect();
                table(&["Name", "Role", "Created"], &rows)
            }
        })
    })?
}

pub fn run_token(client: &Client, command: TokenCommand) -> anyhow::Result<String> {
    block_on(async {
        Ok::<_, anyhow::Error>(match command {
            TokenCommand::Create { role, name } => {
                let new = client
                    .create_token(&CreateTokenRequest {
                        role: role.into(),
                        name,
                    })
                    .await?;
                // The token alone on its line, for `$(oxvirt token create ...)`.
                format!("{}\n", new.token)
            }
            TokenCommand::List => {
                let rows: Vec<Vec<String>> = client
                    .list_tokens()
                    .await?
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.unwrap_or_else(|| "-".to_string()),
                            t.role.to_string(),
                            date(t.created),
                        ]
                    })
                    .collect();
                table(&["Id", "Name", "Role", "Created"], &rows)
            }
            TokenCommand::Revoke { id } => {
                let token = client.revoke_token(id).await?;
                format!("Token {} revoked\n", token.id)
            }
        })
    })?
}
