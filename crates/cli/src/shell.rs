//! virsh's interactive shell: `oxvirt` with no command, or `oxvirt shell`.
//!
//! Each line is split into words as a POSIX shell would (shlex) and parsed with the very clap
//! definition of the command line, then run by the same dispatch: the shell has no verbs of its
//! own besides `quit`/`exit` (clap's `help` and `help VERB` serve as virsh's). On a terminal it
//! is a rustyline prompt with history and tab completion; otherwise lines are read from stdin
//! and run in order with no prompt, as `echo "list --all" | virsh` does.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};

use crate::complete::{completion_target, Target};
use crate::generate;
use crate::Cli;

pub const LONG_ABOUT: &str = "Interactive shell, as virsh with no command (also `oxvirt` alone).

On a terminal: a prompt `oxvirt # ` with line editing, history (kept in \
$XDG_CACHE_HOME/oxvirt/history, default ~/.cache/oxvirt/history) and tab completion of verbs, \
options and domain, network, pool and volume names. `help` lists the verbs, `help VERB` \
explains one, `quit` or `exit` (or Ctrl-D) leaves. Words are split as in a POSIX shell \
(quotes, backslashes, # comments).

Not on a terminal, commands are read one a line and run in order without a prompt \
(`echo 'list --all' | oxvirt`). A failing command prints its `error: ...` and the next one \
runs; as in virsh, the exit status is 0 once the input ends or `quit` is read.

--socket given to `oxvirt` carries into every command of the shell.";

const PROMPT: &str = "oxvirt # ";

pub fn run(socket: &Path) -> ExitCode {
    if std::io::stdin().is_terminal() {
        interactive(socket)
    } else {
        script(socket)
    }
}

enum Flow {
    Continue,
    Quit,
}

/// Piped input: each line runs in order; errors are printed and the script goes on.
fn script(socket: &Path) -> ExitCode {
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "error: cannot read stdin: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Flow::Quit = run_line(socket, &line) {
            break;
        }
    }
    // virsh's shell exits 0 at the end of its input whatever the last command did.
    ExitCode::SUCCESS
}

fn interactive(socket: &Path) -> ExitCode {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the shell: {err}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(ShellHelper {
        socket: socket.to_path_buf(),
        files: FilenameCompleter::new(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the normal first run.
        let _ = editor.load_history(path);
    }
    println!(
        "Welcome to oxvirt, the virtualization interactive terminal.\n\n\
         Type:  'help' for help with commands\n       'quit' to quit\n"
    );
    let mut code = ExitCode::SUCCESS;
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                // Without the space a completion leaves at the end; blank lines are not kept.
                let entry = line.trim_end();
                if !entry.trim_start().is_empty() {
                    let _ = editor.add_history_entry(entry);
                }
                let flow = run_line(socket, &line);
                // Saved after every line, so that a console session killed from outside or a
                // second shell does not lose it.
                if let Some(path) = &history {
                    save_history(&mut editor, path);
                }
                if let Flow::Quit = flow {
                    break;
                }
            }
            // Ctrl-C drops the line being typed, as in bash and virsh.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                println!();
                break;
            }
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "error: cannot read a line: {err}");
                code = ExitCode::FAILURE;
                break;
            }
        }
    }
    code
}

/// `$XDG_CACHE_HOME/oxvirt/history`, else `~/.cache/oxvirt/history` (virsh keeps its own in
/// `~/.cache/virsh/history`); none when neither variable is set.
fn history_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            PathBuf::from(std::env::var_os("HOME").filter(|home| !home.is_empty())?).join(".cache")
        }
    };
    Some(cache.join("oxvirt").join("history"))
}

fn save_history(editor: &mut Editor<ShellHelper, FileHistory>, path: &Path) {
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(ReadlineError::from)
        .and_then(|()| editor.save_history(path));
    if let Err(err) = saved {
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot save the history in {}: {err}",
            path.display()
        );
    }
}

/// Runs one line of the shell. Errors are printed here; the shell always goes on.
fn run_line(socket: &Path, line: &str) -> Flow {
    let Some(words) = shlex::split(line) else {
        let _ = writeln!(std::io::stderr(), "error: unbalanced quotes in: {line}");
        return Flow::Continue;
    };
    let Some(first) = words.first() else {
        return Flow::Continue;
    };
    if first == "quit" || first == "exit" {
        return Flow::Quit;
    }
    let args = std::iter::once("oxvirt".to_string()).chain(words);
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            // Usage errors, and `help`/`--help` (which clap reports as an "error" on stdout).
            let _ = err.print();
            return Flow::Continue;
        }
    };
    // The shell's --socket, unless the line names another one.
    let socket = if matches.value_source("socket") == Some(ValueSource::CommandLine) {
        cli.socket
    } else {
        socket.to_path_buf()
    };
    if let Some(command) = cli.command {
        let outcome = crate::remote::client(&cli.connect, &socket)
            .and_then(|client| crate::run(&client, command));
        if let Err(err) = outcome {
            crate::report_error(&err);
        }
    }
    Flow::Continue
}

struct ShellHelper {
    socket: PathBuf,
    files: FilenameCompleter,
}

impl Helper for ShellHelper {}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Hinter for ShellHelper {
    type Hint = String;
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        match completion_target(before) {
            Target::Words { start, words } => Ok((start, pairs(words))),
            Target::Names { start, kind, pool } => {
                let client = oxvirt_api::Client::new(self.socket.clone());
                // No daemon, no names: completion just offers nothing.
                let names = generate::names(&client, kind, pool.as_deref()).unwrap_or_default();
                let word = &before[start..];
                let names = names.into_iter().filter(|name| name.starts_with(word));
                Ok((start, pairs(names.collect())))
            }
            Target::Files => self.files.complete(line, pos, ctx),
        }
    }
}

/// Candidates completed with a space after them, as bash does for a unique match.
fn pairs(words: Vec<String>) -> Vec<Pair> {
    words
        .into_iter()
        .map(|word| Pair {
            replacement: format!("{word} "),
            display: word,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_split_as_a_shell_does() {
        assert_eq!(
            shlex::split("define 'my vm.xml' # a comment"),
            Some(vec!["define".to_string(), "my vm.xml".to_string()])
        );
        assert_eq!(shlex::split("dominfo 'unbalanced"), None);
    }
}
