//! `edit`: change a domain's definition in the user's editor, as `virsh edit` does.
//!
//! The current XML goes to a temporary file, `$VISUAL`, `$EDITOR` or `vi` (virsh's order) runs on
//! it through `sh`, so the variable may carry arguments, and the result is sent to the daemon,
//! which validates it. If the daemon rejects it, a terminal user may edit the same file again;
//! otherwise the old definition stays and the command fails.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use oxvirt_api::{Client, ClientError};

use crate::commands::block_on;

/// Runs the edit session; returns the message to print on success.
pub fn run(client: &Client, domain: &str) -> anyhow::Result<String> {
    let info = block_on(client.domain_info(domain))??;
    let original = block_on(client.domain_xml(&info.uuid))??;

    let mut file = tempfile::Builder::new()
        .prefix("oxvirt-edit-")
        .suffix(".xml")
        .tempfile()
        .context("cannot create a temporary file to edit")?;
    file.write_all(original.as_bytes())
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", file.path().display()))?;

    let editor = editor_command();
    let interactive = std::io::stdin().is_terminal();
    loop {
        run_editor(&editor, file.path())?;
        let edited = std::fs::read_to_string(file.path())
            .with_context(|| format!("cannot read back {}", file.path().display()))?;
        if edited == original {
            return Ok(format!(
                "Domain '{}' XML configuration not changed.\n",
                info.name
            ));
        }
        match block_on(client.replace_domain_xml(&info.uuid, &edited))? {
            Ok(_) => {
                return Ok(format!(
                    "Domain '{}' XML configuration edited.\n",
                    info.name
                ));
            }
            Err(ClientError::Api(rejection)) => {
                if interactive {
                    if ask_again(&rejection.message)? {
                        continue;
                    }
                    // The reason is already on the screen.
                    bail!("the definition of domain '{}' is unchanged", info.name);
                }
                bail!(
                    "{}; the definition of domain '{}' is unchanged",
                    rejection.message,
                    info.name
                );
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// The editor virsh would use: `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor_command() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// Runs `editor` on `path` through the shell (the file name is passed as `$1`, never spliced
/// into the command line).
fn run_editor(editor: &str, path: &Path) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("oxvirt-edit")
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor '{editor}'"))?;
    if !status.success() {
        bail!("the editor '{editor}' failed ({status}); the definition is unchanged");
    }
    Ok(())
}

/// Shows why the daemon refused the edit and asks whether to edit again.
fn ask_again(reason: &str) -> anyhow::Result<bool> {
    let mut stderr = std::io::stderr();
    write!(stderr, "error: {reason}\nFailed. Try again? [y,n]: ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
