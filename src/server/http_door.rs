//! The HTTP door (`--http ADDR`): its acceptor thread, one thread per HTTP
//! connection, and the answers to plain requests.
//!
//! # Threads
//!
//! Like the TCP side: a `tickcast-http` thread blocks in `accept()` and
//! starts one small thread per connection ([`HTTP_STACK`]). A connection
//! reads requests one after another (keep-alive) with the parts in
//! [`crate::http`]: the head within [`HEAD_TIMEOUT`], the door's checks
//! ([`http::admit`]), the body within its limit, then the answer.
//!
//! A `GET /events` request turns its thread into an event stream: the
//! connection becomes a client like a TCP one (see `stream`), counted by
//! `--max-clients`. Plain requests are not clients, so they are bounded by
//! their own cap, [`MAX_PLAIN_HTTP`] connections at once: a flood of idle
//! connections costs at most that many sleeping threads (each cut off
//! after [`HEAD_TIMEOUT`]); the one over it gets `503` and is closed.
//!
//! # Stopping
//!
//! The acceptor is woken like the TCP one (a connection to itself; see
//! `accept::Waker`). It then shuts the reading side of every plain
//! connection, so their threads leave their reads at once, and joins
//! every thread it started; streams end like TCP sessions, when the
//! shutdown sequence stops their reads.

use super::Shared;
use super::stream::{self, Stream};
use crate::http::response::CONTINUE;
use crate::http::stats::{METRICS_CONTENT_TYPE, render_metrics, render_stats_json};
use crate::http::{
    self, Access, Door, HttpError, ReadError, Request, RequestReader, Response, Route,
};
use crate::protocol::{ErrorCode, Reason, text_from_bytes};
use crossbeam_channel::{Sender, unbounded};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A request head must be complete this long after the connection opened
/// (or after the previous answer on a kept-alive connection).
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Plain HTTP connections (not streams) open at once.
pub(crate) const MAX_PLAIN_HTTP: usize = 256;

/// Plain HTTP connections one address may hold at once, so that one
/// machine cannot take every slot of [`MAX_PLAIN_HTTP`] for itself.
pub(crate) const MAX_PLAIN_HTTP_PER_IP: usize = 32;

/// After an error answer, how long unread request bytes are drained
/// before the socket closes (closing with unread bytes sends a reset,
/// which can destroy the answer before the client reads it).
const LINGER: Duration = Duration::from_millis(500);

/// Stack size of an HTTP connection's thread: a little more than a
/// session's, for JSON and page rendering.
const HTTP_STACK: usize = 256 * 1024;

/// What the HTTP threads share.
pub(crate) struct HttpDoor {
    pub shared: Arc<Shared>,
    pub access: Access,
    /// Open streams by KEY: whom `POST /line` and `/data` act for.
    pub streams: Mutex<HashMap<String, Arc<Stream>>>,
    /// Plain connections by number, to wake them at shutdown.
    plain: Mutex<HashMap<u64, Arc<TcpStream>>>,
    plain_count: AtomicUsize,
    /// Plain connections per client address.
    plain_per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Starts the HTTP acceptor on `listener`.
pub(crate) fn spawn(shared: Arc<Shared>, listener: TcpListener) -> io::Result<JoinHandle<()>> {
    let config = &shared.config;
    let access = Access::new(config.token.clone(), config.http_origins.clone());
    let door = Arc::new(HttpDoor {
        shared,
        access,
        streams: Mutex::default(),
        plain: Mutex::default(),
        plain_count: AtomicUsize::new(0),
        plain_per_ip: Mutex::default(),
    });
    socket2::SockRef::from(&listener).listen(super::LISTEN_BACKLOG)?;
    thread::Builder::new()
        .name("tickcast-http".into())
        .spawn(move || door.run(listener))
}

impl HttpDoor {
    fn run(self: Arc<Self>, listener: TcpListener) {
        let (done_tx, done_rx) = unbounded();
        let mut threads: HashMap<u64, JoinHandle<()>> = HashMap::new();
        let mut next = 0;
        loop {
            let accepted = listener.accept();
            if self.shared.is_stopping() {
                break;
            }
            for n in done_rx.try_iter() {
                if let Some(handle) = threads.remove(&n) {
                    let _ = handle.join();
                }
            }
            match accepted {
                Ok((socket, peer)) => {
                    next += 1;
                    if let Some(handle) = self.start(next, socket, peer, &done_tx) {
                        threads.insert(next, handle);
                    }
                }
                // Out of descriptors, most likely: do not spin.
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
        drop(listener);
        for socket in self.plain.lock().values() {
            let _ = socket.shutdown(Shutdown::Read);
        }
        for (_, handle) in threads {
            let _ = handle.join();
        }
    }

    /// Starts a connection's thread, unless too many are open.
    fn start(
        self: &Arc<Self>,
        n: u64,
        socket: TcpStream,
        peer: SocketAddr,
        done: &Sender<u64>,
    ) -> Option<JoinHandle<()>> {
        if let Err(busy) = self.count_plain(peer.ip()) {
            let _ = socket.set_nonblocking(true);
            let _ = busy.to_response().write_to(&socket, false, true);
            return None;
        }
        let _ = socket.set_nodelay(true);
        // A plain answer is written by this connection's own thread, with a
        // blocking write: one that does not read gets `--write-timeout-ms`
        // and is closed. (A stream, once it is one, goes through an outbox
        // like any client.)
        let _ = socket.set_write_timeout(Some(self.shared.config.write_timeout));
        let socket = Arc::new(socket);
        self.plain.lock().insert(n, Arc::clone(&socket));
        let door = Arc::clone(self);
        let done = done.clone();
        let spawned = thread::Builder::new()
            .name(format!("tickcast-http-{n}"))
            .stack_size(HTTP_STACK)
            .spawn(move || {
                door.connection(n, socket, peer);
                let _ = done.send(n);
            });
        if spawned.is_err() {
            self.plain.lock().remove(&n);
            self.uncount_plain(peer.ip());
        }
        spawned.ok()
    }

    /// Counts one more plain connection from `ip`, unless that is one too
    /// many in all or for that address.
    fn count_plain(&self, ip: IpAddr) -> Result<(), HttpError> {
        let ip = ip.to_canonical();
        let mut per_ip = self.plain_per_ip.lock();
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= MAX_PLAIN_HTTP_PER_IP {
            let text = "too many HTTP connections from your address";
            return Err(HttpError::new(503, "too-many-connections", text));
        }
        if self.plain_count.fetch_add(1, Ordering::SeqCst) >= MAX_PLAIN_HTTP {
            self.plain_count.fetch_sub(1, Ordering::SeqCst);
            return Err(HttpError::new(
                503,
                "server-full",
                "too many HTTP connections",
            ));
        }
        *from_ip += 1;
        Ok(())
    }

    fn uncount_plain(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        self.plain_count.fetch_sub(1, Ordering::SeqCst);
        let mut per_ip = self.plain_per_ip.lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// One connection: requests until it closes, or until one of them
    /// turns it into an event stream.
    fn connection(&self, n: u64, socket: Arc<TcpStream>, peer: SocketAddr) {
        // A bug in answering one request costs that connection, not the
        // count of open connections.
        let requests = std::panic::AssertUnwindSafe(|| self.requests(&socket));
        let stream_request = std::panic::catch_unwind(requests).unwrap_or(None);
        // No longer a plain connection, whatever happens next.
        self.plain.lock().remove(&n);
        self.uncount_plain(peer.ip());
        if let Some((request, cors)) = stream_request
            && let Ok(socket) = Arc::try_unwrap(socket)
        {
            stream::run(self, socket, peer, &request, cors);
        }
    }

    /// Answers requests on one connection. Returns a `GET /events`
    /// request that passed the door, for the caller to serve as a stream.
    fn requests(&self, socket: &TcpStream) -> Option<(Request, http::Cors)> {
        let mut reader = RequestReader::new(socket);
        loop {
            let deadline = Instant::now() + HEAD_TIMEOUT;
            let request = match reader.read_head(deadline) {
                Ok(request) => request,
                Err(e) => {
                    let answer = HttpError::from_read(&e, ErrorCode::LineTooLong.as_str());
                    if let Some(answer) = answer {
                        let _ = answer.to_response().write_to(socket, false, true);
                        linger(socket);
                    }
                    return None;
                }
            };
            let head_only = request.method == http::Method::Head;
            let (response, mut close) = match http::admit(&self.access, &request) {
                Door::Enter(Route::Events, cors) if !head_only => return Some((request, cors)),
                Door::Enter(route, cors) => {
                    let (response, close) = self.serve(route, &request, &mut reader, deadline);
                    (response.headers(cors.headers()), close)
                }
                Door::Answer(response) => {
                    if request.path == Route::Events.path() && response.status() == 401 {
                        self.shared.counters.count_refused(Reason::AuthFailed);
                    }
                    // A body we did not read would be taken for the next head.
                    (response, request.content_length() > 0)
                }
            };
            close |= !request.keep_alive();
            if response.write_to(socket, head_only, close).is_err() {
                return None;
            }
            if close {
                if response.status() >= 400 {
                    linger(socket);
                }
                return None;
            }
        }
    }

    /// Reads the body a route takes, and answers the request. Returns the
    /// answer and whether the connection must close after it.
    fn serve(
        &self,
        route: Route,
        request: &Request,
        reader: &mut RequestReader<&TcpStream>,
        deadline: Instant,
    ) -> (Response, bool) {
        let config = &self.shared.config;
        let limit = route.body_limit(config.max_line, config.max_payload);
        if request.expects_continue() && request.content_length() <= limit {
            let mut socket: &TcpStream = reader.get_ref();
            let _ = socket.write_all(CONTINUE);
        }
        let body = match reader.read_body(request, limit, deadline) {
            Ok(body) => body,
            Err(e) => {
                let answer = HttpError::from_read(&e, route.too_large_code());
                let answer = answer.unwrap_or_else(|| read_failed(&e));
                return (answer.into(), true);
            }
        };
        let answer = match route {
            Route::Page | Route::Script | Route::Style => Ok(static_file(route)),
            Route::Healthz if self.shared.is_stopping() => Err(HttpError::new(
                503,
                "shutdown",
                "the server is shutting down",
            )),
            Route::Healthz => Ok(Response::text(200, "ok\n")),
            Route::Stats => Ok(Response::with_body(
                200,
                "application/json",
                render_stats_json(&self.shared.snapshot()),
            )),
            Route::Metrics => Ok(Response::with_body(
                200,
                METRICS_CONTENT_TYPE,
                render_metrics(&self.shared.snapshot(), &self.shared.counters),
            )),
            Route::Notify => self.notify(&body),
            Route::Line => self.stream_for(request).and_then(|s| s.post_line(&body)),
            Route::Data => self.stream_for(request).and_then(|s| s.post_data(body)),
            // `HEAD /events`: the head a stream would have, and no stream.
            Route::Events => return (Response::event_stream(), true),
        };
        (answer.unwrap_or_else(Response::from), false)
    }

    /// `POST /notify`: a `TICK` to everyone, as `ServerHandle::notify`.
    fn notify(&self, body: &[u8]) -> Result<Response, HttpError> {
        let line = http::route::line_body(body, self.shared.config.max_line)?;
        let text = text_from_bytes(line).map_err(|e| {
            HttpError::from_code(e.code(), format!("a notification is one line of text: {e}"))
        })?;
        if text.is_empty() {
            return Err(HttpError::from_code(ErrorCode::BadArgs, "nothing to say"));
        }
        let notify = super::broadcaster::Inbox::Notify {
            text: text.to_string(),
        };
        self.shared
            .inbox
            .send(notify)
            .map_err(|_| HttpError::new(503, "shutdown", "the server is shutting down"))?;
        Ok(Response::new(204))
    }

    /// The open stream named by `Tickcast-Key` or `key=`.
    fn stream_for(&self, request: &Request) -> Result<Arc<Stream>, HttpError> {
        let key = request.header("tickcast-key").or(request.query("key"));
        let key = key.map(str::trim).unwrap_or_default();
        self.streams.lock().get(key).cloned().ok_or_else(|| {
            let text = "that key names no open stream (Tickcast-Key or key=)";
            HttpError::from_code(ErrorCode::BadKey, text)
        })
    }
}

/// A page file, with the policy that keeps it self-contained.
/// Closes our side and reads (and drops) what the client still sends, for
/// at most [`LINGER`] and 1 MiB, so that the kernel does not answer those
/// bytes with a reset that could destroy our answer in flight.
fn linger(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn static_file(route: Route) -> Response {
    let (content_type, text) = route.static_file().expect("a page file");
    Response::with_body(200, content_type, text)
        .header("Content-Security-Policy", http::route::PAGE_CSP)
        .header("Cache-Control", "no-cache")
}

/// The answer to a body that could not be read and has no status of its
/// own (a timeout, a reset): nobody will read it, but it says what happened.
fn read_failed(e: &ReadError) -> HttpError {
    HttpError::from_code(ErrorCode::BadArgs, e.to_string())
}
