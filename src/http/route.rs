//! The route table: which paths exist, which methods each takes, what
//! each needs (a token? a body, and how big?).
//!
//! # The idea
//!
//! Routing is a pure function from method and path to a [`Route`] or a
//! refusal, so the whole table fits on one screen and can be tested
//! without a socket. A path we do not know is `404`; a path we know,
//! asked with a method it does not take, is `405` with an `Allow` header
//! listing the ones it does. `HEAD` is allowed wherever `GET` is (the
//! answer is the `GET` answer without its body), and `OPTIONS` on any
//! known path is a CORS preflight ([`Routed::Preflight`]), answered by
//! [`super::access`].
//!
//! The page is three static files compiled into the binary with
//! `include_str!` (no build step, nothing from another host). Splitting
//! them lets the page run under a strict Content-Security-Policy
//! ([`PAGE_CSP`]) that forbids inline scripts.

use super::request::Method;
use super::response::HttpError;
use crate::protocol::ErrorCode;

/// The Content-Security-Policy sent with the page's files: everything
/// from this server, nothing from anywhere else, no inline script.
pub const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One path we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /`: the web page.
    Page,
    /// `GET /app.js`: the page's script.
    Script,
    /// `GET /style.css`: the page's style sheet.
    Style,
    /// `GET /events`: one browser client's event stream (SSE).
    Events,
    /// `POST /line`: one line from a stream's client.
    Line,
    /// `POST /data`: raw bytes from a stream's client.
    Data,
    /// `POST /notify`: a `TICK` to everyone.
    Notify,
    /// `GET /stats`: JSON.
    Stats,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /healthz`: `ok`.
    Healthz,
}

/// What to do with a request, once its path is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Serve the route (the method is one it takes; `HEAD` means: without
    /// the body).
    Serve(Route),
    /// `OPTIONS` on a known path: a CORS preflight.
    Preflight(Route),
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 10] = [
        Route::Page,
        Route::Script,
        Route::Style,
        Route::Events,
        Route::Line,
        Route::Data,
        Route::Notify,
        Route::Stats,
        Route::Metrics,
        Route::Healthz,
    ];

    /// The route for `path` (as sent, without its query), if any.
    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Page => "/",
            Route::Script => "/app.js",
            Route::Style => "/style.css",
            Route::Events => "/events",
            Route::Line => "/line",
            Route::Data => "/data",
            Route::Notify => "/notify",
            Route::Stats => "/stats",
            Route::Metrics => "/metrics",
            Route::Healthz => "/healthz",
        }
    }

    /// Whether the route takes `POST` (otherwise `GET` and `HEAD`).
    pub fn is_post(self) -> bool {
        matches!(self, Route::Line | Route::Data | Route::Notify)
    }

    /// The methods the route takes, as an `Allow` header says them.
    pub fn allow(self) -> &'static str {
        if self.is_post() {
            "POST, OPTIONS"
        } else {
            "GET, HEAD, OPTIONS"
        }
    }

    /// Whether the route needs the server's token (when it has one): all
    /// but the page's own files and `/healthz`.
    pub fn needs_token(self) -> bool {
        !matches!(
            self,
            Route::Page | Route::Script | Route::Style | Route::Healthz
        )
    }

    /// The largest body the route takes: `--max-line` (plus a line end,
    /// which is dropped) for `/line` and `/notify`, `--max-payload` for
    /// `/data`, nothing for the others (a `GET` with a body is refused).
    pub fn body_limit(self, max_line: usize, max_payload: u64) -> u64 {
        match self {
            Route::Line | Route::Notify => max_line as u64 + 2,
            Route::Data => max_payload,
            _ => 0,
        }
    }

    /// The `ERR` code of the `413` for a body over [`Route::body_limit`].
    pub fn too_large_code(self) -> &'static str {
        match self {
            Route::Data => "payload-too-large",
            _ => ErrorCode::LineTooLong.as_str(),
        }
    }

    /// The page's files: content type and text, compiled in.
    pub fn static_file(self) -> Option<(&'static str, &'static str)> {
        match self {
            Route::Page => Some(("text/html; charset=utf-8", include_str!("page/index.html"))),
            Route::Script => Some((
                "text/javascript; charset=utf-8",
                include_str!("page/app.js"),
            )),
            Route::Style => Some(("text/css; charset=utf-8", include_str!("page/style.css"))),
            _ => None,
        }
    }
}

/// Routes a request: a [`Routed`] for a known path and a method it takes,
/// otherwise the `404` or `405` (with `Allow`) to answer.
pub fn route(method: &Method, path: &str) -> Result<Routed, HttpError> {
    let Some(route) = Route::from_path(path) else {
        return Err(HttpError::new(
            404,
            ErrorCode::UnknownCommand.as_str(),
            format!("nothing at {path} (the page is at /)"),
        ));
    };
    let takes = match method {
        Method::Options => return Ok(Routed::Preflight(route)),
        Method::Get | Method::Head => !route.is_post(),
        Method::Post => route.is_post(),
        Method::Other(_) => false,
    };
    if takes {
        Ok(Routed::Serve(route))
    } else {
        let wanted = if route.is_post() { "POST" } else { "GET" };
        Err(HttpError::new(
            405,
            ErrorCode::UnknownCommand.as_str(),
            format!("{path} takes {wanted}, not {method}"),
        )
        .header("Allow", route.allow()))
    }
}

/// The text of a `POST /line` or `/notify` body: one trailing line end
/// (LF or CR LF) dropped, then at most `max_line` bytes (`413`
/// `line-too-long` otherwise). Whether it is UTF-8 without control
/// characters is the protocol's check, done by the caller like for a TCP
/// line.
pub fn line_body(body: &[u8], max_line: usize) -> Result<&[u8], HttpError> {
    let line = body.strip_suffix(b"\n").unwrap_or(body);
    let line = if line.len() < body.len() {
        line.strip_suffix(b"\r").unwrap_or(line)
    } else {
        line
    };
    if line.len() > max_line {
        return Err(HttpError::from_code(
            ErrorCode::LineTooLong,
            format!("a line is at most {max_line} bytes"),
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_found_by_its_path_and_takes_its_methods() {
        for route in Route::ALL {
            assert_eq!(Route::from_path(route.path()), Some(route));
            let (good, bad): (&[Method], &[Method]) = if route.is_post() {
                (&[Method::Post], &[Method::Get, Method::Head])
            } else {
                (&[Method::Get, Method::Head], &[Method::Post])
            };
            for m in good {
                assert_eq!(super::route(m, route.path()), Ok(Routed::Serve(route)));
            }
            for m in bad.iter().chain([&Method::Other("PUT".into())]) {
                let e = super::route(m, route.path()).unwrap_err();
                assert_eq!(e.status, 405, "{m} {route:?}");
                assert_eq!(e.headers, [("Allow", route.allow().to_owned())]);
            }
            assert_eq!(
                super::route(&Method::Options, route.path()),
                Ok(Routed::Preflight(route))
            );
        }
    }

    #[test]
    fn unknown_paths_are_404_whatever_the_method() {
        for path in ["/nope", "/events/", "", "/index.html", "/line?x"] {
            for m in [Method::Get, Method::Post, Method::Options] {
                let e = route(&m, path).unwrap_err();
                assert_eq!((e.status, e.code), (404, "unknown-command"));
            }
        }
    }

    #[test]
    fn the_405_body_names_the_method_wanted() {
        let e = route(&Method::Get, "/line").unwrap_err();
        assert_eq!(e.line(), "ERR unknown-command /line takes POST, not GET\n");
        assert_eq!(e.headers, [("Allow", "POST, OPTIONS".to_owned())]);
        let e = route(&Method::Post, "/stats").unwrap_err();
        assert_eq!(e.headers, [("Allow", "GET, HEAD, OPTIONS".to_owned())]);
    }

    #[test]
    fn tokens_and_bodies_per_route() {
        let open: Vec<_> = Route::ALL.iter().filter(|r| !r.needs_token()).collect();
        assert_eq!(
            open,
            [&Route::Page, &Route::Script, &Route::Style, &Route::Healthz]
        );
        assert_eq!(Route::Line.body_limit(4096, 1 << 20), 4098);
        assert_eq!(Route::Data.body_limit(4096, 1 << 20), 1 << 20);
        assert_eq!(Route::Events.body_limit(4096, 1 << 20), 0);
        assert_eq!(Route::Data.too_large_code(), "payload-too-large");
        assert_eq!(Route::Notify.too_large_code(), "line-too-long");
        for r in [Route::Page, Route::Script, Route::Style] {
            assert!(!r.static_file().unwrap().1.is_empty());
        }
    }

    #[test]
    fn a_line_body_drops_one_line_end_and_is_measured_after() {
        assert_eq!(line_body(b"hello\n", 5).unwrap(), b"hello");
        assert_eq!(line_body(b"hello\r\n", 5).unwrap(), b"hello");
        assert_eq!(line_body(b"hello", 5).unwrap(), b"hello");
        assert_eq!(line_body(b"a\n\n", 5).unwrap(), b"a\n");
        assert_eq!(line_body(b"", 5).unwrap(), b"");
        assert_eq!(line_body(b"a\r", 5).unwrap(), b"a\r");
        let e = line_body(b"hello!\n", 5).unwrap_err();
        assert_eq!((e.status, e.code), (413, "line-too-long"));
    }
}
