//! The broadcaster's batch: events numbered and encoded but not yet
//! handed to the members.
//!
//! Under load many events arrive at once. Rather than write each one to
//! every member separately, the broadcaster collects what is waiting
//! into a batch and gives every member the whole batch in one write. Each member starts at the first event it is entitled to (its own
//! `JOIN`), so the batch is a run of consecutive SEQs that can be sliced
//! by SEQ.
//!
//! # Laid end to end: one piece per write, not one per event
//!
//! A `sendmsg` with 127 separate 75-byte pieces costs the kernel more
//! than one with a single 9.5 KB piece: it copies and checks the whole
//! list of pieces first (into memory it allocates, past 8 of them), then
//! copies each piece on its own. So before the first member is written to,
//! the batch copies its small events once, end to end ([`Joined`]: one
//! buffer for each run of small events, usually the whole batch), and
//! every member gets a slice of that: usually one piece, whatever the
//! number of events. One copy per batch saves work on
//! every one of its writes (docs/PERFORMANCE.md has the figures). Events
//! of 8 KiB or more (large `/send` payloads) are not copied: each stays a
//! piece of its own.
//!
//! Those copies cost memory only while some outbox still holds a slice
//! of them: a client that cannot take its slice at once keeps it (shared,
//! not copied), and with it the whole buffer. So a client's outbox keeps
//! at most its unsent bytes plus one partly written buffer (2 MiB at
//! most). Buffers are shared: a member behind by a span of batches has
//! every one of them whole in its outbox, so while everyone is a member
//! the buffers alive hold at most what the member furthest behind has
//! unsent (`--max-pending`) plus one buffer, per wire format, however many
//! members are behind. A connection being sent off (its `BYE` queued) is
//! no longer a member: it keeps what it holds, its own unsent bytes plus
//! one buffer, until they are written or `--write-timeout-ms` passes.
//! (Before the copies, such an outbox kept each of its events, in an
//! allocation of its own.)
//!
//! # Once per wire format
//!
//! The events are encoded as protocol lines. When some member is an event
//! stream (see `wire`), the batch converts *all* its events to SSE once,
//! the first time a stream asks ([`Batch::since_in`]), and every other
//! stream shares that conversion: a batch costs one encoding per wire
//! format present among the members, never one per client.

use super::wire::Wire;
use bytes::Bytes;
use std::cell::OnceCell;
use std::ops::Range;

/// The most events in one batch.
const MAX_EVENTS: usize = 256;
/// The most bytes in one batch (a payload may take it past this once).
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// An event this long or longer is *large*: not copied into a [`Joined`]
/// buffer but a piece of its own. Every chat line at the default
/// `--max-line` (4 KiB) is smaller, and a buffer holds at most
/// [`MAX_EVENTS`] events under 8 KiB: 2 MiB (see "Laid end to end").
const LARGE_EVENT: usize = 8 * 1024;

/// Consecutive encoded events, the first with SEQ `first`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    events: Vec<Bytes>,
    /// The same events as SSE, made on first use.
    sse: OnceCell<Vec<Bytes>>,
    /// The events laid end to end, for each wire format, made on first use.
    joined: OnceCell<Joined>,
    joined_sse: OnceCell<Joined>,
    first: u64,
    bytes: usize,
}

impl Batch {
    /// Adds the event with SEQ `seq` (the one after the last).
    pub(crate) fn push(&mut self, seq: u64, event: Bytes) {
        if self.events.is_empty() {
            self.first = seq;
        }
        debug_assert_eq!(seq, self.first + self.events.len() as u64);
        self.bytes += event.len();
        self.events.push(event);
        // A conversion made before this event is out of date.
        self.sse.take();
        self.joined.take();
        self.joined_sse.take();
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether it is time to write it out before taking more.
    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= MAX_EVENTS || self.bytes >= MAX_BYTES
    }

    /// The events from SEQ `from` on: what a member who joined at `from`
    /// gets of this batch.
    #[cfg(test)]
    pub(crate) fn since(&self, from: u64) -> &[Bytes] {
        &self.events[self.range(from, u64::MAX)]
    }

    /// The events from SEQ `from` on, in the wire format `wire`: what a
    /// member who joined at `from` gets of this batch (`epoch` names this
    /// server run in SSE ids). They replace what `out` held, as a few
    /// pieces of the [`Joined`] buffer (usually one).
    pub(crate) fn since_in(&self, wire: Wire, from: u64, epoch: &str, out: &mut Vec<Bytes>) {
        let joined = match wire {
            Wire::Line => self.joined.get_or_init(|| Joined::new(&self.events)),
            Wire::Sse => self
                .joined_sse
                .get_or_init(|| Joined::new(self.in_wire(wire, epoch))),
        };
        joined.pieces(self.range(from, u64::MAX), out);
    }

    /// Every event in the wire format `wire`, one by one.
    fn in_wire(&self, wire: Wire, epoch: &str) -> &[Bytes] {
        match wire {
            Wire::Line => &self.events,
            Wire::Sse => self.sse.get_or_init(|| {
                let convert = |e: &Bytes| wire.broadcast(e, epoch);
                self.events.iter().map(convert).collect()
            }),
        }
    }

    /// How many of its events a member who joined at `from` gets.
    pub(crate) fn count_since(&self, from: u64) -> usize {
        self.range(from, u64::MAX).len()
    }

    /// The events with SEQs from `from` up to, not including, `until`.
    pub(crate) fn between(&self, from: u64, until: u64) -> &[Bytes] {
        &self.events[self.range(from, until)]
    }

    fn range(&self, from: u64, until: u64) -> Range<usize> {
        let len = self.events.len() as u64;
        let index = |seq: u64| seq.saturating_sub(self.first).min(len) as usize;
        let start = index(from);
        start..index(until).max(start)
    }
}

/// A batch's events laid end to end (see the module docs): each run of
/// small events copied into a buffer of its own, each large event as it is.
#[derive(Debug)]
struct Joined {
    pieces: Vec<Bytes>,
    /// Where each event is, in the order of the batch.
    places: Vec<Place>,
}

/// Where one event of a [`Joined`] is.
#[derive(Debug)]
struct Place {
    /// Which piece holds it.
    piece: usize,
    /// Its bytes in that piece.
    bytes: Range<usize>,
}

impl Joined {
    fn new(events: &[Bytes]) -> Self {
        let mut joined = Joined {
            pieces: Vec::new(),
            places: Vec::with_capacity(events.len()),
        };
        let mut rest = events;
        while !rest.is_empty() {
            // The run of small events up to the next large one.
            let small = rest.iter().take_while(|e| e.len() < LARGE_EVENT).count();
            let (run, after) = rest.split_at(small.max(1));
            if let [event] = run {
                // A large event, or a run of one: nothing to gain by copying.
                joined.add(event.clone(), std::iter::once(0..event.len()));
            } else {
                // One buffer of exactly the run's size: it is kept whole
                // while any slice of it waits in an outbox.
                let mut buffer = Vec::with_capacity(run.iter().map(Bytes::len).sum());
                let mut places = Vec::with_capacity(run.len());
                for event in run {
                    let start = buffer.len();
                    buffer.extend_from_slice(event);
                    places.push(start..buffer.len());
                }
                joined.add(Bytes::from(buffer), places);
            }
            rest = after;
        }
        joined
    }

    /// Adds a piece holding the events at `places` in it.
    fn add(&mut self, piece: Bytes, places: impl IntoIterator<Item = Range<usize>>) {
        let index = self.pieces.len();
        let places = places.into_iter().map(|bytes| Place {
            piece: index,
            bytes,
        });
        self.places.extend(places);
        self.pieces.push(piece);
    }

    /// The events `events` (indices), as pieces, into `out`.
    fn pieces(&self, events: Range<usize>, out: &mut Vec<Bytes>) {
        out.clear();
        if events.is_empty() {
            return;
        }
        let (Some(first), Some(last)) = (
            self.places.get(events.start),
            self.places.get(events.end - 1),
        ) else {
            return;
        };
        for piece in first.piece..=last.piece {
            let start = if piece == first.piece {
                first.bytes.start
            } else {
                0
            };
            let end = if piece == last.piece {
                last.bytes.end
            } else {
                self.pieces[piece].len()
            };
            out.push(self.pieces[piece].slice(start..end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, n: u64) -> Batch {
        let mut b = Batch::default();
        for seq in first..first + n {
            b.push(seq, Bytes::from(seq.to_string()));
        }
        b
    }

    fn seqs(events: &[Bytes]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn members_get_the_events_from_their_join_on() {
        let b = batch(10, 5); // SEQs 10..=14
        assert_eq!(seqs(b.since(1)), ["10", "11", "12", "13", "14"]);
        assert_eq!(seqs(b.since(13)), ["13", "14"]);
        assert!(b.since(15).is_empty());
        assert!(b.since(99).is_empty());
    }

    #[test]
    fn a_leaving_member_gets_the_events_before_its_leave() {
        let b = batch(10, 5);
        assert_eq!(seqs(b.between(11, 13)), ["11", "12"]);
        assert_eq!(seqs(b.between(5, 11)), ["10"]);
        assert!(b.between(12, 12).is_empty());
        assert!(b.between(13, 11).is_empty(), "an empty range, not a panic");
    }

    #[test]
    fn full_by_count_or_by_bytes() {
        assert!(!batch(1, 255).is_full());
        assert!(batch(1, 256).is_full());
        let mut b = Batch::default();
        b.push(1, Bytes::from(vec![0u8; MAX_BYTES]));
        assert!(b.is_full());
    }

    /// What `since_in` gives a member, as pieces and as the bytes they
    /// add up to.
    fn written(b: &Batch, wire: Wire, from: u64) -> (usize, String) {
        let mut out = vec![Bytes::from_static(b"left over")];
        b.since_in(wire, from, "e", &mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|p| p.iter().copied()).collect();
        (out.len(), String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn small_events_are_written_as_one_piece() {
        let b = batch(10, 5);
        assert_eq!(written(&b, Wire::Line, 1), (1, "1011121314".to_string()));
        assert_eq!(written(&b, Wire::Line, 13), (1, "1314".to_string()));
        assert_eq!(written(&b, Wire::Line, 15), (0, String::new()));
        assert_eq!(b.count_since(13), 2);
        assert_eq!(b.count_since(1), 5);
        assert_eq!(b.count_since(99), 0);
    }

    #[test]
    fn a_large_event_is_a_piece_of_its_own_and_not_copied() {
        let mut b = Batch::default();
        let large = Bytes::from(vec![b'x'; LARGE_EVENT]);
        b.push(1, Bytes::from_static(b"a\n"));
        b.push(2, Bytes::from_static(b"b\n"));
        b.push(3, large.clone());
        b.push(4, Bytes::from_static(b"c\n"));
        let x = "x".repeat(LARGE_EVENT);
        assert_eq!(written(&b, Wire::Line, 1), (3, format!("a\nb\n{x}c\n")));
        assert_eq!(written(&b, Wire::Line, 2), (3, format!("b\n{x}c\n")));
        assert_eq!(written(&b, Wire::Line, 3), (2, format!("{x}c\n")));
        assert_eq!(written(&b, Wire::Line, 4), (1, "c\n".to_string()));
        let mut out = Vec::new();
        b.since_in(Wire::Line, 3, "e", &mut out);
        assert_eq!(out[0].as_ptr(), large.as_ptr(), "shared, not copied");
    }

    #[test]
    fn a_stream_gets_the_sse_conversion_made_once() {
        let mut b = Batch::default();
        b.push(4, Bytes::from_static(b"JOIN 4 al\n"));
        b.push(5, Bytes::from_static(b"MSG 5 al hi\n"));
        written(&b, Wire::Line, 4);
        assert!(b.sse.get().is_none(), "no stream, no conversion");
        let sse = "id: e:5\ndata: MSG 5 al hi\n\n";
        assert_eq!(written(&b, Wire::Sse, 5), (1, sse.to_string()));
        let (mut first, mut again) = (Vec::new(), Vec::new());
        b.since_in(Wire::Sse, 5, "e", &mut first);
        b.since_in(Wire::Sse, 4, "e", &mut again);
        assert_eq!(&again[0][again[0].len() - sse.len()..], sse.as_bytes());
        let end = |p: &Bytes| p.as_ptr().wrapping_add(p.len());
        assert_eq!(end(&again[0]), end(&first[0]), "converted once, shared");
        assert_eq!(written(&b, Wire::Line, 5), (1, "MSG 5 al hi\n".to_string()));
    }

    #[test]
    fn a_copied_buffer_holds_at_most_2_mib() {
        let mut b = Batch::default();
        let (small, large) = (vec![b's'; LARGE_EVENT - 1], vec![b'l'; LARGE_EVENT]);
        let mut seq = 1;
        while !b.is_full() {
            let event = if seq % 3 == 0 { &large } else { &small };
            b.push(seq, Bytes::from(event.clone()));
            seq += 1;
        }
        let mut out = Vec::new();
        b.since_in(Wire::Line, 1, "e", &mut out);
        let copied: Vec<&Bytes> = out.iter().filter(|p| p[0] == b's').collect();
        assert!(copied.len() > 1, "split by the large events");
        let copied_bytes: usize = copied.iter().map(|p| p.len()).sum();
        assert!(copied_bytes <= 2 * 1024 * 1024, "{copied_bytes}");
        let total: usize = out.iter().map(Bytes::len).sum();
        assert_eq!(total, b.bytes, "every byte once");
    }

    #[test]
    fn a_new_event_makes_new_pieces() {
        let mut b = batch(1, 2);
        assert_eq!(written(&b, Wire::Line, 1).1, "12");
        b.push(3, Bytes::from_static(b"3"));
        assert_eq!(written(&b, Wire::Line, 1).1, "123");
    }

    fn msg(seq: u64, len: usize) -> Bytes {
        let head = format!("MSG {seq} al ");
        let pad = len.saturating_sub(head.len() + 1).max(1);
        Bytes::from(format!("{head}{}\n", "x".repeat(pad)))
    }

    proptest::proptest! {
        /// Every member, whatever its `from`, gets exactly the bytes of the
        /// events from its `from` on, in both wire formats, and no empty
        /// piece. (From the review of the change that made `Joined`.)
        #[test]
        fn since_in_is_the_events_from_the_members_join_on(
            lens in proptest::collection::vec(
                proptest::prop_oneof![4 => 10usize..200, 1 => 8000usize..8400], 0..40),
            first in 1u64..5,
            offset in 0u64..45,
        ) {
            let mut b = Batch::default();
            for (i, &len) in lens.iter().enumerate() {
                b.push(first + i as u64, msg(first + i as u64, len));
            }
            let from = first.saturating_sub(1) + offset;
            for wire in [Wire::Line, Wire::Sse] {
                let expect: Vec<u8> = b.in_wire(wire, "e")[b.range(from, u64::MAX)]
                    .iter().flat_map(|e| e.iter().copied()).collect();
                let mut out = vec![Bytes::from_static(b"left over")];
                b.since_in(wire, from, "e", &mut out);
                let got: Vec<u8> = out.iter().flat_map(|e| e.iter().copied()).collect();
                proptest::prop_assert_eq!(&got, &expect);
                proptest::prop_assert!(out.iter().all(|p| !p.is_empty()), "no empty piece");
            }
        }
    }

    /// A copied buffer's allocation, not only its length: each run of
    /// small events has a buffer of its own size (the first one used to
    /// reserve room for every small event of the batch).
    #[test]
    fn each_run_is_copied_into_a_buffer_of_its_own_size() {
        let mut b = Batch::default();
        b.push(1, msg(1, LARGE_EVENT - 1));
        b.push(2, msg(2, 100));
        b.push(3, msg(3, LARGE_EVENT)); // large: ends the first run
        let mut seq = 4;
        while !b.is_full() {
            b.push(seq, msg(seq, LARGE_EVENT - 1));
            seq += 1;
        }
        let mut out = Vec::new();
        b.since_in(Wire::Line, 1, "e", &mut out);
        let first_run = out.swap_remove(0);
        let len = first_run.len();
        assert_eq!(len, LARGE_EVENT - 1 + 100);
        drop((b, out));
        let capacity = first_run.try_into_mut().expect("unique").capacity();
        assert!(capacity < 2 * len, "{len} bytes keep {capacity} allocated");
    }
}
