//! For the fault tests and the soak: run the real `tickcast serve` binary
//! (when a test needs a process of its own: signals, an fd limit, its RSS),
//! read a process's threads, descriptors, memory and CPU from /proc
//! (Linux), and wait, bounded, for those to settle.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};

/// Starts `cmd` (a `tickcast serve` with stderr piped), waits for its
/// first stderr line, `tickcast listening on ADDR`, and returns the child,
/// ADDR, and the rest of stderr line by line (drained by a thread, so the
/// server never blocks on a full pipe). Without `keep_stderr`, the pipe is
/// closed after that first line: every later log line fails to be written.
pub fn spawn_serve(mut cmd: Command, keep_stderr: bool) -> (Child, SocketAddr, Receiver<String>) {
    let mut child = cmd.spawn().expect("start tickcast");
    let (tx, stderr) = unbounded();
    let pipe = child.stderr.take().expect("stderr piped");
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
    let first = stderr
        .recv_timeout(Duration::from_secs(20))
        .expect("no output from tickcast");
    let addr = first
        .strip_prefix("tickcast listening on ")
        .unwrap_or_else(|| panic!("first line was {first:?}"))
        .parse()
        .unwrap();
    (child, addr, stderr)
}

/// A `tickcast serve` process on a free loopback port. Killed when dropped
/// if it is still running.
pub struct Serve {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    /// The server's log, line by line (drained by a thread, so the server
    /// never blocks on a full pipe).
    pub stderr: Receiver<String>,
}

impl Serve {
    /// Starts `BIN serve -q ARGS`, with `--bind 127.0.0.1:0` and
    /// `--tick-ms 0` unless ARGS give those options (argh refuses an option
    /// given twice). `wrapper` runs first and must exec the command (like
    /// `prlimit --nofile=N:N`), so that the pid is the server's.
    pub fn start(bin: &str, wrapper: &[&str], args: &[&str]) -> Serve {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve");
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        if !args.contains(&"--tick-ms") {
            cmd.args(["--tick-ms", "0"]);
        }
        cmd.arg("-q")
            .args(args)
            .env_remove("TICKCAST_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (child, addr, stderr) = spawn_serve(cmd, true);
        Serve {
            pid: child.id(),
            child: Some(child),
            addr,
            stderr,
        }
    }

    /// Sends a signal with kill(1): `"-TERM"`, `"-STOP"`, `"-CONT"`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }

    /// Kills the process at once (SIGKILL, as `kill -9`: no shutdown, no
    /// goodbye to anyone) and reaps it. `None` if it was already gone.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGTERM, then waits for the exit, at most `limit`. `None`: it did
    /// not exit in time (it is killed when dropped).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal("-TERM");
        self.wait_exit(limit)
    }

    /// Waits for the process to exit, at most `limit`. `None`: it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let (tx, rx) = bounded(1);
        let waiter = thread::spawn(move || {
            let deadline = Instant::now() + limit;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        let _ = tx.send(status);
                        return None;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    _ => return Some(child),
                }
            }
        });
        let status = rx.recv_timeout(limit + Duration::from_secs(1)).ok();
        // Not exited in time: take the child back, so Drop kills it.
        self.child = waiter.join().unwrap();
        status
    }

    /// Threads, descriptors, memory and CPU of the server now.
    pub fn usage(&self) -> Usage {
        Usage::of(&self.pid.to_string())
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

/// Runs `cmd` (a command expected to stop by itself, such as a `tickcast
/// serve` that must refuse to start) with stderr captured, for at most
/// `limit`. Returns its exit status (`None`: still running at `limit`, then
/// killed), all it wrote to stderr, and how long it ran.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<ExitStatus>, String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut pipe = child.stderr.take().expect("stderr piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let deadline = started + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let ran = started.elapsed();
    (status, reader.join().unwrap_or_default(), ran)
}

/// What one process uses, from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory, KiB (`VmRSS`).
    pub rss_kib: u64,
    pub threads: usize,
    pub fds: usize,
    /// User plus system CPU time, in clock ticks (1/100 s on Linux).
    pub cpu_ticks: u64,
}

impl Usage {
    /// `pid` is a number or `"self"`.
    pub fn of(pid: &str) -> Usage {
        let count =
            |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map_or(0, |d| d.count());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        // Fields 14 and 15 of /proc/PID/stat (after the command in
        // parentheses, which may hold spaces).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Usage {
            rss_kib,
            threads: count("task"),
            fds: count("fd"),
            cpu_ticks: tick(11) + tick(12),
        }
    }

    /// This test process.
    pub fn own() -> Usage {
        Usage::of("self")
    }
}

/// Polls `measure` every 20 ms until it is at most `limit`, for at most
/// `within`; returns the last value (the caller asserts on it, so the
/// failure message says how far off it was).
pub fn settle(limit: usize, within: Duration, mut measure: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let now = measure();
        if now <= limit || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's soft limit on open files to its hard limit, and
/// returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    hard
}
