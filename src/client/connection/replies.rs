//! Replies: each one goes to the command that caused it (see `requests`
//! for how, without request ids), and completes it: one method per kind
//! of pending command.

use super::Connection;
use crate::client::error::ClientError;
use crate::client::event::Event;
use crate::client::requests::{NickMode, Pending, Route, route};
use crate::protocol::{ErrorCode, ServerLine, parse_digits};
use crossbeam_channel::Sender;

/// What a reply says of its command: done, or the server's `ERR`.
fn outcome(line: &ServerLine<'_>) -> Result<(), ClientError> {
    match *line {
        ServerLine::Err { code, text } => Err(ClientError::Server {
            code,
            text: text.to_string(),
        }),
        _ => Ok(()),
    }
}

impl Connection<'_> {
    /// Routes a reply to the command that caused it.
    pub(super) fn reply(&mut self, line: &ServerLine<'_>) {
        let (routed, handshake_resume) = match self.shared.links[self.link].lock().as_mut() {
            Some(out) => {
                let routed = route(&mut out.pending, line);
                let handshake_resume = matches!(
                    out.pending.front(),
                    Some(Pending::Resume {
                        handshake: true,
                        ..
                    })
                );
                (routed, handshake_resume)
            }
            None => (Route::Unclaimed, false),
        };
        match routed {
            Route::Done(pending) => self.complete(pending, line),
            Route::Partial => self.resume_progress(line, handshake_resume),
            Route::Unclaimed => self.emit(line),
        }
    }

    /// A reply that a `/resume` takes before its `OK resume`.
    fn resume_progress(&mut self, line: &ServerLine<'_>, handshake_resume: bool) {
        match *line {
            ServerLine::Err {
                code: ErrorCode::ResumeGap,
                text,
            } => {
                let oldest = text
                    .split(' ')
                    .next()
                    .and_then(|s| parse_digits(s.as_bytes()).ok());
                // While another link is up, what this replay lacks may
                // still be on its way there: the `OK resume` hands the
                // decision to that link (see `complete_resume`).
                let defer = handshake_resume && self.other_ready_link().is_some();
                if let Some(oldest) = oldest.filter(|_| !defer) {
                    let mut core = self.shared.core.lock();
                    self.shared
                        .merged(&mut core, |merge, out| merge.lost_before(oldest, out));
                }
            }
            // The name could not be taken back: the `/nick` that follows
            // the `/resume` reports it.
            ServerLine::Err {
                code: ErrorCode::NickTaken,
                ..
            } => {}
            _ => self.emit(line),
        }
    }

    /// A command got its (last) reply.
    fn complete(&mut self, pending: Pending, line: &ServerLine<'_>) {
        match pending {
            Pending::Quiet { .. } | Pending::Passthrough => self.emit(line),
            Pending::List(reply) => complete_list(reply, line),
            Pending::Ping { sent, reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome(line).map(|()| sent.elapsed()));
                }
            }
            Pending::Msg(reply) => {
                let _ = reply.send(outcome(line));
            }
            Pending::Nick { name, reply, mode } => self.complete_nick(line, name, reply, mode),
            Pending::Auth => self.complete_auth(line),
            Pending::Mirror => self.complete_mirror(line),
            Pending::Resume {
                after,
                keyed,
                handshake,
            } => self.complete_resume(line, after, keyed, handshake),
        }
    }

    fn complete_nick(
        &mut self,
        line: &ServerLine<'_>,
        name: String,
        reply: Option<Sender<Result<(), ClientError>>>,
        mode: NickMode,
    ) {
        let outcome = outcome(line);
        if outcome.is_ok() {
            // The server renamed this connection (its NICK event may still
            // be on the way).
            self.name = name.clone();
            let mut core = self.shared.core.lock();
            core.links[self.link].name = name.clone();
            core.name = Some(name);
        }
        match (mode, reply) {
            (NickMode::App, Some(reply)) => {
                let _ = reply.send(outcome);
            }
            (NickMode::App, None) => self.emit(line),
            (NickMode::Handshake | NickMode::Restore, _) => {
                // Taking the name at the very first connect failed:
                // `Client::connect` reports it.
                if let Err(e) = outcome
                    && !self.shared.fail_first(e)
                {
                    self.emit(line);
                }
            }
        }
        if mode == NickMode::Handshake {
            self.handshake_step();
        }
    }

    fn complete_auth(&mut self, line: &ServerLine<'_>) {
        if outcome(line).is_err() {
            self.emit(line);
        }
        self.handshake_step();
    }

    fn complete_mirror(&mut self, line: &ServerLine<'_>) {
        let mut core = self.shared.core.lock();
        match *line {
            ServerLine::Ok { detail, .. } => {
                // A mirror shows as its client: the holder's name.
                self.name = detail.to_string();
                core.links[self.link].name = detail.to_string();
                let link = self.link;
                self.shared
                    .merged(&mut core, |merge, out| merge.link_mirrors(link, out));
            }
            // No mirror here (the holder is on another node, or the server
            // is older): the server listed this connection as a client of
            // its own. It is a plain second client, as redundant clients
            // were before mirrors.
            _ => core.links[self.link].mirror = false,
        }
        drop(core);
        self.handshake_step();
    }

    fn complete_resume(&mut self, line: &ServerLine<'_>, after: u64, keyed: bool, handshake: bool) {
        match *line {
            ServerLine::Ok { detail, .. } => {
                let last = parse_digits(detail.as_bytes()).unwrap_or(after);
                self.resumed(after, last, handshake);
            }
            // The key expired or was used up: nothing was replayed. Resume
            // without it; `/nick` takes the name.
            ServerLine::Err {
                code: ErrorCode::BadKey,
                ..
            } if keyed => {
                let again = self.shared.send_resume(self.link, after, None, handshake);
                if again.is_ok() {
                    return; // the handshake step is the retry's
                }
            }
            _ => self.emit(line),
        }
        if handshake {
            self.handshake_step();
        }
    }

    /// `OK resume LAST`: the replay of what came after `after` is in.
    fn resumed(&self, after: u64, last: u64, handshake: bool) {
        let other = handshake.then(|| self.other_ready_link()).flatten();
        let mut core = self.shared.core.lock();
        if let Some(other) = other {
            // A hole left below `last` may be events still on their way
            // on the other link, which is up: not a gap yet. Ask that link
            // to resume too; its replay comes after whatever it has in
            // flight, and its `OK resume` decides.
            if let Some(after) = core.merge.last().filter(|&a| a < last) {
                drop(core);
                let _ = self.shared.send_resume(other, after, None, false);
            }
        } else {
            self.shared
                .merged(&mut core, |merge, out| merge.replayed_up_to(last, out));
        }
        self.shared.emit(Event::Resumed {
            link: self.link,
            after,
            last,
        });
    }

    /// Another link of this client that is up and through its handshake.
    fn other_ready_link(&self) -> Option<usize> {
        self.shared.core.lock().other_ready_link(self.link)
    }

    /// One handshake reply is in; the last makes the connection ready.
    fn handshake_step(&mut self) {
        self.handshake = self.handshake.saturating_sub(1);
        if self.handshake == 0 && !self.ready {
            self.become_ready();
        }
    }

    pub(super) fn become_ready(&mut self) {
        self.ready = true;
        let mut core = self.shared.core.lock();
        core.links[self.link].ready = true;
        if let Some(first) = core.first.take() {
            let _ = first.send(Ok(()));
        }
        self.shared.emit(Event::Connected {
            link: self.link,
            id: self.id,
            name: self.name.clone(),
        });
    }
}

/// `/list` got `USERS` (or an `ERR`).
fn complete_list(reply: Sender<Result<Vec<String>, ClientError>>, line: &ServerLine<'_>) {
    let result = match line {
        ServerLine::Users { names } => Ok(names.iter().map(|n| n.to_string()).collect()),
        _ => outcome(line).map(|()| Vec::new()),
    };
    let _ = reply.send(result);
}
