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
//! The thread sleeps in `select!` on three things:
//!
//! * its inbox (a client said something, joined, renamed, left, wants to
//!   `/resume`; or the embedding program pushed a notification);
//! * a `crossbeam_channel::tick` for the periodic `TICK`;
//! * the stop signal, on which it delivers what it has, and returns.
//!
//! # One encoding, one write per client
//!
//! Each event is encoded once into [`Bytes`] (shared, not copied, between
//! the write batch and the history). After handling one inbox message the
//! thread takes whatever else is already waiting (up to a limit), so
//! under load a batch holds many events, and every member gets all of
//! them in one vectored write (see `conn::deliver`), starting at the first
//! event it is entitled to: a member sees every event from its own `JOIN`
//! on.
//!
//! Members whose write fails or times out are dropped right there, and
//! their `LEAVE` goes out in the next batch.

use super::conn::{Conn, Delivery, deliver};
use super::event::{ClientId, ServerEvent};
use super::history::History;
use super::registry::NickError;
use super::{Shared, TickInfo};
use crate::protocol::line::encode_data;
use crate::protocol::{ErrorCode, Reason, ServerLine, is_guest_name};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, never, select, tick};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

/// The most inbox messages folded into one batch before writing.
const MAX_BATCH_EVENTS: usize = 256;
/// The most bytes folded into one batch before writing.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What can be sent to the broadcaster.
pub(crate) enum Inbox {
    /// A connection joined under `name` (it is listed already).
    Join { conn: Arc<Conn>, name: String },
    /// A member said `text`.
    Say { id: ClientId, text: String },
    /// A member sent raw bytes.
    Data { id: ClientId, payload: Vec<u8> },
    /// A member took a new name (already taken in the client map).
    Nick { id: ClientId, new: String },
    /// A member's connection ends (the closer has claimed it); announce its
    /// `LEAVE`. With `bye`, the server is the one closing: first deliver
    /// what the member is owed, then say `BYE`, then close its socket.
    Leave { id: ClientId, bye: Option<Reason> },
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

/// A joined client, as the broadcaster knows it.
struct Member {
    conn: Arc<Conn>,
    /// The name as last announced (by `JOIN` or `NICK`).
    name: String,
    /// The SEQ of its `JOIN`: it is sent every event from there on.
    from_seq: u64,
}

/// A member leaving with a `BYE`: at the next flush it gets the events
/// published before its `LEAVE`, then the `BYE`, in the same delivery as
/// everyone else (so that a client that stopped reading costs the others
/// one write timeout, not one more), and is closed.
struct Leaving {
    conn: Arc<Conn>,
    /// As [`Member::from_seq`].
    from_seq: u64,
    /// The SEQ of its `LEAVE`: it gets the events before it.
    until: u64,
    bye: Reason,
}

pub(crate) struct Broadcaster {
    shared: Arc<Shared>,
    inbox: Receiver<Inbox>,
    stop: Receiver<()>,
    history: History,
    members: HashMap<ClientId, Member>,
    /// Session keys of the members.
    keys: HashMap<String, ClientId>,
    /// Session keys of connections that have left, with their last name,
    /// kept until `--history` newer events have passed.
    departed: HashMap<String, String>,
    /// `(SEQ of the LEAVE, key)`, oldest first, to forget departed keys.
    departed_order: VecDeque<(u64, String)>,
    /// Encoded events not yet written; the first has SEQ `batch_first`.
    batch: Vec<Bytes>,
    batch_first: u64,
    batch_bytes: usize,
    /// Members saying goodbye at the next flush.
    leaving: Vec<Leaving>,
}

impl Broadcaster {
    pub(crate) fn new(shared: Arc<Shared>, inbox: Receiver<Inbox>, stop: Receiver<()>) -> Self {
        let history = History::new(shared.config.history, shared.config.history_bytes);
        Broadcaster {
            shared,
            inbox,
            stop,
            history,
            members: HashMap::new(),
            keys: HashMap::new(),
            departed: HashMap::new(),
            departed_order: VecDeque::new(),
            batch: Vec::new(),
            batch_first: 1,
            batch_bytes: 0,
            leaving: Vec::new(),
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        let ticker = match self.shared.config.tick {
            Some(period) => tick(period),
            None => never(),
        };
        loop {
            select! {
                recv(self.inbox) -> msg => {
                    // The server keeps a sender, so the inbox cannot close
                    // while this thread runs.
                    let Ok(msg) = msg else { break };
                    self.handle(msg);
                    self.take_waiting();
                    self.flush();
                }
                recv(ticker) -> _ => {
                    self.periodic_tick();
                    self.flush();
                }
                recv(self.stop) -> _ => {
                    // Every session has ended, so what is in the inbox now
                    // is everything that was accepted: deliver all of it.
                    while let Ok(msg) = self.inbox.try_recv() {
                        self.handle(msg);
                        if self.batch_full() {
                            self.flush();
                        }
                    }
                    self.flush();
                    break;
                }
            }
        }
    }

    /// Folds messages that are already waiting into the current batch.
    fn take_waiting(&mut self) {
        while !self.batch_full() {
            match self.inbox.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(_) => break,
            }
        }
    }

    fn batch_full(&self) -> bool {
        self.batch.len() >= MAX_BATCH_EVENTS || self.batch_bytes >= MAX_BATCH_BYTES
    }

    fn handle(&mut self, msg: Inbox) {
        match msg {
            Inbox::Join { conn, name } => {
                let seq = self
                    .publish(|seq, out| ServerLine::Join { seq, name: &name }.encode(out))
                    .0;
                self.keys.insert(conn.key.clone(), conn.id);
                self.shared.emit(ServerEvent::Joined {
                    seq,
                    id: conn.id,
                    name: name.clone(),
                });
                self.members.insert(
                    conn.id,
                    Member {
                        conn,
                        name,
                        from_seq: seq,
                    },
                );
            }
            Inbox::Say { id, text } => {
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
            Inbox::Data { id, payload } => {
                let Some(name) = self.members.get(&id).map(|m| m.name.clone()) else {
                    return;
                };
                let (seq, encoded) =
                    self.publish(|seq, out| encode_data(seq, &name, &payload, out));
                if self.shared.config.message_events {
                    // The payload sits between the header line and the LF.
                    let start = encoded.len() - payload.len() - 1;
                    self.shared.emit(ServerEvent::Payload {
                        seq,
                        id,
                        name,
                        bytes: encoded.slice(start..start + payload.len()),
                    });
                }
            }
            Inbox::Nick { id, new } => self.announce_rename(id, new),
            Inbox::Leave { id, bye } => self.say_goodbye(id, bye),
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

    /// Numbers, encodes and remembers one broadcast event, and queues it
    /// for the next write.
    fn publish(&mut self, encode: impl FnOnce(u64, &mut Vec<u8>)) -> (u64, Bytes) {
        let seq = self.history.newest() + 1;
        let mut out = Vec::new();
        encode(seq, &mut out);
        let encoded = Bytes::from(out);
        self.history.push(seq, encoded.clone());
        if self.batch.is_empty() {
            self.batch_first = seq;
        }
        self.batch_bytes += encoded.len();
        self.batch.push(encoded.clone());
        (seq, encoded)
    }

    fn notify(&mut self, text: &str) {
        let time = SystemTime::now();
        self.publish(|seq, out| ServerLine::Tick { seq, time, text }.encode(out));
    }

    fn periodic_tick(&mut self) {
        let info = TickInfo {
            clients: self.members.len(),
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
        self.notify(&text);
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
    /// error…) it joins `leaving`: the next flush writes it every event
    /// published before its `LEAVE` (its own last lines included: they
    /// came through this inbox before its `Leave`), then the `BYE` as its
    /// last line, in the same delivery as everyone else's events.
    fn say_goodbye(&mut self, id: ClientId, bye: Option<Reason>) {
        let Some((member, leave_seq)) = self.depart_member(id, true) else {
            return;
        };
        if let Some(bye) = bye {
            // At shutdown there is no `LEAVE`: it gets everything so far.
            let until = leave_seq.unwrap_or(self.history.newest() + 1);
            self.leaving.push(Leaving {
                conn: member.conn,
                from_seq: member.from_seq,
                until,
                bye,
            });
        }
    }

    /// Removes a member and announces its `LEAVE` with the reason its
    /// connection was closed for. Returns the name it had.
    fn depart(&mut self, id: ClientId, remember_key: bool) -> Option<String> {
        self.depart_member(id, remember_key)
            .map(|(member, _)| member.name)
    }

    /// [`Broadcaster::depart`], returning the member and the SEQ of its
    /// `LEAVE` (none at shutdown).
    fn depart_member(&mut self, id: ClientId, remember_key: bool) -> Option<(Member, Option<u64>)> {
        let member = self.members.remove(&id)?;
        self.keys.remove(&member.conn.key);
        let reason = member.conn.reason().unwrap_or(Reason::Error);
        if self.shared.is_stopping() {
            // No `LEAVE` at shutdown: everyone left is about to get
            // `BYE shutdown` instead.
            return Some((member, None));
        }
        let name = member.name.clone();
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
        if remember_key {
            self.departed.insert(member.conn.key.clone(), name.clone());
            self.departed_order
                .push_back((seq, member.conn.key.clone()));
        }
        self.forget_old_keys();
        self.shared.emit(ServerEvent::Left {
            seq,
            id,
            name,
            reason,
        });
        Some((member, Some(seq)))
    }

    /// Forgets departed keys once `--history` newer events have passed.
    fn forget_old_keys(&mut self) {
        let newest = self.history.newest();
        while let Some((seq, _)) = self.departed_order.front() {
            if newest - seq < self.shared.config.history as u64 {
                break;
            }
            if let Some((_, key)) = self.departed_order.pop_front() {
                self.departed.remove(&key);
            }
        }
    }

    /// Writes the batch to every member, and to each leaving member what
    /// it is owed and its `BYE`, all in one delivery; drops the members
    /// that fail, and writes their `LEAVE`s in turn.
    fn flush(&mut self) {
        while !self.batch.is_empty() || !self.leaving.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            let first = self.batch_first;
            self.batch_bytes = 0;
            // The part of the batch from SEQ `from` to before SEQ `until`.
            let range = |from: u64, until: u64| {
                let index = |seq: u64| seq.saturating_sub(first).min(batch.len() as u64) as usize;
                index(from)..index(until).max(index(from))
            };
            let leaving = std::mem::take(&mut self.leaving);
            let goodbyes: Vec<Vec<Bytes>> = leaving
                .iter()
                .map(|l| {
                    let mut chunks = batch[range(l.from_seq, l.until)].to_vec();
                    chunks.push(Bytes::from(ServerLine::Bye(l.bye).to_line()));
                    chunks
                })
                .collect();
            let members: Vec<&Member> = self.members.values().collect();
            let deliveries: Vec<Delivery<'_, Bytes>> = members
                .iter()
                .map(|m| Delivery {
                    conn: &m.conn,
                    chunks: &batch[range(m.from_seq, u64::MAX)],
                    last: false,
                })
                .chain(leaving.iter().zip(&goodbyes).map(|(l, chunks)| Delivery {
                    conn: &l.conn,
                    chunks,
                    last: true,
                }))
                .collect();
            let failed = deliver(&deliveries, self.shared.config.write_timeout);
            // The leaving are closed whether or not they took their `BYE`
            // (their `LEAVE` is out already); one that did not is reset
            // like any slow consumer.
            for (i, l) in leaving.iter().enumerate() {
                let stuck = failed.iter().any(|&(f, _)| f == members.len() + i);
                l.conn
                    .close_for(if stuck { Reason::SlowConsumer } else { l.bye });
            }
            let failed: Vec<(Arc<Conn>, Reason)> = failed
                .into_iter()
                .filter(|&(i, _)| i < members.len())
                .map(|(i, e)| (Arc::clone(&members[i].conn), e.reason()))
                .collect();
            for (conn, reason) in failed {
                self.shared.close(&conn, reason);
                self.depart(conn.id, true);
            }
            // If another delivery follows at once (the `LEAVE`s just
            // published), what arrived while this one waited goes out with
            // it: healthy clients get it in that delivery's first,
            // non-blocking pass, not after one more wait on the next
            // stalled client. (Otherwise return to `select!`, so the ticker
            // and the stop signal get their turn.)
            if !self.batch.is_empty() || !self.leaving.is_empty() {
                self.take_waiting();
            }
        }
    }

    fn resume(&mut self, conn: &Conn, after: u64, key: Option<String>) -> ResumeResult {
        let newest = self.history.newest();
        if after > newest {
            return Err((
                ErrorCode::BadArgs,
                format!("SEQ {after} is newer than the newest event {newest}"),
            ));
        }
        self.forget_old_keys();
        let mut nick_taken = None;
        if let Some(key) = key.filter(|k| *k != conn.key) {
            let name = if let Some(&old) = self.keys.get(&key) {
                self.take_over(old)
            } else if let Some(name) = self.departed.remove(&key) {
                Some(name)
            } else {
                return Err((ErrorCode::BadKey, "that key matches no connection".into()));
            };
            if let Some(name) = name
                && !self.rename_for_resume(conn.id, &name)
            {
                nick_taken = Some(name);
            }
        }
        let oldest = self.history.oldest();
        let gap = (after + 1 < oldest).then_some(oldest);
        let events: Vec<(u64, Bytes)> = self.history.after(after).cloned().collect();
        let last = events.last().map_or(after, |&(seq, _)| seq);
        Ok(Replay {
            nick_taken,
            gap,
            events: events.into_iter().map(|(_, e)| e).collect(),
            last,
        })
    }

    /// Closes a member's connection because a newer one presented its key
    /// (`BYE replaced`, then `LEAVE … replaced`). Returns the name it had.
    /// The key is used up: it is not remembered.
    fn take_over(&mut self, old: ClientId) -> Option<String> {
        let conn = Arc::clone(&self.members.get(&old)?.conn);
        if self
            .shared
            .registry
            .claim_close(&conn, Reason::Replaced)
            .is_some()
        {
            // The old connection is probably dead; do not wait for it.
            conn.send_last_nowait(ServerLine::Bye(Reason::Replaced).to_line().as_bytes());
            conn.shutdown();
        }
        self.depart(old, false)
    }

    /// Gives a resuming member the name of the connection whose key it
    /// presented. `false` if someone else holds that name now.
    fn rename_for_resume(&mut self, id: ClientId, name: &str) -> bool {
        if is_guest_name(name) {
            // A guest name belongs to its own connection; the new one
            // keeps its own.
            return true;
        }
        match self.shared.registry.rename(id, name) {
            Ok(Some(_)) => {
                self.announce_rename(id, name.to_string());
                true
            }
            Ok(None) => true,
            Err(NickError::Taken) => false,
            // The resuming connection itself was closed meanwhile.
            Err(NickError::Invalid(_)) => true,
        }
    }
}

fn default_tick_text(info: TickInfo) -> String {
    match info.clients {
        1 => "1 client connected".to_string(),
        n => format!("{n} clients connected"),
    }
}
