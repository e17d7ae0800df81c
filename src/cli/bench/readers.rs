//! The receiving side: a few reader threads, each waiting in `poll(2)` over
//! many non-blocking sockets, checking and timing every delivery.
//!
//! A thread per subscriber would cost the bench more than the server it
//! measures (10,000 threads, each woken for every message). Here each
//! reader thread owns a share of the subscribers and loops:
//!
//! 1. `poll` over all its sockets (at most 50 ms, to notice new sockets and
//!    the end of the run);
//! 2. for each readable socket, one `read` into a scratch buffer shared by
//!    all its sockets, then [`Dialect::parse`] frame by frame; a frame cut
//!    in two by the read is kept in that subscriber's small `leftover`
//!    buffer until the rest arrives (so 10,000 subscribers cost 10,000
//!    leftovers, mostly empty, not 10,000 read buffers).
//!
//! # What is checked, for each subscriber
//!
//! * the publisher's messages arrive numbered 0, 1, 2… with none missing,
//!   none twice, none out of order;
//! * on tickcast, every broadcast event's SEQ is the one before plus one
//!   (`JOIN`, `LEAVE` and `TICK` lines are not the publisher's messages, but
//!   they take SEQs too, so the SEQs are checked on every broadcast line),
//!   from the subscriber's own `JOIN` on (see `wire` for why there);
//! * the server neither refuses anything (`ERR`, `-ERR`) nor says goodbye
//!   nor closes before the end.
//!
//! The first failure stops the run; the report lists it.
//!
//! # The window
//!
//! The publisher may be at most `--window` messages ahead of the slowest
//! subscriber. [`Window`] counts, for each message in flight, how many
//! reader threads have seen every one of their subscribers receive it: each
//! thread counts its own subscribers in a private array first, so the
//! shared counters are touched once per message per thread, not once per
//! delivery.

use super::wire::{Dialect, Heard, Parse};
use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use parking_lot::Mutex;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Instant;

/// Bytes asked of the socket per `read`.
const SCRATCH: usize = 64 * 1024;

/// A frame that grows past this without ending is an error.
const MAX_LEFTOVER: usize = 16 * 1024 * 1024;

/// How many failures the report lists.
const MAX_FAILURES: usize = 20;

/// The longest latency the histogram holds: 60 s.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What the publisher, the readers and the main thread share.
pub struct Shared {
    pub dialect: Dialect,
    /// Time zero of the run: payload times are nanoseconds since it.
    pub base: Instant,
    pub window: Window,
    /// Set to end the run (at the end, or at the first failure).
    pub stop: AtomicBool,
    /// Set once the figures are taken: from then on a closing server is
    /// expected, not a failure.
    pub finished: AtomicBool,
    /// Set while the figures are being taken (from the first message
    /// published to the last one delivered).
    pub measuring: AtomicBool,
    /// Subscribers that are connected and subscribed.
    pub ready: AtomicUsize,
    /// Deliveries so far, per reader thread (for the progress line).
    pub delivered: Vec<AtomicU64>,
    /// Bytes the publisher must send between two messages (NATS `PONG`).
    pub publisher_owes: Mutex<Vec<u8>>,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(dialect: Dialect, base: Instant, window: Window, readers: usize) -> Shared {
        Shared {
            dialect,
            base,
            window,
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            delivered: (0..readers).map(|_| AtomicU64::new(0)).collect(),
            publisher_owes: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// Records a failure and stops the run.
    pub fn fail(&self, what: String) {
        if self.finished.load(Ordering::SeqCst) {
            return;
        }
        let mut failures = self.failures.lock();
        if failures.len() < MAX_FAILURES {
            failures.push(what);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().clone()
    }

    /// Nanoseconds since [`Shared::base`].
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn total_delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }
}

/// How far the publisher may run ahead; see the module docs.
pub struct Window {
    size: u64,
    /// Per message in flight (message N in slot N % size): reader threads
    /// whose subscribers all have it.
    slots: Vec<AtomicU32>,
    /// Reader threads that have subscribers.
    parties: u32,
    /// Messages 0..completed have reached every subscriber.
    pub completed: AtomicU64,
    /// The publisher's thread, woken when a message completes.
    pub publisher: OnceLock<Thread>,
}

impl Window {
    pub fn new(size: u64, parties: u32) -> Window {
        Window {
            size,
            slots: (0..size).map(|_| AtomicU32::new(0)).collect(),
            parties,
            completed: AtomicU64::new(0),
            publisher: OnceLock::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// One more reader thread has message `n` at all its subscribers.
    fn arrive(&self, n: u64) {
        let slot = &self.slots[(n % self.size) as usize];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Nobody touches this slot again until message n + size is
            // published, which waits for the line below.
            slot.store(0, Ordering::Relaxed);
            self.completed.fetch_max(n + 1, Ordering::AcqRel);
            if let Some(publisher) = self.publisher.get() {
                publisher.unpark();
            }
        }
    }
}

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A subscriber: checked, timed and counted.
    Subscriber,
    /// The publisher's connection, read only so that it never fills up
    /// (tickcast echoes every message to its sender too; Redis answers each
    /// `PUBLISH`). Only refusals are looked at.
    Publisher,
}

/// One socket handed to a reader thread.
pub struct NewSocket {
    pub id: usize,
    pub stream: TcpStream,
    pub role: Role,
    /// Bytes already read from it that belong to the reader.
    pub leftover: Vec<u8>,
}

struct Sub {
    id: usize,
    stream: TcpStream,
    role: Role,
    leftover: Vec<u8>,
    ready: bool,
    /// The name in its `WELCOME` (tickcast): its own `JOIN` has it.
    name: Option<String>,
    failed: bool,
    next_n: u64,
    last_seq: Option<u64>,
}

/// What a reader thread hands back at the end.
pub struct Outcome {
    pub latency: Histogram<u64>,
    pub deliveries: u64,
    /// Returns from `poll` with something to read, while measuring.
    pub wakeups: u64,
    /// Per subscriber: its id and how many messages it received.
    pub received: Vec<(usize, u64)>,
}

/// One reader thread's state.
struct Reader<'a> {
    shared: &'a Shared,
    subs: Vec<Sub>,
    /// Subscribers (not the publisher's socket) among `subs`.
    subscribers: u32,
    /// Per message in flight: how many of this thread's subscribers have it.
    local: Vec<u32>,
    latency: Histogram<u64>,
    deliveries: u64,
    scratch: Vec<u8>,
}

/// Runs one reader thread until the run stops.
pub fn run(shared: &Shared, index: usize, incoming: Receiver<NewSocket>) -> Outcome {
    let mut r = Reader {
        shared,
        subs: Vec::new(),
        subscribers: 0,
        local: vec![0; shared.window.size() as usize],
        latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds"),
        deliveries: 0,
        scratch: vec![0; SCRATCH],
    };
    let mut ready = Vec::new();
    let mut wakeups = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        r.take_new(&incoming);
        ready.clear();
        {
            let mut fds: Vec<PollFd<'_>> = r
                .subs
                .iter()
                .map(|s| PollFd::new(s.stream.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(50u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    shared.fail(format!("reader {index}: poll failed: {e}"));
                    break;
                }
            }
            ready.extend(
                fds.iter()
                    .enumerate()
                    .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i),
            );
        }
        if !ready.is_empty() && shared.measuring.load(Ordering::Relaxed) {
            wakeups += 1;
        }
        for &i in &ready {
            r.service(i);
        }
        shared.delivered[index].store(r.deliveries, Ordering::Relaxed);
    }
    Outcome {
        latency: r.latency,
        deliveries: r.deliveries,
        wakeups,
        received: r
            .subs
            .iter()
            .filter(|s| s.role == Role::Subscriber)
            .map(|s| (s.id, s.next_n))
            .collect(),
    }
}

impl Reader<'_> {
    fn take_new(&mut self, incoming: &Receiver<NewSocket>) {
        while let Ok(new) = incoming.try_recv() {
            if new.role == Role::Subscriber {
                self.subscribers += 1;
            }
            self.subs.push(Sub {
                id: new.id,
                stream: new.stream,
                role: new.role,
                leftover: new.leftover,
                ready: new.role == Role::Publisher,
                name: None,
                failed: false,
                next_n: 0,
                last_seq: None,
            });
        }
    }

    /// One `read` from subscriber `i`, and whatever frames it completes.
    fn service(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        if sub.failed {
            return;
        }
        let kept = sub.leftover.len();
        if self.scratch.len() < kept + SCRATCH {
            self.scratch.resize(kept + SCRATCH, 0);
        }
        self.scratch[..kept].copy_from_slice(&sub.leftover);
        let got = match sub.stream.read(&mut self.scratch[kept..kept + SCRATCH]) {
            Ok(0) => {
                self.fail(i, "the server closed the connection".into());
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
            Err(e) => {
                let hint = if e.kind() == ErrorKind::ConnectionReset {
                    " (a server drops a connection that falls more than --max-pending behind: \
                     with a large --payload, start it with a larger --max-pending or lower --window)"
                } else {
                    ""
                };
                self.fail(i, format!("read failed: {e}{hint}"));
                return;
            }
        };
        let now = self.shared.now_ns();
        let end = kept + got;
        let mut at = 0;
        let scratch = std::mem::take(&mut self.scratch);
        while at < end {
            match self.shared.dialect.parse(&scratch[at..end]) {
                Parse::Incomplete => break,
                Parse::Frame(used, heard) => {
                    at += used;
                    if !self.heard(i, heard, now) {
                        break;
                    }
                }
            }
        }
        let sub = &mut self.subs[i];
        sub.leftover.clear();
        sub.leftover.extend_from_slice(&scratch[at..end]);
        self.scratch = scratch;
        if sub.leftover.len() > MAX_LEFTOVER {
            self.fail(i, "a frame longer than 16 MiB".into());
        }
    }

    /// Handles one frame; false once this socket has failed.
    fn heard(&mut self, i: usize, heard: Heard<'_>, now: u64) -> bool {
        let sub = &mut self.subs[i];
        if sub.role == Role::Publisher {
            match heard {
                Heard::Refused(why) => {
                    self.fail(i, why);
                    return false;
                }
                Heard::Answer(bytes) => self.shared.publisher_owes.lock().extend(bytes),
                _ => {}
            }
            return true;
        }
        match heard {
            Heard::Ready => self.subscribed(i),
            Heard::Welcome(name) => sub.name = Some(name.to_string()),
            Heard::Join { seq, name } if !sub.ready => {
                // Nothing before its own JOIN is promised to it, so its
                // SEQs are checked from there.
                if sub.name.as_deref() == Some(name) {
                    sub.last_seq = Some(seq);
                    self.subscribed(i);
                }
            }
            Heard::Join { seq, .. } => {
                if let Some(why) = check_seq(sub, Some(seq)) {
                    self.fail(i, why);
                    return false;
                }
            }
            Heard::Other { .. } if !sub.ready => {}
            Heard::Message { n, sent_ns, seq } => {
                if let Some(why) = check_seq(sub, seq) {
                    self.fail(i, why);
                    return false;
                }
                if n != sub.next_n {
                    let why = if n < sub.next_n {
                        format!(
                            "message {n} again (or out of order) after message {}",
                            n.max(sub.next_n) - 1
                        )
                    } else {
                        format!(
                            "messages {}..{n} missing (message {n} came next)",
                            sub.next_n
                        )
                    };
                    self.fail(i, why);
                    return false;
                }
                if !sub.ready {
                    self.fail(
                        i,
                        format!("message {n} before the subscription was confirmed"),
                    );
                    return false;
                }
                sub.next_n += 1;
                self.deliveries += 1;
                let _ = self
                    .latency
                    .record(now.saturating_sub(sent_ns).clamp(1, MAX_LATENCY_NS));
                let slot = &mut self.local[(n % self.shared.window.size()) as usize];
                *slot += 1;
                if *slot == self.subscribers {
                    *slot = 0;
                    self.shared.window.arrive(n);
                }
            }
            Heard::Other { seq } => {
                if let Some(why) = check_seq(sub, seq) {
                    self.fail(i, why);
                    return false;
                }
            }
            Heard::Answer(bytes) => {
                // A few bytes into an idle send buffer: a non-blocking
                // write takes them whole.
                if let Err(e) = sub.stream.write_all(&bytes) {
                    self.fail(i, format!("cannot answer the server's PING: {e}"));
                    return false;
                }
            }
            Heard::Refused(why) => {
                self.fail(i, why);
                return false;
            }
        }
        true
    }

    /// Subscriber `i` is subscribed: it will hear every message.
    fn subscribed(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        if !sub.ready {
            sub.ready = true;
            self.shared.ready.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn fail(&mut self, i: usize, why: String) {
        let sub = &mut self.subs[i];
        sub.failed = true;
        let who = match sub.role {
            Role::Subscriber => format!("subscriber {}", sub.id),
            Role::Publisher => "publisher".to_string(),
        };
        self.shared.fail(format!("{who}: {why}"));
    }
}

/// Checks that a broadcast SEQ follows the one before it.
fn check_seq(sub: &mut Sub, seq: Option<u64>) -> Option<String> {
    let seq = seq?;
    let last = sub.last_seq.replace(seq);
    match last {
        Some(last) if seq != last + 1 => Some(format!(
            "SEQ {seq} after SEQ {last}: {}",
            if seq > last {
                "broadcast events lost"
            } else {
                "out of order or twice"
            }
        )),
        _ => None,
    }
}
