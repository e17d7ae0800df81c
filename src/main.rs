//! The `tickcast` command: a thin layer over the library. Each subcommand
//! lives in its own file under `src/cli/`; this file only parses the
//! command line and dispatches.
//!
//! The command line is parsed by `argh`, which takes an option's value as
//! the next word (`--tick-ms 500`) and does not understand
//! `--tick-ms=500`. Rather than let that fail with "Unrecognized argument",
//! [`equals_form`] spots it first and says how to write it.

#![forbid(unsafe_code)]

mod cli;

use argh::FromArgs;
use std::process::ExitCode;

/// tickcast: a TCP broadcast hub for notifications and chat, and its client.
#[derive(FromArgs)]
#[argh(
    example = "tickcast serve",
    example = "tickcast chat --name alice",
    note = "Options take their value after a space: `--bind :7879`, not `--bind=:7879`. \
            `tickcast serve --help` and `tickcast chat --help` list each command's options."
)]
struct Tickcast {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,

    #[argh(subcommand)]
    command: Option<Command>,
}

// Made once per run: the size difference of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(cli::serve::ServeArgs),
    Chat(cli::chat::ChatArgs),
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().collect();
    if let Some(message) = equals_form(&words[1..]) {
        cli::log_line(format_args!("tickcast: {message}"));
        return ExitCode::FAILURE;
    }
    let args: Tickcast = argh::from_env();
    if args.version {
        println!("tickcast {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match args.command {
        Some(Command::Serve(args)) => cli::serve::run(args),
        Some(Command::Chat(args)) => cli::chat::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        None => Err(
            "say what to do: `tickcast serve` runs a hub, `tickcast chat` joins one, \
             `tickcast bench` measures one (`tickcast --help` for more)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::log_line(format_args!("tickcast: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// An `--option=value` word (before any `--`), which argh would refuse
/// without saying why: the message to print instead.
fn equals_form(words: &[String]) -> Option<String> {
    let word = words
        .iter()
        .take_while(|w| *w != "--")
        .find(|w| w.starts_with("--") && w.contains('='))?;
    let (option, value) = word.split_once('=')?;
    Some(format!(
        "write `{option} {value}` instead of `{word}`: options take their value after a space"
    ))
}
