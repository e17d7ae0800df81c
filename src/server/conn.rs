//! One connection's shared half, and how bytes get to clients without one
//! slow client holding up the others.
//!
//! Each accepted stream is split in two with `TcpStream::try_clone`: the
//! *reading* half belongs to the connection's session thread alone; the
//! *writing* half lives here, in a [`Conn`] that the client map, the
//! broadcaster and other sessions (for `DM`s) share through an `Arc`.
//!
//! # Who may write, and for how long
//!
//! Several threads write to one client: the broadcaster (broadcast
//! events), the client's own session (replies such as `OK` or `PONG`),
//! other sessions (`DM`s). A line must never be cut by another, so every
//! write happens while holding the connection's write lock
//! ([`Conn::lock_writer`]), and a write always carries whole lines.
//!
//! No thread may be held up for long by one client's full socket. Two
//! tools make sure of that:
//!
//! * **A first try that never blocks.** [`Writer::write_nowait`] hands the
//!   kernel what fits in the socket's send buffer (`MSG_DONTWAIT`). For a
//!   healthy client that is everything, in one system call.
//! * **A deadline, not a timeout per call.** What did not fit is written
//!   with blocking sends whose `SO_SNDTIMEO` is set to the time left
//!   until a deadline ([`Writer::write_until`]), so a client that drains
//!   slowly cannot stretch one write past the limit by accepting a few
//!   bytes at a time.
//!
//! [`deliver`] is the broadcaster's version, for many clients at once: it
//! tries every client without blocking first; then it waits in `poll(2)`
//! for *any* of the stragglers to have room again and feeds whichever is
//! ready, until all are done or **one shared deadline** passes. A healthy
//! client that merely has a large batch to take keeps being fed while a
//! stalled one sits out its time, and ten stalled clients cost the others
//! one write timeout, not ten.
//!
//! A write that fails or runs out of time leaves the stream in an unknown
//! place, possibly in the middle of a line, so the writer is then closed
//! for good and the caller drops the client.

use crate::protocol::Reason;
use crate::server::ClientId;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use parking_lot::{Mutex, MutexGuard};
use socket2::SockRef;
use std::io::{self, ErrorKind, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Flags for every send: never raise `SIGPIPE` when the peer went away,
/// even in a program whose `main` is not Rust's (which ignores the signal
/// by default). Where `MSG_NOSIGNAL` does not exist we rely on that.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// `writev` takes at most this many pieces at once (POSIX's IOV_MAX).
const MAX_SLICES: usize = 1024;

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
    /// The writing half of the socket. Written only while `out` is held.
    stream: TcpStream,
    /// The write lock (see the module docs). Its value says whether the
    /// writer is closed: after a `BYE`, or after a failed write.
    out: Mutex<bool>,
    /// Why the connection ended, set once by whoever ends it first (see
    /// `Registry::claim_close`, which sets it under the client map's lock).
    reason: OnceLock<Reason>,
    /// `--write-timeout-ms`.
    write_timeout: Duration,
}

/// Why a write to a client failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The client did not take the bytes before the deadline.
    TimedOut,
    /// The client closed or reset the connection.
    PeerClosed,
    /// Any other I/O error.
    Io(ErrorKind),
    /// The writer was already closed (after a `BYE` or an earlier failure).
    Closed,
}

impl WriteError {
    fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => WriteError::TimedOut,
            ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::WriteZero => WriteError::PeerClosed,
            kind => WriteError::Io(kind),
        }
    }

    /// The `LEAVE` reason for a client dropped because of this error.
    pub(crate) fn reason(self) -> Reason {
        match self {
            WriteError::TimedOut => Reason::SlowConsumer,
            WriteError::PeerClosed => Reason::Closed,
            WriteError::Io(_) | WriteError::Closed => Reason::Error,
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::TimedOut => ErrorKind::TimedOut.into(),
            WriteError::PeerClosed => ErrorKind::ConnectionReset.into(),
            WriteError::Io(kind) => kind.into(),
            WriteError::Closed => ErrorKind::BrokenPipe.into(),
        }
    }
}

impl Conn {
    pub(crate) fn new(
        id: ClientId,
        peer: SocketAddr,
        key: String,
        stream: TcpStream,
        write_timeout: Duration,
    ) -> Self {
        Conn {
            id,
            peer,
            key,
            connected_at: SystemTime::now(),
            stream,
            out: Mutex::new(false),
            reason: OnceLock::new(),
            write_timeout,
        }
    }

    /// Why the connection ended, once someone has ended it.
    pub(crate) fn reason(&self) -> Option<Reason> {
        self.reason.get().copied()
    }

    /// Records why the connection ends; `false` if that was already
    /// decided. Only `Registry::claim_close` calls this.
    pub(super) fn set_reason(&self, reason: Reason) -> bool {
        self.reason.set(reason).is_ok()
    }

    /// Takes the write lock, waiting at most the write timeout for a
    /// thread that is writing to this client right now.
    pub(crate) fn lock_writer(&self) -> Result<Writer<'_>, WriteError> {
        self.lock_writer_until(Instant::now() + self.write_timeout)
    }

    /// Takes the write lock, waiting at most until `deadline`.
    pub(crate) fn lock_writer_until(&self, deadline: Instant) -> Result<Writer<'_>, WriteError> {
        let closed = self
            .out
            .try_lock_until(deadline)
            .ok_or(WriteError::TimedOut)?;
        Writer::new(self, closed)
    }

    /// Writes whole lines to this client, giving it at most the write
    /// timeout (waiting for the lock included).
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), WriteError> {
        let deadline = Instant::now() + self.write_timeout;
        self.lock_writer_until(deadline)?
            .write_until(&[bytes], 0, deadline)
    }

    /// Writes a last line (a `BYE`) and closes the writer, so that nothing
    /// can follow it. Best effort: a client that is gone or stuck simply
    /// does not get it.
    pub(crate) fn send_last(&self, bytes: &[u8]) {
        if let Ok(mut w) = self.lock_writer() {
            let deadline = Instant::now() + self.write_timeout;
            let _ = w.write_until(&[bytes], 0, deadline);
            w.close();
        }
    }

    /// Like [`Conn::send_last`], but never waits: for a connection that is
    /// presumed dead (a takeover), from a thread that must not stall.
    pub(crate) fn send_last_nowait(&self, bytes: &[u8]) {
        if let Some(closed) = self.out.try_lock()
            && let Ok(mut w) = Writer::new(self, closed)
        {
            let _ = w.write_nowait(&[bytes], 0);
            w.close();
        }
    }

    /// Closes the socket both ways: the session's blocked `read` returns,
    /// and the client sees the connection end after the bytes already
    /// queued for it.
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Closes the socket of a client that ended for `reason`. A slow
    /// consumer is *aborted*: with `SO_LINGER` at zero the last `close`
    /// resets the connection and the kernel frees at once the megabytes
    /// the client did not take, instead of trickling them out to a reader
    /// that stopped reading. (The session's blocked `read` is woken by
    /// closing the reading side; the socket closes when its session ends.)
    pub(crate) fn close_for(&self, reason: Reason) {
        if reason == Reason::SlowConsumer {
            let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
            let _ = self.stream.shutdown(Shutdown::Read);
        } else {
            self.shutdown();
        }
    }

    /// Closes the reading direction only: the session's blocked `read`
    /// returns end-of-stream, but the server can still write (used at
    /// shutdown, before the final `BYE shutdown`).
    pub(crate) fn shutdown_read(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

/// The write lock of one connection, held: whoever has it may write.
pub(crate) struct Writer<'a> {
    conn: &'a Conn,
    closed: MutexGuard<'a, bool>,
}

impl<'a> Writer<'a> {
    fn new(conn: &'a Conn, closed: MutexGuard<'a, bool>) -> Result<Self, WriteError> {
        if *closed {
            Err(WriteError::Closed)
        } else {
            Ok(Writer { conn, closed })
        }
    }

    /// Closes the writer for good: every later write fails with
    /// [`WriteError::Closed`].
    pub(crate) fn close(&mut self) {
        *self.closed = true;
    }

    /// Sends the bytes of `chunks` from offset `sent` on, as far as the
    /// socket's buffer takes them right now. Returns the new offset.
    pub(crate) fn write_nowait<C: AsRef<[u8]>>(
        &mut self,
        chunks: &[C],
        mut sent: usize,
    ) -> Result<usize, WriteError> {
        let total = total_len(chunks);
        let mut slices = Vec::new();
        while sent < total {
            fill_slices(chunks, sent, &mut slices);
            match self.send(&slices, libc::MSG_DONTWAIT) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.fail(&e)),
            }
        }
        Ok(sent)
    }

    /// Sends the bytes of `chunks` from offset `sent` on, blocking until
    /// all are sent or `deadline` passes.
    pub(crate) fn write_until<C: AsRef<[u8]>>(
        &mut self,
        chunks: &[C],
        sent: usize,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let total = total_len(chunks);
        let mut sent = self.write_nowait(chunks, sent)?;
        let mut slices = Vec::new();
        while sent < total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // One last look: the client may have caught up meanwhile.
                sent = self.write_nowait(chunks, sent)?;
                if sent < total {
                    self.close();
                    return Err(WriteError::TimedOut);
                }
                break;
            }
            // The socket's send timeout is the time left, so this one
            // blocking send cannot overrun the deadline.
            if let Err(e) = self.conn.stream.set_write_timeout(Some(left)) {
                return Err(self.fail(&e));
            }
            fill_slices(chunks, sent, &mut slices);
            match self.send(&slices, 0) {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(self.fail(&e)),
            }
        }
        Ok(())
    }

    /// Writes all of `chunks`, giving the client at most the write timeout.
    pub(crate) fn write_all<C: AsRef<[u8]>>(&mut self, chunks: &[C]) -> Result<(), WriteError> {
        let deadline = Instant::now() + self.conn.write_timeout;
        self.write_until(chunks, 0, deadline)
    }

    fn send(&self, slices: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
        let n = SockRef::from(&self.conn.stream)
            .send_vectored_with_flags(slices, flags | SEND_FLAGS)?;
        if n == 0 && !slices.iter().all(|s| s.is_empty()) {
            return Err(ErrorKind::WriteZero.into());
        }
        Ok(n)
    }

    /// A failed write leaves the stream mid-line: close the writer.
    fn fail(&mut self, e: &io::Error) -> WriteError {
        self.close();
        WriteError::from_io(e)
    }
}

fn total_len<C: AsRef<[u8]>>(chunks: &[C]) -> usize {
    chunks.iter().map(|c| c.as_ref().len()).sum()
}

/// Points `slices` at the bytes of `chunks` from offset `skip` on.
fn fill_slices<'c, C: AsRef<[u8]>>(
    chunks: &'c [C],
    mut skip: usize,
    slices: &mut Vec<IoSlice<'c>>,
) {
    slices.clear();
    for chunk in chunks {
        let chunk = chunk.as_ref();
        if skip >= chunk.len() {
            skip -= chunk.len();
            continue;
        }
        slices.push(IoSlice::new(&chunk[skip..]));
        skip = 0;
        if slices.len() == MAX_SLICES {
            break;
        }
    }
}

/// What to write to one client in a [`deliver`] round.
pub(crate) struct Delivery<'a, C> {
    /// The client.
    pub conn: &'a Conn,
    /// Whole lines, written in order.
    pub chunks: &'a [C],
    /// The chunks end with the client's `BYE`: once they are all written,
    /// close the writer, so that nothing can follow.
    pub last: bool,
}

/// A client that did not take all of its bytes at the first try.
struct Straggler<'a> {
    /// Index into the deliveries.
    index: usize,
    /// Its write lock, once we hold it. A partly written client keeps its
    /// lock until it is finished, so nobody can write into the middle of
    /// its line. `None` while its own session is writing to it.
    writer: Option<Writer<'a>>,
    /// Bytes already sent.
    sent: usize,
}

/// How long `poll` sleeps at most while some straggler's lock is held by
/// another thread (we cannot wait for a lock and a socket at once).
const LOCK_RECHECK: Duration = Duration::from_millis(5);

/// Writes each delivery's chunks to its client, all of them together
/// within one `timeout` (see the module docs). Returns the index and error
/// of every delivery that failed; those clients' writers are closed.
pub(crate) fn deliver<C: AsRef<[u8]>>(
    deliveries: &[Delivery<'_, C>],
    timeout: Duration,
) -> Vec<(usize, WriteError)> {
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    let mut waiting: Vec<Straggler<'_>> = Vec::new();

    // First pass: everyone gets what fits right now, without blocking.
    for (index, d) in deliveries.iter().enumerate() {
        let total = total_len(d.chunks);
        if total == 0 {
            continue;
        }
        let Some(closed) = d.conn.out.try_lock() else {
            waiting.push(Straggler {
                index,
                writer: None,
                sent: 0,
            });
            continue;
        };
        let mut w = match Writer::new(d.conn, closed) {
            Ok(w) => w,
            Err(e) => {
                failed.push((index, e));
                continue;
            }
        };
        match w.write_nowait(d.chunks, 0) {
            Ok(sent) if sent == total => {
                if d.last {
                    w.close();
                }
            }
            Ok(sent) => waiting.push(Straggler {
                index,
                writer: Some(w),
                sent,
            }),
            Err(e) => failed.push((index, e)),
        }
    }

    // Then: feed the stragglers as their sockets drain, until the deadline.
    while !waiting.is_empty() {
        // Take the write locks that have come free meanwhile.
        for s in waiting.iter_mut().filter(|s| s.writer.is_none()) {
            let conn = deliveries[s.index].conn;
            if let Some(closed) = conn.out.try_lock() {
                match Writer::new(conn, closed) {
                    Ok(w) => s.writer = Some(w),
                    Err(e) => failed.push((s.index, e)),
                }
            }
        }
        waiting.retain(|s| !failed.iter().any(|&(i, _)| i == s.index));
        if waiting.is_empty() {
            break;
        }

        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Time is up: one last try each, then give up on the rest.
            for mut s in waiting.drain(..) {
                let d = &deliveries[s.index];
                let Some(w) = s.writer.as_mut() else {
                    failed.push((s.index, WriteError::TimedOut));
                    continue;
                };
                match w.write_nowait(d.chunks, s.sent) {
                    Ok(sent) if sent == total_len(d.chunks) => {
                        if d.last {
                            w.close();
                        }
                    }
                    Ok(_) => {
                        w.close();
                        failed.push((s.index, WriteError::TimedOut));
                    }
                    Err(e) => failed.push((s.index, e)),
                }
            }
            break;
        }

        let any_unlocked = waiting.iter().any(|s| s.writer.is_none());
        if waiting.iter().all(|s| s.writer.is_none()) {
            // Only clients whose session is writing to them right now
            // (and `waiting` is not empty): wait for the first one's lock.
            let s = &mut waiting[0];
            match deliveries[s.index].conn.lock_writer_until(deadline) {
                Ok(w) => s.writer = Some(w),
                Err(e) => {
                    failed.push((s.index, e));
                    waiting.remove(0);
                }
            }
            continue;
        }

        // Sleep until one of the sockets we hold has room again.
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = waiting
                .iter()
                .filter(|s| s.writer.is_some())
                .map(|s| PollFd::new(deliveries[s.index].conn.stream.as_fd(), PollFlags::POLLOUT))
                .collect();
            let wait = if any_unlocked {
                left.min(LOCK_RECHECK)
            } else {
                left
            };
            // Round up: a 0 ms poll would spin until the deadline.
            let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => fds
                    .iter()
                    .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                // Interrupted, or out of resources: look again.
                Err(_) => continue,
            }
        };
        let mut ready = ready.into_iter();
        for s in waiting.iter_mut().filter(|s| s.writer.is_some()) {
            if !ready.next().unwrap_or(false) {
                continue;
            }
            let d = &deliveries[s.index];
            let Some(w) = s.writer.as_mut() else { continue };
            match w.write_nowait(d.chunks, s.sent) {
                Ok(sent) => {
                    s.sent = sent;
                    if d.last && sent == total_len(d.chunks) {
                        w.close();
                    }
                }
                Err(e) => failed.push((s.index, e)),
            }
        }
        waiting.retain(|s| {
            !failed.iter().any(|&(i, _)| i == s.index)
                && s.sent < total_len(deliveries[s.index].chunks)
        });
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_skip_what_was_sent() {
        let chunks: [&[u8]; 3] = [b"abc", b"de", b"fgh"];
        let mut slices = Vec::new();
        fill_slices(&chunks, 4, &mut slices);
        let got: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(got, b"efgh");
        fill_slices(&chunks, 8, &mut slices);
        assert!(slices.is_empty());
    }
}
