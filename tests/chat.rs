//! `tickcast chat`: fed from a pipe, in `--raw` mode, across cuts.

mod support;

use crossbeam_channel::{Receiver, unbounded};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::{WAIT, config, joined, named, start};

/// A running `tickcast chat`, its stdin, and its stdout line by line.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
}

impl Chat {
    fn start(addr: SocketAddr, args: &[&str]) -> Chat {
        Chat::start_at(&[addr.to_string()], args)
    }

    /// `tickcast chat ADDR… ARGS…`.
    fn start_at(addrs: &[String], args: &[&str]) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
            .arg("chat")
            .args(addrs)
            .args(args)
            .env_remove("TICKCAST_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tickcast chat");
        let (tx, stdout) = unbounded();
        let pipe = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Chat {
            stdin: child.stdin.take(),
            child,
            stdout,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next stdout line (bounded wait).
    fn next(&self) -> String {
        self.stdout
            .recv_timeout(WAIT)
            .expect("no output from tickcast chat")
    }

    /// Ends stdin and collects the rest of stdout and the exit status.
    fn finish(mut self) -> (Vec<String>, std::process::ExitStatus) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(WAIT) {
            rest.push(line);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut child = self.child;
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(WAIT).expect("chat did not exit").unwrap();
        (rest, status)
    }
}

fn seq_of(line: &str) -> Option<u64> {
    let mut f = line.split(' ');
    match f.next()? {
        "MSG" | "DATA" | "JOIN" | "NICK" | "LEAVE" | "TICK" => f.next()?.parse().ok(),
        _ => None,
    }
}

#[test]
fn raw_mode_from_a_pipe_prints_protocol_lines_and_ends_after_bye() {
    let server = start(config());
    let mut chat = Chat::start(server.local_addr(), &["--raw", "--name", "bob"]);
    chat.type_line("hello there");
    chat.type_line("/list");
    chat.type_line("/nick robert");
    chat.type_line("/frobnicate");
    let (lines, status) = chat.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("BYE quit"),
        "{lines:#?}"
    );
    for expected in ["USERS 1 bob", "OK nick robert"] {
        assert!(
            lines.iter().any(|l| l == expected),
            "no {expected:?} in {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("MSG ") && l.ends_with(" bob hello there"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("NICK ") && l.ends_with(" bob robert"))
    );
    assert!(lines.iter().any(|l| l.starts_with("ERR unknown-command ")));
    let seqs: Vec<u64> = lines.iter().filter_map(|l| seq_of(l)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn raw_mode_prints_every_event_once_in_order_across_cuts() {
    let server = start(config());
    let proxy = Proxy::start(server.local_addr());
    let chat = Chat::start(proxy.addr(), &["--raw"]);
    // Its own JOIN: it is in.
    assert!(chat.next().starts_with("JOIN "));
    let mut producer = joined(server.local_addr());
    let mut seen = Vec::new();
    for i in 0..120 {
        producer.line(&format!("m{i}"));
        if i == 40 {
            proxy.cut_all();
        }
        if i == 80 {
            proxy.cut_inside("MSG ", 4);
        }
        thread::sleep(Duration::from_millis(2)); // pacing, not sync
    }
    // Read until the last message is out, then end stdin.
    loop {
        let line = chat.next();
        let last = line.ends_with(" m119");
        seen.push(line);
        if last {
            break;
        }
    }
    let (rest, status) = chat.finish();
    assert!(status.success());
    seen.extend(rest);
    let msgs: Vec<&str> = seen
        .iter()
        .filter(|l| l.starts_with("MSG "))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    let expected: Vec<String> = (0..120).map(|i| format!("m{i}")).collect();
    assert_eq!(msgs, expected);
    let seqs: Vec<u64> = seen.iter().filter_map(|l| seq_of(l)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(proxy.forwarded() >= 3, "the cuts did not happen");
}

/// Reads the chat's output into `lines` until `done` says so (bounded wait).
fn wait_for(chat: &Chat, lines: &mut Vec<String>, done: impl Fn(&[String]) -> bool) {
    while !done(lines) {
        match chat.stdout.recv_timeout(WAIT) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("stuck; so far: {lines:#?}"),
        }
    }
}

/// A loopback address nobody listens on: connecting is refused at once.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn given_several_addresses_it_joins_the_first_that_answers() {
    let server = start(config());
    // `:PORT` works for any of the addresses.
    let live = format!(":{}", server.local_addr().port());
    let chat = Chat::start_at(&[dead_addr(), live], &["--name", "alice"]);
    let mut lines = Vec::new();
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.ends_with("* connected as alice"))
    });
    assert_eq!(server.clients()[0].name, "alice");
    let (rest, status) = chat.finish();
    assert!(status.success());
    lines.extend(rest);
    // The dead address is not an outage: nothing was lost.
    assert!(!lines.iter().any(|l| l.contains("lost")), "{lines:#?}");
}

#[test]
fn redundant_links_go_to_the_first_two_addresses_that_answer() {
    let a = start(config());
    let b = start(config());
    let addrs = [
        dead_addr(),
        a.local_addr().to_string(),
        b.local_addr().to_string(),
    ];
    let chat = Chat::start_at(&addrs, &["--raw", "--redundant"]);
    let started = Instant::now();
    while a.clients().len() != 1 || b.clients().len() != 1 {
        assert!(started.elapsed() < WAIT, "not one link on each server");
        thread::sleep(Duration::from_millis(10)); // polling the servers
    }
    let (_, status) = chat.finish();
    assert!(status.success());
}

#[test]
fn human_mode_prints_time_and_names() {
    let server = start(config());
    let mut chat = Chat::start(server.local_addr(), &["--name", "alice"]);
    // Wait until the chat is in, so that it sees what follows.
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.ends_with("* connected as alice"))
    {
        lines.push(chat.next());
    }
    let mut other = joined(server.local_addr());
    other.line("/nick bob");
    other.line("hi alice");
    // `/list` only after the rename is out, or it may still say guest-2.
    wait_for(&chat, &mut lines, |lines| {
        lines
            .iter()
            .any(|l| l.ends_with("* guest-2 is now known as bob"))
    });
    chat.type_line("/list");
    wait_for(&chat, &mut lines, |lines| {
        lines.iter().any(|l| l.contains("* here (2): alice, bob"))
            && lines.iter().any(|l| l.ends_with("<bob> hi alice"))
    });
    let said = lines
        .iter()
        .find(|l| l.ends_with("<bob> hi alice"))
        .expect("no chat line");
    // [HH:MM:SS] <bob> hi alice
    assert_eq!(&said[..1], "[");
    assert_eq!(&said[9..11], "] ");
    assert!(said[1..9].chars().all(|c| c.is_ascii_digit() || c == ':'));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("* guest-") && l.ends_with(" is now known as bob")),
        "{lines:#?}"
    );
    let (_, status) = chat.finish();
    assert!(status.success());
}

#[test]
fn one_line_per_outage_and_a_clean_restart_is_not_called_a_loss() {
    let server = start(config());
    let addr = server.local_addr();
    let chat = Chat::start(addr, &["--name", "alice"]);
    let mut lines = Vec::new();
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.ends_with("* connected as alice"))
    });
    server.shutdown();
    drop(server); // waits until it is gone, port closed
    // While the server is down, something on its port takes the chat's
    // reconnects and drops each of them: several failed attempts.
    let stand_in = std::net::TcpListener::bind(addr).expect("rebind the port");
    for _ in 0..3 {
        let (conn, _) = stand_in.accept().unwrap();
        drop(conn);
    }
    drop(stand_in);
    let listener = std::net::TcpListener::bind(addr).expect("rebind the port");
    let _restarted = tickcast::server::spawn_on(listener, config()).unwrap();
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.ends_with("* reconnected as alice"))
    });
    let (rest, status) = chat.finish();
    assert!(status.success());
    lines.extend(rest);
    let outage: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("reconnecting") || l.contains("lost the connection"))
        .collect();
    assert_eq!(outage.len(), 1, "{lines:#?}");
    assert!(
        outage[0].ends_with("* the server stopped; reconnecting when it is back…"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("* the server restarted")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("lost")), "{lines:#?}");
}

#[test]
fn help_lists_this_clients_commands_and_ticks_can_be_hidden() {
    let server = start(tickcast::server::Config {
        tick: Some(Duration::from_millis(20)),
        ..config()
    });
    let mut chat = Chat::start(server.local_addr(), &["--name", "alice", "--no-ticks"]);
    let mut lines = Vec::new();
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.ends_with("* connected as alice"))
    });
    chat.type_line("/HELP");
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.contains("/quit [REASON]"))
    });
    for command in ["/send FILE", "/ticks on|off", "/msg NAME TEXT"] {
        assert!(lines.iter().any(|l| l.contains(command)), "{lines:#?}");
    }
    // Not the server's list: nothing this client would refuse.
    for refused in ["/resume", "/auth", "/pong"] {
        assert!(!lines.iter().any(|l| l.contains(refused)), "{lines:#?}");
    }
    chat.type_line("/auth x");
    wait_for(&chat, &mut lines, |l| {
        l.iter()
            .any(|l| l.ends_with("use --token or TICKCAST_TOKEN"))
    });
    // Ticks every 20 ms, hidden; a file sent arrives; then ticks shown.
    let file = std::env::temp_dir().join(format!("tickcast-chat-{}.txt", std::process::id()));
    std::fs::write(&file, "from a file\n").unwrap();
    chat.type_line(&format!("/send {}", file.display()));
    wait_for(&chat, &mut lines, |l| {
        l.iter()
            .any(|l| l.ends_with("* alice sent 12 bytes: from a file"))
    });
    let _ = std::fs::remove_file(&file);
    assert!(!lines.iter().any(|l| l.contains("* tick")), "{lines:#?}");
    chat.type_line("/ticks on");
    wait_for(&chat, &mut lines, |l| {
        l.iter().any(|l| l.contains("* tick "))
    });
    chat.finish();
}

#[test]
fn a_token_server_says_how_to_give_the_token() {
    let server = start(tickcast::server::Config {
        token: Some("s3cret".into()),
        ..config()
    });
    let mut chat = Chat::start(server.local_addr(), &[]);
    chat.type_line("hello");
    let mut lines = Vec::new();
    wait_for(&chat, &mut lines, |l| {
        l.iter()
            .any(|l| l.ends_with("! this server needs a token: use --token or TICKCAST_TOKEN"))
    });
    assert!(!lines.iter().any(|l| l.contains("/auth")), "{lines:#?}");
    chat.finish();
}

/// A tmux server of its own (its own socket), with one window running a
/// command in a real terminal; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, env: &[(&str, &str)]) -> Tmux {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let socket = format!("tickcast-test-{}-{n}", std::process::id());
        let mut tmux = Command::new("tmux");
        tmux.args(["-L", &socket, "new-session", "-d", "-x", "100", "-y", "30"]);
        for (k, v) in env {
            tmux.args(["-e", &format!("{k}={v}")]);
        }
        let status = tmux
            .arg(command)
            .env("TERM", "xterm")
            .status()
            .expect("run tmux");
        assert!(status.success());
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the window shows (with colour codes when `escapes`).
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p"];
        if escapes {
            args.push("-e");
        }
        self.tmux(&args)
    }

    /// Polls the window (tmux cannot tell when it changes) until `done`
    /// holds, for at most WAIT.
    fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let screen = self.screen(false);
            if done(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stuck; the window shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    fn press(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// The chat's command line in the shell words tmux runs.
fn chat_command(addr: SocketAddr, args: &str) -> String {
    format!("{} chat {addr} {args}", env!("CARGO_BIN_EXE_tickcast"))
}

#[test]
#[ignore = "needs tmux (apt-get install tmux); scripts/test runs it"]
fn in_a_terminal_an_incoming_line_does_not_break_the_typed_one() {
    let server = start(config());
    let tmux = Tmux::start(&chat_command(server.local_addr(), "--name alice"), &[]);
    tmux.wait_for(|s| s.contains("* connected as alice"));
    tmux.type_text("half typed");
    tmux.wait_for(|s| s.lines().any(|l| l == "> half typed"));
    let mut bob = named(server.local_addr(), "bob");
    bob.line("an incoming line");
    let screen = tmux.wait_for(|s| s.contains("<bob> an incoming line"));
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    // The incoming line is a line of its own, above the prompt...
    let incoming = lines
        .iter()
        .find(|l| l.contains("<bob> an incoming line"))
        .unwrap();
    assert!(
        incoming.starts_with('[') && incoming.ends_with("] <bob> an incoming line"),
        "{screen}"
    );
    // ...and the typed text is still whole, on the prompt line, last.
    assert_eq!(lines.last(), Some(&"> half typed"), "{screen}");
    assert_eq!(screen.matches("half typed").count(), 1, "{screen}");
    // Enter sends it as typed.
    tmux.press("Enter");
    tmux.wait_for(|s| s.contains("<alice> half typed"));
    // Names are coloured on a terminal.
    assert!(tmux.screen(true).contains("\x1b["), "no colour");
    // Up brings the line back from the history.
    tmux.press("Up");
    tmux.wait_for(|s| s.lines().any(|l| l == "> half typed"));
}

#[test]
#[ignore = "needs tmux (apt-get install tmux); scripts/test runs it"]
fn no_color_turns_colour_off() {
    let server = start(config());
    let tmux = Tmux::start(
        &chat_command(server.local_addr(), "--name alice"),
        &[("NO_COLOR", "1")],
    );
    tmux.wait_for(|s| s.contains("* connected as alice"));
    let screen = tmux.screen(true);
    assert!(screen.contains("alice"), "{screen}");
    assert!(!screen.contains("\x1b[3"), "{screen:?}");
}
