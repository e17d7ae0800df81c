//! A redundant client's second connection, `/mirror KEY`: a *mirror* gets
//! every broadcast like a member, but is never listed, counted nor
//! announced; and the grace a new client's `WELCOME` waits for its first
//! line, which is what lets the server tell a mirror from a client while
//! keeping the contract's promise: when a client gets its `WELCOME`, it
//! is listed and its `JOIN` is queued. Raw bytes over loopback, as in
//! `protocol.rs`.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};
use support::{Raw, WAIT, config, joined, named, non_reader_saying, start};
use tickcast::server::Config;

/// How long after connecting a silent client's `WELCOME` may come: the
/// 100 ms grace, and room for a loaded machine.
const GRACE_AND_SLACK: Duration = Duration::from_millis(1000);

/// Connects a mirror of the client `of`, currently called `name`: its
/// `/mirror KEY` goes out before its `WELCOME` comes. Checks its
/// `OK mirror`.
fn mirror(addr: SocketAddr, of: &Raw, name: &str) -> Raw {
    let mut m = Raw::connect_saying(addr, &format!("/mirror {}", of.welcome().key));
    assert_eq!(m.reply(), format!("OK mirror {name}"));
    m
}

/// A server, a watching client, alice (renamed, her NICK seen by the
/// watcher) and a mirror of alice.
fn room_with_a_mirror() -> (tickcast::server::ServerHandle, Raw, Raw, Raw) {
    let server = start(config());
    let addr = server.local_addr();
    let mut watcher = joined(addr);
    let alice = named(addr, "alice");
    watcher.event_starting("NICK ");
    let m = mirror(addr, &alice, "alice");
    (server, watcher, alice, m)
}

/// `/list`'s names, as `a` sees them.
fn names(a: &mut Raw) -> Vec<String> {
    a.line("/list");
    let users = a.reply();
    assert!(users.starts_with("USERS "), "{users}");
    users.split(' ').skip(2).map(str::to_string).collect()
}

/// The contract's sentence, as `watcher` sees it: `name` is listed, and
/// its `JOIN` is the next event.
fn assert_listed_and_joined(watcher: &mut Raw, name: &str) {
    assert!(names(watcher).iter().any(|n| n == name), "{name}");
    let join = watcher.event();
    assert_eq!(join.line, format!("JOIN {} {name}", join.seq()));
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
fn a_silent_client_is_welcomed_within_the_grace() {
    let server = start(config());
    let connected = Instant::now();
    let mut a = Raw::connect(server.local_addr());
    let waited = connected.elapsed();
    assert!(waited < GRACE_AND_SLACK, "WELCOME after {waited:?}");
    let join = a.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), a.name()));
    // From its JOIN on, every event, with consecutive SEQs.
    let mut b = joined(server.local_addr());
    b.line("hello");
    let seqs: Vec<u64> = (0..2).map(|_| a.event().seq()).collect();
    assert_eq!(seqs, [join.seq() + 1, join.seq() + 2]);
}

/// The contract's sentence, word for word: "When a client gets its
/// WELCOME it is already listed and its JOIN is queued".
#[test]
fn a_welcomed_client_is_already_listed_and_its_join_queued() {
    let server = start(config());
    let addr = server.local_addr();
    let mut a = joined(addr);
    // Silent (welcomed when the grace ends) and talkative (at once); both
    // kept open, so that no LEAVE comes between the JOINs.
    let clients = [Raw::connect(addr), Raw::connect_saying(addr, "/ping hi")];
    for b in &clients {
        assert_listed_and_joined(&mut a, b.name());
    }
}

#[test]
fn a_client_that_speaks_at_once_is_welcomed_at_once() {
    let server = start(config());
    // Under the grace at least once in a few tries, whatever the load.
    let quickest = (0..5)
        .map(|_| {
            let connected = Instant::now();
            let _a = Raw::connect_saying(server.local_addr(), "/ping hi");
            connected.elapsed()
        })
        .min()
        .unwrap();
    assert!(quickest < Duration::from_millis(80), "{quickest:?}");
}

#[test]
fn a_first_line_joins_the_client_before_it_is_handled() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut a = Raw::connect_saying(server.local_addr(), "hi at once");
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
    let mut a = Raw::connect_bare(server.local_addr());
    a.send("hel");
    // The grace ends while the line is half in: the client is welcomed
    // and joins, and the line goes on where it was.
    a.read_welcome();
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
    let (server, mut watcher, mut alice, mut m) = room_with_a_mirror();

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
fn an_unknown_key_is_refused_and_the_connection_joins_as_a_client() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut c = Raw::connect_saying(
        server.local_addr(),
        "/mirror 00112233445566778899aabbccddeeff",
    );
    // Listed by the time it is welcomed, as any client.
    assert!(names(&mut watcher).iter().any(|n| n == c.name()));
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
    let mut b = Raw::connect_saying(addr, "/ping first");
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

fn token_config() -> Config {
    Config {
        token: Some("s3cret".into()),
        ..config()
    }
}

#[test]
fn with_a_token_a_client_is_listed_at_its_ok_auth() {
    let server = start(token_config());
    let addr = server.local_addr();
    // With a token, WELCOME comes at once, unasked.
    let connected = Instant::now();
    let mut a = Raw::connect(addr);
    a.line("/auth s3cret");
    assert_eq!(a.reply(), "OK auth");
    let join_a = a.event();
    assert_eq!(join_a.line, format!("JOIN {} {}", join_a.seq(), a.name()));
    assert!(connected.elapsed() < GRACE_AND_SLACK);
    let mut b = Raw::connect(addr);
    b.line("/auth s3cret");
    assert_eq!(b.reply(), "OK auth");
    // Right after b's OK auth, a sees b listed, and gets b's JOIN.
    assert_listed_and_joined(&mut a, b.name());
}

#[test]
fn with_a_token_mirror_comes_in_the_same_write_as_auth() {
    let server = start(token_config());
    let addr = server.local_addr();
    let mut alice = Raw::connect(addr);
    alice.line("/auth s3cret");
    assert_eq!(alice.reply(), "OK auth");
    let mut m = Raw::connect(addr);
    let mirror_line = format!("/mirror {}", alice.welcome().key);
    m.line(&mirror_line);
    assert!(m.reply().starts_with("ERR auth-required "));
    m.send(format!("/auth s3cret\n{mirror_line}\n"));
    assert_eq!(m.reply(), "OK auth");
    assert_eq!(m.reply(), format!("OK mirror {}", alice.name()));
    alice.line("/list");
    assert_eq!(alice.reply(), format!("USERS 1 {}", alice.name()));
    // Sent after OK auth, /mirror is too late: the client joined then.
    let mut late = Raw::connect(addr);
    late.line("/auth s3cret");
    assert_eq!(late.reply(), "OK auth");
    late.line(&mirror_line);
    assert_eq!(late.reply(), "ERR bad-args /mirror must be the first line");
    let join = late.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), late.name()));
}

#[test]
fn a_mirror_outlives_its_client_and_goes_unannounced() {
    let (server, mut watcher, mut alice, mut m) = room_with_a_mirror();
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
    let mirror_line = format!("/mirror {}", alice.welcome().key);
    let mut stalled = non_reader_saying(addr, Some(&mirror_line));
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

/// Telnet chatter is no first line, but it cannot hold the `WELCOME` off
/// either: a client that streams option requests is welcomed within the
/// grace all the same, and the answers held for it stay small.
#[test]
fn telnet_chatter_cannot_hold_off_the_welcome() {
    let server = start(config());
    let stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let flood = thread::spawn(move || {
        // IAC DO ECHO, again and again, for a second.
        let chunk = [255u8, 253, 1].repeat(1000);
        while started.elapsed() < Duration::from_secs(1) {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = &stream;
    while !first.ends_with(b"\n") {
        std::io::Read::read_exact(&mut reader, &mut byte).expect("a first line");
        first.push(byte[0]);
    }
    let took = started.elapsed();
    // The flood's writes may be blocked by now (the server answers every
    // request, and this test reads none of it): end them.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    flood.join().unwrap();
    assert!(first.starts_with(b"WELCOME "), "{first:?}");
    assert!(took < GRACE_AND_SLACK, "welcomed after {took:?}");
}

/// A connection still waiting for its first line when the server shuts
/// down gets its `WELCOME`, then `BYE shutdown`: `WELCOME` is the first
/// line of every connection the limits let in.
#[test]
fn a_connection_waiting_for_its_welcome_at_shutdown_gets_it_first() {
    let server = start(config());
    let events = server.events();
    let mut raw = Raw::connect_bare(server.local_addr());
    // Accepted (its session runs), and still silent.
    loop {
        let event = events.recv_timeout(WAIT).expect("no Connected event");
        if matches!(event, tickcast::server::ServerEvent::Connected { .. }) {
            break;
        }
    }
    server.shutdown();
    let first = raw.reply();
    assert!(first.starts_with("WELCOME "), "{first:?}");
    assert_eq!(raw.reply(), "BYE shutdown");
}

/// A mirror outlives the connection it mirrors by 10 s at most (long
/// enough for a redundant client's first connection to come back), so
/// that nobody keeps an unlisted reader after leaving. It goes
/// unannounced, as it came.
#[test]
fn a_mirror_ends_10_s_after_its_client_left() {
    let (_server, mut watcher, alice, m) = room_with_a_mirror();
    drop(alice);
    let left = Instant::now();
    watcher.event_starting("LEAVE ");
    // Events make the broadcaster look at its mirrors: keep talking until
    // the mirror's connection ends (bounded).
    let deadline = left + Duration::from_secs(15);
    let mut socket = m.stream();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let ended = loop {
        n += 1;
        watcher.line(&format!("tick {n}"));
        watcher.event_starting("MSG ");
        if let Ok(0) = std::io::Read::read(&mut socket, &mut buf) {
            break left.elapsed();
        }
        assert!(Instant::now() < deadline, "the mirror is still open");
    };
    assert!(ended >= Duration::from_secs(10), "ended after {ended:?}");
    watcher.assert_quiet("no LEAVE for the mirror");
}
