#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! tickcast: a TCP broadcast hub (live notifications and chat for many
//! clients) and its client library, built on plain threads and blocking
//! sockets, with no async runtime.
//!
//! ```
//! use std::net::TcpListener;
//! use tickcast::client::{Client, Event};
//! use tickcast::server::{self, Config};
//!
//! // A hub on a free loopback port, without its periodic tick.
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let hub = server::spawn_on(listener, Config { tick: None, ..Config::default() })?;
//!
//! // A client says something; everyone (itself included) hears it.
//! let client = Client::connect(hub.local_addr())?;
//! client.say("hello")?;
//! let heard = client.events().iter().find_map(|event| match event {
//!     Event::Msg { text, .. } => Some(text),
//!     _ => None,
//! });
//! assert_eq!(heard.as_deref(), Some("hello"));
//!
//! client.quit("done")?;
//! hub.shutdown();
//! hub.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! Each idea lives in one place:
//!
//! | idea | where |
//! |---|---|
//! | the wire format, as pure functions and types | [`protocol`] |
//! | … cutting bytes into lines and payloads, with a bounded buffer | [`protocol::frame`] |
//! | … client commands / server lines | [`protocol::command`], [`protocol::line`] |
//! | the server: its threads and how they fit | [`server`] |
//! | … accepting, limits at the door, the shutdown sequence | `server/accept.rs` |
//! | … one connection's session thread | `server/session.rs` |
//! | … the broadcaster thread: SEQ, history, fan-out; replays | `server/broadcaster/` |
//! | … the checks and commands both doors share | `server/command.rs` |
//! | … one connection, and the three ways it ends | `server/conn.rs` |
//! | … a client's unsent bytes, and how far behind it may fall | `server/outbox.rs` |
//! | … the thread that writes what did not fit | `server/flusher.rs` |
//! | … the client map (one mutex, never held across I/O) | `server/registry.rs` |
//! | … the history ring for `/resume`, and session keys | `server/history.rs`, `server/keys.rs` |
//! | … the HTTP door: its acceptor, event streams | `server/http_door.rs`, `server/stream.rs` |
//! | the HTTP door's building blocks (the page, SSE, `/stats`, `/metrics`) | [`http`] |
//! | … reading a request head and body, with limits and a deadline | [`http::request`] |
//! | … routes, token and origin checks, responses | [`http::route`], [`http::access`], [`http::response`] |
//! | … protocol lines as Server-Sent Events | [`http::sse`] |
//! | … counters and the `/metrics`, `/stats` formats | [`http::stats`] |
//! | reading while watching the clock (idle and line timeouts, keepalive) | `silence.rs` |
//! | the client library | [`client`] |
//! | … a link's thread: connect, serve, back off, again | `client/link.rs` |
//! | … several server addresses: which one a link tries next | `client/route.rs` |
//! | … one connection: greeting, handshake plan, reading, replies | `client/connection.rs`, `client/handshake.rs` |
//! | … the state the links share, with a glossary | `client/shared.rs` |
//! | … one ordered stream out of replays and two connections | `client/merge.rs` |
//! | … matching replies to the commands that caused them | `client/requests.rs` |
//! | the `tickcast` command (`serve`, `chat`, `bench`) | `src/main.rs`, `src/cli/` |
//!
//! `docs/TOUR.md` follows one chat line through these files, stop by stop.
//!
//! `ARCHITECTURE.md` in the repository describes the threads, who owns
//! what, and the invariants; `docs/PROTOCOL.md` the protocol;
//! `docs/HTTP.md` the HTTP door.

#[cfg(not(unix))]
compile_error!("tickcast needs a Unix-like system (it sends with MSG_DONTWAIT and waits in poll)");

pub mod client;
pub mod http;
pub mod protocol;
pub mod server;
mod silence;

/// The code in README.md, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
