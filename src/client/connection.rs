//! One connection of one link, from `WELCOME` to its end: [`Connection`].
//!
//! Its jobs, one `impl` block each:
//!
//! * **lifecycle** (this file): set the socket up, send the opening line,
//!   read `WELCOME`, send the handshake, run the read loop, and close;
//! * **reading** (this file): cut what arrives into lines and payloads, and
//!   hand broadcast events to the merge;
//! * **replies** (`replies`): route each reply to the command that caused
//!   it, and complete that command.
//!
//! The words for ending (lost, close, stop) are those of `shared`'s
//! glossary.

mod replies;

use super::event::{Closed, Event};
use super::handshake::{self, Step};
use super::link::End;
use super::merge::Merge;
use super::requests::{NickMode, Pending};
use super::shared::{Handover, Out, Shared};
use crate::protocol::{Command, Frame, FrameReader, Reason, ServerLine};
use crate::silence::{Pinger, SilenceWatch};
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// What a connection reads from: frames, over a socket watched for
/// silence.
type Reader = FrameReader<SilenceWatch<TcpStream, Pinger>>;

/// One connection of one link, from `WELCOME` to its end.
pub(super) struct Connection<'a> {
    shared: &'a Arc<Shared>,
    link: usize,
    /// The server run this connection belongs to.
    epoch: String,
    id: u64,
    /// This connection's name as the server knows it.
    name: String,
    /// Handshake replies still awaited.
    handshake: usize,
    /// The key this connection asked to mirror before its `WELCOME`.
    opened_mirror: Option<String>,
    ready: bool,
    bye: Option<Reason>,
}

/// Lifecycle: from a connected socket to an [`End`].
impl<'a> Connection<'a> {
    /// Serves one connection, from the socket to its end.
    pub(super) fn serve(shared: &'a Arc<Shared>, link: usize, stream: TcpStream) -> End {
        if let Err(end) = register(shared, link, &stream) {
            return end;
        }
        let config = &shared.config;
        let watch = SilenceWatch::new(stream, config.keepalive, keepalive(shared, link));
        let mut reader = FrameReader::new(watch, config.max_line);
        let mut conn = Connection {
            shared,
            link,
            epoch: String::new(),
            id: 0,
            name: String::new(),
            handshake: 0,
            opened_mirror: None,
            ready: false,
            bye: None,
        };
        let cause = match conn.open().and_then(|()| conn.greet(&mut reader)) {
            Ok(()) => conn.read_loop(&mut reader),
            Err(cause) => cause,
        };
        conn.close();
        conn.end(cause)
    }

    /// What the connection's end means for its link.
    fn end(&self, cause: String) -> End {
        match self.bye {
            Some(Reason::AuthFailed) => End::Stop(Closed::AuthFailed),
            _ if self.shared.is_stopping() => End::Stop(Closed::Quit),
            Some(reason) => End::Lost {
                cause: format!("the server said BYE {reason}"),
                ready: self.ready,
                bye: Some(reason),
            },
            None => End::Lost {
                cause,
                ready: self.ready,
                bye: None,
            },
        }
    }

    /// Sends what goes before `WELCOME`, if anything (see
    /// `handshake::opening`).
    fn open(&mut self) -> Result<(), String> {
        let mirror_of = self.shared.core.lock().mirror_key(self.link);
        let token = self.shared.config.token.as_deref();
        let sent = match handshake::opening(token, mirror_of) {
            None => Ok(()),
            Some(Step::Mirror(key)) => {
                let sent = self.send_steps(vec![Step::Mirror(key.clone())]);
                self.opened_mirror = Some(key);
                sent
            }
            Some(step) => self.send_steps(vec![step]),
        };
        sent.map_err(|e| e.to_string())
    }

    /// Reads `WELCOME`, then sends the handshake.
    fn greet(&mut self, reader: &mut Reader) -> Result<(), String> {
        let line = match reader.read_line() {
            Ok(Some(Frame::Line(line))) => String::from_utf8_lossy(line).into_owned(),
            Ok(Some(Frame::TooLong(_))) => return Err("the first line is too long".into()),
            // The client's reader does not look for telnet commands.
            Ok(Some(Frame::Telnet(_))) => return Err("the server spoke telnet".into()),
            Ok(None) => return Err("the server closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        };
        let (id, name, key, epoch) = match ServerLine::parse(&line) {
            Ok(
                welcome @ ServerLine::Welcome {
                    id,
                    name,
                    key,
                    epoch,
                    ..
                },
            ) => {
                self.emit(&welcome);
                (id, name, key, epoch)
            }
            Ok(ServerLine::Bye(reason)) => {
                self.bye = Some(reason);
                self.emit(&ServerLine::Bye(reason));
                return Err(format!("refused: {reason}"));
            }
            _ => return Err(format!("expected WELCOME, got {line:?}")),
        };
        self.epoch = epoch.to_string();
        self.id = id;
        self.name = name.to_string();
        let steps = self.plan(epoch, key, name);
        self.send_handshake(steps).map_err(|e| e.to_string())
    }

    /// Decides, under the core lock, what this connection must send.
    fn plan(&self, epoch: &str, key: &str, name: &str) -> Vec<Step> {
        let mut core = self.shared.core.lock();
        if let Some(gap) = core.merge.welcome(epoch, self.link) {
            core.forget_keys();
            self.shared.emit(Event::Gap(gap));
        }
        // Without a token, whether to mirror was decided before WELCOME.
        let mirror_of = match self.shared.config.token {
            None => self.opened_mirror.clone(),
            Some(_) => core.mirror_key(self.link),
        };
        let seat = core.link_up(self.link, key, name, mirror_of);
        let token = self.shared.config.token.as_deref();
        handshake::plan(token, core.merge.last(), seat, core.name.as_deref())
    }

    /// Sends the handshake's steps at once; the connection is ready when
    /// the last one's reply is in (at once, when there are none to wait
    /// for). An opening `/mirror`'s reply is one of them.
    fn send_handshake(&mut self, steps: Vec<Step>) -> Result<(), super::ClientError> {
        let waits = |s: &Step| !matches!(s, Step::Join);
        self.handshake = steps.iter().filter(|s| waits(s)).count();
        self.handshake += usize::from(self.opened_mirror.is_some());
        self.send_steps(steps)?;
        if self.handshake == 0 {
            self.become_ready();
        }
        Ok(())
    }

    /// Writes `steps` in one write (so that a server with a token finds
    /// `/mirror` buffered with `/auth`), queueing what waits for replies.
    fn send_steps(&self, steps: Vec<Step>) -> Result<(), super::ClientError> {
        let mut bytes = Vec::new();
        let mut pending = Vec::new();
        for step in steps {
            let (command, waits) = match &step {
                Step::Auth(token) => (Command::Auth(token), Pending::Auth),
                Step::Mirror(key) => (Command::Mirror(key), Pending::Mirror),
                Step::Resume { after, key } => (
                    Command::Resume {
                        after: *after,
                        key: key.as_deref(),
                    },
                    Pending::Resume {
                        after: *after,
                        keyed: key.is_some(),
                        handshake: true,
                    },
                ),
                Step::Nick(name) => (
                    Command::Nick(name),
                    Pending::Nick {
                        name: name.clone(),
                        reply: None,
                        mode: NickMode::Handshake,
                    },
                ),
                Step::Join => (
                    Command::Ping(handshake::JOIN_TOKEN),
                    Pending::Ping {
                        token: handshake::JOIN_TOKEN.to_string(),
                        sent: Instant::now(),
                        reply: None,
                    },
                ),
            };
            command.encode(&mut bytes);
            pending.push(waits);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.shared.write(self.link, &bytes, pending)
    }

    /// Sends `/nick NAME` on `link`, its outcome reported as `mode` says.
    fn send_nick(
        &self,
        link: usize,
        name: String,
        mode: NickMode,
    ) -> Result<(), super::ClientError> {
        let command = Command::Nick(&name);
        let pending = Pending::Nick {
            name: name.clone(),
            reply: None,
            mode,
        };
        self.shared.send(link, &command, None, Some(pending))
    }

    /// Closes the connection: fails what waited on it, and if it carried
    /// the name, hands the name to the other link.
    fn close(&mut self) {
        // Dropping the queue fails every request that waited on it.
        if let Some(out) = self.shared.links[self.link].lock().take() {
            let _ = out.stream.shutdown(Shutdown::Both);
        }
        let handover = self.shared.core.lock().link_down(self.link);
        if self.shared.is_stopping() {
            return;
        }
        if let Some(handover) = handover {
            self.hand_over(handover);
        }
    }

    /// The other link takes the name: `/resume` with the lost holder's
    /// key, and `/nick` to be sure of it.
    fn hand_over(&self, handover: Handover) {
        let Handover {
            to,
            after,
            key,
            name,
        } = handover;
        if let Some(after) = after {
            let _ = self.shared.send_resume(to, after, key.as_deref(), false);
        }
        if let Some(name) = name {
            let _ = self.send_nick(to, name, NickMode::Restore);
        }
    }
}

/// Sets a new connection's socket up and registers its writing half, so
/// that stopping the client can close it even while `WELCOME` is awaited.
fn register(shared: &Shared, link: usize, stream: &TcpStream) -> Result<(), End> {
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(shared.config.write_timeout)))
        .and_then(|()| stream.try_clone());
    let writer = setup.map_err(|e| End::Lost {
        cause: e.to_string(),
        ready: false,
        bye: None,
    })?;
    // The check and the registration share the lock `close_links` takes:
    // either this sees the client stopping, or `close_links` sees this
    // socket.
    let mut slot = shared.links[link].lock();
    if shared.is_stopping() {
        return Err(End::Stop(Closed::Quit));
    }
    *slot = Some(Out {
        stream: writer,
        pending: VecDeque::new(),
    });
    Ok(())
}

/// The keepalive: `/ping` after half of it in silence (the reader gives
/// up on the connection after all of it).
fn keepalive(shared: &Arc<Shared>, link: usize) -> Pinger {
    let shared = Arc::clone(shared);
    Box::new(move || {
        let token = shared.token("keepalive");
        let pending = Pending::Ping {
            token: token.clone(),
            sent: Instant::now(),
            reply: None,
        };
        // If the write fails, the connection is closed and the read ends.
        let _ = shared.send(link, &Command::Ping(&token), None, Some(pending));
        Ok(())
    })
}

/// What one read gave: a line, or a line that could not be read.
enum Read {
    Line(String),
    /// Too long, or broken: the SEQ if it was a broadcast event, and why.
    Unreadable(Option<u64>, String),
}

/// Reading: lines, payloads, and broadcast events to the merge.
impl Connection<'_> {
    /// Reads until the connection ends; returns why.
    fn read_loop(&mut self, reader: &mut Reader) -> String {
        let mut payload = Vec::new();
        loop {
            let line = match self.read_line(reader) {
                Ok(Read::Line(line)) => line,
                Ok(Read::Unreadable(seq, error)) => {
                    self.unreadable(seq, error);
                    continue;
                }
                Err(cause) => return cause,
            };
            let parsed = match ServerLine::parse(&line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let seq = ServerLine::broadcast_seq(line.as_bytes());
                    self.unreadable(seq, format!("{e}: {line:?}"));
                    continue;
                }
            };
            let mut bytes = Bytes::new();
            if let ServerLine::Data { seq, len, .. } = parsed {
                match self.read_payload(reader, seq, len, &mut payload) {
                    Ok(Some(read)) => bytes = read,
                    Ok(None) => continue,
                    Err(cause) => return cause,
                }
            }
            self.handle(&parsed, bytes);
        }
    }

    /// Reads one line, owned, so that the reader is free again (a `DATA`
    /// payload is read from it next). `Err` when the connection is over.
    fn read_line(&self, reader: &mut Reader) -> Result<Read, String> {
        let read = reader.read_line().map(|frame| match frame {
            Some(Frame::Line(line)) => Some(Read::Line(String::from_utf8_lossy(line).into_owned())),
            // Too long: all we keep is the SEQ, if it is a broadcast.
            Some(Frame::TooLong(head)) => {
                let max_line = self.shared.config.max_line;
                let error = format!("a line longer than {max_line} bytes was skipped");
                Some(Read::Unreadable(ServerLine::broadcast_seq(head), error))
            }
            // The client's reader does not look for telnet commands.
            Some(Frame::Telnet(_)) => None,
            None => None,
        });
        match read {
            Ok(Some(read)) => Ok(read),
            Ok(None) => Err("the server closed the connection".into()),
            Err(e) if reader.get_ref().expired() => {
                Err(format!("no sign of life from the server ({e})"))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads the payload of `DATA SEQ FROM LEN` and its LF. `Ok(None)`
    /// when it was over the limit (skipped, and reported); `Err` when the
    /// connection is over.
    fn read_payload(
        &self,
        reader: &mut Reader,
        seq: u64,
        len: u64,
        payload: &mut Vec<u8>,
    ) -> Result<Option<Bytes>, String> {
        let limit = self.shared.config.max_payload;
        let too_big = len > limit;
        // `len` is within max_payload, which fits in memory; a payload
        // over it is skipped, keeping the framing.
        let read = if too_big {
            reader.skip_payload(len)
        } else {
            reader.read_payload(len as usize, payload)
        };
        read.map_err(|e| e.to_string())?;
        match reader.read_payload_end() {
            Ok(true) => {}
            Ok(false) => return Err("a payload was not followed by a newline".into()),
            Err(e) => return Err(e.to_string()),
        }
        if too_big {
            let error = format!("a payload of {len} bytes is over the limit of {limit}");
            self.unreadable(Some(seq), error);
            return Ok(None);
        }
        Ok(Some(Bytes::from(std::mem::take(payload))))
    }

    /// Handles one line: a broadcast event goes to the merge, the rest to
    /// the replies.
    fn handle(&mut self, line: &ServerLine<'_>, payload: Bytes) {
        if line.seq().is_some() {
            if let ServerLine::Nick { old, new, .. } = *line
                && old == self.name
            {
                self.name = new.to_string();
                self.shared.core.lock().links[self.link].name = new.to_string();
            }
            self.offer(Event::from_line(line, self.link, payload));
            return;
        }
        match *line {
            ServerLine::Welcome { .. } => {}
            ServerLine::Dm { .. } => self.emit(line),
            ServerLine::Ping(token) => {
                let pong = Command::Pong(token);
                let _ = self
                    .shared
                    .send(self.link, &pong, None, Some(Pending::QUIET));
                self.emit(line);
            }
            ServerLine::Bye(reason) => {
                self.bye = Some(reason);
                self.emit(line);
            }
            _ => self.reply(line),
        }
    }

    /// A line that could not be read: say so, and if it was broadcast
    /// event `seq`, let it take its place in the stream as a gap (or the
    /// events after it would wait for it forever).
    fn unreadable(&self, seq: Option<u64>, error: String) {
        self.shared.emit(Event::Unreadable {
            link: self.link,
            error,
        });
        let Some(seq) = seq else {
            return;
        };
        self.to_merge(|merge, out| merge.unreadable(seq, self.link, out));
    }

    /// Hands a broadcast event to the merge, and the application whatever
    /// it can now have.
    fn offer(&self, event: Event) {
        self.to_merge(|merge, out| merge.offer(event, self.link, out));
    }

    /// Runs `step` on the merge, unless this connection's server run is
    /// one the client has moved on from.
    fn to_merge(&self, step: impl FnOnce(&mut Merge, &mut Vec<Event>)) {
        let mut core = self.shared.core.lock();
        if core.merge.epoch() == Some(self.epoch.as_str()) {
            self.shared.merged(&mut core, step);
        }
    }

    /// Hands a line that is not a broadcast event to the application.
    fn emit(&self, line: &ServerLine<'_>) {
        self.shared
            .emit(Event::from_line(line, self.link, Bytes::new()));
    }
}
