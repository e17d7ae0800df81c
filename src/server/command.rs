//! One client's lines: the checks every line passes and the commands
//! every transport shares.
//!
//! # One implementation, two doors
//!
//! A line typed on the TCP port and a line posted to `POST /line` for an
//! event stream are the same thing: [`Client::line`] checks it (rate,
//! token, text, syntax, in the order the session's docs give) and acts on
//! it (`MSG`, `/nick`, `/list`, `/msg`, `/ping`, `/help`). Only two things
//! differ between the doors, and both are parameters:
//!
//! * **where replies go** ([`Replies`]): a TCP session queues them in its
//!   client's outbox ([`ToOutbox`]); an HTTP request collects them into a
//!   `Vec<u8>`, which becomes its answer's body and status;
//! * **what a transport does itself** ([`Outcome`]): reading a `/send`
//!   payload, `/resume`, `/auth`, `/mirror`, `/quit` need the socket or
//!   the connection's life, so [`Client::line`] hands them back to its
//!   caller. On a stream, `/send`, `/resume`, `/auth`, `/mirror` and
//!   `/pong` make no sense and are `bad-args`.
//!
//! A stream's [`Client`] lives as long as the stream and is shared by the
//! requests posted for it (behind a mutex), so `--max-rate` counts its
//! lines on both doors alike.

use super::Shared;
use super::broadcaster::{Inbox, Payload};
use super::budget::Reservation;
use super::conn::Conn;
use super::in_flight::{InFlight, Waiting};
use super::outbox::WriteError;
use super::rate::TokenBucket;
use super::registry::{NickError, check_name};
use super::wire::Wire;
use crate::protocol::command::HELP;
use crate::protocol::{Command, ErrorCode, Reason, ServerLine, TextError, text_from_bytes};
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// `/list` answers one connection may get per second, in bytes (with a
/// burst of four times as many).
pub(crate) const LIST_BYTES_PER_SECOND: f64 = 64.0 * 1024.0;

/// How long a command waits for a cluster node's answer from Redis.
/// The appender answers within about 4.5 s (see its `QUEUE_LIMIT`).
const ROOM_ANSWER_WAIT: Duration = Duration::from_secs(6);

/// Whether a command needs a cluster node's room (Redis) to be served:
/// everything but `/ping`, `/help`, `/quit`, `/pong`, `/auth` and
/// `/mirror` (a mirror is the node's own).
fn needs_room(command: &Command<'_>) -> bool {
    !matches!(
        command,
        Command::Ping(_)
            | Command::Help
            | Command::Quit(_)
            | Command::Pong(_)
            | Command::Auth(_)
            | Command::Mirror(_)
    )
}

/// What a mirror may send (see `session`): it only receives, so only
/// what keeps its connection alive, catches up, or ends it.
fn a_mirror_may_send(command: &Command<'_>) -> bool {
    matches!(
        command,
        Command::Ping(_) | Command::Pong(_) | Command::Quit(_) | Command::Resume { key: None, .. }
    )
}

/// How a connection ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    /// The server closes the connection, saying `BYE REASON` first.
    Bye(Reason),
    /// The connection is over without a `BYE`: the client closed it, or a
    /// write to it failed.
    Silent(Reason),
}

impl From<WriteError> for End {
    fn from(e: WriteError) -> Self {
        End::Silent(e.reason())
    }
}

/// Where a client's replies (`OK`, `ERR`, `USERS`…) go.
pub(crate) trait Replies {
    /// Takes one reply line (or several), each ending in LF.
    fn reply(&mut self, conn: &Arc<Conn>, lines: &[u8]) -> Result<(), WriteError>;
}

/// Replies queued in the client's outbox (the TCP session).
pub(crate) struct ToOutbox;

impl Replies for ToOutbox {
    fn reply(&mut self, conn: &Arc<Conn>, lines: &[u8]) -> Result<(), WriteError> {
        conn.reply(lines)
    }
}

/// Replies collected for an HTTP answer.
impl Replies for Vec<u8> {
    fn reply(&mut self, _conn: &Arc<Conn>, lines: &[u8]) -> Result<(), WriteError> {
        self.extend_from_slice(lines);
        Ok(())
    }
}

/// What [`Client::line`] leaves to its transport.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    /// Nothing more to do.
    Done,
    /// The line was answered with an `ERR`; a refused `/send`'s payload
    /// must still be skipped.
    Refused { send_len: Option<u64> },
    /// `/send LEN`: read the payload, then [`Client::publish_payload`].
    Send(u64),
    /// `/resume SEQ [KEY]`.
    Resume { after: u64, key: Option<&'a str> },
    /// `/auth TOKEN`.
    Auth(&'a str),
    /// `/mirror KEY`.
    Mirror(&'a str),
    /// `/quit`: end with `BYE quit`.
    Quit,
}

/// One client's command state.
pub(crate) struct Client {
    pub shared: Arc<Shared>,
    pub conn: Arc<Conn>,
    /// Whether the client may do more than `/auth` and `/quit`.
    pub authed: bool,
    /// Whether the connection is a mirror, which may only receive (see
    /// `session`).
    pub mirror: bool,
    /// `--max-rate`, if set.
    rate: Option<TokenBucket>,
    /// Bytes of `/list` answers.
    list_rate: TokenBucket,
    /// The last payload handed to the broadcaster, until it is published
    /// (its sender is dropped then).
    in_flight: Option<Receiver<()>>,
    /// Scratch space for encoding replies.
    out: Vec<u8>,
    /// On a cluster node: chat lines whose answer may still come from the
    /// appender; a reply waits for them (see `in_flight`).
    room_lines: Option<Arc<InFlight>>,
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>, conn: Arc<Conn>) -> Self {
        let now = Instant::now();
        let config = &shared.config;
        Client {
            rate: config
                .max_rate
                .map(|r| TokenBucket::lines_per_second(r, now)),
            list_rate: TokenBucket::new(LIST_BYTES_PER_SECOND, 4.0 * LIST_BYTES_PER_SECOND, now),
            authed: config.token.is_none(),
            mirror: false,
            in_flight: None,
            out: Vec::new(),
            room_lines: shared.in_cluster().then(Arc::default),
            shared,
            conn,
        }
    }

    /// Checks one non-empty line and acts on it; see the module docs.
    pub(crate) fn line<'a>(
        &mut self,
        bytes: &'a [u8],
        replies: &mut dyn Replies,
    ) -> Result<Outcome<'a>, End> {
        self.conn.lines_in.fetch_add(1, Relaxed);
        let parsed = text_from_bytes(bytes).map(Command::parse);
        let send_len = match parsed {
            Ok(Ok(Some(Command::Send { len }))) if self.conn.wire == Wire::Line => Some(len),
            _ => None,
        };
        if send_len.is_some_and(|len| len > self.shared.config.max_payload) {
            return Err(End::Bye(Reason::PayloadTooLarge));
        }
        // A payload costs one line per --max-line bytes it holds.
        let cost = 1.0 + send_len.unwrap_or(0) as f64 / self.shared.config.max_line as f64;
        let refused = Outcome::Refused { send_len };
        if !self.rate_allows(cost) {
            let text = self.rate_text();
            self.error(replies, ErrorCode::RateLimited, &text)?;
            return Ok(refused);
        }
        let may_pass = matches!(parsed, Ok(Ok(Some(Command::Auth(_) | Command::Quit(_)))));
        if !self.authed && !may_pass {
            self.error(replies, ErrorCode::AuthRequired, "send /auth TOKEN first")?;
            return Ok(refused);
        }
        let (code, text) = match parsed {
            Err(e @ TextError::InvalidUtf8) => {
                (e.code(), "lines must be UTF-8; use /send for raw bytes")
            }
            Err(e @ TextError::ControlCharacter) => (
                e.code(),
                "no control characters other than TAB; use /send for raw bytes",
            ),
            Ok(Err(e)) => {
                self.error(replies, e.code, &e.message)?;
                return Ok(refused);
            }
            Ok(Ok(None)) => return Ok(Outcome::Done),
            Ok(Ok(Some(command))) if self.mirror && !a_mirror_may_send(&command) => {
                let text = "a mirror only receives; send on the primary link";
                self.error(replies, ErrorCode::BadArgs, text)?;
                return Ok(refused);
            }
            Ok(Ok(Some(command))) if self.shared.room_is_down() && needs_room(&command) => {
                let text = "the room's store (Redis) cannot be reached; try again in a moment";
                self.error(replies, ErrorCode::Unavailable, text)?;
                return Ok(refused);
            }
            Ok(Ok(Some(command))) => return self.dispatch(command, replies),
        };
        self.error(replies, code, text)?;
        Ok(refused)
    }

    /// What `ERR rate-limited` says.
    pub(crate) fn rate_text(&self) -> String {
        let rate = self.shared.config.max_rate.unwrap_or(0);
        format!(
            "you may send {rate} lines per second (bursts of {})",
            2 * rate
        )
    }

    /// Spends `cost` lines of `--max-rate`; `false` if over it.
    pub(crate) fn rate_allows(&mut self, cost: f64) -> bool {
        self.rate
            .as_mut()
            .is_none_or(|r| r.spend(cost, Instant::now()))
    }

    fn dispatch<'a>(
        &mut self,
        command: Command<'a>,
        replies: &mut dyn Replies,
    ) -> Result<Outcome<'a>, End> {
        let id = self.conn.id;
        match command {
            Command::Say(text) => {
                let ticket = self.room_lines.as_ref().map(InFlight::ticket);
                self.hand_over(Inbox::Say {
                    id,
                    text: text.to_string(),
                    ticket,
                })?
            }
            Command::Nick(name) => self.nick(name, replies)?,
            Command::List => self.list(replies)?,
            Command::Msg { to, text } => self.direct_message(to, text, replies)?,
            Command::Ping(token) => self.reply(replies, &ServerLine::Pong(token))?,
            Command::Help => {
                self.out.clear();
                for row in HELP {
                    ServerLine::Help(row).encode(&mut self.out);
                }
                let ok = ServerLine::Ok {
                    what: "help",
                    detail: "",
                };
                ok.encode(&mut self.out);
                self.send_reply(replies)?;
            }
            Command::Quit(_) => return Ok(Outcome::Quit),
            // What only the TCP line protocol has:
            _ if self.conn.wire == Wire::Sse => {
                let text = "on HTTP, send bytes with POST /data, catch up with the \
                            stream's since=, and give the token with the request";
                self.error(replies, ErrorCode::BadArgs, text)?;
                return Ok(Outcome::Refused { send_len: None });
            }
            Command::Pong(_) => {}
            Command::Send { len } => return Ok(Outcome::Send(len)),
            Command::Resume { after, key } => return Ok(Outcome::Resume { after, key }),
            Command::Auth(token) => return Ok(Outcome::Auth(token)),
            Command::Mirror(key) => return Ok(Outcome::Mirror(key)),
        }
        Ok(Outcome::Done)
    }

    fn nick(&mut self, name: &str, replies: &mut dyn Replies) -> Result<(), End> {
        if self.shared.in_cluster() {
            return self.nick_in_room(name, replies);
        }
        match self.shared.registry.rename(self.conn.id, name) {
            Ok(renamed) => {
                if renamed.is_some() {
                    self.hand_over(Inbox::Nick {
                        id: self.conn.id,
                        new: name.to_string(),
                        waiting: None,
                    })?;
                }
                let ok = ServerLine::Ok {
                    what: "nick",
                    detail: name,
                };
                self.reply(replies, &ok)
            }
            Err(NickError::Taken) => {
                self.error(replies, ErrorCode::NickTaken, &format!("{name} is taken"))
            }
            Err(NickError::Invalid(why)) => self.error(replies, ErrorCode::NickInvalid, &why),
        }
    }

    /// A cluster node's `/nick`: the naming rules are checked here, and
    /// whether the name is free in Redis, whose answer (`OK nick` or
    /// `ERR nick-taken`, see `cluster::appender`) this waits for.
    fn nick_in_room(&mut self, name: &str, replies: &mut dyn Replies) -> Result<(), End> {
        if let Err(NickError::Invalid(why)) = check_name(self.conn.id, name) {
            return self.error(replies, ErrorCode::NickInvalid, &why);
        }
        let (waiting, answer) = bounded(1);
        self.hand_over(Inbox::Nick {
            id: self.conn.id,
            new: name.to_string(),
            waiting: Some(Waiting {
                reply: waiting,
                asked: Instant::now(),
            }),
        })?;
        self.room_answer(&answer, replies)
    }

    /// Waits for the answer to what a cluster node asked Redis, and passes
    /// it on. The appender answers every question within its timeout; if
    /// it has not within [`ROOM_ANSWER_WAIT`] (its queue is long), say so.
    fn room_answer(
        &mut self,
        answer: &Receiver<String>,
        replies: &mut dyn Replies,
    ) -> Result<(), End> {
        match answer.recv_timeout(ROOM_ANSWER_WAIT) {
            Ok(line) => {
                self.out.clear();
                self.out.extend_from_slice(line.as_bytes());
                self.send_reply(replies)
            }
            Err(RecvTimeoutError::Timeout) => {
                let text = "the room's store (Redis) did not answer in time; try again";
                self.error(replies, ErrorCode::Unavailable, text)
            }
            // The member is leaving: nobody to tell.
            Err(RecvTimeoutError::Disconnected) => Ok(()),
        }
    }

    fn list(&mut self, replies: &mut dyn Replies) -> Result<(), End> {
        let names = self.shared.names();
        let names = names.iter().map(String::as_str).collect();
        self.out.clear();
        ServerLine::Users { names }.encode(&mut self.out);
        if !self.list_rate.spend(self.out.len() as f64, Instant::now()) {
            let wait = self.list_rate.wait().as_secs_f64().ceil();
            return self.error(
                replies,
                ErrorCode::RateLimited,
                &format!("/list is limited to 64 KiB of names per second; try again in {wait} s"),
            );
        }
        self.send_reply(replies)
    }

    fn direct_message(
        &mut self,
        to: &str,
        text: &str,
        replies: &mut dyn Replies,
    ) -> Result<(), End> {
        if let Some(answer) = self.shared.direct_message_in_room(&self.conn, to, text) {
            return self.room_answer(&answer, replies);
        }
        let Some((target, name)) = self.shared.registry.find(to) else {
            let text = format!("nobody called {to} is here");
            return self.error(replies, ErrorCode::NoSuchUser, &text);
        };
        let from = self
            .shared
            .registry
            .name_of(self.conn.id)
            .unwrap_or_default();
        let line = ServerLine::Dm { from: &from, text }.to_line();
        // Framed for the target's wire: a stream gets `event: dm`.
        match target.send_line(line.as_bytes()) {
            Ok(()) => self.reply(
                replies,
                &ServerLine::Ok {
                    what: "msg",
                    detail: &name,
                },
            ),
            // Our own outbox failed (a message to oneself).
            Err(e) if Arc::ptr_eq(&target, &self.conn) => Err(e.into()),
            Err(e) => {
                self.shared.drop_client(&target, e.reason());
                let text = format!("{name} could not be reached");
                self.error(replies, ErrorCode::NoSuchUser, &text)
            }
        }
    }

    /// Hands a payload (read by the transport, within its share of
    /// `--max-memory`) to the broadcaster's payload lane, to go out as
    /// `DATA`.
    pub(crate) fn publish_payload(
        &mut self,
        bytes: Vec<u8>,
        reservation: Reservation,
    ) -> Result<(), End> {
        self.wait_for_published()?;
        let (published, done) = bounded(1);
        let payload = Payload {
            id: self.conn.id,
            bytes,
            reservation,
            published,
        };
        self.shared
            .payloads
            .send(payload)
            .map_err(|_| End::Silent(Reason::Shutdown))?;
        self.in_flight = Some(done);
        Ok(())
    }

    /// Sends a message to the broadcaster, after our last payload.
    pub(crate) fn hand_over(&mut self, msg: Inbox) -> Result<(), End> {
        // A payload of ours still on its way goes first.
        self.wait_for_published()?;
        // This waits when the inbox is full: the back-pressure that keeps
        // a flood from using unbounded memory.
        self.shared
            .inbox
            .send(msg)
            .map_err(|_| End::Silent(Reason::Shutdown))
    }

    /// Waits until the last payload this client sent is published, so
    /// that what it sends next is numbered after it.
    pub(crate) fn wait_for_published(&mut self) -> Result<(), End> {
        let Some(done) = self.in_flight.take() else {
            return Ok(());
        };
        loop {
            match done.recv_timeout(Duration::from_millis(200)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                // The broadcaster stopped on a bug: do not wait for ever.
                Err(RecvTimeoutError::Timeout) if self.shared.is_stopping() => {
                    return Err(End::Silent(Reason::Shutdown));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    pub(crate) fn reply(
        &mut self,
        replies: &mut dyn Replies,
        line: &ServerLine<'_>,
    ) -> Result<(), End> {
        self.out.clear();
        line.encode(&mut self.out);
        self.send_reply(replies)
    }

    /// Writes the reply in `out`, after whatever the appender still has to
    /// say about this client's earlier chat lines (a cluster node).
    fn send_reply(&mut self, replies: &mut dyn Replies) -> Result<(), End> {
        let given_up = match &self.room_lines {
            Some(lines) => lines.settle(ROOM_ANSWER_WAIT),
            None => 0,
        };
        // Lines the appender never sent (see `in_flight`): say so first.
        for _ in 0..given_up {
            let line = ServerLine::Err {
                code: ErrorCode::Unavailable,
                text: "the room's store (Redis) is too slow now; try again in a moment",
            };
            replies.reply(&self.conn, line.to_line().as_bytes())?;
        }
        Ok(replies.reply(&self.conn, &self.out)?)
    }

    pub(crate) fn error(
        &mut self,
        replies: &mut dyn Replies,
        code: ErrorCode,
        text: &str,
    ) -> Result<(), End> {
        self.reply(replies, &ServerLine::Err { code, text })
    }
}
