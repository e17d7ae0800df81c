//! A connection's session: the thread that reads one client's lines and
//! acts on them.
//!
//! Every accepted connection gets its own OS thread (a small one: see
//! `accept`) running [`run`]. Its life:
//!
//! 1. **Greet.** Write `WELCOME`. On a server without a token the client
//!    joins at the same moment: it is listed, and its `JOIN` is handed to
//!    the broadcaster while the session still holds the connection's
//!    write lock, so `WELCOME` is guaranteed to reach the client before
//!    its `JOIN` and before any other broadcast.
//! 2. **Loop.** Read a frame, check it against the limits in a fixed
//!    order, act on it. What the client says to everyone goes to the
//!    broadcaster's inbox; replies meant for this client alone (`OK`,
//!    `ERR`, `PONG`, `USERS`…) are written here directly.
//! 3. **End.** The loop ends with a reason. The session then settles who
//!    ends the connection (`Registry::claim_close`: the broadcaster may
//!    have dropped this client as a slow consumer first) and removes the
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
//! should be.

use super::broadcaster::{Inbox, Replay};
use super::conn::{Conn, WriteError};
use super::registry::NickError;
use super::{ServerEvent, Shared};
use crate::protocol::command::HELP;
use crate::protocol::{
    Command, ErrorCode, Frame, FrameReader, Reason, ServerLine, TextError, guest_name,
    text_from_bytes,
};
use crate::silence::SilenceWatch;
use bytes::Bytes;
use crossbeam_channel::bounded;
use std::convert::Infallible;
use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use subtle::ConstantTimeEq;

/// Greeting text at the end of `WELCOME`.
const GREETING: &str = concat!(
    "tickcast ",
    env!("CARGO_PKG_VERSION"),
    " protocol 1; type /help for commands"
);

/// A replay is written in groups of at most this many events (one lock
/// and one vectored write per group), so live broadcasts can slip in
/// between groups instead of waiting for the whole replay.
const REPLAY_GROUP_EVENTS: usize = 64;
const REPLAY_GROUP_BYTES: usize = 256 * 1024;

/// Sends a `PING` to the client.
type Pinger = Box<dyn FnMut() -> io::Result<()> + Send>;

/// Runs one connection's session to its end. `stream` is the reading half;
/// `conn` holds the writing half.
pub(crate) fn run(shared: Arc<Shared>, conn: Arc<Conn>, stream: TcpStream) {
    // `--idle-timeout`: PING after half of it, BYE timeout after all.
    let pinger = Arc::clone(&conn);
    let mut pings: u64 = 0;
    let ping = move || {
        pings += 1;
        let ping = ServerLine::Ping(&pings.to_string()).to_line();
        pinger.send(ping.as_bytes()).map_err(io::Error::from)
    };
    let reader = SilenceWatch::new(stream, shared.config.idle_timeout, Box::new(ping) as Pinger);
    let mut session = Session {
        rate: shared.config.max_rate.map(RateLimiter::new),
        reader: FrameReader::new(reader, shared.config.max_line),
        authed: shared.config.token.is_none(),
        joined: false,
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
    reader: FrameReader<SilenceWatch<Pinger>>,
    /// Whether the client may do more than `/auth` and `/quit`.
    authed: bool,
    /// Whether the client joined (and so must have a `LEAVE`).
    joined: bool,
    /// `--max-rate`, if set.
    rate: Option<RateLimiter>,
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
                    if bytes.is_empty() {
                        continue; // empty lines are ignored
                    }
                    self.line.clear();
                    self.line.extend_from_slice(bytes);
                }
                Ok(Some(Frame::TooLong(_))) => {
                    self.too_long()?;
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
        if self.authed {
            self.join_saying(welcome.as_bytes())
        } else {
            self.send(welcome.as_bytes())
        }
    }

    /// Lists the client and queues its `JOIN`, then writes `line`, all
    /// under the write lock: the client gets `line` before any broadcast.
    fn join_saying(&mut self, line: &[u8]) -> Result<(), End> {
        let conn = Arc::clone(&self.conn);
        let mut writer = conn.lock_writer()?;
        if let Some(name) = self.shared.registry.list(conn.id) {
            self.joined = true;
            self.to_broadcaster(Inbox::Join {
                conn: Arc::clone(&conn),
                name,
            })?;
        }
        writer.write_all(&[line])?;
        Ok(())
    }

    fn too_long(&mut self) -> Result<(), End> {
        if !self.rate_allows() {
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
        if !self.rate_allows() {
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
            self.reader
                .skip_payload(len)
                .map_err(|e| self.read_failed(&e))?;
            self.payload_end()?;
        }
        Ok(())
    }

    fn dispatch(&mut self, command: Command<'_>) -> Result<(), End> {
        let id = self.conn.id;
        match command {
            Command::Say(text) => self.to_broadcaster(Inbox::Say {
                id,
                text: text.to_string(),
            }),
            Command::Nick(name) => self.nick(name),
            Command::List => {
                let names = self.shared.registry.names();
                let names = names.iter().map(String::as_str).collect();
                self.reply(&ServerLine::Users { names })
            }
            Command::Msg { to, text } => self.direct_message(to, text),
            Command::Send { len } => {
                // `len` is at most --max-payload, which fits in memory.
                let mut payload = Vec::new();
                self.reader
                    .read_payload(len as usize, &mut payload)
                    .map_err(|e| self.read_failed(&e))?;
                self.payload_end()?;
                self.to_broadcaster(Inbox::Data { id, payload })
            }
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
                Ok(self.conn.send(&self.out)?)
            }
            Command::Quit(_) => Err(End::Bye(Reason::Quit)),
        }
    }

    fn nick(&mut self, name: &str) -> Result<(), End> {
        match self.shared.registry.rename(self.conn.id, name) {
            Ok(renamed) => {
                if renamed.is_some() {
                    self.to_broadcaster(Inbox::Nick {
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
        match target.send(line.as_bytes()) {
            Ok(()) => self.reply(&ServerLine::Ok {
                what: "msg",
                detail: &name,
            }),
            // Our own socket failed (a message to oneself).
            Err(e) if Arc::ptr_eq(&target, &self.conn) => Err(e.into()),
            Err(e) => {
                self.shared.close_and_announce(&target, e.reason());
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
        // how much of the token was right.
        let good: bool = token.as_bytes().ct_eq(expected.as_bytes()).into();
        if !good {
            return Err(End::Bye(Reason::AuthFailed));
        }
        if self.authed {
            return self.send(ok.as_bytes());
        }
        self.authed = true;
        self.join_saying(ok.as_bytes())
    }

    fn resume(&mut self, after: u64, key: Option<&str>) -> Result<(), End> {
        let (reply, answer) = bounded(1);
        self.to_broadcaster(Inbox::Resume {
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

    /// Writes replayed events in groups; see [`REPLAY_GROUP_EVENTS`].
    fn write_replay(&mut self, events: &[Bytes]) -> Result<(), End> {
        let mut rest = events;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take(REPLAY_GROUP_EVENTS)
                .take_while(|e| {
                    let fits = bytes == 0 || bytes + e.len() <= REPLAY_GROUP_BYTES;
                    bytes += e.len();
                    fits
                })
                .count();
            self.conn.lock_writer()?.write_all(&rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Checks the LF after a payload; anything else breaks the framing.
    fn payload_end(&mut self) -> Result<(), End> {
        match self.reader.read_payload_end() {
            Ok(true) => Ok(()),
            Ok(false) => Err(End::Bye(Reason::ProtocolError)),
            Err(e) => Err(self.read_failed(&e)),
        }
    }

    fn rate_allows(&mut self) -> bool {
        self.rate.as_mut().is_none_or(|r| r.allow(Instant::now()))
    }

    fn to_broadcaster(&self, msg: Inbox) -> Result<(), End> {
        // This waits when the inbox is full: the back-pressure that keeps
        // a flood from using unbounded memory.
        self.shared
            .inbox
            .send(msg)
            .map_err(|_| End::Silent(Reason::Shutdown))
    }

    fn reply(&mut self, line: &ServerLine<'_>) -> Result<(), End> {
        self.out.clear();
        line.encode(&mut self.out);
        Ok(self.conn.send(&self.out)?)
    }

    fn error(&mut self, code: ErrorCode, text: &str) -> Result<(), End> {
        self.reply(&ServerLine::Err { code, text })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), End> {
        Ok(self.conn.send(bytes)?)
    }

    fn read_failed(&self, e: &io::Error) -> End {
        if self.reader.get_ref().expired() {
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

    fn finish(self, end: End) {
        let shared = &self.shared;
        let conn = &self.conn;
        let (reason, bye) = match end {
            End::Bye(reason) => (reason, true),
            End::Silent(reason) => (reason, false),
        };
        let stopping = shared.is_stopping();
        let mut leave = None;
        // At shutdown the server closes the reading side of every socket,
        // which looks like the client closing: leave that connection to
        // the shutdown sequence, which says `BYE shutdown`.
        if !(stopping && reason == Reason::Closed)
            && let Some(was_listed) = shared.registry.claim_close(conn, reason)
        {
            if was_listed && self.joined {
                // A member: the broadcaster delivers what it is owed, says
                // BYE (if any) as the very last line, closes, and tells
                // the others (not at shutdown). A client that closed on its
                // own is owed nothing: close at once. At shutdown the
                // broadcaster is still running: the acceptor stops it only
                // after every session has ended.
                if !bye {
                    conn.close_for(reason);
                }
                leave = Some(Inbox::Leave {
                    id: conn.id,
                    bye: bye.then_some(reason),
                });
            } else {
                if bye {
                    conn.send_last(ServerLine::Bye(reason).to_line().as_bytes());
                }
                conn.close_for(reason);
            }
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

/// `--max-rate`: a token bucket. It holds up to twice the rate in tokens,
/// gains `rate` tokens per second, and every non-empty line takes one. A
/// client can burst twice its rate, then sustain the rate.
struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        RateLimiter {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_allows_a_burst_of_twice_the_rate_then_the_rate() {
        let start = Instant::now();
        let mut r = RateLimiter::new(5);
        r.last = start;
        let allowed = (0..20).filter(|_| r.allow(start)).count();
        assert_eq!(allowed, 10);
        // One second later: five more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..20).filter(|_| r.allow(later)).count();
        assert_eq!(allowed, 5);
    }
}
