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
//! | … the broadcaster thread: SEQ, history, fan-out | `server/broadcaster.rs` |
//! | … writing to clients without one stalling the others | `server/conn.rs` |
//! | … the client map (one mutex, never held across I/O) | `server/registry.rs` |
//! | … the history ring for `/resume` | `server/history.rs` |
//! | the HTTP door's building blocks (the page, SSE, `/stats`, `/metrics`) | [`http`] |
//! | … reading a request head and body, with limits and a deadline | [`http::request`] |
//! | … routes, token and origin checks, responses | [`http::route`], [`http::access`], [`http::response`] |
//! | … protocol lines as Server-Sent Events | [`http::sse`] |
//! | … counters and the `/metrics`, `/stats` formats | [`http::stats`] |
//! | reading while watching for silence (idle timeout, keepalive) | `silence.rs` |
//! | the client library | [`client`] |
//! | … a connection's thread: handshake, reading, reconnecting | `client/link.rs` |
//! | … one ordered stream out of replays and two connections | `client/merge.rs` |
//! | … matching replies to the commands that caused them | `client/requests.rs` |
//! | the `tickcast` command (`serve`, `chat`) | `src/main.rs`, `src/cli/` |
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
