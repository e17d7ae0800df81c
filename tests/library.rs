//! The server as a library: notifications, events, listing clients,
//! sending to one client, and shutting down.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{WAIT, config, joined, named, start};
use tickcast::protocol::Reason;
use tickcast::server::{ClientId, Config, ServerError, ServerEvent};

/// The next event that `keep` accepts (bounded wait).
fn next_event(
    events: &crossbeam_channel::Receiver<ServerEvent>,
    mut keep: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let event = events
            .recv_timeout(left)
            .expect("timed out waiting for an event");
        if keep(&event) {
            return event;
        }
    }
}

#[test]
fn notify_goes_out_as_tick() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    server.notify("EURUSD 1.0842").unwrap();
    let tick = a.event();
    let f: Vec<&str> = tick.line.splitn(4, ' ').collect();
    assert_eq!((f[0], f[3]), ("TICK", "EURUSD 1.0842"));
    assert_eq!(
        server.notify("two\nlines"),
        Err(ServerError::InvalidText(
            tickcast::protocol::TextError::ControlCharacter
        ))
    );
}

#[test]
fn tick_text_comes_from_the_embedding_program() {
    let server = start(Config {
        tick: Some(Duration::from_millis(20)),
        tick_text: Some(Arc::new(|info| {
            format!("{} here, next is {}\nsecond line", info.clients, info.seq)
        })),
        ..config()
    });
    let mut a = joined(server.local_addr());
    let tick = a.event_starting("TICK ");
    let text = tick.line.splitn(4, ' ').nth(3).unwrap().to_string();
    assert_eq!(
        text,
        format!("1 here, next is {} second line", tick.seq()),
        "control characters become spaces"
    );
}

#[test]
fn events_follow_what_clients_do() {
    let server = start(config());
    let events = server.events();
    let mut a = named(server.local_addr(), "alice");
    let id = ClientId(a.welcome().id);
    a.line("hi all");
    a.send("/send 2\nok\n");
    a.line("/quit");
    a.until_closed();

    // Connection events and broadcast events are each in order; between
    // the two kinds there is no order (a Disconnected may come before the
    // Left), so collect until both endings are in.
    let mut seen = Vec::new();
    let mut endings = 0;
    while endings < 2 {
        let e = next_event(&events, |_| true);
        if matches!(
            e,
            ServerEvent::Disconnected { .. } | ServerEvent::Left { .. }
        ) {
            endings += 1;
        }
        seen.push(e);
    }
    let disconnected = seen
        .iter()
        .position(|e| matches!(e, ServerEvent::Disconnected { .. }))
        .unwrap();
    let last = seen.remove(disconnected);
    assert!(
        matches!(&last, ServerEvent::Disconnected { name, reason: Reason::Quit, .. } if name == "alice")
    );
    let peer = a.stream().local_addr().unwrap();
    assert_eq!(seen[0], ServerEvent::Connected { id, peer });
    assert!(
        matches!(&seen[1], ServerEvent::Joined { seq: 1, id: i, name } if *i == id && name == &format!("guest-{id}"))
    );
    assert!(matches!(&seen[2], ServerEvent::Renamed { seq: 2, new, .. } if new == "alice"));
    assert!(
        matches!(&seen[3], ServerEvent::Message { seq: 3, name, text, .. } if name == "alice" && text == "hi all")
    );
    assert!(matches!(&seen[4], ServerEvent::Payload { seq: 4, bytes, .. } if &bytes[..] == b"ok"));
    assert!(matches!(
        &seen[5],
        ServerEvent::Left {
            seq: 5,
            reason: Reason::Quit,
            ..
        }
    ));
}

#[test]
fn clients_are_listed_and_reachable_by_id_or_name() {
    let server = start(config());
    let mut a = named(server.local_addr(), "alice");
    let mut b = joined(server.local_addr());
    a.event_starting("JOIN ");
    let clients = server.clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0].name, "alice");
    assert_eq!(clients[1].name, b.name());
    assert_eq!(clients[1].peer, b.stream().local_addr().unwrap());

    server.send_to("ALICE", "for alice only").unwrap();
    assert_eq!(a.reply(), "DM * for alice only");
    server.send_to(clients[1].id, "and you").unwrap();
    assert_eq!(b.reply(), "DM * and you");
    assert_eq!(
        server.send_to("nobody", "x"),
        Err(ServerError::NoSuchClient)
    );
    assert_eq!(
        server.send_to(ClientId(999), "x"),
        Err(ServerError::NoSuchClient)
    );
    a.assert_quiet("dm-only-to-alice");
}

#[test]
fn a_program_that_stops_reading_events_does_not_stall_the_server() {
    let server = start(Config {
        event_capacity: 4,
        ..config()
    });
    let mut a = joined(server.local_addr());
    for n in 0..50 {
        a.line(&format!("line {n}"));
    }
    for _ in 0..50 {
        a.event_starting("MSG ");
    }
    assert!(server.dropped_events() > 0);
}

#[test]
fn shutdown_delivers_what_was_accepted_then_says_bye() {
    let server = start(config());
    let events = server.events();
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    a.event();
    for n in 0..200 {
        a.line(&format!("last words {n}"));
    }
    // Once the PONG is back, a's session has handed every line before it
    // to the broadcaster: they were accepted.
    a.line("/ping sync");
    assert_eq!(a.reply(), "PONG sync");
    server.shutdown();
    for c in [&mut a, &mut b] {
        let (replies, events) = c.until_closed();
        assert_eq!(replies.last().map(String::as_str), Some("BYE shutdown"));
        let msgs = events.iter().filter(|e| e.verb() == "MSG").count();
        assert_eq!(msgs, 200, "every accepted line delivered");
        assert!(
            events.iter().all(|e| e.verb() != "LEAVE"),
            "no LEAVE at shutdown"
        );
    }
    server.join();
    let disconnects: Vec<Reason> = events
        .try_iter()
        .filter_map(|e| match e {
            ServerEvent::Disconnected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(disconnects, vec![Reason::Shutdown, Reason::Shutdown]);
}

#[test]
fn a_panicking_tick_text_stops_the_server_instead_of_leaving_it_half_alive() {
    let server = start(Config {
        tick: Some(Duration::from_millis(300)),
        tick_text: Some(Arc::new(|_| panic!("the tick text failed"))),
        ..config()
    });
    let mut a = joined(server.local_addr());
    // The broadcaster's panic stops the whole server, cleanly.
    let finished = server.finished();
    assert_eq!(
        finished.recv_timeout(WAIT),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    );
    let (replies, _) = a.until_closed();
    assert_eq!(replies.last().map(String::as_str), Some("BYE shutdown"));
}

#[test]
fn new_connections_are_refused_after_shutdown() {
    let server = start(config());
    let addr = server.local_addr();
    server.shutdown();
    server.join();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn bad_settings_are_refused() {
    for (config, why) in [
        (
            Config {
                write_timeout: Duration::ZERO,
                ..Config::default()
            },
            "--write-timeout-ms",
        ),
        (
            Config {
                max_line: 0,
                ..Config::default()
            },
            "--max-line",
        ),
        (
            Config {
                token: Some("two words".into()),
                ..Config::default()
            },
            "--token",
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = tickcast::server::spawn_on(listener, config).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
}
