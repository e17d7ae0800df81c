//! What the embedding program can watch and ask about: connection ids,
//! client descriptions, and the [`ServerEvent`]s delivered on a channel.

use crate::protocol::Reason;
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

/// A connection's id: the `ID` of its `WELCOME`, and the number in its
/// first name `guest-ID`. Ids are handed out from 1 and never reused
/// within one run of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A listed (joined) client, as returned by
/// [`ServerHandle::clients`](super::ServerHandle::clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its id.
    pub id: ClientId,
    /// Its current name.
    pub name: String,
    /// Its address.
    pub peer: SocketAddr,
    /// When it connected.
    pub connected_at: SystemTime,
}

/// Something that happened in the server, for the embedding program
/// (see [`ServerHandle::events`](super::ServerHandle::events)).
///
/// Two levels are reported. `Connected`, `Refused` and `Disconnected`
/// are about TCP connections, every one of them, authenticated or not.
/// `Joined`, `Renamed`, `Message`, `Payload` and `Left` are the
/// broadcast events exactly as clients see them, with their SEQ, in SEQ
/// order. Each kind is in order; the two kinds are not ordered against
/// each other (a client's `Disconnected` may come before its `Left`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A connection was accepted (its `WELCOME` is on its way).
    Connected {
        /// Its id.
        id: ClientId,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A connection was turned away by a limit (`server-full`,
    /// `too-many-connections`).
    Refused {
        /// The client's address.
        peer: SocketAddr,
        /// The `BYE` reason it got.
        reason: Reason,
    },
    /// A client joined (`JOIN`).
    Joined {
        /// The `JOIN`'s SEQ.
        seq: u64,
        /// The client.
        id: ClientId,
        /// Its name.
        name: String,
    },
    /// A client changed its name (`NICK`).
    Renamed {
        /// The `NICK`'s SEQ.
        seq: u64,
        /// The client.
        id: ClientId,
        /// The name before.
        old: String,
        /// The name after.
        new: String,
    },
    /// A client said something (`MSG`). Reported only when
    /// [`Config::message_events`](super::Config::message_events) is on.
    Message {
        /// The `MSG`'s SEQ.
        seq: u64,
        /// The sender.
        id: ClientId,
        /// The sender's name.
        name: String,
        /// What it said.
        text: String,
    },
    /// A client sent raw bytes (`DATA`). Reported only when
    /// [`Config::message_events`](super::Config::message_events) is on.
    Payload {
        /// The `DATA`'s SEQ.
        seq: u64,
        /// The sender.
        id: ClientId,
        /// The sender's name.
        name: String,
        /// The bytes (shared with the server's copy, not copied).
        bytes: Bytes,
    },
    /// A client left (`LEAVE`).
    Left {
        /// The `LEAVE`'s SEQ.
        seq: u64,
        /// The client.
        id: ClientId,
        /// Its name.
        name: String,
        /// Why.
        reason: Reason,
    },
    /// `accept` failed (for instance: out of file descriptors). The server
    /// waits a little and goes on accepting.
    AcceptFailed {
        /// What went wrong.
        error: String,
    },
    /// A cluster node's news about its room (`--redis`): Redis was lost
    /// (`up: false`) or is back, or the room started again.
    Room {
        /// Whether the room's store (Redis) can be reached now.
        up: bool,
        /// What happened, in words.
        text: String,
    },
    /// A connection ended, for any reason (shutdown included).
    Disconnected {
        /// Its id.
        id: ClientId,
        /// The client's address.
        peer: SocketAddr,
        /// Its last name.
        name: String,
        /// Why it ended.
        reason: Reason,
    },
}
