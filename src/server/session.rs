//! A connection's session: the thread that reads one client's lines and
//! acts on them.
//!
//! Every accepted connection gets its own OS thread (a small one: see
//! `accept`) running [`run`]. Its life:
//!
//! 1. **Greet.** Queue `WELCOME` (it is the first line in the client's
//!    outbox, so it is the first line the client gets). On a server
//!    without a token the client joins at once: it is listed, and its
//!    `JOIN` is handed to the broadcaster. Nothing can overtake the
//!    greeting: broadcasts start only after the broadcaster has handled the
//!    `JOIN`, and a `DM` needs the name, which is listed only after the
//!    greeting is queued. Nothing here waits while holding a lock.
//! 2. **Loop.** Read a frame, check it against the limits in a fixed
//!    order, act on it. What the client says to everyone goes to the
//!    broadcaster (chat lines through its inbox, payloads through the
//!    payload lane); replies meant for this client alone (`OK`, `ERR`,
//!    `PONG`, `USERS`…) are queued in its outbox here directly.
//! 3. **End.** The loop ends with a reason. The session then settles who
//!    ends the connection (`Registry::claim`: the flusher may have
//!    dropped this client as a slow consumer first) and removes the
//!    connection from the client map, so that its place is free before
//!    anyone hears its `LEAVE`. For a member, the goodbye goes
//!    through the broadcaster: it delivers every event published before
//!    the client's `LEAVE` (its own last lines included), then the `BYE`,
//!    so that `BYE` really is the last line. A connection that never
//!    joined gets its `BYE` from the session directly.
//!
//! # The order of the checks
//!
//! Each non-empty line gets at most one `ERR`, decided in this order:
//!
//! | check | answer |
//! |---|---|
//! | `/send LEN` with LEN over `--max-payload` | `BYE payload-too-large` (nothing of it is read) |
//! | over `--max-rate` | `ERR rate-limited` |
//! | not yet authenticated, and not `/auth` or `/quit` | `ERR auth-required` |
//! | over `--max-line` | `ERR line-too-long` |
//! | not UTF-8 / control characters | `ERR invalid-utf8` / `ERR invalid-text` |
//! | not a well-formed command | `ERR unknown-command` / `ERR bad-args` |
//!
//! A `/send` refused by the rate limit or the token check still has its
//! payload read and thrown away, so the next line is found where it
//! should be. A `/send` counts as one line per `--max-line` bytes it
//! carries, so `--max-rate` bounds bytes too; `/list` answers are limited
//! to [`LIST_BYTES_PER_SECOND`] per connection, so that a short request
//! cannot make the server send megabytes.
//!
//! # Time limits
//!
//! A line or payload once started must be finished within
//! `--line-timeout` (`BYE timeout` otherwise), and `--idle-timeout` drops a
//! silent client after a `PING` it did not answer (see `silence`).

use super::broadcaster::{Inbox, Payload, Replay};
use super::conn::{Conn, ReadHalf};
use super::outbox::WriteError;
use super::rate::{AUTH_FAIL_DELAY, TokenBucket};
use super::registry::{Claim, NickError};
use super::{ServerEvent, Shared};
use crate::protocol::command::HELP;
use crate::protocol::frame::IAC;
use crate::protocol::{
    Command, ErrorCode, Frame, FrameReader, Reason, ServerLine, Telnet, TextError, guest_name,
    text_from_bytes,
};
use crate::silence::SilenceWatch;
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use std::convert::Infallible;
use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;

/// Greeting text at the end of `WELCOME`.
const GREETING: &str = concat!(
    "tickcast ",
    env!("CARGO_PKG_VERSION"),
    " protocol 1; type /help for commands"
);

/// A replay is queued in pieces of at most this many bytes, each once the
/// client has taken most of the one before (so a long replay never fills
/// the outbox past `--max-pending`), and live broadcasts slip in between.
const REPLAY_PIECE_BYTES: usize = 256 * 1024;

/// `/list` answers one connection may get per second, in bytes (with a
/// burst of four times as many).
pub(crate) const LIST_BYTES_PER_SECOND: f64 = 64.0 * 1024.0;

/// How long a `/send` waits for its share of `--max-memory` before it is
/// refused.
const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// Sends a `PING` to the client.
type Pinger = Box<dyn FnMut() -> io::Result<()> + Send>;

/// The session's reader: frames, from the socket, with a watch on the
/// clock.
type Reader = FrameReader<SilenceWatch<ReadHalf, Pinger>>;

/// Runs one connection's session to its end.
pub(crate) fn run(shared: Arc<Shared>, conn: Arc<Conn>) {
    // `--idle-timeout`: PING after half of it, BYE timeout after all.
    let pinger = Arc::clone(&conn);
    let mut pings: u64 = 0;
    let ping = move || {
        pings += 1;
        let ping = ServerLine::Ping(&pings.to_string()).to_line();
        pinger.send_line(ping.as_bytes()).map_err(io::Error::from)
    };
    let config = &shared.config;
    let reader = SilenceWatch::new(
        ReadHalf(Arc::clone(&conn)),
        config.idle_timeout,
        Box::new(ping) as Pinger,
    )
    .with_line_limit(config.line_timeout);
    let now = Instant::now();
    let mut session = Session {
        rate: config
            .max_rate
            .map(|rate| TokenBucket::lines_per_second(rate, now)),
        list_rate: TokenBucket::new(LIST_BYTES_PER_SECOND, 4.0 * LIST_BYTES_PER_SECOND, now),
        reader: FrameReader::new(reader, config.max_line)
            .with_telnet()
            .release_when_idle(),
        authed: config.token.is_none(),
        joined: false,
        in_flight: None,
        line: Vec::new(),
        out: Vec::new(),
        shared,
        conn,
    };
    // A bug in handling one client's commands costs that client its
    // connection (ended as `error`, announced like any other), not the
    // server. Nothing the session shares is left half-changed by a panic:
    // shared state changes only inside short lock scopes.
    let serve = std::panic::AssertUnwindSafe(|| session.serve());
    let end = match std::panic::catch_unwind(serve) {
        Ok(Err(end)) => end,
        Err(_) => End::Silent(Reason::Error),
    };
    session.finish(end);
}

/// How a session ends.
#[derive(Debug, Clone, Copy)]
enum End {
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

struct Session {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    reader: Reader,
    /// Whether the client may do more than `/auth` and `/quit`.
    authed: bool,
    /// Whether the client joined (and so must have a `LEAVE`).
    joined: bool,
    /// `--max-rate`, if set.
    rate: Option<TokenBucket>,
    /// Bytes of `/list` answers.
    list_rate: TokenBucket,
    /// The last payload handed to the broadcaster, until it is published
    /// (its sender is dropped then).
    in_flight: Option<Receiver<()>>,
    /// A copy of the line being handled (the reader's buffer is needed
    /// again to read a payload).
    line: Vec<u8>,
    /// Scratch space for encoding replies.
    out: Vec<u8>,
}

impl Session {
    fn serve(&mut self) -> Result<Infallible, End> {
        self.greet()?;
        loop {
            match self.reader.read_line() {
                Ok(Some(Frame::Line(bytes))) => {
                    self.line.clear();
                    self.line.extend_from_slice(bytes);
                    self.frame_done();
                    if self.line.is_empty() {
                        continue; // empty lines are ignored
                    }
                }
                Ok(Some(Frame::TooLong(_))) => {
                    self.frame_done();
                    self.too_long()?;
                    continue;
                }
                Ok(Some(Frame::Telnet(command))) => {
                    self.telnet(command)?;
                    continue;
                }
                Ok(None) => return Err(End::Silent(Reason::Closed)),
                Err(e) => return Err(self.read_failed(&e)),
            }
            let line = std::mem::take(&mut self.line);
            let result = self.handle_line(&line);
            self.line = line;
            result?;
        }
    }

    fn greet(&mut self) -> Result<(), End> {
        let key = self.conn.key.clone();
        let welcome = ServerLine::Welcome {
            id: self.conn.id.0,
            name: &guest_name(self.conn.id.0),
            time: SystemTime::now(),
            key: &key,
            epoch: &self.shared.epoch,
            text: GREETING,
        }
        .to_line();
        self.send(welcome.as_bytes())?;
        if self.authed { self.join() } else { Ok(()) }
    }

    /// Lists the client and hands its `JOIN` to the broadcaster. Its
    /// greeting (`WELCOME`, or `OK auth`) is already queued, so it comes
    /// first.
    fn join(&mut self) -> Result<(), End> {
        if let Some(name) = self.shared.registry.list(self.conn.id) {
            self.joined = true;
            self.hand_over(Inbox::Join {
                conn: Arc::clone(&self.conn),
                name,
            })?;
        }
        Ok(())
    }

    /// Answers a telnet command (see `protocol::frame`): refuses every
    /// option, except that it confirms a TIMING-MARK (telnet shows nothing
    /// until it is confirmed); Ctrl-C and its kin mean the user is leaving.
    fn telnet(&mut self, command: Telnet) -> Result<(), End> {
        const WILL: u8 = 251;
        const WONT: u8 = 252;
        const DONT: u8 = 254;
        let answer = match command {
            Telnet::Do(Telnet::TIMING_MARK) => Some([IAC, WILL, Telnet::TIMING_MARK]),
            Telnet::Do(option) => Some([IAC, WONT, option]),
            Telnet::Will(option) => Some([IAC, DONT, option]),
            Telnet::Command(c) if Telnet::STOPS.contains(&c) => {
                // Telnet sends `DO TIMING-MARK` right after and waits for
                // it before it shows anything: confirm it now, so the user
                // sees the `BYE`.
                self.send(&[IAC, WILL, Telnet::TIMING_MARK])?;
                return Err(End::Bye(Reason::Quit));
            }
            Telnet::Wont(_) | Telnet::Dont(_) | Telnet::Command(_) => None,
        };
        match answer {
            Some(bytes) => self.send(&bytes),
            None => Ok(()),
        }
    }

    /// The frame just read is complete: its time limit stops (and the
    /// next one's starts, if it has begun).
    fn frame_done(&mut self) {
        let more = !self.reader.buffered().is_empty();
        self.reader.get_mut().frame_done(more);
    }

    fn too_long(&mut self) -> Result<(), End> {
        if !self.rate_allows(1.0) {
            return self.error(ErrorCode::RateLimited, "slow down");
        }
        if !self.authed {
            return self.error(ErrorCode::AuthRequired, "send /auth TOKEN first");
        }
        let max = self.shared.config.max_line;
        self.error(
            ErrorCode::LineTooLong,
            &format!("a line may hold at most {max} bytes; it was dropped"),
        )
    }

    fn handle_line(&mut self, bytes: &[u8]) -> Result<(), End> {
        let parsed = text_from_bytes(bytes).map(Command::parse);
        let send_len = match parsed {
            Ok(Ok(Some(Command::Send { len }))) => Some(len),
            _ => None,
        };
        if send_len.is_some_and(|len| len > self.shared.config.max_payload) {
            return Err(End::Bye(Reason::PayloadTooLarge));
        }
        // A payload costs one line per --max-line bytes it holds.
        let cost = 1.0 + send_len.unwrap_or(0) as f64 / self.shared.config.max_line as f64;
        if !self.rate_allows(cost) {
            return self.refuse(send_len, ErrorCode::RateLimited, "slow down");
        }
        let may_pass = matches!(parsed, Ok(Ok(Some(Command::Auth(_) | Command::Quit(_)))));
        if !self.authed && !may_pass {
            return self.refuse(send_len, ErrorCode::AuthRequired, "send /auth TOKEN first");
        }
        match parsed {
            Err(TextError::InvalidUtf8) => self.error(
                ErrorCode::InvalidUtf8,
                "lines must be UTF-8; use /send for raw bytes",
            ),
            Err(TextError::ControlCharacter) => self.error(
                ErrorCode::InvalidText,
                "no control characters other than TAB; use /send for raw bytes",
            ),
            Ok(Err(e)) => self.error(e.code, &e.message),
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(command))) => self.dispatch(command),
        }
    }

    /// Answers `ERR`, and skips the payload of a refused `/send`.
    fn refuse(&mut self, send_len: Option<u64>, code: ErrorCode, text: &str) -> Result<(), End> {
        self.error(code, text)?;
        if let Some(len) = send_len {
            self.reader.get_mut().allow_payload(len);
            self.reader
                .skip_payload(len)
                .map_err(|e| self.read_failed(&e))?;
            self.payload_end(len)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, command: Command<'_>) -> Result<(), End> {
        let id = self.conn.id;
        match command {
            Command::Say(text) => self.hand_over(Inbox::Say {
                id,
                text: text.to_string(),
            }),
            Command::Nick(name) => self.nick(name),
            Command::List => self.list(),
            Command::Msg { to, text } => self.direct_message(to, text),
            Command::Send { len } => self.payload(len),
            Command::Ping(token) => self.reply(&ServerLine::Pong(token)),
            Command::Pong(_) => Ok(()),
            Command::Resume { after, key } => self.resume(after, key),
            Command::Auth(token) => self.auth(token),
            Command::Help => {
                self.out.clear();
                for row in HELP {
                    ServerLine::Help(row).encode(&mut self.out);
                }
                ServerLine::Ok {
                    what: "help",
                    detail: "",
                }
                .encode(&mut self.out);
                Ok(self.conn.send_line(&self.out)?)
            }
            Command::Quit(_) => Err(End::Bye(Reason::Quit)),
        }
    }

    fn list(&mut self) -> Result<(), End> {
        let names = self.shared.registry.names();
        let names = names.iter().map(String::as_str).collect();
        self.out.clear();
        ServerLine::Users { names }.encode(&mut self.out);
        if !self.list_rate.spend(self.out.len() as f64, Instant::now()) {
            let wait = self.list_rate.wait().as_secs_f64().ceil();
            return self.error(
                ErrorCode::RateLimited,
                &format!("/list is limited to 64 KiB of names per second; try again in {wait} s"),
            );
        }
        Ok(self.conn.send_line(&self.out)?)
    }

    /// Reads a `/send` payload, within the memory budget, and hands it to
    /// the broadcaster's payload lane.
    fn payload(&mut self, len: u64) -> Result<(), End> {
        // `len` is at most --max-payload, which is at most --max-memory.
        let deadline = Instant::now() + BUDGET_WAIT;
        let Some(reservation) = self.shared.budget.reserve(len as usize, deadline) else {
            return self.refuse(
                Some(len),
                ErrorCode::RateLimited,
                "the server is busy with other payloads; this one was dropped, send it again",
            );
        };
        self.reader.get_mut().allow_payload(len);
        let mut bytes = Vec::new();
        self.reader
            .read_payload(len as usize, &mut bytes)
            .map_err(|e| self.read_failed(&e))?;
        self.payload_end(len)?;
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

    fn nick(&mut self, name: &str) -> Result<(), End> {
        match self.shared.registry.rename(self.conn.id, name) {
            Ok(renamed) => {
                if renamed.is_some() {
                    self.hand_over(Inbox::Nick {
                        id: self.conn.id,
                        new: name.to_string(),
                    })?;
                }
                self.reply(&ServerLine::Ok {
                    what: "nick",
                    detail: name,
                })
            }
            Err(NickError::Taken) => self.error(ErrorCode::NickTaken, &format!("{name} is taken")),
            Err(NickError::Invalid(why)) => self.error(ErrorCode::NickInvalid, &why),
        }
    }

    fn direct_message(&mut self, to: &str, text: &str) -> Result<(), End> {
        let Some((target, name)) = self.shared.registry.find(to) else {
            return self.error(
                ErrorCode::NoSuchUser,
                &format!("nobody called {to} is here"),
            );
        };
        let from = self
            .shared
            .registry
            .name_of(self.conn.id)
            .unwrap_or_default();
        let line = ServerLine::Dm { from: &from, text }.to_line();
        match target.send_line(line.as_bytes()) {
            Ok(()) => self.reply(&ServerLine::Ok {
                what: "msg",
                detail: &name,
            }),
            // Our own outbox failed (a message to oneself).
            Err(e) if Arc::ptr_eq(&target, &self.conn) => Err(e.into()),
            Err(e) => {
                self.shared.drop_client(&target, e.reason());
                self.error(
                    ErrorCode::NoSuchUser,
                    &format!("{name} could not be reached"),
                )
            }
        }
    }

    fn auth(&mut self, token: &str) -> Result<(), End> {
        let ok = ServerLine::Ok {
            what: "auth",
            detail: "",
        }
        .to_line();
        let Some(expected) = &self.shared.config.token else {
            return self.send(ok.as_bytes());
        };
        // Constant time: how long the comparison takes says nothing about
        // how much of the token was right. An address locked out for too
        // many failures fails whatever it sends.
        let ip = self.conn.peer.ip().to_canonical();
        let failures = &self.shared.auth_failures;
        let good: bool = token.as_bytes().ct_eq(expected.as_bytes()).into();
        if !good || failures.locked(ip, Instant::now()) {
            failures.record(ip, Instant::now());
            // A guess costs the guesser time.
            std::thread::sleep(AUTH_FAIL_DELAY);
            return Err(End::Bye(Reason::AuthFailed));
        }
        self.send(ok.as_bytes())?;
        if self.authed {
            return Ok(());
        }
        self.authed = true;
        self.join()
    }

    fn resume(&mut self, after: u64, key: Option<&str>) -> Result<(), End> {
        let (reply, answer) = bounded(1);
        self.hand_over(Inbox::Resume {
            conn: Arc::clone(&self.conn),
            after,
            key: key.map(str::to_string),
            reply,
        })?;
        // The broadcaster answers every request; it stops only after every
        // session has ended.
        let replay = match answer.recv() {
            Ok(Ok(replay)) => replay,
            Ok(Err((code, text))) => return self.error(code, &text),
            Err(_) => return Err(End::Silent(Reason::Shutdown)),
        };
        let Replay {
            nick_taken,
            gap,
            events,
            last,
        } = replay;
        if let Some(name) = nick_taken {
            self.error(
                ErrorCode::NickTaken,
                &format!("{name} is taken by another client; the replay goes on"),
            )?;
        }
        if let Some(oldest) = gap {
            self.error(ErrorCode::ResumeGap, &oldest.to_string())?;
        }
        self.write_replay(&events)?;
        self.reply(&ServerLine::Ok {
            what: "resume",
            detail: &last.to_string(),
        })
    }

    /// Queues replayed events in pieces; see [`REPLAY_PIECE_BYTES`].
    fn write_replay(&mut self, events: &[Bytes]) -> Result<(), End> {
        let mut rest = events;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|e| {
                    let fits = bytes == 0 || bytes + e.len() <= REPLAY_PIECE_BYTES;
                    bytes += e.len();
                    fits
                })
                .count();
            // Wait (bounded) until the client has taken most of the last
            // piece; if it does not, the flusher drops it meanwhile.
            let deadline = Instant::now() + self.shared.config.write_timeout;
            self.conn
                .wait_for_room(self.shared.config.max_pending / 2, deadline);
            self.conn.send(&rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Checks the LF after a payload; anything else breaks the framing:
    /// say what was wrong, then `BYE protocol-error`.
    fn payload_end(&mut self, len: u64) -> Result<(), End> {
        let next = self.reader.buffered().first().copied();
        match self.reader.read_payload_end() {
            Ok(true) => {
                self.frame_done();
                Ok(())
            }
            Ok(false) => {
                let found = next.map_or("another byte".to_string(), |b| format!("{b:?}"));
                let text = format!(
                    "/send {len} declared {len} bytes, but byte {} was {found} instead of LF; \
                     the framing is lost",
                    len + 1
                );
                let _ = self.error(ErrorCode::BadArgs, &text);
                Err(End::Bye(Reason::ProtocolError))
            }
            Err(e) => Err(self.read_failed(&e)),
        }
    }

    fn rate_allows(&mut self, cost: f64) -> bool {
        self.rate
            .as_mut()
            .is_none_or(|r| r.spend(cost, Instant::now()))
    }

    fn hand_over(&mut self, msg: Inbox) -> Result<(), End> {
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
    fn wait_for_published(&mut self) -> Result<(), End> {
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

    fn reply(&mut self, line: &ServerLine<'_>) -> Result<(), End> {
        self.out.clear();
        line.encode(&mut self.out);
        Ok(self.conn.send_line(&self.out)?)
    }

    fn error(&mut self, code: ErrorCode, text: &str) -> Result<(), End> {
        self.reply(&ServerLine::Err { code, text })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), End> {
        Ok(self.conn.send_line(bytes)?)
    }

    fn read_failed(&self, e: &io::Error) -> End {
        let watch = self.reader.get_ref();
        if watch.expired() || watch.frame_expired() {
            return End::Bye(Reason::Timeout);
        }
        match e.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => End::Silent(Reason::Closed),
            // Only a PING that could not be written in time times out here
            // (reads time out only for the silence watch, handled above).
            ErrorKind::TimedOut | ErrorKind::WouldBlock => End::Silent(Reason::SlowConsumer),
            _ => End::Silent(Reason::Error),
        }
    }

    fn finish(mut self, end: End) {
        let (reason, bye) = match end {
            End::Bye(reason) => (reason, true),
            End::Silent(reason) => (reason, false),
        };
        // Our last payload goes out before our `LEAVE`.
        let _ = self.wait_for_published();
        let shared = &self.shared;
        let conn = &self.conn;
        let mut leave = None;
        // At shutdown the server closes the reading side of every socket,
        // which looks like the client closing: leave that connection to
        // the shutdown sequence, which says `BYE shutdown`.
        let claim = if shared.is_stopping() && reason == Reason::Closed {
            Claim::Lost
        } else {
            shared.registry.claim(conn, reason)
        };
        let bye_line = || [Bytes::from(ServerLine::Bye(reason).to_line())];
        match claim {
            Claim::Listed if self.joined => {
                // A member: the broadcaster queues what it is owed, then
                // the BYE (if any) as the very last line, and tells the
                // others (not at shutdown). A client that closed on its own
                // is owed nothing: close at once. At shutdown the
                // broadcaster is still running: the acceptor stops it only
                // after every session has ended.
                if !bye {
                    conn.close_for(reason);
                }
                leave = Some(Inbox::Leave {
                    id: conn.id,
                    bye: bye.then_some(reason),
                });
            }
            Claim::Listed | Claim::Unlisted if bye => conn.finish(&bye_line()),
            Claim::Listed | Claim::Unlisted => conn.close_for(reason),
            Claim::Lost => {}
        }
        // Free the place in the client map (and its `--max-clients` and
        // `--max-per-ip` counts) before the others hear the `LEAVE`: whoever
        // reacts to it by connecting must find the place free. The
        // broadcaster keeps its own handle on the connection for the
        // goodbye.
        let name = shared.registry.remove(conn.id).unwrap_or_default();
        if let Some(leave) = leave {
            let _ = shared.inbox.send(leave);
        }
        shared.emit(ServerEvent::Disconnected {
            id: conn.id,
            peer: conn.peer,
            name,
            reason: conn.reason().unwrap_or(Reason::Shutdown),
        });
    }
}
