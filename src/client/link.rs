//! A link's thread: connect (to the next server address that answers),
//! serve one connection, and reconnect, until the client stops. Serving one connection is `connection`'s job; the
//! state the links share is in `shared`, whose glossary names the words
//! used here (link, holder, ready; lost, close, finish, stop).
//!
//! # A link's life
//!
//! ```text
//!        ┌─────────────────────────────────────────────────────────────────────────┐
//!        ▼                                                                         │
//!   connect ──► opening ──► WELCOME ──► handshake ──► read loop ──► lost ──► backoff
//!              (no token:              /auth TOKEN                 (EOF, error,
//!               /mirror KEY            /mirror KEY (token)          BYE, silence)
//!               or /ping join)         /resume LAST [KEY]
//!                                      /nick NAME (the holder)
//! ```
//!
//! On a server without a token the connection speaks first, so that it is
//! greeted at once (the server waits up to 100 ms for a first line before
//! its `WELCOME`). The handshake commands are sent at once, in one write
//! (see `handshake`), and their
//! replies come back through the same read loop as everything else (see
//! `requests`), so a broadcast that arrives in the middle of the
//! handshake is handled like any other. The link is *ready* when the last
//! handshake reply is in.
//!
//! # Who holds the name
//!
//! A redundant client has two connections, but only one of them carries
//! the name and the commands: the *holder*. The other is its *mirror*
//! (`/mirror KEY` with the holder's session key): it only receives, and
//! the server shows it to nobody. When the holder is lost, the mirror
//! goes on receiving and the holder's link reconnects with `/resume LAST
//! KEY`, the lost connection's key, which takes the name back (the server
//! closes the old connection, `BYE replaced`, if it has not noticed it is
//! dead). A link that reconnects while the other holds the name mirrors
//! the holder's new connection. Where the server cannot make a mirror (the
//! holder is on another node), the second link is a plain client of its
//! own, under a guest name; when the holder is lost, that link takes the
//! name over at once with `/resume LAST KEY`, and the lost link comes back
//! as the other one.
//!
//! # Which address
//!
//! With several server addresses, a link goes *round* them (see `route`):
//! each address once, with no wait in between, until one gives a ready
//! connection. The first round starts at the first address; a round after
//! a lost connection starts at the next one. The backoff waits between
//! rounds, and a round counts as one attempt.
//!
//! # How a connection ends
//!
//! Every connection ends in one [`End`]: **lost** (the link moves on) or
//! **stop** (the client stops for good: `/quit`, a refused token). A
//! connection lost before it was ready is one failed address of its
//! round: the round goes on to the next. One lost after it was ready ends
//! the round: the link backs off, then goes round again. If the client's
//! very first round fails, `Client::connect` fails instead: reconnecting
//! is for connections that were up.

use super::connection::Connection;
use super::error::ClientError;
use super::event::{Closed, Event};
use super::shared::Shared;
use crate::protocol::Reason;
use crossbeam_channel::RecvTimeoutError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How one connection ended, and so what its link does next.
pub(super) enum End {
    /// Lost: reconnect. `ready` says whether it got through its
    /// handshake; `bye` is the server's `BYE` reason, if it said one.
    Lost {
        cause: String,
        ready: bool,
        bye: Option<Reason>,
    },
    /// The client stops for good.
    Stop(Closed),
}

/// How one round over the addresses ended.
enum Round {
    /// A ready connection was lost (why): back off, then go round again.
    Lost(String),
    /// No address gave a ready connection; the last failure.
    Failed(Failure),
    /// The client stops for good.
    Stop(Closed),
}

/// Why one address of a round gave no ready connection.
enum Failure {
    /// The TCP connection could not be made.
    Dial(SocketAddr, io::Error),
    /// The connection was lost before it was ready.
    Lost { cause: String, bye: Option<Reason> },
}

impl Failure {
    /// In words, for `Event::Disconnected`.
    fn cause(&self) -> String {
        match self {
            Failure::Dial(addr, e) => format!("cannot connect to {addr}: {e}"),
            Failure::Lost { cause, .. } => cause.clone(),
        }
    }

    /// What `Client::connect` returns when its first round ends so.
    fn into_error(self) -> ClientError {
        match self {
            Failure::Dial(_, e) => ClientError::Connect(e),
            Failure::Lost {
                bye: Some(reason), ..
            } => ClientError::Refused(reason),
            Failure::Lost { cause, bye: None } => ClientError::Connect(io::Error::other(cause)),
        }
    }
}

/// A link's thread: go round the addresses, serve, back off, and again,
/// until the client stops or gives up. `first`: this is the link whose
/// first round `Client::connect` waits for.
pub(crate) fn run(shared: Arc<Shared>, link: usize, mut first: bool) {
    let mut attempt: u32 = 0;
    // The address this link was last on: the next round starts after it.
    let mut after = None;
    while !shared.is_stopping() {
        let cause = match round(&shared, link, &mut after) {
            Round::Stop(why) => return shared.stop(why),
            _ if shared.is_stopping() => return,
            Round::Failed(failure) if first => return refused(&shared, failure),
            Round::Failed(failure) => failure.cause(),
            Round::Lost(cause) => {
                attempt = 0;
                cause
            }
        };
        first = false;
        shared.emit(Event::Disconnected { link, cause });
        attempt = attempt.saturating_add(1);
        if !back_off(&shared, link, attempt) {
            return;
        }
    }
}

/// One round: each address once, in the route's order, one after the
/// other, until one gives a connection that gets through its handshake
/// (and is then served until it is lost).
fn round(shared: &Arc<Shared>, link: usize, after: &mut Option<usize>) -> Round {
    let mut failure = Failure::Lost {
        cause: "no address to connect to".into(),
        bye: None,
    };
    for index in shared.route.round(link, *after) {
        if shared.is_stopping() {
            break;
        }
        *after = Some(index);
        match attempt(shared, link, index) {
            Ok(End::Stop(why)) => return Round::Stop(why),
            Ok(End::Lost {
                cause, ready: true, ..
            }) => return Round::Lost(cause),
            Ok(End::Lost {
                cause,
                bye,
                ready: false,
            }) => failure = Failure::Lost { cause, bye },
            Err(f) => failure = f,
        }
    }
    Round::Failed(failure)
}

/// Connects to address number `index` and serves the connection to its
/// end. Meanwhile the route says this link is there, so that the other
/// link goes elsewhere.
fn attempt(shared: &Arc<Shared>, link: usize, index: usize) -> Result<End, Failure> {
    shared.route.set(link, Some(index));
    let end = match shared.dial(index) {
        Ok(stream) => Ok(Connection::serve(shared, link, stream)),
        Err(e) => Err(Failure::Dial(shared.route.addr(index), e)),
    };
    shared.route.set(link, None);
    // Whatever happened, the merge need not wait for this link.
    shared.link_lost(link);
    end
}

/// The client's first round found no address that would have it:
/// `Client::connect` fails with the last address's failure, and the
/// client stops.
fn refused(shared: &Shared, failure: Failure) {
    shared.fail_first(failure.into_error());
    shared.stop(Closed::GaveUp);
}

/// Waits before reconnect attempt number `attempt`; `false` when the link
/// gives up (attempts used up, or the client stops meanwhile).
fn back_off(shared: &Shared, link: usize, attempt: u32) -> bool {
    let policy = &shared.config.reconnect;
    if !policy.enabled || policy.max_attempts.is_some_and(|max| attempt > max) {
        if shared.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.stop(Closed::GaveUp);
        }
        return false;
    }
    let delay = policy.delay(attempt, random_unit());
    shared.emit(Event::Reconnecting {
        link,
        attempt,
        delay,
    });
    // Sleeps `delay`, or less if the client stops meanwhile.
    !matches!(
        shared.stop_rx.recv_timeout(delay),
        Err(RecvTimeoutError::Disconnected)
    )
}

/// A uniformly random number in `[0, 1)` for jitter.
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
