//! The broadcaster's batch: events numbered and encoded but not yet
//! handed to the members.
//!
//! Under load many events arrive at once. Rather than write each one to
//! every member separately, the broadcaster collects what is waiting
//! into a batch and gives every member the whole batch in one vectored
//! write. Each member starts at the first event it is entitled to (its own
//! `JOIN`), so the batch is a run of consecutive SEQs that can be sliced
//! by SEQ.
//!
//! # Laid end to end: one piece per write, not one per event
//!
//! A `sendmsg` with 127 separate 75-byte pieces costs the kernel more
//! than one with a single 9.5 KB piece: it copies and checks the whole
//! list of pieces first (into memory it allocates, past 8 of them), then
//! copies each piece on its own. So before the first member is written to,
//! the batch copies its small events once, end to end, into one buffer
//! ([`Joined`]), and every member gets a slice of that buffer: usually one
//! piece, whatever the number of events. One copy per batch saves work on
//! every one of its writes (docs/PERFORMANCE.md has the figures). Events
//! of 8 KiB or more (large `/send` payloads) are not copied: each stays a
//! piece of its own.
//!
//! Those copies cost memory only while some member's outbox still holds
//! a slice of them: a member that cannot take its slice at once keeps it
//! (shared, not copied), and with it the whole buffer. A member behind by
//! a span of batches has every one of them whole in its outbox, from its
//! first on, so the buffers alive hold at most what the member furthest
//! behind has unsent (`--max-pending` at most) plus one buffer, 2 MiB,
//! per wire format, however many members are behind.
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
/// An event this long or longer is not copied into a [`Joined`] buffer:
/// it is a piece of its own. Every chat line at the default `--max-line`
/// (4 KiB) is copied, and a buffer holds at most [`MAX_EVENTS`] events
/// under 8 KiB: 2 MiB (see "Laid end to end" above).
const COPY_AT_MOST: usize = 8 * 1024;

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

/// A batch's events laid end to end (see the module docs): runs of small
/// events copied into one buffer each, and each large event as it is.
#[derive(Debug)]
struct Joined {
    pieces: Vec<Bytes>,
    /// For each event, which piece holds it and where in that piece.
    places: Vec<(usize, Range<usize>)>,
}

impl Joined {
    fn new(events: &[Bytes]) -> Self {
        let mut pieces = Vec::new();
        let mut places = Vec::with_capacity(events.len());
        let small = events.iter().map(Bytes::len).filter(|&n| n < COPY_AT_MOST);
        let mut run: Vec<u8> = Vec::with_capacity(small.sum());
        for event in events {
            if event.len() < COPY_AT_MOST {
                let start = run.len();
                run.extend_from_slice(event);
                places.push((pieces.len(), start..run.len()));
                continue;
            }
            if !run.is_empty() {
                pieces.push(Bytes::from(std::mem::take(&mut run)));
            }
            places.push((pieces.len(), 0..event.len()));
            pieces.push(event.clone());
        }
        if !run.is_empty() {
            pieces.push(Bytes::from(run));
        }
        Joined { pieces, places }
    }

    /// The events `events` (indices), as pieces, into `out`.
    fn pieces(&self, events: Range<usize>, out: &mut Vec<Bytes>) {
        out.clear();
        let (Some(first), Some(last)) = (
            self.places.get(events.start),
            events.end.checked_sub(1).and_then(|i| self.places.get(i)),
        ) else {
            return;
        };
        if events.is_empty() {
            return;
        }
        let (from, to) = ((first.0, first.1.start), (last.0, last.1.end));
        for piece in from.0..=to.0 {
            let start = if piece == from.0 { from.1 } else { 0 };
            let end = if piece == to.0 {
                to.1
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
        let large = Bytes::from(vec![b'x'; COPY_AT_MOST]);
        b.push(1, Bytes::from_static(b"a\n"));
        b.push(2, Bytes::from_static(b"b\n"));
        b.push(3, large.clone());
        b.push(4, Bytes::from_static(b"c\n"));
        let x = "x".repeat(COPY_AT_MOST);
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
        let (small, large) = (vec![b's'; COPY_AT_MOST - 1], vec![b'l'; COPY_AT_MOST]);
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
}
