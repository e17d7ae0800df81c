//! The broadcaster thread: the one place where broadcast events are
//! numbered, remembered and written out.
//!
//! # Why one thread
//!
//! The contract promises that every client sees the broadcast events in
//! the same order, numbered by one counter, with no gap. The simplest way
//! to keep that promise is to let a single thread own the counter, the
//! history and the list of *members* (joined clients) and do every
//! broadcast write. Sessions never write broadcast events themselves: they
//! send what their client said to this thread's **inbox**, a bounded
//! `crossbeam_channel`. Bounded on purpose: when the broadcaster falls
//! behind, sessions wait to hand over their next line, stop reading their
//! sockets, and TCP flow control slows the chatty clients down. Nothing
//! that was accepted is dropped.
//!
//! A member may also be a *mirror*: the second connection of a client
//! that has two (`/mirror KEY`, see `session`). It is delivered to by the
//! same flush as everyone, but it is never announced (no `JOIN`, no
//! `LEAVE`) nor counted in the `TICK`.
//!
//! The thread sleeps in `select!` on five things:
//!
//! * its inbox (a client said something, joined, renamed, left, wants to
//!   `/resume`; or the embedding program pushed a notification);
//! * the payload lane: `/send` payloads come on a channel of their own,
//!   so that a flood of megabyte payloads cannot hold up chat lines,
//!   joins and leaves (see [`Broadcaster::take_waiting`] for the order);
//! * departures: clients dropped by another thread (a slow consumer caught
//!   by the flusher, a `DM` that could not be queued), whose `LEAVE` must
//!   be announced;
//! * a `crossbeam_channel::tick` for the periodic `TICK`;
//! * the stop signal, on which it delivers what it has, and returns.
//!
//! # One encoding, one write per client, no waiting
//!
//! Each event is encoded once into [`Bytes`] (shared, not copied, between
//! the batch and the history). After handling one message the thread
//! takes whatever else is already waiting (see `batch`), so under load a
//! batch holds many events, laid end to end once per batch, and every
//! member gets all of them in one write (usually of one piece), starting
//! at the first event it is entitled to: a member sees every event from
//! its own `JOIN` on. That write never waits: what a member's socket does not take
//! at once waits in its outbox (see `outbox` and `flusher`). A member that
//! has fallen too far behind is dropped, and its `LEAVE` goes out in the
//! next batch.

mod resume;
#[cfg(feature = "redis")]
mod room;

use super::batch::Batch;
use super::budget::Reservation;
use super::conn::Conn;
use super::event::{ClientId, ServerEvent};
use super::history::History;
use super::in_flight::{Ticket, Waiting};
use super::keys::{KeyHolder, SessionKeys};
use super::registry::NickError;
use super::{Shared, TickInfo};
use crate::http::stats::Verb;
use crate::protocol::line::encode_data;
use crate::protocol::{ErrorCode, Reason, ServerLine, is_guest_name};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, never, select, tick};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

/// A batch for this many members or more may wait a moment for more
/// events, until it holds [`LINGER_EVENTS`] (see [`Broadcaster::linger`]):
/// [`LINGER_PER_MEMBER`] for each member, at most [`LINGER_MAX`]. A write
/// to one member costs several microseconds (about 4 on loopback here,
/// docs/PERFORMANCE.md), so the wait is a small part of the writes it
/// saves.
const LINGER_MEMBERS: usize = 64;
const LINGER_PER_MEMBER: std::time::Duration = std::time::Duration::from_micros(1);
const LINGER_MAX: std::time::Duration = std::time::Duration::from_millis(1);
const LINGER_EVENTS: usize = 64;

/// What can be sent to the broadcaster.
pub(crate) enum Inbox {
    /// A connection joined under `name` (it is listed already). An event
    /// stream brings what it asked for in its URL.
    Join {
        conn: Arc<Conn>,
        name: String,
        stream: Option<StreamStart>,
    },
    /// A member said `text`. On a cluster node `ticket` goes with it to
    /// the appender (see `in_flight`).
    Say {
        id: ClientId,
        text: String,
        #[cfg_attr(not(feature = "redis"), allow(dead_code))]
        ticket: Option<Ticket>,
    },
    /// A member took a new name (already taken in the client map). On a
    /// cluster node, Redis decides instead, and the reply line goes to
    /// `waiting` (see `cluster::Asker`).
    Nick {
        id: ClientId,
        new: String,
        #[cfg_attr(not(feature = "redis"), allow(dead_code))]
        waiting: Option<Waiting>,
    },
    /// A member's connection ends (the closer has claimed it); announce its
    /// `LEAVE` (a mirror's: none). With `bye`, the server is the one
    /// closing: first deliver what the member is owed, then say `BYE`,
    /// then close its socket.
    Leave { id: ClientId, bye: Option<Reason> },
    /// A connection became a mirror of the client called `name` (it is
    /// marked so in the client map): it is told `OK mirror NAME`, and from
    /// the next event on it gets every one, announced by nobody.
    Mirror {
        conn: Arc<Conn>,
        name: String,
        /// The connection it mirrors.
        of: ClientId,
        /// Dropped once that is done: its session waits for it.
        made: Sender<()>,
    },
    /// The embedding program's notification, sent as `TICK`.
    Notify { text: String },
    /// A member asked to `/resume`.
    Resume {
        conn: Arc<Conn>,
        after: u64,
        key: Option<String>,
        reply: Sender<ResumeResult>,
    },
}

/// What an event stream asks for when it joins (`GET /events?...`). It is
/// done by this thread in the same step as the `JOIN`, so that the replay
/// and the live events meet exactly: nothing twice, nothing out of order.
#[derive(Debug, Default)]
pub(crate) struct StreamStart {
    /// `since=` / `Last-Event-ID` of this server run: replay after it.
    pub since: Option<u64>,
    /// `key=`: take over that connection's name, as `/resume` does.
    pub key: Option<String>,
    /// `name=`: then take this name, as `/nick` does (if still a guest).
    pub name: Option<String>,
}

/// A member's `/send` payload, on the payload lane.
pub(crate) struct Payload {
    pub id: ClientId,
    pub bytes: Vec<u8>,
    /// Its share of `--max-memory`, given back once it is published.
    pub reservation: Reservation,
    /// Dropped once the payload is published: its session waits for that
    /// before it sends anything else, so one client's lines keep their
    /// order across the two lanes.
    pub published: Sender<()>,
}

/// The broadcaster's answer to a `/resume`: what the session writes back.
pub(crate) type ResumeResult = Result<Replay, (ErrorCode, String)>;

/// A successful `/resume`.
pub(crate) struct Replay {
    /// The name the key should have given back, but someone has it.
    pub nick_taken: Option<String>,
    /// `OLDEST`, when the history no longer reaches back to the asked SEQ.
    pub gap: Option<u64>,
    /// The events to replay, in order.
    pub events: Vec<Bytes>,
    /// The last SEQ replayed (the asked SEQ if none).
    pub last: u64,
}

impl Member {
    /// A member sent every event from `from_seq` on.
    fn new(conn: Arc<Conn>, name: String, from_seq: u64) -> Self {
        Member {
            conn,
            name,
            mirror: None,
            from_seq,
            leaving: None,
        }
    }
}

/// What a mirror is of.
#[derive(Debug, Clone, Copy)]
struct Mirror {
    /// The connection it mirrors.
    of: ClientId,
}

/// How long a mirror outlives the connection it mirrors.
const MIRROR_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A joined client (or a mirror), as the broadcaster knows it.
struct Member {
    conn: Arc<Conn>,
    /// The name as last announced (by `JOIN` or `NICK`); a mirror's: the
    /// name of the client it mirrors, when it became one.
    name: String,
    /// A mirror (of whom): delivered to like any member, but never announced nor
    /// counted (see the module docs).
    mirror: Option<Mirror>,
    /// The SEQ of its `JOIN`: it is sent every event from there on (a
    /// mirror: from the first event after it became one).
    from_seq: u64,
    /// A cluster node's member whose `LEAVE` is on its way through Redis,
    /// with the `BYE` it gets once its `LEAVE` comes back (see `room`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    leaving: Option<Option<Reason>>,
}

/// The channels the broadcaster reads.
pub(crate) struct Lanes {
    pub inbox: Receiver<Inbox>,
    pub payloads: Receiver<Payload>,
    pub departures: Receiver<ClientId>,
    /// A cluster node's stream reader (see `room`): numbered events.
    pub room: super::RoomLane,
    /// A cluster node's appender: how what was proposed went.
    pub room_answers: super::RoomLane,
    pub stop: Receiver<()>,
}

pub(crate) struct Broadcaster {
    shared: Arc<Shared>,
    lanes: Lanes,
    history: History,
    /// In the order they connected (ids only grow), which is the order a
    /// batch is written in: the `Conn`s, and the kernel's sockets, were
    /// made in that order too, so a flush walks memory mostly forwards
    /// (at 1,000 members, about 5 % less CPU per delivery than a
    /// `HashMap`'s scattered order).
    members: BTreeMap<ClientId, Member>,
    /// Session keys, of members and of connections that have left.
    keys: SessionKeys,
    /// Encoded events not yet handed to the members.
    batch: Batch,
    /// Mirrors whose connection left, with when they end ([`MIRROR_GRACE`]
    /// later), soonest first. A redundant client's first link comes back
    /// within that (with a new KEY, which its second link then mirrors
    /// anew); someone who left does not keep an unlisted reader.
    orphans: VecDeque<(std::time::Instant, ClientId)>,
    /// A cluster node's room: then this thread numbers nothing itself.
    #[cfg(feature = "redis")]
    room: Option<Arc<crate::server::cluster::Room>>,
}

impl Broadcaster {
    pub(crate) fn new(shared: Arc<Shared>, lanes: Lanes) -> Self {
        let history = History::new(shared.config.history, shared.config.history_bytes);
        let keys = SessionKeys::new(shared.config.history);
        Broadcaster {
            shared,
            lanes,
            history,
            members: BTreeMap::new(),
            keys,
            batch: Batch::default(),
            orphans: VecDeque::new(),
            #[cfg(feature = "redis")]
            room: None,
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        let ticker = match self.shared.config.tick {
            Some(period) => tick(period),
            None => never(),
        };
        loop {
            // The server keeps a sender of each lane, so none can close
            // while this thread runs.
            select! {
                recv(self.lanes.inbox) -> msg => {
                    let Ok(msg) = msg else { break };
                    self.handle(msg);
                }
                recv(self.lanes.payloads) -> payload => {
                    let Ok(payload) = payload else { break };
                    self.publish_payload(payload);
                }
                recv(self.lanes.departures) -> id => {
                    let Ok(id) = id else { break };
                    self.depart_member(id, true);
                }
                recv(self.lanes.room) -> event => {
                    let Ok(event) = event else { break };
                    self.heard(event);
                }
                recv(self.lanes.room_answers) -> event => {
                    let Ok(event) = event else { break };
                    self.heard(event);
                }
                recv(ticker) -> _ => self.periodic_tick(),
                recv(self.lanes.stop) -> _ => {
                    // Every session has ended, so what is waiting now is
                    // everything that was accepted: deliver all of it.
                    while self.take_waiting() {
                        self.flush();
                    }
                    self.flush();
                    #[cfg(feature = "redis")]
                    self.leave_room_at_stop();
                    break;
                }
            }
            self.take_waiting();
            self.linger();
            self.flush();
        }
    }

    /// With many members, waits a moment for more events before writing a
    /// small batch. Each write to a member costs a system call (and wakes
    /// its reader) whatever it carries, so under load fuller batches cost
    /// less per delivery. With a fixed 100 µs instead, at 1,000 members one
    /// batch in five held fewer than 16 events (the rest of a burst came a
    /// little later, its session waiting for a CPU), and each cost a whole
    /// round of 1,000 writes (docs/PERFORMANCE.md has the figures). The
    /// price is 1 µs per member of latency (plus the timer's slack): about
    /// 0.1 ms at 100 members, when writing to them all takes about 0.4 ms.
    /// Never for an empty batch, nor for fewer than [`LINGER_MEMBERS`]
    /// members (writing to a few costs little).
    fn linger(&mut self) {
        let members = self.members.len();
        if members < LINGER_MEMBERS || self.batch.is_empty() {
            return;
        }
        let per_member = u32::try_from(members).unwrap_or(u32::MAX);
        let wait = LINGER_PER_MEMBER.saturating_mul(per_member).min(LINGER_MAX);
        let until = crossbeam_channel::at(std::time::Instant::now() + wait);
        while self.batch.len() < LINGER_EVENTS {
            select! {
                recv(self.lanes.inbox) -> msg => match msg {
                    Ok(msg) => self.handle(msg),
                    Err(_) => return,
                },
                recv(self.lanes.room) -> event => match event {
                    Ok(event) => self.heard(event),
                    Err(_) => return,
                },
                recv(self.lanes.room_answers) -> event => match event {
                    Ok(event) => self.heard(event),
                    Err(_) => return,
                },
                recv(until) -> _ => return,
            }
            self.take_waiting();
        }
    }

    /// Folds what is already waiting into the current batch, until the
    /// batch is full. Departures first, then every waiting inbox message
    /// (chat lines, joins, renames: small), what a cluster node's room
    /// threads brought, and payloads only as long as
    /// the batch has room: a flood of payloads delays a chat line by at
    /// most one batch. Returns whether it took anything.
    fn take_waiting(&mut self) -> bool {
        let mut took_any = false;
        loop {
            let mut took = false;
            while let Ok(id) = self.lanes.departures.try_recv() {
                self.depart_member(id, true);
                took = true;
            }
            while !self.batch.is_full() {
                let Ok(msg) = self.lanes.inbox.try_recv() else {
                    break;
                };
                self.handle(msg);
                took = true;
            }
            // A cluster node's numbered events, in batches like the rest.
            while !self.batch.is_full() {
                let Ok(event) = self
                    .lanes
                    .room_answers
                    .try_recv()
                    .or_else(|_| self.lanes.room.try_recv())
                else {
                    break;
                };
                self.heard(event);
                took = true;
            }
            if !self.batch.is_full()
                && let Ok(payload) = self.lanes.payloads.try_recv()
            {
                self.publish_payload(payload);
                took = true;
            }
            took_any |= took;
            if !took || self.batch.is_full() {
                return took_any;
            }
        }
    }

    fn handle(&mut self, msg: Inbox) {
        #[cfg(feature = "redis")]
        if self.room.is_some() {
            return self.propose(msg);
        }
        match msg {
            Inbox::Join { conn, name, stream } => self.join(conn, name, stream),
            Inbox::Say { id, text, .. } => {
                // A member dropped meanwhile (slow consumer, replaced) is
                // not healthy: what it said last goes with it.
                let Some(name) = self.members.get(&id).map(|m| m.name.clone()) else {
                    return;
                };
                let from = name.as_str();
                let seq = self
                    .publish(|seq, out| {
                        ServerLine::Msg {
                            seq,
                            from,
                            text: &text,
                        }
                        .encode(out)
                    })
                    .0;
                if self.shared.config.message_events {
                    self.shared.emit(ServerEvent::Message {
                        seq,
                        id,
                        name,
                        text,
                    });
                }
            }
            Inbox::Nick { id, new, .. } => self.announce_rename(id, new),
            Inbox::Leave { id, bye } => self.say_goodbye(id, bye),
            Inbox::Mirror {
                conn,
                name,
                of,
                made,
            } => self.add_mirror(conn, name, of, made),
            Inbox::Notify { text } => self.notify(&text),
            Inbox::Resume {
                conn,
                after,
                key,
                reply,
            } => {
                let result = self.resume(&conn, after, key);
                // The session waits on a channel with room for this one
                // answer; if it is gone, nobody needs the answer.
                let _ = reply.try_send(result);
            }
        }
    }

    /// A member joins: its `JOIN` is published, and from that SEQ on it
    /// gets every event (an event stream first takes what its URL asked).
    fn join(&mut self, conn: Arc<Conn>, name: String, stream: Option<StreamStart>) {
        let seq = self
            .publish(|seq, out| ServerLine::Join { seq, name: &name }.encode(out))
            .0;
        self.keys.joined(&conn.key, conn.id);
        self.shared.emit(ServerEvent::Joined {
            seq,
            id: conn.id,
            name: name.clone(),
        });
        self.members
            .insert(conn.id, Member::new(Arc::clone(&conn), name, seq));
        if let Some(start) = stream {
            self.start_stream(&conn, start);
        }
    }

    /// A mirror joins, silently: it is told `OK mirror NAME`, then sent
    /// every event from the next one on (the same on a cluster node: a
    /// mirror is this node's own). Its session goes on once `made` is
    /// dropped.
    fn add_mirror(&mut self, conn: Arc<Conn>, name: String, of: ClientId, made: Sender<()>) {
        // Dropped on the way here (its departure came first): nothing to
        // add, or it would stay for ever.
        if conn.reason().is_some() {
            return;
        }
        let ok = ServerLine::Ok {
            what: "mirror",
            detail: &name,
        };
        if let Err(e) = conn.send_line(ok.to_line().as_bytes()) {
            return self.shared.drop_client(&conn, e.reason());
        }
        let member = Member {
            mirror: Some(Mirror { of }),
            ..Member::new(Arc::clone(&conn), name, self.history.newest() + 1)
        };
        self.members.insert(conn.id, member);
        drop(made);
    }

    /// Publishes a member's payload as `DATA`.
    fn publish_payload(&mut self, payload: Payload) {
        let Payload {
            id,
            bytes,
            reservation,
            published,
        } = payload;
        #[cfg(feature = "redis")]
        if self.room.is_some() {
            return self.propose_payload(id, bytes, (reservation, published));
        }
        // A member dropped meanwhile is not healthy: its payload goes with it.
        let Some(name) = self.members.get(&id).map(|m| m.name.clone()) else {
            return;
        };
        let (seq, encoded) = self.publish(|seq, out| encode_data(seq, &name, &bytes, out));
        if self.shared.config.message_events {
            // The payload sits between the header line and the LF.
            let start = encoded.len() - bytes.len() - 1;
            self.shared.emit(ServerEvent::Payload {
                seq,
                id,
                name,
                bytes: encoded.slice(start..start + bytes.len()),
            });
        }
        // Its memory is given back, and its session may go on.
        drop((reservation, published));
    }

    /// Numbers, encodes and remembers one broadcast event, and queues it
    /// for the next write.
    fn publish(&mut self, encode: impl FnOnce(u64, &mut Vec<u8>)) -> (u64, Bytes) {
        let seq = self.history.newest() + 1;
        // Room for a usual chat line at once, not grown a few bytes at a time.
        let mut out = Vec::with_capacity(128);
        encode(seq, &mut out);
        let encoded = Bytes::from(out);
        if let Some(verb) = Verb::of_encoded(&encoded) {
            self.shared.counters.count_event(verb);
        }
        self.history.push(seq, encoded.clone());
        self.batch.push(seq, encoded.clone());
        (seq, encoded)
    }

    fn notify(&mut self, text: &str) {
        let time = SystemTime::now();
        self.publish(|seq, out| ServerLine::Tick { seq, time, text }.encode(out));
    }

    fn periodic_tick(&mut self) {
        let info = TickInfo {
            clients: self.room_size(),
            seq: self.history.newest() + 1,
        };
        let text = match &self.shared.config.tick_text {
            Some(make) => make(info),
            None => default_tick_text(info),
        };
        // A line must stay one line.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
            .collect();
        #[cfg(feature = "redis")]
        if self.room.is_some() {
            return self.propose_tick(&text, true);
        }
        self.notify(&text);
    }

    /// How many clients the room has (on a cluster node: on every node).
    /// Mirrors are not clients of their own.
    fn room_size(&self) -> usize {
        #[cfg(feature = "redis")]
        if let Some(room) = &self.room {
            return room.roster.lock().len();
        }
        self.members.values().filter(|m| m.mirror.is_none()).count()
    }

    /// What a cluster node's room threads tell (nothing, alone).
    #[cfg(not(feature = "redis"))]
    fn heard(&mut self, event: std::convert::Infallible) {
        match event {}
    }

    fn announce_rename(&mut self, id: ClientId, new: String) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut member.name, new.clone());
        let seq = self
            .publish(|seq, out| {
                ServerLine::Nick {
                    seq,
                    old: &old,
                    new: &new,
                }
                .encode(out)
            })
            .0;
        self.shared.emit(ServerEvent::Renamed { seq, id, old, new });
    }

    /// A member is leaving: its `LEAVE` is published now. When the server
    /// closes it with a `BYE` (after `/quit`, an idle timeout, a protocol
    /// error…) it is first sent off (see [`Broadcaster::send_off`]).
    fn say_goodbye(&mut self, id: ClientId, bye: Option<Reason>) {
        let Some((member, leave_seq)) = self.depart_member(id, true) else {
            return;
        };
        if let Some(bye) = bye {
            self.send_off(&member, leave_seq, bye);
        }
    }

    /// Queues for a departed member what it is owed of the current batch
    /// (every event before its `LEAVE`: its own last lines came through the
    /// inbox before its `Leave`, so they are among them), then `BYE` as its
    /// very last line; the connection closes once that is written.
    fn send_off(&self, member: &Member, leave_seq: Option<u64>, bye: Reason) {
        // At shutdown there is no `LEAVE`: it gets everything so far.
        let until = leave_seq.unwrap_or(self.history.newest() + 1);
        let wire = member.conn.wire;
        let epoch = &*self.shared.epoch.get();
        let owed = self.batch.between(member.from_seq, until);
        let mut chunks: Vec<Bytes> = owed.iter().map(|e| wire.broadcast(e, epoch)).collect();
        chunks.push(wire.bye(bye));
        member.conn.finish(&chunks);
    }

    /// Removes a member and announces its `LEAVE` with the reason its
    /// connection was closed for (its key is remembered if asked).
    /// Returns the member and the SEQ of its `LEAVE` (none at shutdown, nor
    /// for a mirror).
    fn depart_member(&mut self, id: ClientId, remember_key: bool) -> Option<(Member, Option<u64>)> {
        #[cfg(feature = "redis")]
        if self.room.is_some() {
            self.leave_room(id, None);
            return None;
        }
        let member = self.members.remove(&id)?;
        self.orphan_mirrors_of(id);
        if member.mirror.is_some() {
            // Never announced, so it leaves without a `LEAVE`; and its key
            // was never a member's, so there is none to remember.
            return Some((member, None));
        }
        let reason = member.conn.reason().unwrap_or(Reason::Error);
        if self.shared.is_stopping() {
            // No `LEAVE` at shutdown: everyone left is about to get
            // `BYE shutdown` instead.
            self.keys.left(&member.conn.key, None);
            return Some((member, None));
        }
        let name = member.name.clone();
        self.shared.counters.count_leave(reason);
        let seq = self
            .publish(|seq, out| {
                ServerLine::Leave {
                    seq,
                    name: &name,
                    reason,
                }
                .encode(out)
            })
            .0;
        let remembered = remember_key.then_some((seq, name.as_str()));
        self.keys.left(&member.conn.key, remembered);
        self.keys.forget_older(self.history.newest());
        self.shared.emit(ServerEvent::Left {
            seq,
            id,
            name,
            reason,
        });
        Some((member, Some(seq)))
    }

    /// The connection `id` left: its mirrors end [`MIRROR_GRACE`] later.
    fn orphan_mirrors_of(&mut self, id: ClientId) {
        let end = std::time::Instant::now() + MIRROR_GRACE;
        for (&mirror_id, member) in &self.members {
            if member.mirror.is_some_and(|m| m.of == id) {
                self.orphans.push_back((end, mirror_id));
            }
        }
    }

    /// Closes the mirrors whose connection left more than [`MIRROR_GRACE`]
    /// ago (unannounced, as every mirror comes and goes). Nothing to do,
    /// and nothing looked at, while no mirror is orphaned.
    fn close_orphaned_mirrors(&mut self) {
        let now = std::time::Instant::now();
        while let Some(&(end, id)) = self.orphans.front()
            && end <= now
        {
            self.orphans.pop_front();
            if let Some(member) = self.members.remove(&id)
                && self
                    .shared
                    .registry
                    .claim(&member.conn, Reason::Closed)
                    .won()
            {
                member.conn.close();
            }
        }
    }

    /// Hands the batch to every member, in one write each (usually of one
    /// piece, see `batch`), from the member's own `JOIN` on. Never waits:
    /// what a socket does not take now waits in that member's outbox. A
    /// member that has fallen too far behind is dropped; its `LEAVE` comes
    /// back through the departures.
    fn flush(&mut self) {
        self.close_orphaned_mirrors();
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        // The history changes only by publishing, so only with a batch.
        self.shared.history.set(&self.history);
        // Counted once per batch, not once per client, and before anything
        // is written: whoever sees an event finds it counted.
        let epoch = &*self.shared.epoch.get();
        let deliveries: usize = self
            .members
            .values()
            .map(|m| batch.count_since(m.from_seq))
            .sum();
        self.shared.counters.count_deliveries(deliveries as u64);
        // One list of pieces, refilled for each member.
        let mut pieces = Vec::new();
        for member in self.members.values() {
            batch.since_in(member.conn.wire, member.from_seq, epoch, &mut pieces);
            if pieces.is_empty() {
                continue;
            }
            if let Err(e) = member.conn.send(&pieces) {
                self.shared.drop_client(&member.conn, e.reason());
            }
        }
    }
}

fn default_tick_text(info: TickInfo) -> String {
    match info.clients {
        1 => "1 client connected".to_string(),
        n => format!("{n} clients connected"),
    }
}
