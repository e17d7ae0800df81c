//! A `redis-server` of a test's own, for the cluster tests
//! (tests/cluster.rs): on a free loopback port, with no persistence, in a
//! temporary directory of its own, and stopped (SIGKILL) and removed when
//! dropped. It can be paused (SIGSTOP) and resumed (SIGCONT), killed, and
//! restarted empty on the same port, which is what the contract's failure
//! cases need.
//!
//! Needs the `redis-server` command (Debian: `redis-server`);
//! `scripts/test` installs it. The tests talk to it with a few lines of
//! RESP ([`Redis::command`]), no Redis crate.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting redis-server may take to answer `PING`.
const READY: Duration = Duration::from_secs(10);

/// A running (or paused, or killed) redis-server.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts a redis-server on a free loopback port and waits (bounded)
    /// until it answers `PING`. Redis has no `--port 0`: the port is found
    /// by binding 127.0.0.1:0 and letting it go, so another process may
    /// take it in between; then redis-server fails to bind and exits, and
    /// another port is tried.
    pub fn start() -> Redis {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "redis-{}-{nanos}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, &redis.dir) {
                Ok(child) => {
                    redis.child = Some(child);
                    redis.port = port;
                    return redis;
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not start: {failures:#?}");
    }

    /// `redis://127.0.0.1:PORT/0`, for `tickcast serve --redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its directory (removed when dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it answers `PING` within `limit` (false when paused or gone).
    pub fn ping_within(&self, limit: Duration) -> bool {
        ping(self.port, limit)
    }

    /// Freezes the process (SIGSTOP): connections stay open, and connecting
    /// still succeeds (the kernel's backlog), but nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Wakes a paused process (SIGCONT); it runs what it was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills it (SIGKILL) and reaps it: every connection to it is closed and
    /// nothing listens on its port any more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts a new, empty redis-server on the same port (no
    /// data survives: nothing is saved). Waits (bounded) until it answers.
    /// If the port is briefly taken, tries again for a few seconds.
    pub fn restart_empty(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY;
        loop {
            match spawn(self.port, &self.dir) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) if Instant::now() >= deadline => {
                    panic!(
                        "redis-server did not start again on port {}: {why}",
                        self.port
                    )
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs one command and returns its reply, written out: `+OK`, `:1`,
    /// `-ERR …`, a bulk string's text, `(nil)`, or an array's elements in
    /// brackets.
    pub fn command(&self, args: &[&str]) -> String {
        let stream = TcpStream::connect(self.addr()).expect("connect to redis");
        stream.set_read_timeout(Some(READY)).unwrap();
        stream.set_write_timeout(Some(READY)).unwrap();
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        (&stream).write_all(&request).expect("send to redis");
        read_reply(&mut BufReader::new(stream))
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server is not running");
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts redis-server on `port` and waits until it answers `PING`, or
/// until it exits (the port was taken), or [`READY`].
fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
            "--dir",
        ])
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it (Debian: apt-get install redis-server; scripts/test does)")
        });
    let deadline = Instant::now() + READY;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}); its log: {}", log_tail(dir)));
        }
        if ping(port, Duration::from_millis(500)) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no PONG within {READY:?}; its log: {}",
                log_tail(dir)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Sends an inline `PING` and expects `+PONG`, all within `limit`.
fn ping(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, limit) else {
        return false;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero()
        || stream.set_read_timeout(Some(left)).is_err()
        || stream.set_write_timeout(Some(left)).is_err()
        || (&stream).write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line == "+PONG\r\n"
}

/// Reads one RESP reply (see [`Redis::command`]).
fn read_reply(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read from redis");
    let line = line
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("bad RESP line {line:?}"));
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | "-" | ":" => line.to_string(),
        "$" => {
            let Ok(len) = rest.parse::<usize>() else {
                return "(nil)".into(); // $-1
            };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data).expect("read a bulk string");
            data.truncate(len);
            String::from_utf8_lossy(&data).into_owned()
        }
        "*" => {
            let Ok(n) = rest.parse::<usize>() else {
                return "(nil)".into(); // *-1
            };
            let items: Vec<String> = (0..n).map(|_| read_reply(reader)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => panic!("unknown RESP reply {line:?}"),
    }
}
