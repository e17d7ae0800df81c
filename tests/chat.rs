//! `tickcast chat`: fed from a pipe, in `--raw` mode, across cuts.

mod support;

use crossbeam_channel::{Receiver, unbounded};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::Duration;
use support::proxy::Proxy;
use support::{WAIT, config, joined, start};

/// A running `tickcast chat`, its stdin, and its stdout line by line.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
}

impl Chat {
    fn start(addr: SocketAddr, args: &[&str]) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
            .arg("chat")
            .arg(addr.to_string())
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
