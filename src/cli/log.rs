//! The server's log lines: a timestamp, a level, a message, and for
//! machines (`--log-format json`) the same as one JSON object per line.
//!
//! ```text
//! 2026-11-22T10:00:05.123Z INFO connect guest-1 127.0.0.1:50312 (id 1)
//! {"ts":"2026-11-22T10:00:05.123Z","level":"INFO","msg":"connect guest-1 127.0.0.1:50312 (id 1)","event":"connect","id":1,"name":"guest-1","peer":"127.0.0.1:50312"}
//! ```
//!
//! The levels are the three an operator acts on: `INFO` (all is well),
//! `WARN` (a client was dropped or turned away: worth a look if it
//! repeats), `ERROR` (the server itself is in trouble). journald and log
//! shippers read the level from the text or the JSON field.
//!
//! Every line goes to stderr through [`super::log_line`], so a log line
//! that cannot be written is lost quietly instead of stopping the server.
//! JSON is written by hand here (a dozen lines) rather than through a
//! JSON library: the values are short strings and numbers.

use serde::{Deserialize, Serialize};
use std::fmt::{self, Write};
use std::str::FromStr;

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// `TIME LEVEL MESSAGE`, for people (the default).
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `msg`, and the event's
    /// own fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected text or json; got {text:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// How much a line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something a client did or suffered; the server is fine.
    Warn,
    /// The server itself has a problem.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// A value of an event field: JSON keeps numbers as numbers.
#[derive(Debug, Clone)]
pub enum Value {
    /// Written as a JSON string.
    Text(String),
    /// Written as a JSON number.
    Number(u64),
    /// Written as `true` or `false`.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// Writes log lines in one format.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    /// Text or JSON.
    pub format: LogFormat,
}

impl Logger {
    /// One timestamped line. `fields` are for JSON only (the text line is
    /// `msg`, which says the same in words); each names what the event
    /// was about: `event`, `id`, `name`, `peer`, `reason`…
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        let time = super::now();
        match self.format {
            LogFormat::Text => super::log_line(format_args!("{time} {level} {msg}")),
            LogFormat::Json => {
                super::log_line(format_args!("{}", json_line(&time, level, msg, fields)))
            }
        }
    }

    /// A line of the startup banner (after `tickcast listening on ADDR`):
    /// `tickcast MSG` as plain text, untimestamped like the first line, or
    /// an `INFO` JSON line.
    pub fn startup(&self, msg: &str, fields: &[(&str, Value)]) {
        match self.format {
            LogFormat::Text => super::log_line(format_args!("tickcast {msg}")),
            LogFormat::Json => self.log(Level::Info, msg, fields),
        }
    }
}

/// `{"ts":…,"level":…,"msg":…,…}`.
fn json_line(time: &str, level: Level, msg: &str, fields: &[(&str, Value)]) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"ts\":");
    json_string(&mut out, time);
    out.push_str(",\"level\":");
    json_string(&mut out, &level.to_string());
    out.push_str(",\"msg\":");
    json_string(&mut out, msg);
    for (key, value) in fields {
        out.push(',');
        json_string(&mut out, key);
        out.push(':');
        match value {
            Value::Text(text) => json_string(&mut out, text),
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
        }
    }
    out.push('}');
    out
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped (RFC 8259, section 7); everything else is written as it is.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_ts_level_msg_and_fields() {
        let line = json_line(
            "2026-11-22T10:00:05.123Z",
            Level::Warn,
            "disconnect \"bob\"\n",
            &[
                ("id", 7.into()),
                ("name", "bob".into()),
                ("ok", true.into()),
            ],
        );
        assert_eq!(
            line,
            r#"{"ts":"2026-11-22T10:00:05.123Z","level":"WARN","msg":"disconnect \"bob\"\n","id":7,"name":"bob","ok":true}"#
        );
        let mut s = String::new();
        json_string(&mut s, "a\u{1}b\\");
        assert_eq!(s, r#""a\u0001b\\""#);
    }

    #[test]
    fn log_formats_read_and_write_the_same_words() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!(
            "JSON"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
    }
}
