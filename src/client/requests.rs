//! Matching replies to the commands that caused them.
//!
//! Replies carry no request id. What makes matching possible is an
//! ordering guarantee of the server: one connection's commands are handled
//! one after another, and each one's replies are written before the next
//! one's. So every connection keeps a queue of the commands it sent, oldest
//! first, each knowing which replies it can get ([`Pending::accepts`]):
//!
//! * most commands get exactly one reply, or one `ERR` (`/list` →
//!   `USERS`, `/ping T` → `PONG T`, `/nick N` → `OK nick N`…);
//! * some get nothing unless something is wrong (a chat line, `/send`,
//!   `/pong`): if the next reply is not an `ERR` one of them can produce,
//!   they got nothing, and leave the queue. A run of them is one entry
//!   with a count ([`enqueue`]), so a client that only ever talks keeps a
//!   queue of one entry, not one per line;
//! * `/resume` may get `ERR resume-gap` or `ERR nick-taken` *and then* its
//!   `OK resume`.
//!
//! A reply that nothing in the queue can claim is reported as an event.
//! Pure logic over [`ServerLine`]s: unit-tested below.

use super::error::ClientError;
use crate::protocol::{ErrorCode, ServerLine};
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Errors any line can get back, whatever its command.
const ANY_LINE: [ErrorCode; 6] = [
    ErrorCode::RateLimited,
    ErrorCode::AuthRequired,
    ErrorCode::LineTooLong,
    ErrorCode::InvalidUtf8,
    ErrorCode::InvalidText,
    // A cluster node that cannot reach Redis (docs/CLUSTER.md).
    ErrorCode::Unavailable,
];

/// A command waiting for its reply.
#[derive(Debug)]
pub(crate) enum Pending {
    /// `count` chat lines, `/send`s, `/pong`s in a row: no reply unless
    /// an `ERR`. Make one with [`Pending::QUIET`].
    Quiet { count: u64 },
    /// A line the application passed through as it is: its reply goes out
    /// as events.
    Passthrough,
    /// `/list`.
    List(Sender<Result<Vec<String>, ClientError>>),
    /// `/ping TOKEN`; `reply` is `None` for the client's own keepalive.
    Ping {
        token: String,
        sent: Instant,
        reply: Option<Sender<Result<Duration, ClientError>>>,
    },
    /// `/nick NAME`. Without `reply`, the outcome goes out as an event
    /// (for [`NickMode::App`]) or only a failure does (the others).
    Nick {
        name: String,
        reply: Option<Sender<Result<(), ClientError>>>,
        mode: NickMode,
    },
    /// `/msg`.
    Msg(Sender<Result<(), ClientError>>),
    /// `/auth` (handshake).
    Auth,
    /// `/mirror KEY` (handshake): `OK mirror NAME`, or any `ERR` (then the
    /// server listed the connection as a client of its own).
    Mirror,
    /// `/resume AFTER [KEY]`; `keyed` when a key went with it, `handshake`
    /// when part of (re)connecting.
    Resume {
        after: u64,
        keyed: bool,
        handshake: bool,
    },
}

/// What a `/nick` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NickMode {
    /// The application asked (`Client::nick`, or a passed-through line).
    App,
    /// Part of (re)connecting: take the configured name (back).
    Handshake,
    /// Taking the name over to the other link of a redundant client.
    Restore,
}

/// How a pending command takes a reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// It is this command's reply, and the last one.
    Last,
    /// It is this command's, and more will follow.
    More,
    /// Not this command's.
    No,
}

/// Where a reply goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// To this command, which now leaves the queue.
    Done(Pending),
    /// To the command at the front of the queue, which stays.
    Partial,
    /// To nobody: report it as an event.
    Unclaimed,
}

impl Pending {
    /// One quiet command.
    pub(crate) const QUIET: Pending = Pending::Quiet { count: 1 };

    /// Whether this command may get no reply at all.
    fn may_stay_silent(&self) -> bool {
        matches!(self, Pending::Quiet { .. })
    }

    /// Whether `line` is (part of) this command's reply.
    pub(crate) fn accepts(&self, line: &ServerLine<'_>) -> Accept {
        let yes = |b: bool| if b { Accept::Last } else { Accept::No };
        let err_in = |codes: &[ErrorCode]| match line {
            ServerLine::Err { code, .. } => codes.contains(code) || ANY_LINE.contains(code),
            _ => false,
        };
        match self {
            Pending::Quiet { .. } => yes(err_in(&[])),
            Pending::Passthrough => match line {
                ServerLine::Help(_) => Accept::More,
                ServerLine::Ok { .. }
                | ServerLine::Err { .. }
                | ServerLine::Users { .. }
                | ServerLine::Pong(_) => Accept::Last,
                _ => Accept::No,
            },
            Pending::List(_) => yes(matches!(line, ServerLine::Users { .. }) || err_in(&[])),
            Pending::Ping { token, .. } => {
                yes(matches!(line, ServerLine::Pong(t) if t == token) || err_in(&[]))
            }
            Pending::Nick { .. } => yes(matches!(line, ServerLine::Ok { what: "nick", .. })
                || err_in(&[
                    ErrorCode::NickTaken,
                    ErrorCode::NickInvalid,
                    ErrorCode::BadArgs,
                ])),
            Pending::Msg(_) => yes(matches!(line, ServerLine::Ok { what: "msg", .. })
                || err_in(&[ErrorCode::NoSuchUser, ErrorCode::BadArgs])),
            Pending::Auth => {
                yes(matches!(line, ServerLine::Ok { what: "auth", .. }) || err_in(&[]))
            }
            Pending::Mirror => yes(matches!(
                line,
                ServerLine::Ok { what: "mirror", .. } | ServerLine::Err { .. }
            )),
            Pending::Resume { .. } => match line {
                ServerLine::Err {
                    code: ErrorCode::ResumeGap | ErrorCode::NickTaken,
                    ..
                } => Accept::More,
                ServerLine::Ok { what: "resume", .. } => Accept::Last,
                _ => yes(err_in(&[ErrorCode::BadArgs, ErrorCode::BadKey])),
            },
        }
    }
}

/// Adds a command sent to the back of the queue; a quiet one joins the
/// run of quiet ones already there.
pub(crate) fn enqueue(queue: &mut VecDeque<Pending>, pending: Pending) {
    match (queue.back_mut(), pending) {
        (Some(Pending::Quiet { count }), Pending::Quiet { count: more }) => *count += more,
        (_, pending) => queue.push_back(pending),
    }
}

/// Finds the command `line` answers, dropping the silent commands it
/// passes over.
pub(crate) fn route(queue: &mut VecDeque<Pending>, line: &ServerLine<'_>) -> Route {
    while let Some(front) = queue.front_mut() {
        match front.accepts(line) {
            // The oldest of a run of quiet commands takes the `ERR`; the
            // rest of the run stays.
            Accept::Last if matches!(front, Pending::Quiet { count } if *count > 1) => {
                if let Pending::Quiet { count } = front {
                    *count -= 1;
                }
                return Route::Done(Pending::QUIET);
            }
            Accept::Last => return Route::Done(queue.pop_front().expect("front exists")),
            Accept::More => return Route::Partial,
            Accept::No if front.may_stay_silent() => {
                queue.pop_front();
            }
            Accept::No => return Route::Unclaimed,
        }
    }
    Route::Unclaimed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ServerLine<'_> {
        ServerLine::parse(line).unwrap()
    }

    fn kinds(queue: &VecDeque<Pending>) -> Vec<&'static str> {
        queue
            .iter()
            .map(|p| match p {
                Pending::Quiet { .. } => "quiet",
                Pending::List(_) => "list",
                Pending::Ping { .. } => "ping",
                Pending::Resume { .. } => "resume",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn silent_commands_are_passed_over() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut q = VecDeque::new();
        enqueue(&mut q, Pending::QUIET);
        enqueue(&mut q, Pending::QUIET);
        enqueue(&mut q, Pending::List(tx));
        assert_eq!(kinds(&q), ["quiet", "list"]);
        let users = parse("USERS 1 a");
        assert!(matches!(
            route(&mut q, &users),
            Route::Done(Pending::List(_))
        ));
        assert!(q.is_empty());
    }

    #[test]
    fn an_error_of_a_chat_line_stays_with_it() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut q = VecDeque::from([Pending::Quiet { count: 2 }, Pending::List(tx)]);
        let err = parse("ERR rate-limited slow down");
        assert!(matches!(
            route(&mut q, &err),
            Route::Done(Pending::Quiet { count: 1 })
        ));
        assert!(matches!(q.front(), Some(Pending::Quiet { count: 1 })));
        assert!(matches!(route(&mut q, &err), Route::Done(_)));
        assert_eq!(kinds(&q), ["list"]);
    }

    #[test]
    fn a_client_that_only_talks_keeps_one_entry() {
        let mut q = VecDeque::new();
        for _ in 0..1_000_000 {
            enqueue(&mut q, Pending::QUIET);
        }
        assert_eq!(q.len(), 1);
        assert!(matches!(
            q.front(),
            Some(Pending::Quiet { count: 1_000_000 })
        ));
    }

    #[test]
    fn pings_match_their_token() {
        let mut q = VecDeque::from([Pending::Ping {
            token: "7".into(),
            sent: Instant::now(),
            reply: None,
        }]);
        assert!(matches!(route(&mut q, &parse("PONG 6")), Route::Unclaimed));
        assert!(matches!(route(&mut q, &parse("PONG 7")), Route::Done(_)));
    }

    #[test]
    fn resume_takes_its_errors_then_its_ok() {
        let mut q = VecDeque::from([
            Pending::Resume {
                after: 3,
                keyed: false,
                handshake: true,
            },
            Pending::QUIET,
        ]);
        assert!(matches!(
            route(&mut q, &parse("ERR nick-taken x")),
            Route::Partial
        ));
        assert!(matches!(
            route(&mut q, &parse("ERR resume-gap 9")),
            Route::Partial
        ));
        assert!(matches!(
            route(&mut q, &parse("OK resume 12")),
            Route::Done(Pending::Resume { after: 3, .. })
        ));
        assert_eq!(kinds(&q), ["quiet"]);
        assert!(matches!(
            route(&mut q, &parse("OK nick bob")),
            Route::Unclaimed
        ));
        assert!(q.is_empty());
    }
}
