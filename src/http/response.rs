//! Writing HTTP/1.1 responses, and the one shape every error takes.
//!
//! # The idea
//!
//! A response is a status line, header fields, an empty line and a body:
//!
//! ```text
//! HTTP/1.1 409 Conflict\r\n
//! Date: Sun, 22 Nov 2026 10:00:05 GMT\r\n
//! Content-Type: text/plain; charset=utf-8\r\n
//! Content-Length: 38\r\n
//! \r\n
//! ERR nick-taken alice is already taken\n
//! ```
//!
//! [`Response`] is a value built with a few constructors and
//! [`Response::header`], and written in one `write_all` by
//! [`Response::write_to`], which adds what every answer needs: `Date`,
//! `Content-Length` (the length of the body even for `HEAD`, which
//! sends no body), `X-Content-Type-Options: nosniff`, and
//! `Connection: close` when the connection ends after it. An event
//! stream ([`Response::event_stream`]) is the one answer without a
//! length: its body runs until the connection closes.
//!
//! **Errors speak the protocol.** Every error answer has a
//! `text/plain` body that is one `ERR CODE TEXT` line, exactly as a TCP
//! client would get it, so a script sees the same words on either door.
//! [`HttpError`] is that line plus its status; [`HttpError::from_code`]
//! holds the table that maps each protocol error code to a status
//! (`nick-taken` → `409`, `rate-limited` → `429` with `Retry-After`…).
//! Failures that have no protocol code of their own borrow the nearest
//! protocol word, listed in [`HttpError`]'s docs and in `docs/HTTP.md`.

use super::request::ReadError;
use crate::protocol::ErrorCode;
use bytes::Bytes;
use std::io::{self, Write};
use std::time::SystemTime;

/// What to write before reading a body whose sender sent
/// `Expect: 100-continue` (see [`super::request::Request::expects_continue`]).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The content type of plain text answers (and of every error).
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The reason phrase for each status we send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// One answer, ready to be written.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// An event stream: no `Content-Length`, the body follows separately
    /// and ends when the connection does.
    stream: bool,
}

impl Response {
    /// An answer with no body (`204`, or a `200` whose body comes later).
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            stream: false,
        }
    }

    /// An answer with a body of the given content type.
    pub fn with_body(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Response::new(status)
            .header("Content-Type", content_type)
            .body(body)
    }

    /// A `text/plain; charset=utf-8` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::with_body(status, TEXT_PLAIN, body.into())
    }

    /// The head of a Server-Sent Events stream: `200`,
    /// `text/event-stream`, `Cache-Control: no-cache`, and no length (the
    /// events follow, written by the caller, until the connection closes).
    pub fn event_stream() -> Self {
        Response {
            stream: true,
            ..Response::new(200)
                .header("Content-Type", "text/event-stream")
                .header("Cache-Control", "no-cache")
                // Tells nginx-style proxies not to hold events back.
                .header("X-Accel-Buffering", "no")
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds several header fields (CORS headers, for example).
    pub fn headers(mut self, fields: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        self.headers.extend(fields);
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The first value of header `name` (any case).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Writes the whole answer in one `write_all`. `head_only` for `HEAD`
    /// requests (the headers, `Content-Length` included, but no body);
    /// `close` when the connection ends after this answer (it then says
    /// `Connection: close`). An event stream always closes at its end.
    pub fn write_to<W: Write>(&self, mut out: W, head_only: bool, close: bool) -> io::Result<()> {
        out.write_all(&self.encode(head_only, close, SystemTime::now()))?;
        out.flush()
    }

    /// The bytes [`Response::write_to`] writes, at time `now`.
    pub fn encode(&self, head_only: bool, close: bool, now: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            self.status,
            reason_phrase(self.status),
            http_date(now)
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        // A 204 must not have a length; a stream has none.
        if self.status != 204 && !self.stream {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(b"X-Content-Type-Options: nosniff\r\n");
        if close || self.stream {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A time as HTTP writes it (IMF-fixdate): `Sun, 22 Nov 2026 10:00:05 GMT`.
pub fn http_date(time: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = time.into();
    dt.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// An error answer: a status and the one `ERR CODE TEXT` line that is its
/// body, plus any header the status calls for.
///
/// `CODE` is a protocol error code where one fits (see
/// [`HttpError::from_code`]); HTTP's own failures borrow the nearest
/// protocol word:
///
/// | status | CODE |
/// |---|---|
/// | 400 malformed request, 411 | `bad-args` |
/// | 401 | `auth-required` |
/// | 403 origin refused | `auth-failed` |
/// | 404 unknown path, 405 | `unknown-command` |
/// | 413 on `/data` | `payload-too-large` |
/// | 413 on `/line`, `/notify`; 431 | `line-too-long` |
/// | 503 | `server-full`, `too-many-connections` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code.
    pub status: u16,
    /// The `CODE` word of the `ERR` line.
    pub code: &'static str,
    /// The `TEXT` of the `ERR` line: what went wrong, in words.
    pub text: String,
    /// Header fields the status calls for (`WWW-Authenticate`,
    /// `Retry-After`, `Allow`).
    pub headers: Vec<(&'static str, String)>,
}

impl HttpError {
    /// An error with this status, code word and text.
    pub fn new(status: u16, code: &'static str, text: impl Into<String>) -> Self {
        let mut headers = Vec::new();
        if status == 401 {
            headers.push(("WWW-Authenticate", "Bearer".to_owned()));
        }
        HttpError {
            status,
            code,
            text: text.into(),
            headers,
        }
    }

    /// The answer to a line a TCP client would get `ERR CODE TEXT` for, as
    /// the contract's `POST /line` table says: `400` for `bad-args`,
    /// `unknown-command`, `invalid-text`, `invalid-utf8`, `nick-invalid`
    /// (and `resume-gap`, which a line cannot cause); `404` for
    /// `no-such-user` and `bad-key`; `409` for `nick-taken`; `413` for
    /// `line-too-long`; `429` for `rate-limited`, with `Retry-After: 1`
    /// (use [`HttpError::retry_after`] to say more precisely); `401` for
    /// `auth-required`, with `WWW-Authenticate: Bearer`; `503` for a
    /// cluster node's `unavailable`, with `Retry-After: 1`.
    pub fn from_code(code: ErrorCode, text: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::BadArgs
            | ErrorCode::UnknownCommand
            | ErrorCode::InvalidText
            | ErrorCode::InvalidUtf8
            | ErrorCode::NickInvalid
            | ErrorCode::ResumeGap => 400,
            ErrorCode::NoSuchUser | ErrorCode::BadKey => 404,
            ErrorCode::NickTaken => 409,
            ErrorCode::LineTooLong => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::AuthRequired => 401,
            ErrorCode::Unavailable => 503,
        };
        let error = HttpError::new(status, code.as_str(), text);
        if matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable) {
            error.retry_after(1)
        } else {
            error
        }
    }

    /// The answer for an `ERR CODE TEXT` reply line (LF or not), as
    /// [`HttpError::from_code`]; `None` if the line is not an `ERR` line
    /// with a known code.
    pub fn from_err_line(line: &str) -> Option<Self> {
        let rest = line.trim_end_matches(['\r', '\n']).strip_prefix("ERR ")?;
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(HttpError::from_code(code.parse().ok()?, text))
    }

    /// The answer for a request that could not be read, if it gets one.
    /// `too_large` is the code for a body over its limit (the route's
    /// [`super::route::Route::too_large_code`]).
    pub fn from_read(error: &ReadError, too_large: &'static str) -> Option<Self> {
        let code = match error {
            ReadError::BodyTooLarge { .. } => too_large,
            ReadError::HeadTooLarge => ErrorCode::LineTooLong.as_str(),
            _ => ErrorCode::BadArgs.as_str(),
        };
        Some(HttpError::new(error.status()?, code, error.to_string()))
    }

    /// Sets `Retry-After` (seconds, at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.headers.retain(|(n, _)| *n != "Retry-After");
        self.headers
            .push(("Retry-After", seconds.max(1).to_string()));
        self
    }

    /// Adds a header field (`Allow` on a `405`, for example).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The body: `ERR CODE TEXT` and an LF, as the TCP protocol writes it.
    pub fn line(&self) -> String {
        if self.text.is_empty() {
            format!("ERR {}\n", self.code)
        } else {
            format!("ERR {} {}\n", self.code, self.text)
        }
    }

    /// The whole answer.
    pub fn to_response(&self) -> Response {
        Response::text(self.status, self.line()).headers(self.headers.iter().cloned())
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.line().trim_end())
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for Response {
    fn from(error: HttpError) -> Self {
        error.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_341_605_123)
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_text_answer_has_every_header_it_needs() {
        let r = Response::text(200, "USERS 2 alice bob\n").header("Vary", "Origin");
        assert_eq!(
            text(r.encode(false, false, at())),
            "HTTP/1.1 200 OK\r\n\
             Date: Sun, 22 Nov 2026 10:00:05 GMT\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Vary: Origin\r\n\
             Content-Length: 18\r\n\
             X-Content-Type-Options: nosniff\r\n\
             \r\n\
             USERS 2 alice bob\n"
        );
    }

    #[test]
    fn head_sends_the_length_but_not_the_body_and_close_says_so() {
        let r = Response::with_body(200, "text/html; charset=utf-8", &b"<p>hi</p>"[..]);
        let s = text(r.encode(true, true, at()));
        assert!(s.contains("Content-Length: 9\r\n"), "{s}");
        assert!(s.ends_with("Connection: close\r\n\r\n"), "{s}");
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        let s = text(Response::new(204).body("x").encode(false, false, at()));
        assert_eq!(
            s,
            "HTTP/1.1 204 No Content\r\nDate: Sun, 22 Nov 2026 10:00:05 GMT\r\n\
             X-Content-Type-Options: nosniff\r\n\r\n"
        );
    }

    #[test]
    fn an_event_stream_has_no_length_and_closes() {
        let s = text(Response::event_stream().encode(false, false, at()));
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Type: text/event-stream\r\n"));
        assert!(s.contains("Cache-Control: no-cache\r\n"));
        assert!(!s.contains("Content-Length"));
        assert!(s.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn errors_map_to_the_contract_statuses() {
        for (code, status) in [
            (ErrorCode::BadArgs, 400),
            (ErrorCode::UnknownCommand, 400),
            (ErrorCode::InvalidText, 400),
            (ErrorCode::InvalidUtf8, 400),
            (ErrorCode::NickInvalid, 400),
            (ErrorCode::NoSuchUser, 404),
            (ErrorCode::NickTaken, 409),
            (ErrorCode::LineTooLong, 413),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::BadKey, 404),
            (ErrorCode::AuthRequired, 401),
        ] {
            assert_eq!(HttpError::from_code(code, "x").status, status, "{code}");
        }
        let limited = HttpError::from_code(ErrorCode::RateLimited, "slow down").retry_after(3);
        assert_eq!(limited.headers, [("Retry-After", "3".to_owned())]);
        let auth = HttpError::from_code(ErrorCode::AuthRequired, "send the token");
        assert_eq!(auth.headers, [("WWW-Authenticate", "Bearer".to_owned())]);
    }

    #[test]
    fn an_error_body_is_one_err_line() {
        let e = HttpError::from_err_line("ERR nick-taken alice is already taken\n").unwrap();
        assert_eq!(e.status, 409);
        let s = text(e.to_response().encode(false, false, at()));
        assert!(s.starts_with("HTTP/1.1 409 Conflict\r\n"), "{s}");
        assert!(s.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(s.contains("Content-Length: 38\r\n"));
        assert!(s.ends_with("\r\n\r\nERR nick-taken alice is already taken\n"));

        let e = HttpError::from_code(ErrorCode::RateLimited, "you may send 5 lines per second");
        let s = text(e.to_response().encode(false, false, at()));
        assert!(s.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{s}");
        assert!(s.contains("Retry-After: 1\r\n"));
        assert!(s.ends_with("ERR rate-limited you may send 5 lines per second\n"));

        assert_eq!(HttpError::from_err_line("OK nick bob"), None);
        assert_eq!(HttpError::from_err_line("ERR no-such-code x"), None);
        assert_eq!(HttpError::new(404, "bad-key", "").line(), "ERR bad-key\n");
    }

    #[test]
    fn read_errors_become_answers_or_silence() {
        let big = ReadError::BodyTooLarge {
            length: 9,
            limit: 4,
        };
        let e = HttpError::from_read(&big, "payload-too-large").unwrap();
        assert_eq!((e.status, e.code), (413, "payload-too-large"));
        let e = HttpError::from_read(&ReadError::HeadTooLarge, "x").unwrap();
        assert_eq!((e.status, e.code), (431, "line-too-long"));
        let e = HttpError::from_read(&ReadError::LengthRequired, "x").unwrap();
        assert_eq!((e.status, e.code), (411, "bad-args"));
        assert_eq!(HttpError::from_read(&ReadError::TimedOut, "x"), None);
        assert_eq!(HttpError::from_read(&ReadError::Closed, "x"), None);
    }
}
