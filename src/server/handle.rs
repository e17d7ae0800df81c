//! The embedding program's side of a running server: [`ServerHandle`]
//! (notify everyone, write to one client, list clients, read the events,
//! shut down), and the errors its calls return. Everything here goes
//! through the same paths as a client's lines: a notification through the
//! broadcaster's inbox, a `DM` through the client's outbox.

use super::broadcaster::Inbox;
use super::{ClientId, ClientInfo, ServerEvent, Shared};
use crate::http::Counters;
use crate::http::stats::Snapshot;
use crate::protocol::{Reason, SERVER_SENDER, ServerLine, TextError, validate_text};
use crossbeam_channel::Receiver;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

/// A running server. Dropping it shuts the server down and waits for it.
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) local_addr: SocketAddr,
    pub(super) events: Receiver<ServerEvent>,
    /// Closes when the acceptor, the last thread, has finished.
    pub(super) finished: Receiver<()>,
    pub(super) acceptor: Option<JoinHandle<()>>,
}

/// Whom [`ServerHandle::send_to`] writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A client by id.
    Id(ClientId),
    /// A client by name (without regard to case).
    Name(String),
}

impl From<ClientId> for Target {
    fn from(id: ClientId) -> Self {
        Target::Id(id)
    }
}

impl From<&str> for Target {
    fn from(name: &str) -> Self {
        Target::Name(name.to_string())
    }
}

/// Why a [`ServerHandle`] call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// The text cannot travel in a line (control characters).
    InvalidText(TextError),
    /// No listed client has that id or name.
    NoSuchClient,
    /// The write to the client failed; it has been dropped for this reason.
    Dropped(Reason),
    /// The server is shutting down.
    Stopped,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::InvalidText(e) => write!(f, "{e}"),
            ServerError::NoSuchClient => f.write_str("no such client"),
            ServerError::Dropped(reason) => write!(f, "the client was dropped ({reason})"),
            ServerError::Stopped => f.write_str("the server is shutting down"),
        }
    }
}

impl std::error::Error for ServerError {}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound
    /// to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP port's address, when [`Config::http`](super::Config::http) is set (with the
    /// real port when bound to port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.shared.http_addr
    }

    /// With [`Config::cluster`](super::Config::cluster): this node's id,
    /// its room, and whether Redis answers.
    pub fn node(&self) -> Option<crate::http::stats::ClusterStats> {
        self.shared.cluster_stats()
    }

    /// Who is connected and what the history holds: what `GET /stats`
    /// shows (and `/metrics`, with [`ServerHandle::counters`]).
    pub fn stats(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// The counters behind `GET /metrics` (connections, events,
    /// deliveries, bytes out…). Render both with
    /// [`crate::http::stats::render_metrics`].
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The event channel (see [`ServerEvent`]). Every clone of the
    /// receiver takes events from the same queue. It is bounded
    /// ([`Config::event_capacity`](super::Config::event_capacity)); when nobody reads it, new events are
    /// dropped and counted in [`ServerHandle::dropped_events`].
    pub fn events(&self) -> Receiver<ServerEvent> {
        self.events.clone()
    }

    /// How many events were dropped because the channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.shared.events_dropped.load(Ordering::Relaxed)
    }

    /// Broadcasts a notification, as `TICK SEQ TIME TEXT`. Waits while the
    /// broadcaster's inbox is full.
    pub fn notify(&self, text: &str) -> Result<(), ServerError> {
        validate_text(text).map_err(ServerError::InvalidText)?;
        if self.shared.is_stopping() {
            return Err(ServerError::Stopped);
        }
        self.shared
            .inbox
            .send(Inbox::Notify {
                text: text.to_string(),
            })
            .map_err(|_| ServerError::Stopped)
    }

    /// The listed (joined) clients, by id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.shared.registry.clients()
    }

    /// How many connections are open, joined or not.
    pub fn connection_count(&self) -> usize {
        self.shared.registry.connection_count()
    }

    /// Sends `DM * TEXT` to one client (`*` marks the embedding program as
    /// the sender; it is never a client's name). Never waits: the line is
    /// queued for the client; a client that has fallen too far behind to
    /// take it is dropped.
    pub fn send_to(&self, to: impl Into<Target>, text: &str) -> Result<(), ServerError> {
        validate_text(text).map_err(ServerError::InvalidText)?;
        let target = match to.into() {
            Target::Id(id) => self.shared.registry.get(id),
            Target::Name(name) => self.shared.registry.find(&name),
        };
        let (conn, _) = target.ok_or(ServerError::NoSuchClient)?;
        let line = ServerLine::Dm {
            from: SERVER_SENDER,
            text,
        }
        .to_line();
        conn.send_line(line.as_bytes()).map_err(|e| {
            self.shared.drop_client(&conn, e.reason());
            ServerError::Dropped(e.reason())
        })
    }

    /// Starts the shutdown sequence and returns at once; see
    /// [`ServerHandle::join`]. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.shared.stop();
    }

    /// A channel that closes (its `recv` returns `Err`) once the server
    /// has finished shutting down, whether [`ServerHandle::shutdown`] was
    /// called or the server had to stop on its own (a failure of its
    /// broadcaster thread). Use it in a `select!`.
    pub fn finished(&self) -> Receiver<()> {
        self.finished.clone()
    }

    /// Waits until the server has shut down: every broadcast it accepted
    /// delivered, `BYE shutdown` sent, every thread joined. (Call
    /// [`ServerHandle::shutdown`] first, or this waits for ever.)
    pub fn join(mut self) {
        self.join_threads();
    }

    /// Whether the server has finished shutting down.
    pub fn is_finished(&self) -> bool {
        self.acceptor.as_ref().is_none_or(|h| h.is_finished())
    }

    fn join_threads(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
        self.join_threads();
    }
}
