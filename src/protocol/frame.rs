//! Cutting a byte stream into frames: lines, and length-declared payloads.
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half
//! a line or three and a half lines. [`FrameReader`] keeps the bytes that
//! have arrived in a buffer and hands out one complete frame at a time.
//! It is used on both sides of the connection (the server reads commands,
//! the client library reads server lines) and works over any
//! [`std::io::Read`], which is how the unit tests below feed it bytes
//! without a socket.
//!
//! # Bounded memory
//!
//! A reader that buffers "until the newline" lets a peer that never sends
//! a newline grow the buffer without limit. Here a line may be at most
//! `max_line` bytes (not counting its LF, nor a CR right before the LF,
//! which is dropped so that `telnet` and `nc -C` work). When a line
//! outgrows that, the reader reports [`Frame::TooLong`] **once**, throws
//! away what it holds, and keeps throwing bytes away until the next LF.
//! The buffer never holds more than `max_line + 2` bytes of one line, so
//! an endless stream of garbage costs one error line and no memory.
//!
//! # Payloads
//!
//! After a `/send LEN` (or `DATA SEQ FROM LEN`) header the next LEN bytes
//! are raw, newlines and all. The caller, which has parsed the header and
//! checked LEN against its own limit, asks for them with
//! [`FrameReader::read_payload`] (or discards them with
//! [`FrameReader::skip_payload`]), then checks the terminating LF with
//! [`FrameReader::read_payload_end`].
//!
//! # Telnet
//!
//! `telnet` is a client too, and it speaks a little more than lines: its
//! commands start with the byte IAC (255), which can never appear in UTF-8
//! text. When a telnet user presses Ctrl-C, telnet sends `IAC IP IAC DO
//! TIMING-MARK` and then throws away everything it receives until the
//! server answers the timing mark. A reader made
//! [`with_telnet`](FrameReader::with_telnet) (the server's) takes such
//! commands out of the lines and hands each one out as [`Frame::Telnet`],
//! so the server can answer them; payload bytes are never looked at.

use std::io::{self, ErrorKind, Read};

/// The byte that starts a telnet command.
pub const IAC: u8 = 255;

/// How many bytes the reader asks the socket for at least, and its first
/// buffer size. Large enough that a busy connection costs few `read` calls,
/// small enough that thousands of idle connections cost little.
const READ_CHUNK: usize = 4096;

/// The most a payload buffer grows ahead of the bytes that have arrived.
const PAYLOAD_CHUNK: usize = 64 * 1024;

/// One frame handed out by [`FrameReader::read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its LF and without a CR right before it.
    Line(&'a [u8]),
    /// A line longer than the limit, with the start of it that the reader
    /// held (at least the first `max_line` bytes; enough, say, to tell a
    /// broadcast's SEQ). Reported once per line, as soon as the reader
    /// knows; the rest of the line, up to its LF, is discarded without
    /// being buffered.
    TooLong(&'a [u8]),
    /// A telnet command found in a line (only from a reader made
    /// [`with_telnet`](FrameReader::with_telnet)); it is not part of the
    /// line.
    Telnet(Telnet),
}

/// A telnet command (RFC 854): an option negotiation, or a one-byte
/// command such as IP (interrupt process, 244).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telnet {
    /// `IAC WILL option`: the client offers to use an option.
    Will(u8),
    /// `IAC WONT option`.
    Wont(u8),
    /// `IAC DO option`: the client asks the server to use an option.
    Do(u8),
    /// `IAC DONT option`.
    Dont(u8),
    /// `IAC cmd`, for any other command byte (subnegotiations are skipped).
    Command(u8),
}

impl Telnet {
    /// Telnet's TIMING-MARK option.
    pub const TIMING_MARK: u8 = 6;
    /// The command bytes by which a telnet user says "stop": EOF, SUSP,
    /// ABORT, BRK, IP (interrupt process) and AO (abort output).
    pub const STOPS: [u8; 6] = [236, 237, 238, 243, 244, 245];

    /// Parses the command at the start of `bytes` (which starts with IAC).
    /// Returns it and how many bytes it took; `Some(None)` if the IAC
    /// starts no command (a stray 255, or `IAC IAC`, telnet's escaped
    /// 255: left in the line, which is then not UTF-8); `None` if more
    /// bytes are needed to tell.
    fn parse(bytes: &[u8]) -> Option<Option<(Telnet, usize)>> {
        const SB: u8 = 250;
        const SE: u8 = 240;
        let &cmd = bytes.get(1)?;
        // An option byte is never a line end: that would eat the LF.
        let option = || match bytes.get(2) {
            Some(b'\r' | b'\n') => Some(None),
            Some(&o) => Some(Some(o)),
            None => None,
        };
        let negotiation = |make: fn(u8) -> Telnet| option().map(|o| o.map(|o| (make(o), 3)));
        match cmd {
            251 => negotiation(Telnet::Will),
            252 => negotiation(Telnet::Wont),
            253 => negotiation(Telnet::Do),
            254 => negotiation(Telnet::Dont),
            // A subnegotiation ends at `IAC SE`, within its line: one cut
            // by a line end is no command.
            SB => {
                let line = memchr::memchr(b'\n', bytes).map_or(bytes, |lf| &bytes[..lf]);
                match line.windows(2).position(|w| w == [IAC, SE]) {
                    Some(end) => Some(Some((Telnet::Command(SB), end + 2))),
                    None if line.len() < bytes.len() => Some(None),
                    None => None,
                }
            }
            SE..=249 => Some(Some((Telnet::Command(cmd), 2))),
            _ => Some(None),
        }
    }
}

/// Reads [`Frame`]s out of any byte source; see the [module docs](self).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// Storage; the unread bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many unread bytes (from `start`) are already known to hold no
    /// LF, so a long line arriving in small pieces is scanned once, not
    /// once per piece.
    scanned: usize,
    /// Inside an overlong line: drop everything up to the next LF.
    discarding: bool,
    max_line: usize,
    /// Whether telnet commands are taken out of lines.
    telnet: bool,
    /// Whether the buffer is given back while nothing is buffered.
    release_when_idle: bool,
}

impl<R: Read> FrameReader<R> {
    /// A reader that refuses lines longer than `max_line` bytes.
    pub fn new(inner: R, max_line: usize) -> Self {
        FrameReader {
            inner,
            buf: vec![0; READ_CHUNK.min(max_line.saturating_add(2)).max(64)],
            start: 0,
            end: 0,
            scanned: 0,
            discarding: false,
            max_line,
            telnet: false,
            release_when_idle: false,
        }
    }

    /// Gives the buffer back whenever everything in it has been handed
    /// out, and waits for the next bytes with a one-byte read: an idle
    /// connection then holds no buffer at all (the server has thousands).
    pub fn release_when_idle(mut self) -> Self {
        self.release_when_idle = true;
        if self.start == self.end {
            self.buf = Vec::new();
        }
        self
    }

    /// Also takes telnet commands out of lines (see the module docs).
    pub fn with_telnet(mut self) -> Self {
        self.telnet = true;
        self
    }

    /// The byte source.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The byte source, to change its settings.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The size of the reader's storage, in bytes (not how much of it is
    /// unread). It never passes `max(4096, max_line + 2)`, which is what
    /// bounds a connection's read memory; the fuzz target `frame`
    /// (`fuzz/src/lib.rs`) checks that after every frame.
    #[doc(hidden)]
    pub fn buffer_size(&self) -> usize {
        self.buf.len()
    }

    /// Reads the next line.
    ///
    /// Returns `Ok(None)` when the peer closed the stream cleanly between
    /// lines, and an [`ErrorKind::UnexpectedEof`] error when it closed in
    /// the middle of one (a partial line is never handed out).
    pub fn read_line(&mut self) -> io::Result<Option<Frame<'_>>> {
        let (line_start, line_len) = loop {
            if let Some(command) = self.take_telnet() {
                return Ok(Some(Frame::Telnet(command)));
            }
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = find_lf(&unread[self.scanned..]).map(|i| i + self.scanned) {
                let consumed = i + 1;
                let len = strip_cr(&unread[..i]).len();
                let line_start = self.start;
                self.start += consumed;
                self.scanned = 0;
                if self.discarding {
                    // The LF that ends an overlong line already reported.
                    self.discarding = false;
                    continue;
                }
                if len > self.max_line {
                    let head = &self.buf[line_start..line_start + len];
                    return Ok(Some(Frame::TooLong(head)));
                }
                break (line_start, len);
            }
            // No LF in what we hold.
            if self.discarding {
                self.start = self.end;
                self.scanned = 0;
            } else if unread.len() > self.max_line.saturating_add(1) {
                // More than a full line plus a possible CR and still no
                // LF: this line is too long whatever comes next.
                let head = self.start..self.end;
                self.start = self.end;
                self.scanned = 0;
                self.discarding = true;
                return Ok(Some(Frame::TooLong(&self.buf[head])));
            } else {
                self.scanned = unread.len();
            }
            // Between frames, with nothing buffered, an idle-releasing
            // reader waits without a buffer; anywhere else it reads into one.
            let idle = self.release_when_idle && self.start == self.end && !self.discarding;
            let read = if idle {
                self.fill_from_idle()?
            } else {
                self.fill()?
            };
            if read == 0 {
                return if self.discarding || self.start < self.end {
                    Err(ErrorKind::UnexpectedEof.into())
                } else {
                    Ok(None)
                };
            }
        };
        Ok(Some(Frame::Line(
            &self.buf[line_start..line_start + line_len],
        )))
    }

    /// After [`Frame::TooLong`]: reads and drops the rest of that line, up
    /// to and including its LF, so that the caller knows where it ends.
    /// (Without this, the next [`FrameReader::read_line`] does the same on
    /// its way to the next line.) An end of stream first is
    /// [`ErrorKind::UnexpectedEof`].
    pub fn skip_rest_of_line(&mut self) -> io::Result<()> {
        while self.discarding {
            let unread = &self.buf[self.start..self.end];
            if let Some(lf) = find_lf(unread) {
                self.start += lf + 1;
                self.discarding = false;
                self.scanned = 0;
                return Ok(());
            }
            self.start = self.end;
            self.scanned = 0;
            if self.fill()? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Reads exactly `len` payload bytes into `out` (replacing its
    /// contents). The caller has already checked `len` against its limit.
    pub fn read_payload(&mut self, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        let from_buffer = len.min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + from_buffer]);
        self.start += from_buffer;
        // Read the rest straight into `out` (no second copy), growing it as
        // bytes arrive: a client that declares a large LEN and then sends
        // nothing must not make us set aside LEN bytes up front.
        while out.len() < len {
            let start = out.len();
            out.resize(start + (len - start).min(PAYLOAD_CHUNK), 0);
            match self.inner.read(&mut out[start..]) {
                Ok(0) => {
                    out.truncate(start);
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => out.truncate(start + n),
                Err(e) if e.kind() == ErrorKind::Interrupted => out.truncate(start),
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Reads and discards `len` payload bytes (a refused `/send` still has
    /// its payload skipped, so that the framing holds).
    pub fn skip_payload(&mut self, mut len: u64) -> io::Result<()> {
        loop {
            let take = len.min((self.end - self.start) as u64) as usize;
            self.start += take;
            len -= take as u64;
            if len == 0 {
                return Ok(());
            }
            if self.fill()? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Consumes the line end that must follow a payload: LF, or CR LF.
    /// Returns `false` if something else is there, after which the framing
    /// of the stream can no longer be trusted.
    pub fn read_payload_end(&mut self) -> io::Result<bool> {
        match self.next_byte()? {
            b'\n' => Ok(true),
            b'\r' => Ok(self.next_byte()? == b'\n'),
            _ => Ok(false),
        }
    }

    /// Waits for the first byte with no buffer, then makes one: see
    /// [`FrameReader::release_when_idle`].
    fn fill_from_idle(&mut self) -> io::Result<usize> {
        self.start = 0;
        self.end = 0;
        self.buf = Vec::new();
        let mut first = [0u8; 1];
        let n = loop {
            match self.inner.read(&mut first) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 1 {
            self.buf = vec![0; READ_CHUNK.min(self.max_line.saturating_add(2)).max(64)];
            self.buf[0] = first[0];
            self.end = 1;
        }
        Ok(n)
    }

    /// Takes the first complete telnet command out of the current line,
    /// if there is one.
    fn take_telnet(&mut self) -> Option<Telnet> {
        if !self.telnet || self.discarding {
            return None;
        }
        let mut from = self.start;
        loop {
            let unread = &self.buf[from..self.end];
            // One pass: whichever comes first, the line's end or an IAC.
            let at = memchr::memchr2(b'\n', IAC, unread).filter(|&i| unread[i] == IAC)?;
            match Telnet::parse(&unread[at..])? {
                Some((command, len)) => {
                    let at = from + at;
                    self.buf.copy_within(at + len..self.end, at);
                    self.end -= len;
                    self.scanned = 0;
                    return Some(command);
                }
                // Not a command: the byte stays; look after it (an escaped
                // `IAC IAC` stays whole).
                None => {
                    from += at
                        + if unread.get(at + 1) == Some(&IAC) {
                            2
                        } else {
                            1
                        }
                }
            }
        }
    }

    fn next_byte(&mut self) -> io::Result<u8> {
        if self.start == self.end && self.fill()? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let b = self.buf[self.start];
        self.start += 1;
        Ok(b)
    }

    /// Reads more bytes from the source into the buffer; returns how many
    /// (0 at end of stream). Makes room first: moves unread bytes to the
    /// front, and grows the buffer (up to one full line plus CR LF) when a
    /// partial line fills it.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let limit = self.max_line.saturating_add(2);
            // (A released buffer is empty: this makes a first one.)
            let grown = (self.buf.len() * 2).clamp(READ_CHUNK, limit.max(READ_CHUNK));
            self.buf.resize(grown, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where the first LF in `bytes` is.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// A line without the CR that may precede its LF.
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out its bytes a few at a time, the way a socket
    /// may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len()).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn any_line_limit_works_even_the_largest() {
        let data = b"one\ntwo\n";
        assert_eq!(
            lines(data, usize::MAX, 3),
            [Ok(b"one".to_vec()), Ok(b"two".to_vec())]
        );
    }

    #[test]
    fn a_declared_payload_is_not_allocated_before_it_arrives() {
        let data = b"only a few bytes";
        let mut r = FrameReader::new(Trickle { data, step: 3 }, 64);
        let mut out = Vec::new();
        let len = 100 * 1024 * 1024;
        let err = r.read_payload(len, &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(out, data);
        assert!(out.capacity() < 1024 * 1024, "{}", out.capacity());

        let mut r = FrameReader::new(Trickle { data, step: 5 }, 64);
        r.read_payload(data.len(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    fn lines(data: &[u8], max_line: usize, step: usize) -> Vec<Result<Vec<u8>, &'static str>> {
        let mut r = FrameReader::new(Trickle { data, step }, max_line);
        let mut out = Vec::new();
        loop {
            match r.read_line() {
                Ok(Some(Frame::Line(l))) => out.push(Ok(l.to_vec())),
                Ok(Some(Frame::TooLong(head))) => {
                    assert!(head.len() > max_line);
                    out.push(Err("too long"))
                }
                Ok(Some(Frame::Telnet(_))) => unreachable!("telnet is off"),
                Ok(None) => return out,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    out.push(Err("eof"));
                    return out;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn splits_lines_and_drops_one_cr() {
        for step in [1, 3, 100] {
            let got = lines(b"a\nbb\r\n\r\nc\r\r\n", 10, step);
            assert_eq!(
                got,
                vec![
                    Ok(b"a".to_vec()),
                    Ok(b"bb".to_vec()),
                    Ok(b"".to_vec()),
                    Ok(b"c\r".to_vec())
                ]
            );
        }
    }

    #[test]
    fn limit_counts_bytes_after_the_cr_is_dropped() {
        for step in [1, 7, 100] {
            let got = lines(b"12345\r\n123456\nok\n", 5, step);
            assert_eq!(
                got,
                vec![Ok(b"12345".to_vec()), Err("too long"), Ok(b"ok".to_vec())]
            );
        }
    }

    #[test]
    fn endless_garbage_is_reported_once_and_not_buffered() {
        let mut data = vec![b'x'; 100_000];
        data.extend_from_slice(b"\nafter\n");
        let mut r = FrameReader::new(
            Trickle {
                data: &data,
                step: 999,
            },
            16,
        );
        match r.read_line().unwrap() {
            Some(Frame::TooLong(head)) => assert!(head.len() > 16 && head.starts_with(b"xxx")),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"after")));
        assert!(r.buf.len() <= 4096, "buffer grew to {}", r.buf.len());
        assert_eq!(r.read_line().unwrap(), None);
    }

    #[test]
    fn telnet_commands_are_taken_out_of_lines_but_not_out_of_payloads() {
        // Ctrl-C in telnet, then a line with a negotiation in the middle,
        // then a payload holding the same bytes.
        let data = b"\xff\xf4\xff\xfd\x06he\xff\xfb\x01llo\r\n/send 3\n\xff\xf4x\n";
        let mut r = FrameReader::new(&data[..], 64).with_telnet();
        let mut got = Vec::new();
        loop {
            match r.read_line().unwrap() {
                Some(Frame::Line(l)) if l.starts_with(b"/send") => {
                    got.push(format!("{:?}", String::from_utf8_lossy(l)));
                    let mut payload = Vec::new();
                    r.read_payload(3, &mut payload).unwrap();
                    assert_eq!(payload, b"\xff\xf4x");
                    assert!(r.read_payload_end().unwrap());
                }
                Some(frame) => got.push(format!("{frame:?}")),
                None => break,
            }
        }
        assert_eq!(
            got,
            [
                "Telnet(Command(244))",
                "Telnet(Do(6))",
                "Telnet(Will(1))",
                "Line([104, 101, 108, 108, 111])",
                "\"/send 3\"",
            ]
        );
    }

    #[test]
    fn a_stray_iac_is_left_in_its_line_and_never_eats_the_line_end() {
        let data = b"abc\xff\n/ping q\na\xff\xffb\nx\xff\xfd\ny\n";
        let mut r = FrameReader::new(&data[..], 64).with_telnet();
        let mut lines = Vec::new();
        while let Some(frame) = r.read_line().unwrap() {
            match frame {
                Frame::Line(l) => lines.push(l.to_vec()),
                other => panic!("not a command: {other:?}"),
            }
        }
        let want: [&[u8]; 5] = [b"abc\xff", b"/ping q", b"a\xff\xffb", b"x\xff\xfd", b"y"];
        assert_eq!(lines, want);
    }

    #[test]
    fn skipping_a_payload_reads_in_chunks_even_on_an_idle_releasing_reader() {
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                let n = out.len().min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut data = b"/send 100000\n".to_vec();
        data.extend(vec![b'x'; 100_000]);
        data.extend(b"\nnext\n");
        let mut r = FrameReader::new(Counting(&data, 0), 4096).release_when_idle();
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"/send 100000")));
        r.skip_payload(100_000).unwrap();
        assert!(r.read_payload_end().unwrap());
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"next")));
        assert!(r.get_ref().1 < 100, "{} reads for 100 kB", r.get_ref().1);
    }

    #[test]
    fn the_rest_of_an_overlong_line_can_be_skipped_at_once() {
        let mut data = vec![b'x'; 300];
        data.extend(b"\nnext\n");
        for step in [1, 7, 64, 1000] {
            let mut r = FrameReader::new(Trickle { data: &data, step }, 16);
            assert!(matches!(r.read_line().unwrap(), Some(Frame::TooLong(_))));
            r.skip_rest_of_line().unwrap();
            assert!(!r.discarding);
            assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"next")));
        }
        let mut r = FrameReader::new(&b"xxxxxxxxxxxxxxxxxxxxxxx"[..], 4);
        assert!(matches!(r.read_line().unwrap(), Some(Frame::TooLong(_))));
        let eof = r.skip_rest_of_line().unwrap_err();
        assert_eq!(eof.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_telnet_command_split_across_reads_waits_for_its_last_byte() {
        let data = b"\xff\xfd\x01hi\n";
        for step in 1..data.len() {
            let reader = Trickle { data, step };
            let mut r = FrameReader::new(reader, 64).with_telnet();
            assert_eq!(r.read_line().unwrap(), Some(Frame::Telnet(Telnet::Do(1))));
            assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"hi")));
        }
    }

    #[test]
    fn a_reader_that_releases_its_buffer_when_idle_reads_the_same_frames() {
        let data = b"one\ntwo\n/send 3\nabc\nthree\n";
        for step in 1..data.len() {
            let mut plain = FrameReader::new(Trickle { data, step }, 64);
            let mut idle = FrameReader::new(Trickle { data, step }, 64).release_when_idle();
            for _ in 0..3 {
                let a = format!("{:?}", plain.read_line().unwrap());
                assert_eq!(a, format!("{:?}", idle.read_line().unwrap()));
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            plain.read_payload(3, &mut a).unwrap();
            idle.read_payload(3, &mut b).unwrap();
            assert_eq!(a, b);
            assert!(idle.read_payload_end().unwrap());
            assert_eq!(idle.read_line().unwrap(), Some(Frame::Line(b"three")));
            assert_eq!(idle.read_line().unwrap(), None);
            assert_eq!(idle.buf.capacity(), 0, "nothing held while idle");
        }
    }

    #[test]
    fn eof_inside_a_line_is_an_error() {
        assert_eq!(
            lines(b"ok\npartial", 10, 4),
            vec![Ok(b"ok".to_vec()), Err("eof")]
        );
    }

    #[test]
    fn payloads_are_raw_and_end_with_lf_or_crlf() {
        let data = b"/send 3\na\nb\n/send 2\nxy\r\nnext\n/send 1\nzQ";
        let mut r = FrameReader::new(Trickle { data, step: 2 }, 100);
        let mut payload = Vec::new();
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"/send 3")));
        r.read_payload(3, &mut payload).unwrap();
        assert_eq!(payload, b"a\nb");
        assert!(r.read_payload_end().unwrap());
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"/send 2")));
        r.skip_payload(2).unwrap();
        assert!(r.read_payload_end().unwrap());
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"next")));
        assert_eq!(r.read_line().unwrap(), Some(Frame::Line(b"/send 1")));
        r.read_payload(1, &mut payload).unwrap();
        assert_eq!(payload, b"z");
        assert!(!r.read_payload_end().unwrap());
    }

    #[test]
    fn a_long_line_within_the_limit_grows_the_buffer() {
        let mut data = vec![b'y'; 20_000];
        data.push(b'\n');
        let got = lines(&data, 20_000, 1500);
        assert_eq!(got, vec![Ok(vec![b'y'; 20_000])]);
    }
}
