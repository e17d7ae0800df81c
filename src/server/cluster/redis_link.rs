//! One connection to Redis, and the one way this node changes the room:
//! a call of the room's Lua script (`room.lua`).
//!
//! The sync `redis` crate speaks the protocol; this adds what a node
//! needs around it: timeouts on every read and write (a paused Redis must
//! not hang a thread), the script loaded once per connection (then called
//! by its SHA1), and Redis's clock, so that each call can carry a
//! deadline Redis itself checks (see the module docs of `cluster`).

use super::entry::Snapshot;
use crate::server::config::ClusterConfig;
use redis::{Cmd, RedisResult, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The room's script.
const SCRIPT: &str = include_str!("room.lua");

/// How long a call may take in Redis before it does nothing: Redis checks
/// this deadline itself, in its own clock.
pub(crate) const CALL_BUDGET: Duration = Duration::from_secs(2);

/// How long this node waits for an answer: the budget, and a margin for
/// the difference between the two clocks. When it gives up, the call can
/// no longer take effect.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_millis(2500);

/// Where a node's room is, and who the node is.
#[derive(Clone)]
pub(crate) struct Target {
    client: Option<redis::Client>,
    url: String,
    /// `tickcast:{ROOM}:`, the prefix of every key of the room.
    prefix: String,
    node: String,
    /// `--history` and `--history-bytes`: what the log keeps.
    history: usize,
    history_bytes: usize,
}

impl Target {
    pub(crate) fn new(
        config: &ClusterConfig,
        node: &str,
        (history, history_bytes): (usize, usize),
    ) -> Self {
        Target {
            client: redis::Client::open(config.redis.as_str()).ok(),
            url: config.redis.clone(),
            prefix: format!("tickcast:{{{}}}:", config.room),
            node: node.to_string(),
            history,
            history_bytes,
        }
    }

    /// The Redis URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The key of the room called `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// A live connection to Redis with the room's script loaded.
pub(crate) struct RedisLink {
    con: redis::Connection,
    target: Target,
    sha: String,
    /// Redis's clock minus ours, in ms.
    offset_ms: i64,
}

impl RedisLink {
    /// One attempt to connect (at most one second to connect, and
    /// [`READ_TIMEOUT`] for each answer).
    pub(crate) fn connect(target: &Target) -> RedisResult<RedisLink> {
        RedisLink::connect_within(target, READ_TIMEOUT)
    }

    /// One attempt to connect, each step bounded by `limit`.
    fn connect_within(target: &Target, limit: Duration) -> RedisResult<RedisLink> {
        let Some(client) = &target.client else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Redis URL",
                target.url.clone(),
            )));
        };
        let limit = limit.max(Duration::from_millis(10));
        let mut con = client.get_connection_with_timeout(limit.min(Duration::from_secs(1)))?;
        con.set_read_timeout(Some(limit.min(READ_TIMEOUT)))?;
        con.set_write_timeout(Some(limit.min(READ_TIMEOUT)))?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query(&mut con)?;
        let offset_ms = clock_offset(&mut con)?;
        con.set_read_timeout(Some(READ_TIMEOUT))?;
        con.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(RedisLink {
            con,
            target: target.clone(),
            sha,
            offset_ms,
        })
    }

    /// Tries to connect until `deadline` (no attempt outlives it).
    pub(crate) fn connect_until(target: &Target, deadline: Instant) -> RedisResult<RedisLink> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match RedisLink::connect_within(target, left) {
                Ok(link) => return Ok(link),
                Err(e) if Instant::now() + Duration::from_millis(250) >= deadline => {
                    return Err(e);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The connection, for a plain command.
    pub(crate) fn connection(&mut self) -> &mut redis::Connection {
        &mut self.con
    }

    /// The script call for `op` under `epoch`, with a deadline
    /// [`CALL_BUDGET`] from now in Redis's clock.
    pub(crate) fn script(&self, op: &str, epoch: &str, args: &[&[u8]]) -> Cmd {
        let deadline = now_ms() + self.offset_ms + CALL_BUDGET.as_millis() as i64;
        self.script_until(op, epoch, deadline, args)
    }

    /// The script call for `op`, which does nothing if Redis runs it after
    /// `deadline` (ms, Redis's clock; 0 for never).
    fn script_until(&self, op: &str, epoch: &str, deadline: i64, args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha)
            .arg(1)
            .arg(&self.target.prefix)
            .arg(op)
            .arg(epoch)
            .arg(deadline)
            .arg(&self.target.node)
            .arg(self.target.history)
            .arg(self.target.history_bytes);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// Runs several calls in one round trip, in order; one answer each.
    pub(crate) fn run(&mut self, calls: &[Cmd]) -> RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.add_command(call.clone());
        }
        pipe.query(&mut self.con)
    }

    /// The room as it is now (see `OPS.start` in the script). A new room
    /// gets a new EPOCH.
    pub(crate) fn start(&mut self) -> RedisResult<Snapshot> {
        let mut fresh = [0u8; 8];
        getrandom::fill(&mut fresh).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "no randomness", e.to_string()))
        })?;
        let fresh = crate::protocol::to_hex(&fresh);
        // No deadline: starting twice does no harm.
        let call = self.script_until("start", "", 0, &[fresh.as_bytes()]);
        let answer: Value = call.query(&mut self.con)?;
        Snapshot::parse(&answer).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected answer to start"))
        })
    }

    /// `XREAD`: entries after `log` in the log and after `ctl` in the
    /// direct messages, waiting up to `block` for some.
    pub(crate) fn read(&mut self, log: &str, ctl: &str, block: Duration) -> RedisResult<Value> {
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.target.key("log"))
            .arg(self.target.key("ctl"))
            .arg(log)
            .arg(ctl)
            .query(&mut self.con)
    }
}

/// Redis's clock minus ours, in ms, measured with `TIME` (off by at most
/// half a round trip, which the margin in [`READ_TIMEOUT`] covers).
fn clock_offset(con: &mut redis::Connection) -> RedisResult<i64> {
    let before = now_ms();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(con)?;
    let after = now_ms();
    Ok(secs * 1000 + micros / 1000 - (before + after) / 2)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A Redis error in words an operator can act on.
pub(crate) fn in_words(e: &redis::RedisError) -> String {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    let io = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    if matches!(io, Some(TimedOut | WouldBlock)) || e.is_timeout() {
        format!(
            "no answer within {} s (is Redis paused, overloaded or far away?)",
            READ_TIMEOUT.as_secs_f64()
        )
    } else if e.is_connection_refusal() {
        "connection refused (is redis-server running there?)".to_string()
    } else if e.is_connection_dropped() {
        format!("Redis closed the connection ({e})")
    } else if e.kind() == redis::ErrorKind::Parse {
        "what answered is not Redis (wrong port?)".to_string()
    } else {
        e.to_string()
    }
}
