//! The handshake: what a connection sends right after `WELCOME`.
//!
//! Five questions decide it, and [`plan`] answers them without I/O:
//!
//! 1. Does the server want a token? Then `/auth TOKEN` goes first: nothing
//!    else is allowed before it.
//! 2. Has the application had events already? Then `/resume LAST`, so the
//!    server replays what came after LAST. If this connection takes the
//!    name's seat (see [`Seat`]) and the lost holder's session key is
//!    known, the key goes with it: `/resume LAST KEY` also takes the old
//!    connection's name over.
//! 3. Does this connection hold the name, and does the client want one?
//!    Then `/nick NAME`, to be sure of it (the key may have expired).
//! 4. Does the other link hold it? Then this connection is its *mirror*:
//!    `/mirror KEY` with the holder's session key, as the very first line
//!    after `/auth`, so that the server never lists it (the client shows up
//!    once). If the server does not know the key (the holder is on another
//!    node, or the server is older), it answers `ERR` and lists this
//!    connection as a client of its own, under a guest name.
//! 5. Is this connection to be a client, with nothing to say yet? Then
//!    `/ping join`: the server joins a client when its first line arrives
//!    (it would wait 100 ms for one otherwise, in case it is `/mirror`),
//!    and a client just connected should be in the room at once.
//!
//! The steps are sent at once; each one's last reply counts one step down,
//! and the connection is *ready* when none is left. The `PONG` of
//! `/ping join` is not waited for: it changes nothing, and a server that
//! never answers is the keepalive's to find.

/// Whether a new connection carries the name (see `shared`, "holder").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seat {
    /// It does: no link that is up held the name. `lost_key` is the
    /// session key of the connection that held it before, if any.
    Holder { lost_key: Option<String> },
    /// The other link, which is up, holds it. `holder_key` is its
    /// connection's session key, to mirror (`None` when it is not known in
    /// this server run: then this connection is a plain second client).
    Other { holder_key: Option<String> },
}

/// One command of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// `/auth TOKEN`.
    Auth(String),
    /// `/mirror KEY`.
    Mirror(String),
    /// `/resume AFTER [KEY]`.
    Resume { after: u64, key: Option<String> },
    /// `/nick NAME`.
    Nick(String),
    /// `/ping join`: a first line, so that the server joins the client at
    /// once (not a step to wait for).
    Join,
}

/// The token of `/ping join` (its `PONG` is taken without a word).
pub(crate) const JOIN_TOKEN: &str = "join";

/// What a connection sends after `WELCOME`, in order: `token` is the
/// configured token, `last` the last SEQ the application got, `seat`
/// whether this connection holds the name, `name` the name the client
/// wants.
pub(crate) fn plan(
    token: Option<&str>,
    last: Option<u64>,
    seat: Seat,
    name: Option<&str>,
) -> Vec<Step> {
    let (holder, lost_key, mirror) = match seat {
        Seat::Holder { lost_key } => (true, lost_key, None),
        Seat::Other { holder_key } => (false, None, holder_key),
    };
    let mut steps = Vec::new();
    if let Some(token) = token {
        steps.push(Step::Auth(token.to_string()));
    }
    // The first line after `/auth`, or the server lists this connection.
    if let Some(key) = mirror {
        steps.push(Step::Mirror(key));
    }
    if let Some(after) = last {
        steps.push(Step::Resume {
            after,
            key: lost_key,
        });
    }
    if let Some(name) = name.filter(|_| holder) {
        steps.push(Step::Nick(name.to_string()));
    }
    if steps.iter().all(|s| matches!(s, Step::Auth(_))) {
        steps.push(Step::Join);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(key: Option<&str>) -> Seat {
        Seat::Holder {
            lost_key: key.map(str::to_string),
        }
    }

    #[test]
    fn a_client_with_nothing_to_say_says_it_is_there() {
        assert_eq!(plan(None, None, holder(None), None), [Step::Join]);
        assert_eq!(
            plan(Some("t"), None, holder(None), None),
            [Step::Auth("t".into()), Step::Join]
        );
    }

    #[test]
    fn auth_goes_first() {
        assert_eq!(
            plan(Some("t"), Some(4), holder(None), Some("ann")),
            [
                Step::Auth("t".into()),
                Step::Resume {
                    after: 4,
                    key: None
                },
                Step::Nick("ann".into()),
            ]
        );
    }

    #[test]
    fn the_holder_resumes_with_the_lost_key_and_takes_the_name() {
        assert_eq!(
            plan(None, Some(9), holder(Some("k1")), Some("ann")),
            [
                Step::Resume {
                    after: 9,
                    key: Some("k1".into())
                },
                Step::Nick("ann".into()),
            ]
        );
    }

    #[test]
    fn the_other_link_mirrors_the_holder_then_resumes_without_key_or_name() {
        let other = Seat::Other {
            holder_key: Some("k2".into()),
        };
        assert_eq!(
            plan(Some("t"), Some(9), other, Some("ann")),
            [
                Step::Auth("t".into()),
                Step::Mirror("k2".into()),
                Step::Resume {
                    after: 9,
                    key: None
                }
            ]
        );
        // The holder's key unknown in this run: a plain second client.
        let other = Seat::Other { holder_key: None };
        assert_eq!(plan(None, None, other, Some("ann")), [Step::Join]);
    }

    #[test]
    fn nothing_delivered_yet_means_no_resume() {
        assert_eq!(
            plan(None, None, holder(Some("k1")), Some("ann")),
            [Step::Nick("ann".into())]
        );
    }
}
