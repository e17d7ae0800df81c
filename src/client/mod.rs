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
//! one reconnects. One of them carries the name and the commands. The
//! other opens with `/mirror KEY` (the first one's session key), so the
//! server makes it a *mirror*: it only receives, and the others never see
//! it, so the client appears once (in `/list`, in `JOIN` and `LEAVE`).
//! While the first connection is lost, events keep coming through the
//! mirror, and commands fail with [`ClientError::NotConnected`] until it
//! is back and has taken its name back.
//!
//! A server that cannot make the second connection a mirror (it is on
//! another node of a cluster than the first, or an older server) lists it
//! as a client of its own, under a guest name. That one takes the name
//! over at once, with the lost connection's key, when the first is
//! lost.
//!
//! # Several addresses
//!
//! [`Client::connect_any`] and [`Client::with_config_any`] take a list of
//! server addresses: the nodes of one room (several `tickcast serve
//! --redis` sharing one Redis; `docs/CLUSTER.md` in the repository), so
//! that losing a node loses nothing.
//!
//! ```
//! # let node = || tickcast::server::spawn_on(
//! #     std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
//! #     tickcast::server::Config { tick: None, ..Default::default() },
//! # ).unwrap();
//! # let (node_a, node_b) = (node(), node());
//! # let (a, b) = (node_a.local_addr(), node_b.local_addr());
//! # drop(node_a); // nobody answers at `a`
//! use tickcast::client::Client;
//! // `a` and `b`: two nodes, e.g. "10.0.0.1:7878" and "10.0.0.2:7878".
//! let client = Client::connect_any([a, b])?;
//! assert_eq!(client.peer_addr(), Some(b)); // `a` did not answer
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * The client connects to the first address that answers, trying them
//!   in order, one right after the other: a dead first address costs one
//!   refused connect (at most [`ClientConfig::connect_timeout`] if it
//!   does not answer at all), never a backoff delay. A server that turns
//!   the connection away before it is ready (`BYE unavailable`,
//!   `BYE server-full`) counts as not answering.
//! * On a lost connection it reconnects to the *next* address (wrapping
//!   round), with the same backoff, `/auth`, `/resume LAST KEY` and name
//!   as with one address. It goes round in *rounds*: every address once,
//!   from the next one to the one just lost. The backoff waits between
//!   rounds, and one round is one attempt ([`Reconnect::max_attempts`]
//!   counts rounds).
//! * Redundant, the two links go to two different addresses: the first
//!   two that answer. When one link's node dies, that link reconnects to
//!   an address the other link is not on, if one answers; if none does,
//!   it shares the other's node (and stays there until that connection is
//!   lost). With one address, both links share it.
//! * Host names are resolved once, when the client is made; a name with
//!   several addresses counts as several, and repeats count once.
//!   [`Client::peer_addr`] says where the commands go now.
//!
//! The addresses must serve one room. Two independent servers are two
//! rooms, with two EPOCHs: moving from one to the other is a restart
//! ([`Gap::Restarted`]), and a redundant client spread over both follows
//! only one of them.

mod config;
mod connection;
mod error;
mod event;
mod handshake;
mod link;
// Public, and hidden, only for the fuzz target that drives it
// (fuzz/src/lib.rs, replayed by tests/fuzz_corpus.rs): not part of the API.
#[doc(hidden)]
pub mod merge;
mod requests;
mod route;
mod shared;

pub use config::{ClientConfig, Reconnect};
pub use error::ClientError;
pub use event::{Closed, Event, Gap};

use crate::protocol::{Command, validate_name, validate_text};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
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
    /// Connects to one server with the default settings. `addr` may
    /// resolve to several addresses (a host name): they are tried as
    /// [`Client::connect_any`] tries its list.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::with_config(addr, ClientConfig::default())
    }

    /// Connects to the first of several servers that answers (the nodes
    /// of one room), with the default settings. See
    /// [`Client::with_config_any`].
    pub fn connect_any(
        addrs: impl IntoIterator<Item = impl ToSocketAddrs>,
    ) -> Result<Client, ClientError> {
        Client::with_config_any(addrs, ClientConfig::default())
    }

    /// Connects to one server, authenticates and takes the configured
    /// name; returns once the first connection is ready. The same as
    /// [`Client::with_config_any`] with a list of one.
    pub fn with_config(
        addr: impl ToSocketAddrs,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        Client::with_config_any([addr], config)
    }

    /// Connects to the first of `addrs` that answers, authenticates and
    /// takes the configured name; returns once that connection is ready.
    /// On a lost connection the client moves on to the next address
    /// (wrapping round); see the [module docs](self#several-addresses).
    ///
    /// The first round is tried once: if no address gives a connection,
    /// this returns the last address's error (reconnecting is for
    /// connections that were up). A host name that does not resolve is
    /// an error at once; names are resolved here, once.
    ///
    /// ```
    /// use tickcast::client::{Client, ClientConfig};
    /// # let node = || tickcast::server::spawn_on(
    /// #     std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    /// #     tickcast::server::Config { tick: None, ..Default::default() },
    /// # ).unwrap();
    /// # let (node_a, node_b) = (node(), node());
    /// # let (a, b) = (node_a.local_addr().to_string(), node_b.local_addr().to_string());
    /// // `a` and `b` are two nodes of one room, e.g. "10.0.0.1:7878".
    /// let screen = Client::with_config_any([a.as_str(), b.as_str()], ClientConfig {
    ///     name: Some("screen-3".into()),
    ///     redundant: true, // one link on each node
    ///     ..ClientConfig::default()
    /// })?;
    /// screen.say("online")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_config_any(
        addrs: impl IntoIterator<Item = impl ToSocketAddrs>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        if let Some(name) = &config.name {
            validate_name(name).map_err(ClientError::InvalidName)?;
        }
        let addrs = route::resolve(addrs).map_err(ClientError::Connect)?;
        // A round may try every address before one answers.
        let tries = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
        let wait = config.connect_timeout.saturating_mul(tries) + config.request_timeout;
        let (events_tx, events) = unbounded();
        let (first_tx, first) = bounded(1);
        let shared = Arc::new(Shared::new(config, addrs, events_tx, first_tx));
        let (done, finished) = bounded::<()>(0);
        // Dropped on an early return, the client stops and joins what
        // was started: no thread outlives a failed connect.
        let client = Client {
            shared,
            events,
            threads: Mutex::new(Vec::new()),
            finished,
        };
        // The first link alone, to the first address that answers; the
        // second starts once it is ready, and so goes elsewhere (`route`).
        client.spawn_link(0, &done)?;
        match first.recv_timeout(wait) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Timeout),
        }
        for link in 1..client.shared.link_count() {
            client.spawn_link(link, &done)?;
        }
        Ok(client)
    }

    /// Starts the thread of `link`; `done` is dropped when it ends.
    fn spawn_link(&self, link: usize, done: &Sender<()>) -> Result<(), ClientError> {
        let shared = Arc::clone(&self.shared);
        let done = done.clone();
        let handle = thread::Builder::new()
            .name(format!("tickcast-client-link-{link}"))
            .spawn(move || {
                link::run(shared, link, link == 0);
                drop(done);
            })
            .map_err(ClientError::Connect)?;
        self.threads.lock().push(handle);
        Ok(())
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
    /// (without waiting); `/send`, `/resume`, `/auth` and `/mirror` are
    /// refused, because the client does those itself.
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
            Command::Resume { .. } | Command::Auth(_) | Command::Mirror(_) => Err(
                ClientError::Unsupported("the client resumes, authenticates and mirrors by itself"),
            ),
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

    /// The address of the server the commands go to (the name holder's
    /// connection); `None` while no connection is up. With several
    /// addresses, this says which node the client is on now.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer_addr()
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
            .field("addrs", &self.shared.route.addrs())
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
