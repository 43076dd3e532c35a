//! `edit` / `net-edit`: change a definition in the user's editor, as `virsh edit` does.
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

/// Runs the edit session of a domain; returns the message to print on success.
pub fn run(client: &Client, domain: &str) -> anyhow::Result<String> {
    let info = block_on(client.domain_info(domain))??;
    // virsh edits the persistent definition: of a running domain, the one for its next start.
    let original = block_on(client.domain_inactive_xml(&info.uuid))??;
    let subject = format!("Domain '{}'", info.name);
    edit_definition(
        &original,
        &subject,
        &format!("{subject} XML configuration edited.\n"),
        &format!("domain '{}'", info.name),
        |edited| block_on(client.replace_domain_xml(&info.uuid, edited)).map(|r| r.map(|_| ())),
    )
}

/// Runs the edit session of a network (`net-edit`).
pub fn run_network(client: &Client, network: &str) -> anyhow::Result<String> {
    let info = block_on(client.network_info(network))??;
    let original = block_on(client.network_xml(&info.uuid))??;
    let subject = format!("Network {}", info.name);
    edit_definition(
        &original,
        &subject,
        &format!("{subject} XML configuration edited.\n"),
        &format!("network '{}'", info.name),
        |edited| block_on(client.replace_network_xml(&info.uuid, edited)).map(|r| r.map(|_| ())),
    )
}

/// Runs the edit session of a snapshot (`snapshot-edit`).
pub fn run_snapshot(client: &Client, domain: &str, snapshot: &str) -> anyhow::Result<String> {
    let original = block_on(client.snapshot_xml(domain, snapshot))??;
    let subject = format!("Snapshot {snapshot}");
    edit_definition(
        &original,
        &subject,
        &format!("{subject} edited.\n"),
        &format!("snapshot '{snapshot}'"),
        |edited| {
            block_on(client.replace_snapshot_xml(domain, snapshot, edited)).map(|r| r.map(|_| ()))
        },
    )
}

/// Edits `original` until `replace` accepts it or the user gives up. `subject` starts virsh's
/// messages ("Domain 'x'", "Network x"), `edited_message` is what success prints, `what`
/// names the object in errors.
fn edit_definition(
    original: &str,
    subject: &str,
    edited_message: &str,
    what: &str,
    replace: impl Fn(&str) -> anyhow::Result<Result<(), ClientError>>,
) -> anyhow::Result<String> {
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
            return Ok(format!("{subject} XML configuration not changed.\n"));
        }
        match replace(&edited)? {
            Ok(()) => {
                return Ok(edited_message.to_string());
            }
            Err(ClientError::Api(rejection)) => {
                if interactive {
                    if ask_again(&rejection.message)? {
                        continue;
                    }
                    // The reason is already on the screen.
                    bail!("the definition of {what} is unchanged");
                }
                bail!(
                    "{}; the definition of {what} is unchanged",
                    rejection.message
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
