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

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One client's lines on their way to Redis.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: Mutex<usize>,
    settled: Condvar,
}

/// A line on its way; dropping it says the line is settled.
#[derive(Debug)]
pub(crate) struct Ticket(Arc<InFlight>);

impl InFlight {
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        *self.count.lock() += 1;
        Ticket(Arc::clone(self))
    }

    /// Waits (at most `limit`) until every ticket is back.
    pub(crate) fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut count = self.count.lock();
        while *count > 0 {
            if self.settled.wait_until(&mut count, deadline).timed_out() {
                return;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        *count -= 1;
        if *count == 0 {
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
        let _kept = in_flight.ticket();
        let started = Instant::now();
        in_flight.settle(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
    }
}
