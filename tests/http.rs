//! The HTTP door (shared/HTTP.md), row by row, over loopback: streams,
//! posted lines, replay, takeover across transports, limits, token and
//! origin, /stats and /metrics, slow readers, and HTTP on the TCP port.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::http::{Sse, get, post, post_line, request, stream};
use support::{Raw, WAIT, config, joined, named, start};
use tickcast::server::{Config, ServerHandle};

fn http_config() -> Config {
    Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    }
}

fn serve(config: Config) -> (ServerHandle, SocketAddr, SocketAddr) {
    let server = start(config);
    let http = server.http_addr().expect("an HTTP port");
    let tcp = server.local_addr();
    (server, tcp, http)
}

/// `/metrics` as `name{labels}` → value.
fn metrics(http: SocketAddr) -> HashMap<String, u64> {
    let answer = get(http, "/metrics");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    answer
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("tickcast_info"))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> i64 {
    after[name] as i64 - before[name] as i64
}

#[test]
fn a_stream_is_a_client_with_the_same_events() {
    let (_server, tcp, http) = serve(http_config());
    let mut alice = named(tcp, "alice");
    let mut wall = Sse::open(http, "/events?name=wall", &[]);
    assert_eq!(wall.status, 200);
    assert_eq!(wall.header("content-type"), Some("text/event-stream"));
    assert_eq!(wall.header("cache-control"), Some("no-cache"));
    let w = wall.welcome();
    assert_eq!(w[0], "WELCOME");
    assert_eq!(w[2], format!("guest-{}", w[1]));
    assert_eq!(w[5], alice.welcome().epoch);
    let epoch = w[5].clone();

    // JOIN as guest-ID, then the NICK of name=; the TCP client sees both.
    let join = wall.next_broadcast();
    assert_eq!(join.line(), format!("JOIN {} guest-{}", join.seq(), w[1]));
    assert_eq!(join.id, Some(format!("{epoch}:{}", join.seq())));
    let nick = wall.next_broadcast();
    assert_eq!(
        nick.line(),
        format!("NICK {} guest-{} wall", join.seq() + 1, w[1])
    );
    assert_eq!(alice.event().line, join.line());
    assert_eq!(alice.event().line, nick.line());
    alice.line("/list");
    assert_eq!(alice.reply(), "USERS 2 alice wall");

    alice.line("hello");
    let msg = wall.next_broadcast();
    assert_eq!(msg.line(), format!("MSG {} alice hello", nick.seq() + 1));
    assert_eq!(msg.id, Some(format!("{epoch}:{}", msg.seq())));
    assert_eq!(msg.event, None);

    // DATA: two data lines, the second the payload in base64.
    alice.send(b"/send 3\nabc\n");
    let data = wall.next_broadcast();
    assert_eq!(
        data.data,
        [
            format!("DATA {} alice 3", msg.seq() + 1),
            "YWJj".to_string()
        ]
    );
    alice.send(b"/send 0\n\n");
    let empty = wall.next_broadcast();
    assert_eq!(
        empty.data,
        [format!("DATA {} alice 0", data.seq() + 1), String::new()]
    );

    // A DM to the stream is `event: dm`.
    alice.line("/msg wall psst");
    assert_eq!(alice.reply(), "OK msg wall");
    let dm = wall.next();
    assert_eq!(dm.event.as_deref(), Some("dm"));
    assert_eq!(dm.data, ["DM alice psst"]);

    // Closing the stream is LEAVE … closed.
    drop(wall);
    let leave = alice.event_starting("LEAVE ");
    assert!(leave.line.ends_with(" wall closed"), "{leave:?}");
}

#[test]
fn posted_lines_go_through_the_same_commands() {
    let (_server, tcp, http) = serve(http_config());
    let mut bob = named(tcp, "bob");
    let mut s = stream(http, "");
    let key = s.key.clone();
    bob.event_starting("JOIN ");

    let chat = post_line(http, &key, "hi all\n");
    assert_eq!(chat.status, 204);
    let msg = bob.event();
    assert_eq!(msg.line, format!("MSG {} {} hi all", msg.seq(), s.name));
    assert_eq!(s.sse.next_broadcast().line(), msg.line);

    let answers = [
        ("", 204, ""),
        ("/nick carol", 200, "OK nick carol\n"),
        ("/list", 200, "USERS 2 bob carol\n"),
        ("/ping x", 200, "PONG x\n"),
        ("/nick bob", 409, "ERR nick-taken"),
        ("/nick guest-999", 400, "ERR nick-invalid"),
        ("/msg nobody hi", 404, "ERR no-such-user"),
        ("/msg bob", 400, "ERR bad-args"),
        ("/frob", 400, "ERR unknown-command"),
        ("/send 3", 400, "ERR bad-args"),
        ("/resume 1", 400, "ERR bad-args"),
        ("/auth x", 400, "ERR bad-args"),
        ("/pong 1", 400, "ERR bad-args"),
        ("bell \u{7}", 400, "ERR invalid-text"),
    ];
    for (line, status, body) in answers {
        let answer = post_line(http, &key, line);
        assert_eq!(answer.status, status, "{line:?}: {}", answer.text());
        assert!(
            answer.text().starts_with(body),
            "{line:?}: {}",
            answer.text()
        );
        if status >= 400 {
            assert_eq!(
                answer.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
        }
    }
    let bad = post(http, "/line", &[("Tickcast-Key", &key)], b"\xff\xfe");
    assert_eq!(
        (bad.status, bad.text().starts_with("ERR invalid-utf8")),
        (400, true)
    );
    let long = post_line(http, &key, &"x".repeat(5000));
    assert_eq!(
        (long.status, long.text().starts_with("ERR line-too-long")),
        (413, true)
    );
    let help = post_line(http, &key, "/help");
    assert!(help.text().starts_with("HELP ") && help.text().ends_with("OK help\n"));

    // /msg to the TCP client arrives as DM; a KEY in the query works too.
    let dm = post(http, &format!("/line?key={key}"), &[], b"/msg bob yo");
    assert_eq!((dm.status, dm.text()), (200, "OK msg bob\n".to_string()));
    assert_eq!(bob.reply(), "DM carol yo");
    let unknown = post_line(http, "nope", "hi");
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().starts_with("ERR bad-key"));

    // /quit: BYE quit, the stream ends with event: bye, LEAVE quit.
    let quit = post_line(http, &key, "/quit");
    assert_eq!((quit.status, quit.text()), (200, "BYE quit\n".to_string()));
    let rest = s.sse.until_end();
    let bye = rest.last().unwrap();
    assert_eq!(bye.event.as_deref(), Some("bye"));
    assert_eq!(bye.data, ["BYE quit"]);
    let leave = bob.event_starting("LEAVE ");
    assert!(leave.line.ends_with(" carol quit"), "{leave:?}");
    assert_eq!(post_line(http, &key, "still here?").status, 404);
}

#[test]
fn the_rate_limit_counts_http_lines_and_data() {
    let (_server, tcp, http) = serve(Config {
        max_rate: Some(1),
        ..http_config()
    });
    let mut watcher = joined(tcp);
    let s = stream(http, "");
    // Burst of two lines, then 429 with Retry-After.
    assert_eq!(post_line(http, &s.key, "one").status, 204);
    assert_eq!(
        post(http, "/data", &[("Tickcast-Key", &s.key)], b"xy").status,
        204
    );
    let refused = post_line(http, &s.key, "three");
    assert_eq!(refused.status, 429);
    assert!(refused.text().starts_with("ERR rate-limited"));
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    watcher.event_starting("JOIN ");
    assert!(watcher.event().line.ends_with(" one"));
    let data = watcher.event();
    assert_eq!(data.payload.as_deref(), Some(&b"xy"[..]));
}

#[test]
fn data_and_notify() {
    let (_server, tcp, http) = serve(Config {
        max_payload: 16,
        ..http_config()
    });
    let mut c = joined(tcp);
    let mut s = stream(http, "");
    c.event_starting("JOIN ");
    let ok = post(http, "/data", &[("Tickcast-Key", &s.key)], b"\x00\n\xffraw");
    assert_eq!(ok.status, 204);
    let data = c.event();
    assert_eq!(data.payload.as_deref(), Some(&b"\x00\n\xffraw"[..]));
    assert_eq!(s.sse.next_broadcast().data[1], "AAr/cmF3");
    let big = post(http, "/data", &[("Tickcast-Key", &s.key)], &[b'x'; 17]);
    assert_eq!(big.status, 413);
    assert!(big.text().starts_with("ERR payload-too-large"));

    let tick = post(http, "/notify", &[], b"build 1432 passed\n");
    assert_eq!(tick.status, 204);
    let line = c.event().line;
    assert!(
        line.starts_with("TICK ") && line.ends_with(" build 1432 passed"),
        "{line}"
    );
    assert_eq!(s.sse.next_broadcast().line(), line);
    assert_eq!(post(http, "/notify", &[], b"a\x01b").status, 400);
    let long = post(http, "/notify", &[], &[b'x'; 5000]);
    assert_eq!(long.status, 413);
    // Nothing else was broadcast.
    c.assert_quiet("after");
}

#[test]
fn last_event_id_replays_exactly_once_and_in_order() {
    let (_server, tcp, http) = serve(http_config());
    let mut c = named(tcp, "talker");
    let first = stream(http, "");
    let epoch = first.epoch.clone();
    for i in 0..5 {
        c.line(&format!("line {i}"));
    }
    let msgs: Vec<_> = (0..6).map(|_| c.event()).collect();
    let from = msgs[2].seq();
    let newest = msgs[5].seq();
    let id = format!("{epoch}:{from}");
    // Last-Event-ID wins over since=.
    let target = format!("/events?since={epoch}:1");
    let mut again = Sse::open(http, &target, &[("Last-Event-ID", &id)]);
    again.welcome();
    let mut seen = Vec::new();
    let mut live_sent = false;
    loop {
        let e = again.next_broadcast();
        seen.push(e.seq());
        if e.seq() == newest + 1 && !live_sent {
            // Its own JOIN was replayed; now a live event.
            c.line("live");
            live_sent = true;
        }
        if e.line().ends_with(" live") {
            break;
        }
    }
    let expected: Vec<u64> = (from + 1..=seen[seen.len() - 1]).collect();
    assert_eq!(seen, expected, "every event once, in order");
    drop(first);
}

#[test]
fn gaps_restarts_and_bad_resume_points() {
    let (server, tcp, http) = serve(Config {
        history: 3,
        ..http_config()
    });
    let epoch = server.stats().epoch;
    let mut c = joined(tcp);
    for i in 0..6 {
        c.line(&format!("m{i}"));
        c.event();
    }
    let newest = server.stats().seq;
    let mut gap = Sse::open(http, &format!("/events?since={epoch}:1"), &[]);
    gap.welcome();
    let g = gap.next();
    assert_eq!(g.event.as_deref(), Some("gap"));
    let oldest: u64 = g.data[0].parse().unwrap();
    assert_eq!(
        oldest,
        newest - 1,
        "the history holds 3 events, its JOIN included"
    );
    assert_eq!(gap.next_broadcast().seq(), oldest);

    let mut restart = Sse::open(http, "/events?since=0123456789abcdef:5", &[]);
    restart.welcome();
    let r = restart.next();
    assert_eq!(
        (r.event.as_deref(), r.data[0].as_str()),
        (Some("gap"), "restart")
    );
    let join = restart.next_broadcast();
    assert!(join.line().starts_with("JOIN "), "no replay: {join:?}");

    let mut future = Sse::open(http, &format!("/events?since={epoch}:999"), &[]);
    future.welcome();
    let err = future.next();
    assert_eq!(err.event.as_deref(), Some("err"));
    assert!(err.data[0].starts_with("ERR bad-args"), "{err:?}");

    let malformed = get(http, "/events?since=banana");
    assert_eq!(malformed.status, 400);
    assert!(malformed.text().starts_with("ERR bad-args"));
    let m = metrics(http);
    assert_eq!(
        (m["tickcast_resumes_total"], m["tickcast_resume_gaps_total"]),
        (1, 1)
    );
}

#[test]
fn a_key_takes_a_name_over_across_transports() {
    let (_server, tcp, http) = serve(http_config());
    let mut watcher = joined(tcp);
    // A TCP client's KEY, used by a stream.
    let mut alice = named(tcp, "alice");
    let key = alice.welcome().key.clone();
    let mut s = Sse::open(http, &format!("/events?key={key}"), &[]);
    let w = s.welcome();
    let (lines, _) = alice.until_closed();
    assert_eq!(lines.last().unwrap(), "BYE replaced");
    let mut names = Vec::new();
    while names.len() < 3 {
        names.push(s.next_broadcast().line().to_string());
    }
    assert!(
        names[0].starts_with("JOIN ") && names[0].ends_with(&w[2]),
        "{names:?}"
    );
    assert!(names[1].ends_with(" alice replaced"), "{names:?}");
    assert!(names[2].ends_with(&format!(" {} alice", w[2])), "{names:?}");
    watcher.event_starting("JOIN ");
    watcher.event_starting("JOIN ");
    watcher.event_starting("NICK ");

    // And the stream's KEY, used by a TCP client's /resume.
    let mut tcp2 = joined(tcp);
    tcp2.line(&format!("/resume 0 {}", w[4]));
    let bye = s.until_end().pop().unwrap();
    assert_eq!(
        (bye.event.as_deref(), bye.data[0].as_str()),
        (Some("bye"), "BYE replaced")
    );
    let nick = tcp2.event_starting("NICK ");
    assert!(nick.line.ends_with(" alice"), "{nick:?}");
}

#[test]
fn streams_count_against_the_connection_limits() {
    let (_server, tcp, http) = serve(Config {
        max_clients: 2,
        ..http_config()
    });
    let before = metrics(http);
    let _a = joined(tcp);
    let _s = stream(http, "");
    let full = get(http, "/events");
    assert_eq!(full.status, 503);
    assert!(
        full.text().starts_with("ERR server-full"),
        "{}",
        full.text()
    );
    // Plain requests are not clients.
    assert_eq!(get(http, "/healthz").text(), "ok\n");
    let after = metrics(http);
    assert_eq!(
        delta(
            &before,
            &after,
            "tickcast_refused_total{reason=\"server-full\"}"
        ),
        1
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tickcast_connections_total{transport=\"sse\"}"
        ),
        1
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "tickcast_connections_total{transport=\"tcp\"}"
        ),
        1
    );
    assert_eq!(after["tickcast_clients{transport=\"sse\"}"], 1);

    let (_server, _tcp, http) = serve(Config {
        max_per_ip: Some(1),
        ..http_config()
    });
    let _one = stream(http, "");
    let two = get(http, "/events");
    assert_eq!(two.status, 503);
    assert!(two.text().starts_with("ERR too-many-connections"));
}

#[test]
fn heads_and_bodies_have_limits() {
    let (_server, _tcp, http) = serve(http_config());
    let big = format!("X-Big: {}", "a".repeat(9000));
    let answer = request(http, "GET", "/healthz", &[("X-Pad", &big)], b"");
    assert_eq!(answer.status, 431);
    let body = post(http, "/notify", &[], &[b'a'; 5000]);
    assert_eq!(body.status, 413);
    assert_eq!(get(http, "/nope").status, 404);
    let wrong = get(http, "/line");
    assert_eq!(
        (wrong.status, wrong.header("allow")),
        (405, Some("POST, OPTIONS"))
    );
    let head = request(http, "HEAD", "/healthz", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert!(get(http, "/").text().contains("id=\"events\""));
    assert_eq!(get(http, "/app.js").status, 200);
}

#[test]
fn a_slow_head_is_closed_after_ten_seconds() {
    let (_server, _tcp, http) = serve(http_config());
    let mut socket = TcpStream::connect(http).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    socket.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut rest = Vec::new();
    let n = socket.read_to_end(&mut rest).expect("closed within 15 s");
    assert_eq!(n, 0, "closed without an answer");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9), "closed too early: {took:?}");
}

#[test]
fn the_token_is_needed_except_for_the_page_and_healthz() {
    let (_server, _tcp, http) = serve(Config {
        token: Some("s3cret".into()),
        ..http_config()
    });
    for target in ["/stats", "/metrics?token=wrong", "/events"] {
        let answer = get(http, target);
        assert_eq!(answer.status, 401, "{target}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert!(answer.text().starts_with("ERR auth-required"));
    }
    assert_eq!(get(http, "/").status, 200);
    assert_eq!(get(http, "/healthz").status, 200);
    let bearer = request(
        http,
        "GET",
        "/stats",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(bearer.status, 200);
    let m = get(http, "/metrics?token=s3cret");
    assert!(
        m.text()
            .contains("tickcast_refused_total{reason=\"auth-failed\"} 1")
    );
    let mut s = Sse::open(http, "/events?token=s3cret", &[]);
    assert_eq!(s.status, 200);
    s.welcome();
}

#[test]
fn other_origins_are_refused_unless_allowed() {
    let (_server, _tcp, http) = serve(Config {
        http_origins: vec!["http://dash.example".into()],
        ..http_config()
    });
    let evil = post(http, "/notify", &[("Origin", "http://evil.example")], b"hi");
    assert_eq!(evil.status, 403);
    let own = format!("http://{http}");
    assert_eq!(
        post(http, "/notify", &[("Origin", &own)], b"hi").status,
        204
    );
    let dash = post(http, "/notify", &[("Origin", "http://dash.example")], b"hi");
    assert_eq!(dash.status, 204);
    assert_eq!(
        dash.header("access-control-allow-origin"),
        Some("http://dash.example")
    );
    let preflight = request(
        http,
        "OPTIONS",
        "/line",
        &[("Origin", "http://dash.example")],
        b"",
    );
    assert_eq!(preflight.status, 204);
}

#[test]
fn stats_and_metrics_move_by_exactly_what_happened() {
    let (server, tcp, http) = serve(http_config());
    let mut c = named(tcp, "counter");
    let mut s = stream(http, "?name=wall");
    c.event_starting("JOIN ");
    c.event_starting("NICK ");
    s.sse.next_broadcast(); // its NICK
    let before = metrics(http);
    for i in 0..3 {
        c.line(&format!("n{i}"));
    }
    assert_eq!(post_line(http, &s.key, "from the wall").status, 204);
    for _ in 0..4 {
        c.event();
        s.sse.next_broadcast();
    }
    let after = metrics(http);
    assert_eq!(
        delta(&before, &after, "tickcast_events_total{verb=\"msg\"}"),
        4
    );
    assert_eq!(delta(&before, &after, "tickcast_deliveries_total"), 8);
    assert_eq!(delta(&before, &after, "tickcast_seq"), 4);
    assert!(delta(&before, &after, "tickcast_bytes_out_total") > 0);
    assert_eq!(after["tickcast_clients{transport=\"tcp\"}"], 1);
    assert_eq!(after["tickcast_clients{transport=\"sse\"}"], 1);

    let stats: serde_json::Value = serde_json::from_str(&get(http, "/stats").text()).unwrap();
    assert_eq!(stats["epoch"], s.epoch.as_str());
    assert_eq!(stats["seq"], after["tickcast_seq"]);
    assert_eq!(stats["history"]["events"], after["tickcast_history_events"]);
    let clients = stats["clients"].as_array().unwrap();
    let wall = clients.iter().find(|c| c["name"] == "wall").unwrap();
    assert_eq!(
        (wall["transport"].as_str(), wall["lines_in"].as_u64()),
        (Some("sse"), Some(1))
    );
    let tcp_client = clients.iter().find(|c| c["name"] == "counter").unwrap();
    assert_eq!(tcp_client["transport"], "tcp");
    assert_eq!(tcp_client["lines_in"], 4, "/nick and three lines");
    assert_eq!(server.stats().clients.len(), 2);
    assert_eq!(
        server.counters().deliveries(),
        after["tickcast_deliveries_total"]
    );
}

#[test]
fn a_slow_stream_is_dropped_while_the_others_stay_on_time() {
    let (_server, tcp, http) = serve(Config {
        max_pending: 64 * 1024,
        max_payload: 16 * 1024,
        ..http_config()
    });
    let mut talker = named(tcp, "talker");
    let mut fast = stream(http, "?name=fast");
    // A stream that reads its welcome and nothing more, with a tiny
    // receive buffer.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&http.into()).unwrap();
    let mut slow = Sse::open_on(socket.into(), http, "/events?name=slow", &[]);
    slow.welcome();
    let payload = vec![b'z'; 16 * 1024];
    let started = Instant::now();
    let mut sent = 0;
    let mut fast_saw = Vec::new();
    let leave = loop {
        assert!(
            started.elapsed() < WAIT,
            "the slow stream was never dropped"
        );
        talker.send(format!("/send {}\n", payload.len()));
        talker.send(&payload);
        talker.send(b"\n");
        sent += 1;
        // The fast stream and the TCP client keep up, event by event.
        let seen = loop {
            let e = fast.sse.next_broadcast();
            fast_saw.push(e.line().to_string());
            if e.line().starts_with("DATA ") {
                break e;
            }
        };
        let got = loop {
            let e = talker.event();
            if e.line.starts_with("LEAVE ") && e.line.ends_with(" slow slow-consumer") {
                break Some(e);
            }
            if e.line.starts_with("DATA ") {
                assert_eq!(e.seq(), seen.seq(), "TCP and SSE see the same DATA");
                break None;
            }
        };
        if let Some(leave) = got {
            break leave;
        }
    };
    assert!(sent > 1, "it took more than one payload to fill the stream");
    assert!(leave.line.contains("slow"));
    talker.line("still here");
    loop {
        let line = fast.sse.next_broadcast().line().to_string();
        let done = line.ends_with(" still here");
        fast_saw.push(line);
        if done {
            break;
        }
    }
    assert!(fast_saw.contains(&leave.line), "{fast_saw:?}");
}

#[test]
fn an_http_request_on_the_tcp_port_is_told_where_to_go() {
    let (_server, tcp, http) = serve(http_config());
    let mut watcher = joined(tcp);
    let mut browser = Raw::connect(tcp);
    browser.send(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
    let (lines, _) = browser.until_closed();
    assert!(lines[0].starts_with("ERR unknown-command "), "{lines:?}");
    assert!(lines[0].contains(&format!("http://{http}/")), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "BYE protocol-error");
    watcher.event_starting("JOIN ");
    let leave = watcher.event();
    assert!(leave.line.ends_with(" protocol-error"), "{leave:?}");
    watcher.assert_quiet("nothing was said");
}

#[test]
fn a_quiet_stream_gets_keepalives() {
    let (_server, _tcp, http) = serve(http_config());
    let mut s = stream(http, "");
    let started = Instant::now();
    let e = s.sse.next_any().unwrap();
    assert_eq!(e.comment.as_deref(), Some("keepalive"));
    assert!(started.elapsed() < Duration::from_secs(17));
}

#[test]
fn at_shutdown_a_stream_gets_bye_shutdown() {
    let (server, _tcp, http) = serve(http_config());
    let mut s = stream(http, "");
    let head = request(http, "HEAD", "/events", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    server.shutdown();
    let last = s.sse.until_end().pop().unwrap();
    assert_eq!(
        (last.event.as_deref(), last.data[0].as_str()),
        (Some("bye"), "BYE shutdown")
    );
    server.join();
}

#[test]
fn a_kept_alive_connection_answers_one_request_after_another() {
    let (_server, _tcp, http) = serve(http_config());
    let mut socket = TcpStream::connect(http).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    for _ in 0..3 {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let answer = support::http::read_answer(&mut socket, false);
        assert_eq!((answer.status, answer.text()), (200, "ok\n".to_string()));
        assert_eq!(answer.header("connection"), None, "kept alive");
    }
    // HTTP/1.0 is answered, then closed; chunked bodies are 411.
    socket.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let answer = support::http::read_answer(&mut socket, false);
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(socket.read_to_end(&mut rest).unwrap(), 0);
    let chunked = request(
        http,
        "POST",
        "/notify",
        &[("Transfer-Encoding", "chunked")],
        b"",
    );
    assert_eq!(chunked.status, 411);
}

#[test]
fn the_idle_timeout_does_not_apply_to_streams() {
    let (_server, tcp, http) = serve(Config {
        idle_timeout: Some(Duration::from_millis(400)),
        ..http_config()
    });
    let mut s = stream(http, "?name=quiet");
    // A silent TCP client is timed out; the stream, as silent, is not.
    let mut silent = Raw::connect(tcp);
    let (lines, _) = silent.until_closed();
    assert_eq!(lines.last().unwrap(), "BYE timeout", "{lines:?}");
    let mut watcher = joined(tcp);
    watcher.line("/list");
    assert_eq!(watcher.reply(), format!("USERS 2 {} quiet", watcher.name()));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with(" timeout")) {
        seen.push(s.sse.next_broadcast().line().to_string());
    }
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("LEAVE ") && l.contains(" quiet ")),
        "{seen:?}"
    );
}

/// One address cannot take every plain HTTP slot: past 32 idle
/// connections it is refused, while another address is still served.
#[test]
fn one_address_cannot_fill_the_http_door() {
    let (_server, _tcp, http) = serve(http_config());
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(http).expect("connect"))
        .collect();
    // The door counts a connection once its acceptor has taken it: wait
    // until one more from this address is refused.
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let answer = get(http, "/healthz");
        if answer.status == 503 {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "never refused: {}",
            answer.text()
        );
    };
    assert!(
        refused.text().starts_with("ERR too-many-connections "),
        "{}",
        refused.text()
    );
    // Another loopback address is a different client.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    other.connect(&http.into()).unwrap();
    let mut other: TcpStream = other.into();
    other.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        other,
        "GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let answer = support::http::read_answer(&mut other, false);
    assert_eq!((answer.status, answer.text()), (200, "ok\n".to_string()));
    drop(idle);
}
