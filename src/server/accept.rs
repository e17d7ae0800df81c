//! The acceptor thread: admits connections, starts their sessions, and at
//! the end runs the shutdown sequence.
//!
//! # Accepting
//!
//! `TcpListener::accept` blocks, which is what we want: the thread costs
//! nothing while nobody connects. Each accepted stream is checked against
//! `--max-clients` and `--max-per-ip` (refused ones get their `BYE` line
//! alone), then handed to a new session thread. Session threads get a
//! small explicit stack ([`SESSION_STACK`]): a session keeps its buffers on
//! the heap, so thousands of sessions cost little memory.
//!
//! An `accept` error (say, out of file descriptors) must not kill the
//! server: the thread reports it, waits a little (longer each time, and
//! interruptible by shutdown) and tries again.
//!
//! # Stopping a blocked `accept`
//!
//! std offers no way to interrupt `accept`. The standard trick (tiny-http
//! does the same) is used: [`ServerHandle::shutdown`](super::ServerHandle::shutdown)
//! sets a flag and then *connects to the listener itself*; `accept`
//! returns that connection, the loop sees the flag, and stops. No polling.
//!
//! # The shutdown sequence
//!
//! 1. Stop admitting, and close the *reading* side of every connection:
//!    each session's blocked `read` returns, and the session ends without
//!    announcing a `LEAVE` (none is sent at shutdown).
//! 2. Join every session thread. Now nobody can add to the broadcaster's
//!    inbox: what is in it is exactly what the server accepted.
//! 3. Tell the broadcaster to stop. It delivers everything in its inbox,
//!    then returns; join it.
//! 4. Send `BYE shutdown` to every connection still open (one shared write
//!    deadline for all of them), close them, return.

use super::conn::{Conn, Delivery, deliver};
use super::event::ServerEvent;
use super::{Shared, session};
use crate::protocol::{Reason, ServerLine, to_hex};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Stack size of a session thread. Sessions keep buffers on the heap;
/// this leaves ample room for their call depth.
pub(crate) const SESSION_STACK: usize = 128 * 1024;

/// Backoff after a failed `accept`: first and longest wait.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Acceptor {
    pub shared: Arc<Shared>,
    pub listener: TcpListener,
    /// Wakes the backoff wait at shutdown.
    pub wake: Receiver<()>,
    pub broadcaster: JoinHandle<()>,
    /// Tells the broadcaster to deliver what it holds and stop.
    pub stop_broadcaster: Sender<()>,
    /// Dropped when this thread ends: closes `ServerHandle::finished`.
    pub done: Sender<()>,
}

impl Acceptor {
    /// The thread's body: accept until shutdown, then shut down.
    pub(crate) fn run(self) {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut sessions: HashMap<super::ClientId, JoinHandle<()>> = HashMap::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = self.listener.accept();
            if self.shared.is_stopping() {
                break;
            }
            // Join the sessions that have finished since the last accept.
            for id in done_rx.try_iter() {
                if let Some(handle) = sessions.remove(&id) {
                    let _ = handle.join();
                }
            }
            match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    if let Some((id, handle)) = self.admit(stream, peer, &done_tx) {
                        sessions.insert(id, handle);
                    }
                }
                Err(e) => {
                    self.shared.emit(ServerEvent::AcceptFailed {
                        error: e.to_string(),
                    });
                    let _ = self.wake.recv_timeout(backoff);
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
        self.shut_down(sessions);
    }

    /// Checks the limits and starts a session; `None` if refused.
    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        done: &Sender<super::ClientId>,
    ) -> Option<(super::ClientId, JoinHandle<()>)> {
        let config = &self.shared.config;
        // Small lines must not wait for more data (Nagle), and no write
        // may block forever.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(config.write_timeout));
        let mut key = [0u8; 16];
        let setup = getrandom::fill(&mut key)
            .map_err(std::io::Error::other)
            .and_then(|()| stream.try_clone());
        let writer = match setup {
            Ok(writer) => writer,
            Err(e) => {
                self.shared.emit(ServerEvent::AcceptFailed {
                    error: e.to_string(),
                });
                return None;
            }
        };
        let limits = super::registry::Admission {
            max_clients: config.max_clients,
            max_per_ip: config.max_per_ip,
        };
        let admitted = self.shared.registry.admit(peer, limits, |id| {
            Conn::new(id, peer, to_hex(&key), writer, config.write_timeout)
        });
        let conn = match admitted {
            Ok(conn) => conn,
            Err(reason) => {
                // A refused connection gets its BYE line alone.
                let _ = (&stream).write_all(ServerLine::Bye(reason).to_line().as_bytes());
                self.shared.emit(ServerEvent::Refused { peer, reason });
                return None;
            }
        };
        let id = conn.id;
        self.shared.emit(ServerEvent::Connected { id, peer });
        let shared = Arc::clone(&self.shared);
        let done = done.clone();
        let session_conn = Arc::clone(&conn);
        let spawned = thread::Builder::new()
            .name(format!("tickcast-session-{id}"))
            .stack_size(SESSION_STACK)
            .spawn(move || {
                session::run(shared, session_conn, stream);
                let _ = done.send(id);
            });
        match spawned {
            Ok(handle) => Some((id, handle)),
            Err(e) => {
                // No thread to serve it: out of resources.
                self.shared.emit(ServerEvent::AcceptFailed {
                    error: format!("cannot start a session thread: {e}"),
                });
                self.shared.registry.claim_close(&conn, Reason::ServerFull);
                conn.send_last(ServerLine::Bye(Reason::ServerFull).to_line().as_bytes());
                conn.shutdown();
                self.shared.registry.remove(id);
                None
            }
        }
    }

    fn shut_down(self, sessions: HashMap<super::ClientId, JoinHandle<()>>) {
        let Acceptor {
            shared,
            listener,
            broadcaster,
            stop_broadcaster,
            done,
            ..
        } = self;
        drop(listener);

        // 1. Admit nobody; wake every session out of its read.
        let conns = shared.registry.close_doors();
        for conn in &conns {
            conn.shutdown_read();
        }
        // 2. Wait for every session to end.
        for (_, handle) in sessions {
            let _ = handle.join();
        }
        // 3. Deliver what was accepted.
        let _ = stop_broadcaster.send(());
        let _ = broadcaster.join();
        // 4. Say goodbye to every connection still open.
        let still_open: Vec<&Arc<Conn>> = conns
            .iter()
            .filter(|c| shared.registry.claim_close(c, Reason::Shutdown).is_some())
            .collect();
        let bye = [ServerLine::Bye(Reason::Shutdown).to_line()];
        let deliveries: Vec<Delivery<'_, String>> = still_open
            .iter()
            .map(|conn| Delivery {
                conn,
                chunks: &bye,
                last: true,
            })
            .collect();
        deliver(&deliveries, shared.config.write_timeout);
        for conn in still_open {
            conn.shutdown();
        }
        drop(done);
    }
}

/// The address to connect to in order to wake our own `accept`: the
/// listener's, with a wildcard IP replaced by loopback.
pub(crate) fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(std::net::Ipv6Addr::LOCALHOST),
        }
    }
    addr
}
