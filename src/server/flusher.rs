//! The flusher thread: writes what did not fit, as sockets drain.
//!
//! A write to a client never waits (see `outbox`): what the socket does
//! not take at once stays in the client's outbox, and the connection is
//! handed here. This thread keeps a list of those connections and sleeps
//! in `poll(2)` until one of their sockets has room again, then writes
//! some more. A connection leaves the list when its outbox is empty.
//!
//! It is also where slow consumers are caught: a client whose oldest
//! unsent byte is older than `--write-timeout-ms` is dropped here (its
//! `LEAVE … slow-consumer` is announced through the broadcaster), even if
//! nothing new is sent to it.
//!
//! # Waking it
//!
//! `poll` waits on sockets, not on channels. New connections arrive on a
//! channel, so every hand-over also writes one byte to a socket pair whose
//! other end is in the `poll` set: the classic self-pipe trick. Both ends
//! are made once at start, so waking never needs a new file descriptor.
//!
//! # A paused process
//!
//! If the whole process was stopped (`SIGSTOP`, a frozen VM, swapping),
//! every queued byte looks old when it resumes, through no fault of the
//! clients. When `poll` returns much later than asked, the extra time is
//! added to every queued byte's time: clients are judged only on time the
//! server was running.

use super::Shared;
use super::conn::Conn;
use super::outbox::{Progress, WriteError};
use crossbeam_channel::{Receiver, select};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest single sleep in `poll`.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// Sleeping this much longer than asked means the process was paused.
const PAUSE_SLACK: Duration = Duration::from_millis(250);

pub(crate) struct Flusher {
    pub shared: Arc<Shared>,
    /// Connections handed over (see `Conn::send`).
    pub new: Receiver<Arc<Conn>>,
    /// The reading end of the wake-up socket pair.
    pub wake: UnixStream,
    /// Shutdown: write what can be written by this deadline, then stop.
    pub stop: Receiver<Instant>,
}

impl Flusher {
    /// The thread's body.
    pub(crate) fn run(self) {
        let _ = self.wake.set_nonblocking(true);
        let mut watched: Vec<Arc<Conn>> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            watched.extend(self.new.try_iter());
            if deadline.is_none()
                && let Ok(at) = self.stop.try_recv()
            {
                deadline = Some(at);
            }
            if watched.is_empty() {
                if deadline.is_some() {
                    return;
                }
                select! {
                    recv(self.new) -> conn => match conn {
                        Ok(conn) => watched.push(conn),
                        Err(_) => return,
                    },
                    recv(self.stop) -> at => deadline = Some(at.unwrap_or_else(|_| Instant::now())),
                }
                continue;
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                // Shutdown, and time is up: whoever has not taken its last
                // bytes by now is reset.
                for conn in watched.drain(..) {
                    conn.abort();
                }
                return;
            }
            let ready = self.wait(&watched, deadline);
            watched = self.write(watched, &ready);
        }
    }

    /// Sleeps until a watched socket has room, the wake-up socket has a
    /// byte, or the next client's time runs out. Returns which sockets
    /// are ready: the wake-up socket first, then the watched ones.
    fn wait(&self, watched: &[Arc<Conn>], deadline: Option<Instant>) -> Vec<bool> {
        let now = Instant::now();
        let max_age = self.shared.config.write_timeout;
        let next_expiry = watched
            .iter()
            .filter_map(|c| c.oldest_unsent())
            .map(|at| at + max_age)
            .chain(deadline)
            .min()
            .unwrap_or(now + MAX_WAIT);
        let asked = next_expiry.saturating_duration_since(now).min(MAX_WAIT);
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(watched.len() + 1);
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        fds.extend(
            watched
                .iter()
                .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLOUT)),
        );
        // Round up: a 0 ms poll would spin until the deadline.
        let ms = u16::try_from(asked.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let ready = match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            // Interrupted, or out of resources: try every socket.
            Err(_) => vec![true; fds.len()],
        };
        let slept = now.elapsed();
        if slept > asked + PAUSE_SLACK {
            for conn in watched {
                conn.forgive(slept - asked);
            }
        }
        if ready[0] {
            // Empty the wake-up socket; the new connections are in the
            // channel.
            let mut sink = [0u8; 256];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        ready
    }

    /// Writes to every ready socket, and checks every client's oldest
    /// byte. Returns the connections still waiting.
    fn write(&self, watched: Vec<Arc<Conn>>, ready: &[bool]) -> Vec<Arc<Conn>> {
        let now = Instant::now();
        let max_age = self.shared.config.write_timeout;
        let mut still = Vec::with_capacity(watched.len());
        // `ready[0]` is the wake-up socket's.
        for (conn, &ready) in watched.into_iter().zip(&ready[1..]) {
            let overdue = conn
                .oldest_unsent()
                .is_some_and(|at| now.saturating_duration_since(at) > max_age);
            if !ready && !overdue {
                still.push(conn);
                continue;
            }
            match conn.flush(now) {
                Ok(Progress::Pending) => still.push(conn),
                // Closed by someone else meanwhile: theirs to finish.
                Ok(Progress::Drained) | Err(WriteError::Closed) => {}
                Err(e) => self.shared.drop_client(&conn, e.reason()),
            }
        }
        still
    }
}
