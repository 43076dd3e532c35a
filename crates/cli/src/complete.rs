//! What the word being typed is: the completion logic the shell's tab key and the completion
//! scripts (`oxvirt __complete-names --line`) share, read from the clap definition.

use clap::{CommandFactory, ValueEnum};

use crate::Cli;

/// Words the shell understands besides the verbs of the clap definition.
pub const SHELL_WORDS: [&str; 3] = ["help", "quit", "exit"];

/// The kinds of objects whose names complete.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Domain,
    Network,
    Pool,
    Volume,
    Secret,
}

impl NameKind {
    /// The kind an argument names, from its clap id (`DomainArg::domain`, `NetworkArg::network`,
    /// `PoolArg::pool`, `VolumeArg::vol` and `--pool`, `SecretArg::secret`).
    pub fn of_arg(id: &str) -> Option<NameKind> {
        match id {
            // `clone --original DOMAIN` names one too.
            "domain" | "original" => Some(NameKind::Domain),
            "network" => Some(NameKind::Network),
            "pool" => Some(NameKind::Pool),
            "vol" => Some(NameKind::Volume),
            "secret" => Some(NameKind::Secret),
            _ => None,
        }
    }
}

/// The visible verbs of `command`, sorted.
pub fn verbs(command: &clap::Command) -> Vec<String> {
    let mut verbs: Vec<String> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_name().to_string())
        .collect();
    verbs.sort();
    verbs
}

/// What the word under the cursor should be completed with.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// Fixed words (verbs, options), already filtered by the prefix typed.
    Words { start: usize, words: Vec<String> },
    /// Names fetched from the daemon.
    Names {
        start: usize,
        kind: NameKind,
        pool: Option<String>,
    },
    /// A file name (e.g. `define FILE`).
    Files,
}

/// If the word being typed at the end of `before` is a name: its kind, the `--pool` given for a
/// volume, and the part typed so far.
pub fn name_target(before: &str) -> Option<(NameKind, Option<String>, String)> {
    match completion_target(before) {
        Target::Names { start, kind, pool } => Some((kind, pool, before[start..].to_string())),
        _ => None,
    }
}

/// Works out, from the line up to the cursor, what the word being typed is.
pub fn completion_target(before: &str) -> Target {
    let start = before
        .rfind(char::is_whitespace)
        .map_or(0, |index| index + 1);
    let word = &before[start..];
    let earlier: Vec<&str> = before[..start].split_whitespace().collect();
    let cli = Cli::command();
    let fixed = |candidates: Vec<String>| Target::Words {
        start,
        words: candidates
            .into_iter()
            .filter(|candidate| candidate.starts_with(word))
            .collect(),
    };

    // The verb: the first word that is not a global option (--socket, --connect, ...) or its
    // value.
    let mut rest = earlier.iter();
    let verb = loop {
        match rest.next() {
            None => break None,
            Some(&("--socket" | "--connect" | "--token" | "--user" | "--ca")) => {
                rest.next();
            }
            Some(option) if option.starts_with('-') => {}
            Some(verb) => break Some(*verb),
        }
    };
    let Some(verb) = verb else {
        if word.starts_with('-') {
            return fixed(vec!["--socket".into(), "--help".into(), "--version".into()]);
        }
        let mut verbs = verbs(&cli);
        verbs.extend(SHELL_WORDS.iter().map(|word| word.to_string()));
        verbs.sort();
        verbs.dedup();
        return fixed(verbs);
    };
    if verb == "help" {
        return fixed(verbs(&cli));
    }
    let Some(command) = cli.find_subcommand(verb) else {
        return fixed(Vec::new());
    };
    let after_verb: Vec<&str> = rest.copied().collect();

    // The value of an option (`--pool NAME`, `--socket PATH`, ...).
    if let Some(previous) = after_verb.last().and_then(|word| word.strip_prefix("--")) {
        if let Some(option) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(previous))
        {
            if option.get_action().takes_values() {
                return match NameKind::of_arg(option.get_id().as_str()) {
                    Some(kind) => Target::Names {
                        start,
                        kind,
                        pool: None,
                    },
                    None => Target::Files,
                };
            }
        } else if previous == "socket" {
            return Target::Files;
        }
    }
    if word.starts_with('-') {
        let mut options: Vec<String> = command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        options.extend(["--help".to_string(), "--socket".to_string()]);
        return fixed(options);
    }

    // A positional argument: count those already given (skipping option values).
    let mut given = 0;
    let mut pool = None;
    let mut words = after_verb.iter();
    while let Some(earlier_word) = words.next() {
        if let Some(long) = earlier_word.strip_prefix("--") {
            let (long, inline_value) = match long.split_once('=') {
                Some((long, value)) => (long, Some(value.to_string())),
                None => (long, None),
            };
            let takes_value = long == "socket"
                || command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long) && arg.get_action().takes_values());
            let value = match inline_value {
                Some(value) => Some(value),
                None if takes_value => words.next().map(|value| value.to_string()),
                None => None,
            };
            if long == "pool" {
                pool = value;
            }
        } else if !earlier_word.starts_with('-') {
            given += 1;
        }
    }
    let positional = command
        .get_positionals()
        .nth(given)
        .map(|arg| arg.get_id().as_str().to_string());
    match positional.as_deref().and_then(NameKind::of_arg) {
        Some(kind) => Target::Names {
            start,
            kind,
            pool: if kind == NameKind::Volume { pool } else { None },
        },
        None if command.has_subcommands() => fixed(verbs(command)),
        None => Target::Files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(target: Target) -> Vec<String> {
        match target {
            Target::Words { words, .. } => words,
            other => panic!("not fixed words: {other:?}"),
        }
    }

    #[test]
    fn verbs_complete_from_the_clap_definition() {
        assert_eq!(words(completion_target("li")), ["list"]);
        let dom = words(completion_target("domi"));
        assert!(dom.contains(&"dominfo".to_string()), "{dom:?}");
        assert!(words(completion_target("qu")).contains(&"quit".to_string()));
        assert!(words(completion_target("help net-i")).contains(&"net-info".to_string()));
        // Hidden helpers are not offered.
        assert!(words(completion_target("__")).is_empty());
    }

    #[test]
    fn options_complete_per_verb() {
        let options = words(completion_target("list --a"));
        assert!(options.contains(&"--all".to_string()), "{options:?}");
        assert!(options.contains(&"--autostart".to_string()), "{options:?}");
        assert_eq!(words(completion_target("domstate vm --re")), ["--reason"]);
    }

    #[test]
    fn names_complete_by_the_kind_of_argument() {
        assert_eq!(
            completion_target("dominfo d"),
            Target::Names {
                start: 8,
                kind: NameKind::Domain,
                pool: None
            }
        );
        assert_eq!(
            completion_target("--socket /x.sock start --console w"),
            Target::Names {
                start: 33,
                kind: NameKind::Domain,
                pool: None
            }
        );
        assert!(matches!(
            completion_target("net-info "),
            Target::Names {
                kind: NameKind::Network,
                ..
            }
        ));
        assert_eq!(
            completion_target("vol-info --pool default v"),
            Target::Names {
                start: 24,
                kind: NameKind::Volume,
                pool: Some("default".into())
            }
        );
        assert!(matches!(
            completion_target("vol-info v --pool "),
            Target::Names {
                kind: NameKind::Pool,
                ..
            }
        ));
        assert_eq!(completion_target("define "), Target::Files);
    }
}
