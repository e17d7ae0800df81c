//! Catching up: `/resume SEQ [KEY]`, an event stream's start (`key=`,
//! `name=`, `since=`), and what a session KEY takes over.
//!
//! This is the broadcaster's (it owns the history, the members and the
//! keys, so a replay and the live events meet exactly), in a file of its
//! own: the rest of the broadcaster is the live path, this is the path
//! back in time. A replay is the events after the asked SEQ that the
//! history still holds; when it no longer reaches back that far, the
//! client is told where it starts (`ERR resume-gap OLDEST`, or an SSE
//! `event: gap`).

use super::*;

impl Broadcaster {
    pub(super) fn resume(&mut self, conn: &Conn, after: u64, key: Option<String>) -> ResumeResult {
        self.check_resume_point(after)?;
        let nick_taken = match key {
            Some(key) => self.use_key(conn, &key)?,
            None => None,
        };
        Ok(self.replay(after, nick_taken))
    }

    /// The events after `after` that the history holds.
    pub(super) fn replay(&self, after: u64, nick_taken: Option<String>) -> Replay {
        let oldest = self.history.oldest();
        let gap = (after + 1 < oldest).then_some(oldest);
        let events: Vec<Bytes> = self.history.after(after).map(|(_, e)| e.clone()).collect();
        let last = if events.is_empty() {
            after
        } else {
            self.history.newest()
        };
        self.shared.counters.count_resume(gap.is_some());
        Replay {
            nick_taken,
            gap,
            events,
            last,
        }
    }

    /// A replay can start after any SEQ up to the newest event.
    fn check_resume_point(&self, after: u64) -> Result<(), (ErrorCode, String)> {
        let newest = self.history.newest();
        if after > newest {
            let text = format!("SEQ {after} is newer than the newest event {newest}");
            return Err((ErrorCode::BadArgs, text));
        }
        Ok(())
    }

    /// An event stream joined (its `JOIN` is in the batch): takes over the
    /// name its `key=` names, takes its `name=`, and replays what it asked
    /// for with `since=`. Errors go to the stream as `event: err`.
    pub(super) fn start_stream(&mut self, conn: &Arc<Conn>, start: StreamStart) {
        let mut replies = Vec::new();
        let mut err = |code: ErrorCode, text: &str| {
            ServerLine::Err { code, text }.encode(&mut replies);
        };
        if let Some(key) = start.key {
            match self.use_key(conn, &key) {
                Ok(Some(name)) => err(ErrorCode::NickTaken, &format!("{name} is taken")),
                Ok(None) => {}
                Err((code, text)) => err(code, &text),
            }
        }
        let still_guest = self
            .members
            .get(&conn.id)
            .is_some_and(|m| is_guest_name(&m.name));
        if let Some(name) = start.name.filter(|_| still_guest) {
            match self.shared.registry.rename(conn.id, &name) {
                Ok(Some(_)) => self.announce_rename(conn.id, name),
                Ok(None) => {}
                Err(NickError::Taken) => err(ErrorCode::NickTaken, &format!("{name} is taken")),
                Err(NickError::Invalid(why)) => err(ErrorCode::NickInvalid, &why),
            }
        }
        let mut chunks = Vec::new();
        if !replies.is_empty() {
            chunks.push(conn.wire.replies(&replies));
        }
        if let Some(after) = start.since {
            chunks.extend(self.replay_for_stream(conn, after));
        }
        if !chunks.is_empty()
            && let Err(e) = conn.send(&chunks)
        {
            self.shared.drop_client(conn, e.reason());
        }
    }

    /// The events after `after`, framed for `conn`, and from now on only
    /// live events newer than them. At most half of `--max-pending` is
    /// replayed (the newest events): what does not fit is reported as a
    /// gap, like events the history no longer holds.
    pub(super) fn replay_for_stream(&mut self, conn: &Conn, after: u64) -> Vec<Bytes> {
        if let Err((code, text)) = self.check_resume_point(after) {
            let line = ServerLine::Err { code, text: &text }.to_line();
            return vec![conn.wire.replies(line.as_bytes())];
        }
        let newest = self.history.newest();
        let epoch = &*self.shared.epoch.get();
        let mut events: VecDeque<(u64, Bytes)> = VecDeque::new();
        let mut bytes = 0;
        for (seq, event) in self.history.after(after).rev() {
            let framed = conn.wire.broadcast(event, epoch);
            bytes += framed.len();
            if bytes > self.shared.config.max_pending / 2 {
                break;
            }
            events.push_front((*seq, framed));
        }
        let first = events.front().map_or(newest + 1, |&(seq, _)| seq);
        let gap = (after + 1 < first).then_some(first);
        self.shared.counters.count_resume(gap.is_some());
        if let Some(member) = self.members.get_mut(&conn.id) {
            // The batch's events are in the replay: none of them again.
            member.from_seq = newest + 1;
        }
        let gap = gap.map(|oldest| conn.wire.gap(oldest));
        gap.into_iter()
            .chain(events.into_iter().map(|(_, e)| e))
            .collect()
    }

    /// A `KEY` presented by `conn` (`/resume SEQ KEY`, `GET /events?key=`):
    /// takes over the name of the connection it belongs to. Returns the
    /// name it should have given back if someone else holds it now.
    fn use_key(&mut self, conn: &Conn, key: &str) -> Result<Option<String>, (ErrorCode, String)> {
        self.keys.forget_older(self.history.newest());
        if key == conn.key {
            return Ok(None);
        }
        let name = match self.keys.find(key) {
            Some(KeyHolder::Member(old)) => self.take_over(old),
            Some(KeyHolder::Departed(name)) => Some(name),
            None => return Err((ErrorCode::BadKey, "that key matches no connection".into())),
        };
        Ok(name.filter(|name| !self.rename_for_resume(conn.id, name)))
    }

    /// Closes a member's connection because a newer one presented its key
    /// (`BYE replaced`, then `LEAVE … replaced`). Returns the name it had.
    /// The key is used up: it is not remembered.
    fn take_over(&mut self, old: ClientId) -> Option<String> {
        let conn = Arc::clone(&self.members.get(&old)?.conn);
        let won = self.shared.registry.claim(&conn, Reason::Replaced).won();
        let (member, leave_seq) = self.depart_member(old, false)?;
        if won {
            // The old connection is probably dead: its session must not
            // wait for it, and the flusher resets it if it never drains.
            conn.stop_reading();
            self.send_off(&member, leave_seq, Reason::Replaced);
        }
        Some(member.name)
    }

    /// Gives a resuming member the name of the connection whose key it
    /// presented. `false` if someone else holds that name now.
    fn rename_for_resume(&mut self, id: ClientId, name: &str) -> bool {
        if is_guest_name(name) {
            // A guest name belongs to its own connection; the new one
            // keeps its own.
            return true;
        }
        match self.shared.registry.rename(id, name) {
            Ok(Some(_)) => {
                self.announce_rename(id, name.to_string());
                true
            }
            Ok(None) => true,
            Err(NickError::Taken) => false,
            // The resuming connection itself was closed meanwhile.
            Err(NickError::Invalid(_)) => true,
        }
    }
}
