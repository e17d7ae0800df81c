//! Client settings, and the reconnect policy (exponential backoff with
//! jitter).

use std::time::Duration;

/// How the client reconnects after losing a connection.
///
/// The n-th attempt in a row waits `initial_delay × multiplier^(n-1)`,
/// capped at `max_delay`, then scaled by a random factor between
/// `1 - jitter` and 1 so that many clients cut off at once do not all come
/// back at the same instant. A connection that gets all the way through
/// its handshake resets the count.
///
/// With several server addresses, one attempt is one *round*: every
/// address once, one right after the other, with no wait in between (see
/// the [module docs](super#several-addresses)).
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// Whether to reconnect at all.
    pub enabled: bool,
    /// Wait before the first attempt (default: 100 ms).
    pub initial_delay: Duration,
    /// Longest wait between attempts (default: 5 s).
    pub max_delay: Duration,
    /// Growth of the wait per attempt (default: 2).
    pub multiplier: f64,
    /// Share of the wait that is random, from 0 (none) to 1 (default: 0.5).
    pub jitter: f64,
    /// Give up after this many failed attempts (rounds) in a row
    /// (default: never).
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// No reconnecting: a lost connection closes the client.
    pub fn never() -> Self {
        Reconnect {
            enabled: false,
            ..Reconnect::default()
        }
    }

    /// The wait before attempt number `attempt` (1 for the first), given a
    /// uniformly random `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let scaled = capped * (1.0 - jitter * unit.clamp(0.0, 1.0));
        // A NaN setting, or a `max_delay` too large for an f64 round trip,
        // must not panic: fall back to `max_delay`.
        Duration::try_from_secs_f64(scaled)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Client settings. Start from [`ClientConfig::default`]:
///
/// ```
/// use tickcast::client::{ClientConfig, Reconnect};
/// let config = ClientConfig {
///     name: Some("alice".into()),
///     redundant: true,
///     reconnect: Reconnect { max_attempts: Some(20), ..Reconnect::default() },
///     ..ClientConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name to take (and take back after every reconnect) (default:
    /// none, keep the server's `guest-ID`).
    pub name: Option<String>,
    /// The server's token, sent with `/auth` on every connection (default: none).
    pub token: Option<String>,
    /// What to do when a connection is lost.
    pub reconnect: Reconnect,
    /// Keep two connections; the event stream merges them, so losing
    /// either loses nothing (default: false). Given several addresses,
    /// the two are on two different ones whenever two answer.
    pub redundant: bool,
    /// How long [`Client::list`](super::Client::list) and the other
    /// request calls wait for their answer (default: 5 s).
    pub request_timeout: Duration,
    /// How long one TCP connect may take (default: 5 s). A round over
    /// several addresses may spend this on each one that does not answer.
    pub connect_timeout: Duration,
    /// How long one write to the server may block (default: 5 s).
    pub write_timeout: Duration,
    /// Silence after which the connection is presumed dead: `/ping` after
    /// half of it, reconnect after all of it (default: 30 s; `None`: never).
    pub keepalive: Option<Duration>,
    /// Longest server line accepted (default: 1 MiB).
    pub max_line: usize,
    /// Largest `DATA` payload accepted (default: 64 MiB).
    pub max_payload: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            name: None,
            token: None,
            reconnect: Reconnect::default(),
            redundant: false,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(30)),
            max_line: 1024 * 1024,
            max_payload: 64 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let r = Reconnect::default();
        assert_eq!(r.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(r.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(r.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(r.delay(30, 0.0), Duration::from_secs(5));
        assert_eq!(r.delay(u32::MAX, 0.0), Duration::from_secs(5));
        // Jitter takes off up to half.
        assert_eq!(r.delay(2, 0.999_999).as_millis(), 100);
        let none = Reconnect {
            jitter: 0.0,
            ..Reconnect::default()
        };
        assert_eq!(none.delay(2, 0.7), Duration::from_millis(200));
    }

    #[test]
    fn odd_settings_never_panic() {
        let r = Reconnect::default();
        for odd in [
            Reconnect {
                jitter: f64::NAN,
                ..r.clone()
            },
            Reconnect {
                multiplier: f64::NAN,
                ..r.clone()
            },
            Reconnect {
                max_delay: Duration::MAX,
                ..r.clone()
            },
            Reconnect {
                initial_delay: Duration::MAX,
                max_delay: Duration::MAX,
                ..r.clone()
            },
        ] {
            for attempt in [1, 2, 64, u32::MAX] {
                assert!(odd.delay(attempt, 0.5) <= odd.max_delay);
            }
        }
    }
}
