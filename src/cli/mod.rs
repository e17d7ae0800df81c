//! The subcommands of the `tickcast` binary, and what they share: the
//! token, log output, and values with units.

pub mod bench;
pub mod chat;
pub mod log;
pub mod serve;
pub mod units;

/// The environment variable that may hold the token, for `serve` and
/// `chat` alike (it does not show in `ps`, unlike `--token`).
const TOKEN_ENV: &str = "TICKCAST_TOKEN";

/// The token: `--token` if given, else `TICKCAST_TOKEN` if set. An empty
/// one is an error either way: `TICKCAST_TOKEN=` in a service file is far
/// more likely a mistake than a wish to run an open server.
pub fn token(option: Option<String>) -> Result<Option<String>, String> {
    if option.is_some() {
        return non_empty_token(option, "--token");
    }
    non_empty_token(std::env::var(TOKEN_ENV).ok(), TOKEN_ENV)
}

/// `token` unless it is empty, which is an error naming `source`.
pub fn non_empty_token(token: Option<String>, source: &str) -> Result<Option<String>, String> {
    match token {
        Some(token) if token.is_empty() => Err(format!(
            "{source} is empty: set it to the token, or leave it out (no token)"
        )),
        token => Ok(token),
    }
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
