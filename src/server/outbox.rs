//! A client's outbox: the bytes queued for one client that its socket has
//! not taken yet.
//!
//! # Why every client has one
//!
//! The broadcaster writes every event to every member. If it waited for a
//! client whose socket buffer is full (a laptop on bad Wi-Fi, a browser tab
//! in the background, a program that stopped reading), every other client
//! would wait with it. So nobody ever waits on a socket: a write hands the
//! kernel what fits *now* (`MSG_DONTWAIT`), and whatever does not fit stays
//! here, in the client's own queue, as shared [`Bytes`] (slices of the
//! batch's buffer that every member was written from, see `batch`:
//! queueing an event for a thousand slow clients copies nothing). The flusher thread (see `flusher`) writes the rest as the
//! socket drains.
//!
//! Every write to a client, from any thread, goes through its outbox, in
//! order, under one lock: lines are never cut by another line, and they
//! arrive in the order they were queued.
//!
//! # How far behind a client may fall
//!
//! Two limits, both checked here: the unsent bytes (`--max-pending`) and
//! the age of the oldest unsent byte (`--write-timeout-ms`). A client past
//! either is a *slow consumer*: its outbox closes and the caller drops it.
//! Memory for slow clients is therefore bounded, and no healthy client is
//! ever held up by one.

use bytes::{Buf, Bytes};
use nix::libc;
use socket2::SockRef;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Flags for every send: never raise `SIGPIPE` when the peer went away.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// `sendmsg` takes at most this many pieces at once (POSIX's IOV_MAX).
const MAX_SLICES: usize = 1024;

/// How far behind one client may fall before it is dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `--max-pending`: unsent bytes.
    pub max_pending: usize,
    /// `--write-timeout-ms`: age of the oldest unsent byte.
    pub max_age: Duration,
}

/// Why bytes could not be queued or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The client fell too far behind (`--max-pending`, `--write-timeout-ms`).
    TooFarBehind,
    /// The client closed or reset the connection.
    PeerClosed,
    /// Any other I/O error.
    Io(ErrorKind),
    /// The outbox was already closed (after a `BYE`, or a failure).
    Closed,
}

impl WriteError {
    fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::WriteZero => WriteError::PeerClosed,
            kind => WriteError::Io(kind),
        }
    }

    /// The `LEAVE` reason for a client dropped because of this error.
    pub(crate) fn reason(self) -> crate::protocol::Reason {
        use crate::protocol::Reason;
        match self {
            WriteError::TooFarBehind => Reason::SlowConsumer,
            WriteError::PeerClosed => Reason::Closed,
            WriteError::Io(_) | WriteError::Closed => Reason::Error,
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TooFarBehind => ErrorKind::TimedOut.into(),
            WriteError::PeerClosed => ErrorKind::ConnectionReset.into(),
            WriteError::Io(kind) => kind.into(),
            WriteError::Closed => ErrorKind::BrokenPipe.into(),
        }
    }
}

/// Where an outbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Taking bytes.
    Open,
    /// Its last bytes (a `BYE`) are queued: close the connection once they
    /// are written. Nothing more may be queued.
    Finishing,
    /// Nothing more is written, ever.
    Closed,
}

/// What a write left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Everything queued is written.
    Drained,
    /// Some bytes wait for the socket to drain.
    Pending,
}

/// The bytes queued for one client; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Whole lines, oldest first, each with the moment it was queued. The
    /// front one may be partly written already (it is then shortened).
    queue: VecDeque<(Bytes, Instant)>,
    /// Unsent bytes in `queue`.
    pending: usize,
    pub(crate) stage: Stage,
    /// Whether the flusher has this client on its list.
    pub(crate) watched: bool,
    limits: Limits,
}

impl Outbox {
    pub(crate) fn new(limits: Limits) -> Self {
        Outbox {
            queue: VecDeque::new(),
            pending: 0,
            stage: Stage::Open,
            watched: false,
            limits,
        }
    }

    /// `--write-timeout-ms`: how old an unsent byte may grow.
    pub(crate) fn max_age(&self) -> Duration {
        self.limits.max_age
    }

    /// Unsent bytes.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// When the oldest unsent byte was queued.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.queue.front().map(|&(_, at)| at)
    }

    /// Queues `chunks` (whole lines) behind what is already queued, and
    /// writes what the socket takes right now. When nothing was queued
    /// before, the chunks are written straight from the caller's buffers
    /// and only what does not fit is kept (shared, not copied).
    pub(crate) fn push(
        &mut self,
        stream: &TcpStream,
        chunks: &[Bytes],
    ) -> Result<Progress, WriteError> {
        if self.stage != Stage::Open {
            return Err(WriteError::Closed);
        }
        let mut written = 0;
        if self.queue.is_empty() {
            match send(stream, chunks.iter().map(|c| &c[..])) {
                // The usual case: a reader that keeps up took it all.
                Ok(Sent::All) => return Ok(Progress::Drained),
                Ok(Sent::Part(n)) => written = n,
                Err(e) => return Err(self.fail(&e)),
            }
        }
        let now = Instant::now();
        for chunk in chunks {
            if written >= chunk.len() {
                written -= chunk.len();
                continue;
            }
            let rest = chunk.slice(written..);
            written = 0;
            self.pending += rest.len();
            self.queue.push_back((rest, now));
        }
        self.check(now)
    }

    /// Writes what the socket takes right now of what is queued.
    pub(crate) fn write(
        &mut self,
        stream: &TcpStream,
        now: Instant,
    ) -> Result<Progress, WriteError> {
        if self.stage == Stage::Closed {
            return Err(WriteError::Closed);
        }
        let mut written = match send(stream, self.queue.iter().map(|(c, _)| &c[..])) {
            Ok(Sent::All) => self.pending,
            Ok(Sent::Part(n)) => n,
            Err(e) => return Err(self.fail(&e)),
        };
        self.pending -= written;
        while written > 0 {
            let Some((front, _)) = self.queue.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        self.check(now)
    }

    /// Closes the outbox for good and forgets what it held.
    pub(crate) fn close(&mut self) {
        self.stage = Stage::Closed;
        self.queue.clear();
        self.pending = 0;
    }

    /// Whether the client is still within its limits.
    fn check(&mut self, now: Instant) -> Result<Progress, WriteError> {
        if self.pending == 0 {
            return Ok(Progress::Drained);
        }
        let too_old = self
            .oldest()
            .is_some_and(|at| now.saturating_duration_since(at) > self.limits.max_age);
        if self.pending > self.limits.max_pending || too_old {
            self.close();
            return Err(WriteError::TooFarBehind);
        }
        Ok(Progress::Pending)
    }

    /// Moves every queued byte's time forward by `by`: the process was
    /// paused (stopped, swapped out) and that time is not the client's
    /// fault (see `flusher`).
    pub(crate) fn forgive(&mut self, by: Duration) {
        for (_, at) in &mut self.queue {
            *at += by;
        }
    }

    /// A failed write may have left a line half-sent: close for good.
    fn fail(&mut self, e: &io::Error) -> WriteError {
        self.close();
        WriteError::from_io(e)
    }
}

/// What one [`send`] took.
enum Sent {
    /// Everything.
    All,
    /// This many bytes, and the socket is full.
    Part(usize),
}

/// Non-blocking vectored sends of `chunks` (more than [`MAX_SLICES`]
/// chunks need several), until everything is sent or the socket is full,
/// which is not an error.
fn send<'c>(
    stream: &TcpStream,
    chunks: impl Iterator<Item = &'c [u8]> + Clone,
) -> io::Result<Sent> {
    let mut written = 0;
    let mut slices = Vec::new();
    loop {
        let (wanted, more) = slices_from(chunks.clone(), written, &mut slices);
        if wanted == 0 {
            return Ok(Sent::All);
        }
        match SockRef::from(stream).send_vectored_with_flags(&slices, SEND_FLAGS) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) if n < wanted => return Ok(Sent::Part(written + n)),
            Ok(_) if !more => return Ok(Sent::All),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Sent::Part(written)),
            Err(e) => return Err(e),
        }
    }
}

/// Points `slices` at up to [`MAX_SLICES`] pieces of the bytes of
/// `chunks` from offset `skip` on. Returns how many bytes they hold, and
/// whether more bytes remain after them.
fn slices_from<'c>(
    chunks: impl Iterator<Item = &'c [u8]>,
    mut skip: usize,
    slices: &mut Vec<IoSlice<'c>>,
) -> (usize, bool) {
    slices.clear();
    let mut wanted = 0;
    for chunk in chunks {
        if skip >= chunk.len() {
            skip -= chunk.len();
            continue;
        }
        if slices.len() == MAX_SLICES {
            return (wanted, true);
        }
        let piece = &chunk[skip..];
        skip = 0;
        wanted += piece.len();
        slices.push(IoSlice::new(piece));
    }
    (wanted, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    fn limits(max_pending: usize) -> Limits {
        Limits {
            max_pending,
            max_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn slices_skip_what_was_sent() {
        let chunks: [&[u8]; 3] = [b"abc", b"de", b"fgh"];
        let mut slices = Vec::new();
        assert_eq!(
            slices_from(chunks.iter().copied(), 4, &mut slices),
            (4, false)
        );
        let got: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(got, b"efgh");
        assert_eq!(
            slices_from(chunks.iter().copied(), 8, &mut slices),
            (0, false)
        );
        assert!(slices.is_empty());
    }

    #[test]
    fn a_reader_that_keeps_up_gets_everything_at_once() {
        let (server, mut client) = pair();
        let mut out = Outbox::new(limits(1 << 20));
        let lines = [
            Bytes::from_static(b"MSG 1 a hi\n"),
            Bytes::from_static(b"MSG 2 a yo\n"),
        ];
        assert_eq!(out.push(&server, &lines), Ok(Progress::Drained));
        let mut buf = [0u8; 22];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"MSG 1 a hi\nMSG 2 a yo\n");
    }

    #[test]
    fn what_does_not_fit_waits_in_order_and_a_cap_closes_it() {
        let (server, mut client) = pair();
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let now = Instant::now();
        let mut out = Outbox::new(limits(8 << 20));
        // Fill the socket until something stays queued.
        let mut pushed = 0;
        while out.pending() == 0 {
            out.push(&server, std::slice::from_ref(&big)).unwrap();
            pushed += big.len();
        }
        let tail = Bytes::from_static(b"END\n");
        assert_eq!(out.push(&server, &[tail]), Ok(Progress::Pending));
        pushed += 4;
        // The reader drains; the outbox writes the rest, in order.
        let reader = std::thread::spawn(move || {
            let mut all = vec![0u8; pushed];
            client.read_exact(&mut all).unwrap();
            all
        });
        while out.write(&server, now).unwrap() == Progress::Pending {
            std::thread::yield_now();
        }
        let all = reader.join().unwrap();
        assert!(all.ends_with(b"xxEND\n"));
        assert!(all[..all.len() - 4].iter().all(|&b| b == b'x'));

        // A cap below what is queued closes the outbox.
        let (server, _client) = pair();
        let mut out = Outbox::new(limits(100 * 1024));
        let result = (0..1000)
            .map(|_| out.push(&server, std::slice::from_ref(&big)))
            .find(|r| r.is_err());
        assert_eq!(result, Some(Err(WriteError::TooFarBehind)));
        assert_eq!(out.stage, Stage::Closed);
    }

    #[test]
    fn the_oldest_byte_has_an_age_limit_and_a_pause_is_forgiven() {
        let (server, _client) = pair();
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let start = Instant::now();
        let mut out = Outbox::new(Limits {
            max_pending: usize::MAX,
            max_age: Duration::from_secs(2),
        });
        while out.pending() == 0 {
            out.push(&server, std::slice::from_ref(&big)).unwrap();
        }
        let later = start + Duration::from_secs(3);
        out.forgive(Duration::from_secs(2));
        assert_eq!(out.write(&server, later), Ok(Progress::Pending));
        let much_later = start + Duration::from_secs(5);
        assert_eq!(
            out.write(&server, much_later),
            Err(WriteError::TooFarBehind)
        );
    }
}
