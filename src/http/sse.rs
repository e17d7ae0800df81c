//! Server-Sent Events: the protocol's lines, framed for a browser's
//! `EventSource`.
//!
//! # The idea
//!
//! SSE is a text stream of *events*, each a few `field: value` lines and
//! an empty line:
//!
//! ```text
//! id: 5b0e1f6a2d4c8e90:42
//! data: MSG 42 alice hello
//!
//! ```
//!
//! A browser hands each event to the page (`onmessage` for events without
//! an `event:` field, a named listener for the others) and remembers the
//! last `id:`; when it reconnects by itself, it sends that id back as the
//! `Last-Event-ID` header. So the stream carries the *same lines* as the
//! TCP protocol, one per event, with the broadcast SEQ (prefixed by the
//! server's EPOCH, so that ids of different server runs never match) as
//! the id:
//!
//! | what | SSE event |
//! |---|---|
//! | a broadcast (`MSG`, `JOIN`, `TICK`…) | no `event:`, `id: EPOCH:SEQ`, `data: LINE` |
//! | `DATA SEQ FROM LEN` + payload | the same, with a second `data:` line: the payload in standard base64 (empty for LEN 0) |
//! | `WELCOME`, `DM`, `ERR`, `BYE` | `event: welcome` / `dm` / `err` / `bye`, `data: LINE` |
//! | missed events | `event: gap`, `data: OLDEST` or `data: restart` |
//! | nothing for a while | the comment `: keepalive` |
//!
//! Protocol lines never hold CR or LF (the protocol refuses control
//! characters in text), so a line always fits in one `data:` field.
//!
//! Every function here is pure and returns [`Bytes`], because the server
//! encodes each broadcast **once per wire format**, not once per client:
//! the broadcaster turns the bytes it already made for TCP clients into
//! SSE bytes with [`broadcast`], once, and every SSE client shares them.

use super::request::Request;
use super::response::HttpError;
use crate::protocol::{ErrorCode, ServerLine};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use std::fmt;
use std::str::FromStr;

/// The comment sent when nothing else was sent for a while (at least
/// every 15 s), so that proxies and the browser see the stream alive.
pub const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// How often, at most, a quiet stream gets a [`KEEPALIVE`].
pub const KEEPALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// `event: welcome` with the `WELCOME` line (its LF may be included).
pub fn welcome(line: &[u8]) -> Bytes {
    named("welcome", line)
}

/// `event: dm` with a `DM` line.
pub fn dm(line: &[u8]) -> Bytes {
    named("dm", line)
}

/// `event: err` with an `ERR` line (not `error`: `EventSource` keeps
/// that name for its own connection errors).
pub fn err(line: &[u8]) -> Bytes {
    named("err", line)
}

/// `event: bye` with a `BYE` line; the server closes the stream after it.
pub fn bye(line: &[u8]) -> Bytes {
    named("bye", line)
}

/// A line addressed to this client alone (anything but a broadcast),
/// named by its verb in lower case: `WELCOME` → `welcome`, `DM` → `dm`,
/// `ERR` → `err`, `BYE` → `bye` (and, should one ever be sent on a
/// stream, `OK` → `ok` and so on).
pub fn reply(line: &[u8]) -> Bytes {
    let line = strip_lf(line);
    let verb = line.split(|&b| b == b' ').next().unwrap_or_default();
    let name = String::from_utf8_lossy(verb).to_ascii_lowercase();
    named(&name, line)
}

/// `event: gap` with `data: OLDEST`: the history no longer reaches back to
/// the asked SEQ; the events before OLDEST are lost to this client.
pub fn gap(oldest: u64) -> Bytes {
    Bytes::from(format!("event: gap\ndata: {oldest}\n\n"))
}

/// `event: gap` with `data: restart`: the asked EPOCH is not this
/// server's (it restarted), so nothing is replayed.
pub fn gap_restart() -> Bytes {
    Bytes::from_static(b"event: gap\ndata: restart\n\n")
}

/// One event with an `event:` name and one `data:` line.
fn named(event: &str, line: &[u8]) -> Bytes {
    let line = strip_lf(line);
    let mut out = Vec::with_capacity(event.len() + line.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(line);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn strip_lf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The SSE id of broadcast `seq` on the server run `epoch`: `EPOCH:SEQ`.
pub fn event_id(epoch: &str, seq: u64) -> String {
    format!("{epoch}:{seq}")
}

/// Bytes that are not one encoded broadcast event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotBroadcast;

impl fmt::Display for NotBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not one encoded broadcast event")
    }
}

impl std::error::Error for NotBroadcast {}

/// Turns one broadcast event, exactly as TCP clients get it
/// (`MSG 7 alice hi\n`, or `DATA 8 bob 3\nabc\n`), into its SSE event:
/// `id: EPOCH:SEQ` and the line as `data:`, plus for `DATA` a second
/// `data:` line with the payload in base64.
pub fn broadcast(encoded: &[u8], epoch: &str) -> Result<Bytes, NotBroadcast> {
    let lf = encoded
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(NotBroadcast)?;
    let (line, rest) = (&encoded[..lf], &encoded[lf + 1..]);
    let seq = ServerLine::broadcast_seq(line).ok_or(NotBroadcast)?;
    let payload = if line.starts_with(b"DATA ") {
        let len: usize =
            std::str::from_utf8(line.rsplit(|&b| b == b' ').next().unwrap_or_default())
                .ok()
                .and_then(|len| len.parse().ok())
                .ok_or(NotBroadcast)?;
        if rest.len() != len + 1 || rest[len] != b'\n' {
            return Err(NotBroadcast);
        }
        Some(&rest[..len])
    } else if rest.is_empty() {
        None
    } else {
        return Err(NotBroadcast);
    };

    let id = event_id(epoch, seq);
    let b64 = payload.map(|p| BASE64.encode(p));
    let mut out =
        Vec::with_capacity(line.len() + id.len() + 24 + b64.as_ref().map_or(0, String::len));
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(line);
    out.push(b'\n');
    if let Some(b64) = b64 {
        // An empty payload still gets its (empty) second data line, so the
        // event always has two lines for DATA.
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(b64.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(Bytes::from(out))
}

/// Where a stream asks to resume: `EPOCH:SEQ`, from `Last-Event-ID` or
/// `since=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The server run the SEQ belongs to.
    pub epoch: String,
    /// The last event the client has; it wants the ones after it.
    pub seq: u64,
}

impl FromStr for ResumePoint {
    type Err = HttpError;

    /// Parses `EPOCH:SEQ`: EPOCH 1 to 64 ASCII letters and digits (this
    /// server writes 16 hex digits), SEQ a decimal number. Anything else
    /// is `400` `bad-args`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            HttpError::from_code(
                ErrorCode::BadArgs,
                format!("{s:?} is not EPOCH:SEQ, as in the id of an event"),
            )
        };
        let (epoch, seq) = s.split_once(':').ok_or_else(bad)?;
        if epoch.is_empty()
            || epoch.len() > 64
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(ResumePoint {
            epoch: epoch.to_owned(),
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// The resume point a `GET /events` asks for, if any: the
/// `Last-Event-ID` header (what `EventSource` sends by itself when it
/// reconnects) wins over the `since=` parameter. An empty value counts as
/// absent; a malformed one is `400`. Only ASCII whitespace around a value
/// is dropped: any other character makes it malformed.
pub fn resume_point(request: &Request) -> Result<Option<ResumePoint>, HttpError> {
    let asked = [request.header("last-event-id"), request.query("since")]
        .into_iter()
        .flatten()
        .map(|v| v.trim_matches(|c: char| c.is_ascii_whitespace()))
        .find(|v| !v.is_empty());
    asked.map(str::parse).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "5b0e1f6a2d4c8e90";

    fn s(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn a_broadcast_line_has_an_id_and_no_event_name() {
        assert_eq!(
            s(broadcast(b"MSG 7 alice hi there\n", EPOCH).unwrap()),
            "id: 5b0e1f6a2d4c8e90:7\ndata: MSG 7 alice hi there\n\n"
        );
        assert_eq!(
            s(broadcast(
                b"TICK 43 2026-11-22T10:00:05.123Z build 1432 passed\n",
                EPOCH
            )
            .unwrap()),
            "id: 5b0e1f6a2d4c8e90:43\ndata: TICK 43 2026-11-22T10:00:05.123Z build 1432 passed\n\n"
        );
        assert_eq!(
            s(broadcast(b"LEAVE 45 bob slow-consumer\n", EPOCH).unwrap()),
            "id: 5b0e1f6a2d4c8e90:45\ndata: LEAVE 45 bob slow-consumer\n\n"
        );
    }

    #[test]
    fn data_has_a_second_data_line_in_base64() {
        assert_eq!(
            s(broadcast(b"DATA 8 bob 3\nabc\n", EPOCH).unwrap()),
            "id: 5b0e1f6a2d4c8e90:8\ndata: DATA 8 bob 3\ndata: YWJj\n\n"
        );
        // Raw bytes, LFs and all, become one base64 line.
        assert_eq!(
            s(broadcast(b"DATA 9 bob 4\n\n\xff\0\n\n", EPOCH).unwrap()),
            "id: 5b0e1f6a2d4c8e90:9\ndata: DATA 9 bob 4\ndata: Cv8ACg==\n\n"
        );
        assert_eq!(
            s(broadcast(b"DATA 10 bob 0\n\n", EPOCH).unwrap()),
            "id: 5b0e1f6a2d4c8e90:10\ndata: DATA 10 bob 0\ndata: \n\n"
        );
    }

    #[test]
    fn what_is_not_one_broadcast_is_refused() {
        for bad in [
            &b"MSG 7 alice hi"[..],
            b"USERS 1 alice\n",
            b"ERR bad-args x\n",
            b"MSG 7 alice hi\nMSG 8 bob yo\n",
            b"DATA 8 bob 3\nabcd\n",
            b"DATA 8 bob 3\nab\n",
            b"DATA 8 bob x\nabc\n",
        ] {
            assert_eq!(broadcast(bad, EPOCH), Err(NotBroadcast), "{bad:?}");
        }
    }

    #[test]
    fn replies_are_named_events() {
        let welcome = b"WELCOME 3 guest-3 2026-11-22T10:00:05.123Z 0f1e 5b0e1f6a2d4c8e90 hello\n";
        assert_eq!(
            s(super::welcome(welcome)),
            "event: welcome\ndata: WELCOME 3 guest-3 2026-11-22T10:00:05.123Z 0f1e 5b0e1f6a2d4c8e90 hello\n\n"
        );
        assert_eq!(
            s(dm(b"DM alice psst\n")),
            "event: dm\ndata: DM alice psst\n\n"
        );
        assert_eq!(
            s(err(b"ERR nick-taken bob is taken")),
            "event: err\ndata: ERR nick-taken bob is taken\n\n"
        );
        assert_eq!(
            s(bye(b"BYE replaced\n")),
            "event: bye\ndata: BYE replaced\n\n"
        );
        for (line, event) in [
            (&b"DM * hi\n"[..], "dm"),
            (b"ERR bad-args x\n", "err"),
            (b"BYE shutdown\n", "bye"),
            (b"OK nick bob\n", "ok"),
        ] {
            assert!(s(reply(line)).starts_with(&format!("event: {event}\ndata: ")));
        }
        assert_eq!(s(gap(211)), "event: gap\ndata: 211\n\n");
        assert_eq!(s(gap_restart()), "event: gap\ndata: restart\n\n");
        assert_eq!(KEEPALIVE, b": keepalive\n\n");
    }

    #[test]
    fn resume_points_parse_or_are_400() {
        assert_eq!(
            "5b0e1f6a2d4c8e90:42".parse::<ResumePoint>(),
            Ok(ResumePoint {
                epoch: EPOCH.into(),
                seq: 42
            })
        );
        assert_eq!("ab:0".parse::<ResumePoint>().unwrap().seq, 0);
        for bad in [
            "",
            "42",
            ":42",
            "ab:",
            "ab:-1",
            "ab:4 2",
            "a-b:1",
            "ab:1:2",
            "ab:99999999999999999999",
        ] {
            let e = bad.parse::<ResumePoint>().unwrap_err();
            assert_eq!((e.status, e.code), (400, "bad-args"), "{bad}");
        }
        let p = ResumePoint {
            epoch: EPOCH.into(),
            seq: 7,
        };
        assert_eq!(p.to_string(), event_id(EPOCH, 7));
    }

    #[test]
    fn last_event_id_wins_over_since() {
        let point = |head: &str| resume_point(&crate::http::request::parse_head(head));
        assert_eq!(point("GET /events HTTP/1.1\r\n\r\n"), Ok(None));
        assert_eq!(
            point("GET /events?since=ab:3 HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .seq,
            3
        );
        assert_eq!(
            point("GET /events?since=ab:3 HTTP/1.1\r\nLast-Event-ID: ab:9\r\n\r\n")
                .unwrap()
                .unwrap()
                .seq,
            9
        );
        assert_eq!(
            point("GET /events?since=ab:3 HTTP/1.1\r\nLast-Event-ID: \r\n\r\n")
                .unwrap()
                .unwrap()
                .seq,
            3
        );
        assert_eq!(
            point("GET /events?since=ab:3 HTTP/1.1\r\nLast-Event-ID: junk\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        // Unicode whitespace is not trimmed away (one of the sse_resume
        // fuzz target's invariants): a no-break space or a vertical tab
        // makes the value malformed, not blank.
        for head in [
            "GET /events?since=ab:3 HTTP/1.1\r\nLast-Event-ID: \u{a0}ab:1\r\n\r\n",
            "GET /events?since=%0Bab:1 HTTP/1.1\r\n\r\n",
            "GET /events?since=ab:1%E2%80%83 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(point(head).unwrap_err().status, 400, "{head:?}");
        }
        assert_eq!(
            point("GET /events?since=+ab:3%0A HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .seq,
            3
        );
    }
}
