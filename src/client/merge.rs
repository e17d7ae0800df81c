//! Turning the broadcast events of one or two connections, across
//! reconnects, into one stream: every SEQ exactly once, in order, and an
//! explicit gap when something is lost.
//!
//! The server numbers broadcast events with one counter, so the client
//! only has to remember `next`, the SEQ it wants to deliver next:
//!
//! * an event with `seq < next` was delivered already (a replay, or the
//!   other connection of a redundant client): drop it;
//! * `seq == next`: deliver it, and then whatever was held back that now
//!   follows on;
//! * `seq > next`: something is missing in between; hold it back until the
//!   missing events arrive (a `/resume` replay fills the hole) or the
//!   server says they are gone ([`Merge::lost_before`]).
//!
//! Where does the stream start? A redundant client's two links join one
//! after the other, and each receives events from its own `JOIN` on. Had
//! the stream started with whichever event came first, the second link's
//! could win, and the first link's own `JOIN` (and whatever came before the
//! second `JOIN`) would look like duplicates and vanish. So until every
//! link welcomed in this server run has offered its first event (or been
//! lost), events are held; then the stream starts at the lowest SEQ on
//! hand. A *mirror* (a second link the server never lists, see
//! `handshake`) is not waited for: it receives from some moment after it
//! connected, never before its holder's `JOIN` is due, so it cannot be the
//! link whose first event must start the stream, and a quiet room might
//! not send it any event for a long time.
//!
//! SEQs mean something only within one run of the server, named by its
//! epoch ([`Merge::welcome`]). Pure logic, no I/O: unit-tested below,
//! and driven with random orders, duplicates, gaps and epochs by the fuzz
//! target `merge` (`fuzz/src/lib.rs`). It is `pub` (and hidden) only so
//! that the fuzz crate and `tests/fuzz_corpus.rs` can reach it; it is not
//! part of the library's API.

use super::event::{Event, Gap};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
pub struct Merge {
    /// The server run the SEQs belong to.
    epoch: Option<String>,
    /// The next SEQ to deliver; `None` until the first event.
    next: Option<u64>,
    /// Events that arrived ahead of a hole (or before the stream started).
    held: BTreeMap<u64, Event>,
    /// Before the stream starts: the links welcomed in this run that have
    /// not offered an event yet.
    waiting: BTreeSet<usize>,
}

impl Merge {
    /// A merge for a client of `links` links. The stream's start waits
    /// for all of them: they are all connecting.
    pub fn new(links: usize) -> Self {
        Merge {
            epoch: None,
            next: None,
            held: BTreeMap::new(),
            waiting: (0..links).collect(),
        }
    }

    /// A connection was welcomed by the server run `epoch`. When that is
    /// a new run, the old SEQs mean nothing any more: start over, and
    /// report what was lost.
    pub fn welcome(&mut self, epoch: &str, link: usize) -> Option<Gap> {
        if self.epoch.as_deref() == Some(epoch) {
            if self.next.is_none() {
                self.waiting.insert(link);
            }
            return None;
        }
        if self.epoch.is_some() {
            // A restart: only this link is known to be in the new run.
            self.waiting = BTreeSet::from([link]);
        }
        let previous = self.epoch.replace(epoch.to_string());
        let last = self.last();
        self.next = None;
        self.held.clear();
        match (previous, last) {
            (Some(_), Some(after)) => Some(Gap::Restarted { after }),
            _ => None,
        }
    }

    /// The server run the SEQs belong to, once a connection was welcomed.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The last SEQ delivered (what to `/resume` after), if any.
    pub fn last(&self) -> Option<u64> {
        self.next.map(|n| n - 1)
    }

    /// A link's connection is lost: the stream need not wait for it to
    /// start.
    pub fn link_lost(&mut self, link: usize, out: &mut Vec<Event>) {
        self.stop_waiting_for(link, out);
    }

    /// A link's connection became a mirror: the stream need not wait for
    /// it to start (see the module docs).
    pub fn link_mirrors(&mut self, link: usize, out: &mut Vec<Event>) {
        self.stop_waiting_for(link, out);
    }

    fn stop_waiting_for(&mut self, link: usize, out: &mut Vec<Event>) {
        if self.next.is_none() && self.waiting.remove(&link) {
            self.start(out);
        }
    }

    /// Starts the stream if no link is waited for and something is held.
    fn start(&mut self, out: &mut Vec<Event>) {
        if self.waiting.is_empty()
            && let Some(&first) = self.held.keys().next()
        {
            self.next = Some(first);
            self.release(out);
        }
    }

    /// Offers one broadcast event (of the current epoch) received on
    /// `link`; appends to `out` whatever can now be delivered, in order.
    pub fn offer(&mut self, event: Event, link: usize, out: &mut Vec<Event>) {
        if let Some(seq) = event.seq() {
            self.place(seq, event, link, out);
        }
    }

    /// Broadcast event `seq` arrived on `link` but could not be read: it
    /// takes its place in the stream as a [`Gap::Unreadable`], so that the
    /// events after it are not held back waiting for it.
    pub fn unreadable(&mut self, seq: u64, link: usize, out: &mut Vec<Event>) {
        self.place(seq, Event::Gap(Gap::Unreadable { seq }), link, out);
    }

    /// Puts the event for `seq` in its place: out now, held, or dropped
    /// as already delivered.
    fn place(&mut self, seq: u64, event: Event, link: usize, out: &mut Vec<Event>) {
        if seq == u64::MAX {
            // No server gets there (its counter starts at 1), and nothing
            // could follow it: a server that sends it is broken. Ignoring
            // it keeps `next` from overflowing.
            return;
        }
        let Some(next) = self.next else {
            self.held.entry(seq).or_insert(event);
            self.waiting.remove(&link);
            self.start(out);
            return;
        };
        if seq < next {
            return;
        }
        if seq > next {
            self.held.entry(seq).or_insert(event);
            return;
        }
        out.push(event);
        self.next = Some(seq + 1);
        self.release(out);
    }

    /// The server no longer has the events before `oldest`: report those
    /// still missing as gaps and move on. Events before `oldest` that did
    /// arrive (live, on the other link of a redundant client) are held:
    /// they are delivered in their places, not reported lost.
    pub fn lost_before(&mut self, oldest: u64, out: &mut Vec<Event>) {
        let Some(mut next) = self.next else {
            return;
        };
        if oldest <= next {
            return;
        }
        let from_oldest = self.held.split_off(&oldest);
        for (seq, event) in std::mem::replace(&mut self.held, from_oldest) {
            if seq > next {
                out.push(Event::Gap(Gap::Expired {
                    first: next,
                    last: seq - 1,
                }));
            }
            out.push(event);
            next = seq + 1;
        }
        if next < oldest {
            out.push(Event::Gap(Gap::Expired {
                first: next,
                last: oldest - 1,
            }));
        }
        self.next = Some(oldest);
        self.release(out);
    }

    /// A replay up to `last` is complete: every event up to `last` that
    /// the server still had has arrived. A hole left below `last` cannot
    /// fill any more: report it.
    pub fn replayed_up_to(&mut self, last: u64, out: &mut Vec<Event>) {
        while let Some(next) = self.next {
            if next > last {
                break;
            }
            let resume_at = self
                .held
                .keys()
                .next()
                .copied()
                .unwrap_or(last.saturating_add(1));
            self.lost_before(resume_at, out);
            if self.next == Some(next) {
                break;
            }
        }
    }

    fn release(&mut self, out: &mut Vec<Event>) {
        while let Some(next) = self.next {
            match self.held.remove(&next) {
                Some(event) => {
                    out.push(event);
                    self.next = Some(next + 1);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Event {
        Event::Msg {
            seq,
            from: "a".into(),
            text: seq.to_string(),
        }
    }

    fn seqs(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Gap(Gap::Expired { first, last }) => format!("gap {first}-{last}"),
                Event::Gap(Gap::Restarted { after }) => format!("restart after {after}"),
                Event::Gap(Gap::Unreadable { seq }) => format!("unreadable {seq}"),
                e => e.seq().unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn duplicates_are_dropped_and_order_is_restored() {
        let mut m = Merge::new(1);
        assert_eq!(m.welcome("e1", 0), None);
        let mut out = Vec::new();
        for seq in [5, 6, 6, 9, 8, 5, 7, 10] {
            m.offer(msg(seq), 0, &mut out);
        }
        assert_eq!(seqs(&out), ["5", "6", "7", "8", "9", "10"]);
        assert_eq!(m.last(), Some(10));
    }

    #[test]
    fn the_second_link_cannot_start_the_stream_ahead_of_the_first() {
        let mut m = Merge::new(2);
        let mut out = Vec::new();
        // Link 1 joined at 21, after link 0; but its WELCOME and events are
        // handled before link 0's.
        m.welcome("e1", 1);
        m.offer(msg(21), 1, &mut out);
        m.offer(msg(22), 1, &mut out);
        m.welcome("e1", 0);
        assert!(out.is_empty());
        for seq in [20, 21, 22, 23] {
            m.offer(msg(seq), 0, &mut out);
        }
        m.offer(msg(23), 1, &mut out);
        assert_eq!(seqs(&out), ["20", "21", "22", "23"]);
    }

    #[test]
    fn a_link_lost_before_its_first_event_is_not_waited_for() {
        let mut m = Merge::new(2);
        m.welcome("e1", 1);
        let mut out = Vec::new();
        m.offer(msg(21), 1, &mut out);
        assert!(out.is_empty());
        // Link 0 never got through.
        m.link_lost(0, &mut out);
        m.offer(msg(22), 1, &mut out);
        assert_eq!(seqs(&out), ["21", "22"]);
    }

    #[test]
    fn a_mirror_is_not_waited_for() {
        let mut m = Merge::new(2);
        let mut out = Vec::new();
        m.welcome("e1", 0);
        m.welcome("e1", 1);
        // Link 1 became a mirror; the room is quiet: link 0's own JOIN
        // must not wait for an event on link 1.
        m.link_mirrors(1, &mut out);
        assert!(out.is_empty());
        m.offer(msg(20), 0, &mut out);
        m.offer(msg(21), 1, &mut out);
        m.offer(msg(21), 0, &mut out);
        assert_eq!(seqs(&out), ["20", "21"]);
    }

    #[test]
    fn an_unreadable_event_is_a_gap_in_its_place() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        m.offer(msg(1), 0, &mut out);
        m.unreadable(2, 0, &mut out);
        m.offer(msg(3), 0, &mut out);
        m.unreadable(3, 0, &mut out); // already delivered: ignored
        assert_eq!(seqs(&out), ["1", "unreadable 2", "3"]);
    }

    #[test]
    fn a_resume_gap_is_reported_once() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        m.offer(msg(1), 0, &mut out);
        m.offer(msg(7), 0, &mut out); // live, ahead of the hole
        m.lost_before(5, &mut out); // ERR resume-gap 5
        m.offer(msg(5), 0, &mut out);
        m.offer(msg(6), 0, &mut out);
        assert_eq!(seqs(&out), ["1", "gap 2-4", "5", "6", "7"]);
    }

    /// Found by the fuzz target `merge`: `ERR resume-gap 5` dropped event
    /// 3, which had arrived (on the other link), and reported it lost.
    #[test]
    fn events_that_arrived_before_a_resume_gap_are_not_lost() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        for seq in [1, 3, 7] {
            m.offer(msg(seq), 0, &mut out);
        }
        m.lost_before(5, &mut out);
        m.offer(msg(5), 0, &mut out);
        m.offer(msg(6), 0, &mut out);
        assert_eq!(seqs(&out), ["1", "gap 2-2", "3", "gap 4-4", "5", "6", "7"]);
    }

    /// Found by the fuzz target `merge`: a server that sent SEQ u64::MAX
    /// made `next` overflow (a panic in a debug build).
    #[test]
    fn the_last_u64_is_ignored_not_an_overflow() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        m.offer(msg(1), 0, &mut out);
        m.offer(msg(u64::MAX), 0, &mut out);
        m.unreadable(u64::MAX, 0, &mut out);
        m.replayed_up_to(u64::MAX, &mut out);
        let gap = format!("gap 2-{}", u64::MAX - 1);
        assert_eq!(seqs(&out), ["1", gap.as_str()]);
        assert_eq!(m.last(), Some(u64::MAX - 1));
    }

    #[test]
    fn a_hole_left_after_a_replay_is_a_gap() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        m.offer(msg(1), 0, &mut out);
        m.offer(msg(4), 0, &mut out);
        m.offer(msg(6), 0, &mut out);
        m.replayed_up_to(6, &mut out);
        assert_eq!(seqs(&out), ["1", "gap 2-3", "4", "gap 5-5", "6"]);
        m.replayed_up_to(6, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn a_new_epoch_starts_over_with_a_restart_gap() {
        let mut m = Merge::new(1);
        m.welcome("e1", 0);
        let mut out = Vec::new();
        m.offer(msg(41), 0, &mut out);
        m.offer(msg(43), 0, &mut out);
        assert_eq!(m.welcome("e1", 0), None);
        assert_eq!(m.welcome("e2", 0), Some(Gap::Restarted { after: 41 }));
        m.offer(msg(1), 0, &mut out);
        assert_eq!(seqs(&out), ["41", "1"]);
        assert_eq!(m.epoch(), Some("e2"));
    }
}
