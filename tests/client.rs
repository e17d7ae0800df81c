//! The client library against a real server, with a fault-injecting
//! proxy in between: reconnect, resume, redundancy, backoff, timeouts.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::{Raw, WAIT, config, events_until, fast, joined, start};
use tickcast::client::{Client, ClientConfig, ClientError, Closed, Event, Gap, Reconnect};
use tickcast::protocol::{ErrorCode, Reason};
use tickcast::server::{self, Config};

/// `fast()` with a name to take.
fn named(name: &str) -> ClientConfig {
    ClientConfig {
        name: Some(name.into()),
        ..fast()
    }
}

fn msg_text(e: &Event) -> Option<&str> {
    match e {
        Event::Msg { text, .. } => Some(text),
        _ => None,
    }
}

/// Checks what the application saw: broadcast SEQs consecutive (so
/// nothing lost, nothing twice), no gap, and the producer's messages
/// `m0..mN` exactly once, in order.
fn assert_complete(events: &[Event], n: usize) {
    let seqs: Vec<u64> = events.iter().filter_map(Event::seq).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "SEQs jump or repeat: {seqs:?}");
    }
    assert!(
        !events.iter().any(|e| matches!(e, Event::Gap(_))),
        "unexpected gap"
    );
    let texts: Vec<&str> = events
        .iter()
        .filter_map(msg_text)
        .filter(|t| t.starts_with('m'))
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
}

/// Sends `m0..mN` from a raw connection straight to the server, paced so
/// that the stream is steady while the test cuts connections.
fn produce(addr: SocketAddr, n: usize) -> thread::JoinHandle<()> {
    let mut producer = joined(addr);
    thread::spawn(move || {
        for i in 0..n {
            producer.line(&format!("m{i}"));
            thread::sleep(Duration::from_millis(2)); // pacing, not sync
        }
        producer.line("/quit");
        producer.until_closed();
    })
}

#[test]
fn basic_calls() {
    let server = start(config());
    let alice = Client::with_config(server.local_addr(), named("alice")).unwrap();
    let bob = Client::with_config(server.local_addr(), named("bob")).unwrap();
    assert_eq!(alice.name().as_deref(), Some("alice"));
    assert_eq!(alice.list().unwrap(), vec!["alice", "bob"]);
    assert!(alice.ping().unwrap() < WAIT);

    alice.say("/not a command").unwrap();
    let said = events_until(&bob, |e| msg_text(e).is_some());
    assert_eq!(msg_text(said.last().unwrap()), Some("/not a command"));

    alice.msg("bob", "psst").unwrap();
    events_until(
        &bob,
        |e| matches!(e, Event::Dm { from, text } if from == "alice" && text == "psst"),
    );
    let err = alice.msg("nobody", "hi").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchUser));

    let err = bob.nick("ALICE").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NickTaken));
    bob.nick("robert").unwrap();
    assert_eq!(bob.name().as_deref(), Some("robert"));
    assert!(matches!(
        bob.nick("no spaces"),
        Err(ClientError::InvalidName(_))
    ));
    assert!(matches!(
        bob.say("two\nlines"),
        Err(ClientError::InvalidText(_))
    ));

    bob.send_bytes(b"\x00raw\nbytes").unwrap();
    let data = events_until(&alice, |e| matches!(e, Event::Data { .. }));
    match data.last().unwrap() {
        Event::Data { from, payload, .. } => {
            assert_eq!(from, "robert");
            assert_eq!(&payload[..], b"\x00raw\nbytes");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_name_taken_at_connect_is_an_error() {
    let server = start(config());
    let _alice = Client::with_config(server.local_addr(), named("alice")).unwrap();
    let err = Client::with_config(server.local_addr(), named("Alice")).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NickTaken));
}

#[test]
fn tokens() {
    let server = start(Config {
        token: Some("s3cret".into()),
        ..config()
    });
    let ok = Client::with_config(
        server.local_addr(),
        ClientConfig {
            token: Some("s3cret".into()),
            name: Some("insider".into()),
            ..fast()
        },
    )
    .unwrap();
    assert_eq!(ok.list().unwrap(), vec!["insider"]);
    let err = Client::with_config(
        server.local_addr(),
        ClientConfig {
            token: Some("guess".into()),
            ..fast()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed), "{err:?}");
}

#[test]
fn the_client_answers_server_pings() {
    let server = start(Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..config()
    });
    let client = Client::with_config(server.local_addr(), fast()).unwrap();
    let mut pings = 0;
    events_until(&client, |e| {
        assert!(
            !matches!(e, Event::Bye { .. } | Event::Disconnected { .. }),
            "{e:?}"
        );
        if matches!(e, Event::Ping { .. }) {
            pings += 1;
        }
        pings == 3
    });
    assert!(client.list().is_ok());
}

/// A "server" that says WELCOME and then nothing ever again. It swallows
/// what the client says until the client goes away, and tells whether the
/// client's keepalive pinged it.
fn mute_server() -> (SocketAddr, thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mute = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .write_all(b"WELCOME 1 guest-1 2026-11-22T10:00:05.123Z 00ff e1 hi\n")
            .unwrap();
        let mut lines = BufReader::new(stream).lines();
        let mut pinged = false;
        while let Some(Ok(line)) = lines.next() {
            pinged |= line.starts_with("/ping keepalive-");
        }
        pinged
    });
    (addr, mute)
}

#[test]
fn requests_time_out_when_the_server_does_not_answer() {
    let (addr, mute) = mute_server();
    let timeout = Duration::from_millis(300);
    let client = Client::with_config(
        addr,
        ClientConfig {
            request_timeout: timeout,
            ..fast()
        },
    )
    .unwrap();
    let started = Instant::now();
    assert!(matches!(client.list(), Err(ClientError::Timeout)));
    assert!(started.elapsed() >= timeout);
    assert!(matches!(client.ping(), Err(ClientError::Timeout)));
    assert!(matches!(client.nick("x"), Err(ClientError::Timeout)));
    drop(client);
    mute.join().unwrap();
}

#[test]
fn a_server_gone_silent_is_noticed_by_the_keepalive() {
    // A dead peer behind a connection that was never closed.
    let (addr, mute) = mute_server();
    let client = Client::with_config(
        addr,
        ClientConfig {
            keepalive: Some(Duration::from_millis(300)),
            reconnect: Reconnect::never(),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let events = events_until(&client, |e| matches!(e, Event::Closed(_)));
    let cause = events
        .iter()
        .find_map(|e| match e {
            Event::Disconnected { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .expect("no Disconnected event");
    assert!(cause.contains("no sign of life"), "{cause}");
    drop(client);
    assert!(mute.join().unwrap(), "the client never pinged");
}

#[test]
fn every_broadcast_arrives_once_in_order_across_repeated_cuts() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let client = Client::with_config(proxy.addr(), fast()).unwrap();
    const N: usize = 400;
    let producer = produce(server.local_addr(), N);

    let mut cuts = 0;
    let mut received = 0;
    let events = events_until(&client, |e| {
        if msg_text(e).is_some_and(|t| t.starts_with('m')) {
            received += 1;
            // Every 60 messages, cut: all connections, in the middle of a
            // line, or at once.
            if received % 60 == 0 {
                cuts += 1;
                match cuts % 3 {
                    0 => proxy.cut_all(),
                    1 => proxy.cut_inside("MSG ", 3),
                    _ => proxy.cut_inside("\nMSG", 9),
                }
            }
        }
        received == N
    });
    producer.join().unwrap();
    assert_complete(&events, N);
    let resumed = events
        .iter()
        .filter(|e| matches!(e, Event::Resumed { .. }))
        .count();
    assert!(resumed >= 3, "only {resumed} resumes for {cuts} cuts");
}

#[test]
fn a_cut_in_the_middle_of_a_payload_loses_nothing() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let client = Client::with_config(proxy.addr(), fast()).unwrap();
    let mut producer = joined(server.local_addr());
    proxy.cut_inside("DATA ", 20);
    let payload = vec![b'p'; 4000];
    for _ in 0..5 {
        producer.send(format!("/send {}\n", payload.len()));
        producer.send(&payload);
        producer.send("\n");
    }
    let mut got = 0;
    let mut resumed = false;
    let events = events_until(&client, |e| {
        if let Event::Data { payload: p, .. } = e {
            assert_eq!(p.len(), 4000);
            got += 1;
        }
        resumed |= matches!(e, Event::Resumed { .. });
        got == 5 && resumed
    });
    assert!(!proxy.armed(), "the cut did not happen");
    assert!(events.iter().any(|e| matches!(e, Event::Resumed { .. })));
    let seqs: Vec<u64> = events.iter().filter_map(Event::seq).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1);
    }
}

#[test]
fn the_name_comes_back_after_a_reconnect() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let client = Client::with_config(proxy.addr(), named("alice")).unwrap();
    let mut watcher = joined(server.local_addr());
    proxy.cut_all();
    events_until(&client, |e| matches!(e, Event::Disconnected { .. }));
    events_until(&client, |e| matches!(e, Event::Connected { .. }));
    assert_eq!(client.name().as_deref(), Some("alice"));
    watcher.line("/list");
    let users = watcher.reply();
    assert!(users.split(' ').any(|n| n == "alice"), "{users}");
}

#[test]
fn a_server_restart_is_a_gap_not_silence() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let first = server::spawn_on(listener, config()).unwrap();
    let client = Client::with_config(addr, fast()).unwrap();
    let mut producer = joined(addr);
    producer.line("before");
    let before = events_until(&client, |e| msg_text(e) == Some("before"));
    let last_seq = before.iter().filter_map(Event::seq).max().unwrap();

    first.shutdown();
    first.join();
    // The same port, a new run of the server.
    let second = server::spawn_on(TcpListener::bind(addr).unwrap(), config()).unwrap();
    let after_restart = events_until(&client, |e| matches!(e, Event::Connected { .. }));
    assert!(
        after_restart
            .iter()
            .any(|e| *e == Event::Gap(Gap::Restarted { after: last_seq })),
        "{after_restart:#?}"
    );
    let mut producer = joined(second.local_addr());
    producer.line("after");
    events_until(&client, |e| msg_text(e) == Some("after"));
}

#[test]
fn redundant_connections_lose_nothing_when_either_is_cut() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let (client, mut events) = twin(proxy.addr());
    const N: usize = 300;
    let producer = produce(server.local_addr(), N);
    let mut received = 0;
    let mut cuts = Vec::new();
    events.extend(events_until(&client, |e| {
        if msg_text(e).is_some_and(|t| t.starts_with('m')) {
            received += 1;
            // Cut the oldest open connection (the name holder first),
            // then the newest.
            if received == 80 || received == 160 || received == 240 {
                let open = proxy.open();
                let victim = if received == 160 {
                    open[open.len() - 1]
                } else {
                    open[0]
                };
                cuts.push(victim);
                proxy.cut(victim);
            }
        }
        received == N
    }));
    producer.join().unwrap();
    assert_complete(&events, N);
    // The name stayed with the client, and it can still talk.
    assert_eq!(client.name().as_deref(), Some("twin"));
    client.say("still here").unwrap();
    events_until(&client, |e| msg_text(e) == Some("still here"));
    assert_eq!(cuts.len(), 3);
}

/// Waits until the redundant `client` has `n` more links connected.
fn connected(client: &Client, n: usize) -> Vec<Event> {
    let mut count = 0;
    events_until(client, |e| {
        count += usize::from(matches!(e, Event::Connected { .. }));
        count == n
    })
}

/// A redundant client named `twin` at `addr`, once both its links are up,
/// and the events it saw until then.
fn twin(addr: std::net::SocketAddr) -> (Client, Vec<Event>) {
    let config = ClientConfig {
        redundant: true,
        name: Some("twin".into()),
        ..fast()
    };
    let client = Client::with_config(addr, config).unwrap();
    let events = connected(&client, 2);
    (client, events)
}

#[test]
fn a_redundant_client_appears_once() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let (client, _) = twin(server.local_addr());
    // Listed once, counted once: no guest for its second connection.
    watcher.line("/list");
    assert_eq!(watcher.reply(), format!("USERS 2 {} twin", watcher.name()));
    let clients = server.clients();
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert_eq!(server.connection_count(), 3);
    // Announced once: one JOIN (and its rename), one LEAVE.
    let join = watcher.event();
    assert!(join.line.starts_with("JOIN "), "{join:?}");
    let nick = watcher.event();
    assert!(nick.line.ends_with(" twin"), "{nick:?}");
    client.quit("bye").unwrap();
    let leave = watcher.event();
    assert_eq!(leave.line, format!("LEAVE {} twin quit", nick.seq() + 1));
    watcher.assert_quiet("one JOIN, one LEAVE");
}

#[test]
fn a_redundant_clients_links_keep_their_roles_across_reconnects() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let mut watcher = joined(server.local_addr());
    let (client, _) = twin(proxy.addr());
    let listed = |watcher: &mut Raw| {
        watcher.line("/list");
        watcher.reply()
    };
    let once = format!("USERS 2 {} twin", watcher.name());
    // Proxy connections: 0 is link 0 (the holder), 1 its mirror. The
    // mirror comes back as a mirror of the holder…
    proxy.cut(1);
    connected(&client, 1);
    assert_eq!(listed(&mut watcher), once);
    // …and the holder comes back as the holder and takes its name back,
    // while the mirror, up all along, stays one.
    proxy.cut(0);
    connected(&client, 1);
    assert_eq!(client.name().as_deref(), Some("twin"));
    assert_eq!(listed(&mut watcher), once);
    client.say("still here").unwrap();
    events_until(&client, |e| msg_text(e) == Some("still here"));
    // The others saw the holder go and come back, never the mirror.
    let (_, events) =
        watcher.collect_until(|_, events| events.iter().any(|e| e.line.ends_with(" still here")));
    let joins: Vec<&str> = events
        .iter()
        .filter(|e| e.verb() == "JOIN")
        .map(|e| e.line.as_str())
        .collect();
    assert_eq!(
        joins.len(),
        2,
        "the first one and the holder's return: {events:#?}"
    );
}

#[test]
fn a_redundant_link_that_lags_is_waited_for_not_reported_as_a_gap() {
    // Link 0 is cut and comes back after more events than the history
    // holds, so its `/resume` gets `ERR resume-gap`. But link 1 is up and
    // has every event, only it is behind (the proxy holds its bytes): the
    // client must wait for it, not report a gap and drop its events.
    let server = start(Config {
        history: 5,
        ..config()
    });
    let proxy = Proxy::start(server.local_addr());
    let client = Client::with_config(
        proxy.addr(),
        ClientConfig {
            redundant: true,
            ..fast()
        },
    )
    .unwrap();
    // Wait until both links are up (link 1 a mirror of link 0) and the
    // stream has started (link 0's JOIN delivered).
    let (mut connected, mut joins) = (0, 0);
    let mut events = events_until(&client, |e| {
        match e {
            Event::Connected { .. } => connected += 1,
            Event::Join { .. } => joins += 1,
            _ => {}
        }
        connected == 2 && joins == 1
    });
    // Proxy connections: 0 is link 0 (made first, by `with_config`), 1 is
    // link 1.
    proxy.hold(1, true);
    proxy.refuse(true);
    proxy.cut(0);
    events.extend(events_until(&client, |e| {
        matches!(e, Event::Disconnected { link: 0, .. })
    }));
    const N: usize = 20;
    let mut producer = joined(server.local_addr());
    for i in 0..N {
        producer.line(&format!("m{i}"));
    }
    for _ in 0..N {
        producer.event_starting("MSG ");
    }
    // Link 0 comes back and resumes past the history's reach.
    proxy.refuse(false);
    events.extend(events_until(&client, |e| {
        matches!(e, Event::Resumed { link: 0, .. })
    }));
    proxy.hold(1, false);
    events.extend(events_until(&client, |e| msg_text(e) == Some("m19")));
    let from_producer: Vec<Event> = events
        .into_iter()
        .skip_while(|e| !matches!(e, Event::Join { .. }))
        .collect();
    assert_complete(&from_producer, N);
}

#[test]
fn backoff_does_not_hammer_a_server_that_is_down() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let max_delay = Duration::from_millis(200);
    let client = Client::with_config(
        proxy.addr(),
        ClientConfig {
            reconnect: Reconnect {
                initial_delay: Duration::from_millis(20),
                max_delay,
                ..Reconnect::default()
            },
            keepalive: None,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    proxy.refuse(true);
    proxy.cut_all();
    let since = Instant::now();
    let window = Duration::from_millis(1500);
    // Watch the reconnect attempts for a while (time passing is the
    // point here).
    let mut delays = Vec::new();
    while since.elapsed() < window {
        if let Ok(Event::Reconnecting { delay, .. }) =
            client.events().recv_timeout(Duration::from_millis(50))
        {
            delays.push(delay);
        }
    }
    let attempts = proxy.attempts_since(since);
    // Waits of 10-20, 20-40, 40-80, 80-160, then 100-200 ms: at most about
    // 15 attempts fit in 1.5 s. Without backoff there would be hundreds.
    assert!(attempts <= 18, "{attempts} attempts in {window:?}");
    assert!(attempts >= 3, "it stopped trying: {attempts}");
    assert!(delays.iter().all(|d| *d <= max_delay), "{delays:?}");
    assert!(delays.len() >= 3);

    proxy.refuse(false);
    events_until(&client, |e| matches!(e, Event::Connected { .. }));
    assert!(client.ping().is_ok());
}

#[test]
fn giving_up_closes_the_client() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let client = Client::with_config(
        proxy.addr(),
        ClientConfig {
            reconnect: Reconnect {
                initial_delay: Duration::from_millis(5),
                max_attempts: Some(2),
                ..Reconnect::default()
            },
            keepalive: None,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    proxy.refuse(true);
    proxy.cut_all();
    let events = events_until(&client, |e| matches!(e, Event::Closed(_)));
    assert_eq!(events.last(), Some(&Event::Closed(Closed::GaveUp)));
    assert!(matches!(client.say("x"), Err(ClientError::Closed)));
}

#[test]
fn quit_says_goodbye_after_everything_owed() {
    let server = start(config());
    let client = Client::with_config(server.local_addr(), fast()).unwrap();
    for i in 0..50 {
        client.say(&format!("m{i}")).unwrap();
    }
    client.quit("done").unwrap();
    let events: Vec<Event> = client.events().try_iter().collect();
    assert_complete(&events, 50);
    let tail: Vec<&Event> = events.iter().rev().take(2).collect();
    assert_eq!(tail[0], &Event::Closed(Closed::Quit));
    assert_eq!(
        tail[1],
        &Event::Bye {
            link: 0,
            reason: Reason::Quit
        }
    );
}

#[test]
fn connect_errors_are_reported() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    assert!(matches!(
        Client::connect(addr),
        Err(ClientError::Connect(_))
    ));

    let server = start(Config {
        max_clients: 1,
        ..config()
    });
    let _first = Client::connect(server.local_addr()).unwrap();
    let err = Client::connect(server.local_addr()).unwrap_err();
    assert!(
        matches!(err, ClientError::Refused(Reason::ServerFull)),
        "{err:?}"
    );
}

#[test]
fn a_redundant_client_delivers_its_own_join_however_its_links_race() {
    // The second link connects as soon as the first is ready, maybe
    // before the first link's own JOIN has been read, and becomes its
    // mirror; whichever the client hears from first, the stream must not
    // start past that JOIN (a quiet room or not).
    let server = start(config());
    for _ in 0..100 {
        let client = Client::with_config(
            server.local_addr(),
            ClientConfig {
                redundant: true,
                ..fast()
            },
        )
        .unwrap();
        let mut first_link = None;
        let events = events_until(&client, |e| {
            if let Event::Welcome { link: 0, name, .. } = e {
                first_link = Some(name.clone());
            }
            matches!(e, Event::Join { name, .. } if Some(name) == first_link.as_ref())
        });
        let joins = events.iter().filter(|e| matches!(e, Event::Join { .. }));
        assert_eq!(joins.count(), 1, "{events:#?}");
    }
}

#[test]
fn an_event_too_big_to_read_is_a_gap_and_the_stream_goes_on() {
    let server = start(config());
    let client = Client::with_config(
        server.local_addr(),
        ClientConfig {
            max_line: 200,
            max_payload: 100,
            ..fast()
        },
    )
    .unwrap();
    events_until(&client, |e| matches!(e, Event::Join { .. }));

    // A notification longer than the client's line limit, then one that fits.
    server.notify(&"x".repeat(500)).unwrap();
    server.notify("fits").unwrap();
    let events = events_until(
        &client,
        |e| matches!(e, Event::Tick { text, .. } if text == "fits"),
    );
    let gap = events.iter().find_map(|e| match e {
        Event::Gap(Gap::Unreadable { seq }) => Some(*seq),
        _ => None,
    });
    let tick = events.last().unwrap().seq().unwrap();
    assert_eq!(gap, Some(tick - 1), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Unreadable { .. })));

    // A payload over the client's limit: skipped, not a reason to disconnect.
    let mut sender = joined(server.local_addr());
    sender.send(format!("/send 1000\n{}\n", "y".repeat(1000)));
    sender.line("after");
    let events = events_until(&client, |e| msg_text(e) == Some("after"));
    let after = events.last().unwrap().seq().unwrap();
    assert!(
        events.contains(&Event::Gap(Gap::Unreadable { seq: after - 1 })),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. })),
        "{events:?}"
    );
}
