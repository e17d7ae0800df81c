//! `tickcast bench`: a fan-out load generator that checks what it measures.
//!
//! One publisher and N subscribers, over TCP. Every message the publisher
//! sends must reach every subscriber (N *deliveries* per message), exactly
//! once and in order; the bench checks that, times each delivery, and
//! reports deliveries per second, latency percentiles and, when it can see
//! the server's process, the server's CPU time per delivery.
//!
//! # The run, step by step
//!
//! 1. Start a server in this process on `127.0.0.1:0` (unless `--target`
//!    names one), connect the publisher, then the subscribers, and wait
//!    until every subscriber is subscribed (`wire` says what that means
//!    for each kind of server). `--target` may name several nodes of one
//!    tickcast cluster (docs/CLUSTER.md): the publisher connects to the
//!    first, and each subscriber to the next one in turn. The check is
//!    the same, since every node gives every event the same SEQ.
//! 2. Take the time and the CPU counters (`cpu`), and publish:
//!    * `--mode throughput`: as fast as the slowest subscriber allows,
//!      never more than `--window` messages ahead of it;
//!    * `--mode rate`: message i at `start + i / rate`. Its latency is
//!      counted from that planned time, not from when it actually left,
//!      so a server that stalls the publisher is not excused for it
//!      ("coordinated omission").
//! 3. Stop after `--count` messages or `--duration`, wait until the last
//!    message has reached every subscriber, and take the time and the CPU
//!    counters again.
//!
//! The receiving side (`readers`) runs in a few threads that each poll
//! many non-blocking sockets: its cost per delivery is in the report too.
//!
//! A failed check (a message lost, doubled or out of order, a broadcast
//! SEQ skipped, a subscriber dropped, no progress for `--timeout`) stops
//! the run, is printed, and makes the exit status non-zero.

mod cpu;
mod readers;
mod wire;

use argh::FromArgs;
use crossbeam_channel::{Sender, unbounded};
use hdrhistogram::Histogram;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use readers::{NewSocket, Role, Shared, Window};
use std::error::Error;
use std::io::{self, ErrorKind, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};
use tickcast::server::{self, Config, ServerHandle};
use wire::{Dialect, Heard, Parse, Peer};

/// measure a hub: one publisher, many subscribers, every delivery checked
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "bench",
    example = "tickcast bench",
    example = "tickcast bench --subscribers 1000 --duration 10s",
    example = "tickcast bench --mode rate --rate 10000 --subscribers 100 --json",
    example = "tickcast bench --target 127.0.0.1:7878 --server-pid $(pgrep -x tickcast)",
    example = "tickcast bench --target 127.0.0.1:7801 --target 127.0.0.1:7802 --subscribers 200",
    example = "tickcast bench --peer nats --target 127.0.0.1:4222",
    note = "Without --target the bench starts its own server in this process, on \
            127.0.0.1 with a free port, and measures that server's threads. Several \
            --target are the nodes of one tickcast cluster (docs/CLUSTER.md): the \
            publisher connects to the first, the subscribers to each in turn. Every \
            subscriber must receive every message exactly once and in order: \
            otherwise the bench says what went wrong and exits with status 1."
)]
pub struct BenchArgs {
    /// subscribers [100]
    #[argh(option, default = "100")]
    subscribers: usize,

    /// throughput (as fast as the slowest subscriber allows) or rate (a
    /// fixed schedule, for latency) [throughput]
    #[argh(option, default = "Mode::Throughput")]
    mode: Mode,

    /// messages per second in rate mode
    #[argh(option)]
    rate: Option<f64>,

    /// most messages in flight, not yet at every subscriber [128]
    #[argh(option, default = "128")]
    window: u64,

    /// bytes of text per message (at least the ~20 that carry its number
    /// and send time) [64]
    #[argh(option, default = "64")]
    payload: usize,

    /// how long to publish, like 10s, 500ms or 2m [5s, unless --count]
    #[argh(option, from_str_fn(parse_duration))]
    duration: Option<Duration>,

    /// how many messages to publish (instead of --duration)
    #[argh(option)]
    count: Option<u64>,

    /// a running server to measure, HOST:PORT; repeat it for the nodes of
    /// a tickcast cluster: subscribers are spread over them in turn, the
    /// publisher is on the first [a server in this process]
    #[argh(option)]
    target: Vec<String>,

    /// the process id of the --target server, to report its CPU time;
    /// repeat it to add up several processes (a cluster's nodes and Redis)
    #[argh(option)]
    server_pid: Vec<u32>,

    /// the kind of server at --target: tickcast, nats or redis [tickcast]
    #[argh(option, default = "Peer::Tickcast")]
    peer: Peer,

    /// reader threads for the subscribers [number of CPUs, at most 8]
    #[argh(option)]
    readers: Option<usize>,

    /// give up when nothing moves for this long [10s]
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    timeout: Duration,

    /// of the subscribers, how many read an HTTP event stream (GET
    /// /events) instead of the TCP port; needs the server in this process [0]
    #[argh(option, default = "0")]
    sse: usize,

    /// print the results as one JSON object instead of a table
    #[argh(switch)]
    json: bool,
}

/// Where the subscribers connect: the TCP ports (one per node, the
/// publisher's first), and the HTTP port for the `--sse` ones.
#[derive(Debug, Clone)]
struct Doors {
    tcp: Vec<SocketAddr>,
    http: Option<SocketAddr>,
}

/// How the publisher paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Throughput,
    Rate,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "throughput" => Ok(Mode::Throughput),
            "rate" => Ok(Mode::Rate),
            _ => Err(format!("unknown mode {s:?}: use throughput or rate")),
        }
    }
}

/// `10s`, `500ms`, `2m`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 10s, 500ms or 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// When the publisher stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Count(u64),
    After(Duration),
}

/// Everything the run was asked to do, checked.
struct Plan {
    subscribers: usize,
    /// How many of them are event streams.
    sse: usize,
    mode: Mode,
    rate: Option<f64>,
    payload: usize,
    stop: Stop,
    readers: usize,
    timeout: Duration,
}

/// What the run measured.
struct Figures {
    server: String,
    messages: u64,
    deliveries: u64,
    /// Times a reader thread woke from `poll` to read, while measuring.
    wakeups: u64,
    /// Connecting and subscribing every subscriber.
    setup: Duration,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// CPU seconds used by the server and by the bench during the run.
    server_cpu: Option<Duration>,
    bench_cpu: Duration,
    /// Clock ticks the server CPU figure is made of.
    server_ticks: Option<u64>,
    failures: Vec<String>,
}

pub fn run(args: BenchArgs) -> Result<(), Box<dyn Error>> {
    let plan = plan(&args)?;
    let figures = measure(&args, &plan)?;
    if args.json {
        println!("{}", json(&args, &plan, &figures));
    } else {
        print!("{}", table(&args, &plan, &figures));
    }
    if figures.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("the check failed: {}", figures.failures[0]).into())
    }
}

/// The most messages in flight: the window has a slot for each.
const MAX_WINDOW: u64 = 1_000_000;

fn plan(args: &BenchArgs) -> Result<Plan, String> {
    if args.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if args.window == 0 || args.window > MAX_WINDOW {
        return Err(format!(
            "--window must be at least 1 and at most {MAX_WINDOW} (messages in flight)"
        ));
    }
    if args.peer != Peer::Tickcast && args.target.is_empty() {
        return Err(format!(
            "--peer {} needs --target: the address of a {}-server you started",
            args.peer.name(),
            args.peer.name()
        ));
    }
    if args.sse > args.subscribers {
        return Err("--sse is how many of the --subscribers use SSE: at most all of them".into());
    }
    if args.sse > 0 && !args.target.is_empty() {
        return Err("--sse needs the server in this process (no --target)".into());
    }
    if !args.server_pid.is_empty() && args.target.is_empty() {
        return Err("--server-pid goes with --target".into());
    }
    if args.peer != Peer::Tickcast && args.target.len() > 1 {
        return Err(format!(
            "several --target are the nodes of one tickcast cluster: --peer {} takes one",
            args.peer.name()
        ));
    }
    let rate = match (args.mode, args.rate) {
        (Mode::Rate, None) => return Err("--mode rate needs --rate MSGS_PER_SEC".into()),
        (Mode::Rate, Some(r)) if !(r > 0.0 && r <= 10_000_000.0) => {
            return Err("--rate must be more than 0 and at most 10,000,000".into());
        }
        (Mode::Throughput, Some(_)) => return Err("--rate goes with --mode rate".into()),
        (_, rate) => rate,
    };
    let stop = match (args.count, args.duration) {
        (Some(_), Some(_)) => return Err("give --count or --duration, not both".into()),
        (Some(0), None) => return Err("--count must be at least 1".into()),
        (Some(n), None) => Stop::Count(n),
        (None, Some(d)) if d.is_zero() => return Err("--duration must be positive".into()),
        (None, Some(d)) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(5)),
    };
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let readers = args.readers.unwrap_or(cpus.min(8)).clamp(1, 64);
    Ok(Plan {
        subscribers: args.subscribers,
        sse: args.sse,
        mode: args.mode,
        rate,
        payload: args.payload,
        stop,
        readers: readers.min(args.subscribers),
        timeout: args.timeout.max(Duration::from_millis(100)),
    })
}

fn measure(args: &BenchArgs, plan: &Plan) -> Result<Figures, Box<dyn Error>> {
    // Every subscriber is a socket here, and one more in an in-process
    // server (its connection's socket): counted as two, to leave room.
    let per_subscriber = if args.target.is_empty() { 3 } else { 1 };
    cpu::ensure_files(plan.subscribers as u64 * per_subscriber + 64)?;

    let (hub, doors, server_cpu, server) = match args.target.as_slice() {
        [] => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let config = Config {
                tick: None,
                max_clients: plan.subscribers + 16,
                max_line: plan.payload.max(4096) + 64,
                // A whole window of messages may wait for a subscriber, and
                // the publisher's own copies are not held back by the
                // window at all: with large payloads that is more than the
                // default --max-pending (8 MiB), and the server would drop
                // them as slow consumers. The bench measures speed, not
                // that limit.
                max_pending: (args.window as usize)
                    .saturating_mul(plan.payload + 64)
                    .saturating_mul(4)
                    .max(64 * 1024 * 1024),
                message_events: false,
                event_capacity: 16,
                http: (plan.sse > 0).then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                ..Config::default()
            };
            let hub = server::spawn_on(listener, config)?;
            let addr = hub.local_addr();
            let http = hub.http_addr();
            (
                Some(hub),
                Doors {
                    tcp: vec![addr],
                    http,
                },
                cpu::ServerCpu::InProcess,
                format!("tickcast in this process ({addr})"),
            )
        }
        targets => {
            let mut tcp = Vec::with_capacity(targets.len());
            for target in targets {
                let addr = target
                    .to_socket_addrs()
                    .map_err(|e| format!("--target {target}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--target {target}: no address"))?;
                tcp.push(addr);
            }
            let which = match args.server_pid.as_slice() {
                [] => cpu::ServerCpu::Unknown,
                pids => cpu::ServerCpu::Pids(pids.to_vec()),
            };
            let addrs: Vec<String> = tcp.iter().map(SocketAddr::to_string).collect();
            let server = format!("{} at {}", args.peer.name(), addrs.join(", "));
            (None, Doors { tcp, http: None }, which, server)
        }
    };
    let result = run_load(args, plan, &doors, server_cpu, server, hub.as_ref());
    if let Some(hub) = hub {
        // No LEAVE storm at shutdown: the server only says BYE.
        hub.shutdown();
        hub.join();
    }
    result
}

fn run_load(
    args: &BenchArgs,
    plan: &Plan,
    doors: &Doors,
    server_cpu: cpu::ServerCpu,
    server: String,
    hub: Option<&ServerHandle>,
) -> Result<Figures, Box<dyn Error>> {
    let progress = Progress::new();
    let base = Instant::now();
    let mut dialect = Dialect {
        peer: args.peer,
        subject: format!(
            "tickcast-bench.{}.{}",
            std::process::id(),
            base.elapsed().as_nanos() ^ u128::from(std::process::id())
        ),
        publisher: String::new(),
    };

    // The publisher first: its name tells its messages from others'.
    let target = doors.tcp[0];
    let mut publisher = connect(target)?;
    let (name, rest) = handshake(&dialect, &mut publisher, plan.timeout)
        .map_err(|e| format!("cannot set up the publisher at {target}: {e}"))?;
    dialect.publisher = name.unwrap_or_default();

    let parties = plan.readers as u32;
    let shared = Arc::new(Shared::new(
        dialect,
        base,
        Window::new(args.window, parties),
        plan.readers,
    ));
    let mut inboxes: Vec<Sender<NewSocket>> = Vec::new();
    let mut readers = Vec::new();
    for index in 0..plan.readers {
        let (tx, rx) = unbounded();
        let shared = Arc::clone(&shared);
        inboxes.push(tx);
        readers.push(
            thread::Builder::new()
                .name(format!("bench-reader-{index}"))
                .spawn(move || readers::run(&shared, index, rx))?,
        );
    }
    let publisher = (publisher, rest);
    let outcome = load(
        plan, doors, &shared, publisher, &inboxes, &progress, server_cpu, hub,
    );
    // Whatever happened: stop the readers and take their figures.
    shared.finished.store(true, Ordering::SeqCst);
    if let Some(hub) = hub {
        hub.shutdown();
    }
    shared.stop.store(true, Ordering::SeqCst);
    drop(inboxes);
    let mut latency = Histogram::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut deliveries = 0;
    let mut wakeups = 0;
    let mut received = Vec::new();
    for reader in readers {
        let out = reader.join().map_err(|_| "a reader thread panicked")?;
        latency.add(&out.latency)?;
        deliveries += out.deliveries;
        wakeups += out.wakeups;
        received.extend(out.received);
    }
    progress.clear();
    let (messages, setup, elapsed, before, after) = outcome?;
    let mut failures = shared.failures();
    if failures.is_empty() {
        received.sort_unstable();
        for (id, got) in received.iter().filter(|(_, got)| *got != messages) {
            if failures.len() < 20 {
                failures.push(format!(
                    "subscriber {id}: received {got} of {messages} messages"
                ));
            }
        }
    }
    let tick = cpu::tick();
    let ticks = |a: u64, b: u64| tick * (b.saturating_sub(a)) as u32;
    Ok(Figures {
        server,
        messages,
        deliveries,
        wakeups,
        setup,
        elapsed,
        latency,
        server_cpu: before.server.zip(after.server).map(|(a, b)| ticks(a, b)),
        server_ticks: before
            .server
            .zip(after.server)
            .map(|(a, b)| b.saturating_sub(a)),
        bench_cpu: ticks(before.bench, after.bench),
        failures,
    })
}

/// Subscribers connected but not yet subscribed, at most.
const CONNECTING: usize = 64;

/// Messages published, time to connect and subscribe, time to publish
/// and deliver, CPU before and after.
type LoadOutcome = (u64, Duration, Duration, cpu::Sample, cpu::Sample);

/// Connects the subscribers, publishes, and waits for the last delivery.
#[allow(clippy::too_many_arguments)]
fn load(
    plan: &Plan,
    doors: &Doors,
    shared: &Arc<Shared>,
    (publisher, rest): (TcpStream, Vec<u8>),
    inboxes: &[Sender<NewSocket>],
    progress: &Progress,
    server_cpu: cpu::ServerCpu,
    hub: Option<&ServerHandle>,
) -> Result<LoadOutcome, Box<dyn Error>> {
    // The publisher's incoming bytes (tickcast's echo, Redis's replies)
    // are drained by a reader; the socket turns non-blocking for both.
    publisher.set_nonblocking(true)?;
    let _ = inboxes[0].send(NewSocket {
        id: 0,
        stream: publisher.try_clone()?,
        role: Role::Publisher,
        leftover: rest,
    });

    let setup = Instant::now();
    let hello = shared.dialect.subscriber_hello();
    let mut last_move = Instant::now();
    let mut last_ready = 0;
    for id in 0..plan.subscribers {
        // Let the server catch up before connecting more: connections it
        // has not accepted yet wait in its listen backlog (128 for Rust's
        // TcpListener), and a full backlog leaves new ones hanging in the
        // kernel's SYN retransmission backoff for many seconds.
        while id - shared.ready.load(Ordering::SeqCst) >= CONNECTING {
            let ready = shared.ready.load(Ordering::SeqCst);
            if ready != last_ready {
                (last_ready, last_move) = (ready, Instant::now());
            } else if last_move.elapsed() > plan.timeout || shared.stop.load(Ordering::SeqCst) {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        // The --sse ones spread evenly among the others.
        let sse = (id + 1) * plan.sse / plan.subscribers > id * plan.sse / plan.subscribers;
        let (stream, leftover) = match doors.http {
            Some(http) if sse => open_stream(http, plan.timeout)?,
            _ => {
                // Round-robin over the nodes; the publisher's is the first.
                let mut stream = connect(doors.tcp[id % doors.tcp.len()])?;
                stream.write_all(&hello)?;
                (stream, Vec::new())
            }
        };
        stream.set_nonblocking(true)?;
        let _ = inboxes[id % inboxes.len()].send(NewSocket {
            id,
            stream,
            role: Role::Subscriber,
            leftover,
        });
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        progress.show(|| format!("connecting: {} of {} subscribers", id + 1, plan.subscribers));
    }
    while shared.ready.load(Ordering::SeqCst) < plan.subscribers {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(setup_failure(shared));
        }
        let ready = shared.ready.load(Ordering::SeqCst);
        if ready != last_ready {
            (last_ready, last_move) = (ready, Instant::now());
        } else if last_move.elapsed() > plan.timeout {
            return Err(format!(
                "only {ready} of {} subscribers were set up after {:?} without progress \
                 (is the server at its connection limit, or out of file descriptors?)",
                plan.subscribers, plan.timeout
            )
            .into());
        }
        progress.show(|| format!("subscribing: {ready} of {}", plan.subscribers));
        thread::sleep(Duration::from_millis(5));
    }
    if let Some(hub) = hub
        && hub.clients().len() < plan.subscribers + 1
    {
        return Err("the server lists fewer clients than the bench connected".into());
    }

    let setup = setup.elapsed();
    shared.measuring.store(true, Ordering::SeqCst);
    let before = cpu::sample(&server_cpu)?;
    let start = Instant::now();
    let for_publisher = Arc::clone(shared);
    let (payload, mode, rate, stop) = (plan.payload, plan.mode, plan.rate, plan.stop);
    let mut publisher = Some(
        thread::Builder::new()
            .name("bench-publisher".into())
            .spawn(move || {
                let _ = for_publisher.window.publisher.set(thread::current());
                publish(&for_publisher, publisher, payload, mode, rate, stop, start)
            })?,
    );

    // Watch: progress, the end, or a stall.
    let mut last_completed = 0;
    let mut last_move = Instant::now();
    let mut published = None;
    loop {
        thread::sleep(Duration::from_millis(2));
        if let Some(handle) = publisher.take_if(|h| h.is_finished()) {
            published = Some(handle.join().map_err(|_| "the publisher panicked")?);
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let completed = shared.window.completed.load(Ordering::Acquire);
        if let Some(Ok(total)) = published
            && completed >= total
        {
            break;
        }
        if let Some(Err(e)) = &published {
            shared.fail(format!("publisher: {e}"));
            break;
        }
        if completed != last_completed {
            (last_completed, last_move) = (completed, Instant::now());
        } else if last_move.elapsed() > plan.timeout {
            shared.fail(format!(
                "no progress for {:?}: message {completed} has not reached every subscriber",
                plan.timeout
            ));
            break;
        }
        progress.show(|| {
            let secs = start.elapsed().as_secs_f64();
            let delivered = shared.total_delivered();
            format!(
                "{secs:6.1} s  {completed:>10} messages  {delivered:>12} deliveries  {:>12.0} deliveries/s",
                delivered as f64 / secs.max(1e-9)
            )
        });
    }
    let elapsed = start.elapsed();
    let after = cpu::sample(&server_cpu)?;
    shared.measuring.store(false, Ordering::SeqCst);
    shared.stop.store(true, Ordering::SeqCst);
    let messages = match published {
        Some(Ok(n)) => n,
        Some(Err(_)) => shared.window.completed.load(Ordering::Acquire),
        None => match publisher.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| "the publisher panicked")?
                .unwrap_or(0),
            None => 0,
        },
    };
    Ok((messages, setup, elapsed, before, after))
}

fn setup_failure(shared: &Shared) -> Box<dyn Error> {
    let failures = shared.failures();
    format!(
        "setting up the subscribers failed: {}",
        failures.first().map_or("(no reason given)", String::as_str)
    )
    .into()
}

/// The publisher thread: returns how many messages it published.
fn publish(
    shared: &Shared,
    mut stream: TcpStream,
    payload: usize,
    mode: Mode,
    rate: Option<f64>,
    stop: Stop,
    start: Instant,
) -> io::Result<u64> {
    let dialect = &shared.dialect;
    let window = &shared.window;
    let start_ns = start.duration_since(shared.base).as_nanos() as u64;
    let interval_ns = rate.map_or(0.0, |r| 1e9 / r);
    let mut published = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let limit = match stop {
            Stop::Count(n) => n,
            Stop::After(d) if start.elapsed() >= d => published,
            Stop::After(_) => u64::MAX,
        };
        if published >= limit {
            break;
        }
        let room = window.completed.load(Ordering::Acquire) + window.size() - published;
        if room == 0 {
            thread::park_timeout(Duration::from_millis(5));
            continue;
        }
        let mut take = room.min(limit - published).min(256);
        if mode == Mode::Rate {
            // Messages due by now, on the schedule.
            let now = shared.now_ns().saturating_sub(start_ns) as f64;
            let due = (now / interval_ns).floor() as u64 + 1;
            if due <= published {
                let next = published as f64 * interval_ns - now;
                // Sleep, never spin: a spinning publisher would take a CPU
                // from the server it measures. Waking late only makes the
                // next write carry two messages; their latency still counts
                // from the schedule.
                thread::sleep(Duration::from_nanos(next.clamp(1e3, 5e6) as u64));
                continue;
            }
            take = take.min(due - published);
        }
        buf.clear();
        let owed = std::mem::take(&mut *shared.publisher_owes.lock());
        buf.extend_from_slice(&owed);
        let now = shared.now_ns();
        for n in published..published + take {
            let sent_ns = match mode {
                Mode::Throughput => now,
                Mode::Rate => start_ns + (n as f64 * interval_ns) as u64,
            };
            dialect.encode_publish(n, sent_ns, payload, &mut buf);
            if buf.len() >= 64 * 1024 {
                take = n + 1 - published;
                break;
            }
        }
        write_all(shared, &mut stream, &buf)?;
        published += take;
    }
    Ok(published)
}

/// Writes all of `buf` to a non-blocking socket, waiting in `poll` when
/// its send buffer is full (and giving up when the run stops).
fn write_all(shared: &Shared, stream: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "the server closed")),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(50u16));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {target}: {e}")))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens an event stream (`GET /events`) and reads its HTTP head, and
/// nothing more (peeking first): the events after it (SSE) are left in
/// the socket for a reader, which reads them like TCP lines (see `wire`).
fn open_stream(
    http: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Vec<u8>), Box<dyn Error>> {
    let mut stream = connect(http)?;
    stream.write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    stream.set_read_timeout(Some(timeout))?;
    let mut peeked = [0u8; 4096];
    let started = Instant::now();
    let end = loop {
        let n = stream.peek(&mut peeked)?;
        if let Some(end) = peeked[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if n == 0 || n == peeked.len() || started.elapsed() > timeout {
            return Err("no complete HTTP head from GET /events".into());
        }
        thread::sleep(Duration::from_millis(1)); // the rest of a split head
    };
    let mut head = vec![0u8; end];
    stream.read_exact(&mut head)?;
    if !head.starts_with(b"HTTP/1.1 200 ") {
        let text = String::from_utf8_lossy(&head);
        return Err(format!("GET /events was refused: {text}").into());
    }
    stream.set_read_timeout(None)?;
    Ok((stream, Vec::new()))
}

/// Sends the publisher's hello and reads (blocking) until it is ready:
/// returns the name the server gave it, if any, and the bytes that came
/// after its greeting (for the reader that takes the socket over).
fn handshake(
    dialect: &Dialect,
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(Option<String>, Vec<u8>), Box<dyn Error>> {
    stream.write_all(&dialect.publisher_hello())?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Parse::Frame(used, heard) = dialect.parse(&buf[at..]) {
            at += used;
            let name = match heard {
                Heard::Ready => None,
                // Unlike a subscriber it need not wait for its JOIN: its
                // lines are read from its connection after it.
                Heard::Welcome(name) => Some(name.to_string()),
                Heard::Refused(why) => return Err(why.into()),
                _ => continue,
            };
            stream.set_read_timeout(None)?;
            return Ok((name, buf[at..].to_vec()));
        }
        buf.drain(..at);
        if buf.len() > 1 << 20 {
            return Err("no end to the server's greeting".into());
        }
    }
}

/// A status line on stderr, redrawn in place, when stderr is a terminal.
struct Progress {
    on: bool,
    last: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            on: io::stderr().is_terminal(),
            last: std::cell::Cell::new(None),
        }
    }

    /// Redraws, at most 5 times a second.
    fn show(&self, line: impl FnOnce() -> String) {
        if !self.on
            || self
                .last
                .get()
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last.set(Some(Instant::now()));
        let _ = write!(io::stderr().lock(), "\r\x1b[2K{}", line());
    }

    fn clear(&self) {
        if self.on && self.last.get().is_some() {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

fn per_delivery(cpu: Duration, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu.as_nanos() as f64 / deliveries as f64)
}

fn rate_of(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

fn describe(args: &BenchArgs, plan: &Plan) -> String {
    let pace = match (plan.mode, plan.rate) {
        (Mode::Rate, Some(rate)) => format!("at {rate} messages/s"),
        _ => format!("as fast as they go (window {})", args.window),
    };
    let sse = match plan.sse {
        0 => String::new(),
        n => format!(" ({n} of them over SSE)"),
    };
    let spread = match args.target.len() {
        0 | 1 => String::new(),
        n => format!(" spread over {n} nodes"),
    };
    format!(
        "{} subscribers{spread}{sse}, {}-byte messages, {pace}",
        plan.subscribers, plan.payload
    )
}

fn table(args: &BenchArgs, plan: &Plan, f: &Figures) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<22} {v}\n"));
    row("server", f.server.clone());
    row("load", describe(args, plan));
    row(
        "setup",
        format!(
            "{:.3} s to connect and subscribe every subscriber",
            f.setup.as_secs_f64()
        ),
    );
    row("elapsed", format!("{:.3} s", f.elapsed.as_secs_f64()));
    row(
        "messages",
        format!("{} ({:.0}/s)", f.messages, rate_of(f.messages, f.elapsed)),
    );
    row(
        "deliveries",
        format!(
            "{} ({:.0}/s)",
            f.deliveries,
            rate_of(f.deliveries, f.elapsed)
        ),
    );
    let mut latency: Vec<String> = PERCENTILES
        .iter()
        .map(|(name, q)| format!("{name} {}", micros(f.latency.value_at_percentile(*q))))
        .collect();
    latency.push(format!("max {}", micros(f.latency.max())));
    row("latency", latency.join("  "));
    row(
        "server CPU/delivery",
        match (f.server_cpu, f.server_ticks) {
            (Some(cpu), Some(ticks)) => format!(
                "{} ({:.2} s of CPU{}, {ticks} clock ticks{})",
                per_delivery(cpu, f.deliveries).map_or("-".into(), |ns| format!("{ns:.0} ns")),
                cpu.as_secs_f64(),
                match args.server_pid.len() {
                    0 | 1 => String::new(),
                    n => format!(" of {n} processes together"),
                },
                if ticks < 100 {
                    ": imprecise, run longer"
                } else {
                    ""
                }
            ),
            _ => "unknown (use --server-pid)".into(),
        },
    );
    row(
        "bench CPU/delivery",
        format!(
            "{} ({:.2} s of CPU)",
            per_delivery(f.bench_cpu, f.deliveries).map_or("-".into(), |ns| format!("{ns:.0} ns")),
            f.bench_cpu.as_secs_f64()
        ),
    );
    row(
        "bench reader wake-ups",
        format!(
            "{} ({:.1} deliveries each)",
            f.wakeups,
            f.deliveries as f64 / f.wakeups.max(1) as f64
        ),
    );
    if f.failures.is_empty() {
        row(
            "check",
            format!(
                "OK: each of {} subscribers got all {} messages once, in order",
                plan.subscribers, f.messages
            ),
        );
    } else {
        row("check", "FAILED".into());
        for failure in &f.failures {
            out.push_str(&format!("    {failure}\n"));
        }
    }
    out
}

fn micros(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

fn json(args: &BenchArgs, plan: &Plan, f: &Figures) -> serde_json::Value {
    let mut latency = serde_json::Map::new();
    for (name, q) in PERCENTILES {
        latency.insert(
            name.replace('.', "_"),
            f.latency.value_at_percentile(q).into(),
        );
    }
    latency.insert("max".into(), f.latency.max().into());
    latency.insert("mean".into(), f.latency.mean().into());
    let expected = f.messages * plan.subscribers as u64;
    serde_json::json!({
        "server": f.server,
        "peer": args.peer.name(),
        "targets": args.target,
        "mode": match plan.mode { Mode::Throughput => "throughput", Mode::Rate => "rate" },
        "rate": plan.rate,
        "window": args.window,
        "subscribers": plan.subscribers,
        "sse_subscribers": plan.sse,
        "payload_bytes": plan.payload,
        "readers": plan.readers,
        "setup_s": f.setup.as_secs_f64(),
        "elapsed_s": f.elapsed.as_secs_f64(),
        "messages": f.messages,
        "deliveries": f.deliveries,
        "expected_deliveries": expected,
        "messages_per_s": rate_of(f.messages, f.elapsed),
        "deliveries_per_s": rate_of(f.deliveries, f.elapsed),
        "latency_ns": latency,
        "server_cpu_s": f.server_cpu.map(|d| d.as_secs_f64()),
        "server_cpu_ticks": f.server_ticks,
        "server_cpu_ns_per_delivery": f.server_cpu.and_then(|c| per_delivery(c, f.deliveries)),
        "bench_cpu_s": f.bench_cpu.as_secs_f64(),
        "bench_cpu_ns_per_delivery": per_delivery(f.bench_cpu, f.deliveries),
        "bench_reader_wakeups": f.wakeups,
        "check": {
            "ok": f.failures.is_empty() && f.deliveries == expected,
            "failures": f.failures,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
