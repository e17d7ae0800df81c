//! `tickcast serve`: run the hub until Ctrl-C or SIGTERM.
//!
//! Options map one to one onto [`tickcast::server::Config`]. The first line
//! on stderr is `tickcast listening on ADDR` with the bound address (so
//! `--bind 127.0.0.1:0` tells the port); then one timestamped line per
//! connection and disconnection, unless `--quiet`.

use argh::FromArgs;
use crossbeam_channel::{bounded, select};
use std::error::Error;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;
use tickcast::server::{self, Config, ServerEvent};

/// run the hub: accept clients, relay what they say, tick periodically
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "serve",
    example = "tickcast serve",
    example = "tickcast serve --bind 0.0.0.0:7878 --tick-ms 1000 --max-rate 20",
    example = "TICKCAST_TOKEN=s3cret tickcast serve --idle-timeout 60",
    note = "Connect with `nc 127.0.0.1 7878` or `telnet 127.0.0.1 7878` and type /help. \
            Ctrl-C or SIGTERM stops the server cleanly: every accepted message is \
            delivered and every client gets `BYE shutdown`."
)]
pub struct ServeArgs {
    /// address to listen on [127.0.0.1:7878]; port 0 picks a free port
    #[argh(
        option,
        default = "SocketAddr::from(([127, 0, 0, 1], Config::DEFAULT_PORT))"
    )]
    bind: SocketAddr,

    /// period of the server's own TICK in milliseconds; 0 turns it off [5000]
    #[argh(option, default = "5000")]
    tick_ms: u64,

    /// connections at once; one more gets BYE server-full [1024]
    #[argh(option, default = "1024")]
    max_clients: usize,

    /// longest line a client may send, in bytes [4096]
    #[argh(option, default = "4096")]
    max_line: usize,

    /// largest /send payload, in bytes [1048576]
    #[argh(option, default = "1024 * 1024")]
    max_payload: u64,

    /// how old a client's oldest unsent byte may grow before it is dropped
    /// as slow-consumer, in milliseconds [2000]
    #[argh(option, default = "2000")]
    write_timeout_ms: u64,

    /// how many unsent bytes may queue up for one client before it is
    /// dropped as slow-consumer [8388608]
    #[argh(option, default = "8 * 1024 * 1024")]
    max_pending: usize,

    /// bytes of /send payloads the server holds at once, all clients
    /// together; senders wait, then are refused, past it [67108864]
    #[argh(option, default = "64 * 1024 * 1024")]
    max_memory: usize,

    /// seconds a client may take to finish a line or payload it started
    /// (payloads get 1 s more per 64 KiB); BYE timeout past it; 0 = off [30]
    #[argh(
        option,
        default = "Duration::from_secs(30)",
        from_str_fn(parse_seconds)
    )]
    line_timeout: Duration,

    /// drop clients silent this long, in seconds (PING after half); 0 = off
    /// [off]
    #[argh(option, from_str_fn(parse_seconds))]
    idle_timeout: Option<Duration>,

    /// lines per second a client may send, burst twice that; 0 = off [off]
    #[argh(option)]
    max_rate: Option<u32>,

    /// connections from one IP address; 0 = off [off]
    #[argh(option)]
    max_per_ip: Option<usize>,

    /// broadcast events kept for /resume [1024]
    #[argh(option, default = "1024")]
    history: usize,

    /// bytes of broadcast events kept for /resume [67108864]
    #[argh(option, default = "64 * 1024 * 1024")]
    history_bytes: usize,

    /// token clients must /auth with (or set TICKCAST_TOKEN) [none]
    #[argh(option)]
    token: Option<String>,

    /// do not log connections and disconnections
    #[argh(switch, short = 'q')]
    quiet: bool,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    // 0 turns the timeout off (see `config`), like `--tick-ms 0`.
    if !(0.0..1e9).contains(&secs) {
        return Err("the idle timeout must be a number of seconds, 0 or more".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl ServeArgs {
    fn config(self) -> Config {
        let token = super::token(self.token);
        Config {
            bind: self.bind,
            tick: (self.tick_ms > 0).then(|| Duration::from_millis(self.tick_ms)),
            tick_text: None,
            max_clients: self.max_clients,
            max_line: self.max_line,
            max_payload: self.max_payload,
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            max_pending: self.max_pending,
            max_memory: self.max_memory,
            line_timeout: Some(self.line_timeout).filter(|d| !d.is_zero()),
            // For the limits that are off by default, 0 also means off.
            idle_timeout: self.idle_timeout.filter(|d| !d.is_zero()),
            max_rate: self.max_rate.filter(|&n| n > 0),
            max_per_ip: self.max_per_ip.filter(|&n| n > 0),
            history: self.history,
            history_bytes: self.history_bytes,
            token,
            // The CLI logs connections only; it need not see every message.
            message_events: false,
            event_capacity: 4096,
            http: None,
            http_origins: Vec::new(),
        }
    }
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    let quiet = args.quiet;
    let config = args.config();
    config.validate()?;
    let bind = config.bind;
    let server = server::spawn(config).map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    super::log_line(format_args!(
        "tickcast listening on {}",
        server.local_addr()
    ));

    // Ctrl-C and SIGTERM (ctrlc's "termination" feature) ask for a clean
    // shutdown. Another one while shutting down changes nothing: the
    // shutdown is bounded (by about one --write-timeout-ms) and finishes
    // delivering what was accepted.
    let (signal_tx, signal) = bounded(1);
    ctrlc::set_handler(move || {
        let _ = signal_tx.try_send(());
    })?;

    let events = server.events();
    let finished = server.finished();
    loop {
        select! {
            recv(events) -> event => log(quiet, event?),
            recv(signal) -> _ => break,
            // Only a failure inside the server ends it without a signal.
            recv(finished) -> _ => {
                for event in events.try_iter() {
                    log(quiet, event);
                }
                return Err("the server stopped after an internal error (see above)".into());
            }
        }
    }

    if !quiet {
        super::log_line(format_args!("{} shutting down", super::now()));
    }
    server.shutdown();
    // Keep logging while the server says goodbye to everyone.
    let (done_tx, done) = bounded(1);
    let waiter = thread::Builder::new()
        .name("tickcast-join".into())
        .spawn(move || {
            server.join();
            let _ = done_tx.send(());
        })?;
    loop {
        select! {
            recv(events) -> event => match event {
                Ok(event) => log(quiet, event),
                // The server is gone, and with it the channel's sender.
                Err(_) => break,
            },
            recv(done) -> _ => break,
        }
    }
    for event in events.try_iter() {
        log(quiet, event);
    }
    let _ = waiter.join();
    if !quiet {
        super::log_line(format_args!("{} stopped", super::now()));
    }
    Ok(())
}

fn log(quiet: bool, event: ServerEvent) {
    let line = match event {
        ServerEvent::AcceptFailed { error } => format!("accept failed: {error}"),
        _ if quiet => return,
        ServerEvent::Connected { id, peer } => format!("connect {peer} id={id}"),
        ServerEvent::Refused { peer, reason } => format!("refused {peer} reason={reason}"),
        ServerEvent::Disconnected {
            id,
            peer,
            name,
            reason,
        } => format!("disconnect {peer} id={id} name={name} reason={reason}"),
        _ => return,
    };
    super::log_line(format_args!("{} {line}", super::now()));
}
