//! The HTTP door: the same hub, reached from a web browser, from `curl`
//! and from a monitoring system (`docs/HTTP.md` for users).
//!
//! # The idea
//!
//! HTTP is a second door into the same room, not a second room. A
//! browser's event stream (`GET /events`) is a client like a TCP one: it
//! gets the same broadcast events, with the same SEQs, in the same order,
//! and `POST /line` is a line typed by that client, handled by the same
//! command code. So this module holds no chat logic at all. It holds only
//! what is particular to HTTP, as small pure parts that the server's
//! threads put together:
//!
//! | part | what it does | file |
//! |---|---|---|
//! | [`request`] | read a request head (8 KiB cap, deadline) and a bounded body | `request.rs` |
//! | [`route`] | path and method → [`Route`], or `404` / `405` | `route.rs` |
//! | [`access`] | the token, the `Origin`, CORS preflights | `access.rs` |
//! | [`response`] | write an answer; every error is one `ERR` line | `response.rs` |
//! | [`sse`] | protocol lines as Server-Sent Events, once per event | `sse.rs` |
//! | [`stats`] | counters, a snapshot, `/metrics` and `/stats` | `stats.rs` |
//! | the page | `page/index.html`, `app.js`, `style.css`, compiled in | `page/` |
//!
//! Like the TCP side, it is blocking I/O on one thread per connection,
//! with no async runtime and no web framework: a request is read with
//! [`httparse`] into a [`Request`], passed through [`admit`], and
//! answered.
//!
//! # The order of the checks at the door
//!
//! [`admit`] decides, before any handler runs, in this order:
//!
//! 1. **route**: an unknown path is `404`, a method the path does not
//!    take is `405` with `Allow`;
//! 2. **origin**: a browser request from a page that is neither this
//!    server nor allowed is `403` (before anything else can happen on
//!    its behalf);
//! 3. **preflight**: `OPTIONS` is answered `204` here (browsers never send
//!    credentials with a preflight, so it must come before the token);
//! 4. **token**: `401` when the route needs it and it is missing or wrong.
//!
//! What passes is a [`Route`] to serve and the [`Cors`] headers that every
//! answer to it carries.
//!
//! # One request, start to finish
//!
//! What a connection's thread does for each request (here over bytes in
//! memory; the server reads a `TcpStream`):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tickcast::http::{self, Access, Door, HttpError, RequestReader, Response, Route};
//!
//! let access = Access::new(None, Vec::new());
//! let mut reader = RequestReader::new(&b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"[..]);
//! let mut out = Vec::new();
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let request = reader.read_head(deadline)?;
//! let response = match http::admit(&access, &request) {
//!     Door::Answer(response) => response,
//!     Door::Enter(route, cors) => {
//!         // Read (or refuse) the body before answering, so that a
//!         // kept-alive connection stays in step.
//!         match reader.read_body(&request, route.body_limit(4096, 1 << 20), deadline) {
//!             Err(e) => HttpError::from_read(&e, route.too_large_code())
//!                 .expect("a body error has an answer")
//!                 .into(),
//!             Ok(_body) => match route {
//!                 Route::Healthz => Response::text(200, "ok\n"),
//!                 _ => unreachable!("only /healthz in this example"),
//!             },
//!         }
//!         .headers(cors.headers())
//!     }
//! };
//! let head_only = request.method == http::Method::Head;
//! response.write_to(&mut out, head_only, !request.keep_alive())?;
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! assert!(out.ends_with(b"\r\n\r\nok\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod access;
pub mod request;
pub mod response;
pub mod route;
pub mod sse;
pub mod stats;

pub use access::{Access, Cors};
pub use request::{Method, ReadError, Request, RequestReader};
pub use response::{HttpError, Response};
pub use route::{Route, Routed};
pub use stats::{Counters, Snapshot, Transport};

/// What the door decided about one request.
#[derive(Debug)]
pub enum Door {
    /// Serve this route; add these CORS headers to the answer.
    Enter(Route, Cors),
    /// Answer this and serve nothing (a refusal, or a preflight's `204`).
    Answer(Response),
}

/// Runs the checks every request passes before it is served, in the
/// order the module docs give.
pub fn admit(access: &Access, request: &Request) -> Door {
    let routed = match route::route(&request.method, &request.path) {
        Ok(routed) => routed,
        Err(refused) => return Door::Answer(refused.into()),
    };
    let cors = match access.check_origin(request) {
        Ok(cors) => cors,
        Err(refused) => return Door::Answer(refused.into()),
    };
    let route = match routed {
        Routed::Preflight(route) => return Door::Answer(access.preflight(route, &cors)),
        Routed::Serve(route) => route,
    };
    if route.needs_token()
        && let Err(refused) = access.check_token(request)
    {
        return Door::Answer(refused.to_response().headers(cors.headers()));
    }
    Door::Enter(route, cors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use request::parse_head;

    fn door(head: &str) -> Door {
        let access = Access::new(Some("t".into()), vec!["http://other:1".into()]);
        admit(&access, &parse_head(head))
    }

    fn status(door: Door) -> u16 {
        match door {
            Door::Enter(..) => 0,
            Door::Answer(r) => r.status(),
        }
    }

    #[test]
    fn the_checks_come_in_order() {
        // Unknown path before anything else, even from a refused origin.
        assert_eq!(
            status(door(
                "GET /nope HTTP/1.1\r\nHost: h\r\nOrigin: http://evil\r\n\r\n"
            )),
            404
        );
        // Origin before preflight and token.
        assert_eq!(
            status(door(
                "OPTIONS /line HTTP/1.1\r\nHost: h\r\nOrigin: http://evil\r\n\r\n"
            )),
            403
        );
        // A preflight needs no token.
        assert_eq!(
            status(door(
                "OPTIONS /line HTTP/1.1\r\nHost: h\r\nOrigin: http://other:1\r\n\r\n"
            )),
            204
        );
        // The token last, with the CORS headers on the refusal.
        match door("POST /line HTTP/1.1\r\nHost: h\r\nOrigin: http://other:1\r\n\r\n") {
            Door::Answer(r) => {
                assert_eq!(r.status(), 401);
                assert_eq!(r.header_value("WWW-Authenticate"), Some("Bearer"));
                assert_eq!(
                    r.header_value("Access-Control-Allow-Origin"),
                    Some("http://other:1")
                );
            }
            other => panic!("{other:?}"),
        }
        // The page and /healthz need no token; the rest do.
        assert_eq!(status(door("GET / HTTP/1.1\r\n\r\n")), 0);
        assert_eq!(status(door("HEAD /healthz HTTP/1.1\r\n\r\n")), 0);
        assert_eq!(status(door("GET /stats HTTP/1.1\r\n\r\n")), 401);
        match door("GET /events?token=t HTTP/1.1\r\nHost: h\r\nOrigin: http://h\r\n\r\n") {
            Door::Enter(route, cors) => {
                assert_eq!((route, cors), (Route::Events, Cors::SameOrigin));
            }
            other => panic!("{other:?}"),
        }
    }
}
