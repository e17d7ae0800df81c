//! What the client reports: one [`Event`] variant per server verb, plus
//! the connection's own story (connected, lost, reconnecting, resumed,
//! gaps, closed).

use crate::protocol::{ErrorCode, Reason, ServerLine};
use bytes::Bytes;
use std::time::{Duration, SystemTime};

/// Events whose SEQ the client could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// Broadcast events `first..=last` are lost: the connection was down
    /// longer than the server's history reaches back.
    Expired {
        /// First missing SEQ.
        first: u64,
        /// Last missing SEQ.
        last: u64,
    },
    /// The server restarted (its `EPOCH` changed). Whatever it broadcast
    /// after SEQ `after` in its previous run is lost, and SEQs start over.
    Restarted {
        /// The last SEQ delivered from the previous run.
        after: u64,
    },
    /// Broadcast event `seq` arrived but could not be read: longer than
    /// [`ClientConfig::max_line`](super::ClientConfig::max_line), a payload
    /// over [`ClientConfig::max_payload`](super::ClientConfig::max_payload),
    /// or not a valid line. An [`Event::Unreadable`] said why.
    Unreadable {
        /// The SEQ of the event.
        seq: u64,
    },
}

/// Why the client stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// [`Client::quit`](super::Client::quit), or the client was dropped.
    Quit,
    /// The server refused the token (`BYE auth-failed`).
    AuthFailed,
    /// Reconnecting failed [`Reconnect::max_attempts`](super::Reconnect::max_attempts)
    /// times in a row (or reconnecting is off).
    GaveUp,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Closed::Quit => "quit",
            Closed::AuthFailed => "the server refused the token",
            Closed::GaveUp => "gave up reconnecting",
        })
    }
}

/// Something the client received or went through.
///
/// Broadcast events (`Msg`, `Data`, `Join`, `Nick`, `Leave`, `Tick`)
/// arrive **exactly once and in SEQ order**, across reconnects and across
/// the two connections of a redundant client; a loss is reported as a
/// [`Event::Gap`], never skipped silently. Replies that answer a request
/// call ([`Client::list`](super::Client::list), …) go to that call, not
/// here.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `WELCOME`: a connection was accepted.
    Welcome {
        /// Which connection (0, or 1 for the second of a redundant client).
        link: usize,
        /// The connection's id.
        id: u64,
        /// Its first name.
        name: String,
        /// Server time.
        time: SystemTime,
        /// The server run's epoch.
        epoch: String,
        /// The greeting.
        text: String,
    },
    /// `MSG`: a chat message.
    Msg {
        /// SEQ.
        seq: u64,
        /// Sender.
        from: String,
        /// Text.
        text: String,
    },
    /// `DATA`: raw bytes.
    Data {
        /// SEQ.
        seq: u64,
        /// Sender.
        from: String,
        /// The bytes.
        payload: Bytes,
    },
    /// `DM`: a direct message (`from` is `*` when the program embedding
    /// the server sent it).
    Dm {
        /// Sender.
        from: String,
        /// Text.
        text: String,
    },
    /// `JOIN`.
    Join {
        /// SEQ.
        seq: u64,
        /// Who.
        name: String,
    },
    /// `NICK`.
    Nick {
        /// SEQ.
        seq: u64,
        /// Name before.
        old: String,
        /// Name after.
        new: String,
    },
    /// `LEAVE`.
    Leave {
        /// SEQ.
        seq: u64,
        /// Who.
        name: String,
        /// Why.
        reason: Reason,
    },
    /// `TICK`: a notification from the server.
    Tick {
        /// SEQ.
        seq: u64,
        /// When.
        time: SystemTime,
        /// Text.
        text: String,
    },
    /// `USERS` not claimed by [`Client::list`](super::Client::list).
    Users {
        /// The names.
        names: Vec<String>,
    },
    /// `PING` (already answered by the client).
    Ping {
        /// The server's token.
        token: String,
    },
    /// `PONG` not claimed by [`Client::ping`](super::Client::ping).
    Pong {
        /// The token.
        token: String,
    },
    /// `HELP`.
    Help {
        /// One line of help.
        text: String,
    },
    /// `OK` not claimed by a request call.
    Ok {
        /// Which command.
        what: String,
        /// The rest of the line.
        detail: String,
    },
    /// `ERR` not claimed by a request call (for instance the answer to a
    /// chat line that was rate-limited).
    Err {
        /// The code.
        code: ErrorCode,
        /// What went wrong.
        text: String,
    },
    /// `BYE`: the server is closing this connection.
    Bye {
        /// Which connection.
        link: usize,
        /// Why.
        reason: Reason,
    },
    /// A connection is ready: authenticated, named, and caught up.
    Connected {
        /// Which connection.
        link: usize,
        /// Its id.
        id: u64,
        /// Its name now.
        name: String,
    },
    /// A connection was lost, or a reconnect attempt failed (with several
    /// addresses: a whole round; `cause` is the last address's). The
    /// client reconnects unless it was closed.
    Disconnected {
        /// Which connection.
        link: usize,
        /// What happened, in words.
        cause: String,
    },
    /// The client waits `delay`, then makes attempt number `attempt` (with
    /// several addresses, a round of them, starting with the next one).
    Reconnecting {
        /// Which connection.
        link: usize,
        /// Attempt number, from 1.
        attempt: u32,
        /// Wait before it.
        delay: Duration,
    },
    /// A connection caught up with `/resume`: every event after SEQ
    /// `after`, up to `last`, has been delivered (or reported missing by
    /// a [`Event::Gap`] just before).
    Resumed {
        /// Which connection.
        link: usize,
        /// The SEQ it resumed after.
        after: u64,
        /// The last SEQ of the replay.
        last: u64,
    },
    /// Broadcast events were lost; see [`Gap`].
    Gap(Gap),
    /// A line from the server that could not be read (not a protocol
    /// line, or longer than [`ClientConfig::max_line`](super::ClientConfig::max_line)).
    Unreadable {
        /// Which connection.
        link: usize,
        /// What was wrong.
        error: String,
    },
    /// The client stopped for good; no event follows.
    Closed(Closed),
}

impl Event {
    /// The SEQ of a broadcast event.
    pub fn seq(&self) -> Option<u64> {
        match *self {
            Event::Msg { seq, .. }
            | Event::Data { seq, .. }
            | Event::Join { seq, .. }
            | Event::Nick { seq, .. }
            | Event::Leave { seq, .. }
            | Event::Tick { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// The event as the protocol line(s) it came in, LF included (with the
    /// payload for `DATA`); `None` for connection-state events. `--raw`
    /// output of `tickcast chat` is made of these.
    pub fn to_protocol(&self) -> Option<Vec<u8>> {
        let line = self.to_line()?;
        let mut out = Vec::new();
        line.encode(&mut out);
        if let Event::Data { payload, .. } = self {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Some(out)
    }

    /// The event a server line becomes: the one conversion from the wire
    /// to events. `link` is the connection the line came on (`Welcome` and
    /// `Bye` keep it); `payload` is the bytes that followed a `DATA` header
    /// (other lines ignore it). `WELCOME`'s session key is left out: it is
    /// the client's business, not the application's.
    pub fn from_line(line: &ServerLine<'_>, link: usize, payload: Bytes) -> Event {
        let s = |text: &str| text.to_string();
        match *line {
            ServerLine::Welcome {
                id,
                name,
                time,
                epoch,
                text,
                ..
            } => Event::Welcome {
                link,
                id,
                name: s(name),
                time,
                epoch: s(epoch),
                text: s(text),
            },
            ServerLine::Msg { seq, from, text } => Event::Msg {
                seq,
                from: s(from),
                text: s(text),
            },
            ServerLine::Data { seq, from, .. } => Event::Data {
                seq,
                from: s(from),
                payload,
            },
            ServerLine::Dm { from, text } => Event::Dm {
                from: s(from),
                text: s(text),
            },
            ServerLine::Join { seq, name } => Event::Join { seq, name: s(name) },
            ServerLine::Nick { seq, old, new } => Event::Nick {
                seq,
                old: s(old),
                new: s(new),
            },
            ServerLine::Leave { seq, name, reason } => Event::Leave {
                seq,
                name: s(name),
                reason,
            },
            ServerLine::Tick { seq, time, text } => Event::Tick {
                seq,
                time,
                text: s(text),
            },
            ServerLine::Users { ref names } => Event::Users {
                names: names.iter().map(|n| s(n)).collect(),
            },
            ServerLine::Ping(token) => Event::Ping { token: s(token) },
            ServerLine::Pong(token) => Event::Pong { token: s(token) },
            ServerLine::Help(text) => Event::Help { text: s(text) },
            ServerLine::Ok { what, detail } => Event::Ok {
                what: s(what),
                detail: s(detail),
            },
            ServerLine::Err { code, text } => Event::Err {
                code,
                text: s(text),
            },
            ServerLine::Bye(reason) => Event::Bye { link, reason },
        }
    }

    /// The way back: the server line this event came as, borrowing the
    /// event's strings (for `Data`, the header: `len` is the payload's
    /// length). `None` for the connection's own story (`Connected`,
    /// `Gap`…) and for `Welcome`, whose session key is not kept.
    pub fn to_line(&self) -> Option<ServerLine<'_>> {
        Some(match self {
            Event::Msg { seq, from, text } => ServerLine::Msg {
                seq: *seq,
                from,
                text,
            },
            Event::Data { seq, from, payload } => ServerLine::Data {
                seq: *seq,
                from,
                len: payload.len() as u64,
            },
            Event::Dm { from, text } => ServerLine::Dm { from, text },
            Event::Join { seq, name } => ServerLine::Join { seq: *seq, name },
            Event::Nick { seq, old, new } => ServerLine::Nick {
                seq: *seq,
                old,
                new,
            },
            Event::Leave { seq, name, reason } => ServerLine::Leave {
                seq: *seq,
                name,
                reason: *reason,
            },
            Event::Tick { seq, time, text } => ServerLine::Tick {
                seq: *seq,
                time: *time,
                text,
            },
            Event::Users { names } => ServerLine::Users {
                names: names.iter().map(String::as_str).collect(),
            },
            Event::Ping { token } => ServerLine::Ping(token),
            Event::Pong { token } => ServerLine::Pong(token),
            Event::Help { text } => ServerLine::Help(text),
            Event::Ok { what, detail } => ServerLine::Ok { what, detail },
            Event::Err { code, text } => ServerLine::Err { code: *code, text },
            Event::Bye { reason, .. } => ServerLine::Bye(*reason),
            _ => return None,
        })
    }
}
