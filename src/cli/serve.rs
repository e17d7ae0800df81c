//! `tickcast serve`: run the hub until Ctrl-C or SIGTERM.
//!
//! # Settings: one struct, three sources
//!
//! [`ServeArgs`] is the one list of settings. Each field is at once a
//! command-line option (`argh`, whose help is the field's doc comment) and
//! a key of the configuration file (serde, kebab-case: `--max-clients` is
//! `max-clients = 100`). Every field is optional, so "not given" can be
//! told apart from "given the default". The effective settings are, for
//! each key, the first of:
//!
//! 1. the command line,
//! 2. the file named by `--config` (TOML),
//! 3. [`Config::default`], the library's defaults.
//!
//! Merging 1 over 2 is done on TOML tables, key by key, so it needs no
//! code per option. [`ServeArgs::to_config`] then fills in 3 and turns the
//! settings into a [`Config`]; [`ServeArgs::from_config`] goes back, for
//! `--print-config`. **Adding an option** means: a field in `ServeArgs`,
//! a line in `to_config`, a line in `from_config` (a unit test checks that
//! those two agree), and a commented line in `docs/tickcast.toml`.
//!
//! # What it prints
//!
//! The first line on stderr is exactly `tickcast listening on ADDR` with
//! the bound address (so `--bind 127.0.0.1:0` tells the port), in every
//! log format: scripts and service managers wait for it. Then whether a
//! token is required, then one line per connection and disconnection
//! (unless `--quiet`), each with a timestamp and a level (see
//! [`super::log`]).

use super::log::{Level, LogFormat, Logger};
use super::units::{BindAddr, ByteSize, Millis, Seconds};
use argh::FromArgs;
use crossbeam_channel::{bounded, select};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;
use tickcast::protocol::Reason;
use tickcast::server::{self, ClusterConfig, Config, ServerEvent};

/// run the hub: accept clients, relay what they say, tick periodically
#[derive(FromArgs, Serialize, Deserialize, Default, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "serve",
    example = "tickcast serve",
    example = "tickcast serve --bind 0.0.0.0:7878 --tick-ms 1s --max-rate 20",
    example = "TICKCAST_TOKEN=s3cret tickcast serve --idle-timeout 60s",
    example = "tickcast serve --config /etc/tickcast/tickcast.toml",
    note = "Options take their value after a space: `--tick-ms 500`, not `--tick-ms=500`. \
            Durations take a unit (500ms, 5s, 2m, 1h; a plain number is in the unit the \
            option names, milliseconds for *-ms and seconds otherwise), and sizes too \
            (4096, 64KiB, 8MiB, 1MB). Every option can also be set in the --config file, \
            under the same name (max-clients = 100); the command line wins. \
            Connect with `tickcast chat`, `nc 127.0.0.1 7878` or `telnet 127.0.0.1 7878` \
            and type /help. Ctrl-C or SIGTERM stops the server cleanly: every accepted \
            message is delivered and every client gets `BYE shutdown`."
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// read settings from this TOML file (see docs/tickcast.toml); options
    /// on the command line win over it
    #[argh(option)]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// print the effective settings (defaults, file and options together)
    /// as TOML, and exit
    #[argh(switch)]
    #[serde(skip)]
    print_config: bool,

    /// address to listen on, like 127.0.0.1:7878, 0.0.0.0:7878,
    /// localhost:7878 or :7878 [127.0.0.1:7878]; port 0 picks a free port
    #[argh(option)]
    bind: Option<BindAddr>,

    /// period of the server's own TICK (plain number: milliseconds); 0
    /// turns it off [5s]
    #[argh(option)]
    tick_ms: Option<Millis>,

    /// connections at once; one more gets BYE server-full [1024]
    #[argh(option)]
    max_clients: Option<usize>,

    /// longest line a client may send, in bytes [4096]
    #[argh(option)]
    max_line: Option<ByteSize>,

    /// largest /send payload, in bytes [1MiB]
    #[argh(option)]
    max_payload: Option<ByteSize>,

    /// how old a client's oldest unsent byte may grow before it is dropped
    /// as slow-consumer (plain number: milliseconds) [2s]
    #[argh(option)]
    write_timeout_ms: Option<Millis>,

    /// how many unsent bytes may queue up for one client before it is
    /// dropped as slow-consumer [8MiB]
    #[argh(option)]
    max_pending: Option<ByteSize>,

    /// bytes of /send payloads the server holds at once, all clients
    /// together; senders wait, then are refused, past it [64MiB]
    #[argh(option)]
    max_memory: Option<ByteSize>,

    /// time a client may take to finish a line or payload it started
    /// (plain number: seconds; payloads get 1 s more per 64 KiB); BYE
    /// timeout past it; 0 = off [30s]
    #[argh(option)]
    line_timeout: Option<Seconds>,

    /// drop clients silent this long (plain number: seconds; PING after
    /// half); 0 = off [off]
    #[argh(option)]
    idle_timeout: Option<Seconds>,

    /// lines per second a client may send, burst twice that; 0 = off [off]
    #[argh(option)]
    max_rate: Option<u32>,

    /// connections from one IP address; 0 = off [off]
    #[argh(option)]
    max_per_ip: Option<usize>,

    /// broadcast events kept for /resume [1024]
    #[argh(option)]
    history: Option<usize>,

    /// bytes of broadcast events kept for /resume [64MiB]
    #[argh(option)]
    history_bytes: Option<ByteSize>,

    /// token clients must /auth with (TICKCAST_TOKEN, which stays out of
    /// `ps`, is read when this is not given) [none]
    #[argh(option)]
    token: Option<String>,

    /// where to serve HTTP, like 127.0.0.1:8080 or :8080 [off]
    #[argh(option)]
    http: Option<BindAddr>,

    /// another web origin allowed to use the HTTP endpoints, like
    /// https://example.com (repeatable)
    #[argh(option)]
    #[serde(default)]
    http_origin: Vec<String>,

    /// serve one room with other nodes through Redis, like
    /// redis://127.0.0.1:6379/0 (see docs/CLUSTER.md) [off]
    #[argh(option)]
    redis: Option<String>,

    /// the room's name in Redis: nodes with the same --redis and --room
    /// serve one room together; 1 to 64 of A-Z a-z 0-9 _ - . [tickcast]
    #[argh(option)]
    room: Option<String>,

    /// log lines as text (TIME LEVEL MESSAGE) or json (one object per
    /// line); the first line stays `tickcast listening on ADDR` [text]
    #[argh(option)]
    log_format: Option<LogFormat>,

    /// do not log connections and disconnections
    #[argh(switch, short = 'q')]
    #[serde(default)]
    quiet: bool,
}

/// What a server needs besides the [`Config`]: how to log.
#[derive(Debug, Clone, Copy)]
struct Logging {
    logger: Logger,
    quiet: bool,
}

impl ServeArgs {
    /// Lays these settings (from the command line) over those in `file`:
    /// every key given here wins. A switch that is off and a repeatable
    /// option given no time count as "not given", so the file's stand.
    fn over(self, file: ServeArgs) -> Result<ServeArgs, String> {
        let table = |args: &ServeArgs| {
            toml::Table::try_from(args).map_err(|e| format!("internal: settings as TOML: {e}"))
        };
        let mut merged = table(&file)?;
        for (key, value) in table(&self)? {
            let given = match &value {
                toml::Value::Boolean(on) => *on,
                toml::Value::Array(items) => !items.is_empty(),
                _ => true,
            };
            if given {
                merged.insert(key, value);
            }
        }
        let mut settings: ServeArgs = merged
            .try_into()
            .map_err(|e| format!("internal: merged settings: {e}"))?;
        settings.config = self.config;
        settings.print_config = self.print_config;
        Ok(settings)
    }

    /// Reads a configuration file. Its errors name the file, the line and
    /// the key; a key that is not an option is an error (a typo must not
    /// silently leave a limit at its default).
    fn read_file(path: &std::path::Path) -> Result<ServeArgs, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            format!(
                "in the config file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }

    /// The server's [`Config`]: each setting given, else the library's
    /// default. Values that cannot work are refused here, naming the
    /// option, before the server sees them.
    fn to_config(&self, token: Option<String>) -> Result<Config, String> {
        let d = Config::default();
        // 0 turns these off, as it always has on the command line.
        let off_when_zero = |d: Duration| Some(d).filter(|d| !d.is_zero());
        let config = Config {
            bind: self.bind.map_or(d.bind, |b| b.0),
            tick: self.tick_ms.map_or(d.tick, |t| off_when_zero(t.0)),
            tick_text: None,
            max_clients: self.max_clients.unwrap_or(d.max_clients),
            max_line: self.max_line.map_or(d.max_line, ByteSize::as_usize),
            max_payload: self.max_payload.map_or(d.max_payload, |b| b.0),
            write_timeout: self.write_timeout_ms.map_or(d.write_timeout, |t| t.0),
            max_pending: self.max_pending.map_or(d.max_pending, ByteSize::as_usize),
            max_memory: self.max_memory.map_or(d.max_memory, ByteSize::as_usize),
            line_timeout: self
                .line_timeout
                .map_or(d.line_timeout, |t| off_when_zero(t.0)),
            idle_timeout: self
                .idle_timeout
                .map_or(d.idle_timeout, |t| off_when_zero(t.0)),
            max_rate: self
                .max_rate
                .map_or(d.max_rate, |n| Some(n).filter(|&n| n > 0)),
            max_per_ip: self
                .max_per_ip
                .map_or(d.max_per_ip, |n| Some(n).filter(|&n| n > 0)),
            history: self.history.unwrap_or(d.history),
            history_bytes: self
                .history_bytes
                .map_or(d.history_bytes, ByteSize::as_usize),
            token,
            // The CLI logs connections only; it need not see every message.
            message_events: false,
            event_capacity: 4096,
            http: self.http.map(|b| b.0),
            http_origins: self.http_origin.clone(),
            cluster: self.cluster()?,
        };
        // The library's own checks do not know option names: say them here.
        let checks = [
            (config.max_clients == 0, "--max-clients must be at least 1"),
            (config.max_line == 0, "--max-line must be at least 1 byte"),
            (
                config.write_timeout.is_zero(),
                "--write-timeout-ms must be at least 1ms (a client may always fall \
                 behind a little)",
            ),
            (
                config
                    .idle_timeout
                    .is_some_and(|d| d < Duration::from_millis(2)),
                "--idle-timeout must be 0 (off) or at least 2ms",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(message.to_string());
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// `--redis` and `--room`.
    fn cluster(&self) -> Result<Option<ClusterConfig>, String> {
        match (&self.redis, &self.room) {
            (Some(redis), room) => Ok(Some(ClusterConfig {
                redis: redis.clone(),
                room: room
                    .clone()
                    .unwrap_or_else(|| ClusterConfig::DEFAULT_ROOM.to_string()),
            })),
            (None, Some(_)) => Err("--room needs --redis: a room lives in Redis \
                 (for example --redis redis://127.0.0.1:6379/0 --room office)"
                .to_string()),
            (None, None) => Ok(None),
        }
    }

    /// The settings that give `config`, every one of them stated: what
    /// `--print-config` prints. The token is left out (it is a secret).
    fn from_config(config: &Config, logging: Logging) -> ServeArgs {
        let zero_when_off = |d: Option<Duration>| d.unwrap_or(Duration::ZERO);
        ServeArgs {
            config: None,
            print_config: false,
            bind: Some(BindAddr(config.bind)),
            tick_ms: Some(Millis(zero_when_off(config.tick))),
            max_clients: Some(config.max_clients),
            max_line: Some(ByteSize(config.max_line as u64)),
            max_payload: Some(ByteSize(config.max_payload)),
            write_timeout_ms: Some(Millis(config.write_timeout)),
            max_pending: Some(ByteSize(config.max_pending as u64)),
            max_memory: Some(ByteSize(config.max_memory as u64)),
            line_timeout: Some(Seconds(zero_when_off(config.line_timeout))),
            idle_timeout: Some(Seconds(zero_when_off(config.idle_timeout))),
            max_rate: Some(config.max_rate.unwrap_or(0)),
            max_per_ip: Some(config.max_per_ip.unwrap_or(0)),
            history: Some(config.history),
            history_bytes: Some(ByteSize(config.history_bytes as u64)),
            token: None,
            http: config.http.map(BindAddr),
            http_origin: config.http_origins.clone(),
            redis: config.cluster.as_ref().map(|c| c.redis.clone()),
            room: config.cluster.as_ref().map(|c| c.room.clone()),
            log_format: Some(logging.logger.format),
            quiet: logging.quiet,
        }
    }

    /// The effective settings: command line over file over defaults.
    fn resolve(self) -> Result<(Config, Logging), String> {
        let cli_token = self.token.clone();
        let settings = match &self.config {
            Some(path) => {
                let file = ServeArgs::read_file(path)?;
                self.over(file)?
            }
            None => self,
        };
        // The command line's --token, else TICKCAST_TOKEN, else the file's.
        let token = match super::token(cli_token)? {
            Some(token) => Some(token),
            None => super::non_empty_token(settings.token.clone(), "token in the config file")?,
        };
        let logging = Logging {
            logger: Logger {
                format: settings.log_format.unwrap_or_default(),
            },
            quiet: settings.quiet,
        };
        Ok((settings.to_config(token)?, logging))
    }
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    let print_config = args.print_config;
    let (config, logging) = args.resolve()?;
    if print_config {
        print!("{}", effective_toml(&config, logging)?);
        return Ok(());
    }
    let Logging { logger, quiet } = logging;
    let bind = config.bind;
    let token_required = config.token.is_some();
    let server = server::spawn(config).map_err(|e| cannot_listen(bind, &e))?;
    // Exactly this, in every log format: tools wait for this line.
    super::log_line(format_args!(
        "tickcast listening on {}",
        server.local_addr()
    ));
    if let Some(http) = server.http_addr() {
        super::log_line(format_args!("tickcast http on http://{http}/"));
    }
    if let Some(node) = server.node() {
        logger.startup(
            &format!(
                "node {} of room {}, EPOCH {}",
                node.node,
                node.room,
                server.stats().epoch
            ),
            &[
                ("event", "node".into()),
                ("node", node.node.into()),
                ("room", node.room.into()),
            ],
        );
    }
    if token_required {
        logger.startup(
            "token required: clients must /auth with it first",
            &[("event", "startup".into()), ("token_required", true.into())],
        );
    } else {
        logger.startup(
            "no token: anyone who can connect may join (--token or TICKCAST_TOKEN sets one)",
            &[
                ("event", "startup".into()),
                ("token_required", false.into()),
            ],
        );
    }

    // Ctrl-C and SIGTERM (ctrlc's "termination" feature) ask for a clean
    // shutdown. Another one while shutting down changes nothing: the
    // shutdown is bounded (by about one --write-timeout-ms) and finishes
    // delivering what was accepted.
    let (signal_tx, signal) = bounded(1);
    ctrlc::set_handler(move || {
        let _ = signal_tx.try_send(());
    })?;

    let log = |event| log_event(logger, quiet, event);
    let events = server.events();
    let finished = server.finished();
    loop {
        select! {
            recv(events) -> event => log(event?),
            recv(signal) -> _ => break,
            // Only a failure inside the server ends it without a signal.
            recv(finished) -> _ => {
                for event in events.try_iter() {
                    log(event);
                }
                logger.log(Level::Error, "the server stopped after an internal error",
                    &[("event", "failed".into())]);
                return Err("the server stopped after an internal error (see above)".into());
            }
        }
    }

    if !quiet {
        logger.log(
            Level::Info,
            "shutting down",
            &[("event", "stopping".into())],
        );
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
                Ok(event) => log(event),
                // The server is gone, and with it the channel's sender.
                Err(_) => break,
            },
            recv(done) -> _ => break,
        }
    }
    for event in events.try_iter() {
        log(event);
    }
    let _ = waiter.join();
    if !quiet {
        logger.log(Level::Info, "stopped", &[("event", "stopped".into())]);
    }
    Ok(())
}

/// `--print-config`: the effective settings as a TOML file would say them.
fn effective_toml(config: &Config, logging: Logging) -> Result<String, String> {
    let settings = ServeArgs::from_config(config, logging);
    let body = toml::to_string(&settings).map_err(|e| format!("internal: {e}"))?;
    let token = if config.token.is_some() {
        "# token: set (not shown)\n"
    } else {
        "# token: none\n"
    };
    Ok(format!(
        "# tickcast serve: effective settings (command line, then config file, then defaults)\n\
         {body}{token}"
    ))
}

/// Why the listening socket could not be made, and what to do about it.
fn cannot_listen(bind: SocketAddr, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotConnected {
        // A cluster node that could not reach Redis says so itself.
        return e.to_string();
    }
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "; is another tickcast (or another program) already listening there? \
             Stop it, or choose another port: --bind {}:0 picks any free one",
            bind.ip()
        ),
        io::ErrorKind::PermissionDenied if bind.port() < 1024 => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port from 1024 up"
                .to_string()
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "; this machine has no address {}: use 127.0.0.1 (this machine only) or \
             0.0.0.0 (every interface)",
            bind.ip()
        ),
        _ => String::new(),
    };
    format!("cannot listen on {bind}: {e}{hint}")
}

/// Reasons for leaving that are part of normal life; the others are
/// logged as warnings.
fn ordinary(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Quit | Reason::Closed | Reason::Shutdown | Reason::Replaced
    )
}

fn log_event(logger: Logger, quiet: bool, event: ServerEvent) {
    match event {
        ServerEvent::AcceptFailed { error } => logger.log(
            Level::Error,
            &format!("accept failed: {error}"),
            &[("event", "accept-failed".into()), ("error", error.into())],
        ),
        // A cluster node's news about Redis: always worth a line.
        ServerEvent::Room { up, text } => logger.log(
            if up { Level::Info } else { Level::Warn },
            &text,
            &[("event", "room".into()), ("redis_up", up.into())],
        ),
        _ if quiet => {}
        ServerEvent::Connected { id, peer } => logger.log(
            Level::Info,
            // Every connection starts as guest-ID (see the protocol).
            &format!("connect guest-{id} {peer} (id {id})"),
            &[
                ("event", "connect".into()),
                ("id", id.0.into()),
                ("name", format!("guest-{id}").into()),
                ("peer", peer.to_string().into()),
            ],
        ),
        ServerEvent::Refused { peer, reason } => logger.log(
            Level::Warn,
            &format!("refused {peer} reason={reason}"),
            &[
                ("event", "refused".into()),
                ("peer", peer.to_string().into()),
                ("reason", reason.as_str().into()),
            ],
        ),
        ServerEvent::Disconnected {
            id,
            peer,
            name,
            reason,
        } => logger.log(
            if ordinary(reason) {
                Level::Info
            } else {
                Level::Warn
            },
            &format!("disconnect {name} {peer} (id {id}) reason={reason}"),
            &[
                ("event", "disconnect".into()),
                ("id", id.0.into()),
                ("name", name.into()),
                ("peer", peer.to_string().into()),
                ("reason", reason.as_str().into()),
            ],
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        ServeArgs::from_args(&["serve"], args).unwrap_or_else(|e| panic!("{}", e.output))
    }

    /// Every key, set to something that is not the default.
    const EVERY_KEY: &str = r#"
        bind = "127.0.0.1:9999"
        tick-ms = "750ms"
        max-clients = 7
        max-line = "1KiB"
        max-payload = "2MiB"
        write-timeout-ms = "3s"
        max-pending = "3MiB"
        max-memory = "16MiB"
        line-timeout = "10s"
        idle-timeout = "1m"
        max-rate = 5
        max-per-ip = 3
        history = 10
        history-bytes = "1MiB"
        http = "127.0.0.1:8080"
        http-origin = ["https://a.example", "https://b.example"]
        log-format = "json"
        quiet = true
    "#;

    #[test]
    fn to_config_and_from_config_agree_on_every_key() {
        let file: ServeArgs = toml::from_str(EVERY_KEY).unwrap();
        let logging = Logging {
            logger: Logger {
                format: file.log_format.unwrap(),
            },
            quiet: file.quiet,
        };
        let config = file.to_config(None).unwrap();
        assert_eq!(ServeArgs::from_config(&config, logging), file);
        // And from_config names every key: none is left at "not given".
        let table = toml::Table::try_from(&file).unwrap();
        let keys = EVERY_KEY.lines().filter(|l| l.contains(" = ")).count();
        assert_eq!(table.len(), keys);
    }

    #[test]
    fn the_command_line_wins_over_the_file_key_by_key() {
        let file: ServeArgs =
            toml::from_str("max-clients = 5\nhistory = 9\nquiet = true\nhttp-origin = [\"x\"]")
                .unwrap();
        let cli = parse(&["--max-clients", "6", "--http-origin", "y"]);
        let merged = cli.over(file).unwrap();
        assert_eq!(merged.max_clients, Some(6));
        assert_eq!(merged.history, Some(9));
        // A switch not given leaves the file's value.
        assert!(merged.quiet);
        assert_eq!(merged.http_origin, vec!["y".to_string()]);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = toml::from_str::<ServeArgs>("max-client = 5").unwrap_err();
        assert!(err.to_string().contains("max-client"), "{err}");
        // Settings that only make sense on the command line are not keys.
        assert!(toml::from_str::<ServeArgs>("print-config = true").is_err());
        assert!(toml::from_str::<ServeArgs>("config = \"x\"").is_err());
    }

    #[test]
    fn impossible_values_name_their_option() {
        for (args, option) in [
            (&["--max-clients", "0"][..], "--max-clients"),
            (&["--max-line", "0"], "--max-line"),
            (&["--write-timeout-ms", "0"], "--write-timeout-ms"),
            (&["--idle-timeout", "1ms"], "--idle-timeout"),
        ] {
            let err = parse(args).to_config(None).unwrap_err();
            assert!(err.starts_with(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_port_in_use_gets_a_hint() {
        let addr: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let text = cannot_listen(addr, &io::Error::from(io::ErrorKind::AddrInUse));
        assert!(text.contains("another tickcast"), "{text}");
        assert!(text.contains("--bind 127.0.0.1:0"), "{text}");
    }
}
