//! The server: a thread-per-connection broadcast hub.
//!
//! # The threads
//!
//! ```text
//!              accept()                         inbox (bounded)
//!  clients ──► acceptor ──spawns──► session 1 ─┐
//!                                   session 2 ─┼──► broadcaster ──► every member's outbox ──► socket
//!                                   session N ─┘        ▲   │                │ (the rest, later)
//!                        embedding program: notify() ───┘   └─ history       ▼
//!                                                                         flusher
//!  browsers ─► http acceptor ──spawns──► HTTP connection: a request, or an event stream
//!  (--http)                              (a member like a session's client)
//! ```
//!
//! * the **acceptor** (`accept`) blocks in `accept()`, admits each
//!   connection against the limits and starts its session; at the end it
//!   runs the shutdown sequence;
//! * one **session** per connection (`session`) reads and parses that
//!   client's lines, answers it directly (`OK`, `ERR`, `PONG`…), and hands
//!   whatever must reach everyone to the broadcaster; the checks and the
//!   commands themselves are in `command`, shared with HTTP;
//! * the **broadcaster** (`broadcaster`) numbers, encodes and remembers
//!   every broadcast event, hands each batch to every member's outbox
//!   (`outbox`, `conn`), sends the periodic `TICK`, and announces the
//!   clients that were dropped;
//! * the **flusher** (`flusher`) writes what a client's socket did not
//!   take at once, and drops the clients that fall too far behind;
//! * with `--http`, the **HTTP door** (`http_door`): its own acceptor and
//!   one thread per HTTP connection. An event stream (`stream`) is a
//!   client like a TCP one, in its own wire format (`wire`).
//!
//! They share the client map (`registry`, one `parking_lot::Mutex`,
//! never held across I/O) and, per connection, an outbox lock that keeps
//! lines whole when several threads write to one client and is held only
//! for a non-blocking send.
//!
//! # Using it from Rust
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use tickcast::server::{self, Config, ServerEvent};
//!
//! let server = server::spawn(Config {
//!     bind: "127.0.0.1:0".parse().unwrap(),
//!     tick: Some(Duration::from_secs(1)),
//!     ..Config::default()
//! })?;
//! println!("listening on {}", server.local_addr());
//! server.notify("prices updated")?;            // goes out as TICK
//! println!("{} clients, newest SEQ {}", server.stats().clients.len(), server.stats().seq);
//! for event in server.events().iter().take(3) {
//!     if let ServerEvent::Message { name, text, .. } = event {
//!         println!("{name}: {text}");
//!     }
//! }
//! server.shutdown();
//! server.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With [`Config::http`] set (`Some("127.0.0.1:0".parse()?)` picks a free
//! port), the same server also serves the HTTP door: the web page, event
//! streams, `/notify`, `/stats` and `/metrics` (see `docs/HTTP.md`);
//! [`ServerHandle::http_addr`] says where.

mod accept;
mod batch;
mod broadcaster;
mod budget;
#[cfg(feature = "redis")]
mod cluster;
mod command;
mod config;
mod conn;
mod event;
mod flusher;
mod handle;
mod history;
mod http_door;
mod in_flight;
mod keys;
mod outbox;
mod rate;
mod registry;
mod session;
mod stream;
mod wire;

pub use config::{ClusterConfig, Config, ConfigError, TickInfo, TickText};
pub use event::{ClientId, ClientInfo, ServerEvent};
pub use handle::{ServerError, ServerHandle, Target};

use crate::http::stats::{HistoryStats, Snapshot};
use crate::http::{Counters, Transport};
use crate::protocol::{Reason, to_hex};
use broadcaster::{Broadcaster, Inbox, Lanes, Payload};
use budget::Budget;
use conn::{Conn, FlusherLink, Link};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use flusher::Flusher;
use registry::{Claim, Registry};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::SystemTime;

/// Capacity of the broadcaster's inbox, in messages (each at most
/// `--max-line` bytes). When it is full, sessions wait (and stop reading
/// their sockets) instead of queueing more: memory stays bounded under a
/// flood.
const INBOX_CAPACITY: usize = 256;

/// Capacity of the payload lane, in payloads. Their bytes are bounded by
/// `--max-memory` (see `budget`); this only bounds the count.
const PAYLOAD_LANE_CAPACITY: usize = 256;

/// The backlog of the listening socket: connections the kernel completes
/// before `accept` takes them. std uses 128, which a reconnect storm
/// overflows; Linux caps it at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// What every thread of one server shares.
pub(crate) struct Shared {
    pub config: Config,
    pub registry: Registry,
    /// The broadcaster's inbox.
    pub inbox: Sender<Inbox>,
    /// The broadcaster's payload lane.
    pub payloads: Sender<Payload>,
    /// Clients dropped by other threads, for the broadcaster to announce.
    departures: Sender<ClientId>,
    /// `--max-memory`: payload bytes held at once.
    pub budget: Arc<Budget>,
    /// What every connection is linked to: the flusher, the counters.
    pub link: Link,
    /// The figures behind `/metrics` (relaxed atomics; see `http::stats`).
    pub counters: Arc<Counters>,
    /// What the broadcaster's history holds, as of its last batch.
    pub history: HistoryView,
    /// When the server started.
    pub started: SystemTime,
    /// The HTTP listener's address, with `--http`.
    pub http_addr: Option<SocketAddr>,
    /// Wakes the HTTP acceptor out of `accept()` (see `accept::Waker`).
    http_waker: Option<accept::Waker>,
    /// Failed `/auth` attempts per address.
    pub auth_failures: rate::AuthFailures,
    /// Names this run of the server (`EPOCH` in `WELCOME`); in a cluster,
    /// the room's, which changes if Redis loses the room.
    pub epoch: Epoch,
    /// With `--redis`: this node's side of the room (see `cluster`).
    #[cfg(feature = "redis")]
    pub room: Option<Arc<cluster::Room>>,
    events: Sender<ServerEvent>,
    events_dropped: AtomicU64,
    /// Set once shutdown has begun.
    stopping: AtomicBool,
    /// Wakes the acceptor out of `accept()`: a socket made at start and
    /// connected to our own listener at shutdown (see `accept`).
    waker: accept::Waker,
    /// Wakes the acceptor out of a backoff wait.
    wake: Sender<()>,
}

impl Shared {
    /// Reports an event to the embedding program, or counts it as dropped
    /// if the program is not keeping up: the server never waits for it.
    pub(crate) fn emit(&self, event: ServerEvent) {
        if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Starts the shutdown sequence (once): sets the flag, and wakes the
    /// acceptor by connecting to its listener (see `accept`).
    pub(crate) fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.wake.try_send(());
        self.waker.wake();
        if let Some(waker) = &self.http_waker {
            waker.wake();
        }
    }

    /// A cluster node's id for a new connection (`None`: a single server
    /// counts its own); `Err(unavailable)` while Redis cannot be reached.
    pub(crate) fn room_id(&self) -> Result<Option<ClientId>, Reason> {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            return match room.is_up().then(|| room.next_id()).flatten() {
                Some(id) => Ok(Some(id)),
                None => Err(Reason::Unavailable),
            };
        }
        Ok(None)
    }

    /// Whether this is a cluster node that cannot reach Redis now: lines
    /// that need it get `ERR unavailable`.
    pub(crate) fn room_is_down(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            return !room.is_up();
        }
        false
    }

    /// The names for `/list`: of this server's clients, or of a cluster
    /// room's members on every node.
    pub(crate) fn names(&self) -> Vec<String> {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            return room.names();
        }
        self.registry.names()
    }

    /// A cluster node's `/msg`: Redis finds the target's node, and the
    /// reply line (`OK msg` or `ERR no-such-user`) comes on the channel
    /// returned. `None` on a single server: the caller delivers it.
    pub(crate) fn direct_message_in_room(
        &self,
        conn: &Arc<Conn>,
        to: &str,
        text: &str,
    ) -> Option<Receiver<String>> {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            let text = if text.is_empty() {
                String::new()
            } else {
                format!(" {text}")
            };
            let (conn, to) = (Arc::clone(conn), to.to_string());
            let (reply, answer) = bounded(1);
            let reply = in_flight::Waiting {
                reply,
                asked: std::time::Instant::now(),
            };
            room.propose(cluster::Op::Dm {
                conn,
                to,
                text,
                reply,
            });
            return Some(answer);
        }
        let _ = (conn, to, text);
        None
    }

    /// A cluster node's view of its room.
    pub(crate) fn cluster_stats(&self) -> Option<crate::http::stats::ClusterStats> {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            return Some(crate::http::stats::ClusterStats {
                node: room.node.clone(),
                room: room.name.clone(),
                redis_up: room.is_up(),
                reader_lag: room.lag.load(Ordering::Relaxed),
            });
        }
        None
    }

    /// Whether this server is a node of a cluster.
    pub(crate) fn in_cluster(&self) -> bool {
        #[cfg(feature = "redis")]
        if self.room.is_some() {
            return true;
        }
        false
    }

    /// What `/stats` and `/metrics` show of the present.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::new(&*self.epoch.get(), self.started);
        snapshot.seq = self.history.seq.load(Ordering::Relaxed);
        snapshot.history = self.history.get();
        snapshot.clients = self.registry.client_stats();
        let on = |t| snapshot.clients.iter().filter(|c| c.transport == t).count() as u64;
        (snapshot.clients_tcp, snapshot.clients_sse) = (on(Transport::Tcp), on(Transport::Sse));
        snapshot.cluster = self.cluster_stats();
        snapshot
    }

    /// Drops a client whose outbox failed (it fell too far behind, or is
    /// gone): ends the connection as `reason` calls for and, if this call
    /// is the one that ended it, has its `LEAVE` announced (a mirror is let
    /// go of, silently). Any thread may call it; it never waits.
    pub(crate) fn drop_client(&self, conn: &Conn, reason: Reason) {
        let claim = self.registry.claim(conn, reason);
        // A lost claim leaves the connection to whoever ended it (it may be
        // writing a last `BYE`), except for a slow consumer: that one is
        // not going to take its last line either.
        if claim.won() || reason == Reason::SlowConsumer {
            conn.close_for(reason);
        }
        if matches!(claim, Claim::Listed | Claim::Mirror) && !self.is_stopping() {
            let _ = self.departures.send(conn.id);
        }
    }
}

/// The EPOCH in `WELCOME`. A single server keeps one for its whole run; a
/// cluster node takes the room's, and a new one if Redis lost the room.
#[derive(Debug)]
pub(crate) struct Epoch(parking_lot::RwLock<Arc<str>>);

impl Epoch {
    fn new(epoch: &str) -> Self {
        Epoch(parking_lot::RwLock::new(Arc::from(epoch)))
    }

    pub(crate) fn get(&self) -> Arc<str> {
        Arc::clone(&self.0.read())
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set(&self, epoch: &str) {
        *self.0.write() = Arc::from(epoch);
    }
}

/// What the broadcaster's history holds, published after each batch in
/// plain atomics, so that `/stats` never has to ask the broadcaster.
#[derive(Debug, Default)]
pub(crate) struct HistoryView {
    seq: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    /// The oldest SEQ held; 0 when empty.
    oldest: AtomicU64,
}

impl HistoryView {
    /// The newest SEQ delivered.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn newest(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, history: &history::History) {
        let stats = history.stats();
        self.seq.store(history.newest(), Ordering::Relaxed);
        self.events.store(stats.events, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
        self.oldest
            .store(stats.oldest.unwrap_or(0), Ordering::Relaxed);
    }

    fn get(&self) -> HistoryStats {
        let oldest = self.oldest.load(Ordering::Relaxed);
        HistoryStats {
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            oldest: (oldest > 0).then_some(oldest),
        }
    }
}

/// Binds `config.bind` and starts a server on it.
pub fn spawn(config: Config) -> io::Result<ServerHandle> {
    let listener = TcpListener::bind(config.bind)?;
    spawn_on(listener, config)
}

/// Starts a server on a listener you bound yourself (`config.bind` is
/// ignored). Tests bind `127.0.0.1:0` and read the port from
/// [`ServerHandle::local_addr`].
pub fn spawn_on(listener: TcpListener, config: Config) -> io::Result<ServerHandle> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // A cluster node reaches its room first: it must not serve a split one.
    let mut room = RoomStart::join(&config)?;
    // A longer queue of completed connections than std's 128 (calling
    // `listen` again on a listening socket only changes its backlog).
    socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG)?;
    let local_addr = listener.local_addr()?;
    let (http_listener, http_addr, http_waker) = bind_http(config.http)?;
    let (shared, ends) = Shared::new(config, local_addr, http_addr, http_waker, &room)?;

    let (stop_flusher, flusher) = start_flusher(&shared, ends.watch, ends.flusher_wakes)?;
    let (room_lanes, stop_room) = room.start(&shared)?;
    let lanes = Lanes {
        inbox: ends.inbox,
        payloads: ends.payloads,
        departures: ends.departures,
        room: room_lanes.logged,
        room_answers: room_lanes.answers,
        stop: crossbeam_channel::never(),
    };
    let (stop_broadcaster, broadcaster) = start_broadcaster(&shared, lanes, room)?;
    let http = match http_listener {
        Some(listener) => Some(http_door::spawn(Arc::clone(&shared), listener)?),
        None => None,
    };
    let (done_tx, done_rx) = bounded::<()>(0);
    let acceptor = accept::Acceptor {
        http,
        shared: Arc::clone(&shared),
        listener,
        wake: ends.wake_acceptor,
        broadcaster,
        stop_broadcaster,
        stop_room: Some(stop_room),
        flusher,
        stop_flusher,
        done: done_tx,
    };
    let acceptor = thread::Builder::new()
        .name("tickcast-acceptor".into())
        .spawn(move || acceptor.run())?;

    Ok(ServerHandle {
        shared,
        local_addr,
        events: ends.events,
        finished: done_rx,
        acceptor: Some(acceptor),
    })
}

/// How a server's room starts: on its own (numbering events itself), or,
/// with `--redis`, as a node of a room in Redis (see `cluster`).
enum RoomStart {
    Alone,
    #[cfg(feature = "redis")]
    Node(Box<cluster::Joining>),
}

impl RoomStart {
    fn join(config: &Config) -> io::Result<RoomStart> {
        #[cfg(feature = "redis")]
        if let Some(cluster) = &config.cluster {
            let history = (config.history, config.history_bytes);
            let joining = cluster::join(cluster, history)
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
            return Ok(RoomStart::Node(Box::new(joining)));
        }
        let _ = config;
        Ok(RoomStart::Alone)
    }

    /// The EPOCH to start with: a fresh one, or the room's.
    fn epoch(&self) -> io::Result<String> {
        match self {
            RoomStart::Alone => {
                let mut epoch = [0u8; 8];
                getrandom::fill(&mut epoch).map_err(io::Error::other)?;
                Ok(to_hex(&epoch))
            }
            #[cfg(feature = "redis")]
            RoomStart::Node(joining) => Ok(joining.snapshot.epoch.clone()),
        }
    }

    /// Starts a node's room threads; returns the broadcaster's lane for
    /// what they hear, and how to stop them once the broadcaster is done.
    fn start(&mut self, shared: &Arc<Shared>) -> io::Result<(RoomLanes, accept::AfterBroadcaster)> {
        let _ = shared;
        match self {
            RoomStart::Alone => {
                let (logged, answers) = (crossbeam_channel::never(), crossbeam_channel::never());
                Ok((RoomLanes { logged, answers }, Box::new(|| {})))
            }
            #[cfg(feature = "redis")]
            RoomStart::Node(joining) => {
                // The reader's lane is bounded: a node that falls behind
                // leaves the rest in Redis. The appender's answers are
                // not (one per operation at most): the appender must never
                // wait for the broadcaster, which may be waiting for it.
                let (logged_tx, logged) = bounded(INBOX_CAPACITY);
                let (answers_tx, answers) = unbounded();
                let threads = cluster::start(joining.take_links()?, shared, logged_tx, answers_tx)?;
                let room = Arc::clone(&joining.room);
                Ok((
                    RoomLanes { logged, answers },
                    Box::new(move || threads.stop(&room)),
                ))
            }
        }
    }
}

/// What the broadcaster hears from a cluster node's room threads.
struct RoomLanes {
    /// From the stream reader: numbered events.
    logged: RoomLane,
    /// From the appender: how what it proposed went.
    answers: RoomLane,
}

/// What the broadcaster hears from its room's threads (nothing, alone).
#[cfg(feature = "redis")]
pub(crate) type RoomLane = Receiver<cluster::RoomEvent>;
#[cfg(not(feature = "redis"))]
pub(crate) type RoomLane = Receiver<std::convert::Infallible>;

/// The receiving ends of the channels whose sending ends [`Shared`] holds.
struct Ends {
    inbox: Receiver<Inbox>,
    payloads: Receiver<Payload>,
    departures: Receiver<ClientId>,
    watch: Receiver<Arc<Conn>>,
    flusher_wakes: UnixStream,
    wake_acceptor: Receiver<()>,
    events: Receiver<ServerEvent>,
}

impl Shared {
    /// What every thread of one server shares, and the other ends of its
    /// channels. Every channel is bounded but the departures (one message
    /// per connection at most) and the flusher's hand-overs (at most one
    /// per connection with unsent bytes).
    fn new(
        config: Config,
        local_addr: SocketAddr,
        http_addr: Option<SocketAddr>,
        http_waker: Option<accept::Waker>,
        room: &RoomStart,
    ) -> io::Result<(Arc<Shared>, Ends)> {
        let (inbox_tx, inbox_rx) = bounded(INBOX_CAPACITY);
        let (payloads_tx, payloads_rx) = bounded(PAYLOAD_LANE_CAPACITY);
        let (departures_tx, departures_rx) = unbounded();
        let (events_tx, events_rx) = bounded(config.event_capacity);
        let (wake_tx, wake_rx) = bounded(1);
        let (watch_tx, watch_rx) = unbounded();
        let (wake_flusher, flusher_wakes) = UnixStream::pair()?;
        wake_flusher.set_nonblocking(true)?;
        let counters = Arc::new(Counters::new());
        let shared = Arc::new(Shared {
            budget: Budget::new(config.max_memory),
            config,
            registry: Registry::default(),
            inbox: inbox_tx,
            payloads: payloads_tx,
            departures: departures_tx,
            link: Link {
                flusher: FlusherLink {
                    watch: watch_tx,
                    wake: Arc::new(wake_flusher),
                },
                counters: Arc::clone(&counters),
            },
            counters,
            history: HistoryView::default(),
            started: SystemTime::now(),
            http_addr,
            http_waker,
            auth_failures: rate::AuthFailures::default(),
            epoch: Epoch::new(&room.epoch()?),
            #[cfg(feature = "redis")]
            room: match room {
                RoomStart::Node(joining) => Some(Arc::clone(&joining.room)),
                RoomStart::Alone => None,
            },
            events: events_tx,
            events_dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            waker: accept::Waker::new(local_addr)?,
            wake: wake_tx,
        });
        let ends = Ends {
            inbox: inbox_rx,
            payloads: payloads_rx,
            departures: departures_rx,
            watch: watch_rx,
            flusher_wakes,
            wake_acceptor: wake_rx,
            events: events_rx,
        };
        Ok((shared, ends))
    }
}

/// Starts the flusher thread; returns how to stop it, and its handle.
fn start_flusher(
    shared: &Arc<Shared>,
    watch: Receiver<Arc<Conn>>,
    wakes: UnixStream,
) -> io::Result<(Sender<std::time::Instant>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = bounded(1);
    let flusher = Flusher {
        shared: Arc::clone(shared),
        new: watch,
        wake: wakes,
        stop: stop_rx,
    };
    let handle = thread::Builder::new()
        .name("tickcast-flusher".into())
        .spawn(move || flusher.run())?;
    Ok((stop_tx, handle))
}

/// Starts the broadcaster thread; returns how to stop it, and its handle.
fn start_broadcaster(
    shared: &Arc<Shared>,
    mut lanes: Lanes,
    room: RoomStart,
) -> io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = bounded(1);
    lanes.stop = stop_rx;
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut broadcaster = Broadcaster::new(Arc::clone(shared), lanes);
    #[cfg(feature = "redis")]
    if let RoomStart::Node(joining) = room {
        broadcaster.start_room(joining.snapshot);
    }
    #[cfg(not(feature = "redis"))]
    let RoomStart::Alone = room;
    let shared = Arc::clone(shared);
    let handle = thread::Builder::new()
        .name("tickcast-broadcaster".into())
        .spawn(move || {
            // A bug here must not leave a server that accepts clients but
            // broadcasts nothing: stop the whole server instead (the panic
            // message is on stderr). Nothing is shared across the unwind.
            let run = std::panic::AssertUnwindSafe(|| broadcaster.run());
            if std::panic::catch_unwind(run).is_err() {
                shared.stop();
            }
        })?;
    Ok((stop_tx, handle))
}

/// `--http`: the second door, bound before anything starts so that its
/// address is known, with the socket that will wake its `accept()`.
fn bind_http(
    at: Option<SocketAddr>,
) -> io::Result<(
    Option<TcpListener>,
    Option<SocketAddr>,
    Option<accept::Waker>,
)> {
    let Some(at) = at else {
        return Ok((None, None, None));
    };
    let listener = TcpListener::bind(at)?;
    let addr = listener.local_addr()?;
    Ok((Some(listener), Some(addr), Some(accept::Waker::new(addr)?)))
}
