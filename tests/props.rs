//! Property tests: the parsers never panic on arbitrary bytes, never hand
//! out a line over the limit, and encoding then parsing gives back what
//! was encoded.

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};
use tickcast::client::Event;
use tickcast::protocol::{
    Command, ErrorCode, Frame, FrameReader, Reason, ServerLine, text_from_bytes,
};

/// A byte source that hands out its data in the given piece sizes.
struct Pieces {
    data: Vec<u8>,
    sizes: Vec<usize>,
    at: usize,
    turn: usize,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let n = size.min(out.len()).min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,32}"
}

/// Text that may travel in a line: no control characters but TAB.
fn text() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{0,40}|[a-z\t ]{0,10}"
}

fn word() -> impl Strategy<Value = String> {
    "[!-~]{1,20}"
}

fn time() -> impl Strategy<Value = std::time::SystemTime> {
    (0u64..4_102_444_800_000).prop_map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

fn reason() -> impl Strategy<Value = Reason> {
    prop::sample::select(Reason::ALL.to_vec())
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

/// Server lines as client events: [`Event`] is the owned form of a
/// [`ServerLine`] (which borrows its strings), and [`Event::to_line`] and
/// [`Event::from_line`] are the one conversion between them. `WELCOME`
/// (whose key an event does not keep) and `DATA` headers with any LEN
/// have round trips of their own below.
fn server_event() -> impl Strategy<Value = Event> {
    let payload = prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    prop_oneof![
        (any::<u64>(), name(), text()).prop_map(|(seq, from, text)| Event::Msg { seq, from, text }),
        (any::<u64>(), name(), payload).prop_map(|(seq, from, payload)| Event::Data {
            seq,
            from,
            payload
        }),
        (name(), text()).prop_map(|(from, text)| Event::Dm { from, text }),
        (any::<u64>(), name()).prop_map(|(seq, name)| Event::Join { seq, name }),
        (any::<u64>(), name(), name()).prop_map(|(seq, old, new)| Event::Nick { seq, old, new }),
        (any::<u64>(), name(), reason()).prop_map(|(seq, name, reason)| Event::Leave {
            seq,
            name,
            reason
        }),
        (any::<u64>(), time(), text()).prop_map(|(seq, time, text)| Event::Tick {
            seq,
            time,
            text
        }),
        prop::collection::vec(name(), 0..5).prop_map(|names| Event::Users { names }),
        text().prop_map(|token| Event::Ping { token }),
        text().prop_map(|token| Event::Pong { token }),
        text().prop_map(|text| Event::Help { text }),
        (word(), text()).prop_map(|(what, detail)| Event::Ok { what, detail }),
        (code(), text()).prop_map(|(code, text)| Event::Err { code, text }),
        reason().prop_map(|reason| Event::Bye { link: 0, reason }),
    ]
}

/// Encodes `line`, parses it back, and checks that nothing changed.
fn round_trip(line: &ServerLine<'_>) -> Result<(), TestCaseError> {
    let encoded = line.to_line();
    let text = encoded.strip_suffix('\n').unwrap();
    prop_assert!(!text.contains('\n'));
    prop_assert_eq!(&ServerLine::parse(text).unwrap(), line);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever bytes arrive, in whatever pieces: no panic, every line
    /// within the limit, and every command parse ends in a value or an
    /// error.
    #[test]
    fn the_server_side_parser_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..2048),
        sizes in prop::collection::vec(1usize..64, 1..8),
        max_line in 32usize..200,
    ) {
        let mut reader = FrameReader::new(Pieces { data, sizes, at: 0, turn: 0 }, max_line);
        let mut payload = Vec::new();
        loop {
            let line = match reader.read_line() {
                Ok(Some(Frame::Line(line))) => line.to_vec(),
                Ok(Some(Frame::TooLong(_) | Frame::Telnet(_))) => continue,
                Ok(None) | Err(_) => break,
            };
            prop_assert!(line.len() <= max_line);
            if let Ok(text) = text_from_bytes(&line)
                && let Ok(Some(Command::Send { len })) = Command::parse(text)
            {
                let len = len.min(4096) as usize;
                if reader.read_payload(len, &mut payload).is_err() {
                    break;
                }
                prop_assert_eq!(payload.len(), len);
                if reader.read_payload_end().is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn the_client_side_parser_never_panics(line in ".{0,120}") {
        let _ = ServerLine::parse(&line);
    }

    #[test]
    fn server_lines_round_trip(event in server_event()) {
        let line = event.to_line().unwrap();
        round_trip(&line)?;
        // What `tickcast chat --raw` prints: the line, and a DATA's payload.
        let mut wire = line.to_line().into_bytes();
        let mut payload = Bytes::new();
        if let Event::Data { payload: bytes, .. } = &event {
            payload = bytes.clone();
            wire.extend_from_slice(bytes);
            wire.push(b'\n');
        }
        prop_assert_eq!(event.to_protocol(), Some(wire));
        prop_assert_eq!(Event::from_line(&line, 0, payload), event);
    }

    #[test]
    fn welcome_lines_round_trip(
        id in any::<u64>(), name in name(), time in time(),
        key in word(), epoch in word(), text in text(),
    ) {
        round_trip(&ServerLine::Welcome { id, name: &name, time, key: &key, epoch: &epoch, text: &text })?;
    }

    #[test]
    fn data_headers_round_trip(seq in any::<u64>(), from in name(), len in any::<u64>()) {
        round_trip(&ServerLine::Data { seq, from: &from, len })?;
    }

    #[test]
    fn commands_round_trip(which in 0usize..8, a in name(), t in "[^\\p{Cc}]{1,40}", n in any::<u64>()) {
        let command = match which {
            0 => Command::Say(&t),
            1 => Command::Nick(&a),
            2 => Command::Msg { to: &a, text: &t },
            3 => Command::Send { len: n },
            4 => Command::Ping(&t),
            5 => Command::Resume { after: n, key: Some(&a) },
            6 => Command::Auth(&a),
            _ => Command::Quit(&t),
        };
        let mut out = Vec::new();
        command.encode(&mut out);
        let text = std::str::from_utf8(&out).unwrap().strip_suffix('\n').unwrap();
        prop_assert_eq!(Command::parse(text).unwrap(), Some(command));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Garbage sent to a live server never disturbs another client.
    #[test]
    fn garbage_does_not_disturb_others(garbage in prop::collection::vec(any::<u8>(), 1..4096)) {
        let server = support::start(tickcast::server::Config {
            max_line: 64,
            max_payload: 256,
            ..support::config()
        });
        let mut healthy = support::joined(server.local_addr());
        let mut vandal = support::Raw::connect(server.local_addr());
        vandal.send(&garbage);
        drop(vandal);
        healthy.line("still fine");
        healthy.event_starting("MSG ");
    }
}
