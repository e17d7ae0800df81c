//! Reading one HTTP/1.1 request from a blocking socket: the head with a
//! hard size cap and a deadline, then a body of a declared length with a
//! caller-given limit.
//!
//! # The idea
//!
//! An HTTP request is a *head* (request line and headers, ending in an
//! empty line) and an optional *body* whose length the head declares. We
//! read bytes into one buffer until the head is complete, and let
//! [`httparse`] cut it up: it does the tedious, security-sensitive part
//! (tokens, whitespace, line ends) and never allocates. Everything that
//! the buffer held *past* the head stays in it: the start of the body, or,
//! on a kept-alive connection, the start of the next request. That is why
//! [`RequestReader`] lives as long as the connection, not as long as one
//! request.
//!
//! Three limits keep one peer from costing us much:
//!
//! * **size**: a head over [`MAX_HEAD`] (8 KiB) is refused (`431`) without
//!   reading further, so the buffer never grows past that (plus one read);
//! * **time**: the caller passes an [`Instant`] by which the head must be
//!   complete. Before each read the socket's read timeout is set to the
//!   time left, so a silent or trickling peer costs a sleeping thread and
//!   nothing else, and is cut off at the deadline, not per read;
//! * **body**: [`RequestReader::read_body`] checks `Content-Length` against
//!   the caller's limit *before* reading anything (`413`), so a huge body
//!   is never held in memory.
//!
//! Every error ends the connection: after a malformed head or an unread
//! body we can no longer tell where the next request would start.
//! [`ReadError::status`] says which status to answer first, if any.
//!
//! # Choices the contract left open
//!
//! * `Transfer-Encoding` (chunked bodies) is not supported: such a request
//!   gets `411 Length Required`, which tells the sender exactly what to do
//!   (send `Content-Length`; `curl -d` does). Every body we take is small
//!   and bounded, so we lose nothing by wanting its length up front.
//! * HTTP/1.0 requests are answered and the connection closed (keep-alive
//!   in 1.0 is an old extension that nothing we serve needs).
//! * Query parameters are decoded as HTML forms encode them: `%XX` and `+`
//!   for a space (so a literal `+` is written `%2B`). Decoded text must be
//!   UTF-8. The path itself is compared as sent, undecoded.
//! * Header values that are not UTF-8 are treated as absent by
//!   [`Request::header`].

use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) we accept, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header fields we parse in one head; more is answered `431`
/// like an oversized head.
pub const MAX_HEADERS: usize = 64;

/// How much we ask the socket for in one read.
const READ_CHUNK: usize = 4096;

/// The shortest read timeout we set (a zero timeout would mean "none").
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A byte source whose reads can be given a timeout: a `TcpStream`, or an
/// in-memory reader in tests.
pub trait TimedRead: Read {
    /// Sets how long the next reads may block (`None`: forever).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl TimedRead for &TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// An in-memory request source (tests, examples): reads never wait, so
/// timeouts mean nothing to it.
impl TimedRead for &[u8] {
    fn set_read_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Parses one complete request head held in memory (for tests).
#[cfg(test)]
pub(crate) fn parse_head(head: &str) -> Request {
    RequestReader::new(head.as_bytes())
        .read_head(Instant::now() + Duration::from_secs(1))
        .expect("a valid request head")
}

/// A request method. The ones we route are named; anything else is kept
/// as sent, to be answered `405`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: a `GET` whose answer has no body.
    Head,
    /// `POST`
    Post,
    /// `OPTIONS`: a CORS preflight, from a browser.
    Options,
    /// Any other method (`PUT`, `DELETE`, …), as sent.
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, without the query, as sent (`/events`).
    pub path: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    /// Query parameters, percent-decoded, in the order sent.
    query: Vec<(String, String)>,
    /// Header fields; names lowercased, values as sent (trimmed).
    headers: Vec<(String, Vec<u8>)>,
    /// The declared body length (0 when there is no `Content-Length`).
    content_length: u64,
}

impl Request {
    /// The first value of header `name` (any case), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The first value of query parameter `name` (exact case), decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection may carry another request after this one:
    /// HTTP/1.1 without `Connection: close`.
    pub fn keep_alive(&self) -> bool {
        self.http11 && !self.has_token("connection", "close")
    }

    /// The body length the head declared (0 when none).
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// Whether the client waits for `100 Continue` before sending its body
    /// (`Expect: 100-continue`, which curl sends for large bodies). Answer
    /// it with [`super::response::CONTINUE`] once the length is known to
    /// be acceptable, then read the body.
    pub fn expects_continue(&self) -> bool {
        self.http11 && self.has_token("expect", "100-continue")
    }

    /// Whether a comma-separated header (in any of its fields) holds
    /// `token`, without regard to case.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Builds a request from httparse's view of the head.
    fn from_parsed(parsed: &httparse::Request<'_, '_>) -> Result<Request, ReadError> {
        // httparse only reports Complete once all three are set.
        let method = Method::parse(parsed.method.unwrap_or_default());
        let target = parsed.path.unwrap_or_default();
        let http11 = parsed.version == Some(1);

        // Absolute form (`GET http://host/path`), which servers must accept:
        // keep only the path, which starts where the authority ends (at
        // the first `/`, `?` or `#`), and is `/` when empty.
        let absolute = ["http://", "https://"]
            .iter()
            .find_map(|scheme| target.strip_prefix(scheme));
        let target = absolute.map_or(target, |rest| {
            rest.find(['/', '?', '#']).map_or("", |i| &rest[i..])
        });
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = if absolute.is_some() && !path.starts_with('/') {
            "/"
        } else {
            path
        };

        let headers: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();

        if headers.iter().any(|(n, _)| n == "transfer-encoding") {
            return Err(ReadError::LengthRequired);
        }
        let mut content_length = None;
        for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ReadError::Malformed("Content-Length is not a number"))?;
            if content_length.is_some_and(|l| l != length) {
                return Err(ReadError::Malformed("two different Content-Length values"));
            }
            content_length = Some(length);
        }

        Ok(Request {
            method,
            path: path.to_owned(),
            http11,
            query: parse_query(query)?,
            headers,
            content_length: content_length.unwrap_or(0),
        })
    }
}

/// Splits and decodes a query string (`a=1&b=x%20y`).
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ReadError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space, as in HTML forms).
fn percent_decode(s: &str) -> Result<String, ReadError> {
    const BAD: ReadError = ReadError::Malformed("bad percent-encoding in the query");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next().ok_or(BAD)?, bytes.next().ok_or(BAD)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| BAD)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BAD)?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| ReadError::Malformed("the query is not UTF-8"))
}

/// Why no (complete) request could be read. Every one of these ends the
/// connection; [`ReadError::status`] says what to answer before closing.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection cleanly, before the first byte of a
    /// request: the normal end of a kept-alive connection. Answer nothing.
    Closed,
    /// The head was not complete by the deadline (or a body not by its
    /// own). Answer nothing, close.
    TimedOut,
    /// The socket failed, or closed in the middle of a request.
    Io(io::Error),
    /// The head is over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields: `431`.
    HeadTooLarge,
    /// The head is not valid HTTP/1.x, or its query or `Content-Length`
    /// cannot be read: `400`.
    Malformed(&'static str),
    /// The body is sent with `Transfer-Encoding` (chunked), which we do
    /// not take: `411`.
    LengthRequired,
    /// The declared body is over the caller's limit: `413`. Nothing of it
    /// was read.
    BodyTooLarge {
        /// What `Content-Length` said.
        length: u64,
        /// The caller's limit.
        limit: u64,
    },
}

impl ReadError {
    /// The status to answer with before closing, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            ReadError::Closed | ReadError::TimedOut | ReadError::Io(_) => None,
            ReadError::HeadTooLarge => Some(431),
            ReadError::Malformed(_) => Some(400),
            ReadError::LengthRequired => Some(411),
            ReadError::BodyTooLarge { .. } => Some(413),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the connection closed"),
            ReadError::TimedOut => f.write_str("the request was not complete in time"),
            ReadError::Io(e) => write!(f, "reading the request: {e}"),
            ReadError::HeadTooLarge => write!(
                f,
                "the request head is over {} KiB or {MAX_HEADERS} header fields",
                MAX_HEAD / 1024
            ),
            ReadError::Malformed(why) => write!(f, "malformed request: {why}"),
            ReadError::LengthRequired => {
                f.write_str("send the body with Content-Length, not Transfer-Encoding")
            }
            ReadError::BodyTooLarge { length, limit } => {
                write!(f, "the body is {length} bytes, over the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads requests, one after another, from one connection; see the module
/// docs. Holds the bytes read past the current request until the next
/// call needs them.
#[derive(Debug)]
pub struct RequestReader<R> {
    inner: R,
    /// Bytes read but not yet used: a partial head, or what followed one.
    buf: Vec<u8>,
}

impl<R: TimedRead> RequestReader<R> {
    /// Starts reading requests from `inner`.
    pub fn new(inner: R) -> Self {
        RequestReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes already read past the last head or body (the start of the
    /// next request, on a kept-alive connection).
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next request head, which must be complete by `deadline`.
    pub fn read_head(&mut self, deadline: Instant) -> Result<Request, ReadError> {
        // Where to look for the head's end on the next parse: only worth
        // parsing again once a new LF has arrived.
        let mut scanned = 0;
        loop {
            if self.buf[scanned..].contains(&b'\n') {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Request::new(&mut fields);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        if len > MAX_HEAD {
                            return Err(ReadError::HeadTooLarge);
                        }
                        let request = Request::from_parsed(&parsed);
                        self.buf.drain(..len);
                        return request;
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
                    Err(e) => return Err(ReadError::Malformed(malformed_why(e))),
                }
            }
            scanned = self.buf.len();
            if self.buf.len() >= MAX_HEAD {
                return Err(ReadError::HeadTooLarge);
            }
            match self.fill(deadline) {
                Ok(0) if self.buf.is_empty() => return Err(ReadError::Closed),
                Ok(0) => return Err(ReadError::Io(ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the body `request` declared, if it is at most `limit` bytes,
    /// completing it by `deadline`. Over the limit, nothing is read and
    /// the answer is [`ReadError::BodyTooLarge`] (then close: the unread
    /// body is still on its way).
    pub fn read_body(
        &mut self,
        request: &Request,
        limit: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, ReadError> {
        let length = request.content_length();
        if length > limit {
            return Err(ReadError::BodyTooLarge { length, limit });
        }
        // `length <= limit`, and the caller's limit is a size it is willing
        // to hold in memory.
        let length = length as usize;
        while self.buf.len() < length {
            if self.fill(deadline)? == 0 {
                return Err(ReadError::Io(ErrorKind::UnexpectedEof.into()));
            }
        }
        let rest = self.buf.split_off(length);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One read into the buffer, waiting at most until `deadline`.
    /// Returns the number of bytes read (0: end of stream).
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::TimedOut);
            }
            self.inner
                .set_read_timeout(Some(left.max(MIN_WAIT)))
                .map_err(ReadError::Io)?;
            match self.inner.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                // A timeout shows as WouldBlock on Unix, TimedOut elsewhere;
                // the loop then finds the deadline passed.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

/// httparse's error, in words for the `400` answer.
fn malformed_why(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line end",
        httparse::Error::Token => "invalid method",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory peer: each read returns the next chunk (a `None` chunk
    /// is a read that times out), then end of stream.
    struct Peer {
        chunks: VecDeque<Option<Vec<u8>>>,
        reads: usize,
        timeouts: Vec<Option<Duration>>,
    }

    impl Peer {
        fn new<I: IntoIterator<Item = Option<Vec<u8>>>>(chunks: I) -> Self {
            Peer {
                chunks: chunks.into_iter().collect(),
                reads: 0,
                timeouts: Vec::new(),
            }
        }

        fn whole(bytes: &[u8]) -> Self {
            Peer::new([Some(bytes.to_vec())])
        }

        /// The bytes sent one at a time.
        fn trickle(bytes: &[u8]) -> Self {
            Peer::new(bytes.iter().map(|&b| Some(vec![b])))
        }
    }

    impl Read for Peer {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            match self.chunks.pop_front() {
                None => Ok(0),
                Some(None) => {
                    // Wait as a socket would, but not long.
                    let wait = self.timeouts.last().copied().flatten();
                    std::thread::sleep(wait.unwrap_or_default().min(Duration::from_millis(5)));
                    Err(ErrorKind::WouldBlock.into())
                }
                Some(Some(mut chunk)) => {
                    let n = chunk.len().min(out.len());
                    out[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.chunks.push_front(Some(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl TimedRead for Peer {
        fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
            self.timeouts.push(timeout);
            Ok(())
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn parses_method_path_query_and_headers() {
        let mut r = RequestReader::new(Peer::whole(
            b"GET /events?name=al%69ce&since=5b0e%3A12&msg=a+b%2Bc&flag HTTP/1.1\r\n\
              Host: 127.0.0.1:7880\r\n\
              Last-Event-ID:  5b0e:12 \r\n\r\n",
        ));
        let req = r.read_head(soon()).unwrap();
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/events");
        assert!(req.http11);
        assert_eq!(req.query("name"), Some("alice"));
        assert_eq!(req.query("since"), Some("5b0e:12"));
        assert_eq!(req.query("msg"), Some("a b+c"));
        assert_eq!(req.query("flag"), Some(""));
        assert_eq!(req.query("nope"), None);
        assert_eq!(req.header("host"), Some("127.0.0.1:7880"));
        assert_eq!(req.header("LAST-EVENT-ID"), Some("5b0e:12"));
        assert_eq!(req.content_length(), 0);
        assert!(req.keep_alive());
    }

    #[test]
    fn a_head_split_into_single_bytes_is_read_whole() {
        let head = b"POST /line?key=k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let mut r = RequestReader::new(Peer::trickle(head));
        let req = r.read_head(soon()).unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/line");
        assert_eq!(req.content_length(), 5);
        assert_eq!(r.read_body(&req, 100, soon()).unwrap(), b"hello");
        // Every read had a timeout set, never zero.
        let peer = r.get_ref();
        assert!(peer.timeouts.len() >= peer.reads);
        assert!(
            peer.timeouts
                .iter()
                .all(|t| t.is_some_and(|t| !t.is_zero()))
        );
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let mut r = RequestReader::new(Peer::whole(b"GET /healthz HTTP/1.1\nHost: x\n\n"));
        assert_eq!(r.read_head(soon()).unwrap().path, "/healthz");
    }

    #[test]
    fn an_oversized_head_is_431_without_reading_on() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() <= MAX_HEAD + 100 {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut rest = head.clone();
        rest.extend(std::iter::repeat_n(b'x', 1 << 20));
        let mut r = RequestReader::new(Peer::whole(&rest));
        let err = r.read_head(soon()).unwrap_err();
        assert!(matches!(err, ReadError::HeadTooLarge), "{err:?}");
        assert_eq!(err.status(), Some(431));
        // It stopped after the cap, not after the megabyte.
        assert!(r.leftover().len() < MAX_HEAD + READ_CHUNK);

        // A complete head just over the cap in one read is refused too.
        head.extend_from_slice(b"\r\n");
        let mut r = RequestReader::new(Peer::whole(&head));
        assert!(matches!(r.read_head(soon()), Err(ReadError::HeadTooLarge)));
    }

    #[test]
    fn too_many_header_fields_is_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let mut r = RequestReader::new(Peer::whole(&head));
        assert_eq!(r.read_head(soon()).unwrap_err().status(), Some(431));
    }

    #[test]
    fn a_body_over_the_limit_is_413_and_not_read() {
        let mut r = RequestReader::new(Peer::new([
            Some(b"POST /data HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n".to_vec()),
            Some(vec![b'x'; 1_000_000]),
        ]));
        let req = r.read_head(soon()).unwrap();
        let err = r.read_body(&req, 1024, soon()).unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::BodyTooLarge {
                    length: 1_000_000,
                    limit: 1024
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), Some(413));
        assert_eq!(r.get_ref().reads, 1, "the body was not read");
    }

    #[test]
    fn chunked_bodies_are_411_and_bad_lengths_400() {
        for (head, status) in [
            (
                &b"POST /line HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                411,
            ),
            (b"POST /line HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST /line HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", 400),
            (
                b"POST /line HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                400,
            ),
            (b"GET /?a=%zz HTTP/1.1\r\n\r\n", 400),
            (b"GET /?a=%ff HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        ] {
            let mut r = RequestReader::new(Peer::whole(head));
            let err = r.read_head(soon()).unwrap_err();
            assert_eq!(err.status(), Some(status), "{err:?}");
        }
        // The same length twice is fine.
        let mut r = RequestReader::new(Peer::whole(
            b"POST /line HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nhi",
        ));
        assert_eq!(r.read_head(soon()).unwrap().content_length(), 2);
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        for (head, keep) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], true),
            (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false),
        ] {
            let mut r = RequestReader::new(Peer::whole(head));
            assert_eq!(r.read_head(soon()).unwrap().keep_alive(), keep);
        }
    }

    #[test]
    fn leftover_bytes_carry_over_to_the_next_request() {
        let two = b"POST /notify HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi\
                    GET /healthz HTTP/1.1\r\n\r\nGET /st";
        let mut r = RequestReader::new(Peer::whole(two));
        let first = r.read_head(soon()).unwrap();
        assert!(first.expects_continue());
        assert_eq!(r.read_body(&first, 10, soon()).unwrap(), b"hi");
        let second = r.read_head(soon()).unwrap();
        assert_eq!(second.path, "/healthz");
        assert_eq!(r.read_body(&second, 10, soon()).unwrap(), b"");
        assert_eq!(r.leftover(), b"GET /st");
        // The peer closes in the middle of the third head.
        let err = r.read_head(soon()).unwrap_err();
        assert!(
            matches!(&err, ReadError::Io(e) if e.kind() == ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }

    #[test]
    fn empty_lines_before_a_request_are_skipped() {
        // Some clients send a CR LF after a POST body; RFC 9112 asks servers
        // to ignore it.
        let mut r = RequestReader::new(&b"\r\nGET /stats HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(r.read_head(soon()).unwrap().path, "/stats");
    }

    #[test]
    fn a_clean_close_between_requests_is_closed() {
        let mut r = RequestReader::new(Peer::new([]));
        assert!(matches!(r.read_head(soon()), Err(ReadError::Closed)));
    }

    #[test]
    fn absolute_form_targets_keep_only_the_path() {
        let mut r = RequestReader::new(Peer::whole(b"GET http://h:1/stats?x=1 HTTP/1.1\r\n\r\n"));
        let req = r.read_head(soon()).unwrap();
        assert_eq!(req.path, "/stats");
        assert_eq!(req.query("x"), Some("1"));
        // The authority ends at a `?` too (one of the http_head fuzz
        // target's invariants): this is `/` with a query, not `/y`.
        for (head, path, query) in [
            (&b"GET http://h?x/y HTTP/1.1\r\n\r\n"[..], "/", Some("")),
            (b"GET https://h HTTP/1.1\r\n\r\n", "/", None),
            (b"GET http://h#a/b HTTP/1.1\r\n\r\n", "/", None),
        ] {
            let req = RequestReader::new(Peer::whole(head))
                .read_head(soon())
                .unwrap();
            assert_eq!(req.path, path);
            assert_eq!(req.query("x/y"), query);
        }
    }

    #[test]
    fn the_deadline_ends_a_slow_head() {
        // A peer that sends a little, then times out on every read.
        let mut chunks = vec![Some(b"GET / HT".to_vec())];
        chunks.extend(std::iter::repeat_n(None, 1000));
        let mut r = RequestReader::new(Peer::new(chunks));
        let deadline = Instant::now() + Duration::from_millis(30);
        let err = r.read_head(deadline).unwrap_err();
        assert!(matches!(err, ReadError::TimedOut), "{err:?}");
        assert_eq!(err.status(), None);
        assert!(Instant::now() >= deadline);
        // A deadline already passed does not read at all.
        let mut r = RequestReader::new(Peer::whole(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(matches!(
            r.read_head(Instant::now()),
            Err(ReadError::TimedOut)
        ));
    }
}
