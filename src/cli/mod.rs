//! The subcommands of the `tickcast` binary.

pub mod bench;
pub mod chat;
pub mod serve;

/// The environment variable that may hold the token, for `serve` and
/// `chat` alike (it does not show in `ps`, unlike `--token`).
const TOKEN_ENV: &str = "TICKCAST_TOKEN";

/// The token: `--token` if given, else a non-empty `TICKCAST_TOKEN`.
pub fn token(option: Option<String>) -> Option<String> {
    option.or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
}

/// Writes one line to stderr. A log line that cannot be written (stderr
/// closed, a full disk, a pipe whose reader is gone) is lost, and that is
/// all: `eprintln!` would panic and take the server down with it.
pub fn log_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Current wall-clock time in the protocol's format, for log lines.
pub fn now() -> String {
    tickcast::protocol::format_time(std::time::SystemTime::now())
}
