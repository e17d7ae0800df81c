//! Every limit and its error, and bad input: the server answers clearly or
//! drops that one client, and the others never notice.

mod support;

use socket2::{Domain, Socket, Type};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use support::{Raw, config, joined, non_reader, start};
use tickcast::server::Config;

#[test]
fn overlong_lines_get_one_error_and_the_connection_stays() {
    let server = start(Config {
        max_line: 64,
        ..config()
    });
    let mut a = joined(server.local_addr());
    let exact = "x".repeat(64);
    a.line(&exact);
    assert!(a.event().line.ends_with(&exact));
    // The CR before the LF does not count.
    a.send(format!("{exact}\r\n"));
    assert!(a.event().line.ends_with(&exact));
    a.line(&"y".repeat(65));
    assert!(a.reply().starts_with("ERR line-too-long "));
    a.line("still here");
    assert!(a.event().line.ends_with(" still here"));
}

#[test]
fn endless_garbage_costs_one_error() {
    let server = start(Config {
        max_line: 64,
        ..config()
    });
    let mut a = joined(server.local_addr());
    // A megabyte without a newline, in pieces.
    let chunk = vec![b'g'; 64 * 1024];
    for _ in 0..16 {
        a.send(&chunk);
    }
    assert!(a.reply().starts_with("ERR line-too-long "));
    a.send("\nafter the garbage\n");
    assert!(a.event().line.ends_with(" after the garbage"));
    // Exactly one ERR: the next reply is the PONG.
    a.assert_quiet("one-error");
}

#[test]
fn text_must_be_utf8_without_control_characters() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    // (Not 0xFF: that byte starts a telnet command; see tests/protocol.rs.)
    a.send(b"\xfe\xc3( bad\n");
    assert!(a.reply().starts_with("ERR invalid-utf8 "));
    for bad in [
        &b"del\x7f"[..],
        b"c1 \xc2\x85 next line",
        b"cr\rin the middle",
        b"\x1b[31mred",
        b"nul\x00",
    ] {
        a.send(bad);
        a.send(b"\n");
        let reply = a.reply();
        assert!(reply.starts_with("ERR invalid-text "), "{bad:?}: {reply}");
    }
    // TAB is allowed, and so is any printable Unicode.
    a.line("tab\there caf\u{e9} \u{1f600}");
    assert!(a.event().line.ends_with(" tab\there caf\u{e9} \u{1f600}"));
    a.assert_quiet("text-done");
}

#[test]
fn oversized_payload_is_refused_without_reading_it() {
    let server = start(Config {
        max_payload: 100,
        ..config()
    });
    let mut watcher = joined(server.local_addr());
    for len in ["101", "99999999999999999999999999"] {
        let mut a = joined(server.local_addr());
        watcher.event(); // a's JOIN
        a.line(&format!("/send {len}"));
        let (replies, _) = a.until_closed();
        assert_eq!(
            replies.last().map(String::as_str),
            Some("BYE payload-too-large")
        );
        let leave = watcher.event();
        assert_eq!(
            leave.line,
            format!("LEAVE {} {} payload-too-large", leave.seq(), a.name())
        );
    }
    // At the limit it goes through.
    watcher.send(format!("/send 100\n{}\n", "p".repeat(100)));
    assert_eq!(watcher.event().payload.unwrap().len(), 100);
}

#[test]
fn a_client_vanishing_mid_payload_or_mid_line_hurts_nobody() {
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    for partial in [&b"/send 100\nonly ten b"[..], b"half a li"] {
        let mut a = joined(server.local_addr());
        watcher.event();
        a.send(partial);
        let name = a.name().to_string();
        drop(a);
        let leave = watcher.event();
        assert_eq!(leave.line, format!("LEAVE {} {name} closed", leave.seq()));
    }
    watcher.line("all fine");
    assert!(watcher.event().line.ends_with(" all fine"));
}

#[test]
fn client_limit_sends_server_full_alone() {
    let server = start(Config {
        max_clients: 2,
        ..config()
    });
    let a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    let mut refused = Raw::connect_bare(server.local_addr());
    let (replies, events) = refused.until_closed();
    assert_eq!(replies, vec!["BYE server-full"]);
    assert!(events.is_empty());
    // A place frees up when someone leaves.
    drop(a);
    b.event_starting("LEAVE ");
    joined(server.local_addr());
}

/// A client socket whose source address is `from` (any 127.0.0.0/8
/// address works on loopback).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&from.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

#[test]
fn per_ip_limit_counts_each_address() {
    let server = start(Config {
        max_per_ip: Some(2),
        ..config()
    });
    let addr = server.local_addr();
    let _a = Raw::connect(addr);
    let _b = Raw::connect(addr);
    let mut third = Raw::connect_bare(addr);
    assert_eq!(third.until_closed().0, vec!["BYE too-many-connections"]);
    // Another address has its own allowance.
    let other = Raw::from_stream(connect_from("127.0.0.2:0", addr));
    let mut other = other;
    assert!(other.reply().starts_with("WELCOME "));
}

#[test]
fn rate_limit_refuses_lines_and_skips_refused_payloads() {
    let rate = 5; // burst: 10
    let server = start(Config {
        max_rate: Some(rate),
        ..config()
    });
    let mut a = joined(server.local_addr());
    let start = Instant::now();
    let mut burst = String::new();
    for n in 0..15 {
        burst.push_str(&format!("line {n}\n"));
    }
    // The 16th line is a /send; if refused, its payload "abc" is skipped
    // and must not turn up as a line of its own.
    burst.push_str("/send 3\nabc\n");
    a.send(&burst);
    let (replies, events) = a.collect_until(|r, e| r.len() + e.len() == 16);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        replies.iter().all(|r| r.starts_with("ERR rate-limited ")),
        "{replies:?}"
    );
    assert!(
        events.iter().all(|e| !e.line.ends_with(" abc")),
        "{events:?}"
    );
    let allowed = events.len() as f64;
    assert!(allowed >= 10.0, "the burst is twice the rate: {events:?}");
    assert!(
        allowed <= 10.0 + elapsed * f64::from(rate) + 1.0,
        "{allowed} lines passed in {elapsed:.2}s"
    );
    if elapsed < 1.0 {
        assert!(!replies.is_empty(), "nothing was rate-limited");
    }
    // The connection stays. Tokens come back with time (time passing is
    // the very thing under test here, so this sleep is the condition, not
    // a synchronisation).
    thread::sleep(Duration::from_millis(600));
    a.line("after the pause");
    assert!(a.event().line.ends_with(" after the pause"));
}

/// A client that never reads, with a tiny receive buffer so that it
/// stalls quickly.

#[test]
fn non_readers_are_dropped_and_healthy_clients_get_everything() {
    let write_timeout = Duration::from_millis(500);
    let server = start(Config {
        write_timeout,
        ..config()
    });
    let addr = server.local_addr();
    let mut healthy = joined(addr);
    // Three clients that stop reading at once: together they must cost
    // the others about one write timeout, not three.
    let stalled: Vec<Raw> = (0..3).map(|_| non_reader(addr)).collect();
    let stalled_names: Vec<String> = stalled.iter().map(|s| s.name().to_string()).collect();
    for _ in 0..3 {
        healthy.event_starting("JOIN ");
    }

    // 48 payloads of 256 KiB: far more than the socket buffers of a
    // non-reader hold.
    const COUNT: usize = 48;
    let payload = vec![b'z'; 256 * 1024];
    let mut sender = healthy.stream().try_clone().unwrap();
    let writer = thread::spawn(move || {
        for _ in 0..COUNT {
            writeln!(sender, "/send {}", payload.len()).unwrap();
            sender.write_all(&payload).unwrap();
            sender.write_all(b"\n").unwrap();
        }
    });

    let mut data = 0;
    let mut leaves = Vec::new();
    let mut seqs = Vec::new();
    let mut last_at = Instant::now();
    let mut longest_wait = Duration::ZERO;
    while data < COUNT || leaves.len() < 3 {
        let event = healthy.event();
        longest_wait = longest_wait.max(last_at.elapsed());
        last_at = Instant::now();
        seqs.push(event.seq());
        match event.verb() {
            "DATA" => data += 1,
            "LEAVE" => leaves.push(event.line),
            _ => {}
        }
    }
    writer.join().unwrap();
    // Every event, in order, none missing.
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1);
    }
    for name in &stalled_names {
        assert!(
            leaves
                .iter()
                .any(|l| l.ends_with(&format!(" {name} slow-consumer"))),
            "{name} not dropped as slow-consumer: {leaves:?}"
        );
    }
    eprintln!("longest wait of the healthy client: {longest_wait:?}");
    // The healthy client waited about one write timeout (505-512 ms here,
    // also under two CPU hogs). The bound allows twice that for a loaded
    // machine; stalls that cost one timeout each, one after the other,
    // would pass three.
    assert!(
        longest_wait < write_timeout * 2,
        "healthy client waited {longest_wait:?} for its next event"
    );
    // The stalled clients were disconnected (possibly in the middle of a
    // frame: that is what dropping a client that stopped reading means).
    for mut s in stalled {
        s.drain_to_eof();
    }
}

#[test]
fn idle_clients_are_pinged_then_dropped() {
    let server = start(Config {
        idle_timeout: Some(Duration::from_millis(600)),
        ..config()
    });
    // The clock starts before the connection, so it never runs behind the
    // server's: "too early" below cannot be a measuring artefact.
    let started = Instant::now();
    let mut silent = joined(server.local_addr());
    let mut watcher = joined(server.local_addr());
    let ping = silent.reply();
    assert!(ping.starts_with("PING "), "{ping}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "PING came too early"
    );
    // The watcher is subject to the same timeout: a byte resets its clock.
    watcher.line("/pong");
    let (replies, _) = silent.until_closed();
    assert_eq!(replies, vec!["BYE timeout"]);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "dropped too early"
    );
    let leave = watcher.event_starting("LEAVE ");
    assert_eq!(
        leave.line,
        format!("LEAVE {} {} timeout", leave.seq(), silent.name())
    );
}

#[test]
fn answering_pings_keeps_a_client_connected() {
    let idle = Duration::from_millis(400);
    let server = start(Config {
        idle_timeout: Some(idle),
        ..config()
    });
    let mut a = joined(server.local_addr());
    let started = Instant::now();
    // Three PINGs answered: well past the idle timeout, still connected.
    for _ in 0..3 {
        let ping = a.reply();
        let token = ping.strip_prefix("PING ").expect("a PING");
        a.line(&format!("/pong {token}"));
    }
    assert!(started.elapsed() > idle);
    a.line("/ping alive");
    assert_eq!(a.reply(), "PONG alive");
}

/// `--line-timeout` counts from a line's first byte to its LF: after an
/// overlong line has ended, a client may stay quiet as long as it likes.
#[test]
fn a_quiet_client_after_an_overlong_line_is_not_timed_out() {
    let line_timeout = Duration::from_millis(500);
    let server = start(Config {
        max_line: 64,
        line_timeout: Some(line_timeout),
        ..config()
    });
    let mut a = joined(server.local_addr());
    let mut long = vec![b'x'; 1000];
    long.push(b'\n');
    a.send(&long);
    assert!(a.reply().starts_with("ERR line-too-long "));
    // Quiet for three line timeouts (nothing to wait for: this is the
    // absence of a BYE), then still served.
    thread::sleep(3 * line_timeout);
    a.assert_quiet("still-here");
}
