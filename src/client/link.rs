//! A link's thread: connect, serve one connection, and reconnect, until
//! the client stops. Serving one connection is `connection`'s job; the
//! state the links share is in `shared`, whose glossary names the words
//! used here (link, holder, ready; lost, close, finish, stop).
//!
//! # A link's life
//!
//! ```text
//!        ┌────────────────────────────────────────────────────────────┐
//!        ▼                                                            │
//!   connect ──► WELCOME ──► handshake ──► read loop ──► lost ──► backoff
//!                          /auth TOKEN                  (EOF, error,
//!                          /resume LAST [KEY]            BYE, silence)
//!                          /nick NAME
//! ```
//!
//! The handshake commands are sent at once (see `handshake`), and their
//! replies come back through the same read loop as everything else (see
//! `requests`), so a broadcast that arrives in the middle of the
//! handshake is handled like any other. The link is *ready* when the last
//! handshake reply is in.
//!
//! # Who holds the name
//!
//! A redundant client has two connections, but only one of them carries
//! the name and the commands: the *holder*. When the holder is lost while
//! the other link is up, the other link becomes the holder by sending
//! `/resume LAST KEY` with the lost connection's session key: the server
//! closes the old connection (`BYE replaced`) and renames the survivor.
//! The lost link comes back as the non-holder, under a guest name.
//!
//! # How a connection ends
//!
//! Every connection ends in one [`End`]: **lost** (the link backs off and
//! reconnects) or **stop** (the client stops for good: `/quit`, a refused
//! token). A first connection that is lost before it is ready makes
//! `Client::connect` fail instead: reconnecting is for connections that
//! were up.

use super::connection::Connection;
use super::error::ClientError;
use super::event::{Closed, Event};
use super::shared::Shared;
use crate::protocol::Reason;
use crossbeam_channel::RecvTimeoutError;
use std::io;
use std::net::TcpStream;
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

/// A link's thread: connect, serve, and reconnect until the client stops
/// or gives up. `first` is the connection `Client::connect` already made.
pub(crate) fn run(shared: Arc<Shared>, link: usize, mut first: Option<TcpStream>) {
    let mut attempt: u32 = 0;
    while !shared.is_stopping() {
        // The connection `Client::connect` made: if it fails before it
        // is ready, `connect` reports the failure instead of retrying.
        let initial = first.is_some();
        let end = match first.take().map_or_else(|| shared.dial(), Ok) {
            Ok(stream) => Connection::serve(&shared, link, stream),
            Err(e) => End::Lost {
                cause: format!("cannot connect: {e}"),
                ready: false,
                bye: None,
            },
        };
        // Whatever happened, the merge need not wait for this link.
        shared.link_lost(link);
        match end {
            End::Stop(why) => return shared.stop(why),
            End::Lost { cause, ready, bye } => {
                if ready {
                    attempt = 0;
                }
                if shared.is_stopping() {
                    return;
                }
                if initial && !ready {
                    return refused(&shared, cause, bye);
                }
                shared.emit(Event::Disconnected { link, cause });
            }
        }
        attempt = attempt.saturating_add(1);
        if !back_off(&shared, link, attempt) {
            return;
        }
    }
}

/// The first connection was lost before it was ready: `Client::connect`
/// fails with why, and the client stops.
fn refused(shared: &Shared, cause: String, bye: Option<Reason>) {
    let error = match bye {
        Some(reason) => ClientError::Refused(reason),
        None => ClientError::Connect(io::Error::other(cause)),
    };
    shared.fail_first(error);
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
