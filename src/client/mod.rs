//! The client library: a blocking client with its events on a channel,
//! that reconnects and resumes by itself so that nothing is lost.
//!
//! ```
//! use tickcast::client::{Client, ClientConfig, Event};
//! # let hub = tickcast::server::spawn_on(
//! #     std::net::TcpListener::bind("127.0.0.1:0")?,
//! #     tickcast::server::Config { tick: None, ..Default::default() },
//! # )?;
//! # let addr = hub.local_addr();
//!
//! // `addr` is where the hub listens, e.g. "127.0.0.1:7878".
//! let alice = Client::with_config(addr, ClientConfig {
//!     name: Some("alice".into()),
//!     ..ClientConfig::default()
//! })?;
//! alice.say("hello, room")?;
//! assert_eq!(alice.list()?, vec!["alice"]);
//! assert!(alice.ping()? < std::time::Duration::from_secs(1));
//!
//! for event in alice.events().iter() {
//!     match event {
//!         Event::Msg { from, text, .. } => {
//!             println!("<{from}> {text}");
//!             break;
//!         }
//!         Event::Gap(gap) => eprintln!("lost: {gap:?}"),
//!         _ => {}
//!     }
//! }
//! alice.quit("bye")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! A background thread per connection (`link`) reads server lines, parses
//! them and sends [`Event`]s on a `crossbeam_channel` — so an application
//! can `select!` over its own channels and the client's. It answers the
//! server's `PING` itself. Calls such as [`Client::say`] write straight to
//! the socket from the caller's thread; request calls ([`Client::list`],
//! [`Client::ping`], [`Client::nick`], [`Client::msg`]) then wait, with a
//! timeout, for the reply the reader thread routes back to them (see
//! `requests` for how replies without ids are matched).
//!
//! # Reconnect and resume: what is guaranteed
//!
//! When a connection is lost for any reason other than its own
//! [`Client::quit`] or a refused token, the link reconnects with
//! exponential backoff and jitter ([`Reconnect`]), authenticates again,
//! sends `/resume LAST KEY` (LAST: the last SEQ the application got; KEY:
//! the lost connection's session key, which also gives its name back) and
//! `/nick` to be sure of the name. The `merge` then makes the
//! guarantee:
//!
//! * **broadcast events reach the application exactly once, in SEQ
//!   order**, whatever mix of live and replayed lines, and from however
//!   many connections, they arrive by;
//! * **a loss is never silent**: if the server's history no longer reaches
//!   back far enough, or the server restarted, an [`Event::Gap`] says
//!   which SEQs are gone, in its place in the stream. So does an event
//!   this client cannot read (over [`ClientConfig::max_line`] or
//!   [`ClientConfig::max_payload`]): it becomes [`Gap::Unreadable`] and
//!   the events after it flow on.
//!
//! What is *not* guaranteed: a line the application sent just before the
//! connection dropped may or may not have reached the server (the call
//! returned `Ok` once the bytes were handed to the socket); while no
//! connection is up, sending fails with [`ClientError::NotConnected`]
//! rather than queueing; direct messages (`DM`) and replies are not kept
//! in the server's history and are not replayed.
//!
//! # Redundancy
//!
//! With [`ClientConfig::redundant`] the client keeps two connections. Both
//! receive every broadcast; the merge drops the second copy. When one
//! dies the other carries on without a gap or a duplicate while the dead
//! one reconnects. One of them carries the name and the commands; if it
//! is the one lost, the other takes the name over with the lost
//! connection's key. (The second connection shows in `/list` under a
//! guest name.)

mod config;
mod connection;
mod error;
mod event;
mod handshake;
mod link;
mod merge;
mod requests;
mod shared;

pub use config::{ClientConfig, Reconnect};
pub use error::ClientError;
pub use event::{Closed, Event, Gap};

use crate::protocol::{Command, validate_name, validate_text};
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded, unbounded};
use parking_lot::Mutex;
use requests::{NickMode, Pending};
use shared::Shared;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A connection to a tickcast server (two, when redundant). See the
/// [module docs](self). Dropping it closes it and ends its threads.
pub struct Client {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Disconnects when every link thread has ended.
    finished: Receiver<()>,
}

impl Client {
    /// Connects with the default settings.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::with_config(addr, ClientConfig::default())
    }

    /// Connects, authenticates and takes the configured name; returns once
    /// the first connection is ready. The first connection is tried once:
    /// if it fails, this returns the error (reconnecting is for
    /// connections that were up).
    pub fn with_config(
        addr: impl ToSocketAddrs,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        if let Some(name) = &config.name {
            validate_name(name).map_err(ClientError::InvalidName)?;
        }
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(ClientError::Connect)?
            .collect();
        let wait = config.connect_timeout + config.request_timeout;
        let (events_tx, events) = unbounded();
        let (first_tx, first) = bounded(1);
        let shared = Arc::new(Shared::new(config, addrs, events_tx, first_tx));
        let stream = shared.dial().map_err(ClientError::Connect)?;

        let (done_tx, finished) = bounded::<()>(0);
        let mut threads = Vec::new();
        let mut stream = Some(stream);
        for link in 0..shared.link_count() {
            let link_shared = Arc::clone(&shared);
            let initial = stream.take();
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("tickcast-client-link-{link}"))
                .spawn(move || {
                    link::run(link_shared, link, initial);
                    drop(done);
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // No thread may outlive this call: stop and join the
                    // link already started.
                    shared.stop(Closed::GaveUp);
                    for handle in threads {
                        let _ = handle.join();
                    }
                    return Err(ClientError::Connect(e));
                }
            }
        }
        let client = Client {
            shared,
            events,
            threads: Mutex::new(threads),
            finished,
        };
        match first.recv_timeout(wait) {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// The event channel. Read it: events queue without bound until you do.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Says `text` to everyone (`MSG`). A text starting with `/` is sent
    /// escaped, so it is said, not run.
    pub fn say(&self, text: &str) -> Result<(), ClientError> {
        validate_text(text).map_err(ClientError::InvalidText)?;
        if text.is_empty() {
            return Err(ClientError::Unsupported("an empty line says nothing"));
        }
        self.send(&Command::Say(text), None, Pending::QUIET)
    }

    /// Broadcasts raw bytes (`/send`; everyone gets `DATA`).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let command = Command::Send {
            len: bytes.len() as u64,
        };
        self.send(&command, Some(bytes), Pending::QUIET)
    }

    /// Serialises `value` as JSON and broadcasts it as a payload.
    #[cfg(feature = "serde")]
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(value).map_err(ClientError::Json)?;
        self.send_bytes(&bytes)
    }

    /// Sends a direct message and waits for the server to confirm it.
    pub fn msg(&self, to: &str, text: &str) -> Result<(), ClientError> {
        validate_text(text).map_err(ClientError::InvalidText)?;
        validate_name(to).map_err(ClientError::InvalidName)?;
        if text.is_empty() {
            return Err(ClientError::Unsupported("a direct message needs text"));
        }
        self.request(&Command::Msg { to, text }, Pending::Msg)
    }

    /// Takes a name; `Err(ClientError::Server { code: NickTaken, .. })` if
    /// someone has it. The client takes it back after every reconnect.
    ///
    /// ```
    /// # use tickcast::{client::Client, protocol::ErrorCode};
    /// # let hub = tickcast::server::spawn_on(
    /// #     std::net::TcpListener::bind("127.0.0.1:0")?,
    /// #     tickcast::server::Config::default(),
    /// # )?;
    /// let a = Client::connect(hub.local_addr())?;
    /// let b = Client::connect(hub.local_addr())?;
    /// a.nick("alice")?;
    /// let taken = b.nick("Alice").unwrap_err();
    /// assert_eq!(taken.code(), Some(ErrorCode::NickTaken));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nick(&self, name: &str) -> Result<(), ClientError> {
        validate_name(name).map_err(ClientError::InvalidName)?;
        self.request(&Command::Nick(name), |reply| Pending::Nick {
            name: name.to_string(),
            reply: Some(reply),
            mode: NickMode::App,
        })
    }

    /// Who is here.
    pub fn list(&self) -> Result<Vec<String>, ClientError> {
        self.request(&Command::List, Pending::List)
    }

    /// Round-trip time to the server.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let token = self.shared.token("ping");
        let command = Command::Ping(&token);
        self.request(&command, |reply| Pending::Ping {
            token: token.clone(),
            sent: Instant::now(),
            reply: Some(reply),
        })
    }

    /// Sends one line as typed, for interactive use: a chat line, or a
    /// `/command` whose replies then arrive as events. `/quit` quits
    /// (without waiting); `/send`, `/resume` and `/auth` are refused,
    /// because the client does those itself.
    pub fn send_line(&self, line: &str) -> Result<(), ClientError> {
        validate_text(line).map_err(ClientError::InvalidText)?;
        let command = match Command::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(()),
            // The server will answer ERR; pass it through as typed.
            Err(_) => {
                let link = self.shared.primary()?;
                return self.send_raw(link, line);
            }
        };
        match command {
            Command::Say(text) => self.say(text),
            Command::Nick(name) => self.send(
                &command,
                None,
                Pending::Nick {
                    name: name.to_string(),
                    reply: None,
                    mode: NickMode::App,
                },
            ),
            Command::Quit(reason) => {
                self.shared.begin_stop();
                for link in 0..self.shared.link_count() {
                    let _ = self.shared.send(link, &Command::Quit(reason), None, None);
                }
                Ok(())
            }
            Command::Send { .. } => Err(ClientError::Unsupported(
                "send payloads with send_bytes, not as a typed line",
            )),
            Command::Resume { .. } | Command::Auth(_) => Err(ClientError::Unsupported(
                "the client resumes and authenticates by itself",
            )),
            Command::Pong(_) => self.send(&command, None, Pending::QUIET),
            _ => self.send(&command, None, Pending::Passthrough),
        }
    }

    /// Leaves politely: `/quit`, then waits (at most the request timeout)
    /// for the server's `BYE` on every connection, and ends the client's
    /// threads. Events the server sent before its `BYE` are on the channel.
    pub fn quit(&self, reason: &str) -> Result<(), ClientError> {
        validate_text(reason).map_err(ClientError::InvalidText)?;
        self.shared.begin_stop();
        for link in 0..self.shared.link_count() {
            let _ = self.shared.send(link, &Command::Quit(reason), None, None);
        }
        if let Err(RecvTimeoutError::Timeout) = self
            .finished
            .recv_timeout(self.shared.config.request_timeout)
        {
            self.shared.close_links();
        }
        self.join();
        self.shared.stop(Closed::Quit);
        Ok(())
    }

    /// The current name (of the connection that carries commands).
    pub fn name(&self) -> Option<String> {
        self.shared.name()
    }

    /// Whether a connection is up and through its handshake.
    pub fn is_connected(&self) -> bool {
        self.shared.is_ready()
    }

    fn send(
        &self,
        command: &Command<'_>,
        payload: Option<&[u8]>,
        pending: Pending,
    ) -> Result<(), ClientError> {
        let link = self.shared.primary()?;
        self.shared.send(link, command, payload, Some(pending))
    }

    /// A line the client cannot parse goes out as it is; the server's
    /// `ERR` for it comes back as an event.
    fn send_raw(&self, link: usize, line: &str) -> Result<(), ClientError> {
        let bytes = format!("{line}\n");
        self.shared
            .write(link, bytes.as_bytes(), Some(Pending::Passthrough))
    }

    fn request<T>(
        &self,
        command: &Command<'_>,
        pending: impl FnOnce(crossbeam_channel::Sender<Result<T, ClientError>>) -> Pending,
    ) -> Result<T, ClientError> {
        let (reply, answer) = bounded(1);
        self.send(command, None, pending(reply))?;
        match answer.recv_timeout(self.shared.config.request_timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Disconnected),
        }
    }

    fn join(&self) {
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for handle in threads {
            let _ = handle.join();
        }
    }
}

/// Decodes a JSON payload (from [`Event::Data`]) into `T`.
#[cfg(feature = "serde")]
pub fn decode_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(payload).map_err(ClientError::Json)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.shared.addrs)
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.begin_stop();
        self.shared.close_links();
        self.join();
        self.shared.stop(Closed::Quit);
    }
}
