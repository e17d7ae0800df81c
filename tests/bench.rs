//! `tickcast bench`, run as the real binary: it measures a server in its
//! own process or one at `--target`, and it notices when a server loses,
//! doubles or reorders a message. No test here asserts a speed: figures
//! are printed, not checked.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;
use support::WAIT;
use support::proxy::Proxy;

/// Runs `tickcast bench ARGS`, killing it if it outlives [`WAIT`].
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tickcast bench");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("tickcast bench {args:?} ran for more than {WAIT:?}");
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// The `--json` report of a run.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_all_delivered(out: &Output, subscribers: u64, messages: u64) -> Value {
    let json = report(out);
    assert!(
        out.status.success(),
        "bench failed: {json}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["check"]["ok"], true, "{json}");
    assert_eq!(json["check"]["failures"], serde_json::json!([]), "{json}");
    assert_eq!(json["messages"], messages, "{json}");
    assert_eq!(json["deliveries"], subscribers * messages, "{json}");
    assert_eq!(
        json["expected_deliveries"],
        subscribers * messages,
        "{json}"
    );
    json
}

#[test]
fn an_in_process_server_delivers_every_message_once_in_order() {
    let out = bench(&["--subscribers", "5", "--count", "200", "--json"]);
    let json = assert_all_delivered(&out, 5, 200);
    assert_eq!(json["peer"], "tickcast");
    // The bench can see its own server's threads.
    assert!(json["server_cpu_ns_per_delivery"].is_number(), "{json}");
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(json["latency_ns"][p].as_u64().unwrap() > 0, "{json}");
    }
}

#[test]
fn rate_mode_and_payload_size() {
    let out = bench(&[
        "--subscribers",
        "3",
        "--mode",
        "rate",
        "--rate",
        "2000",
        "--count",
        "100",
        "--payload",
        "1000",
        "--readers",
        "2",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 3, 100);
    assert_eq!(json["mode"], "rate");
    assert_eq!(json["payload_bytes"], 1000);
}

#[test]
fn the_table_says_ok() {
    let out = bench(&["--subscribers", "2", "--count", "50"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("deliveries             100 ("), "{table}");
    assert!(table.contains("check                  OK"), "{table}");
}

#[test]
fn a_running_server_at_target() {
    let hub = support::start(tickcast::server::Config {
        max_clients: 64,
        ..support::config()
    });
    let addr = hub.local_addr().to_string();
    // This test process is the server's: its CPU time stands in.
    let pid = std::process::id().to_string();
    let out = bench(&[
        "--target",
        &addr,
        "--server-pid",
        &pid,
        "--subscribers",
        "5",
        "--count",
        "200",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 5, 200);
    assert!(json["server"].as_str().unwrap().contains(&addr), "{json}");
    assert!(json["server_cpu_s"].is_number(), "{json}");
    // Without --server-pid the server's CPU is not known.
    let out = bench(&[
        "--target",
        &addr,
        "--subscribers",
        "2",
        "--count",
        "20",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 2, 20);
    assert!(json["server_cpu_ns_per_delivery"].is_null(), "{json}");
}

#[test]
fn subscribers_are_spread_over_several_targets() {
    // Several --target are meant to be the nodes of one cluster: one room
    // through Redis, the same SEQs on every node. Two servers in this
    // process would be two rooms (the check would rightly fail), so the
    // test names one server twice: still one room, and the bench still
    // spreads its subscribers over two targets in turn.
    let hub = support::start(tickcast::server::Config {
        max_clients: 64,
        ..support::config()
    });
    let addr = hub.local_addr().to_string();
    // Each node's process, and Redis's, would be a --server-pid: their
    // CPU times are added. This test process stands in for both.
    let pid = std::process::id().to_string();
    let out = bench(&[
        "--target",
        &addr,
        "--target",
        &addr,
        "--server-pid",
        &pid,
        "--server-pid",
        &pid,
        "--mode",
        "rate",
        "--rate",
        "2000",
        "--subscribers",
        "5",
        "--count",
        "200",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 5, 200);
    assert_eq!(json["targets"], serde_json::json!([addr, addr]), "{json}");
    assert!(
        json["server"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{addr}, {addr}")),
        "{json}"
    );
    assert!(json["server_cpu_s"].is_number(), "{json}");

    // Through two proxies to that server (two addresses, one room): the
    // publisher and subscribers 0, 2, 4 connect through the first, 1 and 3
    // through the second.
    let (first, second) = (
        Proxy::start(hub.local_addr()),
        Proxy::start(hub.local_addr()),
    );
    let out = bench(&[
        "--target",
        &first.addr().to_string(),
        "--target",
        &second.addr().to_string(),
        "--subscribers",
        "5",
        "--count",
        "200",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("5 subscribers spread over 2 nodes"),
        "{table}"
    );
    assert_eq!((first.forwarded(), second.forwarded()), (4, 2));
}

/// How a [`fake_server`] mistreats the second subscriber.
#[derive(Clone, Copy)]
enum Fault {
    /// Message 57 never reaches it (its SEQ is skipped).
    Drop,
    /// Message 57 reaches it twice.
    Double,
    /// Messages 57 and 58 reach it swapped.
    Swap,
}

/// A tiny tickcast look-alike that gets one thing wrong: every client's
/// `JOIN SEQ guest-ID` goes to everyone, and every line a client says is
/// broadcast as `MSG SEQ guest-ID TEXT`, except as `fault` says. The
/// publisher connects first (guest-1), the subscribers after.
fn fake_server(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Arc<Mutex<Vec<(u64, TcpStream)>>> = Arc::default();
    let seq = Arc::new(Mutex::new(0u64));
    thread::spawn(move || {
        for (id, stream) in (1u64..).zip(listener.incoming()) {
            let Ok(mut stream) = stream else { return };
            let welcome =
                format!("WELCOME {id} guest-{id} 2026-11-22T10:00:05.123Z 00ff 0123 fake\n");
            if stream.write_all(welcome.as_bytes()).is_err() {
                continue;
            }
            {
                // The bench's subscribers wait for their own JOIN.
                let mut seq = seq.lock().unwrap();
                *seq += 1;
                let join = format!("JOIN {} guest-{id}\n", *seq);
                let mut clients = clients.lock().unwrap();
                clients.push((id, stream.try_clone().unwrap()));
                for (_, out) in clients.iter_mut() {
                    let _ = out.write_all(join.as_bytes());
                }
            }
            let (clients, seq) = (Arc::clone(&clients), Arc::clone(&seq));
            thread::spawn(move || {
                let mut held: Option<String> = None;
                for line in BufReader::new(stream).lines() {
                    let Ok(text) = line else { return };
                    if text.starts_with("/ping") {
                        // A command, not a chat line: answered to its sender.
                        let mut clients = clients.lock().unwrap();
                        if let Some((_, out)) = clients.iter_mut().find(|(to, _)| *to == id) {
                            let _ = out.write_all(b"PONG\n");
                        }
                        continue;
                    }
                    let mut seq = seq.lock().unwrap();
                    *seq += 1;
                    let msg = format!("MSG {} guest-{id} {text}\n", *seq);
                    let n = text.split(' ').next().unwrap_or_default();
                    for (to, out) in clients.lock().unwrap().iter_mut() {
                        let victim = *to == 3;
                        let lines = match (fault, victim, n) {
                            (Fault::Drop, true, "57") => String::new(),
                            (Fault::Double, true, "57") => msg.repeat(2),
                            (Fault::Swap, true, "57") => {
                                held = Some(msg.clone());
                                String::new()
                            }
                            (Fault::Swap, true, "58") => msg.clone() + &held.take().unwrap(),
                            _ => msg.clone(),
                        };
                        let _ = out.write_all(lines.as_bytes());
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn the_checker_catches_a_server_that_loses_doubles_or_reorders() {
    // Four JOINs (the publisher's and three subscribers') come first, so
    // message N has SEQ N + 5: the victim gets 63 (message 58) after 61.
    for (fault, words) in [
        (Fault::Drop, "lost"),
        (Fault::Double, "twice"),
        (Fault::Swap, "SEQ 63 after SEQ 61"),
    ] {
        let addr = fake_server(fault).to_string();
        let out = bench(&[
            "--target",
            &addr,
            "--subscribers",
            "3",
            "--count",
            "200",
            "--timeout",
            "5s",
            "--json",
        ]);
        assert!(!out.status.success(), "a broken server passed");
        let json = report(&out);
        assert_eq!(json["check"]["ok"], false, "{json}");
        let failures = json["check"]["failures"].to_string();
        assert!(failures.contains("subscriber 1"), "{failures}");
        assert!(failures.contains(words), "{words:?} not in {failures}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("the check failed"), "{stderr}");
    }
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    // Accepts, greets (its WELCOME and its own JOIN), and then never
    // relays anything.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for (id, stream) in (1u64..).zip(listener.incoming()) {
            let Ok(mut stream) = stream else { return };
            let welcome = format!(
                "WELCOME {id} guest-{id} 2026-11-22T10:00:05.123Z 00 01 x\nJOIN {id} guest-{id}\n"
            );
            let _ = stream.write_all(welcome.as_bytes());
            thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let out = bench(&[
        "--target",
        &addr,
        "--subscribers",
        "2",
        "--count",
        "10",
        "--timeout",
        "1s",
        "--json",
    ]);
    assert!(!out.status.success());
    let failures = report(&out)["check"]["failures"].to_string();
    assert!(failures.contains("no progress"), "{failures}");
}

#[test]
fn payloads_larger_than_max_pending_over_a_window_get_through() {
    // 128 messages of 200 KB in flight are 25 MB, three times the default
    // --max-pending: the in-process server must not drop anyone for it.
    let out = bench(&[
        "--subscribers",
        "2",
        "--count",
        "300",
        "--payload",
        "200000",
        "--json",
    ]);
    assert_all_delivered(&out, 2, 300);
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["--peer", "nats"][..],
        &["--mode", "rate"],
        &["--count", "5", "--duration", "1s"],
        &["--subscribers", "0"],
        &["--window", "0"],
        &["--window", "18446744073709551615"],
        &["--server-pid", "1"],
        &[
            "--peer",
            "redis",
            "--target",
            "127.0.0.1:1",
            "--target",
            "127.0.0.1:2",
        ],
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}

#[test]
fn sse_subscribers_get_the_same_messages_as_tcp_ones() {
    let out = bench(&[
        "--subscribers",
        "6",
        "--sse",
        "3",
        "--count",
        "300",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 6, 300);
    assert_eq!(json["sse_subscribers"], 3, "{json}");
    let refused = bench(&["--subscribers", "2", "--sse", "3", "--count", "1"]);
    assert!(!refused.status.success());
}
