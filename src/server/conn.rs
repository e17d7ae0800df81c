//! One connection, as everyone but its session thread sees it: who it is,
//! its socket, and its outbox.
//!
//! A [`Conn`] is shared through an `Arc` by the client map, the
//! broadcaster (broadcast events), the flusher (what did not fit), the
//! client's own session (replies, and reading: the session reads the same
//! socket; nobody else does), and other sessions (`DM`s). There is one
//! socket per connection and no `try_clone`: reading and writing are
//! different threads, and a socket allows that.
//!
//! # Writing never waits
//!
//! [`Conn::send`] queues whole lines in the connection's outbox (see
//! `outbox`) and writes what the socket takes at once. If something is
//! left, the connection is handed to the flusher, which writes the rest as
//! the socket drains. No thread ever blocks on a client's socket, and no
//! lock is held while waiting for one: the outbox lock is held only for a
//! non-blocking `sendmsg`.
//!
//! # Ending
//!
//! A connection ends in one of three ways, named once here and used
//! everywhere:
//!
//! * [`Conn::finish`]: the server has a last line to say (`BYE REASON`):
//!   it is queued behind everything else, and the connection closes once
//!   it is written (or is aborted if the client does not take it in time);
//! * [`Conn::close`]: close now (the client closed, or the server has
//!   nothing more to say);
//! * [`Conn::abort`]: reset now, for a slow consumer: with `SO_LINGER` at
//!   zero the kernel frees at once the megabytes the client did not take.
//!
//! Deciding *that* it ends, and why, is the client map's job
//! (`Registry::claim`); these only carry it out.

use super::outbox::{Limits, Outbox, Progress, Stage, WriteError};
use super::wire::Wire;
use crate::http::Counters;
use crate::protocol::Reason;
use crate::server::ClientId;
use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use socket2::SockRef;
use std::borrow::Borrow;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// What every new connection is linked to: the flusher and the counters.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub flusher: FlusherLink,
    pub counters: Arc<Counters>,
}

/// How many unsent bytes a session lets queue up before it waits for its
/// own client (see [`Conn::reply`]).
pub(crate) const REPLY_ROOM: usize = 64 * 1024;

/// How a connection with unsent bytes is handed to the flusher thread.
#[derive(Debug, Clone)]
pub(crate) struct FlusherLink {
    /// The flusher's list of new connections to watch.
    pub watch: Sender<Arc<Conn>>,
    /// Writing a byte here wakes the flusher out of `poll`.
    pub wake: Arc<UnixStream>,
}

/// One connection, as seen by everyone but its session thread.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The connection's id; its first name is `guest-ID`.
    pub id: ClientId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The secret session key sent in `WELCOME`.
    pub key: String,
    /// When the connection was accepted.
    pub connected_at: SystemTime,
    /// Lines or payloads, event stream: how bytes look on this socket.
    pub wire: Wire,
    /// Lines the client sent (TCP lines, or `POST /line` and `/data`).
    pub lines_in: AtomicU64,
    /// Bytes queued for the client (for `/stats`).
    pub bytes_out: AtomicU64,
    /// The server's counters (`tickcast_bytes_out_total`).
    counters: Arc<Counters>,
    /// The socket. The session reads it; writes go through `outbox`.
    stream: TcpStream,
    /// What is queued for the client and not yet written.
    outbox: Mutex<Outbox>,
    /// Signalled whenever the flusher has written part of the outbox: a
    /// replay waits on it for room.
    room: Condvar,
    /// Why the connection ended, set once by whoever ends it first (see
    /// `Registry::claim`, which sets it under the client map's lock).
    reason: OnceLock<Reason>,
    flusher: FlusherLink,
}

impl Conn {
    pub(crate) fn new(
        id: ClientId,
        peer: SocketAddr,
        key: String,
        stream: TcpStream,
        wire: Wire,
        limits: Limits,
        link: &Link,
    ) -> Self {
        Conn {
            id,
            peer,
            key,
            connected_at: SystemTime::now(),
            wire,
            lines_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            counters: Arc::clone(&link.counters),
            stream,
            outbox: Mutex::new(Outbox::new(limits)),
            room: Condvar::new(),
            reason: OnceLock::new(),
            flusher: link.flusher.clone(),
        }
    }

    /// Why the connection ended, once someone has ended it.
    pub(crate) fn reason(&self) -> Option<Reason> {
        self.reason.get().copied()
    }

    /// Records why the connection ends; `false` if that was already
    /// decided. Only `Registry::claim` calls this.
    pub(super) fn set_reason(&self, reason: Reason) -> bool {
        self.reason.set(reason).is_ok()
    }

    /// Queues whole lines for the client and writes what fits now; the
    /// flusher writes the rest. Never waits. An error means the client
    /// fell too far behind or is gone: the caller drops it.
    /// The chunks must already be in this connection's wire format.
    pub(crate) fn send(self: &Arc<Self>, chunks: &[Bytes]) -> Result<(), WriteError> {
        let mut outbox = self.outbox.lock();
        let progress = outbox.push(&self.stream, chunks)?;
        self.count_out(chunks);
        if progress == Progress::Pending && !outbox.watched {
            outbox.watched = true;
            drop(outbox);
            self.hand_to_flusher();
        }
        Ok(())
    }

    /// [`Conn::send`] for reply lines built elsewhere (`OK`, `DM`, `ERR`…,
    /// each ending in LF), framed for this connection's wire.
    pub(crate) fn send_line(self: &Arc<Self>, line: &[u8]) -> Result<(), WriteError> {
        self.send(&[self.wire.replies(line)])
    }

    /// Counts queued bytes: one relaxed add per call, not per byte.
    fn count_out(&self, chunks: &[Bytes]) {
        let n: usize = chunks.iter().map(Bytes::len).sum();
        self.bytes_out.fetch_add(n as u64, Relaxed);
        self.counters.count_bytes_out(n as u64);
    }

    /// [`Conn::send_line`] for this client's own session answering it
    /// (`OK`, `ERR`, `HELP`, telnet answers): those bytes are not shared
    /// with anyone, so once more than [`REPLY_ROOM`] of them wait, the
    /// session waits (at most `--write-timeout-ms`) for its own client to
    /// take some, and reads nothing meanwhile. A client that asks and never
    /// reads then holds at most about that much, not `--max-pending`.
    pub(crate) fn reply(self: &Arc<Self>, line: &[u8]) -> Result<(), WriteError> {
        let max_age = self.outbox.lock().max_age();
        self.wait_for_room(REPLY_ROOM, Instant::now() + max_age);
        self.send_line(line)
    }

    /// Queues the last lines the client will get (ending with its `BYE`)
    /// and closes the connection once they are written. Nothing can be
    /// queued after them. A client that does not take them in time is
    /// aborted by the flusher.
    pub(crate) fn finish(self: &Arc<Self>, chunks: &[Bytes]) {
        let mut outbox = self.outbox.lock();
        let pushed = outbox.push(&self.stream, chunks);
        if pushed.is_ok() {
            self.count_out(chunks);
        }
        match pushed {
            Ok(Progress::Drained) => {
                outbox.close();
                drop(outbox);
                let _ = self.stream.shutdown(Shutdown::Both);
            }
            Ok(Progress::Pending) => {
                outbox.stage = Stage::Finishing;
                let _ = self.stream.shutdown(Shutdown::Read);
                if !outbox.watched {
                    outbox.watched = true;
                    drop(outbox);
                    self.hand_to_flusher();
                }
            }
            Err(WriteError::TooFarBehind) => {
                drop(outbox);
                self.abort();
            }
            Err(_) => {
                drop(outbox);
                self.close();
            }
        }
    }

    /// Closes the connection now, both ways; what is still queued is
    /// forgotten. The session's blocked `read` returns.
    pub(crate) fn close(&self) {
        self.outbox.lock().close();
        self.room.notify_all();
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Resets the connection of a slow consumer: with `SO_LINGER` at zero,
    /// the last `close` sends a reset and the kernel frees at once what
    /// the client did not take. (The reading side is shut so the session
    /// wakes; the socket closes when the last `Arc` goes.)
    pub(crate) fn abort(&self) {
        self.outbox.lock().close();
        self.room.notify_all();
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Ends the connection the way `reason` calls for: a slow consumer is
    /// aborted, anyone else closed.
    pub(crate) fn close_for(&self, reason: Reason) {
        if reason == Reason::SlowConsumer {
            self.abort();
        } else {
            self.close();
        }
    }

    /// Closes the reading direction only: the session's blocked `read`
    /// returns end-of-stream, but queued and later lines still go out
    /// (used at shutdown, before the final `BYE shutdown`).
    pub(crate) fn stop_reading(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Waits until at most `below` bytes are unsent (or the outbox closed,
    /// or `deadline` passed): lets a replay go out in pieces instead of
    /// queueing megabytes at once. Returns whether there is room.
    pub(crate) fn wait_for_room(&self, below: usize, deadline: Instant) -> bool {
        let mut outbox = self.outbox.lock();
        while outbox.pending() > below && outbox.stage == Stage::Open {
            if self.room.wait_until(&mut outbox, deadline).timed_out() {
                break;
            }
        }
        outbox.pending() <= below && outbox.stage == Stage::Open
    }

    /// The flusher's side: writes what the socket takes now. When all is
    /// written the flusher lets go of the connection (and closes it, if
    /// its last line was queued).
    pub(crate) fn flush(&self, now: Instant) -> Result<Progress, WriteError> {
        let mut outbox = self.outbox.lock();
        let result = outbox.write(&self.stream, now);
        if result != Ok(Progress::Pending) {
            outbox.watched = false;
        }
        let finished = result == Ok(Progress::Drained) && outbox.stage == Stage::Finishing;
        if finished {
            outbox.close();
        }
        drop(outbox);
        self.room.notify_all();
        if finished {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        result
    }

    /// The flusher's side: the process was paused for `by` (see
    /// `flusher`); that time does not count against the client.
    pub(crate) fn forgive(&self, by: Duration) {
        self.outbox.lock().forgive(by);
    }

    /// When the oldest unsent byte was queued, if any.
    pub(crate) fn oldest_unsent(&self) -> Option<Instant> {
        self.outbox.lock().oldest()
    }

    fn hand_to_flusher(self: &Arc<Self>) {
        if self.flusher.watch.send(Arc::clone(self)).is_ok() {
            let _ = (&*self.flusher.wake).write(&[1]);
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The reading half of a connection, for its session: the same socket,
/// reached through the shared [`Conn`].
pub(crate) struct ReadHalf(pub Arc<Conn>);

impl Borrow<TcpStream> for ReadHalf {
    fn borrow(&self) -> &TcpStream {
        &self.0.stream
    }
}
