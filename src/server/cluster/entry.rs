//! What the room's log holds, read back from Redis's answers.
//!
//! A log entry is one numbered event, written by the script (`room.lua`):
//! its id is `SEQ-0`, and its fields are `e` (the EPOCH), `l` (the event
//! exactly as clients get it, `JOIN 7 guest-7` + LF), `v` (its verb),
//! `m` (the client it is about) and `n` (that client's name afterwards).
//! A node delivers `l` as it is: every node sends the same bytes.

use crate::protocol::Reason;
use crate::server::event::ClientId;
use bytes::Bytes;
use redis::Value;
use std::collections::BTreeMap;

/// One numbered event of the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: u64,
    /// The EPOCH it was numbered under.
    pub epoch: String,
    /// The event as clients get it.
    pub line: Bytes,
    /// `JOIN`, `MSG`, `DATA`, `NICK`, `LEAVE` or `TICK`.
    pub verb: String,
    /// The client it is about (none for `TICK`).
    pub id: Option<ClientId>,
    /// That client's name after the event.
    pub name: String,
}

impl Entry {
    /// A `LEAVE`'s reason (its last word).
    pub(crate) fn leave_reason(&self) -> Option<Reason> {
        if self.verb != "LEAVE" {
            return None;
        }
        let line = std::str::from_utf8(&self.line).ok()?;
        line.trim_end().rsplit(' ').next()?.parse().ok()
    }

    /// Reads one stream entry: `[id, [field, value, ...]]`.
    pub(crate) fn parse(value: &Value) -> Option<Entry> {
        let (id, fields) = stream_entry(value)?;
        let seq = id.split('-').next()?.parse().ok()?;
        let get = |name: &str| field(fields, name);
        Some(Entry {
            seq,
            epoch: text(get("e")?)?,
            line: Bytes::from(bytes(get("l")?)?.to_vec()),
            verb: text(get("v")?)?,
            id: text(get("m")?)?.parse().ok().map(ClientId),
            name: text(get("n")?)?,
        })
    }
}

/// A direct message for a client of some node, from the `ctl` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dm {
    /// The stream id, to read on after it.
    pub stream_id: String,
    pub epoch: String,
    pub to: ClientId,
    /// `DM FROM TEXT` + LF.
    pub line: Vec<u8>,
}

impl Dm {
    pub(crate) fn parse(value: &Value) -> Option<Dm> {
        let (id, fields) = stream_entry(value)?;
        Some(Dm {
            stream_id: id,
            epoch: text(field(fields, "e")?)?,
            to: ClientId(text(field(fields, "to")?)?.parse().ok()?),
            line: bytes(field(fields, "l")?)?.to_vec(),
        })
    }
}

/// The room as a node finds it when it starts.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub epoch: String,
    /// The newest SEQ: the reader goes on after it.
    pub seq: u64,
    /// Who is in the room.
    pub roster: BTreeMap<ClientId, String>,
    /// The newest events the log holds, oldest first.
    pub recent: Vec<Entry>,
}

impl Snapshot {
    /// Reads the script's answer to `start`:
    /// `['ok', EPOCH, SEQ, [id, name, ...], [entry, ...] (newest first)]`.
    pub(crate) fn parse(value: &Value) -> Option<Snapshot> {
        let Value::Array(parts) = value else {
            return None;
        };
        let [ok, epoch, seq, who, recent] = parts.as_slice() else {
            return None;
        };
        if text(ok)? != "ok" {
            return None;
        }
        let Value::Array(who) = who else { return None };
        let roster = who
            .chunks(2)
            .filter_map(|pair| {
                let id = text(pair.first()?)?.parse().ok()?;
                Some((ClientId(id), text(pair.get(1)?)?))
            })
            .collect();
        let Value::Array(recent) = recent else {
            return None;
        };
        let mut recent: Vec<Entry> = recent.iter().filter_map(Entry::parse).collect();
        recent.reverse();
        Some(Snapshot {
            epoch: text(epoch)?,
            seq: number(seq)?,
            roster,
            recent,
        })
    }
}

/// What one `XREAD` brought: log entries and direct messages, in order.
#[derive(Debug, Default)]
pub(crate) struct ReadBatch {
    pub entries: Vec<Entry>,
    pub dms: Vec<Dm>,
}

impl ReadBatch {
    /// Reads an `XREAD` answer (nil when nothing came in time).
    /// `log_key` tells the log's stream from the direct messages'.
    pub(crate) fn parse(value: &Value, log_key: &str) -> Option<ReadBatch> {
        let mut batch = ReadBatch::default();
        let Value::Array(streams) = value else {
            return matches!(value, Value::Nil).then_some(batch);
        };
        for stream in streams {
            let Value::Array(pair) = stream else {
                return None;
            };
            let [key, entries] = pair.as_slice() else {
                return None;
            };
            let Value::Array(entries) = entries else {
                return None;
            };
            if text(key)? == log_key {
                batch.entries = entries.iter().map(Entry::parse).collect::<Option<_>>()?;
            } else {
                batch.dms = entries.iter().map(Dm::parse).collect::<Option<_>>()?;
            }
        }
        Some(batch)
    }
}

/// `[id, [field, value, ...]]`.
fn stream_entry(value: &Value) -> Option<(String, &[Value])> {
    let Value::Array(pair) = value else {
        return None;
    };
    let [id, fields] = pair.as_slice() else {
        return None;
    };
    let Value::Array(fields) = fields else {
        return None;
    };
    Some((text(id)?, fields))
}

fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a Value> {
    fields
        .chunks(2)
        .find(|pair| bytes(&pair[0]) == Some(name.as_bytes()))
        .and_then(|pair| pair.get(1))
}

pub(crate) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::Int(n) => Some(n.to_string()),
        other => String::from_utf8(bytes(other)?.to_vec()).ok(),
    }
}

pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(seq: u64, line: &str, verb: &str, id: &str, name: &str) -> Value {
        Value::Array(vec![
            bulk(&format!("{seq}-0")),
            Value::Array(
                ["e", "ab12", "l", line, "v", verb, "m", id, "n", name]
                    .map(bulk)
                    .to_vec(),
            ),
        ])
    }

    #[test]
    fn a_log_entry_gives_its_seq_line_and_subject() {
        let e = Entry::parse(&entry(7, "LEAVE 7 ann node-down\n", "LEAVE", "3", "ann")).unwrap();
        assert_eq!(
            (e.seq, e.id, e.name.as_str()),
            (7, Some(ClientId(3)), "ann")
        );
        assert_eq!(&e.line[..], b"LEAVE 7 ann node-down\n");
        assert_eq!(e.leave_reason(), Some(Reason::NodeDown));
        let tick = Entry::parse(&entry(8, "TICK 8 t x\n", "TICK", "", "")).unwrap();
        assert_eq!((tick.id, tick.leave_reason()), (None, None));
    }

    #[test]
    fn an_xread_answer_splits_into_events_and_direct_messages() {
        let dm = Value::Array(vec![
            bulk("5-1"),
            Value::Array(
                ["e", "ab12", "to", "4", "l", "DM ann hi\n"]
                    .map(bulk)
                    .to_vec(),
            ),
        ]);
        let answer = Value::Array(vec![
            Value::Array(vec![
                bulk("log"),
                Value::Array(vec![entry(1, "JOIN 1 guest-1\n", "JOIN", "1", "guest-1")]),
            ]),
            Value::Array(vec![bulk("ctl"), Value::Array(vec![dm])]),
        ]);
        let batch = ReadBatch::parse(&answer, "log").unwrap();
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.dms[0].to, ClientId(4));
        assert_eq!(batch.dms[0].stream_id, "5-1");
        assert!(
            ReadBatch::parse(&Value::Nil, "log")
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[test]
    fn a_snapshot_lists_the_room_and_its_newest_events_oldest_first() {
        let answer = Value::Array(vec![
            bulk("ok"),
            bulk("ab12"),
            Value::Int(2),
            Value::Array(["1", "ann", "2", "guest-2"].map(bulk).to_vec()),
            Value::Array(vec![
                entry(2, "JOIN 2 guest-2\n", "JOIN", "2", "guest-2"),
                entry(1, "JOIN 1 ann\n", "JOIN", "1", "ann"),
            ]),
        ]);
        let s = Snapshot::parse(&answer).unwrap();
        assert_eq!((s.epoch.as_str(), s.seq), ("ab12", 2));
        assert_eq!(s.roster[&ClientId(1)], "ann");
        assert_eq!(s.recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    }
}
