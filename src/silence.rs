//! Reading a socket while watching for silence: the server's
//! `--idle-timeout` and the client's keepalive are the same idea.
//!
//! [`SilenceWatch`] wraps the reading half of a socket. After half of the
//! allowed silence without a byte it calls its `ping` function once (the
//! server sends `PING`, the client `/ping`); after all of it, the read
//! fails with [`ErrorKind::TimedOut`] and [`SilenceWatch::expired`] says
//! why. Any byte received starts the count again.
//!
//! It works with the socket's read timeout, set to the time left until the
//! next deadline, so a quiet connection costs no CPU: the thread sleeps in
//! `read` until a byte arrives or a deadline passes.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The shortest read timeout used (a zero timeout would mean "none").
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A socket's reading half, with a watch on silence; see the module docs.
pub(crate) struct SilenceWatch<P> {
    stream: TcpStream,
    /// How much silence is allowed; `None`: no watch at all.
    limit: Option<Duration>,
    /// When the last byte arrived.
    heard: Instant,
    /// Whether `ping` was called since then.
    pinged: bool,
    /// The read timeout currently set on the socket.
    timeout: Option<Duration>,
    /// The whole limit passed without a byte.
    expired: bool,
    ping: P,
}

impl<P: FnMut() -> io::Result<()>> SilenceWatch<P> {
    /// Watches `stream` for `limit` of silence (none: just reads).
    pub(crate) fn new(stream: TcpStream, limit: Option<Duration>, ping: P) -> Self {
        let timeout = limit.map(|l| (l / 2).max(MIN_WAIT));
        // Fails only for a zero duration, which MIN_WAIT rules out.
        let _ = stream.set_read_timeout(timeout);
        SilenceWatch {
            stream,
            limit,
            heard: Instant::now(),
            pinged: false,
            timeout,
            expired: false,
            ping,
        }
    }

    /// Whether the read failed because the peer was silent for too long.
    pub(crate) fn expired(&self) -> bool {
        self.expired
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(MIN_WAIT);
        if self.timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }
}

impl<P: FnMut() -> io::Result<()>> Read for SilenceWatch<P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let err = match (&self.stream).read(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.heard = Instant::now();
                        if self.pinged {
                            // Back to waiting for the half-way mark.
                            self.pinged = false;
                            if let Some(limit) = self.limit {
                                self.set_timeout(limit / 2)?;
                            }
                        }
                    }
                    return Ok(n);
                }
                Err(e) => e,
            };
            let Some(limit) = self.limit else {
                return Err(err);
            };
            if !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                return Err(err);
            }
            let silent = self.heard.elapsed();
            if silent >= limit {
                self.expired = true;
                return Err(io::Error::new(ErrorKind::TimedOut, "silent for too long"));
            }
            if silent >= limit / 2 && !self.pinged {
                self.pinged = true;
                (self.ping)()?;
            }
            // Sleep until the next deadline.
            let next = if self.pinged { limit } else { limit / 2 };
            self.set_timeout(next.saturating_sub(silent))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn pings_at_half_then_expires() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
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
}
