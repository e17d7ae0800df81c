//! Several nodes, one room: the room's order, names and history live in
//! Redis (`--redis URL --room NAME`, see docs/CLUSTER.md).
//!
//! # The idea: number in Redis, deliver as before
//!
//! On a single server the broadcaster numbers each event itself (the next
//! SEQ is the history's newest plus one) and hands it to its members. In
//! a cluster no node may number anything on its own, or two nodes would
//! hand out the same SEQ. So the broadcaster *proposes* instead: what it
//! would have published goes to this node's **appender** thread, which
//! runs it in Redis as one Lua script (`room.lua`). The script checks
//! what must be checked (is the name free? is the sender still in the
//! room?), changes the room's state, takes the next SEQ (`INCR`) and
//! appends the event to the room's **log**, a Redis Stream whose entry
//! ids are the SEQs, all in one atomic step.
//!
//! Every node runs a **stream reader** thread that follows the log
//! (`XREAD BLOCK`) and hands the numbered events to its broadcaster,
//! which delivers them exactly as on one node: same batches, same
//! outboxes, same history ring. A node's own events make the same round
//! trip as everyone else's, so every node delivers the same events in the
//! same order, with the same SEQs.
//!
//! ```text
//!  session ─► broadcaster ─propose─► appender ──EVALSHA room.lua──► Redis
//!                 ▲                                                  │ log (stream)
//!                 └──────numbered events───── stream reader ◄─XREAD──┘
//! ```
//!
//! # Who knows what
//!
//! * Redis: the EPOCH, the SEQ counter, the log, the names (who is in the
//!   room, on which node), the session keys, the live nodes and the tick
//!   lease. Only the script changes them.
//! * Each node: its own connections, as on one node; and a copy of the
//!   room's member list (the [`Room::roster`]), kept from the log, for
//!   `/list`.
//!
//! # Failures
//!
//! * Every call carries a deadline in Redis's clock. A call that Redis
//!   runs too late (it was paused; the node gave up and told its client
//!   `ERR unavailable`) does nothing, so an event that was refused is
//!   never broadcast later.
//! * While Redis cannot be reached, the node keeps its clients but
//!   numbers nothing: lines that need Redis get `ERR unavailable`, new
//!   connections `BYE unavailable`. When it is back, the reader carries
//!   on from the last SEQ it delivered: nothing is missed.
//! * Each node beats every second; a node silent for 10 s is declared
//!   down by the next node that beats, and its members leave as
//!   `node-down`.
//! * If Redis lost the room (restarted empty), the EPOCH in Redis is new:
//!   every call of the old EPOCH is refused, and the reader starts the
//!   node again under the new one, closing every connection welcomed
//!   under the old (`BYE unavailable`).

mod appender;
mod entry;
mod reader;
mod redis_link;

pub(crate) use appender::{AfterTakeOver, Asker, Op, TakenOver};
pub(crate) use entry::{Entry, Snapshot};

use super::Shared;
use super::config::ClusterConfig;
use super::event::ClientId;
use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::{Condvar, Mutex};
use redis_link::RedisLink;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a node tries to reach Redis at start before it gives up
/// (the contract: exit within 10 s).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(6);

/// Capacity of the appender's queue: the broadcaster waits when it is
/// full (Redis is slow), which slows the sessions down in turn.
const OPS_CAPACITY: usize = 4096;

/// Client ids are taken from Redis in blocks of this many.
const ID_BLOCK: u64 = 256;

/// What the broadcaster hears from the room.
pub(crate) enum RoomEvent {
    /// A numbered event from the log.
    Logged(Entry),
    /// The node starts (again): the room's EPOCH, newest events and
    /// members. Everything the node had before is gone.
    Reset(Snapshot),
    /// A `LEAVE` the broadcaster proposed will not come back through the
    /// log (Redis could not be reached, or the member had left already):
    /// send the member off now.
    LeaveSettled(ClientId),
    /// The outcome of a KEY presented by `conn` (see [`Op::TakeOver`]).
    TookOver {
        conn: Arc<super::conn::Conn>,
        outcome: Result<TakenOver, (crate::protocol::ErrorCode, String)>,
        then: AfterTakeOver,
    },
}

/// A node's side of the room, shared by its threads.
pub(crate) struct Room {
    /// This node's id (random, for this run).
    pub node: String,
    /// `--room`.
    pub name: String,
    /// Whether Redis answers (the appender's view).
    up: AtomicBool,
    /// The room's members on every node, by id, as of the last event the
    /// reader delivered.
    pub roster: Mutex<BTreeMap<ClientId, String>>,
    /// The newest SEQ in Redis minus the newest this node delivered, as
    /// of the last heartbeat.
    pub lag: AtomicU64,
    /// Client ids not yet handed out.
    ids: Mutex<IdBlock>,
    ids_ready: Condvar,
    /// The appender's queue.
    ops: Sender<Op>,
}

/// Ids from the newest blocks taken from Redis.
#[derive(Debug, Default)]
struct IdBlock {
    next: u64,
    end: u64,
    /// The next block, taken ahead of need.
    spare: Option<(u64, u64)>,
    asked: bool,
}

impl Room {
    /// Whether lines that need Redis can be served now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Hands an operation to the appender (waits while its queue is full).
    pub(crate) fn propose(&self, op: Op) {
        // The appender outlives the broadcaster: this fails only at exit.
        let _ = self.ops.send(op);
    }

    /// The room's members' names, for `/list`, sorted as on one node.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.roster.lock().values().cloned().collect();
        names.sort_by_cached_key(|n| (n.to_ascii_lowercase(), n.clone()));
        names
    }

    /// A room-wide client id for a new connection, or `None` if Redis has
    /// not given this node one in time (the connection is refused as
    /// `unavailable`).
    pub(crate) fn next_id(&self) -> Option<ClientId> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ids = self.ids.lock();
        loop {
            if ids.next >= ids.end
                && let Some((first, last)) = ids.spare.take()
            {
                (ids.next, ids.end) = (first, last + 1);
            }
            if ids.spare.is_none() && !ids.asked && ids.end - ids.next < ID_BLOCK / 2 {
                ids.asked = true;
                let _ = self.ops.try_send(Op::Ids);
            }
            if ids.next < ids.end {
                ids.next += 1;
                return Some(ClientId(ids.next - 1));
            }
            if !self.is_up() || self.ids_ready.wait_until(&mut ids, deadline).timed_out() {
                ids.asked = false;
                return None;
            }
        }
    }

    /// Ids of a room that is gone are not used any more.
    pub(crate) fn forget_ids(&self) {
        *self.ids.lock() = IdBlock::default();
        let _ = self.ops.try_send(Op::Ids);
    }

    /// A block of ids came from Redis.
    fn add_ids(&self, first: u64, last: u64) {
        let mut ids = self.ids.lock();
        ids.spare = Some((first, last));
        ids.asked = false;
        self.ids_ready.notify_all();
    }
}

/// Why a node could not join its room.
#[derive(Debug)]
pub struct ClusterError(pub String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// A node that has reached Redis and read the room, not yet running.
pub(crate) struct Joining {
    pub room: Arc<Room>,
    /// The room as it was at start, for the broadcaster.
    pub snapshot: Snapshot,
    /// What the room's threads will use; taken when they start.
    links: Option<Links>,
}

/// The appender's and the reader's connections, and the appender's queue.
pub(crate) struct Links {
    appending: RedisLink,
    reading: RedisLink,
    ops: Receiver<Op>,
    /// The SEQ the reader goes on after.
    last_seq: u64,
}

impl Joining {
    pub(crate) fn take_links(&mut self) -> io::Result<Links> {
        self.links
            .take()
            .ok_or_else(|| io::Error::other("the room's threads started twice"))
    }
}

/// Reaches Redis (within [`START_TIMEOUT`]) and reads the room's state:
/// its EPOCH (made now if the room is new) and newest events.
pub(crate) fn join(
    config: &ClusterConfig,
    history: (usize, usize),
) -> Result<Joining, ClusterError> {
    let mut node = [0u8; 4];
    getrandom::fill(&mut node).map_err(|e| ClusterError(e.to_string()))?;
    let node = crate::protocol::to_hex(&node);
    let target = redis_link::Target::new(config, &node, history);
    let cannot = |e: redis::RedisError| {
        ClusterError(format!(
            "cannot reach Redis at {}: {}",
            config.redis,
            redis_link::in_words(&e)
        ))
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut appending = RedisLink::connect_until(&target, deadline).map_err(cannot)?;
    let reading = RedisLink::connect_until(&target, deadline).map_err(cannot)?;
    let snapshot = appending.start().map_err(cannot)?;
    let (ops_tx, ops_rx) = bounded(OPS_CAPACITY);
    let room = Arc::new(Room {
        node,
        name: config.room.clone(),
        up: AtomicBool::new(true),
        roster: Mutex::new(snapshot.roster.clone()),
        lag: AtomicU64::new(0),
        ids: Mutex::new(IdBlock::default()),
        ids_ready: Condvar::new(),
        ops: ops_tx,
    });
    let links = Links {
        appending,
        reading,
        ops: ops_rx,
        last_seq: snapshot.seq,
    };
    Ok(Joining {
        room,
        snapshot,
        links: Some(links),
    })
}

/// The room's threads, stopped in order at shutdown.
pub(crate) struct RoomThreads {
    appender: JoinHandle<()>,
    reader: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl RoomThreads {
    /// Stops the reader, then the appender (after what it was given, and
    /// after telling Redis this node is gone).
    pub(crate) fn stop(self, room: &Room) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.reader.join();
        room.propose(Op::Stop);
        let _ = self.appender.join();
    }
}

/// Starts the appender and the stream reader, which tell the broadcaster
/// what they hear on `answers` and `logged`.
pub(crate) fn start(
    links: Links,
    shared: &Arc<Shared>,
    logged: Sender<RoomEvent>,
    answers: Sender<RoomEvent>,
) -> io::Result<RoomThreads> {
    let Links {
        appending,
        reading,
        ops,
        last_seq,
    } = links;
    let room = shared.room.as_ref().expect("a node has a room");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = appender::Appender::new(Arc::clone(shared), appending, ops, answers);
    let appender = thread::Builder::new()
        .name("tickcast-appender".into())
        .spawn(move || appender.run())?;
    let reader = reader::Reader::new(
        Arc::clone(shared),
        reading,
        last_seq,
        logged,
        Arc::clone(&stop),
    );
    let reader = thread::Builder::new()
        .name("tickcast-reader".into())
        .spawn(move || reader.run())?;
    // Ask for the first block of ids now, not on the first connection.
    let _ = room.ops.try_send(Op::Ids);
    Ok(RoomThreads {
        appender,
        reader,
        stop,
    })
}
