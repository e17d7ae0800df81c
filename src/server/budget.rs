//! The memory budget for payloads (`--max-memory`).
//!
//! A `/send` payload of up to `--max-payload` bytes is held by the
//! server from the moment its first byte arrives until the broadcaster has
//! published it. With a thousand clients each sending a megabyte at once,
//! that would be a gigabyte; so every payload first *reserves* its size
//! from one server-wide budget, and gives it back when it is published
//! (the [`Reservation`] is dropped). A session that cannot get its share
//! waits a moment without reading (TCP slows its client down), and if the
//! budget stays used up, the payload is refused and skipped. Memory for
//! payloads in flight is then at most `--max-memory`, whatever the
//! clients do.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Instant;

/// The budget: how many bytes are free.
#[derive(Debug)]
pub(crate) struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// Bytes taken from the budget; they go back when this is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Budget {
            free: Mutex::new(bytes),
            freed: Condvar::new(),
        })
    }

    /// Takes `bytes` from the budget, waiting until `deadline` for them to
    /// come free. `None` if they did not.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        bytes: usize,
        deadline: Instant,
    ) -> Option<Reservation> {
        let mut free = self.free.lock();
        while *free < bytes {
            if self.freed.wait_until(&mut free, deadline).timed_out() && *free < bytes {
                return None;
            }
        }
        *free -= bytes;
        Some(Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes free right now.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        *self.free.lock()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        *self.budget.free.lock() += self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reservations_wait_for_room_and_give_it_back() {
        let budget = Budget::new(100);
        let soon = || Instant::now() + Duration::from_millis(20);
        let a = budget.reserve(60, soon()).unwrap();
        assert!(budget.reserve(60, soon()).is_none(), "only 40 are free");
        let b = budget.reserve(40, soon()).unwrap();
        assert_eq!(budget.free(), 0);
        // Freed by another thread while this one waits.
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                budget
                    .reserve(50, Instant::now() + Duration::from_secs(10))
                    .is_some()
            })
        };
        drop(a);
        assert!(waiter.join().unwrap());
        drop(b);
        assert_eq!(budget.free(), 100);
    }
}
