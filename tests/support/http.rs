//! A tiny blocking HTTP/1.1 client for the tests, on a raw `TcpStream`:
//! one request per connection (`Connection: close`), and an event-stream
//! reader. Every read is bounded by [`super::WAIT`].

use super::WAIT;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        let found = self.headers.iter().find(|(n, _)| *n == name);
        found.map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole answer (up to the close).
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut socket = TcpStream::connect(addr).expect("connect to the HTTP port");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(body).unwrap();
    read_answer(&mut socket, method == "HEAD")
}

/// Reads one answer: its head, then `Content-Length` bytes (or up to the
/// close, when it has no length). Some servers (chromedriver) keep the
/// connection open even after `Connection: close`.
pub fn read_answer(socket: &mut TcpStream, head_only: bool) -> Answer {
    let mut all = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let answer = parse_answer(&all, true);
            let length = answer
                .header("content-length")
                .map(|l| l.parse::<usize>().unwrap());
            match length {
                _ if head_only || answer.status == 204 || answer.status == 304 => {
                    return parse_answer(&all, head_only);
                }
                Some(length) if all.len() >= end + 4 + length => {
                    all.truncate(end + 4 + length);
                    return parse_answer(&all, false);
                }
                _ => {}
            }
        }
        match socket.read(&mut chunk) {
            Ok(0) | Err(_) => return parse_answer(&all, head_only),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Answer {
    request(addr, "GET", target, &[], b"")
}

pub fn post(addr: SocketAddr, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    request(addr, "POST", target, headers, body)
}

/// Posts a line for the stream with this KEY.
pub fn post_line(addr: SocketAddr, key: &str, line: &str) -> Answer {
    post(addr, "/line", &[("Tickcast-Key", key)], line.as_bytes())
}

/// Splits an answer into status, headers and body.
pub fn parse_answer(all: &[u8], head_only: bool) -> Answer {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if head_only {
        Vec::new()
    } else {
        all[end + 4..].to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// One SSE event (or a comment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Vec<String>,
    /// A comment line (`: keepalive`), when the event is one.
    pub comment: Option<String>,
}

impl SseEvent {
    /// The SEQ of a broadcast (from its `data:` line).
    pub fn seq(&self) -> u64 {
        self.data[0].split(' ').nth(1).unwrap().parse().unwrap()
    }

    pub fn line(&self) -> &str {
        &self.data[0]
    }
}

/// An open event stream.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    /// The body, when the answer was not a stream.
    pub body: String,
}

impl Sse {
    /// `GET target` and read the answer's head.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Sse {
        let socket = TcpStream::connect(addr).expect("connect to the HTTP port");
        Sse::open_on(socket, addr, target, headers)
    }

    pub fn open_on(
        mut socket: TcpStream,
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Sse {
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket);
        let mut raw = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            raw.extend_from_slice(line.as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let answer = parse_answer(&raw, true);
        let mut body = String::new();
        if answer.header("content-type") != Some("text/event-stream") {
            let _ = reader.read_to_string(&mut body);
        }
        Sse {
            status: answer.status,
            headers: answer.headers,
            reader,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    /// The next event or comment; `None` at the end of the stream.
    pub fn next_any(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read the stream (timed out?)");
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if event != SseEvent::default() {
                    return Some(event);
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                event.comment = Some(comment.trim().to_string());
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "event" => event.event = Some(value.to_string()),
                "id" => event.id = Some(value.to_string()),
                "data" => event.data.push(value.to_string()),
                other => panic!("unknown field {other:?}"),
            }
        }
    }

    /// The next event that is not a comment.
    pub fn next(&mut self) -> SseEvent {
        loop {
            let event = self.next_any().expect("the stream ended");
            if event.comment.is_none() || !event.data.is_empty() {
                return event;
            }
        }
    }

    /// The next event without an `event:` name (a broadcast).
    pub fn next_broadcast(&mut self) -> SseEvent {
        loop {
            let event = self.next();
            if event.event.is_none() {
                return event;
            }
        }
    }

    /// Reads `event: welcome` and returns its fields (`WELCOME ID NAME TIME
    /// KEY EPOCH …`).
    pub fn welcome(&mut self) -> Vec<String> {
        let event = self.next();
        assert_eq!(event.event.as_deref(), Some("welcome"), "{event:?}");
        event.data[0].split(' ').map(str::to_string).collect()
    }

    /// Events until the stream ends.
    pub fn until_end(&mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(event) = self.next_any() {
            all.push(event);
        }
        all
    }

    pub fn socket(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

/// An event stream that has been welcomed: its KEY, EPOCH, name.
pub struct Joined {
    pub sse: Sse,
    pub id: u64,
    pub key: String,
    pub epoch: String,
    pub name: String,
}

/// Opens `/events?QUERY`, reads the welcome and its own `JOIN`.
pub fn stream(addr: SocketAddr, query: &str) -> Joined {
    let mut sse = Sse::open(addr, &format!("/events{query}"), &[]);
    assert_eq!(sse.status, 200, "{}", sse.body);
    let w = sse.welcome();
    let name = w[2].clone();
    let join = sse.next_broadcast();
    assert_eq!(join.line(), format!("JOIN {} {name}", join.seq()));
    Joined {
        sse,
        id: w[1].parse().unwrap(),
        key: w[4].clone(),
        epoch: w[5].clone(),
        name,
    }
}
