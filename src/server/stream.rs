//! An event stream (`GET /events`): a browser or `curl -N` as a client
//! like a TCP one.
//!
//! # A client like any other
//!
//! The stream's connection is admitted against `--max-clients` and
//! `--max-per-ip` ([`admit_conn`], as for TCP), becomes a [`Conn`] in the
//! client map with the wire format [`Wire::Sse`], joins the broadcaster,
//! and from then on gets every broadcast through the same fan-out and the
//! same outbox as a TCP client: a stream that does not read is dropped as
//! `slow-consumer` by the same rule. Its life:
//!
//! 1. **Greet.** Queue the HTTP head and `event: welcome` (the `WELCOME`
//!    line); `event: gap` `restart` if it asked to resume a run of the
//!    server that is over.
//! 2. **Join.** Hand the broadcaster a `JOIN` together with what the URL
//!    asked for (`key=`, `name=`, `since=`/`Last-Event-ID`), done there in
//!    one step so that the replay and the live events meet exactly.
//! 3. **Wait.** A stream never speaks, so its thread only reads the socket
//!    to notice the end (EOF: `LEAVE … closed`), and every
//!    [`KEEPALIVE_EVERY`] sends `: keepalive`. `--idle-timeout` does not
//!    apply.
//! 4. **End**, exactly like a TCP session (`session::finish`): `/quit`
//!    posted for it ends it with `event: bye`.
//!
//! Its [`Client`] (rate limit, payload order) is shared with the `POST
//! /line` and `/data` requests made for it, found by its KEY.

use super::accept::{Refused, admit_conn};
use super::broadcaster::{Inbox, StreamStart};
use super::command::{Client, End, Outcome};
use super::conn::{Conn, ReadHalf};
use super::http_door::HttpDoor;
use super::session::{self, BUDGET_WAIT};
use super::wire::Wire;
use crate::http::sse::{self, KEEPALIVE, KEEPALIVE_EVERY, ResumePoint};
use crate::http::{Cors, HttpError, Request, Response};
use crate::protocol::{ErrorCode, Reason, ServerLine};
use bytes::Bytes;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

/// An open stream, as the requests posted for it see it.
pub(crate) struct Stream {
    client: Mutex<Client>,
    /// Set by a posted `/quit`: the stream ends with `BYE quit`.
    quit: AtomicBool,
}

/// Serves one event stream, on the connection that asked for it, to its end.
pub(crate) fn run(
    door: &HttpDoor,
    socket: TcpStream,
    peer: SocketAddr,
    request: &Request,
    cors: Cors,
) {
    let shared = &door.shared;
    let refuse = |e: HttpError, socket: &TcpStream| {
        let _ = e
            .to_response()
            .headers(cors.headers())
            .write_to(socket, false, true);
    };
    let asked = match sse::resume_point(request) {
        Ok(asked) => asked,
        Err(e) => return refuse(e, &socket),
    };
    let conn = match admit_conn(shared, socket, peer, Wire::Sse) {
        Ok(conn) => conn,
        Err(Refused { reason, stream }) => {
            let text = match reason {
                Reason::TooManyConnections => "too many streams from your address",
                _ => "the server has no room for another client",
            };
            if let Some(socket) = stream {
                refuse(HttpError::new(503, reason.as_str(), text), &socket);
            }
            return;
        }
    };
    let stream = Arc::new(Stream {
        client: Mutex::new(Client::new(Arc::clone(shared), Arc::clone(&conn))),
        quit: AtomicBool::new(false),
    });
    let head = Response::event_stream().headers(cors.headers());
    // Findable by its KEY before anyone can know the KEY: the welcome
    // below is the first place it appears.
    door.streams
        .lock()
        .insert(conn.key.clone(), Arc::clone(&stream));
    // As in a session, a bug costs this client its connection (`error`).
    let serve = std::panic::AssertUnwindSafe(|| {
        // Held from the welcome until the JOIN is handed over: a request
        // posted with the KEY the welcome shows waits until then.
        let mut client = stream.client.lock();
        let started = greet(&conn, &shared.epoch.get(), head, asked.as_ref())
            .and_then(|since| join(door, &mut client, request, since));
        drop(client);
        match started {
            Ok(()) => watch(&conn),
            Err(end) => end,
        }
    });
    let end = std::panic::catch_unwind(serve).unwrap_or(End::Silent(Reason::Error));
    door.streams.lock().remove(&conn.key);
    let end = if stream.quit() {
        End::Bye(Reason::Quit)
    } else {
        end
    };
    session::finish(&mut stream.client.lock(), true, end);
}

/// Queues the HTTP head, `event: welcome` and, for a resume point of
/// another server run, `event: gap` `restart`. Returns the SEQ to replay
/// after, if it is this run's.
fn greet(
    conn: &Arc<Conn>,
    epoch: &str,
    head: Response,
    asked: Option<&ResumePoint>,
) -> Result<Option<u64>, End> {
    let head = Bytes::from(head.encode(false, false, SystemTime::now()));
    let welcome = session::welcome_line(conn, epoch);
    let mut chunks = vec![head, sse::welcome(welcome.as_bytes())];
    let since = match asked {
        Some(point) if point.epoch == epoch => Some(point.seq),
        Some(_) => {
            chunks.push(sse::gap_restart());
            None
        }
        None => None,
    };
    conn.send(&chunks)?;
    Ok(since)
}

/// Lists the stream's client, and hands its `JOIN` (with what its URL
/// asked for) to the broadcaster.
fn join(
    door: &HttpDoor,
    client: &mut Client,
    request: &Request,
    since: Option<u64>,
) -> Result<(), End> {
    let conn = Arc::clone(&client.conn);
    let Some(name) = door.shared.registry.list(conn.id) else {
        return Err(End::Silent(conn.reason().unwrap_or(Reason::Closed)));
    };
    let start = StreamStart {
        since,
        key: request.query("key").map(str::to_string),
        name: request.query("name").map(str::to_string),
    };
    client.hand_over(Inbox::Join {
        conn: Arc::clone(&conn),
        name,
        stream: Some(start),
    })
}

/// Waits for the stream's end, sending `: keepalive` while it is quiet:
/// the socket is read with a timeout of a third of [`KEEPALIVE_EVERY`],
/// and a stream to which nothing was queued for two thirds of it gets one,
/// so it is never quiet for longer than [`KEEPALIVE_EVERY`].
fn watch(conn: &Arc<Conn>) -> End {
    let read_half = ReadHalf(Arc::clone(conn));
    let socket: &TcpStream = read_half.borrow();
    let _ = socket.set_read_timeout(Some(KEEPALIVE_EVERY / 3));
    let mut buf = [0u8; 512];
    let mut queued = conn.bytes_out.load(Ordering::Relaxed);
    let mut last_sent = Instant::now();
    loop {
        match (&*socket).read(&mut buf) {
            Ok(0) => return End::Silent(Reason::Closed),
            // A stream has nothing to say; whatever it sends is ignored.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let now_queued = conn.bytes_out.load(Ordering::Relaxed);
                if now_queued != queued {
                    (queued, last_sent) = (now_queued, Instant::now());
                } else if last_sent.elapsed() >= KEEPALIVE_EVERY * 2 / 3 {
                    if let Err(e) = conn.send(&[Bytes::from_static(KEEPALIVE)]) {
                        return e.into();
                    }
                    (queued, last_sent) = (conn.bytes_out.load(Ordering::Relaxed), Instant::now());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return End::Silent(Reason::Closed),
        }
    }
}

impl Stream {
    /// `POST /line`: one line, through the same checks and commands as a
    /// TCP line; the replies become the answer.
    pub(crate) fn post_line(&self, body: &[u8]) -> Result<Response, HttpError> {
        let mut client = self.client.lock();
        let max_line = client.shared.config.max_line;
        let line = crate::http::route::line_body(body, max_line)?;
        if line.is_empty() {
            return Ok(Response::new(204));
        }
        let mut replies = Vec::new();
        match client.line(line, &mut replies) {
            Ok(Outcome::Quit) => {
                self.quit.store(true, Ordering::SeqCst);
                client.conn.stop_reading();
                let bye = ServerLine::Bye(Reason::Quit).to_line();
                Ok(Response::text(200, bye))
            }
            Ok(_) if replies.is_empty() => Ok(Response::new(204)),
            Ok(_) => match HttpError::from_err_line(&String::from_utf8_lossy(&replies)) {
                Some(error) => Err(error),
                None => Ok(Response::text(200, String::from_utf8_lossy(&replies))),
            },
            Err(_) => Err(HttpError::new(503, "shutdown", "this stream is ending")),
        }
    }

    /// `POST /data`: the body as `DATA`, through the payload lane and the
    /// `--max-memory` budget, costing lines of `--max-rate` like `/send`.
    pub(crate) fn post_data(&self, body: Vec<u8>) -> Result<Response, HttpError> {
        let mut client = self.client.lock();
        client.conn.lines_in.fetch_add(1, Ordering::Relaxed);
        let cost = 1.0 + body.len() as f64 / client.shared.config.max_line as f64;
        if !client.rate_allows(cost) {
            let text = client.rate_text();
            return Err(HttpError::from_code(ErrorCode::RateLimited, text));
        }
        let deadline = Instant::now() + BUDGET_WAIT;
        let Some(reservation) = client.shared.budget.reserve(body.len(), deadline) else {
            let text = "the server is busy with other payloads; send it again";
            return Err(HttpError::from_code(ErrorCode::RateLimited, text));
        };
        client
            .publish_payload(body, reservation)
            .map_err(|_| HttpError::new(503, "shutdown", "this stream is ending"))?;
        Ok(Response::new(204))
    }

    /// Whether a posted `/quit` ended the stream.
    fn quit(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }
}
