//! Rate limits: a token bucket, and the per-address record of failed
//! `/auth` attempts.
//!
//! # The token bucket
//!
//! A [`TokenBucket`] holds up to `burst` tokens and gains `rate` tokens per
//! second. Spending is allowed while at least one token is left, and may
//! take the bucket into debt: a `/send` of a megabyte costs as many tokens
//! as the lines of `--max-line` bytes it holds, so `--max-rate` bounds
//! bytes as well as lines, and the debt is paid back over time before the
//! next line goes through. The same bucket, counting bytes, keeps `/list`
//! from being used as an amplifier (a small request, a big answer).
//!
//! # Failed `/auth`
//!
//! A wrong token costs its sender time: the session waits a moment before
//! its `BYE auth-failed`. An address with many failures in a short time
//! is locked out for a while: its `/auth` fails whatever the token. See
//! [`AuthFailures`].

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket; see the module docs.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: `burst` tokens, refilled at `rate` per second.
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `--max-rate N`: N lines per second, a burst of twice as many.
    pub(crate) fn lines_per_second(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        TokenBucket::new(rate, 2.0 * rate, now)
    }

    /// Spends `cost` tokens if at least one is left (going into debt if
    /// `cost` is more than what is left). `false`: nothing spent, refused.
    pub(crate) fn spend(&mut self, cost: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// How long until a spend can succeed again.
    pub(crate) fn wait(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }
}

/// How long a wrong `/auth` waits before its `BYE auth-failed`.
pub(crate) const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);
/// Failures from one address within [`AUTH_WINDOW`] that lock it out.
const AUTH_FAILS_TO_LOCK: u32 = 10;
/// The window failures are counted in, and how long a lockout lasts.
const AUTH_WINDOW: Duration = Duration::from_secs(60);
/// The most addresses remembered (older ones are forgotten first).
const AUTH_MAX_ADDRESSES: usize = 4096;

/// Failed `/auth` attempts per address, to lock out guessers.
#[derive(Debug, Default)]
pub(crate) struct AuthFailures {
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The address failures are counted under: an IPv4 address, or the /64
/// network of an IPv6 one (a single host usually has a whole /64, and
/// could otherwise take a fresh address for every guess).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

impl AuthFailures {
    /// Whether `ip` is locked out now.
    pub(crate) fn locked(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = counted_as(ip);
        let map = self.by_address.lock();
        map.get(&ip).is_some_and(|&(count, since)| {
            count >= AUTH_FAILS_TO_LOCK && now.saturating_duration_since(since) < AUTH_WINDOW
        })
    }

    /// Counts one failure from `ip`.
    pub(crate) fn record(&self, ip: IpAddr, now: Instant) {
        let ip = counted_as(ip);
        let mut map = self.by_address.lock();
        if map.len() >= AUTH_MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, &mut (_, since)| now.saturating_duration_since(since) < AUTH_WINDOW);
            if map.len() >= AUTH_MAX_ADDRESSES {
                // Still full of recent failures: forget the oldest one.
                if let Some(oldest) = map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= AUTH_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 >= AUTH_FAILS_TO_LOCK {
            // The lockout runs from the latest failure.
            entry.1 = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_then_the_rate() {
        let start = Instant::now();
        let mut r = TokenBucket::lines_per_second(5, start);
        let allowed = (0..20).filter(|_| r.spend(1.0, start)).count();
        assert_eq!(allowed, 10);
        // One second later: five more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..20).filter(|_| r.spend(1.0, later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn a_big_spend_is_paid_back_before_the_next() {
        let start = Instant::now();
        let mut r = TokenBucket::lines_per_second(10, start);
        assert!(r.spend(100.0, start), "allowed: one token was left");
        // 20 - 100 = -80 tokens: 8.1 s until the next line.
        assert!(!r.spend(1.0, start + Duration::from_secs(8)));
        assert!(r.wait() > Duration::ZERO);
        assert!(r.spend(1.0, start + Duration::from_millis(8200)));
    }

    #[test]
    fn ten_failures_lock_an_address_out_for_a_while() {
        let failures = AuthFailures::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..9 {
            failures.record(ip, t);
        }
        assert!(!failures.locked(ip, t));
        failures.record(ip, t);
        assert!(failures.locked(ip, t));
        assert!(!failures.locked(other, t));
        assert!(!failures.locked(ip, t + AUTH_WINDOW));
    }

    #[test]
    fn ipv6_addresses_of_one_network_count_together() {
        let failures = AuthFailures::default();
        let t = Instant::now();
        for i in 0..10u16 {
            failures.record(format!("2001:db8::{i:x}").parse().unwrap(), t);
        }
        assert!(failures.locked("2001:db8::ffff".parse().unwrap(), t));
        assert!(!failures.locked("2001:db8:0:1::1".parse().unwrap(), t));
    }
}
