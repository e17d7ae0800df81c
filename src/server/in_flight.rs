//! One client's replies in the order of its lines, when some answers come
//! later, from another thread.
//!
//! The protocol promises that the replies to a client's commands come back
//! in the order of its commands. A session answers its commands itself, in
//! order, so on a single server this holds by construction. On a cluster
//! node one kind of answer comes from elsewhere: a chat line that Redis
//! could not take is answered `ERR unavailable` by the appender thread,
//! after a round trip. So each chat line handed over carries a [`Ticket`];
//! the appender drops it once it has said whatever it had to say about
//! that line (or the line was dropped on its way, which drops it too).
//! Before the session writes the reply to a later command, it waits until
//! all of its tickets are back ([`InFlight::settle`]). Chat lines do not
//! wait for each other: only a reply waits, so a client that only talks
//! keeps its lines flowing.
//!
//! The wait is bounded. The appender refuses unsent a line that has waited
//! for it for 2 s, and Redis answers (or is given up on) within 2.5 s of a
//! call; so a ticket still out after [`InFlight::settle`]'s limit (6 s)
//! belongs to a line that was never sent and never will be. The session
//! then gives those tickets up: it says `ERR unavailable` for each line
//! itself, and the appender, finding its ticket given up, says nothing.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One client's lines on their way to Redis.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: Mutex<Count>,
    settled: Condvar,
}

/// The tickets out, and the moment the session last gave up on some.
#[derive(Debug, Default)]
struct Count {
    out: usize,
    /// Tickets made before this were given up (see the module docs).
    given_up_before: Option<Instant>,
}

/// A line on its way, since when; dropping it says the line is settled.
#[derive(Debug)]
pub(crate) struct Ticket(Arc<InFlight>, Instant);

impl Ticket {
    /// When the client sent the line.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn since(&self) -> Instant {
        self.1
    }

    /// Whether the session gave up waiting for it (and told its client).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn given_up(&self) -> bool {
        let count = self.0.count.lock();
        count.given_up_before.is_some_and(|t| self.1 < t)
    }
}

/// A command's sender waiting for its reply line (`OK nick`, `ERR …`)
/// from the appender, since `asked`.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Waiting {
    pub reply: crossbeam_channel::Sender<String>,
    pub asked: Instant,
}

impl InFlight {
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        let mut count = self.count.lock();
        count.out += 1;
        Ticket(Arc::clone(self), Instant::now())
    }

    /// Waits (at most `limit`) until every ticket is back. Returns how many
    /// were not, and are given up: the caller tells its client.
    pub(crate) fn settle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut count = self.count.lock();
        while count.out > 0 {
            if self.settled.wait_until(&mut count, deadline).timed_out() {
                count.given_up_before = Some(Instant::now());
                return std::mem::take(&mut count.out);
            }
        }
        0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        if count.given_up_before.is_some_and(|t| self.1 < t) {
            return; // no longer counted
        }
        count.out -= 1;
        if count.out == 0 {
            self.0.settled.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn settle_waits_for_every_ticket_and_no_longer() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.settle(Duration::ZERO);
        let (a, b) = (in_flight.ticket(), in_flight.ticket());
        let started = Instant::now();
        let dropper = thread::spawn(move || drop((a, b)));
        in_flight.settle(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(10));
        dropper.join().unwrap();
        let kept = in_flight.ticket();
        let started = Instant::now();
        assert_eq!(in_flight.settle(Duration::from_millis(50)), 1, "given up");
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
        assert!(kept.given_up());
        // A given-up ticket no longer holds anyone up, dropped or not.
        let started = Instant::now();
        assert_eq!(in_flight.settle(Duration::from_secs(10)), 0);
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(kept);
        let fresh = in_flight.ticket();
        assert!(!fresh.given_up());
        drop(fresh);
        assert_eq!(in_flight.settle(Duration::ZERO), 0);
    }
}
