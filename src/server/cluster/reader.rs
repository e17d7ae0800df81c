//! The stream reader thread: follows the room's log and hands each
//! numbered event to this node's broadcaster, in SEQ order, with no gap.
//!
//! It blocks in `XREAD` on two streams at once: the log (the numbered
//! events) and `ctl` (direct messages for clients of any node; it
//! delivers those for its own clients itself, since they are not
//! broadcast). It remembers the last SEQ it handed over, so after Redis
//! comes back it goes on exactly from there.
//!
//! It also notices when the room it serves is gone: an entry of another
//! EPOCH, a SEQ that skips (the log was trimmed past what this node
//! delivered), or, when the log is quiet, a different EPOCH in Redis.
//! Then it reads the room afresh and hands the broadcaster a
//! [`RoomEvent::Reset`].

use super::entry::ReadBatch;
use super::redis_link::{RedisLink, Target};
use super::{RoomEvent, entry};
use crate::server::Shared;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// How long one `XREAD` waits for news: also how often the reader checks
/// that its room is still there, and that it should go on.
const BLOCK: Duration = Duration::from_millis(500);

pub(crate) struct Reader {
    shared: Arc<Shared>,
    link: Option<RedisLink>,
    target: Target,
    /// The last SEQ handed to the broadcaster.
    last_seq: u64,
    /// The stream id of the last direct message read.
    last_dm: String,
    events: Sender<RoomEvent>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        link: RedisLink,
        last_seq: u64,
        events: Sender<RoomEvent>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Reader {
            shared,
            target: link.target().clone(),
            link: Some(link),
            last_seq,
            last_dm: String::new(),
            events,
            stop,
        }
    }

    pub(crate) fn run(mut self) {
        let mut pause = Duration::from_millis(100);
        while !self.stop.load(Ordering::SeqCst) {
            if self.link.is_none() {
                match RedisLink::connect(&self.target) {
                    Ok(link) => {
                        self.link = Some(link);
                        pause = Duration::from_millis(100);
                    }
                    Err(_) => {
                        thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            if self.read_once().is_err() {
                self.link = None;
            }
        }
    }

    /// One `XREAD`, and what it brought handed on.
    fn read_once(&mut self) -> redis::RedisResult<()> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        if self.last_dm.is_empty() {
            self.last_dm = newest_id(link, "ctl")?;
        }
        let log = format!("{}-0", self.last_seq);
        let answer = link.read(&log, &self.last_dm, BLOCK)?;
        let log_key = link.target().key("log");
        let Some(batch) = ReadBatch::parse(&answer, &log_key) else {
            return Err(unexpected());
        };
        let epoch = self.shared.epoch.get();
        if batch.entries.is_empty() && batch.dms.is_empty() {
            let now: Option<String> = redis::cmd("GET")
                .arg(link.target().key("epoch"))
                .query(link.connection())?;
            if now.as_deref() != Some(&*epoch) {
                return self.restart();
            }
            return Ok(());
        }
        for dm in batch.dms {
            self.last_dm = dm.stream_id.clone();
            if dm.epoch == *epoch {
                self.deliver_dm(&dm);
            }
        }
        for entry in batch.entries {
            if entry.epoch != *epoch || entry.seq != self.last_seq + 1 {
                return self.restart();
            }
            self.last_seq = entry.seq;
            if self.events.send(RoomEvent::Logged(entry)).is_err() {
                self.stop.store(true, Ordering::SeqCst);
                break;
            }
        }
        Ok(())
    }

    /// A `DM` for one of this node's clients.
    fn deliver_dm(&self, dm: &entry::Dm) {
        if let Some((conn, _)) = self.shared.registry.get(dm.to)
            && let Err(e) = conn.send_line(&dm.line)
        {
            self.shared.drop_client(&conn, e.reason());
        }
    }

    /// The room this node served is gone: read it afresh, and start over.
    fn restart(&mut self) -> redis::RedisResult<()> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let snapshot = link.start()?;
        self.last_seq = snapshot.seq;
        self.last_dm = newest_id(link, "ctl")?;
        let _ = self.events.send(RoomEvent::Reset(snapshot));
        Ok(())
    }
}

/// The id of the newest entry of one of the room's streams (`0-0` if
/// it is empty), to read on after it.
fn newest_id(link: &mut RedisLink, stream: &str) -> redis::RedisResult<String> {
    let newest: redis::Value = redis::cmd("XREVRANGE")
        .arg(link.target().key(stream))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(link.connection())?;
    let id = match &newest {
        redis::Value::Array(entries) => entries.first().and_then(|e| match e {
            redis::Value::Array(pair) => pair.first().and_then(entry::text),
            _ => None,
        }),
        _ => None,
    };
    Ok(id.unwrap_or_else(|| "0-0".to_string()))
}

fn unexpected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected answer to XREAD"))
}
