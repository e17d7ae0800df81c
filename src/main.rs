//! The `tickcast` command: a thin layer over the library. Each subcommand
//! lives in its own file under `src/cli/`; this file only parses the
//! command line and dispatches.

mod cli;

use argh::FromArgs;
use std::process::ExitCode;

/// tickcast: a TCP broadcast hub for notifications and chat, and its client.
#[derive(FromArgs)]
struct Tickcast {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(cli::serve::ServeArgs),
    Chat(cli::chat::ChatArgs),
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let args: Tickcast = argh::from_env();
    let result = match args.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::log_line(format_args!("tickcast: {e}"));
            ExitCode::FAILURE
        }
    }
}
