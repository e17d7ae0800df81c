//! The fuzz targets: everything in tickcast that parses bytes from a peer.
//!
//! Each target is a plain function `fn(&[u8])` that reads the bytes as
//! its input and **panics when an invariant breaks**. The same functions
//! run three ways:
//!
//! * under AFL++ on stable Rust: `src/bin/afl.rs`, built by
//!   `cargo afl build`; `scripts/fuzz` runs every target for a while;
//! * under libFuzzer on nightly: `fuzz_targets/*.rs`, run by
//!   `cargo +nightly fuzz run TARGET --features libfuzzer`;
//! * in the main crate's plain `cargo test`: `tests/fuzz_corpus.rs`
//!   includes this very file and feeds it every input kept in
//!   `fuzz/corpus/TARGET/` and `fuzz/regressions/TARGET/`, so an input
//!   that once broke something stays a test without any fuzzer installed.
//!
//! That last use is why this file depends on nothing but `tickcast` and
//! `std`, and has no crate-level attributes.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Read};
use tickcast::client::merge::Merge;
use tickcast::client::{Event, Gap};
use tickcast::http::request::{MAX_HEAD, MAX_HEADERS, TimedRead};
use tickcast::http::route::{Route, Routed, route};
use tickcast::http::sse::{self, ResumePoint};
use tickcast::http::{ReadError, Request, RequestReader};
use tickcast::protocol::{Command, Frame, FrameReader, ServerLine, text_from_bytes, validate_text};

/// A fuzz target: panics if the input breaks one of its invariants.
pub type Target = fn(&[u8]);

/// Every target, by the name used for its corpus folder and on the
/// command line of `src/bin/afl.rs`.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("frame_server", frame_server),
    ("command", command),
    ("server_line", server_line),
    ("merge", merge),
    ("http_head", http_head),
    ("sse_resume", sse_resume),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, t)| t)
}

// ---------------------------------------------------------------------
// frame: FrameReader fed in random-size pieces
// ---------------------------------------------------------------------

/// The line limits the `frame` target tries (chosen by the first byte):
/// the edges (0, 1), small ones that long lines pass easily, and ones
/// around the reader's 4096-byte read chunk.
const MAX_LINES: [usize; 8] = [0, 1, 2, 7, 16, 100, 4095, 4097];

/// `READ_CHUNK` in `src/protocol/frame.rs`: the reader's storage never
/// grows past `max(READ_CHUNK, max_line + 2)`.
const READ_CHUNK: usize = 4096;

/// Payloads up to this size are read into memory; larger ones skipped.
const MAX_READ_PAYLOAD: u64 = 1 << 16;

/// **frame**: cuts a byte stream into lines and payloads with
/// [`FrameReader`], the data arriving in pieces of fuzzed sizes (with
/// `Interrupted` errors between some), and compares every frame with a
/// simple model that sees the whole stream at once.
///
/// Input: byte 0 picks `max_line`, bytes 1–4 the piece sizes (0 means an
/// `Interrupted` error), the rest is the stream. A line that is a payload
/// header (`/send LEN` as the server reads it, or `DATA SEQ FROM LEN` as
/// the client does) is followed by its payload, read or skipped.
///
/// Invariants: the reader's storage stays within `max(4096, max_line +
/// 2)`; a line never holds an LF nor passes `max_line`, and is exactly the
/// model's; an overlong line is reported once, with a head that is a
/// prefix of it and longer than `max_line`; a payload is exactly the LEN
/// bytes that follow its header; the end of the stream is reported where
/// the model says, as a clean end between lines or an error inside one.
pub fn frame(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let max_line = MAX_LINES[usize::from(data[0] % 8)];
    let sizes = data[1..5].to_vec();
    let stream = &data[5..];
    let mut reader = FrameReader::new(Pieces::new(stream, sizes), max_line);
    let mut model = Model {
        stream,
        pos: 0,
        ends_in_overlong_line: false,
    };
    let bound = READ_CHUNK.max(max_line + 2);
    let mut payload = Vec::new();
    loop {
        let got = reader.read_line();
        let checked = model.check_line(got, max_line);
        assert!(reader.buffer_size() <= bound, "reader storage over bound");
        let Some(payload_len) = checked else {
            return;
        };
        let Some(len) = payload_len else { continue };
        // Even LENs up to 64 KiB are read, the others skipped.
        if len <= MAX_READ_PAYLOAD && len.is_multiple_of(2) {
            let len = len as usize;
            let got = reader.read_payload(len, &mut payload);
            match model.take(len) {
                Some(expected) => {
                    assert!(got.is_ok(), "payload read failed: {got:?}");
                    assert_eq!(payload, expected, "payload bytes differ");
                }
                None => {
                    assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::UnexpectedEof));
                    assert!(payload.len() < len);
                    return;
                }
            }
        } else {
            let got = reader.skip_payload(len);
            if model.take_u64(len).is_none() {
                assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::UnexpectedEof));
                return;
            }
            assert!(got.is_ok(), "payload skip failed: {got:?}");
        }
        assert!(reader.buffer_size() <= bound, "reader storage over bound");
        let got = reader.read_payload_end().map_err(|e| e.kind());
        let expected = model.payload_end().ok_or(ErrorKind::UnexpectedEof);
        assert_eq!(got, expected, "the byte(s) after a payload");
        if got != Ok(true) {
            // The end of the stream, or the framing is lost (the server
            // then closes with protocol-error): nothing more to read.
            return;
        }
    }
}

/// **frame_server**: the server's reader (telnet commands taken out of
/// lines, the buffer given back while idle), on the same input as
/// `frame`.
///
/// Invariants: no line ever holds an LF or an IAC byte (255) or passes
/// `max_line`; the storage bound holds; payload bytes are never touched
/// (a stream without IAC gives exactly the frames of the plain reader,
/// payloads included).
pub fn frame_server(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let max_line = MAX_LINES[usize::from(data[0] % 8)];
    let stream = &data[5..];
    let pieces = || Pieces::new(stream, data[1..5].to_vec());
    let server = FrameReader::new(pieces(), max_line)
        .with_telnet()
        .release_when_idle();
    let frames = frames_of(server, max_line);
    if !stream.contains(&tickcast::protocol::frame::IAC) {
        assert_eq!(
            frames,
            frames_of(FrameReader::new(pieces(), max_line), max_line)
        );
    }
}

/// A line may keep a stray IAC (then it is not UTF-8 and is refused), but
/// never a telnet command: an IAC followed by a command byte (240–254),
/// unless it is escaped (`IAC IAC`), a negotiation cut by a CR or the line
/// end, or
/// a subnegotiation (SB, 250) not ended (`IAC SE`) before the line's end.
fn assert_no_telnet_command(line: &[u8]) {
    let mut i = 0;
    while i < line.len() {
        if line[i] == 255 {
            match line.get(i + 1) {
                Some(255) => i += 1,
                // Its option byte was the line end, or a CR.
                Some(251..=254) if matches!(line.get(i + 2), None | Some(b'\r')) => {}
                Some(250) => {}
                Some(&cmd @ 240..=254) => panic!("a telnet command {cmd} left in a line"),
                _ => {}
            }
        }
        i += 1;
    }
}

/// Every frame of `reader` (payloads read), as text, checking the line
/// invariants of `frame_server` on the way.
fn frames_of(mut reader: FrameReader<Pieces<'_>>, max_line: usize) -> Vec<String> {
    let bound = READ_CHUNK.max(max_line + 2);
    let mut frames = Vec::new();
    let mut payload = Vec::new();
    loop {
        let len = match reader.read_line() {
            Ok(Some(Frame::Line(line))) => {
                assert!(!line.contains(&b'\n'), "a line holds an LF");
                assert_no_telnet_command(line);
                assert!(line.len() <= max_line, "a line over max_line");
                frames.push(format!("line {line:?}"));
                payload_header(line)
            }
            // How much of an overlong line's head is held depends on how the
            // bytes arrived: compare the event, not the head.
            Ok(Some(Frame::TooLong(_))) => {
                frames.push("too long".into());
                None
            }
            Ok(Some(Frame::Telnet(command))) => {
                frames.push(format!("{command:?}"));
                None
            }
            Ok(None) => return frames,
            Err(e) => {
                frames.push(format!("error {:?}", e.kind()));
                return frames;
            }
        };
        assert!(reader.buffer_size() <= bound, "reader storage over bound");
        let Some(len) = len.filter(|&len| len <= MAX_READ_PAYLOAD) else {
            continue;
        };
        match reader.read_payload(len as usize, &mut payload) {
            Ok(()) => frames.push(format!("payload {payload:?}")),
            Err(e) => {
                frames.push(format!("payload error {:?}", e.kind()));
                return frames;
            }
        }
        match reader.read_payload_end() {
            Ok(true) => {}
            other => {
                frames.push(format!("end {:?}", other.map_err(|e| e.kind())));
                return frames;
            }
        }
    }
}

/// The reference for `frame`: the whole stream, and how far the frames
/// handed out so far reach.
struct Model<'a> {
    stream: &'a [u8],
    pos: usize,
    /// The stream ended inside a line already reported as too long: the
    /// reader must say `UnexpectedEof` next.
    ends_in_overlong_line: bool,
}

impl Model<'_> {
    /// Checks one `read_line` result against the stream. Returns `None`
    /// when the reading is over (end or error), else `Some` of the payload
    /// length the line declares, if it is a payload header.
    fn check_line(
        &mut self,
        got: io::Result<Option<Frame<'_>>>,
        max_line: usize,
    ) -> Option<Option<u64>> {
        if self.ends_in_overlong_line {
            assert_eq!(got.err().map(|e| e.kind()), Some(ErrorKind::UnexpectedEof));
            return None;
        }
        let rest = &self.stream[self.pos..];
        let lf = rest.iter().position(|&b| b == b'\n');
        // The line's bytes before its LF (all that is left if none), and
        // the line as handed out: without a CR right before the LF.
        let raw = &rest[..lf.unwrap_or(rest.len())];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        match got {
            Ok(Some(Frame::Line(got))) => {
                assert!(lf.is_some(), "a line without its LF was handed out");
                assert!(!got.contains(&b'\n'), "a line holds an LF");
                assert!(got.len() <= max_line, "a line over max_line");
                assert_eq!(got, line, "the line differs from the stream");
                self.pos += raw.len() + 1;
                Some(payload_header(got))
            }
            Ok(Some(Frame::TooLong(head))) => {
                assert!(head.len() > max_line, "TooLong head within max_line");
                assert!(
                    raw.starts_with(head),
                    "TooLong head is not the line's start"
                );
                match lf {
                    Some(_) => assert!(line.len() > max_line, "a line within max_line refused"),
                    // With no LF in sight, the reader may only give up on
                    // a line once it holds more than max_line + CR.
                    None => assert!(raw.len() > max_line + 1, "gave up on a line too early"),
                }
                // The rest of the line is dropped; the next frame starts
                // after its LF (or the stream ends inside it).
                self.pos += raw.len() + usize::from(lf.is_some());
                self.ends_in_overlong_line = lf.is_none();
                Some(None)
            }
            Ok(Some(Frame::Telnet(command))) => panic!("telnet is off, yet {command:?}"),
            Ok(None) => {
                assert!(rest.is_empty(), "a clean end reported inside a line");
                None
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
                assert!(lf.is_none(), "an error before a complete line");
                assert!(!rest.is_empty(), "an error at a clean end");
                assert!(
                    raw.len() <= max_line + 1,
                    "an overlong last line not reported"
                );
                None
            }
        }
    }

    /// The next `len` bytes, if the stream still holds them.
    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let bytes = self.stream.get(self.pos..)?.get(..len)?;
        self.pos += len;
        Some(bytes)
    }

    fn take_u64(&mut self, len: u64) -> Option<()> {
        let len = usize::try_from(len).ok()?;
        self.take(len).map(|_| ())
    }

    /// What `read_payload_end` must say: `Some(true)` for LF or CR LF,
    /// `Some(false)` for anything else, `None` at the end of the stream.
    fn payload_end(&mut self) -> Option<bool> {
        match *self.take(1)? {
            [b'\n'] => Some(true),
            [b'\r'] => Some(self.take(1)? == b"\n"),
            _ => Some(false),
        }
    }
}

/// The LEN of a payload header line: `/send LEN` (client to server) or
/// `DATA SEQ FROM LEN` (server to client).
fn payload_header(line: &[u8]) -> Option<u64> {
    let text = text_from_bytes(line).ok()?;
    if let Ok(Some(Command::Send { len })) = Command::parse(text) {
        return Some(len);
    }
    match ServerLine::parse(text) {
        Ok(ServerLine::Data { len, .. }) => Some(len),
        _ => None,
    }
}

/// A byte source that hands out its data in pieces of the given sizes,
/// in turn, the way a socket may; a size of 0 stands for one
/// `ErrorKind::Interrupted` error, which the reader must retry.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<u8>,
    turn: usize,
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], sizes: Vec<u8>) -> Self {
        Pieces {
            data,
            sizes,
            turn: 0,
        }
    }
}

/// The HTTP reader sets a timeout before each read; pieces never wait.
impl TimedRead for Pieces<'_> {
    fn set_read_timeout(&mut self, _timeout: Option<std::time::Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        if size == 0 && !self.turn.is_multiple_of(7) {
            // (Not every time: four zero sizes must not stall forever.)
            return Err(ErrorKind::Interrupted.into());
        }
        // Sizes 1..=255, with the top ones meaning "a lot".
        let size = match size {
            0..=250 => usize::from(size.max(1)),
            _ => 1 << (usize::from(size - 250) * 3),
        };
        let n = size.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

// ---------------------------------------------------------------------
// command and server_line: parse, encode, parse again
// ---------------------------------------------------------------------

/// The first line of `data`: a target that parses single lines sees what
/// a `FrameReader` would hand it, which never holds an LF.
fn first_line(data: &[u8]) -> &[u8] {
    data.split(|&b| b == b'\n').next().unwrap_or(data)
}

/// **command**: a client line, as the server checks and parses it.
///
/// Invariants: parsing never panics; an error's message is text that can
/// travel in an `ERR` line; a command encodes as exactly one valid line
/// (one LF, at the end), and parsing that line gives the same command.
pub fn command(data: &[u8]) {
    let Ok(text) = text_from_bytes(first_line(data)) else {
        return; // the server answers invalid-utf8 / invalid-text first
    };
    let command = match Command::parse(text) {
        Ok(Some(command)) => command,
        Ok(None) => {
            assert!(text.is_empty(), "a non-empty line ignored");
            return;
        }
        Err(e) => {
            assert!(validate_text(&e.message).is_ok(), "ERR text: {e:?}");
            return;
        }
    };
    let mut out = Vec::new();
    command.encode(&mut out);
    let body = encoded_line(&out);
    assert!(
        validate_text(body).is_ok(),
        "encoded {command:?} as {body:?}"
    );
    let again = Command::parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    assert_eq!(again, Some(command), "{text:?} -> {body:?}");
}

/// **server_line**: a server line, as the client library reads it (any
/// bytes, decoded leniently, as `client/link.rs` does).
///
/// Invariants: neither `ServerLine::parse` nor `ServerLine::broadcast_seq`
/// panics; for a broadcast line both find the same SEQ; a parsed line
/// encodes as exactly one line, which parses to the same value and
/// encodes to the same bytes again.
pub fn server_line(data: &[u8]) {
    let raw = first_line(data);
    let head_seq = ServerLine::broadcast_seq(raw);
    let text = String::from_utf8_lossy(raw);
    let Ok(line) = ServerLine::parse(&text) else {
        return;
    };
    if let Some(seq) = line.seq() {
        let from_text = ServerLine::broadcast_seq(text.as_bytes());
        assert_eq!(from_text, Some(seq), "broadcast_seq disagrees with parse");
        if std::str::from_utf8(raw).is_ok() {
            assert_eq!(head_seq, Some(seq));
        }
    }
    let encoded = line.to_line();
    let body = encoded_line(encoded.as_bytes());
    let again = ServerLine::parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    assert_eq!(again, line, "{text:?} -> {body:?}");
    assert_eq!(again.to_line(), encoded, "encoding is not stable");
}

/// An encoded line without its LF; panics unless it is UTF-8 with exactly
/// one LF, at the end.
fn encoded_line(out: &[u8]) -> &str {
    let text = std::str::from_utf8(out).expect("an encoded line is UTF-8");
    let body = text.strip_suffix('\n').expect("an encoded line ends in LF");
    assert!(
        !body.contains('\n'),
        "an encoded line holds an LF: {body:?}"
    );
    body
}

// ---------------------------------------------------------------------
// merge: the client's one ordered stream
// ---------------------------------------------------------------------

/// The epochs (server runs) the `merge` target switches between.
const EPOCHS: [&str; 3] = ["e1", "e2", "e3"];

/// **merge**: drives the client's [`Merge`] the way `client/link.rs`
/// does, with one or two links, through random orders, duplicates, gaps,
/// unreadable events, lost links, replays and server restarts.
///
/// Input: byte 0 picks one or two links; then two bytes per step: what
/// happens (and on which link), and a SEQ or epoch. Like `link.rs`, a
/// link's events reach the merge only while the link belongs to the
/// merge's epoch.
///
/// Invariants, per epoch: what is released covers each SEQ exactly once,
/// in increasing order, as the event itself, an `Unreadable` gap, or an
/// `Expired` gap; an event that did arrive is never reported lost;
/// `Merge::last` is the last SEQ released; nothing overflows, whatever the
/// SEQs; a restart reports the last SEQ of the run before; and at the end,
/// once the server says its replay is complete, everything that arrived at
/// or after the start was released.
pub fn merge(data: &[u8]) {
    let Some((&first, steps)) = data.split_first() else {
        return;
    };
    let links = 1 + usize::from(first % 2);
    let mut merge = Merge::new(links);
    let mut check = Released::default();
    // The epoch each link was last welcomed in.
    let mut link_epoch: Vec<Option<&str>> = vec![None; links];
    let mut out = Vec::new();
    for step in steps.chunks_exact(2) {
        let (op, arg) = (step[0], step[1]);
        let link = usize::from(op >> 4) % links;
        let seq = seq_from(arg);
        let current = link_epoch[link].is_some() && link_epoch[link] == merge.epoch();
        match op % 8 {
            0..=2 if current => merge.offer(msg(seq), link, &mut out),
            3 if current => merge.unreadable(seq, link, &mut out),
            4 => {
                let epoch = EPOCHS[usize::from(arg) % EPOCHS.len()];
                // A new epoch starts the stream over; a different one
                // after another is a restart, reported with the last SEQ
                // released before it.
                let changed = merge.epoch() != Some(epoch);
                let restart = changed && merge.epoch().is_some();
                let gap = merge.welcome(epoch, link);
                link_epoch[link] = Some(epoch);
                let expected = check.last.filter(|_| restart);
                let expected = expected.map(|after| Gap::Restarted { after });
                assert_eq!(gap, expected, "welcome({epoch}) on link {link}");
                if changed {
                    check = Released::default();
                }
            }
            5 => merge.link_lost(link, &mut out),
            6 if current => merge.lost_before(seq, &mut out),
            7 if current => merge.replayed_up_to(seq, &mut out),
            _ => {}
        }
        // (The merge ignores SEQ u64::MAX, which no server reaches.)
        if matches!(op % 8, 0..=3) && current && seq != u64::MAX {
            check.arrived.insert(seq);
        }
        check.take(&mut out);
        assert_eq!(merge.last(), check.last, "Merge::last");
    }
    // The end: every link is gone, and the server's replay is complete.
    for link in 0..links {
        merge.link_lost(link, &mut out);
    }
    check.take(&mut out);
    if let (Some(start), Some(&max)) = (check.start, check.arrived.last()) {
        merge.replayed_up_to(max, &mut out);
        check.take(&mut out);
        for &seq in check.arrived.range(start..) {
            assert!(
                check.last.is_some_and(|last| seq <= last),
                "SEQ {seq} arrived but was never released"
            );
        }
    }
}

/// SEQs mostly small, so that they collide, with the edges of `u64` too.
fn seq_from(arg: u8) -> u64 {
    match arg {
        0..=249 => u64::from(arg),
        250 => u64::MAX,
        251 => u64::MAX - 1,
        252 => u64::MAX - 2,
        n => 1 << (u32::from(n - 250) * 8),
    }
}

/// A broadcast event whose text is its SEQ, so a mix-up shows.
fn msg(seq: u64) -> Event {
    Event::Msg {
        seq,
        from: "a".into(),
        text: seq.to_string(),
    }
}

/// What the merge released in the current epoch.
#[derive(Default)]
struct Released {
    /// The first SEQ released.
    start: Option<u64>,
    /// The last SEQ released (or covered by a gap).
    last: Option<u64>,
    /// Every SEQ offered (readable or not) to the merge.
    arrived: BTreeSet<u64>,
}

impl Released {
    /// Checks and takes the events the merge released.
    fn take(&mut self, out: &mut Vec<Event>) {
        for event in out.drain(..) {
            let (first, last) = match event {
                Event::Gap(Gap::Expired { first, last }) => {
                    assert!(first <= last, "an empty gap {first}-{last}");
                    let lost: Vec<_> = self.arrived.range(first..=last).collect();
                    assert!(
                        lost.is_empty(),
                        "gap {first}-{last} covers {lost:?}, which arrived"
                    );
                    (first, last)
                }
                Event::Gap(Gap::Unreadable { seq }) => (seq, seq),
                Event::Msg { seq, ref text, .. } => {
                    assert_eq!(*text, seq.to_string(), "the wrong event for SEQ {seq}");
                    (seq, seq)
                }
                other => panic!("the merge released {other:?}"),
            };
            if let Some(before) = self.last {
                assert_eq!(
                    Some(first),
                    before.checked_add(1),
                    "released {first}..={last} after {before}: not the next SEQ"
                );
            }
            self.start.get_or_insert(first);
            self.last = Some(last);
        }
    }
}

// ---------------------------------------------------------------------
// http_head: RequestReader fed in random-size pieces
// ---------------------------------------------------------------------

/// The body limits the `http_head` target tries (chosen by the first
/// byte): none, tiny, a `/line` body's, a `/data` body's, and no limit.
const BODY_LIMITS: [u64; 8] = [0, 1, 2, 5, 100, 4098, 1 << 20, u64::MAX];

/// A deadline no fuzz input reaches: pieces never wait.
fn far_deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3600)
}

/// **http_head**: reads requests one after another with
/// [`RequestReader`], the bytes arriving in pieces of fuzzed sizes (with
/// `Interrupted` errors between some), each head followed by its body
/// read with a fuzzed limit, until an error; and routes each request.
///
/// Input: byte 0 picks the body limit, bytes 1–4 the piece sizes (as in
/// `frame`), the rest is the stream.
///
/// Invariants, against httparse run on the whole rest of the stream: a
/// head over [`MAX_HEAD`] is refused `HeadTooLarge`, never accepted; an
/// accepted head is exactly httparse's (length, method, version, target,
/// headers), its path is the target's path (absolute form: the part from
/// the first `/` after the authority, `/` if none), and
/// [`Request::header`] finds each header by name in any case; a body is
/// exactly the `Content-Length` bytes that follow, and is refused
/// unread when over its limit; every error's status is a 4xx or none;
/// [`route`] gives a route with that path, or a 404 (unknown path) or
/// 405 (known path).
pub fn http_head(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let limit = BODY_LIMITS[usize::from(data[0] % 8)];
    let stream = &data[5..];
    let mut reader = RequestReader::new(Pieces::new(stream, data[1..5].to_vec()));
    // Where in the stream the reader is: what it took from the pieces,
    // less what it still holds.
    let pos =
        |r: &RequestReader<Pieces<'_>>| stream.len() - r.get_ref().data.len() - r.leftover().len();
    loop {
        let start = pos(&reader);
        let rest = &stream[start..];
        let got = reader.read_head(far_deadline());
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut model = httparse::Request::new(&mut fields);
        let expected = model.parse(rest);
        let request = match got {
            Ok(request) => request,
            Err(e) => {
                check_read_error(&e);
                match expected {
                    Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                        assert!(
                            matches!(e, ReadError::HeadTooLarge),
                            "{len}-byte head: {e:?}"
                        );
                    }
                    // Only the query, Content-Length or Transfer-Encoding
                    // can make a complete head within the cap an error.
                    Ok(httparse::Status::Complete(_)) => assert!(
                        matches!(e, ReadError::Malformed(_) | ReadError::LengthRequired),
                        "a complete head refused: {e:?}"
                    ),
                    Ok(httparse::Status::Partial) => match e {
                        ReadError::Closed => assert!(rest.is_empty(), "Closed inside a head"),
                        ReadError::Io(ref io) => {
                            assert_eq!(io.kind(), ErrorKind::UnexpectedEof);
                            assert!(!rest.is_empty(), "an error at a clean end");
                        }
                        ReadError::HeadTooLarge => {
                            assert!(rest.len() >= MAX_HEAD, "a short head refused as too large")
                        }
                        other => panic!("a partial head refused as {other:?}"),
                    },
                    Err(httparse::Error::TooManyHeaders) => {
                        assert!(matches!(e, ReadError::HeadTooLarge), "{e:?}")
                    }
                    // The reader parses again only once a new LF came: if
                    // the stream ends before one follows the fault, it ends
                    // inside a head that looked fine so far.
                    Err(why) => match e {
                        ReadError::Malformed(_) | ReadError::HeadTooLarge => {}
                        ReadError::Io(ref io) if io.kind() == ErrorKind::UnexpectedEof => {
                            let lines = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                            let seen = httparse::Request::new(&mut fields).parse(&rest[..lines]);
                            assert!(
                                matches!(seen, Ok(httparse::Status::Partial)),
                                "httparse says {why}, at the last LF {seen:?}, the reader {e:?}"
                            );
                        }
                        other => panic!("httparse says {why}, the reader {other:?}"),
                    },
                }
                return;
            }
        };
        let Ok(httparse::Status::Complete(len)) = expected else {
            panic!("accepted a head httparse does not: {expected:?}");
        };
        assert!(len <= MAX_HEAD, "accepted a {len}-byte head");
        assert_eq!(pos(&reader) - start, len, "the head's length");
        check_request(&request, &model);

        match reader.read_body(&request, limit, far_deadline()) {
            Ok(body) => {
                let length = request.content_length();
                assert!(length <= limit, "a body over its limit");
                assert_eq!(body.len() as u64, length, "the body's length");
                let at = start + len;
                assert_eq!(body, stream[at..at + body.len()], "the body's bytes");
            }
            Err(e) => {
                check_read_error(&e);
                match e {
                    ReadError::BodyTooLarge { length, limit: l } => {
                        assert_eq!((length, l), (request.content_length(), limit));
                        assert!(length > limit, "a body within its limit refused");
                    }
                    ReadError::Io(ref io) => {
                        assert_eq!(io.kind(), ErrorKind::UnexpectedEof);
                        let left = (stream.len() - start - len) as u64;
                        assert!(left < request.content_length(), "a whole body not read");
                    }
                    other => panic!("reading a body: {other:?}"),
                }
                return;
            }
        }
    }
}

/// Every error's status is 4xx or none.
fn check_read_error(e: &ReadError) {
    if let Some(status) = e.status() {
        assert!((400..500).contains(&status), "{e:?} answers {status}");
    }
}

/// An accepted request against httparse's view of the same head.
fn check_request(request: &Request, model: &httparse::Request<'_, '_>) {
    assert_eq!(Some(request.method.as_str()), model.method, "the method");
    assert_eq!(Some(u8::from(request.http11)), model.version, "the version");
    let target = model.path.expect("a complete head has a target");
    assert_eq!(request.path, target_path(target), "the path of {target:?}");
    assert!(!request.path.contains('?'), "a query left in the path");

    for header in model.headers.iter() {
        // The first field of that name, in any case, is the one found.
        let first = model
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(header.name))
            .expect("itself at least");
        let expected = std::str::from_utf8(first.value).ok();
        for name in [
            header.name.to_owned(),
            header.name.to_ascii_lowercase(),
            header.name.to_ascii_uppercase(),
        ] {
            assert_eq!(request.header(&name), expected, "header {name:?}");
        }
    }

    match route(&request.method, &request.path) {
        Ok(Routed::Serve(r) | Routed::Preflight(r)) => assert_eq!(r.path(), request.path),
        Err(e) => match Route::from_path(&request.path) {
            None => assert_eq!(e.status, 404, "{e:?}"),
            Some(_) => assert_eq!(e.status, 405, "{e:?}"),
        },
    }
}

/// The path of a request target: origin form (`/p?q`) up to the query;
/// absolute form (`http://host/p?q`): the path after the authority, which
/// ends at the first `/`, `?` or `#`, and `/` when empty; anything else
/// (`*`, which httparse lets through) as sent, up to the query.
fn target_path(target: &str) -> &str {
    let path = match ["http://", "https://"]
        .iter()
        .find_map(|scheme| target.strip_prefix(scheme))
    {
        Some(rest) => match rest.find(['/', '?', '#']) {
            Some(i) if rest[i..].starts_with('/') => &rest[i..],
            _ => "/",
        },
        None => target,
    };
    path.split('?').next().unwrap_or(path)
}

// ---------------------------------------------------------------------
// sse_resume: Last-Event-ID and since=
// ---------------------------------------------------------------------

/// **sse_resume**: where a `GET /events` asks to resume, from the
/// `Last-Event-ID` header and the `since=` parameter.
///
/// Input: byte 0 says which of the two the request has (bit 0: the
/// header, bit 1: `since=`); the rest is the header's value and, after
/// the first byte 0xff if there is one, `since=`'s (else the same
/// value). `since=` is percent-encoded into the request; the header's
/// value is sent as is (a value with CR or LF is skipped).
///
/// Invariants: [`ResumePoint`]'s parse accepts exactly `EPOCH:SEQ`
/// (EPOCH 1 to 64 ASCII letters or digits, SEQ ASCII digits within
/// `u64`), else `400`; what it accepts comes back the same through
/// [`sse::event_id`]; [`sse::resume_point`] takes the header when it is
/// not blank, else `since=`, and never accepts a value that, without the
/// ASCII whitespace around it, is not `EPOCH:SEQ`.
pub fn sse_resume(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (header, since) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };
    // The parse itself, on any text.
    check_resume_text(&String::from_utf8_lossy(header));
    check_resume_text(&String::from_utf8_lossy(since));

    let with_header = flags & 1 != 0 && !header.iter().any(|&b| b == b'\r' || b == b'\n');
    let with_since = flags & 2 != 0;
    let mut head = b"GET /events".to_vec();
    if with_since {
        head.extend_from_slice(b"?since=");
        for &b in since {
            if b.is_ascii_alphanumeric() || (flags & 4 != 0 && b == b':') {
                head.push(b);
            } else {
                head.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
    }
    head.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n");
    if with_header {
        head.extend_from_slice(b"Last-Event-ID: ");
        head.extend_from_slice(header);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let request = match RequestReader::new(&head[..]).read_head(far_deadline()) {
        Ok(request) => request,
        Err(e) => {
            // A header value httparse refuses, a query that is not UTF-8,
            // or a head over the cap.
            assert!(matches!(e.status(), Some(400 | 431)), "{e:?}");
            return;
        }
    };
    let got_header = request.header("last-event-id");
    let got_since = request.query("since");
    if with_since {
        assert_eq!(got_since.map(str::as_bytes), Some(since), "since= decoded");
    } else {
        assert_eq!(got_since, None);
    }
    if !with_header {
        assert_eq!(got_header, None);
    }

    let blank = |v: &&str| v.trim_matches(|c: char| c.is_ascii_whitespace()).is_empty();
    let asked = [got_header, got_since]
        .into_iter()
        .flatten()
        .find(|v| !blank(v));
    let got = sse::resume_point(&request);
    match asked {
        None => assert_eq!(got, Ok(None), "nothing asked"),
        Some(value) => {
            let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
            match got {
                Ok(Some(point)) => {
                    assert_eq!(
                        value.parse(),
                        Ok(point.clone()),
                        "not the value asked: {value:?}"
                    );
                    assert!(is_resume_point(value), "accepted {value:?}");
                }
                Ok(None) => panic!("{value:?} ignored"),
                Err(e) => {
                    assert_eq!(e.status, 400);
                    assert!(!is_resume_point(value), "refused {value:?}");
                }
            }
        }
    }
}

/// `EPOCH:SEQ`: EPOCH 1 to 64 ASCII letters or digits, SEQ ASCII digits
/// within `u64`.
fn is_resume_point(s: &str) -> bool {
    let Some((epoch, seq)) = s.split_once(':') else {
        return false;
    };
    (1..=64).contains(&epoch.len())
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && seq.parse::<u64>().is_ok()
}

/// `ResumePoint`'s parse on any text: exactly `EPOCH:SEQ`, else `400`;
/// what it accepts survives [`sse::event_id`] and a parse.
fn check_resume_text(text: &str) {
    match text.parse::<ResumePoint>() {
        Ok(point) => {
            assert!(is_resume_point(text), "accepted {text:?}");
            let (epoch, seq) = text.split_once(':').expect("EPOCH:SEQ");
            assert_eq!(point.epoch, epoch);
            assert_eq!(Ok(point.seq), seq.parse::<u64>());
            let id = sse::event_id(&point.epoch, point.seq);
            assert_eq!(point.to_string(), id);
            assert_eq!(id.parse(), Ok(point), "{id:?} parses differently");
        }
        Err(e) => {
            assert_eq!((e.status, e.code), (400, "bad-args"), "{text:?}");
            assert!(!is_resume_point(text), "refused {text:?}");
        }
    }
}
