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

/// Consecutive encoded events, the first with SEQ `first`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    events: Vec<Bytes>,
    /// The same events as SSE, made on first use.
    sse: OnceCell<Vec<Bytes>>,
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
    /// server run in SSE ids).
    pub(crate) fn since_in(&self, wire: Wire, from: u64, epoch: &str) -> &[Bytes] {
        let events = match wire {
            Wire::Line => &self.events,
            Wire::Sse => self.sse.get_or_init(|| {
                let convert = |e: &Bytes| wire.broadcast(e, epoch);
                self.events.iter().map(convert).collect()
            }),
        };
        &events[self.range(from, u64::MAX)]
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

    #[test]
    fn a_stream_gets_the_sse_conversion_made_once() {
        let mut b = Batch::default();
        b.push(4, Bytes::from_static(b"JOIN 4 al\n"));
        b.push(5, Bytes::from_static(b"MSG 5 al hi\n"));
        b.since_in(Wire::Line, 4, "e");
        assert!(b.sse.get().is_none(), "no stream, no conversion");
        let sse = b.since_in(Wire::Sse, 5, "e");
        assert_eq!(sse, [Bytes::from_static(b"id: e:5\ndata: MSG 5 al hi\n\n")]);
        let again = b.since_in(Wire::Sse, 4, "e");
        assert!(std::ptr::eq(&again[1], &sse[0]), "converted once, shared");
        assert_eq!(seqs(b.since_in(Wire::Line, 5, "e")), ["MSG 5 al hi\n"]);
    }
}
