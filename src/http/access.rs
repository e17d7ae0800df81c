//! Who may come in: the token, and the `Origin` of browser requests.
//!
//! # Two different questions
//!
//! * **The token** answers "does this client know the server's secret?"
//!   When the server has one, every route but the page's own files and
//!   `/healthz` ([`super::route::Route::needs_token`]) wants it, as
//!   `Authorization: Bearer TOKEN` or as a `token=TOKEN` query parameter
//!   (a browser's `EventSource` cannot set headers). Missing or wrong:
//!   `401` with `WWW-Authenticate: Bearer`. It is compared in constant
//!   time (`subtle`), so the time an answer takes does not tell an
//!   attacker how many leading bytes they guessed right.
//!
//! * **The origin** answers "which web page is making this browser
//!   request?" A browser sends an `Origin` header with every `POST` and
//!   every cross-site request, and it cannot be forged by the page. Without
//!   this check, any web site that someone in the office opens could post
//!   into the room through that person's browser, which can reach the
//!   hub on the office network. So a request whose `Origin` is neither
//!   this server itself (`http://` + the request's `Host`) nor one of the
//!   origins allowed with `--http-origin` is refused with `403`. Requests
//!   without `Origin` (curl, scripts, Prometheus) are not browser requests
//!   from another page, and pass.
//!
//! An allowed *other* origin gets CORS headers so that its page may read
//! the answers: `Access-Control-Allow-Origin` (naming it, never `*`) and
//! `Vary: Origin` (the answer depends on who asked). Before a
//! cross-origin `POST` with a header such as `Authorization`, a browser
//! asks first with `OPTIONS` (a *preflight*); [`Access::preflight`]
//! answers it `204` with the methods and headers we take. A preflight
//! never carries the token, so it is answered before the token is checked.

use super::request::Request;
use super::response::{HttpError, Response};
use super::route::Route;
use crate::protocol::{ErrorCode, tokens_match};

/// The request headers a cross-origin page may send.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Tickcast-Key, Last-Event-ID";

/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE: u32 = 600;

/// The server's access rules: its token, if any, and the other origins
/// allowed besides its own.
#[derive(Clone)]
pub struct Access {
    token: Option<String>,
    origins: Vec<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("origins", &self.origins)
            .finish()
    }
}

/// What the origin check found: whose page asked, as far as CORS cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin` header: not a cross-site browser request.
    None,
    /// The page is this server's own.
    SameOrigin,
    /// Another origin, allowed by `--http-origin`.
    Allowed(String),
}

impl Cors {
    /// The header fields every answer to this request carries (empty
    /// unless another origin was allowed).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Cors::None | Cors::SameOrigin => Vec::new(),
            Cors::Allowed(origin) => vec![
                ("Access-Control-Allow-Origin", origin.clone()),
                ("Access-Control-Expose-Headers", "Retry-After".to_owned()),
                ("Vary", "Origin".to_owned()),
            ],
        }
    }
}

impl Access {
    /// Rules for a server with this token (none: no token needed) and
    /// these other allowed origins (as given to `--http-origin`, for
    /// example `https://dash.example.com`; case and a trailing `/` do not
    /// matter).
    pub fn new(token: Option<String>, origins: Vec<String>) -> Self {
        let origins = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Access { token, origins }
    }

    /// Checks the request's `Origin`: `403` (`auth-failed`) for a page
    /// that is neither this server nor allowed.
    pub fn check_origin(&self, request: &Request) -> Result<Cors, HttpError> {
        let Some(origin) = request.header("origin") else {
            return Ok(Cors::None);
        };
        let origin = origin.trim().to_ascii_lowercase();
        let own = request
            .header("host")
            .map(|host| format!("http://{}", host.trim().to_ascii_lowercase()));
        let own = own.as_deref().map(|o| o.strip_suffix(":80").unwrap_or(o));
        if own == Some(origin.strip_suffix(":80").unwrap_or(&origin)) {
            Ok(Cors::SameOrigin)
        } else if self.origins.contains(&origin) {
            Ok(Cors::Allowed(origin))
        } else {
            Err(HttpError::new(
                403,
                "auth-failed",
                format!("origin {origin} is not allowed (see --http-origin)"),
            ))
        }
    }

    /// Checks the token, when the server has one: `401` (`auth-required`,
    /// with `WWW-Authenticate: Bearer`) when neither the `Authorization`
    /// header nor the `token=` parameter holds it.
    pub fn check_token(&self, request: &Request) -> Result<(), HttpError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let bearer = request.header("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        let offered: Vec<&str> = bearer.into_iter().chain(request.query("token")).collect();
        let good = offered
            .iter()
            .any(|t| tokens_match(t.as_bytes(), expected.as_bytes()));
        if good {
            Ok(())
        } else {
            let why = if offered.is_empty() {
                "this server wants a token: Authorization: Bearer TOKEN, or token=TOKEN"
            } else {
                "wrong token"
            };
            Err(HttpError::from_code(ErrorCode::AuthRequired, why))
        }
    }

    /// The `204` answer to an `OPTIONS` request on `route` (a CORS
    /// preflight when `cors` is another origin; otherwise just `Allow`).
    pub fn preflight(&self, route: Route, cors: &Cors) -> Response {
        let response = Response::new(204)
            .header("Allow", route.allow())
            .headers(cors.headers());
        match cors {
            Cors::Allowed(_) => response
                .header("Access-Control-Allow-Methods", route.allow())
                .header("Access-Control-Allow-Headers", ALLOW_HEADERS)
                .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE.to_string()),
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    /// A request with these header lines.
    fn request(target: &str, headers: &[&str]) -> Request {
        let mut head = format!("GET {target} HTTP/1.1\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        parse_head(&head)
    }

    fn access() -> Access {
        Access::new(
            Some("s3cret".into()),
            vec!["https://Dash.Example.com/".into()],
        )
    }

    #[test]
    fn tokens_come_as_bearer_or_query() {
        let a = access();
        for good in [
            request("/stats", &["Authorization: Bearer s3cret"]),
            request("/stats", &["authorization: bearer  s3cret "]),
            request("/events?token=s3cret", &[]),
            request("/events?token=s3cret", &["Authorization: Bearer nope"]),
        ] {
            assert_eq!(a.check_token(&good), Ok(()));
        }
        for bad in [
            request("/stats", &[]),
            request("/stats", &["Authorization: Bearer s3cre"]),
            request("/stats", &["Authorization: Basic czNjcmV0"]),
            request("/stats", &["Authorization: s3cret"]),
            request("/stats?token=S3CRET", &[]),
        ] {
            let e = a.check_token(&bad).unwrap_err();
            assert_eq!((e.status, e.code), (401, "auth-required"));
            assert_eq!(e.headers, [("WWW-Authenticate", "Bearer".to_owned())]);
        }
        let open = Access::new(None, vec![]);
        assert_eq!(open.check_token(&request("/stats", &[])), Ok(()));
    }

    #[test]
    fn origins_are_own_allowed_or_refused() {
        let a = access();
        assert_eq!(a.check_origin(&request("/", &[])), Ok(Cors::None));
        assert_eq!(
            a.check_origin(&request(
                "/line",
                &["Host: 127.0.0.1:7880", "Origin: http://127.0.0.1:7880"]
            )),
            Ok(Cors::SameOrigin)
        );
        assert_eq!(
            a.check_origin(&request(
                "/line",
                &["Host: Hub.Office:80", "Origin: http://hub.office"]
            )),
            Ok(Cors::SameOrigin)
        );
        assert_eq!(
            a.check_origin(&request(
                "/line",
                &["Host: hub:7880", "Origin: https://dash.example.com"]
            )),
            Ok(Cors::Allowed("https://dash.example.com".into()))
        );
        for bad in [
            // another site, the same host under https, another port, a file
            "Origin: https://evil.example",
            "Origin: https://hub:7880",
            "Origin: http://hub:7881",
            "Origin: null",
        ] {
            let e = a
                .check_origin(&request("/line", &["Host: hub:7880", bad]))
                .unwrap_err();
            assert_eq!((e.status, e.code), (403, "auth-failed"), "{bad}");
        }
        // Without a Host, only the allowed list counts.
        assert!(
            a.check_origin(&request("/line", &["Origin: http://hub:7880"]))
                .is_err()
        );
    }

    #[test]
    fn allowed_origins_get_cors_headers_and_preflights() {
        let a = access();
        let cors = Cors::Allowed("https://dash.example.com".into());
        let names: Vec<_> = cors.headers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Access-Control-Allow-Origin",
                "Access-Control-Expose-Headers",
                "Vary"
            ]
        );
        assert!(Cors::SameOrigin.headers().is_empty());

        let r = a.preflight(Route::Line, &cors);
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.header_value("access-control-allow-origin"),
            Some("https://dash.example.com")
        );
        assert_eq!(
            r.header_value("Access-Control-Allow-Methods"),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            r.header_value("Access-Control-Allow-Headers"),
            Some(ALLOW_HEADERS)
        );
        assert_eq!(r.header_value("Vary"), Some("Origin"));

        let plain = a.preflight(Route::Stats, &Cors::None);
        assert_eq!(plain.header_value("Allow"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(plain.header_value("Access-Control-Allow-Origin"), None);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        assert!(!format!("{:?}", access()).contains("s3cret"));
    }
}
