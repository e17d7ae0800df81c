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
//! SEQs mean something only within one run of the server, named by its
//! epoch ([`Merge::welcome`]). Pure logic, no I/O: unit-tested below.

use super::event::{Event, Gap};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(crate) struct Merge {
    /// The server run the SEQs belong to.
    epoch: Option<String>,
    /// The next SEQ to deliver; `None` until the first event.
    next: Option<u64>,
    /// Events that arrived ahead of a hole.
    held: BTreeMap<u64, Event>,
}

impl Merge {
    /// A connection was welcomed by the server run `epoch`. When that is
    /// a new run, the old SEQs mean nothing any more: start over, and
    /// report what was lost.
    pub(crate) fn welcome(&mut self, epoch: &str) -> Option<Gap> {
        if self.epoch.as_deref() == Some(epoch) {
            return None;
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

    pub(crate) fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The last SEQ delivered (what to `/resume` after), if any.
    pub(crate) fn last(&self) -> Option<u64> {
        self.next.map(|n| n - 1)
    }

    /// Offers one broadcast event (of the current epoch); appends to `out`
    /// whatever can now be delivered, in order.
    pub(crate) fn offer(&mut self, event: Event, out: &mut Vec<Event>) {
        let Some(seq) = event.seq() else {
            return;
        };
        // The first event ever starts the stream.
        let next = *self.next.get_or_insert(seq);
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
    /// still missing as a gap and move on.
    pub(crate) fn lost_before(&mut self, oldest: u64, out: &mut Vec<Event>) {
        let Some(next) = self.next else {
            return;
        };
        if oldest <= next {
            return;
        }
        out.push(Event::Gap(Gap::Expired {
            first: next,
            last: oldest - 1,
        }));
        self.held = self.held.split_off(&oldest);
        self.next = Some(oldest);
        self.release(out);
    }

    /// A replay up to `last` is complete: every event up to `last` that
    /// the server still had has arrived. A hole left below `last` cannot
    /// fill any more: report it.
    pub(crate) fn replayed_up_to(&mut self, last: u64, out: &mut Vec<Event>) {
        while let Some(next) = self.next {
            if next > last {
                break;
            }
            let resume_at = self.held.keys().next().copied().unwrap_or(last + 1);
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
                e => e.seq().unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn duplicates_are_dropped_and_order_is_restored() {
        let mut m = Merge::default();
        assert_eq!(m.welcome("e1"), None);
        let mut out = Vec::new();
        for seq in [5, 6, 6, 9, 8, 5, 7, 10] {
            m.offer(msg(seq), &mut out);
        }
        assert_eq!(seqs(&out), ["5", "6", "7", "8", "9", "10"]);
        assert_eq!(m.last(), Some(10));
    }

    #[test]
    fn a_resume_gap_is_reported_once() {
        let mut m = Merge::default();
        m.welcome("e1");
        let mut out = Vec::new();
        m.offer(msg(1), &mut out);
        m.offer(msg(7), &mut out); // live, ahead of the hole
        m.lost_before(5, &mut out); // ERR resume-gap 5
        m.offer(msg(5), &mut out);
        m.offer(msg(6), &mut out);
        assert_eq!(seqs(&out), ["1", "gap 2-4", "5", "6", "7"]);
    }

    #[test]
    fn a_hole_left_after_a_replay_is_a_gap() {
        let mut m = Merge::default();
        m.welcome("e1");
        let mut out = Vec::new();
        m.offer(msg(1), &mut out);
        m.offer(msg(4), &mut out);
        m.offer(msg(6), &mut out);
        m.replayed_up_to(6, &mut out);
        assert_eq!(seqs(&out), ["1", "gap 2-3", "4", "gap 5-5", "6"]);
        m.replayed_up_to(6, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn a_new_epoch_starts_over_with_a_restart_gap() {
        let mut m = Merge::default();
        m.welcome("e1");
        let mut out = Vec::new();
        m.offer(msg(41), &mut out);
        m.offer(msg(43), &mut out);
        assert_eq!(m.welcome("e1"), None);
        assert_eq!(m.welcome("e2"), Some(Gap::Restarted { after: 41 }));
        m.offer(msg(1), &mut out);
        assert_eq!(seqs(&out), ["41", "1"]);
        assert_eq!(m.epoch(), Some("e2"));
    }
}
