//! The broadcaster of a cluster node (`--redis`): what it would number,
//! it proposes to the appender; what the room's log brings back, it
//! delivers.
//!
//! On a single server, [`Broadcaster::publish`] does two things at once:
//! it numbers an event, and it records it (history, batch). A cluster
//! node splits the two. Numbering happens in Redis: every message that
//! would have been published becomes an [`Op`] for the appender. Recording
//! happens when the stream reader hands back the numbered event
//! ([`RoomEvent::Logged`]), on every node alike, and from there the
//! delivery is the single server's: same batch, same flush.
//!
//! What changes for members:
//! * a member is sent events from its own `JOIN` on, so until that
//!   `JOIN` comes back from the log it is sent nothing ([`NOT_YET`]);
//! * a member that leaves stays a member until its `LEAVE` comes back,
//!   so that it gets every event before it, as on one node; then it gets
//!   its `BYE`;
//! * a `LEAVE` may come from elsewhere: another node took its KEY over
//!   (`replaced`), or the room declared this node down (`node-down`).
//!   That member's connection is then closed here.

use super::*;
use crate::server::cluster::{AfterTakeOver, Asker, Entry, Op, RoomEvent, Snapshot};
use crate::server::registry::check_name;
use std::time::{Duration, Instant};

/// A member's `from_seq` until its `JOIN` has come back from the log.
const NOT_YET: u64 = u64::MAX;

/// How long a stopping node waits for its members' `LEAVE`s to come back.
const STOP_WAIT: Duration = Duration::from_secs(3);

impl Broadcaster {
    /// Makes this a cluster node's broadcaster, starting from the room as
    /// it is in Redis.
    pub(crate) fn start_room(&mut self, snapshot: Snapshot) {
        self.room = self.shared.room.clone();
        self.load(snapshot);
    }

    fn room(&self) -> &crate::server::cluster::Room {
        self.room.as_deref().expect("a cluster node has a room")
    }

    /// Takes the room's newest events and members as they are in Redis.
    fn load(&mut self, snapshot: Snapshot) {
        let config = &self.shared.config;
        let mut history = History::new(config.history, config.history_bytes);
        let first = snapshot.recent.first().map_or(snapshot.seq + 1, |e| e.seq);
        history.start_after(first - 1);
        for entry in snapshot.recent {
            history.push(entry.seq, entry.line);
        }
        self.history = history;
        self.shared.history.set(&self.history);
        *self.room().roster.lock() = snapshot.roster;
    }

    /// A message from a session, or from the embedding program: what a
    /// single server would publish goes to the appender instead.
    pub(super) fn propose(&mut self, msg: Inbox) {
        match msg {
            Inbox::Join { conn, name, stream } => {
                let member = Member::new(Arc::clone(&conn), name, NOT_YET);
                self.members.insert(conn.id, member);
                self.room().propose(Op::Join {
                    conn: Arc::clone(&conn),
                });
                if let Some(start) = stream {
                    self.start_stream_in_room(&conn, start);
                }
            }
            Inbox::Say { id, text, ticket } => {
                if let Some(conn) = self.staying(id) {
                    let text = if text.is_empty() {
                        text
                    } else {
                        format!(" {text}")
                    };
                    self.room().propose(Op::Say { conn, text, ticket });
                }
            }
            Inbox::Nick { id, new, waiting } => {
                if let Some(conn) = self.staying(id) {
                    let asker = waiting.map_or(Asker::Stream, Asker::Waiting);
                    self.room().propose(Op::Nick { conn, new, asker });
                }
            }
            Inbox::Leave { id, bye } => self.leave_room(id, bye),
            // A mirror is this node's own: Redis never hears of it.
            Inbox::Mirror {
                conn,
                name,
                of,
                made,
            } => self.add_mirror(conn, name, of, made),
            Inbox::Notify { text } => self.propose_tick(&text, false),
            Inbox::Resume {
                conn,
                after,
                key,
                reply,
            } => match key.filter(|key| *key != conn.key) {
                Some(key) => {
                    let then = AfterTakeOver::Resume { after, reply };
                    self.room().propose(Op::TakeOver { conn, key, then });
                }
                None => {
                    let _ = reply.try_send(Ok(self.replay_in_room(after, None)));
                }
            },
        }
    }

    /// A member's payload, proposed as `DATA`.
    pub(super) fn propose_payload(
        &mut self,
        id: ClientId,
        bytes: Vec<u8>,
        held: (Reservation, Sender<()>),
    ) {
        if let Some(conn) = self.staying(id) {
            self.room().propose(Op::Data { conn, bytes, held });
        }
    }

    /// A `TICK`: the periodic one only from the node that holds the
    /// room's tick lease, one period long (see `OPS.tick` in `room.lua`).
    pub(super) fn propose_tick(&mut self, text: &str, periodic: bool) {
        let mut rest = crate::protocol::format_time(SystemTime::now());
        if !text.is_empty() {
            rest.push(' ');
            rest.push_str(text);
        }
        let lease = match self.shared.config.tick {
            Some(period) if periodic => period,
            _ => Duration::ZERO,
        };
        self.room().propose(Op::Tick { rest, lease });
    }

    /// The connection of a member that is not leaving.
    fn staying(&self, id: ClientId) -> Option<Arc<Conn>> {
        let member = self.members.get(&id).filter(|m| m.leaving.is_none())?;
        Some(Arc::clone(&member.conn))
    }

    /// A member leaves: its `LEAVE` is proposed, and it gets `bye` once
    /// that `LEAVE` comes back (it is still sent everything before it).
    pub(super) fn leave_room(&mut self, id: ClientId, bye: Option<Reason>) {
        let stopping = self.shared.is_stopping();
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.mirror.is_some() {
            // Never in the room: it leaves without a word to Redis.
            if let Some(member) = self.members.remove(&id)
                && let Some(bye) = bye
            {
                self.send_off(&member, None, bye);
            }
            return;
        }
        if member.leaving.is_some() {
            return;
        }
        member.leaving = Some(bye);
        let reason = match member.conn.reason() {
            Some(reason) => reason,
            None if stopping => Reason::Shutdown,
            None => Reason::Error,
        };
        let (remember, epoch) = (true, self.shared.epoch.get());
        self.room().propose(Op::Leave {
            id,
            reason,
            remember,
            epoch,
        });
    }

    /// What the room's threads tell.
    pub(super) fn heard(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Logged(entry) => self.logged(entry),
            RoomEvent::Reset(snapshot) => self.reset(snapshot),
            RoomEvent::LeaveSettled(id) => {
                if let Some(member) = self.members.remove(&id)
                    && let Some(Some(bye)) = member.leaving
                {
                    self.send_off(&member, None, bye);
                }
            }
            RoomEvent::TookOver {
                conn,
                outcome,
                then,
            } => self.took_over(&conn, outcome, then),
        }
    }

    /// A numbered event from the log: recorded and batched as on a single
    /// server, and what it changes about the room's members applied.
    fn logged(&mut self, entry: Entry) {
        if entry.seq <= self.history.newest() {
            return;
        }
        if let Some(verb) = Verb::of_encoded(&entry.line) {
            self.shared.counters.count_event(verb);
        }
        self.history.push(entry.seq, entry.line.clone());
        self.batch.push(entry.seq, entry.line.clone());
        let Some(id) = entry.id else {
            return;
        };
        let seq = entry.seq;
        match entry.verb.as_str() {
            "JOIN" => {
                self.room().roster.lock().insert(id, entry.name.clone());
                if let Some(member) = self.members.get_mut(&id) {
                    member.from_seq = member.from_seq.min(seq);
                    let name = entry.name;
                    self.shared.emit(ServerEvent::Joined { seq, id, name });
                }
            }
            "NICK" => {
                let old = self.room().roster.lock().insert(id, entry.name.clone());
                if let Some(member) = self.members.get_mut(&id) {
                    member.name = entry.name.clone();
                    self.shared.registry.set_name(id, &entry.name);
                    let (old, new) = (old.unwrap_or_default(), entry.name);
                    self.shared.emit(ServerEvent::Renamed { seq, id, old, new });
                }
            }
            "LEAVE" => {
                self.room().roster.lock().remove(&id);
                let reason = entry.leave_reason().unwrap_or(Reason::Error);
                self.left_room(id, seq, reason);
            }
            _ => {}
        }
    }

    /// A member's `LEAVE` came back: it is sent what it is owed and its
    /// `BYE`. A `LEAVE` this node did not ask for (another node took the
    /// member's KEY over, or the room found this node down) closes it.
    fn left_room(&mut self, id: ClientId, seq: u64, reason: Reason) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        self.orphan_mirrors_of(id);
        self.shared.counters.count_leave(reason);
        self.keys.forget_older(self.history.newest());
        let bye = match member.leaving {
            Some(bye) => bye,
            None => {
                let bye = match reason {
                    Reason::Replaced => Reason::Replaced,
                    _ => Reason::Unavailable,
                };
                let won = self.shared.registry.claim(&member.conn, bye).won();
                won.then(|| {
                    member.conn.stop_reading();
                    bye
                })
            }
        };
        if let Some(bye) = bye {
            self.send_off(&member, Some(seq), bye);
        }
        let name = member.name.clone();
        self.shared.emit(ServerEvent::Left {
            seq,
            id,
            name,
            reason,
        });
    }

    /// The room this node served is gone (Redis lost it, or the log moved
    /// past what this node delivered): every connection is closed with
    /// `BYE unavailable`, and the node starts again from the room as it
    /// is now. Clients reconnect, and see a new EPOCH or a gap.
    fn reset(&mut self, snapshot: Snapshot) {
        if *self.shared.epoch.get() == *snapshot.epoch {
            // The same room, but the log moved past this node: its members
            // leave it (the others hear `LEAVE … unavailable`).
            for (&id, member) in &self.members {
                if member.leaving.is_none() {
                    let (reason, remember) = (Reason::Unavailable, true);
                    let epoch = self.shared.epoch.get();
                    self.room().propose(Op::Leave {
                        id,
                        reason,
                        remember,
                        epoch,
                    });
                }
            }
        }
        self.shared.epoch.set(&snapshot.epoch);
        self.room().forget_ids();
        self.batch = Batch::default();
        self.members.clear();
        for conn in self.shared.registry.conns() {
            if self.shared.registry.claim(&conn, Reason::Unavailable).won() {
                conn.stop_reading();
                conn.finish(&[conn.wire.bye(Reason::Unavailable)]);
            }
        }
        self.load(snapshot);
        let text = "the room in Redis is new (Redis lost it, or this node fell too far \
                    behind): every connection was closed with BYE unavailable"
            .to_string();
        self.shared.emit(ServerEvent::Room { up: true, text });
    }

    /// `/resume` or a stream's `key=` after its KEY was settled in Redis.
    fn took_over(
        &mut self,
        conn: &Arc<Conn>,
        outcome: Result<crate::server::cluster::TakenOver, (ErrorCode, String)>,
        then: AfterTakeOver,
    ) {
        match then {
            AfterTakeOver::Resume { after, reply } => {
                let result = outcome.map(|t| self.replay_in_room(after, t.taken));
                let _ = reply.try_send(result);
            }
            AfterTakeOver::Stream { name } => {
                let named = match outcome {
                    Ok(t) => t.named,
                    Err((code, text)) => {
                        let line = ServerLine::Err { code, text: &text }.to_line();
                        if let Err(e) = conn.send_line(line.as_bytes()) {
                            self.shared.drop_client(conn, e.reason());
                        }
                        false
                    }
                };
                if let Some(new) = name.filter(|_| !named)
                    && let Some(conn) = self.staying(conn.id)
                {
                    self.propose_stream_name(&conn, new);
                }
            }
        }
    }

    /// The replay for a `/resume` after `after`, from this node's copy of
    /// the room's history. A SEQ this node has not delivered yet (it came
    /// through another node a moment ago) replays nothing: the live events
    /// bring it.
    fn replay_in_room(&mut self, after: u64, nick_taken: Option<String>) -> Replay {
        let after = after.min(self.history.newest());
        self.replay(after, nick_taken)
    }

    /// An event stream joins a cluster node: `since=` is replayed now,
    /// `key=` and `name=` go through Redis.
    fn start_stream_in_room(&mut self, conn: &Arc<Conn>, start: StreamStart) {
        if let Some(after) = start.since {
            let chunks = self.replay_for_stream(conn, after.min(self.history.newest()));
            if let Err(e) = conn.send(&chunks) {
                self.shared.drop_client(conn, e.reason());
            }
        }
        match start.key.filter(|key| *key != conn.key) {
            Some(key) => {
                let then = AfterTakeOver::Stream { name: start.name };
                let conn = Arc::clone(conn);
                self.room().propose(Op::TakeOver { conn, key, then });
            }
            None => {
                if let Some(new) = start.name {
                    self.propose_stream_name(conn, new);
                }
            }
        }
    }

    /// An event stream's `name=`, checked against the naming rules here
    /// (as the single server's `Registry::rename` does) before Redis
    /// decides whether it is free.
    fn propose_stream_name(&mut self, conn: &Arc<Conn>, new: String) {
        if let Err(NickError::Invalid(why)) = check_name(conn.id, &new) {
            let code = ErrorCode::NickInvalid;
            let line = ServerLine::Err { code, text: &why }.to_line();
            if let Err(e) = conn.send_line(line.as_bytes()) {
                self.shared.drop_client(conn, e.reason());
            }
            return;
        }
        let (conn, asker) = (Arc::clone(conn), Asker::Stream);
        self.room().propose(Op::Nick { conn, new, asker });
    }

    /// A node that stops cleanly: its members' `LEAVE`s (`shutdown`) go
    /// to the room, and each member gets `BYE shutdown` after everything
    /// this node appended, once its `LEAVE` is back (or after
    /// [`STOP_WAIT`]; the acceptor says `BYE shutdown` to whoever is left).
    pub(super) fn leave_room_at_stop(&mut self) {
        if self.room.is_none() {
            return;
        }
        let ids: Vec<ClientId> = self.members.keys().copied().collect();
        for id in ids {
            if let Some(member) = self.members.get(&id)
                && member.leaving.is_none()
                && self
                    .shared
                    .registry
                    .claim(&member.conn, Reason::Shutdown)
                    .won()
            {
                self.leave_room(id, Some(Reason::Shutdown));
            }
        }
        let deadline = crossbeam_channel::at(Instant::now() + STOP_WAIT);
        while self.members.values().any(|m| m.leaving.is_some()) {
            let event = crossbeam_channel::select! {
                recv(self.lanes.room) -> event => event,
                recv(self.lanes.room_answers) -> event => event,
                recv(deadline) -> _ => break,
            };
            let Ok(event) = event else { break };
            self.heard(event);
            self.flush();
        }
        self.flush();
        // Redis did not bring them back in time: their BYE now.
        for (_, member) in std::mem::take(&mut self.members) {
            if let Some(Some(bye)) = member.leaving {
                self.send_off(&member, None, bye);
            }
        }
    }
}
