//! Client → server lines: parsing (server side) and encoding (client side).
//!
//! A line that does not start with `/` is chat text; `//` escapes a text
//! that starts with a slash; everything else starting with `/` is a
//! command whose verb is the first word. Parsing borrows from the line, so
//! handling a command allocates nothing until it must.
//!
//! Parsing checks only the *shape* of a command (is the LEN a number, is
//! there a TEXT after the NAME). Whether a name is free or a key is known
//! is the server's business; see `server::session`.

use super::{DigitsError, ErrorCode, parse_digits};
use std::fmt;
use std::io::Write;

/// One parsed client line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `TEXT` (or `//TEXT`, which says `/TEXT`): broadcast a chat message.
    Say(&'a str),
    /// `/nick NAME`: take a name.
    Nick(&'a str),
    /// `/list`: who is here.
    List,
    /// `/msg NAME TEXT`: a direct message.
    Msg {
        /// Whom to send to.
        to: &'a str,
        /// What to say (never empty).
        text: &'a str,
    },
    /// `/send LEN`: LEN raw bytes and an LF follow. A LEN too large for
    /// `u64` parses as `u64::MAX`, which is over any payload limit.
    Send {
        /// Payload length in bytes.
        len: u64,
    },
    /// `/ping [TOKEN]`: answered `PONG [TOKEN]` (empty: no token).
    Ping(&'a str),
    /// `/pong [TOKEN]`: the answer to a server `PING`.
    Pong(&'a str),
    /// `/resume SEQ [KEY]`: replay what came after SEQ, and with KEY take
    /// over an earlier connection's name.
    Resume {
        /// The last SEQ the client has seen.
        after: u64,
        /// The session key of the earlier connection.
        key: Option<&'a str>,
    },
    /// `/auth TOKEN` (an empty token when none was given).
    Auth(&'a str),
    /// `/mirror KEY`: as a connection's first line, make it a mirror of
    /// the open connection whose session key is KEY (a second link of the
    /// same client: it receives every broadcast, and is never listed nor
    /// announced).
    Mirror(&'a str),
    /// `/help`.
    Help,
    /// `/quit [REASON]` (empty: no reason).
    Quit(&'a str),
}

/// A line that is not a well-formed command: the `ERR` to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// `unknown-command` or `bad-args`.
    pub code: ErrorCode,
    /// What went wrong, in words.
    pub message: String,
}

impl CommandError {
    fn bad_args(usage: &str) -> Self {
        CommandError {
            code: ErrorCode::BadArgs,
            message: format!("usage: {usage}"),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

/// One row per command: what `/help` prints.
pub const HELP: &[&str] = &[
    "TEXT               say TEXT to everyone (start it with // to say /TEXT)",
    "/nick NAME         take a name: 1-32 of A-Z a-z 0-9 _ - .",
    "/list              who is here",
    "/msg NAME TEXT     send TEXT to NAME only",
    "/send LEN          broadcast the LEN raw bytes that follow, then a newline",
    "/ping [TOKEN]      the server answers PONG [TOKEN]",
    "/pong [TOKEN]      answer to a server PING",
    "/resume SEQ [KEY]  replay the events after SEQ; KEY takes back an earlier connection's name",
    "/auth TOKEN        log in, when the server asks for a token",
    "/mirror KEY        first line only: receive everything, unlisted, as a second link of connection KEY",
    "/help              this list",
    "/quit [REASON]     leave",
];

/// The command words, as [`Command::parse`] matches them: in any case
/// (`/NICK` is `/nick`), because a person typing in telnet may have caps
/// lock on. Only the word: arguments keep their case.
const VERBS: &[&str] = &[
    "nick", "list", "msg", "send", "ping", "pong", "resume", "auth", "mirror", "help", "quit",
];

impl<'a> Command<'a> {
    /// Parses one line (already stripped of its line end, and known to be
    /// text). Returns `Ok(None)` for an empty line, which is ignored.
    pub fn parse(line: &'a str) -> Result<Option<Command<'a>>, CommandError> {
        let Some(body) = line.strip_prefix('/') else {
            return Ok((!line.is_empty()).then_some(Command::Say(line)));
        };
        if body.starts_with('/') {
            return Ok(Some(Command::Say(body)));
        }
        let (verb, args) = match body.split_once(' ') {
            Some((verb, args)) => (verb, args),
            None => (body, ""),
        };
        let known = VERBS.iter().find(|v| v.eq_ignore_ascii_case(verb));
        let command = match known.copied().unwrap_or(verb) {
            "nick" if !args.is_empty() => Command::Nick(args),
            "nick" => return Err(CommandError::bad_args("/nick NAME")),
            "list" => Command::List,
            "msg" => match args.split_once(' ') {
                Some((to, text)) if !to.is_empty() && !text.is_empty() => Command::Msg { to, text },
                _ => return Err(CommandError::bad_args("/msg NAME TEXT")),
            },
            "send" => match parse_len(args) {
                Some(len) => Command::Send { len },
                None => return Err(CommandError::bad_args("/send LEN (LEN in decimal digits)")),
            },
            "ping" => Command::Ping(args),
            "pong" => Command::Pong(args),
            "resume" => {
                parse_resume(args).ok_or_else(|| CommandError::bad_args("/resume SEQ [KEY]"))?
            }
            "auth" => Command::Auth(args),
            "mirror" if !args.is_empty() && !args.contains(' ') => Command::Mirror(args),
            "mirror" => return Err(CommandError::bad_args("/mirror KEY")),
            "help" => Command::Help,
            "quit" => Command::Quit(args),
            _ => {
                return Err(CommandError {
                    code: ErrorCode::UnknownCommand,
                    message: format!("/{verb} is not a command; /help lists them"),
                });
            }
        };
        Ok(Some(command))
    }

    /// Appends this command as one line, LF included, to `out`. (For
    /// [`Command::Send`] only the header line: the caller appends the
    /// payload and its LF.)
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Command::Say(text) if text.starts_with('/') => writeln!(out, "/{text}"),
            Command::Say(text) => writeln!(out, "{text}"),
            Command::Nick(name) => writeln!(out, "/nick {name}"),
            Command::List => writeln!(out, "/list"),
            Command::Msg { to, text } => writeln!(out, "/msg {to} {text}"),
            Command::Send { len } => writeln!(out, "/send {len}"),
            Command::Ping(token) => writeln!(out, "/ping{}", opt_field(token)),
            Command::Pong(token) => writeln!(out, "/pong{}", opt_field(token)),
            Command::Resume { after, key: None } => writeln!(out, "/resume {after}"),
            Command::Resume {
                after,
                key: Some(key),
            } => writeln!(out, "/resume {after} {key}"),
            Command::Auth(token) => writeln!(out, "/auth {token}"),
            Command::Mirror(key) => writeln!(out, "/mirror {key}"),
            Command::Help => writeln!(out, "/help"),
            Command::Quit(reason) => writeln!(out, "/quit{}", opt_field(reason)),
        };
    }
}

/// `" FIELD"`, or nothing for an empty optional field.
fn opt_field(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(" {field}")
    }
}

/// Plain ASCII digits, at least one. A number too large for `u64`
/// saturates: it is still "a decimal number", just over every limit.
fn parse_len(s: &str) -> Option<u64> {
    match parse_digits(s.as_bytes()) {
        Ok(len) => Some(len),
        Err(DigitsError::Overflow) => Some(u64::MAX),
        Err(DigitsError::Empty | DigitsError::NotDigit) => None,
    }
}

fn parse_resume(args: &str) -> Option<Command<'_>> {
    let (seq, key) = match args.split_once(' ') {
        Some((seq, key)) => (seq, Some(key)),
        None => (args, None),
    };
    if key.is_some_and(|k| k.is_empty() || k.contains(' ')) {
        return None;
    }
    let after = parse_digits(seq.as_bytes()).ok()?;
    Some(Command::Resume { after, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command<'_> {
        Command::parse(line).unwrap().unwrap()
    }

    fn code(line: &str) -> ErrorCode {
        Command::parse(line).unwrap_err().code
    }

    #[test]
    fn command_words_are_read_in_any_case_and_arguments_kept() {
        assert_eq!(
            Command::parse("/NICK Dave"),
            Ok(Some(Command::Nick("Dave")))
        );
        assert_eq!(Command::parse("/List"), Ok(Some(Command::List)));
        assert_eq!(
            Command::parse("/MSG Bob Hi There"),
            Ok(Some(Command::Msg {
                to: "Bob",
                text: "Hi There"
            }))
        );
        let err = Command::parse("/NICKS x").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownCommand);
        assert!(err.message.starts_with("/NICKS "), "{}", err.message);
    }

    #[test]
    fn help_rows_line_up() {
        let column = |row: &str| {
            row.find("  ")
                .map(|i| i + row[i..].len() - row[i..].trim_start().len())
        };
        let first = column(HELP[0]);
        for row in HELP {
            assert_eq!(column(row), first, "{row}");
        }
    }

    #[test]
    fn text_and_escapes() {
        assert_eq!(Command::parse("").unwrap(), None);
        assert_eq!(parse("hello world"), Command::Say("hello world"));
        assert_eq!(parse(" "), Command::Say(" "));
        assert_eq!(parse("//etc/passwd"), Command::Say("/etc/passwd"));
        assert_eq!(parse("//"), Command::Say("/"));
    }

    #[test]
    fn commands_and_their_arguments() {
        assert_eq!(parse("/nick alice"), Command::Nick("alice"));
        assert_eq!(parse("/list"), Command::List);
        assert_eq!(
            parse("/msg bob hi there"),
            Command::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(parse("/send 0"), Command::Send { len: 0 });
        assert_eq!(parse("/send 007"), Command::Send { len: 7 });
        assert_eq!(
            parse("/send 99999999999999999999999"),
            Command::Send { len: u64::MAX }
        );
        assert_eq!(parse("/ping"), Command::Ping(""));
        assert_eq!(parse("/ping a b"), Command::Ping("a b"));
        assert_eq!(parse("/pong 3"), Command::Pong("3"));
        assert_eq!(
            parse("/resume 5"),
            Command::Resume {
                after: 5,
                key: None
            }
        );
        assert_eq!(
            parse("/resume 0 abc"),
            Command::Resume {
                after: 0,
                key: Some("abc")
            }
        );
        assert_eq!(parse("/auth s3cret"), Command::Auth("s3cret"));
        assert_eq!(parse("/auth"), Command::Auth(""));
        assert_eq!(parse("/mirror 9f2c"), Command::Mirror("9f2c"));
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit(""));
        assert_eq!(parse("/quit gone home"), Command::Quit("gone home"));
    }

    #[test]
    fn malformed_commands() {
        assert_eq!(code("/nick"), ErrorCode::BadArgs);
        assert_eq!(code("/msg bob"), ErrorCode::BadArgs);
        assert_eq!(code("/msg bob "), ErrorCode::BadArgs);
        assert_eq!(code("/send"), ErrorCode::BadArgs);
        assert_eq!(code("/send -1"), ErrorCode::BadArgs);
        assert_eq!(code("/send 1e3"), ErrorCode::BadArgs);
        assert_eq!(code("/send 5 x"), ErrorCode::BadArgs);
        assert_eq!(code("/resume"), ErrorCode::BadArgs);
        assert_eq!(code("/resume x"), ErrorCode::BadArgs);
        assert_eq!(code("/resume 1 k extra"), ErrorCode::BadArgs);
        assert_eq!(code("/resume 99999999999999999999999"), ErrorCode::BadArgs);
        assert_eq!(code("/mirror"), ErrorCode::BadArgs);
        assert_eq!(code("/mirror k extra"), ErrorCode::BadArgs);
        assert_eq!(code("/NICKNAME bob"), ErrorCode::UnknownCommand);
        assert_eq!(code("/"), ErrorCode::UnknownCommand);
        assert_eq!(code("/frobnicate"), ErrorCode::UnknownCommand);
    }

    #[test]
    fn encode_then_parse_gives_the_command_back() {
        let commands = [
            Command::Say("hi"),
            Command::Say("/not a command"),
            Command::Nick("bob"),
            Command::List,
            Command::Msg {
                to: "a",
                text: "b c",
            },
            Command::Send { len: 12 },
            Command::Ping(""),
            Command::Ping("t 1"),
            Command::Pong("x"),
            Command::Resume {
                after: 9,
                key: Some("k"),
            },
            Command::Resume {
                after: 9,
                key: None,
            },
            Command::Auth("tok"),
            Command::Mirror("k"),
            Command::Help,
            Command::Quit(""),
            Command::Quit("bye now"),
        ];
        for c in commands {
            let mut out = Vec::new();
            c.encode(&mut out);
            let line = std::str::from_utf8(&out).unwrap();
            let line = line.strip_suffix('\n').unwrap();
            assert_eq!(parse(line), c, "{line:?}");
        }
    }
}
