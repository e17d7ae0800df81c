//! What every thread of one client shares: [`Shared`], the state behind
//! [`Client`](super::Client) and its link threads.
//!
//! # Glossary
//!
//! * **link**: one of the client's connection slots (one, or two when
//!   redundant), and the thread that keeps it connected (see `link`).
//!   A link has one *connection* at a time.
//! * **holder**: the link that carries the name and the application's
//!   commands. Its connection's session key is the **holder key**:
//!   presenting it with `/resume` after a loss takes the name back.
//! * **mirror**: the other link of a redundant client, when the server
//!   took its `/mirror HOLDER_KEY`: it only receives, and nobody else
//!   sees it. It cannot carry the name or commands: when the holder is
//!   lost, commands wait for the holder's link to reconnect (which takes
//!   the name back), while the mirror goes on receiving. A second link
//!   the server would not make a mirror is a plain second client, listed
//!   under a guest name; that one can take the name over at once.
//! * **ready**: a connection that is through its handshake (see
//!   `handshake`).
//! * **core**: the state the links decide things with, under one lock:
//!   the merge, the wanted name, who holds it, each link's state.
//! * **out**: a link's writing half: its socket and the queue of commands
//!   waiting for replies (see `requests`).
//! * **route**: the server addresses, and which one each link is on (see
//!   `route`).
//!
//! Ending, in the words the server uses too (`server::conn`, "Ending"):
//!
//! * **lost**: a connection ended without the client asking (EOF, an
//!   error, `BYE`, silence, a failed write). The link reconnects.
//! * **close**: shut a socket now, both ways ([`Shared::close_links`],
//!   `Connection::close`).
//! * **finish**: `/quit`, wait for the server's `BYE`, then close
//!   ([`Client::quit`](super::Client::quit)).
//! * **stop**: the client as a whole ends: [`Shared::begin_stop`] ends
//!   reconnecting and wakes every wait; [`Shared::stop`] tells the
//!   application, once, with `Event::Closed`.
//!
//! # Locks
//!
//! `Shared::core` and each link's `out` are separate locks. A thread may
//! take `out` while holding `core`, never the other way round. Events are
//! sent to the application while holding `core`, which is what keeps the
//! two links' deliveries in one order; the channel is unbounded, so that
//! send never blocks.

use super::config::ClientConfig;
use super::error::ClientError;
use super::event::{Closed, Event};
use super::handshake::Seat;
use super::merge::Merge;
use super::requests::{self, Pending};
use super::route::Route;
use crate::protocol::Command;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What every thread of one client shares.
pub(crate) struct Shared {
    pub config: ClientConfig,
    /// The server addresses, and which one each link is on.
    pub route: Route,
    events: Sender<Event>,
    pub(super) core: Mutex<Core>,
    /// Each link's `out`, `None` while it has no connection.
    pub(super) links: Vec<Mutex<Option<Out>>>,
    /// Set when the client stops: links stop reconnecting.
    stopping: AtomicBool,
    /// Dropped when the client stops, which wakes every backoff wait.
    stop: Mutex<Option<Sender<()>>>,
    pub(super) stop_rx: Receiver<()>,
    /// Links still trying; when the last gives up, the client stops.
    pub(super) alive: AtomicUsize,
    tokens: AtomicU64,
}

/// The writing half of a link's current connection.
pub(crate) struct Out {
    pub(super) stream: TcpStream,
    /// Commands sent and waiting for their replies, oldest first.
    pub(super) pending: VecDeque<Pending>,
}

/// State shared by the links, under one lock.
pub(super) struct Core {
    pub merge: Merge,
    /// The name the client wants (config, then every successful `nick`).
    pub name: Option<String>,
    /// Which link carries the name and the commands.
    holder: Option<usize>,
    /// The session key of the holder's connection.
    holder_key: Option<String>,
    pub links: Vec<LinkState>,
    /// `Client::connect` waits on this for the first ready link.
    pub first: Option<Sender<Result<(), ClientError>>>,
    /// The `Closed` event went out.
    closed: bool,
}

/// What the other threads know of one link's connection.
#[derive(Debug, Default, Clone)]
pub(super) struct LinkState {
    pub up: bool,
    pub ready: bool,
    /// The connection is (or is asking to be) a mirror of the holder's.
    pub mirror: bool,
    /// The connection's session key.
    pub key: String,
    /// The connection's name as the server knows it.
    pub name: String,
}

/// The name moves to another link: what that link must send to take it.
pub(super) struct Handover {
    /// The link that now holds the name.
    pub to: usize,
    /// The last SEQ delivered: `/resume` after it…
    pub after: Option<u64>,
    /// …with the lost holder's key, which takes its name over.
    pub key: Option<String>,
    /// The name, for the `/nick` that makes sure of it.
    pub name: Option<String>,
}

impl Core {
    /// Another link than `link` that is up and through its handshake.
    pub fn other_ready_link(&self, link: usize) -> Option<usize> {
        (0..self.links.len()).find(|&j| j != link && self.links[j].up && self.links[j].ready)
    }

    /// A new server run: keys of the old one mean nothing there.
    pub fn forget_keys(&mut self) {
        self.holder_key = None;
    }

    /// Whether no link but `link` that is up holds the name.
    fn seat_is_vacant(&self, link: usize) -> bool {
        self.holder.is_none_or(|h| h == link || !self.links[h].up)
    }

    /// The key of the holder's connection, if another link than `link`
    /// holds the name and is up: a new connection on `link` is to mirror
    /// it (see `handshake`).
    pub fn mirror_key(&self, link: usize) -> Option<String> {
        self.holder_key
            .clone()
            .filter(|_| !self.seat_is_vacant(link))
    }

    /// `link` has a new connection (session `key`, first `name`).
    /// `mirror_of`: it asked, or is to ask, to mirror the connection with
    /// that key (see [`Core::mirror_key`]; decided before `WELCOME` on a
    /// server without a token, so it holds even if the holder was lost
    /// since). Otherwise, if no link that is up holds the name, this one
    /// takes the seat, and the lost holder's key comes back with it (to
    /// `/resume` with); if one does, this is a plain second client.
    pub fn link_up(
        &mut self,
        link: usize,
        key: &str,
        name: &str,
        mirror_of: Option<String>,
    ) -> Seat {
        let vacant = mirror_of.is_none() && self.seat_is_vacant(link);
        self.links[link] = LinkState {
            up: true,
            ready: false,
            mirror: mirror_of.is_some(),
            key: key.to_string(),
            name: name.to_string(),
        };
        if !vacant {
            return Seat::Other {
                holder_key: mirror_of,
            };
        }
        self.holder = Some(link);
        Seat::Holder {
            lost_key: self.holder_key.replace(key.to_string()),
        }
    }

    /// `link`'s connection is over. If it held the name and another link
    /// is ready (and a client of its own: a mirror cannot take a name), the
    /// name moves there: what that link must send. Otherwise the seat
    /// waits for this link to come back.
    pub fn link_down(&mut self, link: usize) -> Option<Handover> {
        let state = &mut self.links[link];
        state.up = false;
        state.ready = false;
        if self.holder != Some(link) {
            return None;
        }
        let to = self
            .other_ready_link(link)
            .filter(|&to| !self.links[to].mirror)?;
        self.holder = Some(to);
        let key = self.links[to].key.clone();
        Some(Handover {
            to,
            after: self.merge.last(),
            key: self.holder_key.replace(key),
            name: self.name.clone(),
        })
    }
}

impl Shared {
    pub(crate) fn new(
        config: ClientConfig,
        addrs: Vec<SocketAddr>,
        events: Sender<Event>,
        first: Sender<Result<(), ClientError>>,
    ) -> Self {
        let n = if config.redundant { 2 } else { 1 };
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let name = config.name.clone();
        Shared {
            config,
            route: Route::new(addrs, n),
            events,
            core: Mutex::new(Core {
                merge: Merge::new(n),
                name,
                holder: None,
                holder_key: None,
                links: vec![LinkState::default(); n],
                first: Some(first),
                closed: false,
            }),
            links: (0..n).map(|_| Mutex::new(None)).collect(),
            stopping: AtomicBool::new(false),
            stop: Mutex::new(Some(stop)),
            stop_rx,
            alive: AtomicUsize::new(n),
            tokens: AtomicU64::new(0),
        }
    }

    /// Runs `step` on the merge and emits the events it releases, in
    /// order. The caller holds the core lock, so that two links'
    /// deliveries come out in one order.
    pub(super) fn merged(&self, core: &mut Core, step: impl FnOnce(&mut Merge, &mut Vec<Event>)) {
        let mut out = Vec::new();
        step(&mut core.merge, &mut out);
        for event in out {
            self.emit(event);
        }
    }

    /// Tells the merge that `link` is down (see `Merge::link_lost`).
    pub(super) fn link_lost(&self, link: usize) {
        let mut core = self.core.lock();
        self.merged(&mut core, |merge, out| merge.link_lost(link, out));
    }

    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    pub(super) fn emit(&self, event: Event) {
        // Nobody listening is fine: the application dropped its receiver.
        let _ = self.events.send(event);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A fresh token for `/ping`.
    pub(crate) fn token(&self, what: &str) -> String {
        format!("{what}-{}", self.tokens.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Writes one command (and a payload) on a link, queueing what waits
    /// for its reply. Queueing and writing happen under one lock, so the
    /// queue is in the order the server sees.
    pub(crate) fn send(
        &self,
        link: usize,
        command: &Command<'_>,
        payload: Option<&[u8]>,
        pending: Option<Pending>,
    ) -> Result<(), ClientError> {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        if let Some(payload) = payload {
            bytes.extend_from_slice(payload);
            bytes.push(b'\n');
        }
        self.write(link, &bytes, pending)
    }

    /// Sends `/resume AFTER [KEY]` on a link, and queues what waits for
    /// its replies. `handshake` when it is part of (re)connecting: its
    /// last reply then counts as a handshake step.
    pub(crate) fn send_resume(
        &self,
        link: usize,
        after: u64,
        key: Option<&str>,
        handshake: bool,
    ) -> Result<(), ClientError> {
        let pending = Pending::Resume {
            after,
            keyed: key.is_some(),
            handshake,
        };
        self.send(link, &Command::Resume { after, key }, None, Some(pending))
    }

    /// Writes whole lines on a link (in one write), and queues what waits
    /// for their replies, in the same order; see [`Shared::send`].
    pub(crate) fn write(
        &self,
        link: usize,
        bytes: &[u8],
        pending: impl IntoIterator<Item = Pending>,
    ) -> Result<(), ClientError> {
        let mut out = self.links[link].lock();
        let o = out.as_mut().ok_or(ClientError::NotConnected)?;
        if let Err(e) = o.stream.write_all(bytes) {
            // The connection is broken mid-line: close it; the reader sees
            // that, and the link reconnects.
            let _ = o.stream.shutdown(Shutdown::Both);
            return Err(
                if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut {
                    ClientError::Timeout
                } else {
                    ClientError::Disconnected
                },
            );
        }
        for p in pending {
            requests::enqueue(&mut o.pending, p);
        }
        Ok(())
    }

    /// The link application commands go to: the name holder if it is up,
    /// else any link that is up and not a mirror (which only receives).
    pub(crate) fn primary(&self) -> Result<usize, ClientError> {
        if self.is_stopping() {
            return Err(ClientError::Closed);
        }
        let core = self.core.lock();
        if let Some(h) = core.holder.filter(|&h| core.links[h].up) {
            return Ok(h);
        }
        core.links
            .iter()
            .position(|l| l.up && !l.mirror)
            .ok_or(ClientError::NotConnected)
    }

    /// The server address of the primary connection.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        let link = self.primary().ok()?;
        self.route.addr_of(link)
    }

    /// The name of the primary connection.
    pub(crate) fn name(&self) -> Option<String> {
        let core = self.core.lock();
        let h = core.holder?;
        core.links[h].up.then(|| core.links[h].name.clone())
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.core.lock().links.iter().any(|l| l.ready)
    }

    /// Stops reconnecting and wakes every link out of its waits.
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.lock().take();
    }

    /// Closes the socket of every link now (their readers return).
    pub(crate) fn close_links(&self) {
        for link in &self.links {
            if let Some(o) = link.lock().as_ref() {
                let _ = o.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// The client stops for good: tell the application once.
    pub(crate) fn stop(&self, why: Closed) {
        self.begin_stop();
        self.close_links();
        let mut core = self.core.lock();
        if let Some(first) = core.first.take() {
            let _ = first.send(Err(match why {
                Closed::AuthFailed => ClientError::AuthFailed,
                _ => ClientError::Closed,
            }));
        }
        if !core.closed {
            core.closed = true;
            self.emit(Event::Closed(why));
        }
    }

    /// Fails `Client::connect` with `error`, if it is still waiting.
    pub(super) fn fail_first(&self, error: ClientError) -> bool {
        match self.core.lock().first.take() {
            Some(first) => {
                let _ = first.send(Err(error));
                true
            }
            None => false,
        }
    }

    /// Opens a TCP connection to address number `index`.
    pub(crate) fn dial(&self, index: usize) -> io::Result<TcpStream> {
        TcpStream::connect_timeout(&self.route.addr(index), self.config.connect_timeout)
    }
}
