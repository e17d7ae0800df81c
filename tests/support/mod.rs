//! Shared helpers for the integration tests: start a server on
//! `127.0.0.1:0`, and talk to it with a raw protocol client whose every
//! wait is bounded.
//!
//! The contract lets replies (`OK`, `ERR`, `PONG`…) and broadcast events
//! (`MSG`, `JOIN`…) interleave in any order, so [`Raw`] sorts what it reads
//! into two queues: [`Raw::reply`] returns the next reply, [`Raw::event`]
//! the next broadcast event, whichever arrived first on the wire.
#![allow(dead_code)]

pub mod http;
pub mod process;
pub mod proxy;
pub mod redis;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tickcast::server::{self, Config, ServerHandle};

/// The longest any test waits for something that should happen. Generous,
/// so that a loaded two-core machine passes; a hang fails instead of
/// stalling the suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// Test defaults: no periodic tick (it would interleave with everything),
/// a write timeout short enough to keep slow-consumer tests quick.
pub fn config() -> Config {
    Config {
        tick: None,
        write_timeout: Duration::from_millis(1000),
        ..Config::default()
    }
}

/// Starts a server on a free loopback port.
pub fn start(config: Config) -> ServerHandle {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    server::spawn_on(listener, config).expect("start server")
}

/// What `WELCOME` said.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub id: u64,
    pub name: String,
    pub time: String,
    pub key: String,
    pub epoch: String,
}

/// A broadcast event as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The line, without its LF.
    pub line: String,
    /// For `DATA`, the payload.
    pub payload: Option<Vec<u8>>,
}

impl Event {
    pub fn seq(&self) -> u64 {
        self.line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SEQ in {:?}", self.line))
    }

    pub fn verb(&self) -> &str {
        self.line.split(' ').next().unwrap_or("")
    }

    /// The line with its SEQ replaced by `#`, for comparing across clients
    /// and runs.
    pub fn shape(&self) -> String {
        let mut fields: Vec<&str> = self.line.splitn(3, ' ').collect();
        if fields.len() > 1 {
            fields[1] = "#";
        }
        fields.join(" ")
    }
}

const BROADCAST_VERBS: [&str; 6] = ["MSG", "DATA", "JOIN", "NICK", "LEAVE", "TICK"];

/// A raw protocol client.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    replies: VecDeque<String>,
    events: VecDeque<Event>,
    /// The start of a line whose end had not arrived when a bounded read
    /// timed out ([`Raw::try_reply_within`] and the like); the next read
    /// goes on from it.
    partial: Vec<u8>,
    eof: bool,
    pub welcome: Option<Welcome>,
}

/// What one bounded read off the wire gave.
enum Got {
    /// A line (and its payload) went into one of the queues.
    Item,
    /// The server closed the connection.
    Eof,
    /// Nothing complete before the deadline.
    TimedOut,
}

impl Raw {
    /// Connects and reads `WELCOME`.
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect_bare(addr);
        let line = raw.reply();
        raw.welcome = Some(parse_welcome(&line));
        raw
    }

    /// Connects, sends `line` at once (before the `WELCOME`, so that the
    /// server need not wait for a first line), and reads the `WELCOME`.
    pub fn connect_saying(addr: SocketAddr, line: &str) -> Raw {
        let mut raw = Raw::connect_bare(addr);
        raw.line(line);
        raw.read_welcome();
        raw
    }

    /// Reads the `WELCOME` of a connection made with `connect_bare`.
    pub fn read_welcome(&mut self) -> &Welcome {
        let line = self.reply();
        self.welcome.insert(parse_welcome(&line))
    }

    /// Connects without reading anything.
    pub fn connect_bare(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        Raw::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Raw {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            replies: VecDeque::new(),
            events: VecDeque::new(),
            partial: Vec::new(),
            eof: false,
            welcome: None,
        }
    }

    pub fn welcome(&self) -> &Welcome {
        self.welcome.as_ref().expect("no WELCOME read")
    }

    pub fn name(&self) -> &str {
        &self.welcome().name
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.write_all(bytes.as_ref()).expect("send");
    }

    /// Sends one line (an LF is appended).
    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\n"));
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Reads one item off the wire into the queues. `false` at end of stream.
    fn read_one(&mut self, deadline: Instant) -> bool {
        match self.read_until_deadline(deadline) {
            Got::Item => true,
            Got::Eof => false,
            Got::TimedOut => panic!("timed out waiting for the server"),
        }
    }

    /// Reads one item off the wire into the queues, or gives up at
    /// `deadline` (keeping any part of a line read so far).
    fn read_until_deadline(&mut self, deadline: Instant) -> Got {
        if self.eof {
            return Got::Eof;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Got::TimedOut;
        }
        self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
        match self.reader.read_until(b'\n', &mut self.partial) {
            Ok(0) => {
                self.eof = true;
                return Got::Eof;
            }
            Ok(_) if self.partial.last() != Some(&b'\n') => {
                // Zero bytes is end of stream; a line without its LF means
                // the stream ended inside it.
                panic!("line without LF at end of stream: {:?}", self.partial);
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => {
                self.eof = true;
                return Got::Eof;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Got::TimedOut;
            }
            Err(e) => panic!("read failed: {e} (after {:?})", self.partial),
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.pop();
        let line = String::from_utf8(buf).expect("server lines are UTF-8");
        let verb = line.split(' ').next().unwrap_or("");
        if BROADCAST_VERBS.contains(&verb) {
            let payload = (verb == "DATA").then(|| {
                let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                let mut payload = vec![0; len + 1];
                self.reader.read_exact(&mut payload).expect("DATA payload");
                assert_eq!(
                    payload.pop(),
                    Some(b'\n'),
                    "DATA payload not followed by LF"
                );
                payload
            });
            self.events.push_back(Event { line, payload });
        } else {
            self.replies.push_back(line);
        }
        Got::Item
    }

    /// The next reply (any line that is not a broadcast event).
    pub fn reply(&mut self) -> String {
        self.reply_within(WAIT)
    }

    /// The next reply, waiting at most `limit` (panics past it).
    pub fn reply_within(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.replies.pop_front() {
                return r;
            }
            assert!(
                self.read_one(deadline),
                "connection closed while waiting for a reply"
            );
        }
    }

    /// The next broadcast event.
    pub fn event(&mut self) -> Event {
        self.event_within(WAIT)
    }

    /// The next broadcast event, waiting at most `limit` (panics past it).
    pub fn event_within(&mut self, limit: Duration) -> Event {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            assert!(
                self.read_one(deadline),
                "connection closed while waiting for an event (replies: {:?})",
                self.replies
            );
        }
    }

    /// The next broadcast event's line.
    pub fn event_line(&mut self) -> String {
        self.event().line
    }

    /// Skips broadcast events until one whose line starts with `prefix`.
    pub fn event_starting(&mut self, prefix: &str) -> Event {
        self.event_starting_within(prefix, WAIT)
    }

    /// Like [`Raw::event_starting`], waiting at most `limit`.
    pub fn event_starting_within(&mut self, prefix: &str, limit: Duration) -> Event {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(e) = self.events.pop_front() {
                if e.line.starts_with(prefix) {
                    return e;
                }
            }
            assert!(
                self.read_one(deadline),
                "closed while waiting for {prefix:?}"
            );
        }
    }

    /// Reads until the server closes the connection; returns every reply
    /// and event line not yet taken, in arrival order per kind.
    pub fn until_closed(&mut self) -> (Vec<String>, Vec<Event>) {
        self.until_closed_within(WAIT)
    }

    /// Like [`Raw::until_closed`], waiting at most `limit` for the close.
    pub fn until_closed_within(&mut self, limit: Duration) -> (Vec<String>, Vec<Event>) {
        let deadline = Instant::now() + limit;
        loop {
            match self.read_until_deadline(deadline) {
                Got::Item => {}
                Got::Eof => break,
                Got::TimedOut => panic!(
                    "the server did not close the connection within {limit:?} \
                     (replies: {:?}, events: {:?})",
                    self.replies, self.events
                ),
            }
        }
        (
            self.replies.drain(..).collect(),
            self.events.drain(..).collect(),
        )
    }

    /// Reads raw bytes until the server closes the connection, without
    /// parsing them (a dropped client may be cut off mid-frame).
    pub fn drain_to_eof(&mut self) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut total = 0;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the server did not close the connection");
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Everything the server sends from here to the end of the stream, as
    /// raw bytes (for checking what the very last line is).
    pub fn rest(&mut self) -> Vec<u8> {
        assert!(
            self.replies.is_empty() && self.events.is_empty(),
            "lines already queued: {:?} {:?}",
            self.replies,
            self.events
        );
        self.reader.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        let mut all = Vec::new();
        self.reader.read_to_end(&mut all).expect("read to the end");
        all
    }

    /// Asserts that nothing is waiting right now: sends `/ping MARK` and
    /// checks that `PONG MARK` is the next reply and no event came first.
    pub fn assert_quiet(&mut self, mark: &str) {
        self.line(&format!("/ping {mark}"));
        assert_eq!(self.reply(), format!("PONG {mark}"));
        assert!(
            self.events.is_empty(),
            "unexpected events: {:?}",
            self.events
        );
    }

    /// Reads until `done(replies, events)` holds for what is queued, then
    /// hands both queues over (for tests that count outcomes of either
    /// kind).
    pub fn collect_until(
        &mut self,
        mut done: impl FnMut(&VecDeque<String>, &VecDeque<Event>) -> bool,
    ) -> (Vec<String>, Vec<Event>) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.replies, &self.events) {
            assert!(self.read_one(deadline), "closed while collecting");
        }
        (
            self.replies.drain(..).collect(),
            self.events.drain(..).collect(),
        )
    }

    /// The next reply if one comes within `limit`; `None` if none did (the
    /// connection stays usable: a line cut by the deadline is kept).
    /// Panics if the server closes the connection first.
    pub fn try_reply_within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.replies.pop_front() {
                return Some(r);
            }
            match self.read_until_deadline(deadline) {
                Got::Item => {}
                Got::TimedOut => return None,
                Got::Eof => panic!("connection closed while waiting for a reply"),
            }
        }
    }

    /// The next broadcast event if one comes within `limit`; `None` if
    /// none did. Panics if the server closes the connection first.
    pub fn try_event_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            match self.read_until_deadline(deadline) {
                Got::Item => {}
                Got::TimedOut => return None,
                Got::Eof => panic!(
                    "connection closed while waiting for an event (replies: {:?})",
                    self.replies
                ),
            }
        }
    }

    /// Events already read but not yet taken.
    pub fn pending_events(&self) -> &VecDeque<Event> {
        &self.events
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }
}

pub fn parse_welcome(line: &str) -> Welcome {
    let f: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(f[0], "WELCOME", "expected WELCOME, got {line:?}");
    Welcome {
        id: f[1].parse().unwrap(),
        name: f[2].to_string(),
        time: f[3].to_string(),
        key: f[4].to_string(),
        epoch: f[5].to_string(),
    }
}

/// Connects a client and takes its first event, which must be its own
/// `JOIN`.
pub fn joined(addr: SocketAddr) -> Raw {
    let mut c = Raw::connect(addr);
    let join = c.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), c.name()));
    c
}

/// A client that reads its `WELCOME` and then nothing more, with a tiny
/// receive buffer: the server soon cannot write to it.
pub fn non_reader(addr: SocketAddr) -> Raw {
    non_reader_saying(addr, None)
}

/// [`non_reader`], sending `first` (if any) before it reads its
/// `WELCOME`.
pub fn non_reader_saying(addr: SocketAddr, first: Option<&str>) -> Raw {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut raw = Raw::from_stream(socket.into());
    if let Some(line) = first {
        raw.line(line);
    }
    raw.read_welcome();
    raw
}

/// Connects a client, waits for its `JOIN`, and names it.
pub fn named(addr: SocketAddr, name: &str) -> Raw {
    let mut c = joined(addr);
    c.line(&format!("/nick {name}"));
    assert_eq!(c.reply(), format!("OK nick {name}"));
    let nick = c.event_starting("NICK ");
    assert!(nick.line.ends_with(&format!(" {name}")), "{nick:?}");
    c
}

/// Takes a library client's events until `done` says so (waiting at most
/// [`WAIT`] in all); returns them all, the last one included.
pub fn events_until(
    client: &tickcast::client::Client,
    mut done: impl FnMut(&tickcast::client::Event) -> bool,
) -> Vec<tickcast::client::Event> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = client
            .events()
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out; events so far: {seen:#?}"));
        let stop = done(&event);
        seen.push(event);
        if stop {
            return seen;
        }
    }
}

/// A library client's settings for tests: quick reconnects, no keepalive
/// traffic.
pub fn fast() -> tickcast::client::ClientConfig {
    use tickcast::client::{ClientConfig, Reconnect};
    ClientConfig {
        reconnect: Reconnect {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            ..Reconnect::default()
        },
        keepalive: None,
        ..ClientConfig::default()
    }
}
