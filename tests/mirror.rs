//! A redundant client's second connection, `/mirror KEY`: a *mirror* gets
//! every broadcast like a member, but is never listed, counted nor
//! announced; and the grace a new client's `JOIN` waits for its first
//! line, which is what lets the server tell a mirror from a client. Raw
//! bytes over loopback, as in `protocol.rs`.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};
use support::{Raw, WAIT, config, joined, named, non_reader, start};
use tickcast::server::Config;

/// How long after its `WELCOME` a silent client's `JOIN` may come: the
/// 100 ms grace, and room for a loaded machine.
const GRACE_AND_SLACK: Duration = Duration::from_millis(1000);

/// Connects a mirror of the client `of`, currently called `name`, and
/// checks its `OK mirror`.
fn mirror(addr: SocketAddr, of: &Raw, name: &str) -> Raw {
    let mut m = Raw::connect(addr);
    m.line(&format!("/mirror {}", of.welcome().key));
    assert_eq!(m.reply(), format!("OK mirror {name}"));
    m
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10)); // polling the server
    }
}

#[test]
fn a_silent_client_joins_within_the_grace() {
    let server = start(config());
    let mut a = Raw::connect(server.local_addr());
    let welcomed = Instant::now();
    let join = a.event();
    let waited = welcomed.elapsed();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), a.name()));
    assert!(waited < GRACE_AND_SLACK, "JOIN after {waited:?}");
    // From its JOIN on, every event, with consecutive SEQs.
    let mut b = joined(server.local_addr());
    b.line("hello");
    let seqs: Vec<u64> = (0..2).map(|_| a.event().seq()).collect();
    assert_eq!(seqs, [join.seq() + 1, join.seq() + 2]);
}

#[test]
fn a_first_line_joins_the_client_before_it_is_handled() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut a = Raw::connect(server.local_addr());
    a.line("hi at once");
    let join = a.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), a.name()));
    let msg = a.event();
    assert_eq!(
        msg.line,
        format!("MSG {} {} hi at once", join.seq() + 1, a.name())
    );
    assert_eq!(watcher.event(), join);
    assert_eq!(watcher.event(), msg);
}

#[test]
fn a_line_half_sent_when_the_grace_ends_is_kept_whole() {
    let server = start(config());
    let mut a = Raw::connect(server.local_addr());
    a.send("hel");
    // The grace ends while the line is half in: the client joins, and
    // the line goes on where it was.
    let join = a.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), a.name()));
    a.send("lo\n");
    let msg = a.event();
    assert_eq!(
        msg.line,
        format!("MSG {} {} hello", join.seq() + 1, a.name())
    );
}

#[test]
fn a_mirror_is_neither_listed_nor_announced_and_gets_what_its_client_gets() {
    let server = start(config());
    let addr = server.local_addr();
    let mut watcher = joined(addr);
    let mut alice = named(addr, "alice");
    watcher.event_starting("NICK ");
    let mut m = mirror(addr, &alice, "alice");

    watcher.line("/list");
    assert_eq!(watcher.reply(), format!("USERS 2 alice {}", watcher.name()));
    assert_eq!(server.clients().len(), 2);
    assert_eq!(server.connection_count(), 3);

    // From the next event on, the mirror's events are its client's.
    alice.line("one");
    watcher.line("two");
    alice.send("/send 3\nabc\n");
    for _ in 0..3 {
        assert_eq!(m.event(), alice.event());
    }

    m.line("/quit");
    let (replies, events) = m.until_closed();
    assert_eq!(replies, ["BYE quit"]);
    assert!(events.is_empty(), "{events:?}");
    for _ in 0..3 {
        watcher.event();
    }
    watcher.assert_quiet("no JOIN, no LEAVE for the mirror");
    wait_until("the mirror's place is free", || {
        server.connection_count() == 2
    });
}

#[test]
fn the_tick_does_not_count_a_mirror() {
    let server = start(Config {
        tick: Some(Duration::from_millis(50)),
        ..config()
    });
    let alice = joined(server.local_addr());
    let mut m = mirror(server.local_addr(), &alice, alice.name());
    let tick = m.event_starting("TICK ");
    assert!(tick.line.ends_with(" 1 client connected"), "{tick:?}");
}

#[test]
fn a_mirror_may_be_made_before_its_client_has_joined() {
    let server = start(config());
    let addr = server.local_addr();
    // Welcomed, and still within its grace: not joined yet, but its key
    // is good for a mirror already.
    let mut a = Raw::connect(addr);
    let mut m = mirror(addr, &a, a.name());
    a.line("hello");
    let said = a.event_starting("MSG ");
    assert_eq!(m.event_starting("MSG "), said);
}

#[test]
fn an_unknown_key_is_refused_and_the_connection_joins_as_a_client() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut c = Raw::connect(server.local_addr());
    c.line("/mirror 00112233445566778899aabbccddeeff");
    let reply = c.reply();
    assert!(reply.starts_with("ERR bad-key "), "{reply}");
    let join = c.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), c.name()));
    assert_eq!(watcher.event(), join);
    c.line("/list");
    assert_eq!(c.reply().split(' ').nth(1), Some("2"));
}

#[test]
fn mirror_must_be_the_first_line() {
    let server = start(config());
    let addr = server.local_addr();
    let other = joined(addr);
    let key = other.welcome().key.clone();
    let mut a = joined(addr);
    a.line(&format!("/mirror {key}"));
    assert_eq!(a.reply(), "ERR bad-args /mirror must be the first line");
    // A first line of any kind, even a /ping, makes the client join.
    let mut b = Raw::connect(addr);
    b.line("/ping first");
    b.line(&format!("/mirror {key}"));
    assert_eq!(b.reply(), "PONG first");
    assert_eq!(b.reply(), "ERR bad-args /mirror must be the first line");
    let join = b.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), b.name()));
}

#[test]
fn a_mirror_only_receives() {
    let server = start(config());
    let addr = server.local_addr();
    let mut alice = joined(addr);
    let mut m = mirror(addr, &alice, alice.name());
    let only_receives = "ERR bad-args a mirror only receives; send on the primary link";
    for line in [
        "hello",
        "/nick bob",
        "/list",
        "/msg x hi",
        "/help",
        "/auth x",
        "/resume 0 00ff",
    ] {
        m.line(line);
        assert_eq!(m.reply(), only_receives, "{line}");
    }
    // A refused /send has its payload skipped: the framing holds.
    m.send("/send 3\nabc\n");
    assert_eq!(m.reply(), only_receives);
    m.line("/ping still framed");
    assert_eq!(m.reply(), "PONG still framed");
    m.line("/pong 1");
    // It may catch up: /resume SEQ, without a key.
    alice.line("before");
    let before = m.event_starting("MSG ");
    m.line(&format!("/resume {}", before.seq() - 1));
    assert_eq!(m.event(), before);
    assert_eq!(m.reply(), format!("OK resume {}", before.seq()));
    assert_eq!(alice.event_starting("MSG "), before);
    alice.assert_quiet("the mirror said nothing");
}

#[test]
fn with_a_token_mirror_is_the_first_line_after_auth() {
    let server = start(Config {
        token: Some("s3cret".into()),
        ..config()
    });
    let addr = server.local_addr();
    let mut alice = Raw::connect(addr);
    alice.line("/auth s3cret");
    assert_eq!(alice.reply(), "OK auth");
    let mut m = Raw::connect(addr);
    let mirror_line = format!("/mirror {}", alice.welcome().key);
    m.line(&mirror_line);
    assert!(m.reply().starts_with("ERR auth-required "));
    m.line("/auth s3cret");
    assert_eq!(m.reply(), "OK auth");
    m.line(&mirror_line);
    assert_eq!(m.reply(), format!("OK mirror {}", alice.name()));
    alice.line("/list");
    assert_eq!(alice.reply(), format!("USERS 1 {}", alice.name()));
}

#[test]
fn a_mirror_outlives_its_client_and_goes_unannounced() {
    let server = start(config());
    let addr = server.local_addr();
    let mut watcher = joined(addr);
    let mut alice = named(addr, "alice");
    watcher.event_starting("NICK ");
    let mut m = mirror(addr, &alice, "alice");
    alice.line("/quit");
    alice.until_closed();
    let leave = watcher.event();
    assert!(leave.line.ends_with(" alice quit"), "{leave:?}");
    assert_eq!(m.event(), leave);
    watcher.line("still there?");
    assert_eq!(m.event(), watcher.event());
    drop(m);
    wait_until("the mirror's place is free", || {
        server.connection_count() == 1
    });
    watcher.assert_quiet("no LEAVE for the mirror");
}

#[test]
fn a_mirror_counts_against_the_connection_limit() {
    let server = start(Config {
        max_clients: 2,
        ..config()
    });
    let alice = joined(server.local_addr());
    let _m = mirror(server.local_addr(), &alice, alice.name());
    let mut refused = Raw::connect_bare(server.local_addr());
    let (replies, _) = refused.until_closed();
    assert_eq!(replies, ["BYE server-full"]);
}

#[test]
fn a_mirror_that_stops_reading_is_dropped_unannounced() {
    let server = start(Config {
        write_timeout: Duration::from_millis(500),
        ..config()
    });
    let addr = server.local_addr();
    let mut alice = joined(addr);
    let mut stalled = non_reader(addr);
    stalled.line(&format!("/mirror {}", alice.welcome().key));
    wait_until("the mirror is made", || server.connection_count() == 2);
    // 48 payloads of 256 KiB: far more than a non-reader's buffers hold.
    const COUNT: usize = 48;
    let payload = vec![b'z'; 256 * 1024];
    let mut sender = alice.stream().try_clone().unwrap();
    let writer = thread::spawn(move || {
        for _ in 0..COUNT {
            writeln!(sender, "/send {}", payload.len()).unwrap();
            sender.write_all(&payload).unwrap();
            sender.write_all(b"\n").unwrap();
        }
    });
    for _ in 0..COUNT {
        assert_eq!(alice.event().verb(), "DATA");
    }
    writer.join().unwrap();
    wait_until("the mirror is dropped", || server.connection_count() == 1);
    alice.assert_quiet("no LEAVE for the mirror");
    stalled.drain_to_eof();
}
