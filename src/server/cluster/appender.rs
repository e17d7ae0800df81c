//! The appender thread: the only way this node changes the room.
//!
//! The broadcaster hands it [`Op`]s (what it would have numbered itself on
//! a single server); the appender runs each as a call of the room's script
//! in Redis, many calls per round trip (a pipeline), in the order they
//! came, so one client's lines keep their order. It does not deliver
//! anything: a numbered event comes back to every node, this one
//! included, through its stream reader. What it does with an answer is to
//! tell the one client who is waiting for it: `OK nick`, `OK msg`, or why
//! not (`ERR nick-taken`, `ERR unavailable`…).
//!
//! It also beats once a second (which is how dead nodes are found, see
//! `room.lua`), fetches blocks of client ids, and, when Redis cannot be
//! reached, marks the room down and tries again with a growing pause,
//! failing whatever is asked meanwhile at once.

use super::redis_link::RedisLink;
use super::{Room, RoomEvent, entry};
use crate::protocol::{ErrorCode, Reason, ServerLine};
use crate::server::Shared;
use crate::server::broadcaster::ResumeResult;
use crate::server::budget::Reservation;
use crate::server::conn::Conn;
use crate::server::event::{ClientId, ServerEvent};
use crate::server::in_flight::{Ticket, Waiting};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Cmd, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the appender is asked to do.
pub(crate) enum Op {
    /// A connection joins the room under its guest name.
    Join { conn: Arc<Conn> },
    /// A member said something; `ticket` is dropped once the member has
    /// been told what there is to tell (see `server::in_flight`).
    Say {
        conn: Arc<Conn>,
        text: String,
        ticket: Option<Ticket>,
    },
    /// A member's payload; `held` (its share of `--max-memory`, and what
    /// its session waits on) is let go once the call is answered.
    Data {
        conn: Arc<Conn>,
        bytes: Vec<u8>,
        held: (Reservation, Sender<()>),
    },
    /// A member takes a new name.
    Nick {
        conn: Arc<Conn>,
        new: String,
        asker: Asker,
    },
    /// A member leaves; with `remember`, its key gives its name back later.
    /// It leaves the room of `epoch` only: retried after Redis came back
    /// empty, it must not remove whoever has its id in the new room.
    Leave {
        id: ClientId,
        reason: Reason,
        remember: bool,
        epoch: Arc<str>,
    },
    /// A connection presents an older connection's KEY.
    TakeOver {
        conn: Arc<Conn>,
        key: String,
        then: AfterTakeOver,
    },
    /// `/msg TO TEXT`; its `OK msg` or `ERR` goes to `reply`.
    Dm {
        conn: Arc<Conn>,
        to: String,
        text: String,
        reply: Waiting,
    },
    /// The periodic `TICK` (`rest` is `TIME TEXT`), if this node holds
    /// the lease.
    Tick { rest: String, lease: Duration },
    /// A block of client ids.
    Ids,
    /// This node stops: tell the room, and end the thread.
    Stop,
}

/// Who hears how a `/nick` went.
pub(crate) enum Asker {
    /// The command's sender (a session, or an HTTP request) waits for its
    /// reply line, `OK nick NAME` or `ERR …`.
    Waiting(Waiting),
    /// An event stream's `name=`: only an error, on the stream itself.
    Stream,
}

/// What was waiting for a [`Op::TakeOver`].
pub(crate) enum AfterTakeOver {
    /// `/resume SEQ KEY`: the replay after SEQ, answered on `reply`.
    Resume {
        after: u64,
        reply: Sender<ResumeResult>,
    },
    /// An event stream's `key=`: then its `name=`, if the key gave no
    /// name back.
    Stream { name: Option<String> },
}

/// What a KEY presented to the room did.
pub(crate) struct TakenOver {
    /// Whether it gave the new connection a name back.
    pub named: bool,
    /// The name it should have given back, but someone else has it.
    pub taken: Option<String>,
}

/// How long a client's line may wait for the appender before it is
/// refused unsent (`ERR unavailable`).
const QUEUE_LIMIT: Duration = Duration::from_secs(2);

/// The longest pause between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Operations sent in one round trip, at most.
const PIPELINE: usize = 512;

const UNAVAILABLE: &str =
    "the room's store (Redis) cannot be reached or is too slow; try again in a moment";

pub(crate) struct Appender {
    shared: Arc<Shared>,
    link: Option<RedisLink>,
    target: super::redis_link::Target,
    ops: Receiver<Op>,
    events: Sender<RoomEvent>,
    /// `LEAVE`s that Redis could not take: tried again once it is back.
    leaves: Vec<Op>,
    next_beat: Instant,
    backoff: Duration,
    next_attempt: Instant,
}

impl Appender {
    pub(crate) fn new(
        shared: Arc<Shared>,
        link: RedisLink,
        ops: Receiver<Op>,
        events: Sender<RoomEvent>,
    ) -> Self {
        Appender {
            shared,
            target: link.target().clone(),
            link: Some(link),
            ops,
            events,
            leaves: Vec::new(),
            next_beat: Instant::now(),
            backoff: Duration::from_millis(100),
            next_attempt: Instant::now(),
        }
    }

    fn room(&self) -> &Room {
        self.shared
            .room
            .as_deref()
            .expect("a cluster node has a room")
    }

    /// The thread's body: take what is waiting, run it, answer; beat.
    pub(crate) fn run(mut self) {
        loop {
            let wait = self.next_beat.saturating_duration_since(Instant::now());
            let mut batch = match self.ops.recv_timeout(wait) {
                Ok(op) => vec![op],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            while batch.len() < PIPELINE
                && let Ok(op) = self.ops.try_recv()
            {
                batch.push(op);
            }
            let stop = batch.iter().any(|op| matches!(op, Op::Stop));
            if self.link.is_none() && Instant::now() >= self.next_attempt {
                self.reconnect();
            }
            if self.link.is_some() && !self.leaves.is_empty() {
                let mut retried = std::mem::take(&mut self.leaves);
                retried.append(&mut batch);
                batch = retried;
            }
            self.run_batch(batch);
            if stop {
                return;
            }
        }
    }

    /// Runs `batch` (and the heartbeat, when it is due) in one round trip,
    /// or fails it at once when Redis is down. A line whose sender has
    /// waited [`QUEUE_LIMIT`] already is refused without being sent: so
    /// every sender hears within `QUEUE_LIMIT` + [`READ_TIMEOUT`](super::redis_link::READ_TIMEOUT), and a
    /// session's next reply never has to pass it (see `in_flight`).
    fn run_batch(&mut self, batch: Vec<Op>) {
        let (stale, batch): (Vec<Op>, Vec<Op>) = batch.into_iter().partition(is_stale);
        stale.into_iter().for_each(|op| self.settle(op, None));
        let beat = Instant::now() >= self.next_beat;
        if beat {
            self.next_beat = Instant::now() + Duration::from_secs(1);
        }
        let Some(link) = &mut self.link else {
            batch.into_iter().for_each(|op| self.settle(op, None));
            return;
        };
        let epoch = self.shared.epoch.get();
        let mut calls: Vec<Cmd> = batch.iter().map(|op| call(link, op, &epoch)).collect();
        if beat {
            calls.push(link.script("beat", &epoch, &[]));
        }
        match link.run(&calls) {
            Ok(mut answers) => {
                if beat && let Some(answer) = answers.pop() {
                    self.beaten(&answer);
                }
                for (op, answer) in batch.into_iter().zip(answers) {
                    self.settle(op, Some(&answer));
                }
            }
            Err(e) => {
                self.lost(&e);
                batch.into_iter().for_each(|op| self.settle(op, None));
            }
        }
    }

    /// Redis stopped answering: the room is down for this node.
    fn lost(&mut self, e: &redis::RedisError) {
        if self.room().is_up() {
            let text = format!(
                "lost Redis at {}: {}; lines that need it get ERR unavailable until it is back",
                self.target.url(),
                super::redis_link::in_words(e)
            );
            self.report(false, text);
        }
        self.room().set_up(false);
        self.link = None;
        self.next_attempt = Instant::now() + self.backoff;
        self.next_beat = self.next_attempt;
    }

    fn reconnect(&mut self) {
        match RedisLink::connect(&self.target) {
            Ok(link) => {
                self.link = Some(link);
                self.backoff = Duration::from_millis(100);
                self.next_beat = Instant::now();
                self.room().set_up(true);
                self.report(true, "Redis is back".to_string());
            }
            Err(_) => {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.next_attempt = Instant::now() + self.backoff;
                self.next_beat = self.next_attempt;
            }
        }
    }

    /// The heartbeat's answer: the room's newest SEQ, for the reader's lag.
    fn beaten(&mut self, answer: &Value) {
        match status(answer).as_deref() {
            Some("ok") => {
                let newest = nth_number(answer, 1).unwrap_or(0);
                let delivered = self.shared.history.newest();
                let room = self.room();
                room.lag.store(
                    newest.saturating_sub(delivered),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Some("reaped") => self.report(
                false,
                "this node was out of touch with Redis for too long and was declared \
                 down; its clients are closed with BYE unavailable"
                    .to_string(),
            ),
            _ => {}
        }
    }

    /// Tells whoever waits for `op` how it went (`None`: Redis is down).
    fn settle(&mut self, op: Op, answer: Option<&Value>) {
        let word = answer.and_then(status);
        let word = word.as_deref();
        match op {
            Op::Join { conn } if word != Some("ok") => {
                if self.shared.registry.claim(&conn, Reason::Unavailable).won() {
                    conn.finish(&[conn.wire.bye(Reason::Unavailable)]);
                }
                if answer.is_none() {
                    // Redis may have run it and lost only its answer: once
                    // it is back, make sure the room has no ghost of it.
                    self.leaves.push(Op::Leave {
                        id: conn.id,
                        reason: Reason::Unavailable,
                        remember: false,
                        epoch: self.shared.epoch.get(),
                    });
                }
                let _ = self.events.send(RoomEvent::LeaveSettled(conn.id));
            }
            Op::Say { conn, ticket, .. } => {
                // A line given up by its session was answered there.
                let given_up = ticket.as_ref().is_some_and(Ticket::given_up);
                if refused(word) && !given_up {
                    self.error(&conn, ErrorCode::Unavailable, UNAVAILABLE);
                }
                // Said: the session may write its next reply.
                drop(ticket);
            }
            Op::Data { conn, held, .. } => {
                if refused(word) {
                    self.error(&conn, ErrorCode::Unavailable, UNAVAILABLE);
                }
                // Its memory back, and its session may go on.
                drop(held);
            }
            Op::Nick { conn, new, asker } => self.renamed(&conn, &new, &asker, word),
            Op::Leave {
                id,
                reason,
                remember,
                epoch,
            } if word != Some("ok") => {
                if answer.is_none() {
                    let again = Op::Leave {
                        id,
                        reason,
                        remember,
                        epoch,
                    };
                    self.leaves.push(again);
                }
                let _ = self.events.send(RoomEvent::LeaveSettled(id));
            }
            Op::TakeOver { conn, then, .. } => self.took_over(conn, then, word, answer),
            Op::Dm { to, reply, .. } => {
                // The sender waits for it (or has gone: nobody to tell).
                let _ = reply.reply.try_send(dm_reply(&to, word, answer));
            }
            Op::Ids if word == Some("ok") => {
                if let Some(answer) = answer
                    && let (Some(first), Some(last)) =
                        (nth_number(answer, 1), nth_number(answer, 2))
                {
                    self.room().add_ids(first, last);
                }
            }
            _ => {}
        }
    }

    /// Hands the outcome of a KEY presented to the room to the
    /// broadcaster, with what waits for it.
    fn took_over(
        &self,
        conn: Arc<Conn>,
        then: AfterTakeOver,
        word: Option<&str>,
        answer: Option<&Value>,
    ) {
        let name = answer.and_then(|a| nth_text(a, 1));
        let outcome = match word {
            Some("ok") => Ok(TakenOver {
                named: name.is_some_and(|n| !n.is_empty()),
                taken: None,
            }),
            Some("taken") => Ok(TakenOver {
                named: false,
                taken: name,
            }),
            Some("bad-key") => Err((
                ErrorCode::BadKey,
                "that key matches no connection".to_string(),
            )),
            _ => Err((ErrorCode::Unavailable, UNAVAILABLE.to_string())),
        };
        let event = RoomEvent::TookOver {
            conn,
            outcome,
            then,
        };
        let _ = self.events.send(event);
    }

    fn renamed(&mut self, conn: &Arc<Conn>, new: &str, asker: &Asker, word: Option<&str>) {
        let line = match word {
            Some("ok") => {
                self.shared.registry.set_name(conn.id, new);
                // `/list` shows it at once (the NICK from the log says the
                // same a moment later); a member that left stays gone.
                if let Some(name) = self.room().roster.lock().get_mut(&conn.id) {
                    *name = new.to_string();
                }
                let ok = ServerLine::Ok {
                    what: "nick",
                    detail: new,
                };
                ok.to_line()
            }
            Some("taken") => {
                let text = format!("{new} is taken");
                let code = ErrorCode::NickTaken;
                ServerLine::Err { code, text: &text }.to_line()
            }
            // Its connection is ending: nobody to tell.
            Some("gone") => return,
            _ => unavailable(),
        };
        match asker {
            Asker::Waiting(waiting) => {
                let _ = waiting.reply.try_send(line);
            }
            Asker::Stream if word != Some("ok") => {
                if let Err(e) = conn.send_line(line.as_bytes()) {
                    self.shared.drop_client(conn, e.reason());
                }
            }
            Asker::Stream => {}
        }
    }

    /// Tells the embedding program (the CLI logs it).
    fn report(&self, up: bool, text: String) {
        self.shared.emit(ServerEvent::Room { up, text });
    }

    fn error(&self, conn: &Arc<Conn>, code: ErrorCode, text: &str) {
        self.answer(conn, &ServerLine::Err { code, text });
    }

    /// Queues a reply for `conn`; never waits for it.
    fn answer(&self, conn: &Arc<Conn>, line: &ServerLine<'_>) {
        if let Err(e) = conn.send_line(line.to_line().as_bytes()) {
            self.shared.drop_client(conn, e.reason());
        }
    }
}

/// The reply to `/msg TO`: `OK msg NAME`, or why not.
fn dm_reply(to: &str, word: Option<&str>, answer: Option<&Value>) -> String {
    match word {
        Some("ok") => {
            let name = answer.and_then(|a| nth_text(a, 1));
            let ok = ServerLine::Ok {
                what: "msg",
                detail: name.as_deref().unwrap_or(to),
            };
            ok.to_line()
        }
        Some("no-such-user") => {
            let text = format!("nobody called {to} is here");
            let code = ErrorCode::NoSuchUser;
            ServerLine::Err { code, text: &text }.to_line()
        }
        _ => unavailable(),
    }
}

/// `ERR unavailable …`, as a line.
fn unavailable() -> String {
    let code = ErrorCode::Unavailable;
    ServerLine::Err {
        code,
        text: UNAVAILABLE,
    }
    .to_line()
}

/// Whether an answer means the event was not appended, for a reason the
/// client should hear (not `gone`: a client that left hears nothing).
fn refused(word: Option<&str>) -> bool {
    !matches!(word, Some("ok" | "gone"))
}

/// Whether `op` is a client's line that waited too long to be sent, or
/// that its session gave up on.
fn is_stale(op: &Op) -> bool {
    if let Op::Say {
        ticket: Some(ticket),
        ..
    } = op
        && ticket.given_up()
    {
        return true;
    }
    asked(op).is_some_and(|t| t.elapsed() > QUEUE_LIMIT)
}

/// Since when a client waits for `op` to be settled, if one does.
fn asked(op: &Op) -> Option<Instant> {
    match op {
        Op::Say { ticket, .. } => ticket.as_ref().map(Ticket::since),
        Op::Nick {
            asker: Asker::Waiting(waiting),
            ..
        } => Some(waiting.asked),
        Op::Dm { reply, .. } => Some(reply.asked),
        _ => None,
    }
}

/// The script call for one operation.
fn call(link: &RedisLink, op: &Op, epoch: &str) -> Cmd {
    let id = |conn: &Conn| conn.id.0.to_string();
    match op {
        Op::Join { conn } => {
            link.script("join", epoch, &[id(conn).as_bytes(), conn.key.as_bytes()])
        }
        Op::Say { conn, text, .. } => {
            link.script("say", epoch, &[id(conn).as_bytes(), text.as_bytes()])
        }
        Op::Data { conn, bytes, .. } => link.script("data", epoch, &[id(conn).as_bytes(), bytes]),
        Op::Nick { conn, new, .. } => {
            link.script("nick", epoch, &[id(conn).as_bytes(), new.as_bytes()])
        }
        Op::Leave {
            id,
            reason,
            remember,
            epoch: its_epoch,
        } => {
            let remember: &[u8] = if *remember { b"1" } else { b"0" };
            let id = id.0.to_string();
            link.script(
                "leave",
                its_epoch,
                &[id.as_bytes(), reason.as_str().as_bytes(), remember],
            )
        }
        Op::TakeOver { conn, key, .. } => {
            link.script("takeover", epoch, &[id(conn).as_bytes(), key.as_bytes()])
        }
        Op::Dm { conn, to, text, .. } => link.script(
            "dm",
            epoch,
            &[id(conn).as_bytes(), to.as_bytes(), text.as_bytes()],
        ),
        Op::Tick { rest, lease } => {
            let lease = lease.as_millis().to_string();
            link.script("tick", epoch, &[lease.as_bytes(), rest.as_bytes()])
        }
        Op::Ids => link.script("ids", epoch, &[super::ID_BLOCK.to_string().as_bytes()]),
        Op::Stop => link.script("stop", epoch, &[]),
    }
}

/// The first word of a script's answer.
fn status(answer: &Value) -> Option<String> {
    nth_text(answer, 0)
}

fn nth_text(answer: &Value, n: usize) -> Option<String> {
    match answer {
        Value::Array(parts) => entry::text(parts.get(n)?),
        _ => None,
    }
}

fn nth_number(answer: &Value, n: usize) -> Option<u64> {
    match answer {
        Value::Array(parts) => entry::number(parts.get(n)?),
        _ => None,
    }
}
