//! Server → client lines: encoding (server side) and parsing (client side).
//!
//! Every server line is `VERB FIELD FIELD … [TEXT]`: words separated by one
//! space, and for some verbs a last free-text field that may hold spaces.
//! When that text is empty the line simply ends after the last word (so
//! `PONG` is a `PONG` with no token).
//!
//! [`ServerLine`] borrows its strings from the line it was parsed from;
//! the server builds one from its own strings just long enough to encode
//! it. Encoding then parsing gives back the same value (a property test in
//! `tests/` checks this for arbitrary values).

use super::{ErrorCode, Reason, format_time, parse_digits, parse_time};
use std::fmt;
use std::time::SystemTime;

/// One server line. Variants with a `seq` are *broadcast events*: every
/// client receives them, in the same order, numbered by one server-wide
/// counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `WELCOME ID NAME TIME KEY EPOCH TEXT`: the first line on every
    /// accepted connection.
    Welcome {
        /// This connection's id; its first name is `guest-ID`.
        id: u64,
        /// The name it starts with.
        name: &'a str,
        /// Server time at connect.
        time: SystemTime,
        /// The secret session key (`/resume SEQ KEY` on a later
        /// connection takes this one's name back).
        key: &'a str,
        /// Names this run of the server; changes at every start.
        epoch: &'a str,
        /// A greeting.
        text: &'a str,
    },
    /// `MSG SEQ FROM TEXT`: a chat message.
    Msg {
        /// Broadcast sequence number.
        seq: u64,
        /// Sender's name.
        from: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `DATA SEQ FROM LEN`: LEN raw bytes and an LF follow.
    Data {
        /// Broadcast sequence number.
        seq: u64,
        /// Sender's name.
        from: &'a str,
        /// Payload length.
        len: u64,
    },
    /// `DM FROM TEXT`: a direct message.
    Dm {
        /// Sender's name (`*` for the program embedding the server).
        from: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `JOIN SEQ NAME`: NAME connected.
    Join {
        /// Broadcast sequence number.
        seq: u64,
        /// Who joined.
        name: &'a str,
    },
    /// `NICK SEQ OLD NEW`: OLD is now called NEW.
    Nick {
        /// Broadcast sequence number.
        seq: u64,
        /// The name before.
        old: &'a str,
        /// The name after.
        new: &'a str,
    },
    /// `LEAVE SEQ NAME REASON`: NAME is gone.
    Leave {
        /// Broadcast sequence number.
        seq: u64,
        /// Who left.
        name: &'a str,
        /// Why.
        reason: Reason,
    },
    /// `TICK SEQ TIME TEXT`: a notification from the server itself.
    Tick {
        /// Broadcast sequence number.
        seq: u64,
        /// When it was sent.
        time: SystemTime,
        /// The notification.
        text: &'a str,
    },
    /// `USERS N NAME …`: the answer to `/list`.
    Users {
        /// The names, in the server's order (sorted without regard to case).
        names: Vec<&'a str>,
    },
    /// `PING TOKEN`: the server wants a sign of life (answer `/pong TOKEN`).
    Ping(&'a str),
    /// `PONG [TOKEN]`: the answer to `/ping [TOKEN]`.
    Pong(&'a str),
    /// `HELP TEXT`: one line of help.
    Help(&'a str),
    /// `OK WHAT …`: a command of this client succeeded.
    Ok {
        /// Which command (`nick`, `msg`, `resume`, `auth`, `help`).
        what: &'a str,
        /// The rest of the line (`NAME` for nick/msg, `LAST` for resume).
        detail: &'a str,
    },
    /// `ERR CODE TEXT`: a command of this client failed.
    Err {
        /// What kind of failure.
        code: ErrorCode,
        /// What went wrong, in words (for `resume-gap`: the oldest SEQ
        /// still held).
        text: &'a str,
    },
    /// `BYE REASON`: the server closes the connection after this line.
    Bye(Reason),
}

/// A server line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    message: String,
}

impl LineError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        LineError {
            message: message.into(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LineError {}

impl<'a> ServerLine<'a> {
    /// The broadcast SEQ of this line, if it is a broadcast event.
    pub fn seq(&self) -> Option<u64> {
        match *self {
            ServerLine::Msg { seq, .. }
            | ServerLine::Data { seq, .. }
            | ServerLine::Join { seq, .. }
            | ServerLine::Nick { seq, .. }
            | ServerLine::Leave { seq, .. }
            | ServerLine::Tick { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// Appends this line, LF included, to `out`. (For [`ServerLine::Data`]
    /// only the header: the caller appends the payload and its LF, or uses
    /// [`encode_data`].)
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut line = Words(out);
        match self {
            ServerLine::Welcome {
                id,
                name,
                time,
                key,
                epoch,
                text,
            } => line
                .verb("WELCOME")
                .number(*id)
                .word(name)
                .word(&format_time(*time))
                .word(key)
                .word(epoch)
                .text(text),
            ServerLine::Msg { seq, from, text } => {
                line.verb("MSG").number(*seq).word(from).text(text)
            }
            ServerLine::Data { seq, from, len } => {
                line.verb("DATA").number(*seq).word(from).number(*len)
            }
            ServerLine::Dm { from, text } => line.verb("DM").word(from).text(text),
            ServerLine::Join { seq, name } => line.verb("JOIN").number(*seq).word(name),
            ServerLine::Nick { seq, old, new } => {
                line.verb("NICK").number(*seq).word(old).word(new)
            }
            ServerLine::Leave { seq, name, reason } => line
                .verb("LEAVE")
                .number(*seq)
                .word(name)
                .word(reason.as_str()),
            ServerLine::Tick { seq, time, text } => {
                let time = format_time(*time);
                line.verb("TICK").number(*seq).word(&time).text(text)
            }
            ServerLine::Users { names } => {
                line.verb("USERS").number(names.len() as u64);
                for name in names {
                    line.word(name);
                }
                &mut line
            }
            ServerLine::Ping(token) => line.verb("PING").text(token),
            ServerLine::Pong(token) => line.verb("PONG").text(token),
            ServerLine::Help(text) => line.verb("HELP").text(text),
            ServerLine::Ok { what, detail } => line.verb("OK").word(what).text(detail),
            ServerLine::Err { code, text } => line.verb("ERR").word(code.as_str()).text(text),
            ServerLine::Bye(reason) => line.verb("BYE").word(reason.as_str()),
        };
        out.push(b'\n');
    }

    /// This line as a `String`, LF included (handy in tests and logs).
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.encode(&mut out);
        String::from_utf8(out).expect("server lines are built from str")
    }

    /// The SEQ of a broadcast line that cannot be parsed as a whole (too
    /// long, or otherwise broken), read from its start: `VERB SEQ …` with
    /// VERB one of the broadcast verbs. A client uses it to say exactly
    /// which event it could not read, instead of leaving a silent hole.
    pub fn broadcast_seq(line: &[u8]) -> Option<u64> {
        let space = line.iter().position(|&b| b == b' ')?;
        let (verb, rest) = (&line[..space], &line[space + 1..]);
        if !BROADCAST_VERBS.iter().any(|v| v.as_bytes() == verb) {
            return None;
        }
        let space = rest.iter().position(|&b| b == b' ')?;
        parse_digits(&rest[..space]).ok()
    }

    /// Parses one server line (without its line end).
    pub fn parse(line: &'a str) -> Result<ServerLine<'a>, LineError> {
        let mut f = Fields::new(line);
        let verb = f.word("verb")?;
        if BROADCAST_VERBS.contains(&verb) {
            ServerLine::parse_event(verb, f)
        } else {
            ServerLine::parse_reply(verb, f, line)
        }
    }

    /// The fields of a broadcast event, after its VERB.
    fn parse_event(verb: &str, mut f: Fields<'a>) -> Result<ServerLine<'a>, LineError> {
        Ok(match verb {
            "MSG" => ServerLine::Msg {
                seq: f.number("SEQ")?,
                from: f.word("FROM")?,
                text: f.text(),
            },
            "DATA" => ServerLine::Data {
                seq: f.number("SEQ")?,
                from: f.word("FROM")?,
                len: f.last_number("LEN")?,
            },
            "JOIN" => ServerLine::Join {
                seq: f.number("SEQ")?,
                name: f.last_word("NAME")?,
            },
            "NICK" => ServerLine::Nick {
                seq: f.number("SEQ")?,
                old: f.word("OLD")?,
                new: f.last_word("NEW")?,
            },
            "LEAVE" => ServerLine::Leave {
                seq: f.number("SEQ")?,
                name: f.word("NAME")?,
                reason: f.last_word("REASON")?.parse()?,
            },
            "TICK" => ServerLine::Tick {
                seq: f.number("SEQ")?,
                time: f.time()?,
                text: f.text(),
            },
            other => unreachable!("{other:?} is not in BROADCAST_VERBS"),
        })
    }

    /// The fields of any other line, after its VERB.
    fn parse_reply(verb: &str, mut f: Fields<'a>, line: &str) -> Result<ServerLine<'a>, LineError> {
        let parsed = match verb {
            "WELCOME" => ServerLine::Welcome {
                id: f.number("ID")?,
                name: f.word("NAME")?,
                time: f.time()?,
                key: f.word("KEY")?,
                epoch: f.word("EPOCH")?,
                text: f.text(),
            },
            "DM" => ServerLine::Dm {
                from: f.word("FROM")?,
                text: f.text(),
            },
            "USERS" => {
                let n = f.number("N")?;
                let names: Vec<&str> = match f.rest {
                    Some(rest) => rest.split(' ').collect(),
                    None => Vec::new(),
                };
                if names.len() as u64 != n || names.iter().any(|n| n.is_empty()) {
                    return Err(LineError::new(format!("USERS says {n} names: {line:?}")));
                }
                ServerLine::Users { names }
            }
            "PING" => ServerLine::Ping(f.text()),
            "PONG" => ServerLine::Pong(f.text()),
            "HELP" => ServerLine::Help(f.text()),
            "OK" => ServerLine::Ok {
                what: f.word("WHAT")?,
                detail: f.text(),
            },
            "ERR" => ServerLine::Err {
                code: f.word("CODE")?.parse()?,
                text: f.text(),
            },
            "BYE" => ServerLine::Bye(f.last_word("REASON")?.parse()?),
            other => return Err(LineError::new(format!("unknown verb {other:?}"))),
        };
        Ok(parsed)
    }
}

/// The verbs of broadcast events: `VERB SEQ …`, numbered by the server's
/// one counter.
const BROADCAST_VERBS: [&str; 6] = ["MSG", "DATA", "JOIN", "NICK", "LEAVE", "TICK"];

/// Appends a whole `DATA SEQ FROM LEN` frame: header, payload, LF.
pub fn encode_data(seq: u64, from: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + from.len() + 32);
    ServerLine::Data {
        seq,
        from,
        len: payload.len() as u64,
    }
    .encode(out);
    out.extend_from_slice(payload);
    out.push(b'\n');
}

/// Appends a line word by word. Plain byte copies, not `write!`: encoding
/// runs for every event on the broadcaster's hot path, and at every
/// session's greeting, whose stack `write!`'s machinery made one page
/// deeper (each page of stack a session touches stays in its memory; the
/// greeting's time is still written by chrono, which goes less deep).
struct Words<'o>(&'o mut Vec<u8>);

impl Words<'_> {
    /// The verb, first.
    fn verb(&mut self, verb: &str) -> &mut Self {
        self.0.extend_from_slice(verb.as_bytes());
        self
    }

    /// A space, then a word.
    fn word(&mut self, word: &str) -> &mut Self {
        self.0.push(b' ');
        self.0.extend_from_slice(word.as_bytes());
        self
    }

    /// A space, then a number in decimal.
    fn number(&mut self, n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = n;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.0.push(b' ');
        self.0.extend_from_slice(&digits[start..]);
        self
    }

    /// A trailing free-text field: a space and the text, or nothing.
    fn text(&mut self, text: &str) -> &mut Self {
        if !text.is_empty() {
            self.word(text);
        }
        self
    }
}

/// Walks the space-separated fields of a line, left to right.
struct Fields<'a> {
    rest: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str) -> Self {
        Fields { rest: Some(line) }
    }

    /// The next word (non-empty, up to the next space).
    fn word(&mut self, what: &str) -> Result<&'a str, LineError> {
        let rest = self
            .rest
            .ok_or_else(|| LineError::new(format!("missing {what}")))?;
        let (word, rest) = match rest.split_once(' ') {
            Some((word, rest)) => (word, Some(rest)),
            None => (rest, None),
        };
        if word.is_empty() {
            return Err(LineError::new(format!("empty {what}")));
        }
        self.rest = rest;
        Ok(word)
    }

    /// The next word, which must be the last one.
    fn last_word(&mut self, what: &str) -> Result<&'a str, LineError> {
        let word = self.word(what)?;
        match self.rest {
            None => Ok(word),
            Some(extra) => Err(LineError::new(format!("unexpected {extra:?} after {what}"))),
        }
    }

    /// The next word as a plain decimal number.
    fn number(&mut self, what: &str) -> Result<u64, LineError> {
        let word = self.word(what)?;
        digits(what, word)
    }

    /// The next word, which must be the last one, as a number.
    fn last_number(&mut self, what: &str) -> Result<u64, LineError> {
        let word = self.last_word(what)?;
        digits(what, word)
    }

    fn time(&mut self) -> Result<SystemTime, LineError> {
        let word = self.word("TIME")?;
        parse_time(word).ok_or_else(|| LineError::new(format!("TIME is not RFC 3339: {word:?}")))
    }

    /// Everything that is left: the free-text last field ("" if none).
    fn text(self) -> &'a str {
        self.rest.unwrap_or("")
    }
}

/// The field `what` as a number (see [`parse_digits`]).
fn digits(what: &str, word: &str) -> Result<u64, LineError> {
    parse_digits(word.as_bytes())
        .map_err(|_| LineError::new(format!("{what} is not a number: {word:?}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seq_of_a_broken_broadcast_line_can_be_told() {
        use super::ServerLine;
        assert_eq!(ServerLine::broadcast_seq(b"TICK 42 garbage \xff"), Some(42));
        assert_eq!(
            ServerLine::broadcast_seq(b"DATA 7 bob 99999999999"),
            Some(7)
        );
        assert_eq!(ServerLine::broadcast_seq(b"OK 42 x"), None);
        assert_eq!(ServerLine::broadcast_seq(b"MSG x1 a"), None);
        assert_eq!(ServerLine::broadcast_seq(b"MSG 12"), None);
        assert_eq!(
            ServerLine::broadcast_seq(b"MSG 99999999999999999999999 a"),
            None
        );
    }

    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lines_look_like_the_contract() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_341_605_123);
        let cases = [
            (
                ServerLine::Welcome {
                    id: 3,
                    name: "guest-3",
                    time: t,
                    key: "00ff",
                    epoch: "e1",
                    text: "hello there",
                },
                "WELCOME 3 guest-3 2026-11-22T10:00:05.123Z 00ff e1 hello there\n",
            ),
            (
                ServerLine::Msg {
                    seq: 7,
                    from: "alice",
                    text: "hi  all",
                },
                "MSG 7 alice hi  all\n",
            ),
            (
                ServerLine::Data {
                    seq: 8,
                    from: "bob",
                    len: 3,
                },
                "DATA 8 bob 3\n",
            ),
            (
                ServerLine::Leave {
                    seq: 9,
                    name: "bob",
                    reason: Reason::SlowConsumer,
                },
                "LEAVE 9 bob slow-consumer\n",
            ),
            (
                ServerLine::Users {
                    names: vec!["a", "B"],
                },
                "USERS 2 a B\n",
            ),
            (ServerLine::Users { names: vec![] }, "USERS 0\n"),
            (ServerLine::Pong(""), "PONG\n"),
            (
                ServerLine::Ok {
                    what: "resume",
                    detail: "12",
                },
                "OK resume 12\n",
            ),
            (
                ServerLine::Ok {
                    what: "auth",
                    detail: "",
                },
                "OK auth\n",
            ),
            (
                ServerLine::Err {
                    code: ErrorCode::ResumeGap,
                    text: "5",
                },
                "ERR resume-gap 5\n",
            ),
            (ServerLine::Bye(Reason::Shutdown), "BYE shutdown\n"),
        ];
        for (line, text) in cases {
            assert_eq!(line.to_line(), text);
            assert_eq!(
                ServerLine::parse(text.trim_end_matches('\n')).unwrap(),
                line
            );
        }
    }

    #[test]
    fn data_frames_carry_raw_bytes() {
        let mut out = Vec::new();
        encode_data(4, "eve", b"a\nb", &mut out);
        assert_eq!(out, b"DATA 4 eve 3\na\nb\n");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "",
            "MSG",
            "MSG x alice hi",
            "JOIN 1",
            "JOIN 1 a b",
            "LEAVE 1 a sleepy",
            "USERS 2 a",
            "USERS 1 a  ",
            "TICK 1 noon hi",
            "BYE",
            "ERR nope text",
            "WAT 1",
            "DATA 1 a -3",
        ] {
            assert!(ServerLine::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
