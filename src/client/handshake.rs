//! The handshake: what a connection sends before and right after
//! `WELCOME`.
//!
//! Five questions decide it, and [`opening`] and [`plan`] answer them
//! without I/O:
//!
//! 1. Does the server want a token? Then `/auth TOKEN` goes first, right
//!    after `WELCOME` (which such a server sends at once): nothing else is
//!    allowed before it, and the server lists the client at its `OK auth`.
//! 2. Without a token, the server waits for a connection's first line,
//!    100 ms at most, before it sends `WELCOME` (a first line `/mirror`
//!    changes how it greets). So a connection speaks first, as soon as it
//!    is connected ([`opening`]): `/mirror KEY` if it is to be a mirror
//!    (4), else `/ping join`, which gets it greeted, listed and announced
//!    at once (its `PONG` is taken without a word). An older server
//!    greets at once anyway, and answers both after its `WELCOME`.
//! 3. Has the application had events already? Then `/resume LAST`, so the
//!    server replays what came after LAST. If this connection takes the
//!    name's seat (see [`Seat`]) and the lost holder's session key is
//!    known, the key goes with it: `/resume LAST KEY` also takes the old
//!    connection's name over.
//! 4. Does the other link hold the name? Then this connection is its
//!    *mirror*: `/mirror KEY` with the holder's session key, so that the
//!    server never lists it (the client shows up once). Without a token it
//!    is the opening (2); with one, it goes in the same write as `/auth`,
//!    which is how the server knows not to list the client at its
//!    `OK auth`. If the server does not know the key (the holder is on
//!    another node, or the server is older), it answers `ERR` and lists
//!    this connection as a client of its own, under a guest name.
//! 5. Does this connection hold the name, and does the client want one?
//!    Then `/nick NAME`, to be sure of it (the key may have expired).
//!
//! The steps after `WELCOME` are sent at once, in one write; each one's
//! last reply counts one step down (an opening `/mirror` counts too), and
//! the connection is *ready* when none is left.

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
    /// `/ping join`: a first line, so that a server without a token
    /// greets the client at once (not a step to wait for).
    Join,
}

/// The token of `/ping join` (its `PONG` is taken without a word).
pub(crate) const JOIN_TOKEN: &str = "join";

/// What a connection sends as soon as it is connected, before `WELCOME`:
/// nothing with a token (the server greets at once), else `/mirror KEY`
/// when it is to mirror the holder's connection (`mirror_of`, its key),
/// or `/ping join`.
pub(crate) fn opening(token: Option<&str>, mirror_of: Option<String>) -> Option<Step> {
    if token.is_some() {
        return None;
    }
    Some(mirror_of.map_or(Step::Join, Step::Mirror))
}

/// What a connection sends after `WELCOME`, in order: `token` is the
/// configured token, `last` the last SEQ the application got, `seat`
/// whether this connection holds the name, `name` the name the client
/// wants. A mirror's `/mirror` is here only when it was not the opening
/// (with a token).
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
    // Before WELCOME without a token; with one, right after `/auth`, in
    // the same write, or the server lists this connection at `OK auth`.
    if let Some(key) = mirror.filter(|_| token.is_some()) {
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
    fn without_a_token_a_connection_speaks_first() {
        assert_eq!(opening(None, None), Some(Step::Join));
        assert_eq!(
            opening(None, Some("k".into())),
            Some(Step::Mirror("k".into()))
        );
        // With a token the server greets at once: /auth comes after.
        assert_eq!(opening(Some("t"), Some("k".into())), None);
        assert_eq!(plan(None, None, holder(None), None), []);
        assert_eq!(
            plan(Some("t"), None, holder(None), None),
            [Step::Auth("t".into())]
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
        // Without a token, /mirror was the opening.
        let other = Seat::Other {
            holder_key: Some("k2".into()),
        };
        assert_eq!(plan(None, None, other, Some("ann")), []);
        // The holder's key unknown in this run: a plain second client.
        let other = Seat::Other { holder_key: None };
        assert_eq!(plan(None, None, other, Some("ann")), []);
    }

    #[test]
    fn nothing_delivered_yet_means_no_resume() {
        assert_eq!(
            plan(None, None, holder(Some("k1")), Some("ann")),
            [Step::Nick("ann".into())]
        );
    }
}
