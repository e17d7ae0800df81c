//! Session keys: what a `/resume SEQ KEY` (or a stream's `key=`) can find.
//!
//! Every connection is welcomed with a secret KEY. Presenting it later,
//! from a new connection, takes the old connection's name back: from a
//! member whose connection is still open (it is then replaced), or from
//! one that has left, for a while. A key is used up by its first use.
//! The broadcaster owns these maps (no lock); this type keeps the rules in
//! one place, testable without sockets.

use super::ClientId;
use std::collections::{HashMap, VecDeque};

/// Whom a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyHolder {
    /// A member whose connection is open.
    Member(ClientId),
    /// A connection that has left, with the name it had (now used up).
    Departed(String),
}

/// The session keys the broadcaster knows; see the module docs.
#[derive(Debug)]
pub(crate) struct SessionKeys {
    /// Keys of the members.
    live: HashMap<String, ClientId>,
    /// Keys of connections that have left, with their last name.
    departed: HashMap<String, String>,
    /// `(SEQ of the LEAVE, key)`, oldest first, to forget departed keys.
    order: VecDeque<(u64, String)>,
    /// How many newer events a departed key outlives (`--history`).
    keep: u64,
}

impl SessionKeys {
    /// Departed keys are forgotten once `keep` newer events have passed.
    pub(crate) fn new(keep: usize) -> Self {
        SessionKeys {
            live: HashMap::new(),
            departed: HashMap::new(),
            order: VecDeque::new(),
            keep: keep as u64,
        }
    }

    /// A member joined with `key`.
    pub(crate) fn joined(&mut self, key: &str, id: ClientId) {
        self.live.insert(key.to_string(), id);
    }

    /// A member left. With `remembered`, its key gives `name` back to a
    /// later connection until `keep` events after the LEAVE at `seq`.
    pub(crate) fn left(&mut self, key: &str, remembered: Option<(u64, &str)>) {
        self.live.remove(key);
        if let Some((seq, name)) = remembered {
            self.departed.insert(key.to_string(), name.to_string());
            self.order.push_back((seq, key.to_string()));
        }
    }

    /// Forgets departed keys that `keep` events have passed since.
    pub(crate) fn forget_older(&mut self, newest: u64) {
        while let Some(&(seq, _)) = self.order.front() {
            if newest.saturating_sub(seq) < self.keep {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.departed.remove(&key);
            }
        }
    }

    /// Whom `key` belongs to. A departed key is used up by this.
    pub(crate) fn find(&mut self, key: &str) -> Option<KeyHolder> {
        if let Some(&id) = self.live.get(key) {
            return Some(KeyHolder::Member(id));
        }
        self.departed.remove(key).map(KeyHolder::Departed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_finds_its_member_then_its_name_once() {
        let mut keys = SessionKeys::new(10);
        keys.joined("k1", ClientId(1));
        assert_eq!(keys.find("k1"), Some(KeyHolder::Member(ClientId(1))));
        keys.left("k1", Some((5, "alice")));
        assert_eq!(keys.find("k1"), Some(KeyHolder::Departed("alice".into())));
        assert_eq!(keys.find("k1"), None, "used up");
        assert_eq!(keys.find("nobody"), None);
    }

    #[test]
    fn a_replaced_members_key_is_not_remembered() {
        let mut keys = SessionKeys::new(10);
        keys.joined("k1", ClientId(1));
        keys.left("k1", None);
        assert_eq!(keys.find("k1"), None);
    }

    #[test]
    fn departed_keys_are_forgotten_after_keep_newer_events() {
        let mut keys = SessionKeys::new(10);
        keys.joined("a", ClientId(1));
        keys.joined("b", ClientId(2));
        keys.left("a", Some((5, "alice")));
        keys.left("b", Some((8, "bob")));
        keys.forget_older(14);
        assert!(keys.departed.contains_key("a"), "9 newer events: kept");
        keys.forget_older(15);
        assert_eq!(keys.find("a"), None, "10 newer events: forgotten");
        assert_eq!(keys.find("b"), Some(KeyHolder::Departed("bob".into())));
    }
}
