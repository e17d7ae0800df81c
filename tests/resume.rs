//! `/resume`: replay from the history, gaps, and taking a name back with
//! a session key.

mod support;

use std::collections::BTreeMap;
use support::{Event, Raw, config, joined, named, start};
use tickcast::server::Config;

/// Sends `/resume ARGS` and collects everything up to `OK resume LAST`:
/// the replies before it and the events (replayed and live) by SEQ.
fn resume(c: &mut Raw, args: &str) -> (Vec<String>, BTreeMap<u64, Event>, u64) {
    c.line(&format!("/resume {args}"));
    let mut replies = Vec::new();
    let last = loop {
        let reply = c.reply();
        if let Some(last) = reply.strip_prefix("OK resume ") {
            break last.parse::<u64>().unwrap();
        }
        replies.push(reply);
    };
    let mut events = BTreeMap::new();
    // Every event up to LAST has been written before the OK.
    while let Some(e) = c.pending_events().front().cloned() {
        c.event();
        events.insert(e.seq(), e);
    }
    (replies, events, last)
}

#[test]
fn replays_the_events_after_seq_in_order() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.line("one");
    a.line("two");
    a.line("three");
    let one = a.event();
    let two = a.event();
    let three = a.event();

    let mut b = joined(server.local_addr());
    let (replies, events, last) = resume(&mut b, &one.seq().to_string());
    assert!(replies.is_empty(), "{replies:?}");
    // Replayed: the same bytes a got live, from `two` to b's own JOIN.
    assert_eq!(events.get(&two.seq()), Some(&two));
    assert_eq!(events.get(&three.seq()), Some(&three));
    assert_eq!(last, three.seq() + 1, "b's JOIN is the newest event");
    assert!(events[&last].line.starts_with("JOIN "));
    // Resuming at the newest event replays nothing.
    let (replies, events, last2) = resume(&mut b, &last.to_string());
    assert!(replies.is_empty() && events.is_empty());
    assert_eq!(last2, last);
}

#[test]
fn seq_newer_than_the_newest_is_bad_args() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.line("/resume 999");
    assert!(a.reply().starts_with("ERR bad-args "));
    a.line("/resume x");
    assert!(a.reply().starts_with("ERR bad-args "));
    a.assert_quiet("nothing-replayed");
}

#[test]
fn a_gap_is_reported_before_what_is_left() {
    let server = start(Config {
        history: 3,
        ..config()
    });
    let mut a = joined(server.local_addr());
    for n in 0..6 {
        a.line(&format!("m{n}"));
    }
    let mut newest = 0;
    for _ in 0..6 {
        newest = a.event().seq();
    }
    let (replies, events, last) = resume(&mut a, "0");
    let oldest = newest - 2;
    assert_eq!(replies, vec![format!("ERR resume-gap {oldest}")]);
    assert_eq!(
        events.keys().copied().collect::<Vec<_>>(),
        vec![oldest, oldest + 1, newest]
    );
    assert_eq!(last, newest);
}

#[test]
fn a_key_takes_over_a_live_connection() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut old = named(server.local_addr(), "alice");
    let key = old.welcome().key.clone();
    let since = watcher.event_starting("NICK ").seq();

    let mut new = joined(server.local_addr());
    let new_guest = new.name().to_string();
    let (replies, events, _) = resume(&mut new, &format!("{since} {key}"));
    assert!(replies.is_empty(), "{replies:?}");

    // The old connection is told and closed.
    let (old_replies, _) = old.until_closed();
    assert_eq!(old_replies.last().map(String::as_str), Some("BYE replaced"));
    // Everyone sees LEAVE … replaced, then the new connection renamed.
    watcher.event_starting("JOIN ");
    let leave = watcher.event();
    assert_eq!(leave.line, format!("LEAVE {} alice replaced", leave.seq()));
    let nick = watcher.event();
    assert_eq!(
        nick.line,
        format!("NICK {} {new_guest} alice", leave.seq() + 1)
    );
    assert_eq!(
        events.get(&nick.seq()),
        Some(&nick),
        "the replay covers the takeover"
    );
    new.line("/list");
    let users = new.reply();
    assert!(
        users.contains(" alice") && !users.contains(&new_guest),
        "{users}"
    );

    // The key is used up.
    let mut third = joined(server.local_addr());
    third.line(&format!("/resume 0 {key}"));
    assert!(third.reply().starts_with("ERR bad-key "));
}

#[test]
fn a_key_of_a_closed_connection_gives_the_name_back() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let old = named(server.local_addr(), "bob");
    let key = old.welcome().key.clone();
    drop(old);
    let leave = watcher.event_starting("LEAVE ");
    assert!(leave.line.ends_with(" bob closed"));

    let mut new = joined(server.local_addr());
    let guest = new.name().to_string();
    let (replies, events, _) = resume(&mut new, &format!("{} {key}", leave.seq()));
    assert!(replies.is_empty(), "{replies:?}");
    let nick = watcher.event_starting("NICK ");
    assert_eq!(nick.line, format!("NICK {} {guest} bob", nick.seq()));
    assert!(events.contains_key(&nick.seq()));
}

#[test]
fn a_taken_name_is_an_error_and_the_replay_goes_on() {
    let server = start(config());
    let old = named(server.local_addr(), "carol");
    let key = old.welcome().key.clone();
    let mut thief = joined(server.local_addr());
    drop(old);
    // Once carol is gone, somebody else takes the name.
    thief.event_starting("LEAVE ");
    thief.line("/nick Carol");
    assert_eq!(thief.reply(), "OK nick Carol");

    let mut new = joined(server.local_addr());
    let (replies, events, last) = resume(&mut new, &format!("0 {key}"));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("ERR nick-taken "), "{replies:?}");
    assert_eq!(events.keys().next(), Some(&1), "the replay went on");
    assert_eq!(*events.keys().last().unwrap(), last);
}

#[test]
fn an_unknown_key_replays_nothing() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.line("/resume 0 00112233445566778899aabbccddeeff");
    assert!(a.reply().starts_with("ERR bad-key "));
    a.assert_quiet("no-replay");
}

#[test]
fn a_guest_name_is_not_carried_over() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let old = joined(server.local_addr());
    let key = old.welcome().key.clone();
    drop(old);
    watcher.event_starting("LEAVE ");
    let mut new = joined(server.local_addr());
    let guest = new.name().to_string();
    let (replies, _, _) = resume(&mut new, &format!("0 {key}"));
    assert!(replies.is_empty(), "{replies:?}");
    new.line("/list");
    assert!(new.reply().ends_with(&guest));
}

#[test]
fn departed_keys_are_forgotten_after_history_events() {
    let server = start(Config {
        history: 4,
        ..config()
    });
    let mut watcher = joined(server.local_addr());
    let old = named(server.local_addr(), "dave");
    let key = old.welcome().key.clone();
    drop(old);
    watcher.event_starting("LEAVE ");
    for n in 0..4 {
        watcher.line(&format!("filler {n}"));
        watcher.event_starting("MSG ");
    }
    let mut new = joined(server.local_addr());
    new.line(&format!("/resume 0 {key}"));
    assert!(new.reply().starts_with("ERR bad-key "));
}
