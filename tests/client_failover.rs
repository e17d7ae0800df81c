//! The client library given several server addresses: it connects to the
//! first that answers, moves to the next when its server goes, and a
//! redundant client puts its two links on two different servers.
//!
//! The servers here are independent single servers (each its own EPOCH),
//! so moving from one to another is a restart for the client: a gap, as
//! expected. What is tested is where the client goes, and that it keeps
//! working there.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};
use support::{WAIT, config, events_until, fast, start};
use tickcast::client::{Client, ClientConfig, Event, Gap, Reconnect};
use tickcast::server::{self, ServerHandle};

/// A loopback address nobody listens on: connecting is refused at once.
fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Polls `done` until it holds, for at most [`WAIT`] (where a client's
/// link lands is seen only from the servers' side).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the client has lost its connection and has a new one
/// ready; returns the events on the way.
fn reconnected(client: &Client) -> Vec<Event> {
    let mut lost = false;
    events_until(client, |e| {
        lost |= matches!(e, Event::Disconnected { .. });
        lost && matches!(e, Event::Connected { .. })
    })
}

/// Says `text` and waits until it comes back as a broadcast.
fn say_and_hear(client: &Client, text: &str) {
    client.say(text).unwrap();
    events_until(
        client,
        |e| matches!(e, Event::Msg { text: t, .. } if t == text),
    );
}

/// How many listed clients `server` has.
fn members(server: &ServerHandle) -> usize {
    server.clients().len()
}

#[test]
fn a_dead_first_address_is_skipped_without_waiting() {
    let live = start(config());
    // A backoff between addresses would show as a 10 s wait.
    let slow_backoff = ClientConfig {
        reconnect: Reconnect {
            initial_delay: Duration::from_secs(10),
            ..Reconnect::default()
        },
        ..fast()
    };
    let started = Instant::now();
    let client = Client::with_config_any([dead_addr(), live.local_addr()], slow_backoff).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(client.peer_addr(), Some(live.local_addr()));
    assert!(client.ping().is_ok());
    // No outage to report: the client never had a connection to lose.
    client.quit("bye").unwrap();
    let events: Vec<Event> = client.events().try_iter().collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. })),
        "{events:#?}"
    );
}

#[test]
fn when_its_server_goes_the_client_moves_to_the_next() {
    let a = start(config());
    let b = start(config());
    let client = Client::with_config_any(
        [a.local_addr(), b.local_addr()],
        ClientConfig {
            name: Some("alice".into()),
            ..fast()
        },
    )
    .unwrap();
    assert_eq!(client.peer_addr(), Some(a.local_addr()));
    say_and_hear(&client, "on a");

    a.shutdown();
    a.join();
    let moved = reconnected(&client);
    // Another server, another EPOCH: a restart, reported.
    assert!(
        moved
            .iter()
            .any(|e| matches!(e, Event::Gap(Gap::Restarted { .. }))),
        "{moved:#?}"
    );
    assert_eq!(client.peer_addr(), Some(b.local_addr()));
    assert_eq!(client.name().as_deref(), Some("alice"));
    assert_eq!(client.list().unwrap(), vec!["alice"]);
    say_and_hear(&client, "on b");
}

#[test]
fn the_client_goes_round_the_list_and_back_to_the_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = listener.local_addr().unwrap();
    let a = server::spawn_on(listener, config()).unwrap();
    let b = start(config());
    let client = Client::with_config_any([a_addr, b.local_addr()], fast()).unwrap();

    a.shutdown();
    a.join();
    reconnected(&client);
    assert_eq!(client.peer_addr(), Some(b.local_addr()));

    // A new server where the first was; the second goes: round to the first.
    let _a = server::spawn_on(TcpListener::bind(a_addr).unwrap(), config()).unwrap();
    b.shutdown();
    b.join();
    reconnected(&client);
    assert_eq!(client.peer_addr(), Some(a_addr));
    say_and_hear(&client, "back on a");
}

#[test]
fn a_redundant_client_puts_its_links_on_the_first_two_that_answer() {
    let a = start(config());
    let b = start(config());
    let client = Client::with_config_any(
        [dead_addr(), a.local_addr(), b.local_addr()],
        ClientConfig {
            redundant: true,
            ..fast()
        },
    )
    .unwrap();
    wait_until("each server has one link", || {
        members(&a) == 1 && members(&b) == 1
    });
    assert_eq!(client.peer_addr(), Some(a.local_addr()));
}

#[test]
fn a_redundant_link_whose_server_goes_moves_where_the_other_is_not() {
    let a = start(config());
    let b = start(config());
    let c = start(config());
    let client = Client::with_config_any(
        [a.local_addr(), b.local_addr(), c.local_addr()],
        ClientConfig {
            redundant: true,
            ..fast()
        },
    )
    .unwrap();
    wait_until("a and b have one link each", || {
        members(&a) == 1 && members(&b) == 1
    });
    a.shutdown();
    a.join();
    // Not to b, where the other link is: to c.
    wait_until("the lost link is on c", || members(&c) == 1);
    assert_eq!(members(&b), 1);
    assert!(client.ping().is_ok());
}

#[test]
fn a_redundant_client_with_one_address_keeps_both_links_there() {
    let server = start(config());
    let _client = Client::with_config_any(
        [server.local_addr()],
        ClientConfig {
            redundant: true,
            ..fast()
        },
    )
    .unwrap();
    // Both connections there, and the second a mirror: listed once.
    wait_until("both links are in", || server.connection_count() == 2);
    wait_until("the first link has joined", || members(&server) == 1);
    thread::sleep(Duration::from_millis(200)); // longer than the WELCOME grace
    assert_eq!(members(&server), 1, "{:?}", server.clients());
}
