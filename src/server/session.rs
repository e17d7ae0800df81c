//! A connection's session: the thread that reads one client's lines and
//! acts on them.
//!
//! Every accepted connection gets its own OS thread (a small one: see
//! `accept`) running [`run`]. Its life:
//!
//! 1. **Greet.** Queue `WELCOME` (it is the first line in the client's
//!    outbox, so it is the first line the client gets). On a server
//!    without a token, the session first waits for the client's first
//!    line, for at most [`JOIN_GRACE`], because a first line `/mirror KEY`
//!    makes the connection a mirror, which never joins (see below). Any
//!    other first line, or none within the grace, and the client is
//!    greeted as if it had not waited. With a token, `WELCOME` goes out at
//!    once: the client cannot join before `/auth` anyway.
//! 2. **Join.** Right after its `WELCOME` is queued (with a token: right
//!    after its `OK auth`), the client is listed, and its `JOIN` handed to
//!    the broadcaster: when a client gets its `WELCOME`, it is listed and
//!    its `JOIN` is queued, as the protocol promises. Nothing can overtake
//!    the greeting: broadcasts start only after the broadcaster has
//!    handled the `JOIN`, and a `DM` needs the name, which is listed only
//!    after the greeting is queued. Nothing here waits while holding a
//!    lock.
//! 3. **Loop.** Read a frame, check it against the limits in a fixed
//!    order, act on it. What the client says to everyone goes to the
//!    broadcaster (chat lines through its inbox, payloads through the
//!    payload lane); replies meant for this client alone (`OK`, `ERR`,
//!    `PONG`, `USERS`…) are queued in its outbox here directly.
//! 4. **End.** The loop ends with a reason. The session then settles who
//!    ends the connection (`Registry::claim`: the flusher may have
//!    dropped this client as a slow consumer first) and removes the
//!    connection from the client map, so that its place is free before
//!    anyone hears its `LEAVE`. For a member, the goodbye goes
//!    through the broadcaster: it delivers every event published before
//!    the client's `LEAVE` (its own last lines included), then the `BYE`,
//!    so that `BYE` really is the last line. A connection that never
//!    joined gets its `BYE` from the session directly.
//!
//! The checks and the commands shared with HTTP streams live in
//! `command` ([`Client`]); this file holds what only a TCP connection
//! has: reading frames, `/send` payloads, `/resume`, `/auth`, `/mirror`,
//! and the end.
//!
//! # Mirrors
//!
//! A client that keeps two connections to one server for redundancy (the
//! client library's `redundant` mode) must appear once: in `/list`, in the
//! `TICK`'s count, in `JOIN` and `LEAVE`. So its second connection says
//! `/mirror KEY` as its first line, KEY being the session key from its
//! first connection's `WELCOME`. That connection becomes a *mirror*: never
//! listed, counted or announced, it gets `OK mirror NAME` and then every
//! broadcast event, from the next one on, through the same delivery as
//! the members. It may only keep itself alive and catch up (`/ping`,
//! `/pong`, `/resume SEQ`) and `/quit`; it counts against the connection
//! limits and is dropped as a slow consumer like anyone. A KEY that names
//! no open connection here joins the client as usual, then says
//! `ERR bad-key`. This is why a new client's `WELCOME` waits for its first
//! line: the server cannot know before it whether the connection is a
//! client of its own or a mirror, and a client of its own must be listed
//! by the time it is welcomed.
//!
//! With a token, the mirror's `/mirror KEY` must come in the same write as
//! its `/auth TOKEN` (the client library sends both at once): if the next
//! line is already in the reader's buffer when `/auth` is handled and it
//! is `/mirror KEY`, the client is not joined after its `OK auth`; that
//! line is handled next, as above. The server does not wait for it.
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
//! to [`LIST_BYTES_PER_SECOND`](super::command::LIST_BYTES_PER_SECOND)
//! per connection, so that a short request cannot make the server send
//! megabytes.
//!
//! A first line that is an HTTP request line (`GET / HTTP/1.1`: a browser
//! or curl pointed at the wrong port) is answered `ERR unknown-command`
//! with where the web page is, then `BYE protocol-error`.
//!
//! # Time limits
//!
//! A line or payload once started must be finished within
//! `--line-timeout` (`BYE timeout` otherwise), and `--idle-timeout` drops a
//! silent client after a `PING` it did not answer (see `silence`).

use super::broadcaster::{Inbox, Replay};
use super::command::{Client, End, Outcome, ToOutbox};
use super::conn::{Conn, ReadHalf};
use super::rate::AUTH_FAIL_DELAY;
use super::registry::Claim;
use super::{ServerEvent, Shared};
use crate::protocol::frame::IAC;
use crate::protocol::{
    Command, ErrorCode, Frame, FrameReader, Reason, ServerLine, Telnet, guest_name,
    text_from_bytes, tokens_match,
};
use crate::silence::{Pinger, SilenceWatch};
use bytes::Bytes;
use crossbeam_channel::bounded;
use std::convert::Infallible;
use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Greeting text at the end of `WELCOME`.
/// The `WELCOME` line of a new connection, TCP or event stream.
pub(crate) fn welcome_line(conn: &Conn, epoch: &str) -> String {
    ServerLine::Welcome {
        id: conn.id.0,
        name: &guest_name(conn.id.0),
        time: SystemTime::now(),
        key: &conn.key,
        epoch,
        text: GREETING,
    }
    .to_line()
}

pub(crate) const GREETING: &str = concat!(
    "tickcast ",
    env!("CARGO_PKG_VERSION"),
    " protocol 1; type /help for commands"
);

/// A replay is queued in pieces of at most this many bytes, each once the
/// client has taken most of the one before (so a long replay never fills
/// the outbox past `--max-pending`), and live broadcasts slip in between.
const REPLAY_PIECE_BYTES: usize = 256 * 1024;

/// How long a `/send` waits for its share of `--max-memory` before it is
/// refused.
pub(crate) const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// How long a new client's `WELCOME` waits for its first line, on a
/// server without a token (see the module docs): long enough for a client
/// library's `/mirror`, sent as soon as it has connected, to arrive; short
/// enough that a person with `nc` sees no wait. A client that says
/// something at once is greeted at once.
pub(crate) const JOIN_GRACE: Duration = Duration::from_millis(100);

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
    let mut session = Session {
        reader: FrameReader::new(reader, config.max_line)
            .with_telnet()
            .release_when_idle(),
        state: State::Outside,
        first_line: true,
        line: Vec::new(),
        held: Vec::new(),
        welcome_by: None,
        mirror_name: None,
        refused_mirror: false,
        client: Client::new(shared, conn),
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
    // `WELCOME` is the first line of every connection the limits let in,
    // even one that ends before its first line: the server shutting down,
    // or a `BYE`.
    let server_ends = matches!(end, End::Bye(_)) || session.client.shared.is_stopping();
    if session.state == State::Unwelcomed && server_ends {
        let _ = session.welcome();
    }
    let joined = matches!(session.state, State::Member | State::Mirror);
    finish(&mut session.client, joined, end);
}

struct Session {
    client: Client,
    reader: Reader,
    /// Whether the client has joined, is about to, or is a mirror.
    state: State,
    /// Whether no line has been read yet (see [`looks_like_http`]).
    first_line: bool,
    /// A copy of the line being handled (the reader's buffer is needed
    /// again to read a payload).
    line: Vec<u8>,
    /// Answers to telnet commands that came before the `WELCOME`: they go
    /// out right after it, so that `WELCOME` starts the stream (at most
    /// [`HELD_MAX`] bytes: more, and the client is welcomed at once).
    held: Vec<u8>,
    /// When an unwelcomed client is welcomed whatever it sends meanwhile
    /// ([`JOIN_GRACE`] after it connected): a stream of telnet chatter,
    /// which is no first line, must not keep it waiting.
    welcome_by: Option<Instant>,
    /// A first line `/mirror KEY` with a good KEY: the name of the
    /// connection it mirrors, for its `OK mirror` (see `claim_mirror`).
    mirror_name: Option<(String, super::ClientId)>,
    /// A first line `/mirror KEY` with a bad KEY: the client joined, and
    /// gets `ERR bad-key` when the line is handled.
    refused_mirror: bool,
}

/// The most telnet answers held back for the `WELCOME`, in bytes.
const HELD_MAX: usize = 64;

/// Where a session's client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not welcomed yet: waiting for the first line (at most
    /// [`JOIN_GRACE`]: the reader's alarm is set for then).
    Unwelcomed,
    /// Not joined: not authenticated yet, or closed before it could join.
    Outside,
    /// Welcomed (and authenticated), not joined: the line being handled,
    /// or the next one, is `/mirror KEY`. The client joins after it
    /// unless it made a mirror.
    Waiting,
    /// Joined: listed and announced, so it must have a `LEAVE`.
    Member,
    /// A mirror: the broadcaster delivers to it, nobody announces it.
    Mirror,
}

impl Session {
    fn serve(&mut self) -> Result<Infallible, End> {
        self.greet()?;
        loop {
            if self.state == State::Unwelcomed
                && self.welcome_by.is_some_and(|by| Instant::now() >= by)
            {
                self.join_as_client()?;
            }
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
                    self.first_line = false;
                    // A first line, however long, is no `/mirror`.
                    self.join_as_client()?;
                    self.too_long()?;
                    // The rest of the line, up to its LF, is read and
                    // dropped now, so that its end is a frame's end (and
                    // `--line-timeout` stops counting there).
                    self.reader
                        .skip_rest_of_line()
                        .map_err(|e| self.read_failed(&e))?;
                    self.frame_done();
                    continue;
                }
                Ok(Some(Frame::Telnet(command))) => {
                    self.telnet(command)?;
                    continue;
                }
                Ok(None) => return Err(End::Silent(Reason::Closed)),
                Err(e) => {
                    // No line within the grace: the client is welcomed and
                    // joins, and the reader goes on (with any part of a
                    // line it holds).
                    if self.reader.get_mut().take_alarm() {
                        self.join_as_client()?;
                        continue;
                    }
                    return Err(self.read_failed(&e));
                }
            }
            // The first line: the client is welcomed now, and joins before
            // the line is handled, unless it asks to be a mirror.
            if self.state == State::Unwelcomed {
                // A good KEY is checked (and the connection marked a mirror)
                // before the WELCOME: a connection welcomed as a client is
                // listed by then, one with a bad KEY too.
                let line = std::mem::take(&mut self.line);
                let mirroring = self.claim_mirror(&line);
                self.line = line;
                if mirroring {
                    self.welcome()?;
                    self.state = State::Waiting;
                } else {
                    self.join()?;
                }
            }
            let waiting = self.state == State::Waiting;
            if std::mem::take(&mut self.first_line) && looks_like_http(&self.line) {
                return Err(self.not_http());
            }
            let line = std::mem::take(&mut self.line);
            let result = self.handle_line(&line);
            self.line = line;
            result?;
            // A `/mirror` that made no mirror (refused by a limit): the
            // client joins after it.
            if waiting {
                self.join_as_client()?;
            }
        }
    }

    /// With a token: `WELCOME` at once. Without: wait for the first line
    /// (at most [`JOIN_GRACE`]), which decides how the client is greeted
    /// (see [`Session::serve`]).
    fn greet(&mut self) -> Result<(), End> {
        if !self.client.authed {
            return self.welcome();
        }
        self.state = State::Unwelcomed;
        let alarm = Instant::now() + JOIN_GRACE;
        self.welcome_by = Some(alarm);
        self.reader.get_mut().set_alarm(Some(alarm));
        Ok(())
    }

    /// Queues `WELCOME`, then whatever was held back for it.
    fn welcome(&mut self) -> Result<(), End> {
        self.reader.get_mut().set_alarm(None);
        if self.state == State::Unwelcomed {
            self.state = State::Outside;
        }
        let conn = &self.client.conn;
        conn.send_line(welcome_line(conn, &self.client.shared.epoch.get()).as_bytes())?;
        if !self.held.is_empty() {
            conn.reply(&std::mem::take(&mut self.held))?;
        }
        Ok(())
    }

    /// The client is no mirror: welcome it, if it waits for that, and
    /// have it join, if it waits for that.
    fn join_as_client(&mut self) -> Result<(), End> {
        if self.state == State::Unwelcomed {
            return self.join();
        }
        if self.state == State::Waiting {
            self.join()?;
        }
        Ok(())
    }

    /// Lists the client and hands its `JOIN` to the broadcaster. Its
    /// greeting (`WELCOME`, or `OK auth`) is already queued, so it comes
    /// first.
    fn join(&mut self) -> Result<(), End> {
        self.join_greeted(None)
    }

    /// Lists the client, then queues its greeting: its `WELCOME` if it has
    /// none yet, and `ok_auth` if given; then hands its `JOIN` to the
    /// broadcaster. Listed first, because the contract says a client that
    /// gets its `WELCOME` (or `OK auth`) is listed; greeted before any `DM`
    /// can reach it (`Registry::greeted`) or any broadcast (the `JOIN`).
    fn join_greeted(&mut self, ok_auth: Option<&str>) -> Result<(), End> {
        let conn = Arc::clone(&self.client.conn);
        let registry = &self.client.shared.registry;
        let unwelcomed = self.state == State::Unwelcomed;
        let greets = unwelcomed || ok_auth.is_some();
        let listed = if greets {
            registry.list_before_greeting(conn.id)
        } else {
            registry.list(conn.id)
        };
        if unwelcomed {
            self.welcome()?;
        }
        if let Some(ok) = ok_auth {
            conn.reply(ok.as_bytes())?;
        }
        self.client.shared.registry.greeted(conn.id);
        self.state = State::Outside;
        if let Some(name) = listed {
            self.state = State::Member;
            self.client.hand_over(Inbox::Join {
                conn,
                name,
                stream: None,
            })?;
        }
        Ok(())
    }

    /// `/mirror KEY`: as the first line, makes this connection a mirror of
    /// the one whose session key is KEY (see the module docs). Its
    /// `WELCOME` is queued already. A bad KEY: the client joins, then gets
    /// `ERR bad-key`.
    fn mirror(&mut self, key: &str) -> Result<(), End> {
        let _ = key; // checked before the greeting, by `claim_mirror`
        if std::mem::take(&mut self.refused_mirror) {
            let text = "that key matches no open connection on this server; \
                        you join as a client of your own";
            return self.client.error(&mut ToOutbox, ErrorCode::BadKey, text);
        }
        let Some((name, of)) = self
            .mirror_name
            .take()
            .filter(|_| self.state == State::Waiting)
        else {
            let text = "/mirror must be the first line";
            return self.client.error(&mut ToOutbox, ErrorCode::BadArgs, text);
        };
        let conn = Arc::clone(&self.client.conn);
        self.state = State::Mirror;
        self.client.mirror = true;
        // The broadcaster says `OK mirror` itself, in the step that makes
        // the mirror: every event numbered after that line is the mirror's.
        // Wait for it, so that replies keep the order of the commands.
        let (made, done) = bounded(1);
        self.client.hand_over(Inbox::Mirror {
            conn,
            name,
            of,
            made,
        })?;
        let _ = done.recv();
        Ok(())
    }

    /// If `line` is `/mirror KEY` with the KEY of an open connection here,
    /// marks this connection a mirror of it (in the client map) and keeps
    /// that connection's name for the `OK mirror`: `true`. A `/mirror`
    /// with a bad KEY is remembered for its `ERR bad-key`.
    fn claim_mirror(&mut self, line: &[u8]) -> bool {
        let Some(key) = mirror_key(line) else {
            return false;
        };
        let id = self.client.conn.id;
        self.mirror_name = self.client.shared.registry.mirror(id, &key);
        self.refused_mirror = self.mirror_name.is_none();
        self.mirror_name.is_some()
    }

    /// An HTTP request on the line port: say where HTTP is, and close.
    fn not_http(&mut self) -> End {
        let text = match self.client.shared.http_addr {
            Some(addr) => format!(
                "this port speaks the tickcast line protocol, not HTTP; \
                 the web page is at http://{addr}/"
            ),
            None => "this port speaks the tickcast line protocol, not HTTP \
                     (see docs/PROTOCOL.md)"
                .to_string(),
        };
        let _ = self
            .client
            .error(&mut ToOutbox, ErrorCode::UnknownCommand, &text);
        End::Bye(Reason::ProtocolError)
    }

    /// Answers a telnet command (see `protocol::frame`): refuses every
    /// option, except that it confirms a TIMING-MARK (telnet shows nothing
    /// until it is confirmed); Ctrl-C and its kin mean the user is leaving.
    fn telnet(&mut self, command: Telnet) -> Result<(), End> {
        // Telnet's chatter is not a first line: its answers wait for the
        // `WELCOME` (see `held`), unless the user is leaving.
        if self.state == State::Unwelcomed
            && matches!(command, Telnet::Command(c) if Telnet::STOPS.contains(&c))
        {
            self.join_as_client()?;
        }
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
                self.client.conn.reply(&[IAC, WILL, Telnet::TIMING_MARK])?;
                return Err(End::Bye(Reason::Quit));
            }
            Telnet::Wont(_) | Telnet::Dont(_) | Telnet::Command(_) => None,
        };
        match answer {
            Some(bytes) if self.state == State::Unwelcomed => {
                self.held.extend_from_slice(&bytes);
                if self.held.len() >= HELD_MAX {
                    self.join_as_client()?;
                }
                Ok(())
            }
            Some(bytes) => Ok(self.client.conn.reply(&bytes)?),
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
        let client = &mut self.client;
        client
            .conn
            .lines_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !client.rate_allows(1.0) {
            let text = client.rate_text();
            return client.error(&mut ToOutbox, ErrorCode::RateLimited, &text);
        }
        if !client.authed {
            let text = "send /auth TOKEN first";
            return client.error(&mut ToOutbox, ErrorCode::AuthRequired, text);
        }
        let max = client.shared.config.max_line;
        client.error(
            &mut ToOutbox,
            ErrorCode::LineTooLong,
            &format!("a line may hold at most {max} bytes; it was dropped"),
        )
    }

    fn handle_line(&mut self, bytes: &[u8]) -> Result<(), End> {
        match self.client.line(bytes, &mut ToOutbox)? {
            Outcome::Done | Outcome::Refused { send_len: None } => Ok(()),
            Outcome::Refused {
                send_len: Some(len),
            } => self.skip_payload(len),
            Outcome::Send(len) => self.payload(len),
            Outcome::Resume { after, key } => self.resume(after, key),
            Outcome::Auth(token) => self.auth(token),
            Outcome::Mirror(key) => self.mirror(key),
            Outcome::Quit => Err(End::Bye(Reason::Quit)),
        }
    }

    /// Skips the payload of a refused `/send`, so the framing holds.
    fn skip_payload(&mut self, len: u64) -> Result<(), End> {
        self.reader.get_mut().allow_payload(len);
        self.reader
            .skip_payload(len)
            .map_err(|e| self.read_failed(&e))?;
        self.payload_end(len)
    }

    /// Reads a `/send` payload, within the memory budget, and hands it to
    /// the broadcaster's payload lane.
    fn payload(&mut self, len: u64) -> Result<(), End> {
        // `len` is at most --max-payload, which is at most --max-memory.
        let deadline = Instant::now() + BUDGET_WAIT;
        let Some(reservation) = self.client.shared.budget.reserve(len as usize, deadline) else {
            let text =
                "the server is busy with other payloads; this one was dropped, send it again";
            self.client
                .error(&mut ToOutbox, ErrorCode::RateLimited, text)?;
            return self.skip_payload(len);
        };
        self.reader.get_mut().allow_payload(len);
        let mut bytes = Vec::new();
        self.reader
            .read_payload(len as usize, &mut bytes)
            .map_err(|e| self.read_failed(&e))?;
        self.payload_end(len)?;
        self.client.publish_payload(bytes, reservation)
    }

    fn auth(&mut self, token: &str) -> Result<(), End> {
        let client = &mut self.client;
        let ok = ServerLine::Ok {
            what: "auth",
            detail: "",
        }
        .to_line();
        let Some(expected) = &client.shared.config.token else {
            return Ok(client.conn.reply(ok.as_bytes())?);
        };
        // Constant time: how long the comparison takes says nothing about
        // how much of the token was right. An address locked out for too
        // many failures fails whatever it sends.
        let ip = client.conn.peer.ip().to_canonical();
        let failures = &client.shared.auth_failures;
        let good = tokens_match(token.as_bytes(), expected.as_bytes());
        if !good || failures.locked(ip, Instant::now()) {
            // The right token from a locked-out address is refused but not
            // counted: it does not make the lockout last longer.
            if !good {
                failures.record(ip, Instant::now());
            }
            client.shared.counters.count_refused(Reason::AuthFailed);
            // A guess costs the guesser time.
            std::thread::sleep(AUTH_FAIL_DELAY);
            return Err(End::Bye(Reason::AuthFailed));
        }
        if client.authed {
            return Ok(client.conn.reply(ok.as_bytes())?);
        }
        client.authed = true;
        // Listed at once, unless the very next line, sent with this one,
        // is `/mirror KEY` (see the module docs): it is handled next, and
        // the client joins after it unless it made a mirror.
        let next = next_buffered_line(self.reader.buffered()).map(<[u8]>::to_vec);
        if next.is_some_and(|line| self.claim_mirror(&line)) {
            self.client.conn.reply(ok.as_bytes())?;
            self.state = State::Waiting;
            return Ok(());
        }
        self.join_greeted(Some(&ok))
    }

    fn resume(&mut self, after: u64, key: Option<&str>) -> Result<(), End> {
        let (reply, answer) = bounded(1);
        self.client.hand_over(Inbox::Resume {
            conn: Arc::clone(&self.client.conn),
            after,
            key: key.map(str::to_string),
            reply,
        })?;
        // The broadcaster answers every request; it stops only after every
        // session has ended.
        let replay = match answer.recv() {
            Ok(Ok(replay)) => replay,
            Ok(Err((code, text))) => return self.client.error(&mut ToOutbox, code, &text),
            Err(_) => return Err(End::Silent(Reason::Shutdown)),
        };
        let Replay {
            nick_taken,
            gap,
            events,
            last,
        } = replay;
        if let Some(name) = nick_taken {
            let text = format!("{name} is taken by another client; the replay goes on");
            self.client
                .error(&mut ToOutbox, ErrorCode::NickTaken, &text)?;
        }
        if let Some(oldest) = gap {
            self.client
                .error(&mut ToOutbox, ErrorCode::ResumeGap, &oldest.to_string())?;
        }
        self.write_replay(&events)?;
        let last = last.to_string();
        let ok = ServerLine::Ok {
            what: "resume",
            detail: &last,
        };
        self.client.reply(&mut ToOutbox, &ok)
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
            let config = &self.client.shared.config;
            let deadline = Instant::now() + config.write_timeout;
            let conn = &self.client.conn;
            conn.wait_for_room(config.max_pending / 2, deadline);
            conn.send(&rest[..n])?;
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
                let found = match next {
                    Some(b) if b.is_ascii_graphic() || b == b' ' => format!("{:?}", b as char),
                    Some(b) => format!("0x{b:02x}"),
                    None => "another byte".to_string(),
                };
                let text = format!(
                    "/send {len} declared {len} bytes, but byte {} was {found} instead of LF; \
                     the framing is lost",
                    len + 1
                );
                let _ = self.client.error(&mut ToOutbox, ErrorCode::BadArgs, &text);
                Err(End::Bye(Reason::ProtocolError))
            }
            Err(e) => Err(self.read_failed(&e)),
        }
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
}

/// Ends a connection (a TCP session's, or an event stream's) for `end`:
/// settles who ends it, has its `LEAVE` announced and its `BYE` said, and
/// frees its place in the client map.
pub(crate) fn finish(client: &mut Client, joined: bool, end: End) {
    let (reason, bye) = match end {
        End::Bye(reason) => (reason, true),
        End::Silent(reason) => (reason, false),
    };
    // Our last payload goes out before our `LEAVE`.
    let _ = client.wait_for_published();
    let shared = &client.shared;
    let conn = &client.conn;
    let mut leave = None;
    // At shutdown the server closes the reading side of every socket,
    // which looks like the client closing: leave that connection to
    // the shutdown sequence, which says `BYE shutdown`.
    let claim = if shared.is_stopping() && reason == Reason::Closed {
        Claim::Lost
    } else {
        shared.registry.claim(conn, reason)
    };
    let bye_line = || [conn.wire.bye(reason)];
    match claim {
        Claim::Listed | Claim::Mirror if joined => {
            // A member: the broadcaster queues what it is owed, then
            // the BYE (if any) as the very last line, and tells the
            // others (not at shutdown, and never of a mirror). A client
            // that closed on its own is owed nothing: close at once. At
            // shutdown the broadcaster is still running: the acceptor
            // stops it only after every session has ended.
            if !bye {
                conn.close_for(reason);
            }
            leave = Some(Inbox::Leave {
                id: conn.id,
                bye: bye.then_some(reason),
            });
        }
        Claim::Listed | Claim::Unlisted | Claim::Mirror if bye => conn.finish(&bye_line()),
        Claim::Listed | Claim::Unlisted | Claim::Mirror => conn.close_for(reason),
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

/// The complete line at the start of `buffered` (without its LF or a CR
/// before it), if there is one.
fn next_buffered_line(buffered: &[u8]) -> Option<&[u8]> {
    let end = buffered.iter().position(|&b| b == b'\n')?;
    let line = &buffered[..end];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// The KEY of a well-formed `/mirror KEY` line.
fn mirror_key(line: &[u8]) -> Option<String> {
    match text_from_bytes(line).map(Command::parse) {
        Ok(Ok(Some(Command::Mirror(key)))) => Some(key.to_string()),
        _ => None,
    }
}

/// Whether a line is an HTTP request line (`GET / HTTP/1.1`): a method
/// word in capitals, a target, and the HTTP version.
fn looks_like_http(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split(' ');
    let (Some(method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    is_method && (version == "HTTP/1.0" || version == "HTTP/1.1")
}

#[cfg(test)]
mod tests {
    use super::looks_like_http;

    #[test]
    fn http_request_lines_are_recognised() {
        for yes in [
            "GET / HTTP/1.1",
            "POST /notify HTTP/1.0",
            "OPTIONS * HTTP/1.1",
        ] {
            assert!(looks_like_http(yes.as_bytes()), "{yes}");
        }
        for no in [
            "GET / HTTP/2",
            "get / HTTP/1.1",
            "hello HTTP/1.1",
            "GET  HTTP/1.1 x",
        ] {
            assert!(!looks_like_http(no.as_bytes()), "{no}");
        }
    }
}
