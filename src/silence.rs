//! Reading a socket while watching the clock: the server's
//! `--idle-timeout` and `--line-timeout`, and the client's keepalive, are
//! the same idea.
//!
//! [`SilenceWatch`] wraps the reading half of a socket.
//!
//! * **Silence.** After half of the allowed silence without a byte it
//!   calls its `ping` function once (the server sends `PING`, the client
//!   `/ping`); after all of it, the read fails with
//!   [`ErrorKind::TimedOut`] and [`SilenceWatch::expired`] says why. Any
//!   byte received starts the count again. There is never a timeout
//!   without a ping first.
//! * **A started line.** Bytes that arrive are not enough: a line (or a
//!   payload) once started must be finished within a time limit, or a
//!   client sending one byte a second ("slowloris") could hold a place
//!   for ever. The reader of the frames says when a frame is done
//!   ([`SilenceWatch::frame_done`]) or how long a payload may take
//!   ([`SilenceWatch::allow_payload`]).
//!
//! * **An alarm.** Its owner may also ask to be woken at a given moment
//!   ([`SilenceWatch::set_alarm`]): a read then fails with
//!   [`ErrorKind::TimedOut`], and [`SilenceWatch::take_alarm`] says it was
//!   the alarm, not a failure. The server's session uses it for the grace
//!   a new client's `WELCOME` waits for its first line.
//!
//! It works with the socket's read timeout, set to the time left until the
//! next deadline, so a quiet connection costs no CPU: the thread sleeps in
//! `read` until a byte arrives or a deadline passes.
//!
//! # Time the process was not running does not count
//!
//! If the whole process was stopped (`SIGSTOP`, a frozen VM, heavy
//! swapping), every deadline seems to have passed when it resumes, though
//! the clients did nothing wrong. So when a read that should have slept
//! `t` returns much later, the extra time is added to every deadline: the
//! client then gets its `PING` and a fair chance to answer.

use std::borrow::Borrow;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The shortest read timeout used (a zero timeout would mean "none").
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Waking this much later than asked means the process was paused.
const PAUSE_SLACK: Duration = Duration::from_millis(500);

/// A payload may take this much longer than a line per byte received.
const PAYLOAD_BYTES_PER_SECOND: u64 = 64 * 1024;

/// What a watch calls at half of the allowed silence: the server sends
/// `PING`, the client `/ping`. One type for both sides.
pub(crate) type Pinger = Box<dyn FnMut() -> io::Result<()> + Send>;

/// A socket's reading half, with a watch on the clock; see the module docs.
pub(crate) struct SilenceWatch<S, P> {
    stream: S,
    /// How much silence is allowed; `None`: no watch on silence.
    limit: Option<Duration>,
    /// How long a started line may take; `None`: no limit.
    line_limit: Option<Duration>,
    /// When the last byte arrived.
    heard: Instant,
    /// Whether `ping` was called since then.
    pinged: bool,
    /// When the frame being received must be complete.
    frame_deadline: Option<Instant>,
    /// The read timeout currently set on the socket.
    timeout: Option<Duration>,
    /// The whole silence limit passed without a byte.
    expired: bool,
    /// A started frame was not finished in time.
    frame_expired: bool,
    /// When to wake the reader, if it asked to be.
    alarm: Option<Instant>,
    /// The alarm went off (and made a read fail).
    rang: bool,
    /// An alarm is gone (it went off, or was called off): the read timeout
    /// set for it is not kept, or a connection with nothing else to wait
    /// for would wake up that often for ever.
    alarm_gone: bool,
    ping: P,
}

impl<S: Borrow<TcpStream>, P: FnMut() -> io::Result<()>> SilenceWatch<S, P> {
    /// Watches `stream` for `limit` of silence (none: no watch).
    pub(crate) fn new(stream: S, limit: Option<Duration>, ping: P) -> Self {
        SilenceWatch {
            stream,
            limit,
            line_limit: None,
            heard: Instant::now(),
            pinged: false,
            frame_deadline: None,
            timeout: None,
            expired: false,
            frame_expired: false,
            alarm: None,
            rang: false,
            alarm_gone: false,
            ping,
        }
    }

    /// Also limits how long a started line may take.
    pub(crate) fn with_line_limit(mut self, line_limit: Option<Duration>) -> Self {
        self.line_limit = line_limit;
        self
    }

    /// Whether the read failed because the peer was silent for too long.
    pub(crate) fn expired(&self) -> bool {
        self.expired
    }

    /// Whether the read failed because a started line or payload was not
    /// finished in time.
    pub(crate) fn frame_expired(&self) -> bool {
        self.frame_expired
    }

    /// Wakes the reader at `at` (`None`: never): the read waiting then
    /// fails with [`ErrorKind::TimedOut`], and [`SilenceWatch::take_alarm`]
    /// returns `true`. Bytes already received are kept by whoever reads
    /// (a [`FrameReader`](crate::protocol::FrameReader) keeps a half-read
    /// line), so the next read goes on where this one stopped.
    pub(crate) fn set_alarm(&mut self, at: Option<Instant>) {
        self.alarm_gone |= self.alarm.is_some();
        self.alarm = at;
        self.rang = false;
    }

    /// Whether the last failed read was the alarm going off (once: this
    /// resets it).
    pub(crate) fn take_alarm(&mut self) -> bool {
        std::mem::take(&mut self.rang)
    }

    /// A frame is complete. `more` says whether bytes of the next one are
    /// already buffered (its clock starts now).
    pub(crate) fn frame_done(&mut self, more: bool) {
        self.frame_deadline = match self.line_limit {
            Some(limit) if more => Some(Instant::now() + limit),
            _ => None,
        };
    }

    /// A payload of `len` bytes follows: it gets the line limit plus one
    /// second per 64 KiB.
    pub(crate) fn allow_payload(&mut self, len: u64) {
        if let Some(limit) = self.line_limit {
            let extra = Duration::from_secs(len / PAYLOAD_BYTES_PER_SECOND);
            self.frame_deadline = Some(Instant::now() + limit + extra);
        }
    }

    /// Sets the socket's read timeout for a sleep of at most `wanted`,
    /// with as few system calls as it can: the timeout already set is kept
    /// when it is no longer than `wanted` and not much shorter (waking
    /// early only costs one more look at the clock), or when nothing is
    /// wanted at all (a wake-up then finds no deadline and reads again),
    /// unless it was set for an alarm that is gone.
    /// Returns the timeout in force.
    fn set_timeout(&mut self, wanted: Option<Duration>) -> io::Result<Option<Duration>> {
        let keep = !std::mem::take(&mut self.alarm_gone)
            && match (self.timeout, wanted) {
                (Some(set), Some(wanted)) => set <= wanted && set >= wanted / 2,
                (_, None) => true,
                (None, Some(_)) => false,
            };
        if !keep {
            let timeout = wanted.map(|t| t.max(MIN_WAIT));
            self.stream.borrow().set_read_timeout(timeout)?;
            self.timeout = timeout;
        }
        Ok(self.timeout)
    }

    /// How long to sleep in `read` at most, from `now`.
    fn next_wait(&self, now: Instant) -> Option<Duration> {
        let silence = self.limit.map(|limit| {
            let next = if self.pinged { limit } else { limit / 2 };
            (self.heard + next).saturating_duration_since(now)
        });
        let frame = self
            .frame_deadline
            .map(|d| d.saturating_duration_since(now));
        let alarm = self.alarm.map(|a| a.saturating_duration_since(now));
        [silence, frame, alarm].into_iter().flatten().min()
    }

    /// A read timed out after `slept` though it asked for `asked`: forgive
    /// a pause, then check the deadlines.
    fn timed_out(&mut self, asked: Duration, slept: Duration) -> io::Result<()> {
        if slept > asked + PAUSE_SLACK {
            let paused = slept - asked;
            self.heard += paused;
            if let Some(d) = self.frame_deadline.as_mut() {
                *d += paused;
            }
        }
        let now = Instant::now();
        if self.frame_deadline.is_some_and(|d| now >= d) {
            self.frame_expired = true;
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "line not finished in time",
            ));
        }
        if self.alarm.is_some_and(|a| now >= a) {
            self.alarm = None;
            self.alarm_gone = true;
            self.rang = true;
            return Err(io::Error::new(ErrorKind::TimedOut, "the alarm went off"));
        }
        let Some(limit) = self.limit else {
            // No silence watch: a wake-up with no deadline passed is only
            // a timeout kept from before; read again.
            return Ok(());
        };
        let silent = now.saturating_duration_since(self.heard);
        if silent >= limit && self.pinged {
            self.expired = true;
            return Err(io::Error::new(ErrorKind::TimedOut, "silent for too long"));
        }
        if silent >= limit / 2 && !self.pinged {
            self.pinged = true;
            // The answer gets at least half of the limit from now.
            self.heard = self.heard.max(now.checked_sub(limit / 2).unwrap_or(now));
            (self.ping)()?;
        }
        Ok(())
    }
}

impl<S: Borrow<TcpStream>, P: FnMut() -> io::Result<()>> Read for SilenceWatch<S, P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let start = Instant::now();
            let wait = self.set_timeout(self.next_wait(start))?;
            let err = match self.stream.borrow().read(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.heard = Instant::now();
                        self.pinged = false;
                        match self.frame_deadline {
                            None => self.frame_deadline = self.line_limit.map(|l| self.heard + l),
                            // Bytes keep coming, but the line is late.
                            Some(d) if self.heard >= d => {
                                self.frame_expired = true;
                                return Err(io::Error::new(
                                    ErrorKind::TimedOut,
                                    "line not finished in time",
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                    return Ok(n);
                }
                Err(e) => e,
            };
            let Some(asked) = wait else {
                return Err(err);
            };
            if !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                return Err(err);
            }
            self.timed_out(asked, start.elapsed())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        (peer, stream)
    }

    #[test]
    fn pings_at_half_then_expires() {
        let (_peer, stream) = pair();
        let mut pings = 0;
        let start = Instant::now();
        let limit = Duration::from_millis(120);
        let mut watch = SilenceWatch::new(stream, Some(limit), || {
            pings += 1;
            Ok(())
        });
        let err = watch.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(watch.expired());
        assert!(start.elapsed() >= limit);
        drop(watch);
        assert_eq!(pings, 1);
    }

    #[test]
    fn a_line_at_a_time_does_not_reset_the_socket_timeout_each_time() {
        let (mut peer, stream) = pair();
        let mut watch = SilenceWatch::new(stream, None, || Ok(()))
            .with_line_limit(Some(Duration::from_secs(30)));
        let mut set = Vec::new();
        for _ in 0..5 {
            peer.write_all(b"h").unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(watch.read(&mut buf).unwrap(), 1);
            peer.write_all(b"i\n").unwrap();
            assert_eq!(watch.read(&mut buf).unwrap(), 2);
            watch.frame_done(false);
            set.push(watch.timeout);
        }
        // Set once, for the first line's deadline, and then kept: neither
        // cleared between lines nor set again for each line.
        assert!(
            set[0].is_some_and(|t| t > Duration::from_secs(15)),
            "{set:?}"
        );
        assert!(set.windows(2).all(|w| w[0] == w[1]), "{set:?}");
    }

    #[test]
    fn the_alarm_wakes_the_reader_once() {
        let (mut peer, stream) = pair();
        let mut watch = SilenceWatch::new(stream, None, || Ok(()));
        let start = Instant::now();
        watch.set_alarm(Some(start + Duration::from_millis(50)));
        let mut buf = [0u8; 8];
        let err = watch.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(watch.take_alarm());
        assert!(!watch.take_alarm(), "once");
        assert!(!watch.expired() && !watch.frame_expired());
        // Off now: the next read waits for bytes, with no timeout left
        // over from the alarm.
        peer.write_all(b"x").unwrap();
        assert_eq!(watch.read(&mut buf).unwrap(), 1);
        assert_eq!(watch.timeout, None);
    }

    #[test]
    fn a_started_line_has_a_deadline_even_when_bytes_trickle_in() {
        let (mut peer, stream) = pair();
        let limit = Duration::from_millis(300);
        let mut watch = SilenceWatch::new(stream, None, || Ok(())).with_line_limit(Some(limit));
        peer.write_all(b"hel").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(watch.read(&mut buf).unwrap(), 3);
        let start = Instant::now();
        let err = loop {
            // One byte now and then keeps the line alive, but not for ever.
            let _ = peer.write_all(b"l");
            match watch.read(&mut buf) {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(watch.frame_expired());
        assert!(start.elapsed() < Duration::from_secs(30));
        // A finished frame stops the clock: silence is then fine.
        watch.frame_done(false);
        assert!(watch.next_wait(Instant::now()).is_none());
    }
}
