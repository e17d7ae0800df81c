//! Server settings: one plain struct whose fields are the `tickcast serve`
//! options, with the contract's defaults.

use crate::protocol::validate_text;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the periodic tick's text function is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickInfo {
    /// How many clients are listed (joined) right now.
    pub clients: usize,
    /// The SEQ this `TICK` will have.
    pub seq: u64,
}

/// Makes the text of each periodic `TICK`. It runs on the broadcaster
/// thread, so it should be quick. Control characters in what it returns
/// are replaced with spaces (a line must stay one line).
pub type TickText = Arc<dyn Fn(TickInfo) -> String + Send + Sync>;

/// Server settings. Start from [`Config::default`] and change what you
/// need:
///
/// ```
/// use std::time::Duration;
/// let config = tickcast::server::Config {
///     bind: "127.0.0.1:0".parse().unwrap(),
///     tick: Some(Duration::from_secs(1)),
///     max_clients: 100,
///     ..Default::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct Config {
    /// Where to listen (`--bind`, default `127.0.0.1:7878`). Ignored by
    /// [`spawn_on`](super::spawn_on).
    pub bind: SocketAddr,
    /// Period of the broadcaster's own `TICK` (`--tick-ms`, default 5 s;
    /// `None` = off).
    pub tick: Option<Duration>,
    /// Text of each periodic `TICK`; `None` uses a default that says how
    /// many clients are connected.
    pub tick_text: Option<TickText>,
    /// Connections at once, authenticated or not (`--max-clients`,
    /// default 1024). One more gets `BYE server-full`.
    pub max_clients: usize,
    /// Longest line a client may send, in bytes, LF and a CR before it
    /// excluded (`--max-line`, default 4096).
    pub max_line: usize,
    /// Largest `/send` payload in bytes (`--max-payload`, default 1 MiB).
    pub max_payload: u64,
    /// How far behind one client may fall, in time (`--write-timeout-ms`,
    /// default 2000 ms): a client whose oldest unsent byte is older than
    /// this is dropped as `slow-consumer`.
    pub write_timeout: Duration,
    /// How far behind one client may fall, in bytes (`--max-pending`,
    /// default 8 MiB): a client with more unsent bytes queued for it is
    /// dropped as `slow-consumer`.
    pub max_pending: usize,
    /// Bytes of `/send` payloads the whole server holds at once, while
    /// they arrive and until the broadcaster has published them
    /// (`--max-memory`, default 64 MiB). When it is used up, senders wait
    /// (their sockets are not read) for a moment, then get
    /// `ERR rate-limited` and their payload is skipped.
    pub max_memory: usize,
    /// How long a client may take to finish a line or a payload it has
    /// started (`--line-timeout`, default 30 s; a payload gets one more
    /// second per 64 KiB). Past it, `BYE timeout`. `None` = no limit.
    pub line_timeout: Option<Duration>,
    /// Silence after which a client is dropped (`--idle-timeout`, default
    /// off). It is sent `PING` after half of it.
    pub idle_timeout: Option<Duration>,
    /// Lines per second a client may send, with a burst of twice as many
    /// (`--max-rate`, default off).
    pub max_rate: Option<u32>,
    /// Connections from one IP address (`--max-per-ip`, default off).
    pub max_per_ip: Option<usize>,
    /// Broadcast events kept for `/resume` (`--history`, default 1024).
    pub history: usize,
    /// Bytes of broadcast events kept for `/resume` (`--history-bytes`,
    /// default 64 MiB).
    pub history_bytes: usize,
    /// When set, clients must `/auth` with this token before anything else
    /// (`--token` or `TICKCAST_TOKEN`).
    pub token: Option<String>,
    /// Capacity of the [`ServerEvent`](super::ServerEvent) channel. When
    /// the embedding program does not keep up, further events are dropped
    /// (and counted) rather than stalling the server.
    pub event_capacity: usize,
    /// Whether chat lines and payloads are reported as events too (the
    /// CLI only logs connections and turns this off).
    pub message_events: bool,
    /// Where to serve HTTP (`--http`, default none): the web page, the
    /// SSE stream, `/notify`, `/stats`, `/metrics`.
    pub http: Option<SocketAddr>,
    /// Other web origins allowed to use the HTTP endpoints from a browser
    /// (`--http-origin`, repeatable), besides the server's own.
    pub http_origins: Vec<String>,
    /// Serve one room together with other nodes, through Redis (`--redis`,
    /// `--room`; see docs/CLUSTER.md). Needs the cargo feature `redis`.
    pub cluster: Option<ClusterConfig>,
}

/// Where a cluster node's room is: a Redis server, and the room's name in
/// it. Nodes with the same two are one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `--redis`, like `redis://127.0.0.1:6379/0`.
    pub redis: String,
    /// `--room`: 1 to 64 of `A-Z a-z 0-9 _ - .` (default `tickcast`).
    pub room: String,
}

impl ClusterConfig {
    /// The default `--room`.
    pub const DEFAULT_ROOM: &'static str = "tickcast";
}

impl Config {
    /// The default port.
    pub const DEFAULT_PORT: u16 = 7878;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], Config::DEFAULT_PORT)),
            tick: Some(Duration::from_millis(5000)),
            tick_text: None,
            max_clients: 1024,
            max_line: 4096,
            max_payload: 1024 * 1024,
            write_timeout: Duration::from_millis(2000),
            max_pending: 8 * 1024 * 1024,
            max_memory: 64 * 1024 * 1024,
            line_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            max_rate: None,
            max_per_ip: None,
            history: 1024,
            history_bytes: 64 * 1024 * 1024,
            token: None,
            event_capacity: 1024,
            message_events: true,
            http: None,
            http_origins: Vec::new(),
            cluster: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("tick", &self.tick)
            .field("tick_text", &self.tick_text.as_ref().map(|_| "<fn>"))
            .field("max_clients", &self.max_clients)
            .field("max_line", &self.max_line)
            .field("max_payload", &self.max_payload)
            .field("write_timeout", &self.write_timeout)
            .field("max_pending", &self.max_pending)
            .field("max_memory", &self.max_memory)
            .field("line_timeout", &self.line_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_rate", &self.max_rate)
            .field("max_per_ip", &self.max_per_ip)
            .field("history", &self.history)
            .field("history_bytes", &self.history_bytes)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("event_capacity", &self.event_capacity)
            .field("message_events", &self.message_events)
            .field("http", &self.http)
            .field("http_origins", &self.http_origins)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A setting the server cannot work with: which option, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The `tickcast serve` option (the [`Config`] field's name on the
    /// command line), such as `--max-pending`.
    pub option: &'static str,
    /// What is wrong with it, in words.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |option, problem: &str| {
            Err(ConfigError {
                option,
                problem: problem.to_string(),
            })
        };
        let room_chars = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        if self.room.is_empty() || self.room.len() > 64 || !self.room.bytes().all(room_chars) {
            return fail(
                "--room",
                "must be 1 to 64 of A-Z a-z 0-9 _ - . (for example --room office)",
            );
        }
        if !self.redis.starts_with("redis://") && !self.redis.starts_with("redis+unix://") {
            return fail(
                "--redis",
                "must be a Redis URL, like redis://127.0.0.1:6379/0",
            );
        }
        if !cfg!(feature = "redis") {
            return fail(
                "--redis",
                "this tickcast was built without the `redis` feature; build it with \
                 `cargo build --release --features redis`",
            );
        }
        Ok(())
    }
}

impl Config {
    /// Checks the settings for values the server cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |option, problem: &str| {
            Err(ConfigError {
                option,
                problem: problem.to_string(),
            })
        };
        if self.write_timeout.is_zero() {
            return fail("--write-timeout-ms", "must be at least 1 ms");
        }
        if (self.max_pending as u64) < self.max_payload + 64 {
            let problem = format!(
                "{} is less than --max-payload ({}): a client must be able to fall behind \
                 by one whole payload",
                self.max_pending, self.max_payload
            );
            return fail("--max-pending", &problem);
        }
        if (self.max_memory as u64) < self.max_payload {
            let problem = format!(
                "{} is less than --max-payload ({}): one payload must fit",
                self.max_memory, self.max_payload
            );
            return fail("--max-memory", &problem);
        }
        if self.line_timeout.is_some_and(|d| d.is_zero()) {
            return fail("--line-timeout", "must be positive (None turns it off)");
        }
        if self
            .idle_timeout
            .is_some_and(|d| d < Duration::from_millis(2))
        {
            return fail("--idle-timeout", "must be at least 2 ms");
        }
        if self.tick.is_some_and(|d| d.is_zero()) {
            return fail("--tick-ms", "must be positive (None turns it off)");
        }
        if self.max_line == 0 {
            return fail("--max-line", "must be at least 1 byte");
        }
        if self.max_rate == Some(0) {
            return fail("--max-rate", "must be at least 1 line per second");
        }
        if self.max_per_ip == Some(0) {
            return fail("--max-per-ip", "must be at least 1");
        }
        if self.max_clients == 0 {
            return fail("--max-clients", "must be at least 1");
        }
        if self.event_capacity == 0 {
            return fail("event_capacity", "must be at least 1");
        }
        if let Some(token) = &self.token
            && (token.is_empty() || token.contains(' ') || validate_text(token).is_err())
        {
            return fail("--token", "must be one word of printable characters");
        }
        if let Some(cluster) = &self.cluster {
            return cluster.validate();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_room(redis: &str, room: &str) -> Config {
        Config {
            cluster: Some(ClusterConfig {
                redis: redis.to_string(),
                room: room.to_string(),
            }),
            ..Config::default()
        }
    }

    #[test]
    fn a_room_name_is_1_to_64_safe_characters() {
        let url = "redis://127.0.0.1:6379/0";
        for good in ["office", "a", "A-z_0.9", &"r".repeat(64)] {
            assert_eq!(with_room(url, good).validate(), Ok(()), "{good:?}");
        }
        for bad in ["", "bad room", "a/b", "a:b", "café", "{x}", &"r".repeat(65)] {
            let error = with_room(url, bad).validate().unwrap_err();
            assert_eq!(error.option, "--room", "{bad:?}");
        }
    }

    #[test]
    fn redis_must_be_a_redis_url() {
        let error = with_room("127.0.0.1:6379", "office")
            .validate()
            .unwrap_err();
        assert_eq!(error.option, "--redis");
        assert!(error.problem.contains("redis://"), "{}", error.problem);
    }
}
