//! Every row of the protocol contract, over a real socket, with raw bytes.

mod support;

use support::{Raw, config, joined, named, start};

#[test]
fn welcome_comes_first_and_names_the_connection() {
    let server = start(config());
    let mut a = Raw::connect_bare(server.local_addr());
    let line = a.reply();
    let w = support::parse_welcome(&line);
    assert_eq!(w.name, format!("guest-{}", w.id));
    assert!(
        w.key.len() >= 32 && w.key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(!w.epoch.is_empty());
    // TIME: RFC 3339, UTC, milliseconds.
    assert_eq!(w.time.len(), "2026-11-22T10:00:05.123Z".len(), "{line}");
    assert!(
        w.time.ends_with('Z') && w.time.as_bytes()[19] == b'.',
        "{line}"
    );
    // Already listed when WELCOME arrives, and the JOIN follows.
    a.line("/list");
    assert_eq!(a.reply(), format!("USERS 1 {}", w.name));
    assert_eq!(a.event_line(), format!("JOIN 1 {}", w.name));

    let b = Raw::connect(server.local_addr());
    assert_eq!(b.welcome().epoch, w.epoch, "one run, one epoch");
    assert_ne!(b.welcome().key, w.key);
    assert!(b.welcome().id > w.id);

    let other = start(config());
    let c = Raw::connect(other.local_addr());
    assert_ne!(c.welcome().epoch, w.epoch, "a new run has a new epoch");
}

#[test]
fn a_line_reaches_everyone_with_the_same_seq() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    let b_join = a.event();
    assert_eq!(b_join.line, format!("JOIN {} {}", b_join.seq(), b.name()));

    a.line("hello  world\t!");
    let at_a = a.event();
    let at_b = b.event();
    assert_eq!(at_a, at_b);
    assert_eq!(
        at_a.line,
        format!("MSG {} {} hello  world\t!", b_join.seq() + 1, a.name())
    );
}

#[test]
fn telnet_line_ends_and_slash_escapes() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.send("crlf line\r\n//etc/motd\r\n\n\r\n");
    let name = a.name().to_string();
    assert!(a.event().line.ends_with(&format!("{name} crlf line")));
    assert!(a.event().line.ends_with(&format!("{name} /etc/motd")));
    // The empty lines produced nothing at all.
    a.assert_quiet("after-empty-lines");
}

#[test]
fn nick_renames_and_announces() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    a.event(); // b's JOIN
    let old = a.name().to_string();

    a.line("/nick Alice");
    assert_eq!(a.reply(), "OK nick Alice");
    let nick = b.event();
    assert_eq!(nick.line, format!("NICK {} {old} Alice", nick.seq()));
    assert_eq!(a.event(), nick);

    // Same name again: OK, no NICK.
    a.line("/nick Alice");
    assert_eq!(a.reply(), "OK nick Alice");
    // Only the case: a rename like any other.
    a.line("/nick alice");
    assert_eq!(a.reply(), "OK nick alice");
    assert!(b.event().line.ends_with(" Alice alice"));
    a.event();
    a.assert_quiet("no-more-nicks");

    // Names are unique without regard to case.
    b.line("/nick ALICE");
    assert!(b.reply().starts_with("ERR nick-taken "));
    b.assert_quiet("taken");
}

#[test]
fn nick_rules() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let b = joined(server.local_addr());
    let too_long = "n".repeat(33);
    let max = "m".repeat(32);
    for bad in ["has space", "caf\u{e9}", "a/b", too_long.as_str(), b.name()] {
        a.line(&format!("/nick {bad}"));
        let reply = a.reply();
        assert!(
            reply.starts_with("ERR nick-invalid "),
            "/nick {bad}: {reply}"
        );
    }
    a.line("/nick");
    assert!(a.reply().starts_with("ERR bad-args "));
    let own_guest = a.name().to_string();
    let own_upper = own_guest.to_uppercase();
    for good in [
        max.as_str(),
        "x.Y-z_0",
        own_upper.as_str(),
        own_guest.as_str(),
    ] {
        a.line(&format!("/nick {good}"));
        assert_eq!(a.reply(), format!("OK nick {good}"));
    }
}

#[test]
fn list_is_sorted_without_regard_to_case() {
    let server = start(config());
    let _c = named(server.local_addr(), "carol");
    let _b = named(server.local_addr(), "Bob");
    let mut a = named(server.local_addr(), "alice");
    a.line("/list");
    assert_eq!(a.reply(), "USERS 3 alice Bob carol");
}

#[test]
fn direct_messages() {
    let server = start(config());
    let mut a = named(server.local_addr(), "alice");
    let mut b = named(server.local_addr(), "bob");
    a.line("/msg BOB psst, over here");
    assert_eq!(a.reply(), "OK msg bob");
    assert_eq!(b.reply(), "DM alice psst, over here");
    a.line("/msg nobody hi");
    assert!(a.reply().starts_with("ERR no-such-user "));
    a.line("/msg bob");
    assert!(a.reply().starts_with("ERR bad-args "));
    // Nobody else saw anything.
    b.assert_quiet("dm-only");
}

#[test]
fn send_broadcasts_raw_bytes() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    a.event();
    let payload = b"line one\nline two\r\n\x00\xff binary";
    a.send(format!("/send {}\n", payload.len()));
    a.send(payload);
    a.send("\n/send 0\n\r\n");
    let data = b.event();
    assert_eq!(
        data.line,
        format!("DATA {} {} {}", data.seq(), a.name(), payload.len())
    );
    assert_eq!(data.payload.as_deref(), Some(&payload[..]));
    let empty = b.event();
    assert_eq!(
        empty.line,
        format!("DATA {} {} 0", data.seq() + 1, a.name())
    );
    assert_eq!(a.event(), data);
    assert_eq!(a.event(), empty);

    a.line("/send ten");
    assert!(a.reply().starts_with("ERR bad-args "));
    a.line("/send -1");
    assert!(a.reply().starts_with("ERR bad-args "));
    a.assert_quiet("send-done");
}

#[test]
fn payload_not_followed_by_lf_is_a_protocol_error() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    a.event();
    a.send("/send 3\nabcX\n");
    let (replies, _) = a.until_closed();
    assert_eq!(
        replies.last().map(String::as_str),
        Some("BYE protocol-error")
    );
    let leave = b.event();
    assert_eq!(
        leave.line,
        format!("LEAVE {} {} protocol-error", leave.seq(), a.name())
    );
}

#[test]
fn ping_pong_help_and_unknown_commands() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    a.line("/ping");
    assert_eq!(a.reply(), "PONG");
    a.line("/ping some token");
    assert_eq!(a.reply(), "PONG some token");
    a.line("/pong 1");
    a.line("/help");
    let mut help = Vec::new();
    loop {
        let line = a.reply();
        if line == "OK help" {
            break;
        }
        assert!(line.starts_with("HELP "), "{line}");
        help.push(line);
    }
    for verb in [
        "/nick", "/list", "/msg", "/send", "/ping", "/resume", "/auth", "/quit",
    ] {
        assert!(help.iter().any(|l| l.contains(verb)), "no help for {verb}");
    }
    a.line("/frobnicate now");
    assert!(a.reply().starts_with("ERR unknown-command "));
    // Command words in any case: a person in telnet may have caps lock on.
    a.line("/NICK X");
    assert_eq!(a.reply(), "OK nick X");
    assert!(a.event_starting("NICK ").line.ends_with(" X"));
    // /pong got nothing back: the next reply is this PONG.
    a.assert_quiet("end");
}

#[test]
fn quit_says_bye_and_others_get_leave() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut b = joined(server.local_addr());
    a.event();
    b.line("/quit gone fishing");
    let (replies, _) = b.until_closed();
    assert_eq!(replies, vec!["BYE quit"]);
    let leave = a.event();
    assert_eq!(
        leave.line,
        format!("LEAVE {} {} quit", leave.seq(), b.name())
    );
}

#[test]
fn a_quitting_client_gets_everything_before_its_bye() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let mut lines = String::new();
    for n in 0..100 {
        lines.push_str(&format!("parting words {n}\n"));
    }
    lines.push_str("/quit\n");
    a.send(&lines);
    // Read the raw stream to its end: every own MSG, then BYE quit last.
    let all = String::from_utf8(a.rest()).unwrap();
    let received: Vec<&str> = all.lines().collect();
    assert_eq!(received.last(), Some(&"BYE quit"));
    let msgs = received.iter().filter(|l| l.starts_with("MSG ")).count();
    assert_eq!(msgs, 100, "{received:?}");
}

#[test]
fn closing_the_socket_is_leave_closed() {
    let server = start(config());
    let mut a = joined(server.local_addr());
    let b = joined(server.local_addr());
    a.event();
    let name = b.name().to_string();
    drop(b);
    let leave = a.event();
    assert_eq!(leave.line, format!("LEAVE {} {name} closed", leave.seq()));
}

#[test]
fn all_clients_see_one_order_with_consecutive_seqs() {
    let server = start(config());
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..4).map(|_| joined(addr)).collect();
    // Each client's first event is its own JOIN; later JOINs of the others
    // follow. Let every client send lines at once, from its own thread.
    const LINES: usize = 50;
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut stream = c.stream().try_clone().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                for n in 0..LINES {
                    writeln!(stream, "client {i} line {n}").unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut seen: Vec<Vec<support::Event>> = Vec::new();
    for c in &mut clients {
        let mut events = Vec::new();
        while events
            .iter()
            .filter(|e: &&support::Event| e.verb() == "MSG")
            .count()
            < 4 * LINES
        {
            events.push(c.event());
        }
        // On a healthy connection the SEQs are consecutive.
        for pair in events.windows(2) {
            assert_eq!(pair[1].seq(), pair[0].seq() + 1, "{:?}", pair);
        }
        seen.push(events);
    }
    // Everyone got the MSGs in the same order with the same SEQs.
    let msgs = |events: &Vec<support::Event>| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.verb() == "MSG")
            .map(|e| e.line.clone())
            .collect()
    };
    for other in &seen[1..] {
        assert_eq!(msgs(other), msgs(&seen[0]));
    }
    // And each sender's lines kept their order.
    for i in 0..4 {
        let mine: Vec<String> = msgs(&seen[0])
            .into_iter()
            .filter(|l| l.contains(&format!("client {i} line")))
            .collect();
        let expected: Vec<String> = (0..LINES).map(|n| format!("client {i} line {n}")).collect();
        assert_eq!(
            mine.iter()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap())
                .collect::<Vec<_>>(),
            expected
        );
    }
}

#[test]
fn periodic_tick_carries_time_and_text() {
    let server = start(tickcast::server::Config {
        tick: Some(std::time::Duration::from_millis(50)),
        ..config()
    });
    let mut a = joined(server.local_addr());
    let t1 = a.event_starting("TICK ");
    let t2 = a.event_starting("TICK ");
    assert!(t2.seq() > t1.seq());
    let f: Vec<&str> = t1.line.splitn(4, ' ').collect();
    assert!(f[2].ends_with('Z') && f[2].len() == 24, "{}", t1.line);
    assert_eq!(f[3], "1 client connected");
}

/// Reads raw bytes until `done` holds for everything read so far.
fn read_until(stream: &mut std::net::TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&all) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&all)),
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn telnet_negotiation_is_refused_and_its_bytes_never_reach_a_line() {
    use std::io::Write;
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut telnet = std::net::TcpStream::connect(server.local_addr()).unwrap();
    read_until(&mut telnet, |b| contains(b, b"JOIN "));
    // DO ECHO, WILL NAWS, then a line with a NOP inside it.
    telnet
        .write_all(b"\xff\xfd\x01\xff\xfb\x1fhel\xff\xf1lo\r\n")
        .unwrap();
    let got = read_until(&mut telnet, |b| contains(b, b" hello\n"));
    assert!(contains(&got, b"\xff\xfc\x01"), "WONT ECHO: {got:?}");
    assert!(contains(&got, b"\xff\xfe\x1f"), "DONT NAWS: {got:?}");
    assert!(
        !contains(&got, b"ERR"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let msg = watcher.event_starting("MSG");
    assert!(msg.line.ends_with(" hello"), "{}", msg.line);
}

#[test]
fn ctrl_c_in_telnet_confirms_the_timing_mark_and_leaves() {
    use std::io::Write;
    let server = start(config());
    let mut watcher = joined(server.local_addr());
    let mut telnet = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let greeting = read_until(&mut telnet, |b| contains(b, b"JOIN "));
    let name = String::from_utf8_lossy(&greeting)
        .split(' ')
        .nth(2)
        .unwrap()
        .to_string();
    assert!(watcher.event_line().starts_with("JOIN"));
    // What telnet sends on Ctrl-C: IAC IP IAC DO TIMING-MARK.
    telnet.write_all(b"\xff\xf4\xff\xfd\x06").unwrap();
    let rest = read_until(&mut telnet, |_| false);
    let tm = rest
        .windows(3)
        .position(|w| w == b"\xff\xfb\x06")
        .expect("WILL TIMING-MARK");
    assert!(contains(&rest[tm..], b"BYE quit\n"), "{rest:?}");
    let leave = watcher.event_line();
    assert!(leave.ends_with(&format!("{name} quit")), "{leave}");
}
