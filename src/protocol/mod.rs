//! The wire format: everything the server and its clients say to each
//! other, as pure functions and plain types. **Nothing in this module does
//! network I/O**; the server and the client library both build on it, so
//! a line means the same thing on either side of the socket.
//!
//! # The idea in one page
//!
//! The protocol is line-based text (see `docs/PROTOCOL.md`): every message
//! is one UTF-8 line ending in LF, which is why `telnet` and `nc` work as
//! clients. Two kinds of line travel:
//!
//! * **commands**, client → server ([`Command`], in [`command`]): `hello`,
//!   `/nick alice`, `/send 5`…
//! * **server lines**, server → client ([`ServerLine`], in [`mod@line`]):
//!   `MSG 7 alice hello`, `JOIN 8 bob`, `ERR nick-taken …`…
//!
//! One exception carries raw bytes: a length-declared payload (`/send LEN`
//! and `DATA SEQ FROM LEN`) whose header line is followed by exactly LEN
//! bytes and one LF. Cutting a byte stream into lines and payloads is the
//! job of [`frame`], which also enforces the maximum line length so that
//! a peer can never make a reader buffer grow without bound.
//!
//! This file holds what both directions share: the words used as reasons
//! and error codes, and the rules for valid text and names.

pub mod command;
pub mod frame;
pub mod line;

pub use command::{Command, CommandError};
pub use frame::{Frame, FrameReader, Telnet};
pub use line::{LineError, ServerLine};

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Protocol version implemented by this crate.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest name a client may take, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// Prefix of the names the server hands out (`guest-ID`).
pub const GUEST_PREFIX: &str = "guest-";

/// The `FROM` of a direct message sent by the program that embeds the
/// server rather than by a client. `*` is not a valid name, so it can never
/// be confused with a client's.
pub const SERVER_SENDER: &str = "*";

/// Declares an enum of wire words from one table of `Variant => "word"`
/// rows, and derives from that same table `ALL` (every value, in order),
/// `as_str`, `Display` and `FromStr`. Written once, a word cannot be
/// left out of one of them: a variant missing from `ALL` would not parse.
macro_rules! wire_words {
    (
        $(#[$doc:meta])*
        pub enum $name:ident, unknown: $unknown:literal {
            $( $(#[$vdoc:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            /// The word used on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = LineError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .into_iter()
                    .find(|w| w.as_str() == s)
                    .ok_or_else(|| {
                        LineError::new(format!(concat!("unknown ", $unknown, " {:?}"), s))
                    })
            }
        }
    };
}

wire_words! {
    /// Why a connection ended: the word in `BYE REASON` and `LEAVE … REASON`.
    ///
    /// `BYE` uses the reasons the server can give when *it* closes a
    /// connection; `LEAVE` additionally uses [`Reason::Closed`],
    /// [`Reason::SlowConsumer`] and [`Reason::Error`], which describe a
    /// connection that ended without a `BYE`.
    pub enum Reason, unknown: "reason" {
        /// The client sent `/quit`.
        Quit => "quit",
        /// The client closed or reset the connection.
        Closed => "closed",
        /// The client did not accept bytes within the write timeout.
        SlowConsumer => "slow-consumer",
        /// An unexpected I/O error on the connection.
        Error => "error",
        /// The server is shutting down.
        Shutdown => "shutdown",
        /// The client was silent for the whole idle timeout.
        Timeout => "timeout",
        /// Another connection took this one over with its session key.
        Replaced => "replaced",
        /// The server already holds `--max-clients` connections.
        ServerFull => "server-full",
        /// The client's address already holds `--max-per-ip` connections.
        TooManyConnections => "too-many-connections",
        /// The client sent a wrong token with `/auth`.
        AuthFailed => "auth-failed",
        /// A `/send` declared more bytes than `--max-payload`.
        PayloadTooLarge => "payload-too-large",
        /// The byte after a `/send` payload was not LF.
        ProtocolError => "protocol-error",
        /// Cluster only: the node cannot reach the room's store (Redis), or
        /// the room was lost and started again; reconnect and resume.
        Unavailable => "unavailable",
        /// Cluster only, in `LEAVE`: the client's node stopped answering.
        NodeDown => "node-down",
    }
}

wire_words! {
    /// The `CODE` of an `ERR CODE TEXT` line.
    pub enum ErrorCode, unknown: "error code" {
        /// A line starting with `/` that names no command.
        UnknownCommand => "unknown-command",
        /// A command's arguments are missing or malformed.
        BadArgs => "bad-args",
        /// A line longer than `--max-line`.
        LineTooLong => "line-too-long",
        /// A line that is not valid UTF-8.
        InvalidUtf8 => "invalid-utf8",
        /// A line holding control characters other than TAB.
        InvalidText => "invalid-text",
        /// `/nick` asked for a name someone else holds.
        NickTaken => "nick-taken",
        /// `/nick` asked for a name that breaks the naming rules.
        NickInvalid => "nick-invalid",
        /// `/msg` named nobody who is connected.
        NoSuchUser => "no-such-user",
        /// The server has a token and this client has not yet sent it.
        AuthRequired => "auth-required",
        /// The client sent more lines per second than `--max-rate` allows.
        RateLimited => "rate-limited",
        /// `/resume` asked for events the history no longer holds.
        ResumeGap => "resume-gap",
        /// `/resume` presented a key that matches no connection.
        BadKey => "bad-key",
        /// Cluster only: the node cannot reach the room's store (Redis)
        /// now; the connection stays, try again in a moment.
        Unavailable => "unavailable",
    }
}

/// Why a field is not a plain decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitsError {
    /// No digits at all.
    Empty,
    /// Something other than `0`-`9` (a sign, a space, a letter…).
    NotDigit,
    /// Only digits, but too many for a `u64`.
    Overflow,
}

impl fmt::Display for DigitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigitsError::Empty => "no digits",
            DigitsError::NotDigit => "not a decimal number",
            DigitsError::Overflow => "a number too large",
        })
    }
}

impl std::error::Error for DigitsError {}

/// Reads a number the way every numeric field of the protocol is written
/// (`SEQ`, `LEN`, `ID`, `N`): plain ASCII digits, at least one, no sign,
/// no spaces. Leading zeros are fine (`007` is 7). The one parser for
/// numbers on the wire: `str::parse` alone would also take `+7`.
pub fn parse_digits(digits: &[u8]) -> Result<u64, DigitsError> {
    if digits.is_empty() {
        return Err(DigitsError::Empty);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(DigitsError::NotDigit);
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(DigitsError::Overflow)
    })
}

/// Why a piece of text may not travel in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// The bytes are not UTF-8 (`ERR invalid-utf8`).
    InvalidUtf8,
    /// The text holds a control character other than TAB
    /// (`ERR invalid-text`). LF and CR are control characters, so text
    /// that passes can never break the line framing.
    ControlCharacter,
}

impl TextError {
    /// The `ERR` code a line with this fault gets.
    pub fn code(self) -> ErrorCode {
        match self {
            TextError::InvalidUtf8 => ErrorCode::InvalidUtf8,
            TextError::ControlCharacter => ErrorCode::InvalidText,
        }
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextError::InvalidUtf8 => "text is not valid UTF-8",
            TextError::ControlCharacter => "text holds a control character (only TAB is allowed)",
        })
    }
}

impl std::error::Error for TextError {}

/// Whether an offered token is the expected one, in time that depends
/// only on the offered token's length: how long it takes says nothing
/// about how much of it was right, nor how long the expected token is.
/// (A plain constant-time comparison of two slices returns at once when
/// their lengths differ, which tells a guesser the token's length.)
pub fn tokens_match(offered: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if expected.is_empty() {
        return false;
    }
    let mut differ = (!offered.len().ct_eq(&expected.len())).unwrap_u8();
    for (i, &byte) in offered.iter().enumerate() {
        differ |= byte ^ expected[i % expected.len()];
    }
    differ == 0 && !offered.is_empty()
}

/// Checks that `text` may travel inside one line: no control characters
/// other than TAB. `char::is_control` is exactly the Unicode `Cc` category:
/// C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F), as the
/// contract asks.
pub fn validate_text(text: &str) -> Result<(), TextError> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        Err(TextError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// Checks raw bytes for use as a line: UTF-8 first, then [`validate_text`].
pub fn text_from_bytes(bytes: &[u8]) -> Result<&str, TextError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TextError::InvalidUtf8)?;
    validate_text(text)?;
    Ok(text)
}

/// Why a name was refused (`ERR nick-invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_LEN`].
    Length,
    /// A character outside `A-Z a-z 0-9 _ - .`.
    Character,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Length => "a name is 1 to 32 characters",
            NameError::Character => "a name uses only A-Z a-z 0-9 _ - .",
        })
    }
}

impl std::error::Error for NameError {}

/// Checks the shape of a name: 1 to 32 characters from `A-Z a-z 0-9 _ - .`.
/// (Whether the name is free, or reserved as a guest name, is the server's
/// business, not the wire format's.)
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(NameError::Character);
    }
    Ok(())
}

/// Whether `name` lies in the server's reserved `guest-` space, compared
/// without regard to case (names are unique without regard to case, so
/// `Guest-3` would collide with `guest-3`).
pub fn is_guest_name(name: &str) -> bool {
    name.len() >= GUEST_PREFIX.len()
        && name.as_bytes()[..GUEST_PREFIX.len()].eq_ignore_ascii_case(GUEST_PREFIX.as_bytes())
}

/// The name every client starts with.
pub fn guest_name(id: u64) -> String {
    format!("{GUEST_PREFIX}{id}")
}

/// Formats a time the way the protocol writes `TIME`: RFC 3339 in UTC with
/// milliseconds, e.g. `2026-11-22T10:00:05.123Z`.
pub fn format_time(time: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = time.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a `TIME` field as written by [`format_time`]. Any RFC 3339 time
/// is accepted; times before 1970 are refused.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let millis = u64::try_from(dt.timestamp_millis()).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

/// Writes `bytes` as lowercase hex (keys and epochs travel this way).
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match(b"s3cret", b"s3cret"));
        assert!(!tokens_match(b"s3cre", b"s3cret"));
        assert!(
            !tokens_match(b"s3crets3cret", b"s3cret"),
            "a repeat is not a match"
        );
        assert!(!tokens_match(b"s3creT", b"s3cret"));
        assert!(!tokens_match(b"", b"s3cret"));
        assert!(!tokens_match(b"", b""));
    }

    #[test]
    fn text_rules_follow_the_contract() {
        assert_eq!(validate_text("hello\tworld"), Ok(()));
        assert_eq!(validate_text("caf\u{e9} \u{1f600}"), Ok(()));
        for bad in [
            "a\rb",
            "a\nb",
            "\u{0}",
            "del\u{7f}",
            "c1\u{85}",
            "esc\u{1b}[0m",
        ] {
            assert_eq!(
                validate_text(bad),
                Err(TextError::ControlCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(text_from_bytes(b"ok"), Ok("ok"));
        assert_eq!(text_from_bytes(b"\xff"), Err(TextError::InvalidUtf8));
    }

    #[test]
    fn name_rules_follow_the_contract() {
        for good in ["a", "Alice_01", "x.y-z", &"n".repeat(32)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_name(""), Err(NameError::Length));
        assert_eq!(validate_name(&"n".repeat(33)), Err(NameError::Length));
        for bad in ["a b", "é", "a/b", "a:b", "*"] {
            assert_eq!(validate_name(bad), Err(NameError::Character), "{bad}");
        }
        assert!(is_guest_name("guest-3"));
        assert!(is_guest_name("GUEST-x"));
        assert!(!is_guest_name("guest"));
        assert!(!is_guest_name("guests"));
    }

    #[test]
    fn digits_are_strict() {
        assert_eq!(parse_digits(b"0"), Ok(0));
        assert_eq!(parse_digits(b"007"), Ok(7));
        assert_eq!(parse_digits(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_digits(b"18446744073709551616"),
            Err(DigitsError::Overflow)
        );
        assert_eq!(parse_digits(b""), Err(DigitsError::Empty));
        for bad in ["+7", "-1", " 7", "7 ", "1e3", "0x1", "\u{661}"] {
            assert_eq!(
                parse_digits(bad.as_bytes()),
                Err(DigitsError::NotDigit),
                "{bad:?}"
            );
        }
        // A stray character counts, however many digits came before it.
        assert_eq!(
            parse_digits(b"99999999999999999999999x"),
            Err(DigitsError::NotDigit)
        );
    }

    #[test]
    fn time_has_milliseconds_and_z() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_341_605_123);
        let s = format_time(t);
        assert_eq!(s, "2026-11-22T10:00:05.123Z");
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn words_round_trip() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
        }
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), c);
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn every_word_is_listed_once() {
        use std::collections::HashSet;
        let reasons: HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), Reason::ALL.len());
        let codes: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn unknown_words_are_refused() {
        assert_eq!(
            "sleepy".parse::<Reason>().unwrap_err().to_string(),
            "unknown reason \"sleepy\""
        );
        assert_eq!(
            "Quit".parse::<Reason>().unwrap_err().to_string(),
            "unknown reason \"Quit\""
        );
        assert_eq!(
            "oops".parse::<ErrorCode>().unwrap_err().to_string(),
            "unknown error code \"oops\""
        );
    }
}
