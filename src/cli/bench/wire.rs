//! What the bench says and hears on the wire, for each kind of server.
//!
//! The same load runs against three servers that each speak their own
//! protocol, so everything protocol-specific lives here, behind one small
//! interface ([`Dialect`]):
//!
//! | | tickcast | NATS | Redis |
//! |---|---|---|---|
//! | subscribe | (every client hears every broadcast) | `CONNECT {…}`, `SUB SUBJECT 1`, `PING` | `SUBSCRIBE CHANNEL` |
//! | subscribed when | its own `JOIN` arrives (the `WELCOME` before it names it) | `PONG` arrives (the server has handled the `SUB`) | the `subscribe` reply arrives |
//! | publish | the text as a chat line | `PUB SUBJECT LEN` + payload | `PUBLISH CHANNEL PAYLOAD` (RESP) |
//! | a delivery | `MSG SEQ FROM TEXT` | `MSG SUBJECT SID LEN` + payload | `message CHANNEL PAYLOAD` (RESP array) |
//!
//! A tickcast member is promised every broadcast event from its own `JOIN`
//! on, not from its `WELCOME`: the server sends the `WELCOME`, then puts
//! the `JOIN` in the room's order. On one server the gap between the two
//! is a hand-over between threads; on a cluster node (docs/CLUSTER.md) it
//! is a round trip to Redis, and a message published meanwhile on
//! another node may come before the `JOIN`. So a subscriber counts as
//! subscribed when it hears its own `JOIN`, and the publisher starts only
//! when every subscriber has.
//!
//! # The payload
//!
//! Every message the publisher sends starts with `N T`: N is its number
//! (0, 1, 2…, which is how the order is checked on servers without a SEQ)
//! and T the nanoseconds since the bench started at which it was meant to
//! be sent (the latency is the receive time minus T). Spaces and `x`s pad it
//! to `--payload` bytes. It is plain ASCII, so it is also valid chat text.
//!
//! # Parsing incrementally
//!
//! [`Dialect::parse`] looks at the start of the bytes received so far and
//! returns either one whole frame and how many bytes it took, or
//! [`Parse::Incomplete`]: the caller keeps the tail and calls again when
//! more bytes have arrived. It never blocks and never copies.

use std::fmt::Write as _;
use tickcast::protocol::ServerLine;
use tickcast::protocol::frame::strip_cr;

/// Which kind of server the bench talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A tickcast hub.
    Tickcast,
    /// nats-server (the NATS text protocol).
    Nats,
    /// redis-server (RESP pub/sub).
    Redis,
}

impl Peer {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Tickcast => "tickcast",
            Peer::Nats => "nats",
            Peer::Redis => "redis",
        }
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tickcast" => Ok(Peer::Tickcast),
            "nats" => Ok(Peer::Nats),
            "redis" => Ok(Peer::Redis),
            _ => Err(format!("unknown peer {s:?}: use tickcast, nats or redis")),
        }
    }
}

/// One frame heard from a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard<'a> {
    /// The connection is set up and subscribed (NATS, Redis).
    Ready,
    /// tickcast's `WELCOME`, with the name the server gave this
    /// connection; it is subscribed at its own [`Heard::Join`].
    Welcome(&'a str),
    /// tickcast's `JOIN`: its SEQ and who joined.
    Join { seq: u64, name: &'a str },
    /// One of the publisher's messages: its number, when it was meant to
    /// be sent, and (tickcast) its broadcast SEQ.
    Message {
        n: u64,
        sent_ns: u64,
        seq: Option<u64>,
    },
    /// Anything else, with its broadcast SEQ if it has one (tickcast's
    /// `JOIN`, `LEAVE`, `TICK`, other clients' messages…).
    Other { seq: Option<u64> },
    /// The server asked for an answer (`PING`): these bytes.
    Answer(Vec<u8>),
    /// The server refused something, or closes: a failed run.
    Refused(String),
}

/// The result of [`Dialect::parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Not one whole frame yet.
    Incomplete,
    /// A frame, and how many bytes it took.
    Frame(usize, Heard<'a>),
}

/// How to talk to one server for one run.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub peer: Peer,
    /// The NATS subject or Redis channel (unique to the run).
    pub subject: String,
    /// The publisher's name (tickcast), to tell its messages from others'.
    pub publisher: String,
}

impl Dialect {
    /// What a new subscriber sends first. A tickcast server without a
    /// token greets a connection when its first line arrives, or 100 ms
    /// after it connected if it says nothing (to tell a `/mirror` from a
    /// client): a `/ping` is greeted at once, as the client library's
    /// links are. Its `PONG` is ignored.
    pub fn subscriber_hello(&self) -> Vec<u8> {
        match self.peer {
            Peer::Tickcast => b"/ping\n".to_vec(),
            Peer::Nats => format!("{NATS_CONNECT}SUB {} 1\r\nPING\r\n", self.subject).into_bytes(),
            Peer::Redis => format!("SUBSCRIBE {}\r\n", self.subject).into_bytes(),
        }
    }

    /// What the publisher sends first (it is ready at its first
    /// [`Heard::Ready`] or [`Heard::Welcome`]).
    pub fn publisher_hello(&self) -> Vec<u8> {
        match self.peer {
            Peer::Tickcast => b"/ping\n".to_vec(),
            Peer::Nats => format!("{NATS_CONNECT}PING\r\n").into_bytes(),
            Peer::Redis => b"PING\r\n".to_vec(),
        }
    }

    /// Appends the publication of message `n`, meant to be sent at
    /// `sent_ns`, padded to `size` bytes of payload.
    pub fn encode_publish(&self, n: u64, sent_ns: u64, size: usize, out: &mut Vec<u8>) {
        let mut payload = String::with_capacity(size.max(24));
        let _ = write!(payload, "{n} {sent_ns}");
        if payload.len() < size {
            payload.push(' ');
            let pad = size - payload.len();
            payload.extend(std::iter::repeat_n('x', pad));
        }
        let p = payload.as_bytes();
        match self.peer {
            Peer::Tickcast => {
                out.extend_from_slice(p);
                out.push(b'\n');
            }
            Peer::Nats => {
                let _ = std::io::Write::write_fmt(
                    out,
                    format_args!("PUB {} {}\r\n", self.subject, p.len()),
                );
                out.extend_from_slice(p);
                out.extend_from_slice(b"\r\n");
            }
            Peer::Redis => {
                let s = &self.subject;
                let _ = std::io::Write::write_fmt(
                    out,
                    format_args!(
                        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{s}\r\n${}\r\n",
                        s.len(),
                        p.len()
                    ),
                );
                out.extend_from_slice(p);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Parses the frame at the start of `buf`; see the module docs.
    pub fn parse<'a>(&self, buf: &'a [u8]) -> Parse<'a> {
        match self.peer {
            Peer::Tickcast => self.parse_tickcast(buf),
            Peer::Nats => parse_nats(buf),
            Peer::Redis => parse_redis(buf),
        }
    }

    fn parse_tickcast<'a>(&self, buf: &'a [u8]) -> Parse<'a> {
        let Some(lf) = find_lf(buf) else {
            return Parse::Incomplete;
        };
        let line = strip_cr(&buf[..lf]);
        let mut used = lf + 1;
        // An event stream (`--sse`): the same lines, as `data: LINE`,
        // between fields and blank lines that carry nothing for us.
        let sse = line.strip_prefix(b"data: ");
        let line = match sse {
            Some(line) => line,
            None if line.is_empty() || line.starts_with(b":") => {
                return Parse::Frame(used, Heard::Other { seq: None });
            }
            None if line.starts_with(b"id: ") || line.starts_with(b"event: ") => {
                return Parse::Frame(used, Heard::Other { seq: None });
            }
            None => line,
        };
        // The hot path: `MSG SEQ FROM TEXT` from the publisher, nearly every
        // line of a run, read without building a `ServerLine` (which would
        // check the whole line's UTF-8 first).
        if let Some(rest) = line.strip_prefix(b"MSG ")
            && let Some((seq, rest)) = split_word(rest)
            && let Some((from, text)) = split_word(rest)
            && from == self.publisher.as_bytes()
            && let Some(seq) = number(seq)
        {
            let heard = match read_payload(text) {
                Some((n, sent_ns)) => Heard::Message {
                    n,
                    sent_ns,
                    seq: Some(seq),
                },
                None => refused("a message of the publisher's that is not ours", line),
            };
            return Parse::Frame(used, heard);
        }
        // Everything else, rare, goes through the protocol's own parser.
        let Ok(text) = std::str::from_utf8(line) else {
            return Parse::Frame(used, refused("a line that is not UTF-8", line));
        };
        let heard = match ServerLine::parse(text) {
            Ok(ServerLine::Welcome { name, .. }) => Heard::Welcome(name),
            Ok(ServerLine::Join { seq, name }) => Heard::Join { seq, name },
            // On a stream, a DATA header is followed by a base64 line.
            Ok(ServerLine::Data { seq, .. }) if sse.is_some() => Heard::Other { seq: Some(seq) },
            Ok(ServerLine::Data { seq, len, .. }) => {
                // Raw bytes from some other client: skip them and their LF.
                let end = usize::try_from(len).unwrap_or(usize::MAX);
                match used.checked_add(end).and_then(|e| e.checked_add(1)) {
                    Some(total) if buf.len() >= total => used = total,
                    _ => return Parse::Incomplete,
                }
                Heard::Other { seq: Some(seq) }
            }
            Ok(ServerLine::Ping(token)) => {
                Heard::Answer(format!("/pong {token}\n").trim_end_matches(' ').into())
            }
            Ok(ServerLine::Err { .. }) | Ok(ServerLine::Bye(_)) => {
                Heard::Refused(format!("the server said {text:?}"))
            }
            Ok(other) => Heard::Other { seq: other.seq() },
            // A DATA payload's base64 line, on a stream.
            Err(_) if sse.is_some() => Heard::Other { seq: None },
            Err(e) => refused(&format!("an unreadable line ({e})"), line),
        };
        Parse::Frame(used, heard)
    }
}

/// NATS `CONNECT`: no `+OK` after every command (verbose off).
const NATS_CONNECT: &str =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"tickcast-bench\"}\r\n";

fn parse_nats(buf: &[u8]) -> Parse<'_> {
    let Some(lf) = find_lf(buf) else {
        return Parse::Incomplete;
    };
    let line = strip_cr(&buf[..lf]);
    let used = lf + 1;
    let heard = if let Some(rest) = line.strip_prefix(b"MSG ") {
        // MSG SUBJECT SID [REPLY-TO] LEN, then LEN bytes and CR LF.
        let len = rest
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(number)
            .and_then(|n| usize::try_from(n).ok());
        let Some(len) = len else {
            return Parse::Frame(used, refused("a bad MSG header", line));
        };
        if buf.len() < used + len + 2 {
            return Parse::Incomplete;
        }
        let payload = &buf[used..used + len];
        let heard = match read_payload(payload) {
            Some((n, sent_ns)) => Heard::Message {
                n,
                sent_ns,
                seq: None,
            },
            None => refused("a message that is not ours", payload),
        };
        return Parse::Frame(used + len + 2, heard);
    } else if line == b"PING" {
        Heard::Answer(b"PONG\r\n".to_vec())
    } else if line == b"PONG" {
        Heard::Ready
    } else if line.starts_with(b"INFO ") || line == b"+OK" {
        Heard::Other { seq: None }
    } else {
        refused("the server said", line)
    };
    Parse::Frame(used, heard)
}

fn parse_redis(buf: &[u8]) -> Parse<'_> {
    let Some(lf) = find_lf(buf) else {
        return Parse::Incomplete;
    };
    let line = strip_cr(&buf[..lf]);
    let used = lf + 1;
    let heard = match line.first() {
        Some(b'+') if line == b"+PONG" => Heard::Ready,
        Some(b'+') | Some(b':') => Heard::Other { seq: None },
        Some(b'*') => {
            // An array of bulk strings and integers: `message CHANNEL
            // PAYLOAD`, or the `subscribe CHANNEL COUNT` confirmation.
            let Some(count) = number(&line[1..]).and_then(|n| usize::try_from(n).ok()) else {
                return Parse::Frame(used, refused("a bad array", line));
            };
            let mut at = used;
            let mut items: [&[u8]; 3] = [&[]; 3];
            for i in 0..count {
                match redis_item(&buf[at..]) {
                    None => return Parse::Incomplete,
                    Some((n, item)) => {
                        if let Some(slot) = items.get_mut(i) {
                            *slot = item;
                        }
                        at += n;
                    }
                }
            }
            let heard = match items[0] {
                b"message" => match read_payload(items[2]) {
                    Some((n, sent_ns)) => Heard::Message {
                        n,
                        sent_ns,
                        seq: None,
                    },
                    None => refused("a message that is not ours", items[2]),
                },
                b"subscribe" => Heard::Ready,
                _ => Heard::Other { seq: None },
            };
            return Parse::Frame(at, heard);
        }
        _ => refused("the server said", line),
    };
    Parse::Frame(used, heard)
}

/// One RESP bulk string (`$LEN` CR LF bytes CR LF) or integer (`:N`):
/// the bytes it took and its content.
fn redis_item(buf: &[u8]) -> Option<(usize, &[u8])> {
    let lf = find_lf(buf)?;
    let line = strip_cr(&buf[..lf]);
    match line.first() {
        Some(b'$') => {
            let len = usize::try_from(number(&line[1..])?).ok()?;
            let start = lf + 1;
            (buf.len() >= start + len + 2).then(|| (start + len + 2, &buf[start..start + len]))
        }
        _ => Some((lf + 1, &line[1.min(line.len())..])),
    }
}

/// `N T …` at the start of a payload.
pub fn read_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let mut words = payload.splitn(3, |&b| b == b' ');
    let n = number(words.next()?)?;
    let t = number(words.next()?)?;
    Some((n, t))
}

/// A decimal number of at most 19 digits (so it fits in 64 bits).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The word before the first space, and the rest after it.
fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr::memchr(b' ', bytes)?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

fn find_lf(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf)
}

fn refused<'a>(what: &str, line: &[u8]) -> Heard<'a> {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(120)]).into();
    Heard::Refused(format!("{what}: {shown:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(peer: Peer) -> Dialect {
        Dialect {
            peer,
            subject: "bench.1".into(),
            publisher: "guest-1".into(),
        }
    }

    #[test]
    fn payloads_have_the_asked_size_and_read_back() {
        let d = dialect(Peer::Tickcast);
        let mut out = Vec::new();
        d.encode_publish(42, 123_456, 64, &mut out);
        assert_eq!(out.len(), 65, "64 bytes of text and an LF");
        assert_eq!(read_payload(&out[..64]), Some((42, 123_456)));
        out.clear();
        d.encode_publish(7, 9, 1, &mut out); // too small to pad: just N T
        assert_eq!(out, b"7 9\n");
    }

    #[test]
    fn tickcast_lines() {
        let d = dialect(Peer::Tickcast);
        let buf = b"MSG 5 guest-1 3 99 xx\nJOIN 6 guest-2\nMSG 7 guest-2 hi\nPING t\nMSG 8 gu";
        let mut at = 0;
        let mut heard = Vec::new();
        while let Parse::Frame(n, h) = d.parse(&buf[at..]) {
            heard.push(h);
            at += n;
        }
        assert_eq!(
            heard,
            [
                Heard::Message {
                    n: 3,
                    sent_ns: 99,
                    seq: Some(5)
                },
                Heard::Join {
                    seq: 6,
                    name: "guest-2"
                },
                Heard::Other { seq: Some(7) },
                Heard::Answer(b"/pong t\n".to_vec()),
            ]
        );
        assert_eq!(&buf[at..], b"MSG 8 gu", "the tail waits for more bytes");
        let welcome = b"WELCOME 3 guest-3 2026-11-22T10:00:05.123Z 00ff 0123 x\n";
        assert_eq!(
            d.parse(welcome),
            Parse::Frame(welcome.len(), Heard::Welcome("guest-3"))
        );
        assert!(matches!(
            d.parse(b"BYE shutdown\n"),
            Parse::Frame(13, Heard::Refused(_))
        ));
        assert_eq!(d.parse(b"DATA 9 guest-3 4\nab\n"), Parse::Incomplete);
        assert_eq!(
            d.parse(b"DATA 9 guest-3 4\nab\nc\n"),
            Parse::Frame(22, Heard::Other { seq: Some(9) })
        );
    }

    #[test]
    fn nats_frames() {
        let d = dialect(Peer::Nats);
        let mut out = Vec::new();
        d.encode_publish(1, 2, 10, &mut out);
        assert_eq!(out, b"PUB bench.1 10\r\n1 2 xxxxxx\r\n");
        assert_eq!(
            d.parse(b"MSG bench.1 1 10\r\n1 2 xxxxxx\r\n"),
            Parse::Frame(
                30,
                Heard::Message {
                    n: 1,
                    sent_ns: 2,
                    seq: None
                }
            )
        );
        assert_eq!(d.parse(b"MSG bench.1 1 10\r\n1 2 x"), Parse::Incomplete);
        assert_eq!(
            d.parse(b"PING\r\n"),
            Parse::Frame(6, Heard::Answer(b"PONG\r\n".to_vec()))
        );
        assert_eq!(d.parse(b"PONG\r\n"), Parse::Frame(6, Heard::Ready));
    }

    #[test]
    fn redis_frames() {
        let d = dialect(Peer::Redis);
        let mut out = Vec::new();
        d.encode_publish(1, 2, 3, &mut out);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$7\r\nbench.1\r\n$3\r\n1 2\r\n"
        );
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$7\r\nbench.1\r\n:1\r\n";
        assert_eq!(d.parse(sub), Parse::Frame(sub.len(), Heard::Ready));
        let msg = b"*3\r\n$7\r\nmessage\r\n$7\r\nbench.1\r\n$3\r\n1 2\r\n";
        assert_eq!(
            d.parse(msg),
            Parse::Frame(
                msg.len(),
                Heard::Message {
                    n: 1,
                    sent_ns: 2,
                    seq: None
                }
            )
        );
        assert_eq!(d.parse(&msg[..msg.len() - 3]), Parse::Incomplete);
        assert_eq!(
            d.parse(b":100\r\n"),
            Parse::Frame(6, Heard::Other { seq: None })
        );
    }
}
