//! The history ring: the most recent broadcast events, already encoded,
//! kept so that a client that reconnects can `/resume` what it missed.
//!
//! It belongs to the broadcaster thread alone (no lock). Events are stored
//! as the exact bytes that went out, shared with the write batch through
//! [`Bytes`] (a reference count, not a copy). SEQs are consecutive, so the
//! event after SEQ `s` sits at index `s + 1 - oldest`: no search needed.
//!
//! The ring keeps at most `--history` events and `--history-bytes` bytes,
//! dropping the oldest first. An event larger than the byte limit is not
//! kept at all.

use crate::http::stats::HistoryStats;
use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct History {
    /// `(seq, encoded event)`, oldest first, SEQs consecutive.
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The SEQ of the newest event ever pushed (0 before the first).
    newest: u64,
}

impl History {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        History {
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
            newest: 0,
        }
    }

    /// Forgets every event and goes on after `seq` (a cluster node starts
    /// from the room's log, which may be long under way).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn start_after(&mut self, seq: u64) {
        self.events.clear();
        self.bytes = 0;
        self.newest = seq;
    }

    /// Records event `seq` (which must be the next SEQ).
    pub(crate) fn push(&mut self, seq: u64, event: Bytes) {
        debug_assert_eq!(seq, self.newest + 1);
        self.newest = seq;
        self.bytes += event.len();
        self.events.push_back((seq, event));
        while self.events.len() > self.max_events || self.bytes > self.max_bytes {
            let Some((_, old)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }

    /// The newest SEQ so far (0 if none).
    pub(crate) fn newest(&self) -> u64 {
        self.newest
    }

    /// The oldest SEQ still held; `newest + 1` when nothing is held.
    pub(crate) fn oldest(&self) -> u64 {
        self.events.front().map_or(self.newest + 1, |&(seq, _)| seq)
    }

    /// What it holds, for `/stats` and `/metrics`.
    pub(crate) fn stats(&self) -> HistoryStats {
        HistoryStats {
            events: self.events.len() as u64,
            bytes: self.bytes as u64,
            oldest: self.events.front().map(|&(seq, _)| seq),
        }
    }

    /// The events held with a SEQ greater than `after`, oldest first.
    pub(crate) fn after(&self, after: u64) -> impl DoubleEndedIterator<Item = &(u64, Bytes)> {
        let skip = (after + 1).saturating_sub(self.oldest());
        self.events
            .iter()
            .skip(skip.try_into().unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(max_events: usize, max_bytes: usize, sizes: &[usize]) -> History {
        let mut h = History::new(max_events, max_bytes);
        for (i, &n) in sizes.iter().enumerate() {
            h.push(i as u64 + 1, Bytes::from(vec![b'x'; n]));
        }
        h
    }

    fn seqs(h: &History, after: u64) -> Vec<u64> {
        h.after(after).map(|&(s, _)| s).collect()
    }

    #[test]
    fn keeps_the_newest_events() {
        let h = filled(3, 1000, &[1, 1, 1, 1, 1]);
        assert_eq!((h.oldest(), h.newest()), (3, 5));
        assert_eq!(seqs(&h, 0), vec![3, 4, 5]);
        assert_eq!(seqs(&h, 3), vec![4, 5]);
        assert_eq!(seqs(&h, 5), Vec::<u64>::new());
    }

    #[test]
    fn byte_limit_drops_the_oldest_and_refuses_giants() {
        let h = filled(100, 10, &[4, 4, 4]);
        assert_eq!(seqs(&h, 0), vec![2, 3]);
        let h = filled(100, 10, &[4, 11]);
        assert_eq!((h.oldest(), h.newest()), (3, 2));
        assert_eq!(seqs(&h, 0), Vec::<u64>::new());
    }

    #[test]
    fn empty_history() {
        let h = History::new(0, 0);
        assert_eq!((h.oldest(), h.newest()), (1, 0));
        let h = filled(0, 100, &[1, 1]);
        assert_eq!((h.oldest(), h.newest()), (3, 2));
    }
}
