//! Property tests: the parsers never panic on arbitrary bytes, never hand
//! out a line over the limit, and encoding then parsing gives back what
//! was encoded.

mod support;

use proptest::prelude::*;
use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};
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

/// Owned ingredients for a [`ServerLine`] (which borrows its strings).
#[derive(Debug, Clone)]
enum Owned {
    Welcome(u64, String, std::time::SystemTime, String, String, String),
    Msg(u64, String, String),
    Data(u64, String, u64),
    Dm(String, String),
    Join(u64, String),
    Nick(u64, String, String),
    Leave(u64, String, Reason),
    Tick(u64, std::time::SystemTime, String),
    Users(Vec<String>),
    Ping(String),
    Pong(String),
    Help(String),
    Ok(String, String),
    Err(ErrorCode, String),
    Bye(Reason),
}

impl Owned {
    fn line(&self) -> ServerLine<'_> {
        match self {
            Owned::Welcome(id, name, time, key, epoch, text) => ServerLine::Welcome {
                id: *id,
                name,
                time: *time,
                key,
                epoch,
                text,
            },
            Owned::Msg(seq, from, text) => ServerLine::Msg {
                seq: *seq,
                from,
                text,
            },
            Owned::Data(seq, from, len) => ServerLine::Data {
                seq: *seq,
                from,
                len: *len,
            },
            Owned::Dm(from, text) => ServerLine::Dm { from, text },
            Owned::Join(seq, name) => ServerLine::Join { seq: *seq, name },
            Owned::Nick(seq, old, new) => ServerLine::Nick {
                seq: *seq,
                old,
                new,
            },
            Owned::Leave(seq, name, reason) => ServerLine::Leave {
                seq: *seq,
                name,
                reason: *reason,
            },
            Owned::Tick(seq, time, text) => ServerLine::Tick {
                seq: *seq,
                time: *time,
                text,
            },
            Owned::Users(names) => ServerLine::Users {
                names: names.iter().map(String::as_str).collect(),
            },
            Owned::Ping(t) => ServerLine::Ping(t),
            Owned::Pong(t) => ServerLine::Pong(t),
            Owned::Help(t) => ServerLine::Help(t),
            Owned::Ok(what, detail) => ServerLine::Ok { what, detail },
            Owned::Err(code, text) => ServerLine::Err { code: *code, text },
            Owned::Bye(r) => ServerLine::Bye(*r),
        }
    }
}

fn server_line() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<u64>(), name(), time(), word(), word(), text())
            .prop_map(|(a, b, c, d, e, f)| Owned::Welcome(a, b, c, d, e, f)),
        (any::<u64>(), name(), text()).prop_map(|(a, b, c)| Owned::Msg(a, b, c)),
        (any::<u64>(), name(), any::<u64>()).prop_map(|(a, b, c)| Owned::Data(a, b, c)),
        (name(), text()).prop_map(|(a, b)| Owned::Dm(a, b)),
        (any::<u64>(), name()).prop_map(|(a, b)| Owned::Join(a, b)),
        (any::<u64>(), name(), name()).prop_map(|(a, b, c)| Owned::Nick(a, b, c)),
        (any::<u64>(), name(), reason()).prop_map(|(a, b, c)| Owned::Leave(a, b, c)),
        (any::<u64>(), time(), text()).prop_map(|(a, b, c)| Owned::Tick(a, b, c)),
        prop::collection::vec(name(), 0..5).prop_map(Owned::Users),
        text().prop_map(Owned::Ping),
        text().prop_map(Owned::Pong),
        text().prop_map(Owned::Help),
        (word(), text()).prop_map(|(a, b)| Owned::Ok(a, b)),
        (code(), text()).prop_map(|(a, b)| Owned::Err(a, b)),
        reason().prop_map(Owned::Bye),
    ]
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
    fn server_lines_round_trip(owned in server_line()) {
        let line = owned.line();
        let encoded = line.to_line();
        let text = encoded.strip_suffix('\n').unwrap();
        prop_assert!(!text.contains('\n'));
        prop_assert_eq!(ServerLine::parse(text).unwrap(), line);
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
