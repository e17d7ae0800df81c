//! The machinery behind [`Client`](super::Client): shared state, and one
//! thread per connection ("link") that connects, shakes hands, reads, and
//! reconnects.
//!
//! # A link's life
//!
//! ```text
//!        ┌────────────────────────────────────────────────────────────┐
//!        ▼                                                            │
//!   connect ──► WELCOME ──► handshake ──► read loop ──► lost ──► backoff
//!                          /auth TOKEN                  (EOF, error,
//!                          /resume LAST [KEY]            BYE, silence)
//!                          /nick NAME
//! ```
//!
//! The handshake commands are sent at once, and their replies come back
//! through the same read loop as everything else (see `requests`), so a
//! broadcast that arrives in the middle of the handshake is handled like
//! any other. The link is *ready* when the last handshake reply is in.
//!
//! # Who holds the name
//!
//! A redundant client has two connections, but only one of them carries
//! the name and the commands: the *holder*. When the holder is lost while
//! the other link is up, the other link becomes the holder by sending
//! `/resume LAST KEY` with the lost connection's session key: the server
//! closes the old connection (`BYE replaced`) and renames the survivor.
//! The lost link comes back as the non-holder, under a guest name.
//!
//! # Locks
//!
//! `Inner::core` (the merge and who holds the name) and each link's `out`
//! (its socket's writing half and its queue of pending commands) are
//! separate locks. A thread may take `out` while holding `core`, never the
//! other way round. Events are sent to the application while holding
//! `core`, which is what keeps the two links' deliveries in one order; the
//! channel is unbounded, so that send never blocks.

use super::config::ClientConfig;
use super::error::ClientError;
use super::event::{Closed, Event};
use super::merge::Merge;
use super::requests::{self, NickMode, Pending, Route, route};
use crate::protocol::{Command, ErrorCode, Frame, FrameReader, Reason, ServerLine, parse_digits};
use crate::silence::SilenceWatch;
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// What every thread of one client shares.
pub(crate) struct Inner {
    pub config: ClientConfig,
    pub addrs: Vec<SocketAddr>,
    events: Sender<Event>,
    core: Mutex<Core>,
    links: Vec<Mutex<Option<Out>>>,
    /// Set when the client is closing: links stop reconnecting.
    closing: AtomicBool,
    /// Dropped when the client closes, which wakes every backoff wait.
    stop: Mutex<Option<Sender<()>>>,
    stop_rx: Receiver<()>,
    /// Links still trying; when the last gives up, the client closes.
    alive: AtomicUsize,
    tokens: AtomicU64,
}

/// The writing half of a link's current connection.
pub(crate) struct Out {
    stream: TcpStream,
    pending: VecDeque<Pending>,
}

/// State shared by the links, under one lock.
struct Core {
    merge: Merge,
    /// The name the client wants (config, then every successful `nick`).
    name: Option<String>,
    /// Which link carries the name and the commands.
    holder: Option<usize>,
    /// The session key of the holder's connection: presenting it with
    /// `/resume` takes the name back after a loss.
    holder_key: Option<String>,
    links: Vec<LinkState>,
    /// `Client::connect` waits on this for the first ready link.
    first: Option<Sender<Result<(), ClientError>>>,
    /// The `Closed` event went out.
    closed: bool,
}

#[derive(Debug, Default, Clone)]
struct LinkState {
    up: bool,
    ready: bool,
    key: String,
    name: String,
}

impl Inner {
    pub(crate) fn new(
        config: ClientConfig,
        addrs: Vec<SocketAddr>,
        events: Sender<Event>,
        first: Sender<Result<(), ClientError>>,
    ) -> Self {
        let n = if config.redundant { 2 } else { 1 };
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let name = config.name.clone();
        Inner {
            config,
            addrs,
            events,
            core: Mutex::new(Core {
                merge: Merge::new(n),
                name,
                holder: None,
                holder_key: None,
                links: vec![LinkState::default(); n],
                first: Some(first),
                closed: false,
            }),
            links: (0..n).map(|_| Mutex::new(None)).collect(),
            closing: AtomicBool::new(false),
            stop: Mutex::new(Some(stop)),
            stop_rx,
            alive: AtomicUsize::new(n),
            tokens: AtomicU64::new(0),
        }
    }

    /// Runs `step` on the merge and emits the events it releases, in
    /// order. The caller holds the core lock, so that two links'
    /// deliveries come out in one order.
    fn merged(&self, core: &mut Core, step: impl FnOnce(&mut Merge, &mut Vec<Event>)) {
        let mut out = Vec::new();
        step(&mut core.merge, &mut out);
        for event in out {
            self.emit(event);
        }
    }

    /// Tells the merge that `link` is down (see `Merge::link_lost`).
    fn link_lost(&self, link: usize) {
        let mut core = self.core.lock();
        self.merged(&mut core, |merge, out| merge.link_lost(link, out));
    }

    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    fn emit(&self, event: Event) {
        // Nobody listening is fine: the application dropped its receiver.
        let _ = self.events.send(event);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// A fresh token for `/ping`.
    pub(crate) fn token(&self, what: &str) -> String {
        format!("{what}-{}", self.tokens.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Writes one command (and a payload) on a link, queueing what waits
    /// for its reply. Queueing and writing happen under one lock, so the
    /// queue is in the order the server sees.
    pub(crate) fn send(
        &self,
        link: usize,
        command: &Command<'_>,
        payload: Option<&[u8]>,
        pending: Option<Pending>,
    ) -> Result<(), ClientError> {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        if let Some(payload) = payload {
            bytes.extend_from_slice(payload);
            bytes.push(b'\n');
        }
        self.write(link, &bytes, pending)
    }

    /// Sends `/resume AFTER [KEY]` on a link, and queues what waits for
    /// its replies. `handshake` when it is part of (re)connecting: its
    /// last reply then counts as a handshake step.
    pub(crate) fn send_resume(
        &self,
        link: usize,
        after: u64,
        key: Option<&str>,
        handshake: bool,
    ) -> Result<(), ClientError> {
        let pending = Pending::Resume {
            after,
            keyed: key.is_some(),
            handshake,
        };
        self.send(link, &Command::Resume { after, key }, None, Some(pending))
    }

    /// Writes whole lines on a link; see [`Inner::send`].
    pub(crate) fn write(
        &self,
        link: usize,
        bytes: &[u8],
        pending: Option<Pending>,
    ) -> Result<(), ClientError> {
        let mut out = self.links[link].lock();
        let o = out.as_mut().ok_or(ClientError::NotConnected)?;
        if let Err(e) = o.stream.write_all(bytes) {
            // The connection is broken mid-line: end it; the reader sees
            // that and reconnects.
            let _ = o.stream.shutdown(Shutdown::Both);
            return Err(
                if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut {
                    ClientError::Timeout
                } else {
                    ClientError::Disconnected
                },
            );
        }
        if let Some(p) = pending {
            requests::enqueue(&mut o.pending, p);
        }
        Ok(())
    }

    /// The link application commands go to: the name holder if it is up,
    /// else any link that is up.
    pub(crate) fn primary(&self) -> Result<usize, ClientError> {
        if self.is_closing() {
            return Err(ClientError::Closed);
        }
        let core = self.core.lock();
        if let Some(h) = core.holder.filter(|&h| core.links[h].up) {
            return Ok(h);
        }
        core.links
            .iter()
            .position(|l| l.up)
            .ok_or(ClientError::NotConnected)
    }

    /// The name of the primary connection.
    pub(crate) fn name(&self) -> Option<String> {
        let core = self.core.lock();
        let h = core.holder?;
        core.links[h].up.then(|| core.links[h].name.clone())
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.core.lock().links.iter().any(|l| l.ready)
    }

    /// Stops reconnecting and wakes every link out of its waits and reads.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.stop.lock().take();
    }

    /// Closes the sockets of every link (their readers return).
    pub(crate) fn cut_all(&self) {
        for link in &self.links {
            if let Some(o) = link.lock().as_ref() {
                let _ = o.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// The client stops for good: tell the application once.
    pub(crate) fn close(&self, why: Closed) {
        self.begin_close();
        self.cut_all();
        let mut core = self.core.lock();
        if let Some(first) = core.first.take() {
            let _ = first.send(Err(match why {
                Closed::AuthFailed => ClientError::AuthFailed,
                _ => ClientError::Closed,
            }));
        }
        if !core.closed {
            core.closed = true;
            self.emit(Event::Closed(why));
        }
    }

    /// Fails `Client::connect` with `error`, if it is still waiting.
    fn fail_first(&self, error: ClientError) -> bool {
        match self.core.lock().first.take() {
            Some(first) => {
                let _ = first.send(Err(error));
                true
            }
            None => false,
        }
    }

    /// Opens a TCP connection to the server.
    pub(crate) fn dial(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(ErrorKind::InvalidInput, "no address to connect to");
        for addr in &self.addrs {
            match TcpStream::connect_timeout(addr, self.config.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Sends the keepalive's `/ping`.
type Pinger = Box<dyn FnMut() -> io::Result<()> + Send>;

/// How one connection ended.
enum Ending {
    /// Lost; reconnect. `ready` says whether it got through its handshake;
    /// `bye` is the server's `BYE` reason, if it said one.
    Lost {
        cause: String,
        ready: bool,
        bye: Option<Reason>,
    },
    /// The client must stop.
    Fatal(Closed),
}

/// A link's thread: connect, serve, and reconnect until the client closes
/// or gives up. `first` is the connection `Client::connect` already made.
pub(crate) fn run(inner: Arc<Inner>, link: usize, mut first: Option<TcpStream>) {
    let policy = inner.config.reconnect.clone();
    let mut attempt: u32 = 0;
    loop {
        if inner.is_closing() {
            break;
        }
        // The connection `Client::connect` made: if it fails before it
        // is ready, `connect` reports the failure instead of retrying.
        let initial = first.is_some();
        let ending = match first.take().map_or_else(|| inner.dial(), Ok) {
            Ok(stream) => Connection::serve(&inner, link, stream),
            Err(e) => Ending::Lost {
                cause: format!("cannot connect: {e}"),
                ready: false,
                bye: None,
            },
        };
        // Whatever happened, the merge need not wait for this link.
        inner.link_lost(link);
        match ending {
            Ending::Fatal(why) => {
                inner.close(why);
                break;
            }
            Ending::Lost { cause, ready, bye } => {
                if ready {
                    attempt = 0;
                }
                if inner.is_closing() {
                    break;
                }
                if initial && !ready {
                    let error = match bye {
                        Some(reason) => ClientError::Refused(reason),
                        None => ClientError::Connect(io::Error::other(cause)),
                    };
                    inner.fail_first(error);
                    inner.close(Closed::GaveUp);
                    break;
                }
                inner.emit(Event::Disconnected { link, cause });
            }
        }
        attempt = attempt.saturating_add(1);
        if !policy.enabled || policy.max_attempts.is_some_and(|max| attempt > max) {
            if inner.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
                inner.close(Closed::GaveUp);
            }
            return;
        }
        let delay = policy.delay(attempt, random_unit());
        inner.emit(Event::Reconnecting {
            link,
            attempt,
            delay,
        });
        // Sleeps `delay`, or less if the client closes meanwhile.
        if let Err(RecvTimeoutError::Disconnected) = inner.stop_rx.recv_timeout(delay) {
            break;
        }
    }
}

/// A uniformly random number in `[0, 1)` for jitter.
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// One connection of one link, from `WELCOME` to its end.
struct Connection<'a> {
    inner: &'a Arc<Inner>,
    link: usize,
    /// The server run this connection belongs to.
    epoch: String,
    id: u64,
    /// This connection's name as the server knows it.
    name: String,
    /// Handshake replies still awaited.
    handshake: usize,
    ready: bool,
    bye: Option<Reason>,
}

impl<'a> Connection<'a> {
    fn serve(inner: &'a Arc<Inner>, link: usize, stream: TcpStream) -> Ending {
        let config = &inner.config;
        let setup = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_write_timeout(Some(config.write_timeout)))
            .and_then(|()| stream.try_clone());
        let writer = match setup {
            Ok(writer) => writer,
            Err(e) => {
                return Ending::Lost {
                    cause: e.to_string(),
                    ready: false,
                    bye: None,
                };
            }
        };
        // Register the socket at once, so that closing the client can cut
        // it even while we still wait for WELCOME. The check and the
        // registration share the lock `cut_all` takes: either this sees
        // the client closing, or `cut_all` sees this socket.
        {
            let mut slot = inner.links[link].lock();
            if inner.is_closing() {
                return Ending::Fatal(Closed::Quit);
            }
            *slot = Some(Out {
                stream: writer,
                pending: VecDeque::new(),
            });
        }
        // The keepalive: `/ping` after half of it in silence, give up on
        // the connection after all of it.
        let pinger = Arc::clone(inner);
        let ping = move || {
            let token = pinger.token("keepalive");
            let pending = Pending::Ping {
                token: token.clone(),
                sent: Instant::now(),
                reply: None,
            };
            // If the write fails, the connection is cut and the read ends.
            let _ = pinger.send(link, &Command::Ping(&token), None, Some(pending));
            Ok(())
        };
        let reader = SilenceWatch::new(stream, config.keepalive, Box::new(ping) as Pinger);
        let mut reader = FrameReader::new(reader, config.max_line);
        let mut conn = Connection {
            inner,
            link,
            epoch: String::new(),
            id: 0,
            name: String::new(),
            handshake: 0,
            ready: false,
            bye: None,
        };
        let cause = match conn.greet(&mut reader) {
            Ok(()) => conn.read_loop(&mut reader),
            Err(cause) => cause,
        };
        conn.lost();
        match conn.bye {
            Some(Reason::AuthFailed) => Ending::Fatal(Closed::AuthFailed),
            _ if inner.is_closing() => Ending::Fatal(Closed::Quit),
            Some(reason) => Ending::Lost {
                cause: format!("the server said BYE {reason}"),
                ready: conn.ready,
                bye: Some(reason),
            },
            None => Ending::Lost {
                cause,
                ready: conn.ready,
                bye: None,
            },
        }
    }

    /// Reads `WELCOME`, then starts the handshake.
    fn greet(
        &mut self,
        reader: &mut FrameReader<SilenceWatch<TcpStream, Pinger>>,
    ) -> Result<(), String> {
        let line = match reader.read_line() {
            Ok(Some(Frame::Line(line))) => String::from_utf8_lossy(line).into_owned(),
            Ok(Some(Frame::TooLong(_))) => return Err("the first line is too long".into()),
            Ok(None) => return Err("the server closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        };
        let (id, name, key, epoch) = match ServerLine::parse(&line) {
            Ok(
                welcome @ ServerLine::Welcome {
                    id,
                    name,
                    key,
                    epoch,
                    ..
                },
            ) => {
                self.emit(&welcome);
                (id, name, key, epoch)
            }
            Ok(ServerLine::Bye(reason)) => {
                self.bye = Some(reason);
                self.emit(&ServerLine::Bye(reason));
                return Err(format!("refused: {reason}"));
            }
            _ => return Err(format!("expected WELCOME, got {line:?}")),
        };
        self.epoch = epoch.to_string();
        self.id = id;
        self.name = name.to_string();

        // Decide, under the core lock, what this connection must do.
        let (resume, nick) = {
            let mut core = self.inner.core.lock();
            if let Some(gap) = core.merge.welcome(epoch, self.link) {
                // A new server run: old keys mean nothing there.
                core.holder_key = None;
                self.inner.emit(Event::Gap(gap));
            }
            core.links[self.link] = LinkState {
                up: true,
                ready: false,
                key: key.to_string(),
                name: name.to_string(),
            };
            let holder_lost = core
                .holder
                .is_none_or(|h| h == self.link || !core.links[h].up);
            if holder_lost {
                core.holder = Some(self.link);
            }
            let takeover = if holder_lost {
                core.holder_key.replace(key.to_string())
            } else {
                None
            };
            let resume = core.merge.last().map(|after| (after, takeover));
            let nick = if holder_lost { core.name.clone() } else { None };
            (resume, nick)
        };

        let mut steps: Vec<(Command<'_>, Pending)> = Vec::new();
        let token = self.inner.config.token.clone();
        if let Some(token) = &token {
            steps.push((Command::Auth(token), Pending::Auth));
        }
        if let Some((after, key)) = &resume {
            steps.push((
                Command::Resume {
                    after: *after,
                    key: key.as_deref(),
                },
                Pending::Resume {
                    after: *after,
                    keyed: key.is_some(),
                    handshake: true,
                },
            ));
        }
        if let Some(name) = &nick {
            steps.push((
                Command::Nick(name),
                Pending::Nick {
                    name: name.clone(),
                    reply: None,
                    mode: NickMode::Handshake,
                },
            ));
        }
        self.handshake = steps.len();
        for (command, pending) in steps {
            if let Err(e) = self.inner.send(self.link, &command, None, Some(pending)) {
                return Err(e.to_string());
            }
        }
        if self.handshake == 0 {
            self.become_ready();
        }
        Ok(())
    }

    /// Reads until the connection ends; returns why.
    fn read_loop(&mut self, reader: &mut FrameReader<SilenceWatch<TcpStream, Pinger>>) -> String {
        let mut payload = Vec::new();
        loop {
            // Own the line, so that the reader is free again (a DATA
            // payload is read from it next).
            let max_line = self.inner.config.max_line;
            let read = reader.read_line().map(|frame| match frame {
                Some(Frame::Line(line)) => Some(Ok(String::from_utf8_lossy(line).into_owned())),
                // Too long: all we keep is the SEQ, if it is a broadcast.
                Some(Frame::TooLong(head)) => Some(Err(ServerLine::broadcast_seq(head))),
                None => None,
            });
            let line = match read {
                Ok(Some(Ok(line))) => line,
                Ok(Some(Err(seq))) => {
                    let error = format!("a line longer than {max_line} bytes was skipped");
                    self.unreadable(seq, error);
                    continue;
                }
                Ok(None) => return "the server closed the connection".into(),
                Err(e) if reader.get_ref().expired() => {
                    return format!("no sign of life from the server ({e})");
                }
                Err(e) => return e.to_string(),
            };
            let parsed = match ServerLine::parse(&line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let seq = ServerLine::broadcast_seq(line.as_bytes());
                    self.unreadable(seq, format!("{e}: {line:?}"));
                    continue;
                }
            };
            let mut bytes = Bytes::new();
            if let ServerLine::Data { seq, len, .. } = parsed {
                let too_big = len > self.inner.config.max_payload;
                // `len` is within max_payload, which fits in memory; a
                // payload over it is skipped, keeping the framing.
                let read = if too_big {
                    reader.skip_payload(len)
                } else {
                    reader.read_payload(len as usize, &mut payload)
                };
                if let Err(e) = read {
                    return e.to_string();
                }
                match reader.read_payload_end() {
                    Ok(true) => {}
                    Ok(false) => return "a payload was not followed by a newline".into(),
                    Err(e) => return e.to_string(),
                }
                if too_big {
                    let limit = self.inner.config.max_payload;
                    let error = format!("a payload of {len} bytes is over the limit of {limit}");
                    self.unreadable(Some(seq), error);
                    continue;
                }
                bytes = Bytes::from(std::mem::take(&mut payload));
            }
            self.handle(&parsed, bytes);
        }
    }

    fn handle(&mut self, line: &ServerLine<'_>, payload: Bytes) {
        if line.seq().is_some() {
            let event = Event::from_line(line, self.link, payload);
            if let ServerLine::Nick { old, new, .. } = *line
                && old == self.name
            {
                self.name = new.to_string();
                self.inner.core.lock().links[self.link].name = new.to_string();
            }
            self.offer(event);
            return;
        }
        match *line {
            ServerLine::Welcome { .. } => {}
            ServerLine::Dm { .. } => self.emit(line),
            ServerLine::Ping(token) => {
                let _ =
                    self.inner
                        .send(self.link, &Command::Pong(token), None, Some(Pending::QUIET));
                self.emit(line);
            }
            ServerLine::Bye(reason) => {
                self.bye = Some(reason);
                self.emit(line);
            }
            _ => self.reply(line),
        }
    }

    /// A line that could not be read: say so, and if it was broadcast
    /// event `seq`, let it take its place in the stream as a gap (or the
    /// events after it would wait for it forever).
    fn unreadable(&self, seq: Option<u64>, error: String) {
        self.inner.emit(Event::Unreadable {
            link: self.link,
            error,
        });
        let Some(seq) = seq else {
            return;
        };
        self.to_merge(|merge, out| merge.unreadable(seq, self.link, out));
    }

    /// Hands a broadcast event to the merge, and the application whatever
    /// it can now have.
    fn offer(&self, event: Event) {
        self.to_merge(|merge, out| merge.offer(event, self.link, out));
    }

    /// Runs `step` on the merge, unless this connection's server run is
    /// one the client has moved on from.
    fn to_merge(&self, step: impl FnOnce(&mut Merge, &mut Vec<Event>)) {
        let mut core = self.inner.core.lock();
        if core.merge.epoch() == Some(self.epoch.as_str()) {
            self.inner.merged(&mut core, step);
        }
    }

    /// Another link of this client that is up and through its handshake.
    fn other_ready_link(&self) -> Option<usize> {
        let core = self.inner.core.lock();
        (0..core.links.len()).find(|&j| j != self.link && core.links[j].up && core.links[j].ready)
    }

    /// Hands a line that is not a broadcast event to the application.
    fn emit(&self, line: &ServerLine<'_>) {
        self.inner
            .emit(Event::from_line(line, self.link, Bytes::new()));
    }

    /// Routes a reply to the command that caused it.
    fn reply(&mut self, line: &ServerLine<'_>) {
        let (routed, handshake_resume) = match self.inner.links[self.link].lock().as_mut() {
            Some(out) => {
                let routed = route(&mut out.pending, line);
                let handshake_resume = matches!(
                    out.pending.front(),
                    Some(Pending::Resume {
                        handshake: true,
                        ..
                    })
                );
                (routed, handshake_resume)
            }
            None => (Route::Unclaimed, false),
        };
        match routed {
            Route::Done(pending) => self.complete(pending, line),
            Route::Partial => match *line {
                ServerLine::Err {
                    code: ErrorCode::ResumeGap,
                    text,
                } => {
                    let oldest = text
                        .split(' ')
                        .next()
                        .and_then(|s| parse_digits(s.as_bytes()).ok());
                    // While another link is up, what this replay lacks may
                    // still be on its way there: the `OK resume` hands the
                    // decision to that link (see `complete`).
                    let defer = handshake_resume && self.other_ready_link().is_some();
                    if let Some(oldest) = oldest.filter(|_| !defer) {
                        let mut core = self.inner.core.lock();
                        self.inner
                            .merged(&mut core, |merge, out| merge.lost_before(oldest, out));
                    }
                }
                // The name could not be taken back: the `/nick` that
                // follows the `/resume` reports it.
                ServerLine::Err {
                    code: ErrorCode::NickTaken,
                    ..
                } => {}
                _ => self.emit(line),
            },
            Route::Unclaimed => self.emit(line),
        }
    }

    fn complete(&mut self, pending: Pending, line: &ServerLine<'_>) {
        let outcome = match *line {
            ServerLine::Err { code, text } => Err(ClientError::Server {
                code,
                text: text.to_string(),
            }),
            _ => Ok(()),
        };
        match pending {
            Pending::Quiet { .. } | Pending::Passthrough => self.emit(line),
            Pending::List(reply) => {
                let result = match line {
                    ServerLine::Users { names } => {
                        Ok(names.iter().map(|n| n.to_string()).collect())
                    }
                    _ => outcome.map(|()| Vec::new()),
                };
                let _ = reply.send(result);
            }
            Pending::Ping { sent, reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome.map(|()| sent.elapsed()));
                }
            }
            Pending::Msg(reply) => {
                let _ = reply.send(outcome);
            }
            Pending::Nick { name, reply, mode } => {
                if outcome.is_ok() {
                    // The server renamed this connection (its NICK event
                    // may still be on the way).
                    self.name = name.clone();
                    let mut core = self.inner.core.lock();
                    core.links[self.link].name = name.clone();
                    core.name = Some(name);
                }
                match (mode, reply) {
                    (NickMode::App, Some(reply)) => {
                        let _ = reply.send(outcome);
                    }
                    (NickMode::App, None) => self.emit(line),
                    (NickMode::Handshake | NickMode::Restore, _) => {
                        if let Err(e) = outcome {
                            // Taking the name at the very first connect
                            // failed: `Client::connect` reports it.
                            if !self.inner.fail_first(e) {
                                self.emit(line);
                            }
                        }
                    }
                }
                if mode == NickMode::Handshake {
                    self.handshake_step();
                }
            }
            Pending::Auth => {
                if outcome.is_err() {
                    self.emit(line);
                }
                self.handshake_step();
            }
            Pending::Resume {
                after,
                keyed,
                handshake,
            } => {
                match *line {
                    ServerLine::Ok { detail, .. } => {
                        let last = parse_digits(detail.as_bytes()).unwrap_or(after);
                        let other = handshake.then(|| self.other_ready_link()).flatten();
                        let mut core = self.inner.core.lock();
                        if let Some(other) = other {
                            // A hole left below `last` may be events still
                            // on their way on the other link, which is up:
                            // not a gap yet. Ask that link to resume too;
                            // its replay comes after whatever it has in
                            // flight, and its `OK resume` decides.
                            if let Some(after) = core.merge.last().filter(|&a| a < last) {
                                drop(core);
                                let _ = self.inner.send_resume(other, after, None, false);
                            }
                        } else {
                            self.inner
                                .merged(&mut core, |merge, out| merge.replayed_up_to(last, out));
                        }
                        self.inner.emit(Event::Resumed {
                            link: self.link,
                            after,
                            last,
                        });
                    }
                    // The key expired or was used up: nothing was
                    // replayed. Resume without it; `/nick` takes the name.
                    ServerLine::Err {
                        code: ErrorCode::BadKey,
                        ..
                    } if keyed => {
                        let again = self.inner.send_resume(self.link, after, None, handshake);
                        if again.is_ok() {
                            return; // the handshake step is the retry's
                        }
                    }
                    _ => self.emit(line),
                }
                if handshake {
                    self.handshake_step();
                }
            }
        }
    }

    fn handshake_step(&mut self) {
        self.handshake = self.handshake.saturating_sub(1);
        if self.handshake == 0 && !self.ready {
            self.become_ready();
        }
    }

    fn become_ready(&mut self) {
        self.ready = true;
        let mut core = self.inner.core.lock();
        core.links[self.link].ready = true;
        if let Some(first) = core.first.take() {
            let _ = first.send(Ok(()));
        }
        self.inner.emit(Event::Connected {
            link: self.link,
            id: self.id,
            name: self.name.clone(),
        });
    }

    /// The connection is over: fail what waited on it, and if it carried
    /// the name, hand the name to the other link.
    fn lost(&mut self) {
        // Dropping the queue fails every request that waited on it.
        if let Some(out) = self.inner.links[self.link].lock().take() {
            let _ = out.stream.shutdown(Shutdown::Both);
        }
        let promotion = {
            let mut core = self.inner.core.lock();
            let state = &mut core.links[self.link];
            state.up = false;
            state.ready = false;
            if core.holder != Some(self.link) {
                None
            } else if let Some(other) = (0..core.links.len())
                .find(|&j| j != self.link && core.links[j].up && core.links[j].ready)
            {
                core.holder = Some(other);
                let key = core.links[other].key.clone();
                let lost_key = core.holder_key.replace(key);
                Some((other, core.merge.last(), lost_key, core.name.clone()))
            } else {
                None
            }
        };
        if self.inner.is_closing() {
            return;
        }
        if let Some((other, after, key, name)) = promotion {
            if let Some(after) = after {
                let _ = self.inner.send_resume(other, after, key.as_deref(), false);
            }
            if let Some(name) = name {
                let _ = self.inner.send(
                    other,
                    &Command::Nick(&name),
                    None,
                    Some(Pending::Nick {
                        name: name.clone(),
                        reply: None,
                        mode: NickMode::Restore,
                    }),
                );
            }
        }
    }
}
