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
//! An `accept` error must not kill the server: the thread reports it,
//! waits a little (longer each time, and interruptible by shutdown) and
//! tries again. Out of file descriptors is special: the connection waits
//! in the kernel's queue, and `accept` would fail again and again while
//! the client waits for a `WELCOME` that never comes. So the acceptor
//! keeps one descriptor in reserve (an open `/dev/null`): on `EMFILE` it
//! closes the reserve, accepts the connection with the freed descriptor,
//! says `BYE server-full`, closes it, and takes the reserve again.
//!
//! # Stopping a blocked `accept`
//!
//! std offers no way to interrupt `accept`. The standard trick (tiny-http
//! does the same) is used: [`ServerHandle::shutdown`](super::ServerHandle::shutdown)
//! sets a flag and then *connects to the listener itself*; `accept`
//! returns that connection, the loop sees the flag, and stops. No polling.
//! The socket it connects with is made when the server starts ([`Waker`]),
//! so shutdown works even when every descriptor is in use.
//!
//! # The shutdown sequence
//!
//! 1. Stop admitting, and close the *reading* side of every connection:
//!    each session's blocked `read` returns, and the session ends without
//!    announcing a `LEAVE` (none is sent at shutdown).
//! 2. Join every session thread. Now nobody can add to the broadcaster's
//!    inbox: what is in it is exactly what the server accepted.
//! 3. Tell the broadcaster to stop. It hands everything in its inbox to
//!    the outboxes, then returns; join it.
//! 4. Queue `BYE shutdown` for every connection still open, and give the
//!    flusher one `--write-timeout-ms` to write what is queued; whoever has
//!    not taken it all by then is reset. Join the flusher.

use super::conn::Conn;
use super::event::ServerEvent;
use super::outbox::Limits;
use super::wire::Wire;
use super::{Shared, session};
use crate::protocol::{Reason, ServerLine, to_hex};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Stack size of a session thread. Sessions keep buffers on the heap;
/// this leaves ample room for their call depth.
pub(crate) const SESSION_STACK: usize = 128 * 1024;

/// `SO_SNDBUF` of every connection (Linux doubles it for its own
/// bookkeeping). Left alone, Linux grows a send buffer up to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default): a client reading one
/// byte a second in a room of 100 KB/s then fell 30 s behind before its
/// outbox noticed, with `--write-timeout-ms 1000` (now 3 s). The cost: one
/// client gets at most about 256 KiB per round trip (20 Mbit/s at 100 ms),
/// plenty for a chat and notification hub.
pub(crate) const SEND_BUFFER: usize = 128 * 1024;

/// Backoff after a failed `accept`: first and longest wait.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Acceptor {
    pub shared: Arc<Shared>,
    /// The HTTP acceptor (`--http`), which joins its own threads.
    pub http: Option<JoinHandle<()>>,
    pub listener: TcpListener,
    /// Wakes the backoff wait at shutdown.
    pub wake: Receiver<()>,
    pub broadcaster: JoinHandle<()>,
    /// Tells the broadcaster to deliver what it holds and stop.
    pub stop_broadcaster: Sender<()>,
    /// Stops what must outlive the broadcaster: a cluster node's room
    /// threads, which bring back its last events.
    pub stop_room: Option<AfterBroadcaster>,
    pub flusher: JoinHandle<()>,
    /// Tells the flusher to write what it can by a deadline and stop.
    pub stop_flusher: Sender<Instant>,
    /// Dropped when this thread ends: closes `ServerHandle::finished`.
    pub done: Sender<()>,
}

impl Acceptor {
    /// The thread's body: accept until shutdown, then shut down.
    pub(crate) fn run(self) {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut sessions: HashMap<super::ClientId, JoinHandle<()>> = HashMap::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut reserve = File::open("/dev/null").ok();
        loop {
            // Checked before `accept` too: at the fd limit, `turn_away_one`
            // may have taken the waker's connection, and this `accept`
            // would then wait for ever.
            if self.shared.is_stopping() {
                break;
            }
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
                Err(e) if out_of_descriptors(&e) && reserve.is_some() => {
                    self.shared.emit(ServerEvent::AcceptFailed {
                        error: e.to_string(),
                    });
                    drop(reserve.take());
                    self.turn_away_one();
                    reserve = File::open("/dev/null").ok();
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

    /// With the descriptor the reserve freed: accepts one connection and
    /// tells it `BYE server-full`, so it is not left waiting.
    fn turn_away_one(&self) {
        if let Ok((mut stream, peer)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            let _ = stream.write_all(ServerLine::Bye(Reason::ServerFull).to_line().as_bytes());
            self.shared.emit(ServerEvent::Refused {
                peer,
                reason: Reason::ServerFull,
            });
        }
    }

    /// Checks the limits and starts a session; `None` if refused.
    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        done: &Sender<super::ClientId>,
    ) -> Option<(super::ClientId, JoinHandle<()>)> {
        let conn = match admit_conn(&self.shared, stream, peer, Wire::Line) {
            Ok(conn) => conn,
            Err(Refused { reason, stream }) => {
                // A refused connection gets its BYE line alone. The
                // socket's buffer is empty, so this never waits.
                if let Some(stream) = stream {
                    let _ = stream.set_nonblocking(true);
                    let _ = (&stream).write_all(ServerLine::Bye(reason).to_line().as_bytes());
                }
                return None;
            }
        };
        let id = conn.id;
        let shared = Arc::clone(&self.shared);
        let done = done.clone();
        let session_conn = Arc::clone(&conn);
        let spawned = thread::Builder::new()
            .name(format!("tickcast-session-{id}"))
            .stack_size(SESSION_STACK)
            .spawn(move || {
                session::run(shared, session_conn);
                let _ = done.send(id);
            });
        match spawned {
            Ok(handle) => Some((id, handle)),
            Err(e) => {
                // No thread to serve it: out of resources.
                self.shared.emit(ServerEvent::AcceptFailed {
                    error: format!("cannot start a session thread: {e}"),
                });
                self.shared.registry.claim(&conn, Reason::ServerFull);
                conn.finish(&[Bytes::from(ServerLine::Bye(Reason::ServerFull).to_line())]);
                self.shared.registry.remove(id);
                None
            }
        }
    }

    fn shut_down(self, sessions: HashMap<super::ClientId, JoinHandle<()>>) {
        let Acceptor {
            shared,
            http,
            listener,
            broadcaster,
            stop_broadcaster,
            stop_room,
            flusher,
            stop_flusher,
            done,
            ..
        } = self;
        drop(listener);

        // 1. Admit nobody; wake every session out of its read.
        let conns = shared.registry.close_doors();
        for conn in &conns {
            conn.stop_reading();
        }
        // 2. Wait for every session to end, and for the HTTP door (it
        //    has been woken too, and joins its own threads).
        for (_, handle) in sessions {
            let _ = handle.join();
        }
        if let Some(http) = http {
            let _ = http.join();
        }
        // 3. Deliver what was accepted.
        let _ = stop_broadcaster.send(());
        let _ = broadcaster.join();
        if let Some(stop_room) = stop_room {
            stop_room();
        }
        // 4. Say goodbye to every connection still open, and give the
        //    flusher one write timeout to get it out.
        for conn in &conns {
            if shared.registry.claim(conn, Reason::Shutdown).won() {
                conn.finish(&[conn.wire.bye(Reason::Shutdown)]);
            }
        }
        let _ = stop_flusher.send(Instant::now() + shared.config.write_timeout);
        let _ = flusher.join();
        for conn in &conns {
            conn.close();
        }
        drop(done);
    }
}

/// What runs once the broadcaster has stopped (see [`Acceptor::stop_room`]).
pub(crate) type AfterBroadcaster = Box<dyn FnOnce() + Send>;

/// A connection the limits refused, with its socket (when it was not
/// used up) for the refusal.
pub(crate) struct Refused {
    pub reason: Reason,
    pub stream: Option<TcpStream>,
}

/// Admits a connection of either door against `--max-clients` and
/// `--max-per-ip`, gives it a key and a [`Conn`] in the client map, and
/// counts it. A refusal is counted and reported; the caller tells the
/// client.
pub(crate) fn admit_conn(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    wire: Wire,
) -> Result<Arc<Conn>, Refused> {
    let config = &shared.config;
    // Small lines must not wait for more data (Nagle).
    let _ = stream.set_nodelay(true);
    // Bytes in the kernel's send buffer count as sent: keep it small, so
    // that a client falling behind shows in its outbox, where
    // `--write-timeout-ms` and `--max-pending` see it.
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
    let mut key = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut key) {
        let error = e.to_string();
        shared.emit(ServerEvent::AcceptFailed { error });
        let (reason, stream) = (Reason::Error, None);
        return Err(Refused { reason, stream });
    }
    let limits = super::registry::Admission {
        max_clients: config.max_clients,
        max_per_ip: config.max_per_ip,
    };
    let outbox = Limits {
        max_pending: config.max_pending,
        max_age: config.write_timeout,
    };
    // The stream moves into the `Conn` only if admitted; a refused one
    // goes back to the caller for its refusal.
    let mut stream = Some(stream);
    // A cluster node takes a room-wide id from Redis (and, without Redis,
    // admits nobody: `BYE unavailable`).
    let given = match shared.room_id() {
        Ok(given) => given,
        Err(reason) => {
            shared.counters.count_refused(reason);
            shared.emit(ServerEvent::Refused { peer, reason });
            return Err(Refused { reason, stream });
        }
    };
    let admitted = shared.registry.admit(peer, limits, given, |id| {
        let stream = stream.take().expect("admit builds one Conn");
        Conn::new(id, peer, to_hex(&key), stream, wire, outbox, &shared.link)
    });
    match admitted {
        Ok(conn) => {
            shared.counters.count_connection(wire.transport());
            let id = conn.id;
            shared.emit(ServerEvent::Connected { id, peer });
            Ok(conn)
        }
        Err(reason) => {
            shared.counters.count_refused(reason);
            shared.emit(ServerEvent::Refused { peer, reason });
            Err(Refused { reason, stream })
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE)
    )
}

/// Wakes the acceptor out of `accept` by connecting to the listener. Its
/// socket is made when the server starts, so that waking needs no new
/// file descriptor: a server out of descriptors can still shut down.
#[derive(Debug)]
pub(crate) struct Waker {
    socket: Mutex<Option<Socket>>,
    address: SocketAddr,
}

impl Waker {
    pub(crate) fn new(listening_on: SocketAddr) -> std::io::Result<Self> {
        let address = wake_address(listening_on);
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        Ok(Waker {
            socket: Mutex::new(Some(socket)),
            address,
        })
    }

    /// Connects (once); `accept` returns.
    pub(crate) fn wake(&self) {
        if let Some(socket) = self.socket.lock().take() {
            // If this fails there is nothing else to try; the acceptor's
            // backoff wait is woken too (see `Shared::stop`).
            let _ = socket.connect_timeout(&SockAddr::from(self.address), Duration::from_secs(1));
        }
    }
}

/// The address to connect to in order to wake our own `accept`: the
/// listener's, with a wildcard IP replaced by loopback.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(std::net::Ipv6Addr::LOCALHOST),
        }
    }
    addr
}
