//! What is generated from the clap definition: completion scripts, man pages, and the names the
//! completions fetch from the daemon (`oxvirt __complete-names`, shared with the shell).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use oxvirt_api::Client;

use crate::complete::NameKind;
use crate::{commands, Cli};

/// The names of every object of `kind` (secrets by UUID; volumes of `pool`, or of every pool).
pub fn names(client: &Client, kind: NameKind, pool: Option<&str>) -> anyhow::Result<Vec<String>> {
    commands::block_on(async {
        let names: Vec<String> = match kind {
            NameKind::Domain => client
                .list_domains()
                .await?
                .into_iter()
                .map(|domain| domain.name)
                .collect(),
            NameKind::Network => client
                .list_networks()
                .await?
                .into_iter()
                .map(|network| network.name)
                .collect(),
            NameKind::Pool => client
                .list_pools()
                .await?
                .into_iter()
                .map(|pool| pool.name)
                .collect(),
            NameKind::Secret => client
                .list_secrets()
                .await?
                .into_iter()
                .map(|secret| secret.uuid)
                .collect(),
            NameKind::Volume => {
                let pools = match pool {
                    Some(pool) => vec![pool.to_string()],
                    None => client
                        .list_pools()
                        .await?
                        .into_iter()
                        .map(|pool| pool.name)
                        .collect(),
                };
                let mut names = Vec::new();
                for pool in pools {
                    // An inactive pool has no volume list; its neighbours still complete.
                    if let Ok(volumes) = client.list_volumes(&pool).await {
                        names.extend(volumes.into_iter().map(|volume| volume.name));
                    }
                }
                names
            }
        };
        anyhow::Ok(names)
    })?
}

/// `oxvirt __complete-names`: the names of `kind`, or, with `line` (a command line up to the
/// cursor, without the program name), the names that complete its last word, if it is a name.
pub fn print_names(
    client: &Client,
    kind: Option<NameKind>,
    pool: Option<&str>,
    line: Option<&str>,
) -> anyhow::Result<()> {
    let (kind, pool, prefix) = match line {
        None => (kind, pool.map(str::to_string), String::new()),
        Some(line) => match crate::complete::name_target(line) {
            Some((kind, line_pool, prefix)) => (Some(kind), line_pool, prefix),
            None => (None, None, String::new()),
        },
    };
    let Some(kind) = kind else {
        return Ok(());
    };
    // `oxvirt --socket PATH dominfo <TAB>` asks the daemon the line names.
    let line_socket = line.and_then(socket_in_line);
    let line_client = line_socket.map(Client::new);
    let client = line_client.as_ref().unwrap_or(client);
    let mut out = std::io::stdout().lock();
    for name in names(client, kind, pool.as_deref())? {
        if name.starts_with(&prefix) {
            writeln!(out, "{name}")?;
        }
    }
    Ok(())
}

/// The value of `--socket PATH` or `--socket=PATH` in a partial command line.
fn socket_in_line(line: &str) -> Option<std::path::PathBuf> {
    let mut words = line.split_whitespace();
    let mut socket = None;
    while let Some(word) = words.next() {
        if word == "--socket" {
            socket = words.next().map(std::path::PathBuf::from);
        } else if let Some(path) = word.strip_prefix("--socket=") {
            socket = Some(std::path::PathBuf::from(path));
        }
    }
    socket
}

/// Dynamic completion for bash: after clap's static completion of verbs and options, names from
/// the daemon where the word is a domain, network, pool, volume or secret.
const BASH_NAMES: &str = r#"
# Names from oxvirtd (oxvirt __complete-names) where a domain, network, pool or volume goes.
_oxvirt_with_names() {
    _oxvirt "$@"
    local cur=${COMP_WORDS[COMP_CWORD]}
    [[ $cur == -* ]] && return 0
    local line=${COMP_LINE:0:$COMP_POINT}
    line=${line#*[[:space:]]}
    local IFS=$'\n'
    local names
    names=($("${COMP_WORDS[0]}" __complete-names --line="$line" 2>/dev/null))
    if [[ ${#names[@]} -gt 0 ]]; then
        COMPREPLY=("${names[@]}")
    fi
    return 0
}
complete -F _oxvirt_with_names -o nosort -o bashdefault -o default oxvirt
"#;

/// The same for fish: an extra source of candidates that is empty except where a name goes.
const FISH_NAMES: &str = r#"
# Names from oxvirtd (oxvirt __complete-names) where a domain, network, pool or volume goes.
complete -c oxvirt -f -a '(oxvirt __complete-names --line=(commandline -cp | string replace -r "^\S+\s*" "") 2>/dev/null)'
"#;

/// The same for zsh: names where one goes (a word not starting with `-`), else clap's
/// completion of verbs and options.
const ZSH_NAMES: &str = r#"
# Names from oxvirtd (oxvirt __complete-names) where a domain, network, pool or volume goes.
_oxvirt_with_names() {
    if [[ $PREFIX != -* ]]; then
        local -a names
        names=(${(f)"$(${words[1]} __complete-names --line="${(j: :)words[2,CURRENT]}" 2>/dev/null)"})
        if (( ${#names} )); then
            compadd -a names
            return 0
        fi
    fi
    _oxvirt "$@"
}
compdef _oxvirt_with_names oxvirt
"#;

/// `oxvirt completion SHELL`.
pub fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "oxvirt", &mut script);
    match shell {
        clap_complete::Shell::Bash => script.extend_from_slice(BASH_NAMES.as_bytes()),
        clap_complete::Shell::Fish => script.extend_from_slice(FISH_NAMES.as_bytes()),
        clap_complete::Shell::Zsh => script.extend_from_slice(ZSH_NAMES.as_bytes()),
        _ => {}
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// `oxvirt __man-pages DIR`: oxvirt.1, and oxvirt-VERB.1 for every visible verb (and
/// oxvirt-img-VERB.1 for `img`'s own verbs).
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = Cli::command();
    command.build();
    write_pages(&command, "oxvirt", dir)
}

fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.to_string()))
        .render(&mut page)
        .with_context(|| format!("cannot render {name}(1)"))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

// docs/cli.md's reference is generated (and checked) by a unit test below, so these are
// test-only code.

/// The markers around the generated part of docs/cli.md.
#[cfg(test)]
const REFERENCE_BEGIN: &str =
    "<!-- generated from the command-line definition (crates/cli/src/generate.rs, cli_reference); do not edit: a test checks it -->";
#[cfg(test)]
const REFERENCE_END: &str = "<!-- end of the generated reference -->";

/// docs/cli.md's reference: every visible verb (and `img`'s verbs) with its usage and what it
/// does, from the clap definition, so that the page never drifts from it.
#[cfg(test)]
fn cli_reference() -> String {
    let mut command = Cli::command();
    command.build();
    let mut text = String::from("| usage | does |\n|---|---|\n");
    reference_rows(&command, &mut text);
    text
}

#[cfg(test)]
fn reference_rows(command: &clap::Command, text: &mut String) {
    let mut subs: Vec<&clap::Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .collect();
    subs.sort_by_key(|sub| sub.get_name());
    for sub in subs {
        if sub.has_subcommands() {
            reference_rows(sub, text);
            continue;
        }
        // After build(), the usage names the whole command: `oxvirt admin daemon-log-filters ...`.
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ").to_string();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        text.push_str(&format!(
            "| `{}` | {} |\n",
            cell(usage.trim_end()),
            cell(&about)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::complete::verbs;

    /// docs/cli.md is written by hand: every verb must appear in it (as `` `VERB`` or
    /// `` `oxvirt VERB``, and `img`'s verbs as `img a|VERB|...`), so that it never drifts from
    /// the definition.
    #[test]
    fn every_verb_is_documented() {
        let doc = include_str!("../../../docs/cli.md");
        let command = Cli::command();
        let mut missing = Vec::new();
        for verb in verbs(&command) {
            if !doc.contains(&format!("`{verb}")) && !doc.contains(&format!("`oxvirt {verb}")) {
                missing.push(verb.clone());
            }
            let sub = command.find_subcommand(&verb).expect("listed verb");
            for sub_verb in verbs(sub) {
                let documented = doc.contains(&format!("{verb} {sub_verb}"))
                    || doc.contains(&format!("|{sub_verb}|"))
                    || doc.contains(&format!("|{sub_verb}`"));
                if !documented {
                    missing.push(format!("{verb} {sub_verb}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "verbs missing from docs/cli.md: {missing:?}"
        );
    }

    /// docs/cli.md's reference part is what `cli_reference` generates now. After a change of
    /// the command line, `OXVIRT_BLESS=1 cargo test -p oxvirt-cli --bin oxvirt cli_reference`
    /// rewrites it.
    #[test]
    fn cli_reference_is_generated() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
        let doc = std::fs::read_to_string(&path).expect("docs/cli.md");
        let (head, rest) = doc
            .split_once(REFERENCE_BEGIN)
            .expect("docs/cli.md has the generated reference's begin marker");
        let (current, tail) = rest
            .split_once(REFERENCE_END)
            .expect("docs/cli.md has the generated reference's end marker");
        let generated = format!("\n{}", cli_reference());
        if current == generated {
            return;
        }
        if std::env::var_os("OXVIRT_BLESS").is_some() {
            std::fs::write(
                &path,
                format!("{head}{REFERENCE_BEGIN}{generated}{REFERENCE_END}{tail}"),
            )
            .expect("rewrite docs/cli.md");
            return;
        }
        panic!(
            "docs/cli.md's reference differs from the command-line definition: run \
             OXVIRT_BLESS=1 cargo test -p oxvirt-cli --bin oxvirt cli_reference"
        );
    }

    #[test]
    fn a_socket_in_the_line_is_found() {
        assert_eq!(socket_in_line("--socket /s dominfo d"), Some("/s".into()));
        assert_eq!(socket_in_line("dominfo --socket=/t d"), Some("/t".into()));
        assert_eq!(socket_in_line("dominfo d"), None);
    }

    #[test]
    fn argument_ids_name_their_kinds() {
        assert_eq!(NameKind::of_arg("domain"), Some(NameKind::Domain));
        assert_eq!(NameKind::of_arg("vol"), Some(NameKind::Volume));
        assert_eq!(NameKind::of_arg("file"), None);
    }
}
