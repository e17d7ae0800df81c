//! How a connection's bytes look on its socket: protocol lines (TCP) or
//! Server-Sent Events (an HTTP `GET /events` stream).
//!
//! # One hub, two wire formats
//!
//! Everything inside the server speaks protocol lines: the broadcaster
//! encodes each event once as a line (`MSG 7 alice hi\n`), keeps that in
//! its history and hands it to the members. A browser's stream is a member
//! like any other; only the *last step*, turning the line into bytes for
//! one socket, differs. A [`Wire`] is that step:
//!
//! | what | `Wire::Line` | `Wire::Sse` |
//! |---|---|---|
//! | a broadcast event | the line itself | `id: EPOCH:SEQ` + `data: LINE` ([`sse::broadcast`]) |
//! | a reply (`WELCOME`, `DM`, `ERR`, `BYE`) | the line itself | `event: welcome` / `dm` / `err` / `bye` ([`sse::reply`]) |
//!
//! The broadcaster converts each *batch* once per wire format that some
//! member actually uses (see `batch`), never once per client.

use crate::http::sse;
use crate::http::stats::Transport;
use crate::protocol::{Reason, ServerLine};
use bytes::Bytes;

/// The wire format of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Wire {
    /// The TCP line protocol.
    Line,
    /// An HTTP event stream.
    Sse,
}

impl Wire {
    /// The transport, as `/stats` and `/metrics` name it.
    pub(crate) fn transport(self) -> Transport {
        match self {
            Wire::Line => Transport::Tcp,
            Wire::Sse => Transport::Sse,
        }
    }

    /// Frames one or more reply lines (each ending in LF) for this wire.
    pub(crate) fn replies(self, lines: &[u8]) -> Bytes {
        match self {
            Wire::Line => Bytes::copy_from_slice(lines),
            Wire::Sse => {
                let mut out = Vec::with_capacity(lines.len() + 32);
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    out.extend_from_slice(&sse::reply(line));
                }
                Bytes::from(out)
            }
        }
    }

    /// The last thing a connection is sent: `BYE REASON`.
    pub(crate) fn bye(self, reason: Reason) -> Bytes {
        self.replies(ServerLine::Bye(reason).to_line().as_bytes())
    }

    /// Says that the events before `oldest` are lost to this client:
    /// `ERR resume-gap OLDEST` on a line, `event: gap` on a stream.
    pub(crate) fn gap(self, oldest: u64) -> Bytes {
        match self {
            Wire::Line => {
                let text = oldest.to_string();
                let code = crate::protocol::ErrorCode::ResumeGap;
                Bytes::from(ServerLine::Err { code, text: &text }.to_line())
            }
            Wire::Sse => sse::gap(oldest),
        }
    }

    /// Frames one encoded broadcast event (as the history holds it).
    pub(crate) fn broadcast(self, encoded: &Bytes, epoch: &str) -> Bytes {
        match self {
            Wire::Line => encoded.clone(),
            // Everything the broadcaster encodes is one broadcast event;
            // were one not (a cluster's log is written by others too),
            // it goes out as a plain event rather than stop the server.
            Wire::Sse => sse::broadcast(encoded, epoch).unwrap_or_else(|_| self.replies(encoded)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_named_events_on_a_stream() {
        let two = b"DM bob hi\nERR bad-args no\n";
        assert_eq!(&Wire::Line.replies(two)[..], &two[..]);
        assert_eq!(
            &Wire::Sse.replies(two)[..],
            b"event: dm\ndata: DM bob hi\n\nevent: err\ndata: ERR bad-args no\n\n"
        );
        assert_eq!(
            &Wire::Sse.bye(Reason::Quit)[..],
            b"event: bye\ndata: BYE quit\n\n"
        );
    }

    #[test]
    fn broadcasts_get_their_id() {
        let line = Bytes::from_static(b"MSG 3 al hi\n");
        assert_eq!(Wire::Line.broadcast(&line, "e"), line);
        assert_eq!(
            &Wire::Sse.broadcast(&line, "e")[..],
            b"id: e:3\ndata: MSG 3 al hi\n\n"
        );
    }
}
