//! The real `tickcast` binary: the `listening on` line, logs, options,
//! the token from the environment, and a clean exit on SIGINT / SIGTERM.

mod support;

use crossbeam_channel::{Receiver, bounded};
use std::io::{Read, Write};
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
        cmd.arg("serve").args(args);
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
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
        let (child, addr, stderr) = support::process::spawn_serve(cmd, keep_stderr);
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

    /// The next stderr line.
    fn next_line(&self) -> String {
        self.stderr
            .recv_timeout(WAIT)
            .expect("no more output from tickcast")
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
    let id = a.welcome().id;
    let connect = serve.log_line(" INFO connect ");
    // Timestamped (RFC 3339 in UTC), with a level, naming the client.
    let mut words = connect.splitn(3, ' ');
    assert!(words.next().unwrap().ends_with('Z'), "{connect}");
    assert_eq!(words.next(), Some("INFO"), "{connect}");
    assert_eq!(
        words.next().unwrap(),
        format!("connect guest-{id} 127.0.0.1:{port} (id {id})")
    );
    a.line("/nick alice");
    a.reply();
    a.line("/quit");
    a.until_closed();
    let disconnect = serve.log_line(" disconnect ");
    assert!(
        disconnect.ends_with(&format!(
            " INFO disconnect alice 127.0.0.1:{port} (id {id}) reason=quit"
        )),
        "{disconnect}"
    );
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

/// Runs `tickcast ARGS` to its end (bounded) and returns (success, stderr
/// and stdout together).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
    cmd.args(args)
        .env_remove("TICKCAST_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let (tx, rx) = bounded(1);
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(WAIT)
        .expect("tickcast did not exit")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn errors_say_what_would_be_right() {
    for (args, expected) in [
        (
            &["serve", "--tick-ms", "-1"][..],
            "expected a duration like 500ms, 5s or 2m, or a number of milliseconds; got \"-1\"",
        ),
        (&["serve", "--idle-timeout", "soon"], "a number of seconds"),
        (
            &["serve", "--max-payload", "huge"],
            "like 4096, 64KiB, 8MiB",
        ),
        (
            &["serve", "--max-clients", "0"],
            "--max-clients must be at least 1",
        ),
        (&["serve", "--bind", "nonsense"], "like 127.0.0.1:7878"),
        (&["serve", "--bind", ":x"], "port number"),
        (
            &["serve", "--tick-ms=500"],
            "write `--tick-ms 500` instead of `--tick-ms=500`",
        ),
        (&[], "`tickcast serve` runs a hub"),
    ] {
        let (ok, text) = run(args, &[]);
        assert!(!ok, "{args:?} succeeded");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(!text.contains("invalid digit"), "{args:?}: {text}");
    }
    let (_, help) = run(&["serve", "--help"], &[]);
    assert!(help.contains("not `--tick-ms=500`"), "{help}");
}

#[test]
fn chat_takes_several_addresses_and_names_them_when_none_answers() {
    let (ok, help) = run(&["chat", "--help"], &[]);
    assert!(ok);
    assert!(help.contains("[<addr...>]"), "{help}");
    // Two loopback ports nobody listens on.
    let dead: Vec<String> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        })
        .collect();
    let (ok, text) = run(&["chat", &dead[0], &dead[1]], &[]);
    assert!(!ok);
    let expected = format!("cannot join {} or {}: ", dead[0], dead[1]);
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let (ok, text) = run(&[flag], &[]);
        assert!(ok);
        assert_eq!(text, format!("tickcast {}\n", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn a_port_in_use_suggests_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, text) = run(&["serve", "--bind", &addr], &[]);
    assert!(!ok);
    assert!(text.contains("another tickcast"), "{text}");
    assert!(text.contains("--bind 127.0.0.1:0"), "{text}");
}

#[test]
fn bind_takes_a_host_name_or_a_bare_port() {
    for bind in ["localhost:0", ":0"] {
        let serve = Serve::start(&["--bind", bind], &[]);
        assert_eq!(serve.addr.ip().to_string(), "127.0.0.1", "{bind}");
        joined(serve.addr);
    }
}

#[test]
fn durations_and_sizes_take_units() {
    let serve = Serve::start(
        &[
            "--tick-ms",
            "50ms",
            "--max-line",
            "1KiB",
            "--idle-timeout",
            "1m",
        ],
        &[],
    );
    let mut a = joined(serve.addr);
    a.line(&"x".repeat(1024));
    assert!(a.event().line.ends_with(&"x".repeat(1024)));
    a.line(&"x".repeat(1025));
    assert!(a.reply().starts_with("ERR line-too-long "));
    a.event_starting("TICK ");
    // A plain number still means seconds: 0.4 s of silence allowed, so a
    // PING comes after 0.2 s (not after 0.2 ms, nor 200 s).
    let serve = Serve::start(&["--idle-timeout", "0.4"], &[]);
    let mut b = joined(serve.addr);
    assert!(b.reply().starts_with("PING"));
}

#[test]
fn an_empty_token_is_refused_from_either_place() {
    for (args, env, named) in [
        (&["serve", "--token", ""][..], &[][..], "--token"),
        (&["serve"], &[("TICKCAST_TOKEN", "")], "TICKCAST_TOKEN"),
        (&["chat"], &[("TICKCAST_TOKEN", "")], "TICKCAST_TOKEN"),
    ] {
        let (ok, text) = run(args, env);
        assert!(!ok, "{args:?} {env:?} succeeded");
        assert!(text.contains(&format!("{named} is empty")), "{text}");
        assert!(!text.contains("listening"), "{text}");
    }
}

#[test]
fn the_second_line_says_whether_a_token_is_required() {
    let open = Serve::start(&[], &[]);
    assert!(open.next_line().starts_with("tickcast no token: "));
    let closed = Serve::start(&[], &[("TICKCAST_TOKEN", "s3cret")]);
    assert!(closed.next_line().starts_with("tickcast token required: "));
}

#[test]
fn json_logs_keep_the_first_line_then_one_object_per_line() {
    let serve = Serve::start(&["--log-format", "json"], &[]);
    let startup = serve.next_line();
    assert!(startup.starts_with("{\"ts\":\""), "{startup}");
    assert!(startup.contains(r#""level":"INFO""#), "{startup}");
    assert!(startup.contains(r#""token_required":false"#), "{startup}");
    let a = joined(serve.addr);
    let id = a.welcome().id;
    let port = a.stream().local_addr().unwrap().port();
    let connect = serve.log_line(r#""event":"connect""#);
    assert!(
        connect.ends_with(&format!(
            r#","level":"INFO","msg":"connect guest-{id} 127.0.0.1:{port} (id {id})","event":"connect","id":{id},"name":"guest-{id}","peer":"127.0.0.1:{port}"}}"#
        )),
        "{connect}"
    );
    drop(a);
    let left = serve.log_line(r#""event":"disconnect""#);
    assert!(left.contains(r#""reason":"closed""#), "{left}");
}

/// A file in a fresh temporary folder, removed with it on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickcast-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[test]
fn a_config_file_sets_options_and_the_command_line_wins() {
    let file = TempFile::new(
        "tickcast.toml",
        "# a comment\nmax-clients = 1\nmax-line = \"8\"\ntoken = \"from-file\"\n",
    );
    // max-clients and the token come from the file, max-line from the
    // command line.
    let serve = Serve::start(&["--config", file.path(), "--max-line", "16"], &[]);
    let mut a = Raw::connect(serve.addr);
    a.line("/auth from-file");
    assert_eq!(a.reply(), "OK auth");
    a.event_starting("JOIN ");
    a.line("0123456789abcdef");
    assert!(a.event().line.ends_with(" 0123456789abcdef"));
    let mut refused = Raw::connect_bare(serve.addr);
    assert_eq!(refused.until_closed().0, vec!["BYE server-full"]);
    // TICKCAST_TOKEN wins over the file too.
    let serve = Serve::start(
        &["--config", file.path(), "--max-line", "64"],
        &[("TICKCAST_TOKEN", "env")],
    );
    let mut b = Raw::connect(serve.addr);
    b.line("/auth env");
    assert_eq!(b.reply(), "OK auth");
}

#[test]
fn config_file_mistakes_name_the_key() {
    let file = TempFile::new("bad.toml", "max-clients = 5\nmax-client = 5\n");
    let (ok, text) = run(&["serve", "--config", file.path()], &[]);
    assert!(!ok);
    assert!(
        text.contains("max-client") && text.contains("bad.toml"),
        "{text}"
    );
    let file = TempFile::new("bad.toml", "idle-timeout = \"soon\"\n");
    let (ok, text) = run(&["serve", "--config", file.path()], &[]);
    assert!(!ok);
    assert!(
        text.contains("idle-timeout") && text.contains("number of seconds"),
        "{text}"
    );
    let (ok, text) = run(&["serve", "--config", "/nonexistent/tickcast.toml"], &[]);
    assert!(!ok);
    assert!(text.contains("cannot read the config file"), "{text}");
}

#[test]
fn print_config_shows_the_effective_settings_as_toml() {
    let file = TempFile::new(
        "t.toml",
        "max-clients = 7\nidle-timeout = 90\nhistory = 5\n",
    );
    let (ok, text) = run(
        &[
            "serve",
            "--config",
            file.path(),
            "--history",
            "6",
            "--print-config",
        ],
        &[],
    );
    assert!(ok, "{text}");
    for line in [
        "max-clients = 7",
        "idle-timeout = \"90s\"",
        "history = 6",
        "tick-ms = \"5s\"",
        "bind = \"127.0.0.1:7878\"",
        "# token: none",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in {text}");
    }
    // What it prints is a configuration file that says the same.
    let again = TempFile::new("again.toml", &text);
    let (ok, text2) = run(&["serve", "--config", again.path(), "--print-config"], &[]);
    assert!(ok, "{text2}");
    assert_eq!(text, text2);
}

#[test]
fn the_example_config_file_is_valid_and_changes_nothing() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tickcast.toml");
    let (ok, with_file) = run(&["serve", "--config", example, "--print-config"], &[]);
    assert!(ok, "{with_file}");
    let (_, defaults) = run(&["serve", "--print-config"], &[]);
    assert_eq!(with_file, defaults);
}

#[test]
fn with_http_the_second_line_is_the_page_address() {
    let serve = Serve::start(&["--http", "127.0.0.1:0"], &[]);
    let second = serve.next_line();
    let addr: SocketAddr = second
        .strip_prefix("tickcast http on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("second line was {second:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0, "the real bound port");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"));
    assert!(serve.next_line().starts_with("tickcast no token: "));
}
