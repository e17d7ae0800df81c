//! No thread outlives its owner: dropping a client, or shutting a server
//! down, joins every thread it started. (Alone in its own test binary, so
//! that no other test's threads are counted.)

mod support;

use std::time::Duration;
use tickcast::client::{Client, ClientConfig};

/// Threads of this process, from /proc (Linux).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
fn dropping_clients_and_servers_ends_their_threads() {
    let before = thread_count();
    let server = support::start(tickcast::server::Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..support::config()
    });
    let http = server.http_addr().unwrap();
    // An event stream, and a plain HTTP connection left idle mid-head.
    let mut stream = support::http::Sse::open(http, "/events", &[]);
    stream.welcome();
    let mut idle = std::net::TcpStream::connect(http).unwrap();
    std::io::Write::write_all(&mut idle, b"GET /stats HTTP/1.1\r\n").unwrap();
    assert_eq!(support::http::get(http, "/healthz").status, 200);
    let plain = Client::connect(server.local_addr()).unwrap();
    let redundant = Client::with_config(
        server.local_addr(),
        ClientConfig {
            redundant: true,
            keepalive: Some(Duration::from_secs(5)),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    plain.say("hello").unwrap();
    assert!(
        thread_count() > before + 4,
        "the server and clients run threads"
    );
    drop(redundant);
    plain.quit("bye").unwrap();
    drop(plain);
    server.shutdown();
    server.join();
    assert_eq!(thread_count(), before);
    drop((stream, idle));
}
