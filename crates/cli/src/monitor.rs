//! `qemu-monitor-command`: a command to the running guest's QEMU monitor, printed as virsh
//! prints QEMU's answer (compact, `--pretty`, or only the `return` value).
//!
//! virsh prints QEMU's JSON with its members in QEMU's order, so the answer is reshaped as
//! text by `oxvirt_api::json_text` (a small scanner over JSON serde_json has already checked).

use anyhow::{bail, Context};
use clap::Subcommand;
use oxvirt_api::json_text::{compact, indent, top_level_member};
use oxvirt_api::{Client, MonitorCommand};

use crate::commands::block_on;
use crate::format::Output;

#[derive(Subcommand, Debug)]
pub enum MonitorVerb {
    /// Send a command to a running domain's QEMU monitor and print QEMU's answer. A QMP
    /// command is JSON ('{"execute":"query-status"}') or a command name followed by its
    /// arguments as JSON members ('query-block' or 'cmd' '"key":"value"'); with --hmp, a
    /// human monitor command line ('info status').
    QemuMonitorCommand {
        /// Domain name or UUID.
        domain: String,
        /// A human monitor (HMP) command line instead of QMP.
        #[arg(long, conflicts_with_all = ["pretty", "return_value"])]
        hmp: bool,
        /// Print the answer as indented JSON.
        #[arg(long)]
        pretty: bool,
        /// Print only the answer's `return` value.
        #[arg(long)]
        return_value: bool,
        /// The command (its words are joined with spaces, or with --hmp as one line).
        #[arg(required = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
}

pub fn run(client: &Client, verb: MonitorVerb) -> anyhow::Result<Output> {
    let MonitorVerb::QemuMonitorCommand {
        domain,
        hmp,
        pretty,
        return_value,
        cmd,
    } = verb;
    let command = if hmp {
        cmd.join(" ")
    } else {
        qmp_command(&cmd)?
    };
    let request = MonitorCommand { command, hmp };
    let answer = block_on(client.monitor_command(&domain, &request))??.answer;
    if hmp {
        return Ok(Output {
            text: format!("{answer}\n"),
            blank_line: true,
        });
    }
    serde_json::from_str::<serde_json::Value>(&answer)
        .with_context(|| format!("QEMU's answer is not JSON: {answer}"))?;
    let shown = if return_value {
        match top_level_member(&answer, "return") {
            Some(value) => value,
            None => bail!("'return' member missing"),
        }
    } else {
        answer.as_str()
    };
    Ok(if pretty {
        Output {
            text: format!("{}\n", indent(shown)),
            blank_line: false,
        }
    } else {
        Output {
            text: format!("{}\n", compact(shown)),
            blank_line: !return_value,
        }
    })
}

/// virsh's rule: one argument that is a JSON object is the command; otherwise the first word
/// is the command's name and the others are the members of its arguments.
fn qmp_command(words: &[String]) -> anyhow::Result<String> {
    let Some((name, arguments)) = words.split_first() else {
        bail!("no monitor command given");
    };
    if arguments.is_empty() {
        if let Ok(serde_json::Value::Object(_)) = serde_json::from_str(name) {
            return Ok(name.clone());
        }
        return Ok(serde_json::json!({ "execute": name }).to_string());
    }
    let members = format!("{{{}}}", arguments.join(","));
    serde_json::from_str::<serde_json::Value>(&members).with_context(|| {
        format!(
            "failed to wrap arguments '{}' into a QMP command wrapper",
            arguments.join(" ")
        )
    })?;
    // Checked, then spliced in as written: the arguments keep the user's order.
    Ok(format!(
        "{{\"execute\":{},\"arguments\":{members}}}",
        serde_json::Value::String(name.clone())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_wrapped_as_virsh_wraps_them() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            qmp_command(&words(&[r#"{"execute":"query-status"}"#])).unwrap(),
            r#"{"execute":"query-status"}"#
        );
        assert_eq!(
            qmp_command(&words(&["query-name"])).unwrap(),
            r#"{"execute":"query-name"}"#
        );
        assert_eq!(
            qmp_command(&words(&[
                "human-monitor-command",
                r#""command-line":"info status""#
            ]))
            .unwrap(),
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}"#
        );
        let err = qmp_command(&words(&["query-name", "extra"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("failed to wrap arguments 'extra' into a QMP command wrapper"),
            "{err:#}"
        );
    }
}
