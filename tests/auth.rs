//! Tokens: before a good `/auth` a client may only `/auth` or `/quit`, is
//! not listed, and gets no broadcast.

mod support;

use support::{Raw, config, joined, start};
use tickcast::server::Config;

fn token_config() -> Config {
    Config {
        token: Some("s3cret".into()),
        ..config()
    }
}

/// Connects and authenticates; returns the client after its own JOIN.
fn authed(addr: std::net::SocketAddr) -> Raw {
    let mut c = Raw::connect(addr);
    c.line("/auth s3cret");
    assert_eq!(c.reply(), "OK auth");
    let join = c.event();
    assert_eq!(join.line, format!("JOIN {} {}", join.seq(), c.name()));
    c
}

#[test]
fn everything_but_auth_and_quit_needs_the_token() {
    let server = start(token_config());
    let mut insider = authed(server.local_addr());
    let mut a = Raw::connect(server.local_addr());
    for line in [
        "hello",
        "/list",
        "/nick x",
        "/ping",
        "/frobnicate",
        "/send ten",
    ] {
        a.line(line);
        let reply = a.reply();
        assert!(reply.starts_with("ERR auth-required "), "{line}: {reply}");
    }
    // A refused /send has its payload skipped: "abc" is not a line.
    a.send("/send 3\nabc\n");
    assert!(a.reply().starts_with("ERR auth-required "));

    // Not listed, and not sent broadcasts.
    insider.line("/list");
    assert_eq!(insider.reply(), format!("USERS 1 {}", insider.name()));
    insider.line("said before a joined");
    let said = insider.event();

    a.line("/auth s3cret");
    assert_eq!(a.reply(), "OK auth", "the payload was not taken for a line");
    let first = a.event();
    assert_eq!(first.line, format!("JOIN {} {}", first.seq(), a.name()));
    assert!(first.seq() > said.seq());
    insider.line("/list");
    assert_eq!(insider.reply().split(' ').nth(1), Some("2"));
}

#[test]
fn a_wrong_token_is_goodbye() {
    let server = start(token_config());
    for attempt in ["/auth guess", "/auth", "/auth s3cre", "/auth s3cret2"] {
        let mut a = Raw::connect(server.local_addr());
        a.line(attempt);
        assert_eq!(a.until_closed().0, vec!["BYE auth-failed"], "{attempt}");
    }
}

#[test]
fn quit_works_before_auth() {
    let server = start(token_config());
    let mut a = Raw::connect(server.local_addr());
    a.line("/quit");
    assert_eq!(a.until_closed().0, vec!["BYE quit"]);
}

#[test]
fn unauthenticated_connections_count_against_the_limit() {
    let server = start(Config {
        max_clients: 1,
        ..token_config()
    });
    let _waiting = Raw::connect(server.local_addr());
    let mut second = Raw::connect_bare(server.local_addr());
    assert_eq!(second.until_closed().0, vec!["BYE server-full"]);
}

#[test]
fn auth_without_a_server_token_is_ok() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.line("/auth whatever");
    assert_eq!(a.reply(), "OK auth");
    a.line("/auth");
    assert_eq!(a.reply(), "OK auth");
    a.assert_quiet("no-second-join");
}
