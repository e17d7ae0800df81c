//! Several nodes, one room, through Redis: the promises of the cluster
//! contract (docs/CLUSTER.md), one test each, against the real binary.
//!
//! Every test starts its own `redis-server` (tests/support/redis.rs) on a
//! free loopback port and two or three `tickcast serve --redis URL --room
//! NAME` processes, and stops them all, so the tests run in parallel. They
//! need `redis-server` (Debian: `redis-server`) and are ignored without
//! `--ignored`; `scripts/test` installs it and runs them.
//!
//! Every wait is bounded. Where the contract gives a bound ("within 10 s"),
//! the test waits for that bound plus [`GRACE`], the allowance for a loaded
//! two-core machine, and prints how long it took.

mod support;

use crossbeam_channel::bounded;
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::process::{Serve, run_bounded};
use support::redis::{Redis, free_port};
use support::{Event, Raw, WAIT, events_until, named, parse_welcome};
use tickcast::client::{Client, ClientConfig, Event as ClientEvent};

const BIN: &str = env!("CARGO_BIN_EXE_tickcast");

// The contract's bounds.
/// A member is listed on every node within 3 s of its `JOIN`.
const LISTED_WITHIN: Duration = Duration::from_secs(3);
/// A node that lost Redis answers a line that needs it with
/// `ERR unavailable` within 10 s.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(10);
/// After Redis restarted empty, each node closes every connection welcomed
/// under the old EPOCH within 15 s.
const OLD_EPOCH_CLOSED_WITHIN: Duration = Duration::from_secs(15);
/// A dead node's members are announced `node-down` within 15 s.
const NODE_DOWN_WITHIN: Duration = Duration::from_secs(15);
/// A node that cannot reach Redis at start exits within 10 s.
const START_FAILS_WITHIN: Duration = Duration::from_secs(10);
/// What the tests allow on top of a contract bound, for a loaded machine:
/// scheduling, and the line's way to the test.
const GRACE: Duration = Duration::from_secs(1);

/// Starts a node of `room` on `redis`, on a free loopback port, without
/// the periodic tick unless `extra` sets `--tick-ms`.
fn node(redis: &Redis, room: &str, extra: &[&str]) -> Serve {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--room", room];
    args.extend_from_slice(extra);
    Serve::start(BIN, &[], &args)
}

/// A node's HTTP address, from its second stderr line (`--http`).
fn http_addr(serve: &Serve) -> SocketAddr {
    let line = serve
        .stderr
        .recv_timeout(WAIT)
        .expect("no second line on stderr");
    line.strip_prefix("tickcast http on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("second line was {line:?}"))
        .parse()
        .unwrap()
}

/// Connects, and takes the first event, which must be the client's own
/// `JOIN`; returns its SEQ too.
fn join(addr: SocketAddr) -> (Raw, u64) {
    let mut c = Raw::connect(addr);
    let e = c.event();
    assert_eq!(
        e.line,
        format!("JOIN {} {}", e.seq(), c.name()),
        "the first event is not the client's own JOIN"
    );
    (c, e.seq())
}

/// `MSG SEQ FROM TEXT` → (FROM, TEXT).
fn msg(e: &Event) -> Option<(&str, &str)> {
    let mut f = e.line.splitn(4, ' ');
    if f.next()? != "MSG" {
        return None;
    }
    f.next()?;
    Some((f.next()?, f.next()?))
}

/// Reads events into `seen` until the `MSG` with `text`; returns it.
fn until_msg(raw: &mut Raw, text: &str, seen: &mut Vec<Event>) -> Event {
    until_event(raw, seen, &format!("MSG {text:?}"), |e| {
        msg(e).is_some_and(|(_, t)| t == text)
    })
}

/// Reads events into `seen` until one that `want` accepts; returns it.
fn until_event(
    raw: &mut Raw,
    seen: &mut Vec<Event>,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = raw
            .try_event_within(left)
            .unwrap_or_else(|| panic!("no {what} within {WAIT:?}; seen: {seen:#?}"));
        seen.push(e.clone());
        if want(&e) {
            return e;
        }
    }
}

/// Asserts that `seen` holds consecutive SEQs, starting right after the
/// member's own `JOIN` at `join`.
fn assert_consecutive(who: &str, join: u64, seen: &[Event]) {
    let seqs: Vec<u64> = seen.iter().map(Event::seq).collect();
    let mut expected = join;
    for (e, seq) in seen.iter().zip(&seqs) {
        expected += 1;
        assert_eq!(
            *seq, expected,
            "{who} (JOIN {join}): a gap or a reorder at {:?}; SEQs: {seqs:?}",
            e.line
        );
    }
}

/// Sends `/list` and returns the names of the `USERS` reply.
fn list(raw: &mut Raw) -> Vec<String> {
    raw.line("/list");
    let reply = raw.reply();
    let mut words = reply.split(' ');
    assert_eq!(words.next(), Some("USERS"), "{reply:?}");
    let n: usize = words.next().unwrap().parse().unwrap();
    let names: Vec<String> = words.map(str::to_string).collect();
    assert_eq!(names.len(), n, "{reply:?}");
    names
}

/// Polls `/list` until `name` is (or, with `listed` false, is not) in it,
/// for at most `within`; returns how long that took.
fn wait_listed(raw: &mut Raw, name: &str, listed: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let names = list(raw);
        if names.iter().any(|n| n == name) == listed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{name} still {} the list after {within:?}: {names:?}",
            if listed { "missing from" } else { "in" }
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------
// The harness itself: works before the cluster does.

#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn harness_redis_server_and_node_processes() {
    let mut redis = Redis::start();
    let dir = redis.dir().to_path_buf();
    assert!(dir.is_dir());
    assert!(redis.ping_within(Duration::from_secs(1)));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK");
    assert_eq!(redis.command(&["GET", "k"]), "v");

    // Paused: connecting works, nothing answers. Resumed: all is there.
    redis.pause();
    assert!(!redis.ping_within(Duration::from_millis(300)));
    redis.resume();
    assert!(redis.ping_within(WAIT));
    assert_eq!(redis.command(&["GET", "k"]), "v");

    // Restarted empty, on the same port.
    let port = redis.port();
    redis.restart_empty();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["GET", "k"]), "(nil)");
    assert_eq!(redis.command(&["DBSIZE"]), ":0");

    redis.kill();
    assert!(!redis.ping_within(Duration::from_millis(300)));
    drop(redis);
    assert!(!dir.exists(), "{dir:?} left behind");

    // A node: `--tick-ms` from the test replaces Serve's `--tick-ms 0`;
    // kill -9 and SIGTERM.
    let mut ticking = Serve::start(BIN, &[], &["--tick-ms", "100"]);
    let (mut c, _) = join(ticking.addr);
    c.event_starting_within("TICK ", Duration::from_secs(5));
    let status = ticking.kill9().expect("no exit status");
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(c.until_closed().0.is_empty());

    let mut calm = Serve::start(BIN, &[], &[]);
    let mut c = Raw::connect(calm.addr);
    let status = calm.terminate(WAIT).expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(c.until_closed().0, vec!["BYE shutdown"]);

    // A command that must fail: status, stderr and how long it ran.
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--tick-ms", "-1"]);
    let (status, stderr, ran) = run_bounded(cmd, WAIT);
    assert!(!status.expect("still running").success());
    assert!(stderr.contains("--tick-ms"), "{stderr}");
    assert!(ran < WAIT);
}

// ---------------------------------------------------------------------
// What every client sees.

/// One SEQ counter and one order: three nodes, a sender and a reader on
/// each, the senders all at once. Every member sees consecutive SEQs from
/// its JOIN, all see the same (SEQ, line) sequence from the last JOIN on,
/// and each sender's lines come in the order it sent them.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn every_node_sees_the_same_seqs_in_the_same_order() {
    const LINES: usize = 200;
    const SENDERS: usize = 3;
    let redis = Redis::start();
    let nodes: Vec<Serve> = (0..SENDERS).map(|_| node(&redis, "order", &[])).collect();
    let readers: Vec<(Raw, u64)> = nodes.iter().map(|n| join(n.addr)).collect();
    let senders: Vec<(Raw, u64)> = nodes.iter().map(|n| join(n.addr)).collect();
    let sender_names: Vec<String> = senders.iter().map(|(r, _)| r.name().to_string()).collect();

    /// Reads events until every sender's every line has arrived.
    fn read_all(raw: &mut Raw) -> Vec<Event> {
        let deadline = Instant::now() + 2 * WAIT;
        let mut seen = Vec::new();
        let mut lines = 0;
        while lines < SENDERS * LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = raw.try_event_within(left).unwrap_or_else(|| {
                panic!(
                    "{}: {lines} of {} lines after {:?}",
                    raw.name(),
                    SENDERS * LINES,
                    2 * WAIT
                )
            });
            if msg(&e).is_some_and(|(_, t)| t.starts_with("line ")) {
                lines += 1;
            }
            seen.push(e);
        }
        seen
    }

    let go = Arc::new(Barrier::new(SENDERS));
    let mut threads = Vec::new();
    for (k, (mut raw, join)) in senders.into_iter().enumerate() {
        let go = Arc::clone(&go);
        threads.push(thread::spawn(move || {
            go.wait();
            for i in 0..LINES {
                raw.line(&format!("line {k} {i}"));
            }
            (format!("sender {k}"), join, read_all(&mut raw))
        }));
    }
    for (k, (mut raw, join)) in readers.into_iter().enumerate() {
        threads.push(thread::spawn(move || {
            (format!("reader {k}"), join, read_all(&mut raw))
        }));
    }
    let seen: Vec<(String, u64, Vec<Event>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();

    for (who, join, events) in &seen {
        assert_consecutive(who, *join, events);
    }
    // From the last JOIN on, everyone saw the same thing.
    let last_join = seen.iter().map(|(_, j, _)| *j).max().unwrap();
    let common = |events: &[Event]| -> Vec<(u64, String)> {
        events
            .iter()
            .filter(|e| e.seq() > last_join)
            .map(|e| (e.seq(), e.line.clone()))
            .collect()
    };
    let reference = common(&seen[0].2);
    for (who, _, events) in &seen[1..] {
        let mine = common(events);
        if mine != reference {
            let at = mine.iter().zip(&reference).position(|(a, b)| a != b);
            panic!(
                "{who} and {} differ (lengths {} and {}) at {at:?}: {:?} vs {:?}",
                seen[0].0,
                mine.len(),
                reference.len(),
                at.map(|i| &mine[i]),
                at.map(|i| &reference[i])
            );
        }
    }
    // Each sender's lines, all of them, from it, in its order.
    let mut next = [0usize; SENDERS];
    for (_, line) in &reference {
        let Some(rest) = line.strip_prefix("MSG ") else {
            continue;
        };
        let (from, text) = rest.split_once(' ').unwrap().1.split_once(' ').unwrap();
        let Some(text) = text.strip_prefix("line ") else {
            continue;
        };
        let (k, i) = text.split_once(' ').unwrap();
        let (k, i): (usize, usize) = (k.parse().unwrap(), i.parse().unwrap());
        assert_eq!(from, sender_names[k], "{line}");
        assert_eq!(i, next[k], "sender {k}'s lines out of order at {line:?}");
        next[k] += 1;
    }
    assert_eq!(next, [LINES; SENDERS]);
}

/// One EPOCH in every node's WELCOME, also for a node started later and
/// after a node died; client IDs (and so guest names) unique room-wide,
/// under concurrent connects to every node.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn one_epoch_and_room_unique_ids_on_every_node() {
    const PER_THREAD: usize = 5;
    let redis = Redis::start();
    let mut nodes: Vec<Serve> = (0..3).map(|_| node(&redis, "ids", &[])).collect();
    let mut threads = Vec::new();
    for n in &nodes {
        for _ in 0..3 {
            let addr = n.addr;
            threads.push(thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|_| Raw::connect(addr))
                    .collect::<Vec<Raw>>()
            }));
        }
    }
    let clients: Vec<Raw> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let epoch = clients[0].welcome().epoch.clone();
    let mut ids = HashSet::new();
    for c in &clients {
        let w = c.welcome();
        assert_eq!(w.epoch, epoch, "two EPOCHs in one room");
        assert!(ids.insert(w.id), "ID {} given twice", w.id);
        assert_eq!(w.name, format!("guest-{}", w.id));
    }
    let keys: HashSet<&str> = clients.iter().map(|c| c.welcome().key.as_str()).collect();
    assert_eq!(keys.len(), clients.len(), "a KEY given twice");

    // A node that dies does not change the room's EPOCH, nor does one
    // that starts later; IDs stay unique.
    nodes[0].kill9();
    nodes.push(node(&redis, "ids", &[]));
    let late = Raw::connect(nodes[3].addr);
    assert_eq!(late.welcome().epoch, epoch);
    assert!(
        !ids.contains(&late.welcome().id),
        "ID {} reused",
        late.welcome().id
    );
    let other = Raw::connect(nodes[1].addr);
    assert_eq!(other.welcome().epoch, epoch);
    assert!(!ids.contains(&other.welcome().id));
    assert_ne!(other.welcome().id, late.welcome().id);
}

/// One name space and one list: JOIN, NICK, LEAVE seen on the other node,
/// `/list` shows members of both within 3 s, `/msg` across nodes, a name
/// taken on one node is taken on the other (also when both race for it).
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn one_name_space_and_one_list_across_nodes() {
    let redis = Redis::start();
    let na = node(&redis, "names", &[]);
    let nb = node(&redis, "names", &[]);
    let (mut b, _) = join(nb.addr);
    let (mut a, _) = join(na.addr);
    let guest_a = a.name().to_string();
    let guest_b = b.name().to_string();

    // The JOIN of a member of node A, on node B; listed there within 3 s.
    let joined = b.event_starting("JOIN ");
    assert_eq!(joined.line, format!("JOIN {} {guest_a}", joined.seq()));
    let took = wait_listed(&mut b, &guest_a, true, LISTED_WITHIN);
    eprintln!("listed on the other node {took:?} after its JOIN arrived there");
    wait_listed(&mut a, &guest_b, true, LISTED_WITHIN);

    // NICK across nodes; the name is taken on the other node too, whatever
    // its case.
    a.line("/nick alice");
    assert_eq!(a.reply(), "OK nick alice");
    let nick = b.event_starting("NICK ");
    assert_eq!(nick.line, format!("NICK {} {guest_a} alice", nick.seq()));
    for taken in ["alice", "ALICE", "Alice"] {
        b.line(&format!("/nick {taken}"));
        let reply = b.reply();
        assert!(
            reply.starts_with("ERR nick-taken "),
            "/nick {taken}: {reply:?}"
        );
    }
    let names = list(&mut b);
    assert!(names.contains(&"alice".to_string()), "{names:?}");

    // /msg to a member of the other node, both ways.
    b.line("/msg alice psst, over here");
    assert_eq!(b.reply(), "OK msg alice");
    assert_eq!(a.reply(), format!("DM {guest_b} psst, over here"));
    a.line(&format!("/msg {guest_b} hello back"));
    assert_eq!(a.reply(), format!("OK msg {guest_b}"));
    assert_eq!(b.reply(), "DM alice hello back");
    b.line("/msg nobody-here hi");
    assert!(b.reply().starts_with("ERR no-such-user "));

    // Two members of two nodes ask for the same free name at once:
    // exactly one gets it.
    let (mut c, _) = join(na.addr);
    let (mut d, _) = join(nb.addr);
    for round in 0..5 {
        let name = format!("race-{round}");
        c.line(&format!("/nick {name}"));
        d.line(&format!("/nick {name}"));
        let replies = [c.reply(), d.reply()];
        let won = replies
            .iter()
            .filter(|r| **r == format!("OK nick {name}"))
            .count();
        let lost = replies
            .iter()
            .filter(|r| r.starts_with("ERR nick-taken "))
            .count();
        assert_eq!((won, lost), (1, 1), "{name}: {replies:?}");
    }
    // Every name once in the room's list, without regard to case. (The
    // list on the other node may lag a moment behind a rename, as it may
    // behind a JOIN.)
    wait_listed(&mut a, "race-4", true, LISTED_WITHIN);
    let names = list(&mut a);
    let unique: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");

    // LEAVE across nodes, and off the list within 3 s.
    a.line("/quit");
    assert_eq!(
        a.until_closed().0.last().map(String::as_str),
        Some("BYE quit")
    );
    let leave = b.event_starting("LEAVE ");
    assert_eq!(leave.line, format!("LEAVE {} alice quit", leave.seq()));
    wait_listed(&mut b, "alice", false, LISTED_WITHIN);
    b.line("/nick alice");
    assert_eq!(b.reply(), "OK nick alice");
}

/// Nodes with the same Redis and room are one hub, and `--room` defaults
/// to `tickcast`; another room on the same Redis is another hub.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn the_same_room_is_one_hub_and_the_room_defaults_to_tickcast() {
    let redis = Redis::start();
    let url = redis.url();
    let default = Serve::start(BIN, &[], &["--redis", &url]);
    let named_default = node(&redis, "tickcast", &[]);
    let other = node(&redis, "other", &[]);
    let (mut x, _) = join(default.addr);
    let (y, _) = join(named_default.addr);
    // IDs are unique within a room, not across rooms: a name of its own.
    let mut z = named(other.addr, "zed-of-the-other-room");
    let joined = x.event_starting("JOIN ");
    assert_eq!(joined.line, format!("JOIN {} {}", joined.seq(), y.name()));
    assert_eq!(x.welcome().epoch, y.welcome().epoch);
    wait_listed(&mut x, y.name(), true, LISTED_WITHIN);
    // The other room: none of these, nor they of it.
    assert_eq!(list(&mut z), vec!["zed-of-the-other-room"]);
    assert!(!list(&mut x).contains(&"zed-of-the-other-room".to_string()));
    z.assert_quiet("nothing from the other room");
}

/// Nodes with `--http`: `GET /stats` has the node's own view in a
/// `cluster` object (its id, the room, whether Redis is up, how far its
/// stream reader lags), and /metrics the same as gauges; a node that has
/// just answered `ERR unavailable` says Redis is down, and up again once
/// it is back.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn stats_and_metrics_show_the_nodes_own_view() {
    let redis = Redis::start();
    let http = ["--http", "127.0.0.1:0"];
    let na = node(&redis, "stats", &http);
    let nb = node(&redis, "stats", &http);
    let (ha, hb) = (http_addr(&na), http_addr(&nb));
    let cluster = |addr: SocketAddr| -> serde_json::Value {
        let answer = support::http::get(addr, "/stats");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let stats: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let cluster = stats["cluster"].clone();
        assert!(cluster.is_object(), "no cluster object in {stats:#}");
        cluster
    };
    let gauge = |addr: SocketAddr, name: &str| -> f64 {
        let text = support::http::get(addr, "/metrics").text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    };

    let (a, b) = (cluster(ha), cluster(hb));
    for c in [&a, &b] {
        assert!(c["node"].as_str().is_some_and(|n| !n.is_empty()), "{c}");
        assert_eq!(c["room"], "stats", "{c}");
        assert_eq!(c["redis"], "up", "{c}");
        assert!(c["reader_lag"].as_u64().is_some(), "{c}");
    }
    assert_ne!(a["node"], b["node"], "two nodes, one id");
    assert_eq!(gauge(ha, "tickcast_cluster_redis_up"), 1.0);
    assert!(gauge(ha, "tickcast_cluster_reader_lag_events") >= 0.0);

    // Redis gone: the node that has said so to a client says so here.
    let (mut member, _) = join(na.addr);
    redis.pause();
    member.line("a line that needs Redis");
    let reply = member
        .try_reply_within(UNAVAILABLE_WITHIN + GRACE)
        .expect("no ERR unavailable");
    assert!(reply.starts_with("ERR unavailable "), "{reply:?}");
    assert_eq!(cluster(ha)["redis"], "down");
    assert_eq!(gauge(ha, "tickcast_cluster_redis_up"), 0.0);
    redis.resume();
    let back = Instant::now() + WAIT;
    while cluster(ha)["redis"] != "up" {
        assert!(
            Instant::now() < back,
            "Redis still down on /stats {WAIT:?} after it came back"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gauge(ha, "tickcast_cluster_redis_up"), 1.0);
}

/// The tick test's `--tick-ms`.
const TICK_PERIOD: Duration = Duration::from_millis(200);
/// How long the tick test counts TICKs at a time: 8 periods.
const TICK_WINDOW: Duration = Duration::from_millis(1600);
/// How much later than two periods the first TICK after the ticking node's
/// death may arrive, on a loaded machine.
const TICK_GRACE: Duration = Duration::from_millis(500);

/// Counts the TICKs `raw` receives from now for [`TICK_WINDOW`] (every
/// event read goes into `seen`), and checks: about one per period, never
/// one per node (at most periods + 1, at least half the periods); after a
/// kill (`killed`), the first within two periods.
fn tick_window(raw: &mut Raw, seen: &mut Vec<Event>, what: &str, killed: bool) {
    let from = Instant::now();
    let end = from + TICK_WINDOW;
    // Even across a take-over, some event (a TICK) comes at least every
    // three periods: one of its own, two for the take-over.
    let gap = 3 * TICK_PERIOD + GRACE;
    let mut at = Vec::new();
    loop {
        let e = raw
            .try_event_within(gap)
            .unwrap_or_else(|| panic!("{what}: no event for {gap:?}; TICKs at {at:?}"));
        let arrived = Instant::now();
        seen.push(e.clone());
        if arrived >= end {
            break;
        }
        if e.verb() == "TICK" {
            at.push(arrived - from);
        }
    }
    let periods = (TICK_WINDOW.as_millis() / TICK_PERIOD.as_millis()) as usize;
    eprintln!("{what}: {} TICKs in {TICK_WINDOW:?}, at {at:?}", at.len());
    assert!(
        at.len() <= periods + 1,
        "{what}: {} TICKs in {periods} periods: doubled (at {at:?})",
        at.len()
    );
    assert!(
        at.len() >= periods / 2,
        "{what}: only {} TICKs in {periods} periods (at {at:?})",
        at.len()
    );
    if killed {
        assert!(
            at[0] <= 2 * TICK_PERIOD + TICK_GRACE,
            "{what}: the first TICK after the kill came {:?} after it",
            at[0]
        );
    }
}

/// The periodic TICK is published once per period for the room, not once
/// per node; when the ticking node dies, another takes over within two
/// periods (a period may be skipped, never doubled). Which node ticks is
/// not observable, so the nodes are killed one at a time until one is
/// left, which must be the ticker; a new node then joins, and the last
/// one is killed.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn one_tick_per_period_for_the_room_and_a_take_over_when_the_ticker_dies() {
    let redis = Redis::start();
    let period = TICK_PERIOD.as_millis().to_string();
    let tick = ["--tick-ms", period.as_str()];
    let mut a = node(&redis, "ticks", &tick);
    let mut b = node(&redis, "ticks", &tick);
    let mut c = node(&redis, "ticks", &tick);
    let (mut ra, join_a) = join(a.addr);
    let mut seen_a = Vec::new();
    tick_window(&mut ra, &mut seen_a, "3 nodes", false);

    // Whichever ticked, the ticks go on.
    c.kill9();
    tick_window(&mut ra, &mut seen_a, "C killed", true);
    b.kill9();
    tick_window(&mut ra, &mut seen_a, "B killed", true);
    assert_consecutive("the member on A", join_a, &seen_a);

    // Now A ticks. A new node D does not tick too; when A dies, D takes
    // over.
    let d = node(&redis, "ticks", &tick);
    let (mut rd, join_d) = join(d.addr);
    let mut seen_d = Vec::new();
    tick_window(&mut rd, &mut seen_d, "A and D", false);
    a.kill9();
    tick_window(&mut rd, &mut seen_d, "A killed", true);
    assert_consecutive("the member on D", join_d, &seen_d);
}

/// `/resume LAST KEY` on node B with a KEY welcomed by node A, the old
/// connection still open: the old one gets `BYE replaced`, the new one
/// what it missed and the name; the room sees `LEAVE … replaced` then
/// `NICK guest-ID NAME`.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn resume_on_another_node_replays_and_takes_the_name_over() {
    let redis = Redis::start();
    let na = node(&redis, "resume", &[]);
    let nb = node(&redis, "resume", &[]);
    let mut old = named(na.addr, "carol");
    let key = old.welcome().key.clone();
    let (mut b, _) = join(nb.addr);
    let b_joined = old.event_starting("JOIN ");
    assert_eq!(
        b_joined.line,
        format!("JOIN {} {}", b_joined.seq(), b.name())
    );
    let last = b_joined.seq();

    // Events the old connection gets but its owner never reads.
    let mut seen_b = Vec::new();
    let missed: Vec<Event> = (0..3)
        .map(|i| until_msg_sent(&mut b, &format!("missed {i}"), &mut seen_b))
        .collect();

    let (mut new, _) = join(nb.addr);
    let new_guest = new.name().to_string();
    new.line(&format!("/resume {last} {key}"));

    let (replies, _) = old.until_closed();
    assert_eq!(
        replies.last().map(String::as_str),
        Some("BYE replaced"),
        "{replies:?}"
    );

    let (replies, mut events) =
        new.collect_until(|r, _| r.iter().any(|l| l.starts_with("OK resume ")));
    let ok = replies
        .iter()
        .find(|l| l.starts_with("OK resume "))
        .unwrap();
    assert!(
        !replies.iter().any(|l| l.starts_with("ERR ")),
        "{replies:?}"
    );
    let replayed_to: u64 = ok["OK resume ".len()..].parse().unwrap();
    assert!(
        replayed_to >= missed[2].seq(),
        "{ok} before {:?}",
        missed[2]
    );
    // What it missed, with the SEQs everyone else saw.
    for m in &missed {
        assert!(
            events.iter().any(|e| e.line == m.line),
            "{:?} not replayed: {events:#?}",
            m.line
        );
    }
    let seqs: BTreeSet<u64> = events.iter().map(Event::seq).collect();
    for seq in last + 1..=replayed_to {
        assert!(seqs.contains(&seq), "SEQ {seq} missing: {seqs:?}");
    }
    // Its name back.
    let nick = match events.iter().position(|e| e.verb() == "NICK") {
        Some(i) => events.remove(i),
        None => new.event_starting("NICK "),
    };
    assert_eq!(nick.line, format!("NICK {} {new_guest} carol", nick.seq()));
    new.line("/nick carol");
    assert_eq!(new.reply(), "OK nick carol");

    // What the room saw.
    let leave = until_event(&mut b, &mut seen_b, "LEAVE", |e| e.verb() == "LEAVE");
    assert_eq!(leave.line, format!("LEAVE {} carol replaced", leave.seq()));
    let renamed = until_event(&mut b, &mut seen_b, "NICK", |e| e.verb() == "NICK");
    assert_eq!(renamed.line, nick.line);
    assert!(leave.seq() < renamed.seq());
}

/// Sends `text` as a chat line from `raw` and reads until its `MSG`.
fn until_msg_sent(raw: &mut Raw, text: &str, seen: &mut Vec<Event>) -> Event {
    raw.line(text);
    until_msg(raw, text, seen)
}

/// A redundant client given two nodes keeps its two links on two
/// different nodes, so that when one node is killed it loses nothing and
/// duplicates nothing, and only one link has to reconnect.
///
/// Written against `Client::with_config(&[addr, addr][..], …)`, the
/// several-address form `ToSocketAddrs` already takes: if the helper adding
/// multi-address support gives it another shape (say a list in
/// `ClientConfig`), only the `Client::with_config` call changes.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_redundant_client_on_two_nodes_loses_nothing_when_one_dies() {
    const N: usize = 150;
    let redis = Redis::start();
    let mut na = node(&redis, "redundant", &[]);
    let nb = node(&redis, "redundant", &[]);
    let nc = node(&redis, "redundant", &[]);
    let client = Client::with_config(
        &[na.addr, nb.addr][..],
        ClientConfig {
            redundant: true,
            name: Some("rita".into()),
            ..support::fast()
        },
    )
    .expect("connect the redundant client");
    let mut connected = 0;
    let mut events = events_until(&client, |e| {
        connected += usize::from(matches!(e, ClientEvent::Connected { .. }));
        connected == 2
    });

    // One link on each node (the client's ends of the TCP connections).
    let started = Instant::now();
    let on = loop {
        let on = (
            connections_to(na.addr.port()),
            connections_to(nb.addr.port()),
        );
        if on == (1, 1) || started.elapsed() > Duration::from_secs(5) {
            break on;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        on,
        (1, 1),
        "links on node A and node B: both should have one"
    );

    // A sender on a third node, before, during and after node A's death.
    let (mut sender, _) = join(nc.addr);
    let (third, sent_a_third) = bounded(1);
    let producer = thread::spawn(move || {
        for i in 0..N {
            sender.line(&format!("r{i}"));
            if i == N / 3 {
                let _ = third.send(());
            }
            thread::sleep(Duration::from_millis(10)); // pacing, not sync
        }
        sender
    });
    sent_a_third
        .recv_timeout(WAIT)
        .expect("the sender is stuck");
    na.kill9();
    let mut received = 0;
    events.extend(events_until(&client, |e| {
        received +=
            usize::from(matches!(e, ClientEvent::Msg { text, .. } if text.starts_with('r')));
        received == N
    }));
    drop(producer.join().unwrap());

    let seqs: Vec<u64> = events.iter().filter_map(ClientEvent::seq).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "SEQs jump or repeat: {seqs:?}");
    }
    assert!(
        !events.iter().any(|e| matches!(e, ClientEvent::Gap(_))),
        "a gap: {events:#?}"
    );
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Msg { text, .. } if text.starts_with('r') => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_eq!(texts, expected);
    // Only the link on the dead node was lost.
    let lost: BTreeSet<usize> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Disconnected { link, .. } => Some(*link),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1, "links lost: {lost:?}");
    assert_eq!(client.name().as_deref(), Some("rita"));
}

/// A redundant client with both links on one node: the second is a
/// mirror of the first there, so the room lists the client once and
/// announces it once (across two nodes it cannot be, and is listed twice:
/// docs/CLUSTER.md, "Clients with several addresses").
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_redundant_client_on_one_node_is_listed_and_announced_once() {
    let redis = Redis::start();
    let na = node(&redis, "mirror", &[]);
    let nb = node(&redis, "mirror", &[]);
    let (mut watcher, joined_at) = join(nb.addr);
    let client = Client::with_config(
        na.addr,
        ClientConfig {
            redundant: true,
            name: Some("rita".into()),
            keepalive: None,
            ..ClientConfig::default()
        },
    )
    .expect("connect the redundant client");
    let deadline = Instant::now() + WAIT;
    let mut connected = 0;
    while connected < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = client.events().recv_timeout(left).expect("both links up");
        connected += usize::from(matches!(event, ClientEvent::Connected { .. }));
    }
    wait_listed(&mut watcher, "rita", true, LISTED_WITHIN + GRACE);
    let mut names = list(&mut watcher);
    names.sort();
    let mut expected = vec!["rita".to_string(), watcher.name().to_string()];
    expected.sort();
    assert_eq!(names, expected);
    client.quit("bye").unwrap();
    let mut seen = Vec::new();
    until_event(&mut watcher, &mut seen, "rita's LEAVE", |e| {
        e.line.ends_with(" rita quit")
    });
    until_msg_sent(&mut watcher, "after", &mut seen);
    assert_consecutive("the watcher", joined_at, &seen);
    let presence: Vec<&str> = seen
        .iter()
        .filter(|e| matches!(e.verb(), "JOIN" | "LEAVE"))
        .map(|e| e.line.as_str())
        .collect();
    assert_eq!(presence.len(), 2, "one JOIN, one LEAVE: {presence:?}");
}

/// Established TCP connections whose far end is 127.0.0.1:`port` (from
/// /proc/net/tcp: the client ends of connections to a node).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01" // ESTABLISHED
                && f[2] == format!("0100007F:{port:04X}")
        })
        .count()
}

// ---------------------------------------------------------------------
// When things fail.

/// kill -9 of a node: one of the others announces each of its members
/// once as `LEAVE SEQ NAME node-down`, within 15 s, and their names are
/// free again.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_killed_nodes_members_are_announced_node_down_once_and_their_names_freed() {
    let redis = Redis::start();
    let mut na = node(&redis, "down", &[]);
    let nb = node(&redis, "down", &[]);
    let nc = node(&redis, "down", &[]);
    let (mut b, join_b) = join(nb.addr);
    let (mut c, join_c) = join(nc.addr);
    let alice = named(na.addr, "alice");
    let (guest, _) = join(na.addr);
    let guest_name = guest.name().to_string();
    let (mut seen_b, mut seen_c) = (Vec::new(), Vec::new());
    for (raw, seen) in [(&mut b, &mut seen_b), (&mut c, &mut seen_c)] {
        let line = format!("JOIN {guest_name}");
        until_event(raw, seen, &line, |e| {
            e.shape() == format!("JOIN # {guest_name}")
        });
    }

    na.kill9();
    let killed = Instant::now();
    let deadline = killed + NODE_DOWN_WITHIN + GRACE;
    for (who, raw, seen) in [("B", &mut b, &mut seen_b), ("C", &mut c, &mut seen_c)] {
        let mut down = BTreeSet::new();
        while down.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = raw.try_event_within(left).unwrap_or_else(|| {
                panic!(
                    "{who}: node-down of alice and {guest_name}: only {down:?} {:?} after the kill",
                    killed.elapsed()
                )
            });
            if e.verb() == "LEAVE" && e.line.ends_with(" node-down") {
                down.insert(e.shape());
            }
            seen.push(e);
        }
        eprintln!(
            "{who} saw both node-down LEAVEs {:?} after the kill",
            killed.elapsed()
        );
        let expected = BTreeSet::from([
            "LEAVE # alice node-down".to_string(),
            format!("LEAVE # {guest_name} node-down"),
        ]);
        assert_eq!(down, expected);
    }

    // Once: a window in which a second announcement, by the other
    // survivor, would show (an absence has no event to wait for), then a
    // line that closes what each member saw.
    thread::sleep(Duration::from_secs(3));
    until_msg_sent(&mut b, "mark", &mut seen_b);
    until_msg(&mut c, "mark", &mut seen_c);
    for (who, join, seen) in [("B", join_b, &seen_b), ("C", join_c, &seen_c)] {
        assert_consecutive(who, join, seen);
        for name in ["alice", guest_name.as_str()] {
            let leaves: Vec<&str> = seen
                .iter()
                .filter(|e| e.verb() == "LEAVE" && e.line.split(' ').nth(2) == Some(name))
                .map(|e| e.line.as_str())
                .collect();
            assert_eq!(leaves.len(), 1, "{who}: {name} left {leaves:?}");
        }
    }
    // And B and C saw the same events, in the same order.
    let common = |seen: &[Event]| -> Vec<String> {
        let from = join_b.max(join_c);
        seen.iter()
            .filter(|e| e.seq() > from)
            .map(|e| e.line.clone())
            .collect()
    };
    assert_eq!(common(&seen_b), common(&seen_c));

    // Their names are free: off the list, and alice can be taken.
    wait_listed(&mut b, &guest_name, false, LISTED_WITHIN);
    c.line("/nick alice");
    assert_eq!(c.reply(), "OK nick alice");
    drop((alice, guest));
}

/// Redis paused: a line that needs it gets `ERR unavailable` within 10 s
/// and is never broadcast, the connection stays, `/ping` and `/help`
/// still work, a new connection gets `BYE unavailable`. Once Redis is back,
/// lines go through again and every member saw consecutive SEQs.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn while_redis_is_paused_lines_get_err_unavailable_and_no_seq_is_lost() {
    let redis = Redis::start();
    let na = node(&redis, "pause", &[]);
    let nb = node(&redis, "pause", &[]);
    let (mut a, join_a) = join(na.addr);
    let (mut b, join_b) = join(nb.addr);
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    until_msg_sent(&mut a, "before", &mut seen_a);
    until_msg(&mut b, "before", &mut seen_b);

    redis.pause();
    let paused = Instant::now();
    let deadline = paused + UNAVAILABLE_WITHIN + GRACE;
    // A chat line cannot go through: it waits, then is refused.
    a.line("during the outage");
    let left = deadline.saturating_duration_since(Instant::now());
    let reply = a.try_reply_within(left).unwrap_or_else(|| {
        panic!(
            "chat on A: no reply {:?} after Redis paused",
            paused.elapsed()
        )
    });
    assert!(
        reply.starts_with("ERR unavailable "),
        "chat on A: {reply:?}"
    );
    eprintln!(
        "chat on A: {reply:?} {:?} after Redis paused",
        paused.elapsed()
    );
    // The other node may answer `/list` from what it knows until it has
    // noticed; within 10 s it must have.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        b.line("/list");
        let reply = b.try_reply_within(left).unwrap_or_else(|| {
            panic!(
                "/list on B: no reply {:?} after Redis paused",
                paused.elapsed()
            )
        });
        if reply.starts_with("ERR unavailable ") {
            eprintln!(
                "/list on B: {reply:?} {:?} after Redis paused",
                paused.elapsed()
            );
            break;
        }
        assert!(reply.starts_with("USERS "), "/list on B: {reply:?}");
        assert!(
            Instant::now() < deadline,
            "/list on B still answered {reply:?} {:?} after Redis paused",
            paused.elapsed()
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The connection stays; what needs no Redis still works.
    a.line("/ping still-here");
    assert_eq!(a.reply_within(Duration::from_secs(5)), "PONG still-here");
    a.line("/help");
    loop {
        let reply = a.reply_within(Duration::from_secs(5));
        if reply == "OK help" {
            break;
        }
        assert!(reply.starts_with("HELP "), "{reply:?}");
    }
    // A new connection is turned away (the node knows Redis is gone: it
    // has just said so).
    let mut fresh = Raw::connect_bare(na.addr);
    let left = deadline.saturating_duration_since(Instant::now());
    let (replies, events) = fresh.until_closed_within(left.max(Duration::from_secs(3)));
    assert_eq!(replies, vec!["BYE unavailable"]);
    assert!(events.is_empty(), "{events:?}");
    // Back well before 15 s, after which the nodes would count each other
    // as down.
    eprintln!("Redis resumed {:?} after it was paused", paused.elapsed());
    redis.resume();

    // The node reconnects, with backoff.
    let back = Instant::now() + WAIT;
    loop {
        a.line("/list");
        let reply = a.reply();
        if reply.starts_with("USERS ") {
            break;
        }
        assert!(reply.starts_with("ERR unavailable "), "{reply:?}");
        assert!(
            Instant::now() < back,
            "still unavailable {WAIT:?} after Redis resumed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    until_msg_sent(&mut a, "after", &mut seen_a);
    until_msg(&mut b, "after", &mut seen_b);
    a.assert_quiet("a");
    b.assert_quiet("b");
    for (who, join, seen) in [("a", join_a, &seen_a), ("b", join_b, &seen_b)] {
        assert_consecutive(who, join, seen);
        assert!(
            !seen
                .iter()
                .any(|e| msg(e).is_some_and(|(_, t)| t == "during the outage")),
            "{who}: a line refused with ERR unavailable was broadcast: {seen:#?}"
        );
    }
}

/// Redis restarted empty: every open connection gets `BYE unavailable`
/// within 15 s, and sees no SEQ of the new EPOCH; a new connection has a
/// new EPOCH, the same on every node, and the room's SEQs start again at 1.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn when_redis_restarts_empty_connections_are_closed_and_the_room_starts_again() {
    let mut redis = Redis::start();
    let na = node(&redis, "restart", &[]);
    let nb = node(&redis, "restart", &[]);
    let (mut a, join_a) = join(na.addr);
    let (mut b, join_b) = join(nb.addr);
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    for i in 0..5 {
        until_msg_sent(&mut a, &format!("old {i}"), &mut seen_a);
        until_msg(&mut b, &format!("old {i}"), &mut seen_b);
    }
    let old_epoch = a.welcome().epoch.clone();
    assert_eq!(b.welcome().epoch, old_epoch);

    redis.restart_empty();
    let restarted = Instant::now();
    let deadline = restarted + OLD_EPOCH_CLOSED_WITHIN + GRACE;
    for (who, raw, join, seen) in [
        ("a", &mut a, join_a, &mut seen_a),
        ("b", &mut b, join_b, &mut seen_b),
    ] {
        let left = deadline.saturating_duration_since(Instant::now());
        let (replies, events) = raw.until_closed_within(left);
        eprintln!("{who} closed {:?} after the restart", restarted.elapsed());
        assert_eq!(
            replies.last().map(String::as_str),
            Some("BYE unavailable"),
            "{who}: {replies:?}"
        );
        seen.extend(events);
        assert_consecutive(who, join, seen);
    }

    // Reconnect: a new EPOCH, the same on both nodes.
    let fresh_a = welcome_in_a_new_epoch(na.addr, &old_epoch);
    let mut fresh_b = welcome_in_a_new_epoch(nb.addr, &old_epoch);
    let new_epoch = fresh_a.welcome().epoch.clone();
    assert_eq!(fresh_b.welcome().epoch, new_epoch);

    // The room's SEQs start again at 1: the whole history, from 0.
    let joined = fresh_b.event();
    assert_eq!(
        joined.line,
        format!("JOIN {} {}", joined.seq(), fresh_b.name())
    );
    fresh_b.line("/resume 0");
    let (replies, events) =
        fresh_b.collect_until(|r, _| r.iter().any(|l| l.starts_with("OK resume ")));
    assert!(
        !replies.iter().any(|l| l.starts_with("ERR ")),
        "{replies:?}"
    );
    let seqs: BTreeSet<u64> = events
        .iter()
        .map(Event::seq)
        .chain([joined.seq()])
        .collect();
    let last = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (1..=last).collect::<BTreeSet<u64>>(),
        "the new EPOCH's history does not start at SEQ 1: {events:#?}"
    );
}

/// Connects to `addr` until it is welcomed under an EPOCH other than
/// `old` (a node still reconnecting says `BYE unavailable`; one welcomed
/// under `old` must be closed with `BYE unavailable`).
fn welcome_in_a_new_epoch(addr: SocketAddr, old: &str) -> Raw {
    let deadline = Instant::now() + OLD_EPOCH_CLOSED_WITHIN + GRACE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{addr}: not welcomed under a new EPOCH");
        let mut c = Raw::connect_bare(addr);
        let first = c.reply_within(left);
        if first.starts_with("WELCOME ") {
            c.welcome = Some(parse_welcome(&first));
            if c.welcome().epoch != old {
                return c;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (replies, _) = c.until_closed_within(left);
            assert_eq!(
                replies.last().map(String::as_str),
                Some("BYE unavailable"),
                "welcomed under the old EPOCH and not closed"
            );
        } else {
            assert_eq!(first, "BYE unavailable");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to one node: its clients get `BYE shutdown` after every event
/// it appended, the others see `LEAVE SEQ NAME shutdown` for each of them,
/// the node exits 0 and the other node goes on serving.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_node_shut_down_cleanly_says_goodbye_and_the_room_goes_on() {
    const LINES: usize = 50;
    let redis = Redis::start();
    let mut na = node(&redis, "shutdown", &[]);
    let nb = node(&redis, "shutdown", &[]);
    let (mut b, join_b) = join(nb.addr);
    let mut alice = named(na.addr, "alice");
    let (mut other, _) = join(na.addr);
    let other_name = other.name().to_string();

    // Lines still coming in when the signal arrives.
    for i in 0..LINES {
        alice.line(&format!("last words {i}"));
    }
    na.signal("-TERM");

    let alices_lines = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match msg(e) {
                Some(("alice", t)) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    };
    let (replies, events) = alice.until_closed();
    assert_eq!(
        replies.last().map(String::as_str),
        Some("BYE shutdown"),
        "{replies:?}"
    );
    let to_alice = alices_lines(&events);
    let (replies, events) = other.until_closed();
    assert_eq!(
        replies.last().map(String::as_str),
        Some("BYE shutdown"),
        "{replies:?}"
    );
    let to_other = alices_lines(&events);
    let status = na
        .wait_exit(WAIT)
        .expect("node A did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");

    // The room saw each member of A leave, reason shutdown.
    let mut seen_b = Vec::new();
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        let e = until_event(&mut b, &mut seen_b, "LEAVE", |e| e.verb() == "LEAVE");
        assert!(e.line.ends_with(" shutdown"), "{e:?}");
        left.insert(e.shape());
    }
    assert_eq!(
        left,
        BTreeSet::from([
            "LEAVE # alice shutdown".to_string(),
            format!("LEAVE # {other_name} shutdown")
        ])
    );
    // Every line of alice's that made it into the room's log reached A's
    // own clients before their BYE; they came in the order sent.
    let to_room = alices_lines(&seen_b);
    eprintln!(
        "{} of alice's {LINES} lines went out before the shutdown",
        to_room.len()
    );
    assert_eq!(to_alice, to_room);
    assert_eq!(to_other, to_room);
    let prefix: Vec<String> = (0..to_room.len())
        .map(|i| format!("last words {i}"))
        .collect();
    assert_eq!(to_room, prefix);

    // Node B goes on.
    until_msg_sent(&mut b, "still here", &mut seen_b);
    assert_consecutive("b", join_b, &seen_b);
    wait_listed(&mut b, "alice", false, LISTED_WITHIN);
    let mut late = Raw::connect(nb.addr);
    late.line("/ping");
    assert_eq!(late.reply(), "PONG");
}

/// Runs `tickcast serve ARGS` (on a free loopback port, no tick), which
/// must stop by itself within `limit`.
fn refused_start(args: &[&str], limit: Duration) -> (i32, String, Duration) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--tick-ms", "0"])
        .args(args)
        .env_remove("TICKCAST_TOKEN");
    let (status, stderr, ran) = run_bounded(cmd, limit);
    let status = status.unwrap_or_else(|| {
        panic!("tickcast serve {args:?} still running after {limit:?}: {stderr}")
    });
    assert!(
        !stderr.contains("listening on"),
        "tickcast serve {args:?} served: {stderr}"
    );
    let code = status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {status:?}"));
    (code, stderr, ran)
}

/// A node that cannot reach Redis (nothing listens there) exits with
/// status 1 within 10 s, and says so.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_node_that_cannot_reach_redis_exits_1() {
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    assert_cannot_reach(&url);
}

/// Starts a node on `url`, which must fail: status 1 within the contract's
/// bound, saying it cannot reach Redis.
fn assert_cannot_reach(url: &str) {
    let (code, stderr, ran) = refused_start(&["--redis", url], START_FAILS_WITHIN + GRACE);
    eprintln!("exit {code} after {ran:?}: {stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("tickcast: cannot reach Redis at {url}"))),
        "{stderr}"
    );
}

/// A Redis that accepts connections but never answers (paused) is
/// unreachable too: the node does not wait forever.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_node_whose_redis_does_not_answer_exits_1_within_10_s() {
    let redis = Redis::start();
    redis.pause();
    assert_cannot_reach(&redis.url());
}

/// `--room` takes 1 to 64 of `A-Z a-z 0-9 _ - .`: anything else exits 1
/// (as every other bad option of `serve`) with a message naming the
/// option, and so does `--room` without `--redis`; the longest good name
/// works.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn room_names_are_checked() {
    let redis = Redis::start();
    let url = redis.url();
    let too_long = "x".repeat(65);
    for room in ["bad room", "", too_long.as_str(), "café", "a/b", "a:b"] {
        let (code, stderr, _) = refused_start(&["--redis", &url, "--room", room], WAIT);
        assert_eq!(code, 1, "--room {room:?}: {stderr}");
        assert!(stderr.contains("--room"), "--room {room:?}: {stderr}");
    }
    let (code, stderr, _) = refused_start(&["--room", "office"], WAIT);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("--redis"),
        "--room without --redis: {stderr}"
    );

    let longest = format!("AZaz09_-.{}", "r".repeat(55));
    assert_eq!(longest.len(), 64);
    let n = node(&redis, &longest, &[]);
    let (_, _) = join(n.addr);
}

/// `POST /line` on a node's HTTP port answers `/nick` and `/msg` as a
/// single server does, although Redis decides them: `200 OK nick`, `409`
/// for a name another node's client holds, `200 OK msg` for a member of
/// another node (who gets the `DM`), `404` for nobody.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn post_line_answers_nick_and_msg_from_redis() {
    let redis = Redis::start();
    let na = node(&redis, "post", &["--http", "127.0.0.1:0"]);
    let nb = node(&redis, "post", &[]);
    let http = http_addr(&na);
    let mut web = support::http::stream(http, "");
    let (mut bob, _) = join(nb.addr);
    bob.line("/nick bob");
    assert_eq!(bob.reply(), "OK nick bob");

    let answer = support::http::post_line(http, &web.key, "/nick webby");
    assert_eq!(
        (answer.status, answer.text().trim()),
        (200, "OK nick webby")
    );
    let answer = support::http::post_line(http, &web.key, "/nick BOB");
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert!(
        answer.text().starts_with("ERR nick-taken"),
        "{}",
        answer.text()
    );
    let answer = support::http::post_line(http, &web.key, "/msg bob psst");
    assert_eq!((answer.status, answer.text().trim()), (200, "OK msg bob"));
    assert_eq!(bob.reply_within(WAIT), "DM webby psst");
    let answer = support::http::post_line(http, &web.key, "/msg nobody hi");
    assert_eq!(answer.status, 404, "{}", answer.text());
    // The stream sees its own rename among the room's events (each read is
    // bounded).
    while !web.sse.next_broadcast().line().ends_with(" webby") {}
}

/// Replies come back in the order of the commands, as PROTOCOL.md
/// promises, although a cluster node's answers to `/nick`, `/msg` and a
/// refused chat line come from Redis: a pipelined burst gets its replies
/// in order, and a chat line refused while Redis is paused gets its
/// `ERR unavailable` before the `PONG` of the `/ping` sent after it.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn replies_come_in_the_order_of_the_commands() {
    let redis = Redis::start();
    let n = node(&redis, "order", &[]);
    let (mut c, _) = join(n.addr);
    c.send("/nick zz9\n/list\n/msg zz9 hi\n/ping p1\n/nick zz8\n/ping p2\n");
    // The DM to itself comes among them, whenever its node delivers it.
    let replies: Vec<String> = (0..7)
        .map(|_| c.reply_within(WAIT))
        .filter(|line| line != "DM zz9 hi")
        .collect();
    assert_eq!(
        replies,
        [
            "OK nick zz9",
            "USERS 1 zz9",
            "OK msg zz9",
            "PONG p1",
            "OK nick zz8",
            "PONG p2"
        ]
    );
    redis.pause();
    c.send("said while Redis is paused\n/ping p3\n");
    let limit = UNAVAILABLE_WITHIN + GRACE;
    let first = c.reply_within(limit);
    let second = c.reply_within(limit);
    redis.resume();
    assert!(first.starts_with("ERR unavailable "), "{first:?}");
    assert_eq!(second, "PONG p3");
}

/// An event stream's `name=` keeps to the naming rules on a cluster node
/// too: one with a line break in it gets `event: err` (`nick-invalid`),
/// nothing forged reaches the room, and the node (with a stream member,
/// which once made it stop) goes on serving.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn a_streams_name_is_checked_and_cannot_forge_events() {
    let redis = Redis::start();
    let na = node(&redis, "forge", &["--http", "127.0.0.1:0"]);
    let http = http_addr(&na);
    let mut watcher = support::http::stream(http, "");
    let (mut tcp, _) = join(na.addr);
    let target = "/events?name=evil%0AMSG%20999999%20admin%20pwned";
    let mut evil = support::http::Sse::open(http, target, &[]);
    let err = loop {
        let e = evil.next_any().expect("the stream ended");
        if e.event.as_deref() == Some("err") {
            break e;
        }
    };
    assert!(err.data[0].starts_with("ERR nick-invalid"), "{err:?}");
    // The room goes on, and saw nothing forged.
    tcp.line("still here");
    let mut seen = Vec::new();
    until_msg_sent(&mut tcp, "still here", &mut seen);
    assert!(seen.iter().all(|e| !e.line.contains("pwned")), "{seen:?}");
    while !watcher.sse.next_broadcast().line().ends_with("still here") {}
}

/// `--history` and `--history-bytes` bound the room's log in Redis too:
/// payloads far beyond `--history-bytes` leave at most that many bytes of
/// events (and the newest event) in the stream, and `/resume 0` on a new
/// node replays exactly what is left, with the gap before it.
#[test]
#[ignore = "needs redis-server; scripts/test installs it"]
fn the_rooms_log_in_redis_keeps_within_the_history_bounds() {
    let redis = Redis::start();
    let bounds = ["--history-bytes", "64KiB", "--history", "1000"];
    let na = node(&redis, "bounded", &bounds);
    let (mut a, _) = join(na.addr);
    let payload = vec![b'x'; 8 * 1024];
    for _ in 0..40 {
        a.send(format!("/send {}\n", payload.len()));
        a.send(&payload);
        a.send("\n");
    }
    a.line("done");
    let mut seen = Vec::new();
    let done = until_msg(&mut a, "done", &mut seen);
    let number = |reply: String| -> u64 {
        reply
            .trim_start_matches([':', '+'])
            .parse()
            .unwrap_or_else(|_| panic!("{reply:?}"))
    };
    let bytes = number(redis.command(&["GET", "tickcast:{bounded}:bytes"]));
    let events = number(redis.command(&["XLEN", "tickcast:{bounded}:log"]));
    assert!(bytes <= 64 * 1024, "{bytes} bytes of events in Redis");
    assert!((7..=8).contains(&events), "{events} events in Redis");
    // A node started now finds exactly that: a gap, then the newest.
    let nb = node(&redis, "bounded", &bounds);
    let (mut b, _) = join(nb.addr);
    b.line("/resume 0");
    let gap = b.reply_within(WAIT);
    assert!(gap.starts_with("ERR resume-gap "), "{gap:?}");
    let oldest: u64 = gap["ERR resume-gap ".len()..].parse().unwrap();
    assert!(
        done.seq() - oldest < events + 2,
        "{gap} with {events} events"
    );
}
