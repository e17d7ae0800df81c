//! The real `tickcast` binary: the `listening on` line, logs, options,
//! the token from the environment, and a clean exit on SIGINT / SIGTERM.

mod support;

use crossbeam_channel::{Receiver, bounded, unbounded};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use support::{Raw, WAIT, joined};

/// A `tickcast serve` process and its stderr, line by line.
struct Serve {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: Receiver<String>,
}

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::start_logging(args, env, true)
    }

    /// Like `start`, but stderr is closed after the `listening on` line:
    /// every later log line fails to be written.
    fn start_then_close_stderr(args: &[&str]) -> Serve {
        Serve::start_logging(args, &[], false)
    }

    fn start_logging(args: &[&str], env: &[(&str, &str)], keep_stderr: bool) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
        cmd.args(["serve", "--bind", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--tick-ms") {
            cmd.args(["--tick-ms", "0"]);
        }
        cmd.env_remove("TICKCAST_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tickcast");
        let (tx, stderr) = unbounded();
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut lines = BufReader::new(pipe).lines().map_while(Result::ok);
            if !keep_stderr {
                let first = lines.next();
                drop(lines); // closes the pipe before anyone hears of it
                if let Some(first) = first {
                    let _ = tx.send(first);
                }
                return;
            }
            for line in lines {
                let _ = tx.send(line);
            }
        });
        let first = stderr.recv_timeout(WAIT).expect("no output from tickcast");
        let addr = first
            .strip_prefix("tickcast listening on ")
            .unwrap_or_else(|| panic!("first line was {first:?}"))
            .parse()
            .unwrap();
        Serve {
            child: Some(child),
            addr,
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let (tx, rx) = bounded(1);
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(WAIT)
            .expect("tickcast did not exit")
            .unwrap()
    }

    /// The next stderr line that contains `needle`.
    fn log_line(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    let mut serve = Serve::start_then_close_stderr(&[]);
    // Each of these is a log line that can no longer be written.
    let mut a = joined(serve.addr);
    drop(joined(serve.addr));
    a.event_starting("JOIN ");
    a.event_starting("LEAVE ");
    let mut b = joined(serve.addr);
    a.line("still serving");
    assert!(b.event().line.ends_with(" still serving"));
    serve.signal("-TERM");
    assert_eq!(a.until_closed().0, vec!["BYE shutdown"]);
    assert!(serve.wait().success());
}

#[test]
fn sigint_delivers_everything_then_byes_and_exits_zero() {
    let mut serve = Serve::start(&[], &[]);
    let mut a = joined(serve.addr);
    let mut b = joined(serve.addr);
    a.event();
    for n in 0..300 {
        a.line(&format!("before the signal {n}"));
    }
    a.line("/ping accepted");
    assert_eq!(a.reply(), "PONG accepted");
    serve.signal("-INT");
    for c in [&mut a, &mut b] {
        let (replies, events) = c.until_closed();
        assert_eq!(replies.last().map(String::as_str), Some("BYE shutdown"));
        assert_eq!(events.iter().filter(|e| e.verb() == "MSG").count(), 300);
        assert!(events.iter().all(|e| e.verb() != "LEAVE"));
    }
    assert_eq!(serve.wait().code(), Some(0));
}

#[test]
fn sigterm_also_shuts_down_cleanly() {
    let mut serve = Serve::start(&["--quiet"], &[]);
    let mut a = Raw::connect(serve.addr);
    serve.signal("-TERM");
    assert_eq!(a.until_closed().0, vec!["BYE shutdown"]);
    assert_eq!(serve.wait().code(), Some(0));
}

#[test]
fn logs_one_line_per_connect_and_disconnect() {
    let serve = Serve::start(&[], &[]);
    let mut a = joined(serve.addr);
    let port = a.stream().local_addr().unwrap().port();
    let connect = serve.log_line("connect");
    assert!(
        connect.contains(&format!("connect 127.0.0.1:{port} id=")),
        "{connect}"
    );
    // Timestamped: RFC 3339 in UTC.
    assert!(
        connect.split(' ').next().unwrap().ends_with('Z'),
        "{connect}"
    );
    a.line("/quit");
    a.until_closed();
    let disconnect = serve.log_line("disconnect");
    assert!(disconnect.contains("reason=quit"), "{disconnect}");
}

#[test]
fn the_token_can_come_from_the_environment() {
    let serve = Serve::start(&[], &[("TICKCAST_TOKEN", "from-env")]);
    let mut a = Raw::connect(serve.addr);
    a.line("hello");
    assert!(a.reply().starts_with("ERR auth-required "));
    a.line("/auth from-env");
    assert_eq!(a.reply(), "OK auth");
}

#[test]
fn options_reach_the_server() {
    // A tiny line limit is allowed (the commands that no longer fit get
    // line-too-long like any other line); 0 turns the off-by-default
    // limits off, as `--tick-ms 0` does the tick.
    let serve = Serve::start(
        &[
            "--max-clients",
            "1",
            "--max-line",
            "8",
            "--tick-ms",
            "50",
            "--idle-timeout",
            "0",
            "--max-rate",
            "0",
            "--max-per-ip",
            "0",
        ],
        &[],
    );
    let mut a = joined(serve.addr);
    a.line("12345678");
    assert!(a.event().line.ends_with(" 12345678"));
    a.line("123456789");
    assert!(a.reply().starts_with("ERR line-too-long "));
    a.event_starting("TICK ");
    let mut refused = Raw::connect_bare(serve.addr);
    assert_eq!(refused.until_closed().0, vec!["BYE server-full"]);
}

#[test]
fn bad_options_are_reported() {
    let bin = env!("CARGO_BIN_EXE_tickcast");
    for args in [
        &["serve", "--max-line", "lots"][..],
        &["serve", "--idle-timeout", "-3"],
        &["serve", "--write-timeout-ms", "0"],
        &["serve", "--max-line", "0"],
        &["serve", "--max-clients", "0"],
        &["serve", "--bind", "not-an-address"],
        &["frobnicate"],
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!text.trim().is_empty(), "{args:?} said nothing");
    }
    let help = Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--bind",
        "--tick-ms",
        "--max-clients",
        "--max-line",
        "--max-payload",
        "--write-timeout-ms",
        "--idle-timeout",
        "--max-rate",
        "--max-per-ip",
        "--history",
        "--history-bytes",
        "--token",
        "--quiet",
    ] {
        assert!(help.contains(option), "--help does not mention {option}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["serve", "--bind", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains(&addr),
        "{err}"
    );
}
