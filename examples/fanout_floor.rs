//! The floor: what the kernel alone costs per delivery when one thread
//! fans the same bytes out to many TCP sockets.
//!
//! ```sh
//! cargo run --release --example fanout_floor
//! cargo run --release --example fanout_floor -- --subscribers 1000
//! cargo run --release --example fanout_floor -- --events-per-write 1
//! ```
//!
//! # The idea
//!
//! tickcast's broadcaster is one thread that, for every batch of events,
//! makes one non-blocking `sendmsg` per member, each carrying the whole
//! batch (under load about 127 events of about 75 bytes, so ~9.5 KB per
//! write at 100 subscribers). However clever the code around it, those
//! system calls must be paid, and on loopback each one costs the sender's
//! thread more than a copy: the kernel copies the bytes into the socket,
//! then runs the *receiving* side's TCP right away, in the sender's own
//! soft interrupt (loopback has no wire to wait for), queues the bytes on
//! the reader's socket and wakes the thread waiting in `poll` for it.
//!
//! This program does only that, with nothing of tickcast in between: one
//! writer thread, N loopback sockets, one `send` of the same buffer per
//! socket per round, and a few reader threads on the other ends that read
//! and count bytes. The writer's CPU time divided by the deliveries is the
//! *floor*: the cost per delivery that no design making one system call
//! per member per batch can beat on this machine.
//!
//! # How it maps onto tickcast
//!
//! * the writer is the broadcaster: `TCP_NODELAY`, a 128 KiB send buffer,
//!   `MSG_DONTWAIT | MSG_NOSIGNAL`, exactly as tickcast sets them;
//! * the readers are `tickcast bench`'s readers: a few threads, each
//!   waiting in `poll(2)` over its share of the sockets and doing one
//!   `read` into a 64 KiB buffer per readable socket;
//! * a *delivery* is one line reaching one subscriber, as in the bench:
//!   one write of E lines to N sockets is E × N deliveries.
//!
//! # Reading the output
//!
//! Compare "writer CPU per delivery" with `tickcast bench`'s "server CPU
//! per delivery" at the same subscribers and a similar batch (the bench
//! does not choose the batch: under load the broadcaster's batches fill
//! up to ~127 events; `--events-per-write 1` is the other extreme, one
//! line per write, as with a slow fixed-rate publisher). What tickcast
//! costs above the floor is its own work: parsing, numbering, the
//! history, the outboxes. "Writer CPU per write" is the cost of one
//! `sendmsg` with its loopback delivery, whatever it carries; divided by
//! the lines in it, it gives the per-delivery figure, which is why fuller
//! batches are cheaper per delivery.
//!
//! The figures are thread CPU time (`CLOCK_THREAD_CPUTIME_ID`, user plus
//! system), so other programs on the machine slow the run down but do not
//! add to them; they still move a little from run to run: run it twice.

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::SockRef;
use std::error::Error;
use std::io::{self, ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: fanout_floor [--subscribers N] [--events-per-write E] [--line-bytes L]
                    [--seconds S] [--readers R]

  --subscribers N       sockets the writer writes to [100]
  --events-per-write E  lines in each write [127]
  --line-bytes L        bytes per line, its newline included [75]
  --seconds S           how long the writer writes [4]
  --readers R           reader threads [2]";

/// The send buffer tickcast gives every client socket.
const SEND_BUFFER: usize = 128 * 1024;

/// Bytes asked of a socket per `read`, as in `tickcast bench`.
const SCRATCH: usize = 64 * 1024;

/// The longest a reader sleeps in `poll` before looking at the stop flag,
/// and the longest the writer sleeps before looking at the readers again.
const NAP: Duration = Duration::from_millis(100);

/// The writer gives up if the readers take nothing for this long.
const STALL: Duration = Duration::from_secs(10);

/// Never raise `SIGPIPE`, never wait: what tickcast passes to every send.
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// What the command line asks for.
#[derive(Debug, Clone, Copy)]
struct Options {
    subscribers: usize,
    events_per_write: usize,
    line_bytes: usize,
    seconds: f64,
    readers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            subscribers: 100,
            events_per_write: 127,
            line_bytes: 75,
            seconds: 4.0,
            readers: 2,
        }
    }
}

/// Reads `--name value` pairs. `Ok(None)` means `--help` was asked for.
fn parse_options(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        const FLAGS: [&str; 5] = [
            "--subscribers",
            "--events-per-write",
            "--line-bytes",
            "--readers",
            "--seconds",
        ];
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag:?}"));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--subscribers" => options.subscribers = positive(&flag, &value)?,
            "--events-per-write" => options.events_per_write = positive(&flag, &value)?,
            "--line-bytes" => options.line_bytes = positive(&flag, &value)?,
            "--readers" => options.readers = positive(&flag, &value)?,
            "--seconds" => match value.parse::<f64>() {
                // At most a day: a longer run measures nothing more.
                Ok(s) if s > 0.0 && s <= 86_400.0 => options.seconds = s,
                _ => {
                    return Err(format!(
                        "{flag} wants a number of seconds above 0 and at most 86400 (decimals allowed), not {value:?}"
                    ));
                }
            },
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(Some(options))
}

/// A whole number of at least 1.
fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag} wants a whole number of at least 1, not {value:?}"
        )),
    }
}

/// CPU time (user plus system) used so far by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration,
    // and CLOCK_THREAD_CPUTIME_ID is a clock every Linux kernel has.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Raises the soft limit on open files to the hard one, and checks that
/// `needed` descriptors fit (1,000 subscribers are 2,000 sockets here).
fn ensure_open_files(needed: u64) -> Result<(), Box<dyn Error>> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    if needed > hard {
        return Err(
            format!("this run needs about {needed} open files, the limit is {hard}").into(),
        );
    }
    Ok(())
}

/// Both ends of `n` loopback connections: the writer's (set up as
/// tickcast sets up a client's socket) and the readers' (non-blocking).
fn connect_pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let (mut writer_ends, mut reader_ends) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // One connect, then its accept: the backlog never holds more than one.
    for _ in 0..n {
        let reader_end = TcpStream::connect(address)?;
        let (writer_end, _) = listener.accept()?;
        writer_end.set_nodelay(true)?;
        SockRef::from(&writer_end).set_send_buffer_size(SEND_BUFFER)?;
        reader_end.set_nonblocking(true)?;
        writer_ends.push(writer_end);
        reader_ends.push(reader_end);
    }
    Ok((writer_ends, reader_ends))
}

/// `events` lines of `line_bytes` bytes each, every one ending in `\n`.
fn make_batch(events: usize, line_bytes: usize) -> Vec<u8> {
    let mut line: Vec<u8> = (0..line_bytes - 1).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    line.repeat(events)
}

/// What the writer and the readers share.
struct Progress {
    /// Bytes read so far, by all the readers together.
    read: AtomicU64,
    /// The writer sleeps until `read` reaches this; the reader that
    /// takes it there wakes the writer.
    wake_at: AtomicU64,
    /// The writer's thread, to wake.
    writer: Thread,
    /// Set once the writer is done and everything it sent is read.
    stop: AtomicBool,
}

impl Progress {
    /// Counts `n` more bytes read, and wakes the writer if they are the
    /// ones it waits for.
    fn add_read(&self, n: u64) {
        let before = self.read.fetch_add(n, Ordering::SeqCst);
        let wake_at = self.wake_at.load(Ordering::SeqCst);
        if before < wake_at && before + n >= wake_at {
            self.writer.unpark();
        }
    }

    /// Sleeps until the readers have read `target` bytes. Errs if they
    /// take nothing for [`STALL`].
    fn wait_for_read(&self, target: u64) -> io::Result<()> {
        self.wake_at.store(target, Ordering::SeqCst);
        let mut last = self.read.load(Ordering::SeqCst);
        let mut last_change = Instant::now();
        while last < target {
            // Bounded: a wake-up lost to a race costs at most one NAP.
            thread::park_timeout(NAP);
            let now = self.read.load(Ordering::SeqCst);
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() > STALL {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "the readers stopped reading",
                ));
            }
        }
        Ok(())
    }
}

/// What a reader thread hands back.
struct ReaderOutcome {
    bytes: u64,
    cpu: Duration,
}

/// One reader thread: poll its sockets, one `read` per readable socket,
/// count the bytes, until told to stop.
fn run_reader(sockets: Vec<TcpStream>, progress: &Progress) -> io::Result<ReaderOutcome> {
    let cpu_at_start = thread_cpu_time();
    let mut scratch = vec![0u8; SCRATCH];
    let mut bytes = 0u64;
    let mut ready = Vec::with_capacity(sockets.len());
    while !progress.stop.load(Ordering::SeqCst) {
        ready.clear();
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(NAP.as_millis() as u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        ready.extend(
            fds.iter()
                .enumerate()
                .filter(|(_, fd)| is_ready(fd))
                .map(|(i, _)| i),
        );
        let mut taken = 0u64;
        for &i in &ready {
            match (&sockets[i]).read(&mut scratch) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "writer closed")),
                Ok(n) => taken += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        if taken > 0 {
            bytes += taken;
            progress.add_read(taken);
        }
    }
    let cpu = thread_cpu_time() - cpu_at_start;
    Ok(ReaderOutcome { bytes, cpu })
}

/// What the writer counted.
#[derive(Debug, Default)]
struct WriterOutcome {
    /// Sends that the kernel took bytes from.
    writes: u64,
    /// Of those, how many it took only part of.
    partial: u64,
    /// Sends refused with EAGAIN (the socket's buffer was full): that
    /// socket is skipped for the round.
    eagain: u64,
    /// Bytes the kernel took.
    accepted: u64,
    wall: Duration,
    cpu: Duration,
}

/// One `send` of `batch` to every socket: the broadcaster's round.
fn write_round(sockets: &[TcpStream], batch: &[u8], out: &mut WriterOutcome) -> io::Result<()> {
    for socket in sockets {
        match SockRef::from(socket).send_with_flags(batch, SEND_FLAGS) {
            Ok(n) => {
                out.writes += 1;
                out.partial += u64::from(n < batch.len());
                out.accepted += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => out.eagain += 1,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes rounds for `seconds`, then waits until the readers have read
/// everything. CPU and wall time cover the rounds and the waits between
/// them (asleep, a wait costs no CPU), not the final drain.
fn run_writer(
    sockets: &[TcpStream],
    batch: &[u8],
    seconds: f64,
    progress: &Progress,
) -> io::Result<WriterOutcome> {
    let mut out = WriterOutcome::default();
    // The window: before each round, the readers must have read all but at
    // most one batch per socket of what was sent. So the writer runs at
    // most one round ahead of the readers, as tickcast's broadcaster runs
    // ahead of `tickcast bench`'s readers by at most the bench's window
    // (128 messages, about one full batch). Without it the writer would
    // only fill socket buffers and measure EAGAIN. It sleeps while it
    // waits: spinning would count as writer CPU.
    let one_round = (sockets.len() * batch.len()) as u64;
    let length = Duration::from_secs_f64(seconds);
    let (cpu_at_start, start) = (thread_cpu_time(), Instant::now());
    while start.elapsed() < length {
        write_round(sockets, batch, &mut out)?;
        progress.wait_for_read(out.accepted.saturating_sub(one_round))?;
    }
    (out.cpu, out.wall) = (thread_cpu_time() - cpu_at_start, start.elapsed());
    progress.wait_for_read(out.accepted)?;
    Ok(out)
}

/// Prints one figure: its name, then its value.
fn line(name: &str, value: String) {
    println!("{name:<30} {value}");
}

/// The report: what was written and read, and what it cost.
fn report(options: &Options, writer: &WriterOutcome, readers: &[ReaderOutcome]) {
    let seconds = writer.wall.as_secs_f64();
    let deliveries = writer.accepted as f64 / options.line_bytes as f64;
    let read: u64 = readers.iter().map(|r| r.bytes).sum();
    let readers_cpu: Duration = readers.iter().map(|r| r.cpu).sum();
    let per_write_us = writer.cpu.as_secs_f64() * 1e6 / writer.writes.max(1) as f64;
    let per_delivery_ns = writer.cpu.as_secs_f64() * 1e9 / deliveries.max(1.0);
    let readers_ns = readers_cpu.as_secs_f64() * 1e9 / deliveries.max(1.0);
    let batch = options.events_per_write * options.line_bytes;
    line("subscribers", options.subscribers.to_string());
    line(
        "bytes per write",
        format!(
            "{batch} ({} lines of {} bytes)",
            options.events_per_write, options.line_bytes
        ),
    );
    line("reader threads", options.readers.to_string());
    line(
        "writes",
        format!("{} ({} partial)", writer.writes, writer.partial),
    );
    line(
        "deliveries",
        format!(
            "{deliveries:.0} ({} bytes sent, {read} read)",
            writer.accepted
        ),
    );
    line("wall time", format!("{seconds:.2} s"));
    line("writes/s", format!("{:.0}", writer.writes as f64 / seconds));
    line("deliveries/s", format!("{:.0}", deliveries / seconds));
    line("writer CPU", format!("{:.2} s", writer.cpu.as_secs_f64()));
    line("writer CPU per write", format!("{per_write_us:.2} µs"));
    line(
        "writer CPU per delivery",
        format!("{per_delivery_ns:.1} ns"),
    );
    line(
        "readers' CPU",
        format!("{:.2} s", readers_cpu.as_secs_f64()),
    );
    line("readers' CPU per delivery", format!("{readers_ns:.1} ns"));
    line("EAGAIN (socket skipped)", writer.eagain.to_string());
    println!(
        "floor: {} subscribers x {} events/write: writer {per_write_us:.2} µs/write, \
         {per_delivery_ns:.1} ns/delivery; readers {readers_ns:.1} ns/delivery",
        options.subscribers, options.events_per_write
    );
}

/// Sets up the sockets and the readers, writes, and reports.
fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let batch_bytes = options.events_per_write.checked_mul(options.line_bytes);
    if batch_bytes.is_none_or(|b| b > 64 << 20) {
        return Err(
            "a write of more than 64 MiB is not a batch: lower --events-per-write or --line-bytes"
                .into(),
        );
    }
    let batch = make_batch(options.events_per_write, options.line_bytes);
    ensure_open_files(2 * options.subscribers as u64 + 16)?;
    let (writer_ends, reader_ends) = connect_pairs(options.subscribers)?;
    let progress = Arc::new(Progress {
        read: AtomicU64::new(0),
        wake_at: AtomicU64::new(0),
        writer: thread::current(),
        stop: AtomicBool::new(false),
    });
    let readers = options.readers.min(options.subscribers);
    let mut shares: Vec<Vec<TcpStream>> = (0..readers).map(|_| Vec::new()).collect();
    for (i, socket) in reader_ends.into_iter().enumerate() {
        shares[i % readers].push(socket);
    }
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| {
            let progress = Arc::clone(&progress);
            thread::Builder::new()
                .name(format!("reader-{i}"))
                .spawn(move || run_reader(share, &progress))
                .expect("spawn a reader thread")
        })
        .collect();
    let written = run_writer(&writer_ends, &batch, options.seconds, &progress);
    progress.stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.join().expect("a reader thread panicked")?);
    }
    report(&Options { readers, ..options }, &written?, &outcomes);
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fanout_floor: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout_floor: {e}");
            ExitCode::FAILURE
        }
    }
}
