//! The subcommands of the `tickcast` binary.

pub mod chat;
pub mod serve;

/// Current wall-clock time in the protocol's format, for log lines.
pub fn now() -> String {
    tickcast::protocol::format_time(std::time::SystemTime::now())
}
