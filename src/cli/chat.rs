//! `tickcast chat`: an interactive terminal client on top of
//! [`tickcast::client::Client`].
//!
//! Lines typed are said to everyone; `/commands` are this client's own
//! (`/help` lists them: `/send FILE`, `/ticks off`… besides the server's
//! `/nick`, `/list`, `/msg`). What arrives is printed with the local time:
//! `[10:00:05] <alice> hello`, `* bob joined`. It survives server restarts
//! by reconnecting and resuming, with one line per outage. Ctrl-D or
//! `/quit` ends it.
//!
//! # Two ways to read what is typed
//!
//! On a terminal, lines are read with the `rustyline` line editor: arrow
//! keys, history (Up, Ctrl-R), and, what matters most in a chat, lines
//! that arrive while you type are printed *above* the line you are typing
//! (through its `ExternalPrinter`), never into the middle of it. Names are
//! coloured when stdout is a terminal, unless `NO_COLOR` is set.
//!
//! From a pipe (`printf 'hi\n' | tickcast chat`) there is no one to edit
//! anything: lines are read plainly, and nothing is coloured.
//!
//! # `--raw`
//!
//! With `--raw` every broadcast event and reply is printed as its protocol
//! line instead, exactly once and in SEQ order even across reconnects;
//! notes about the connection go to stderr. Typed lines go to the server
//! as they are. Fed from a pipe, it sends the lines, then `/quit`, and
//! exits after the server's `BYE`.

use argh::FromArgs;
use crossbeam_channel::{Receiver, bounded, select, unbounded};
use rustyline::error::ReadlineError;
use std::collections::BTreeSet;
use std::error::Error;
use std::io::{self, BufRead, IsTerminal, Write};
use std::thread;
use std::time::Duration;
use tickcast::client::{Client, ClientConfig, ClientError, Closed, Event, Gap};
use tickcast::protocol::{Command, ErrorCode, Reason, SERVER_SENDER};

/// talk to a hub from the terminal: type to say, /help for commands
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "chat",
    example = "tickcast chat --name alice",
    example = "tickcast chat localhost:7878 --no-ticks",
    example = "tickcast chat --redundant 10.0.0.1:7878 10.0.0.2:7878",
    example = "printf 'hello\\n/list\\n' | tickcast chat --raw",
    note = "Type to say something to everyone; /help lists the commands (/nick, /list, \
            /msg NAME TEXT, /send FILE, /ticks on|off, /ping, /quit). The client \
            reconnects by itself and resumes where it left off, saying so if anything \
            was lost. Given several addresses (the nodes of one room), it connects to \
            the first that answers and, when that connection is lost, to the next; \
            with --redundant its two connections go to the first two that answer. \
            Options take their value after a space: `--name alice`."
)]
pub struct ChatArgs {
    /// server addresses, like 127.0.0.1:7878, localhost:7878 or :7878;
    /// several are tried in turn [127.0.0.1:7878]
    #[argh(positional, arg_name = "addr")]
    addrs: Vec<String>,

    /// name to take (and take back after every reconnect)
    #[argh(option)]
    name: Option<String>,

    /// the server's token (or set TICKCAST_TOKEN)
    #[argh(option)]
    token: Option<String>,

    /// keep two connections (on two servers, given several addresses), so
    /// that losing one loses nothing
    #[argh(switch)]
    redundant: bool,

    /// do not show the server's periodic ticks (/ticks on shows them)
    #[argh(switch)]
    no_ticks: bool,

    /// print protocol lines, for scripts
    #[argh(switch)]
    raw: bool,
}

/// What the person at the keyboard did.
enum Input {
    Line(String),
    /// Ctrl-C.
    Interrupted,
}

pub fn run(args: ChatArgs) -> Result<(), Box<dyn Error>> {
    let token = super::token(args.token)?;
    let config = ClientConfig {
        name: args.name,
        token,
        redundant: args.redundant,
        ..ClientConfig::default()
    };
    let addrs = addresses(args.addrs);
    let client = Client::with_config_any(&addrs, config).map_err(|e| {
        let hint = match e {
            ClientError::Connect(_) => {
                " (is the server running there? an address looks like 127.0.0.1:7878 or \
                 localhost:7878)"
            }
            _ => "",
        };
        format!("cannot join {}: {}{hint}", addrs.join(" or "), in_words(&e))
    })?;

    let human = !args.raw;
    let interactive = human && io::stdin().is_terminal() && io::stdout().is_terminal();
    let colour = human
        && io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Whatever way this ends, the terminal is given back as it was.
    let _terminal = interactive.then(TerminalGuard::save);
    let (lines, screen) = if interactive {
        let (lines, printer) = spawn_line_editor()?;
        (lines, Screen::Editor(printer))
    } else {
        (spawn_stdin_reader()?, Screen::Plain)
    };
    let mut out = Printer {
        raw: args.raw,
        screen,
        colour,
        show_ticks: !args.no_ticks,
        down: BTreeSet::new(),
        gap_since_loss: false,
        said_shutdown: false,
        said_unavailable: false,
        several: addrs.len() > 1,
    };

    let (interrupt_tx, interrupt) = bounded(1);
    ctrlc::set_handler(move || {
        let _ = interrupt_tx.try_send(());
    })?;

    let closed = loop {
        select! {
            recv(client.events()) -> event => match event {
                Ok(Event::Closed(why)) => {
                    out.print(&Event::Closed(why));
                    break why;
                }
                Ok(event) => out.print(&event),
                Err(_) => break Closed::Quit,
            },
            recv(lines) -> input => match input {
                Ok(Input::Line(line)) => {
                    if let Some(reason) = quit_reason(&line) {
                        break finish(&client, &mut out, reason);
                    }
                    out.typed(&client, &line);
                }
                Ok(Input::Interrupted) => break finish(&client, &mut out, "interrupted"),
                // stdin ended (Ctrl-D, or the end of a pipe).
                Err(_) => break finish(&client, &mut out, ""),
            },
            recv(interrupt) -> _ => break finish(&client, &mut out, "interrupted"),
        }
    };
    match closed {
        Closed::Quit => Ok(()),
        Closed::AuthFailed => Err("the server refused the token".into()),
        Closed::GaveUp => Err("gave up reconnecting".into()),
    }
}

/// The addresses to try, in order: `:PORT` is this machine, as for
/// `serve --bind`; none given is the default port here.
fn addresses(given: Vec<String>) -> Vec<String> {
    if given.is_empty() {
        return vec!["127.0.0.1:7878".into()];
    }
    given
        .into_iter()
        .map(|addr| match addr.strip_prefix(':') {
            Some(port) => format!("127.0.0.1:{port}"),
            None => addr,
        })
        .collect()
}

/// Reads stdin line by line on its own thread (stdin blocks, and cannot
/// be waited on together with a channel otherwise).
fn spawn_stdin_reader() -> io::Result<Receiver<Input>> {
    let (tx, rx) = unbounded();
    thread::Builder::new()
        .name("tickcast-stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
                if tx.send(Input::Line(line)).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Runs the line editor on its own thread; returns the typed lines and the
/// printer that writes above the line being edited.
fn spawn_line_editor() -> rustyline::Result<(Receiver<Input>, Box<dyn Print>)> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let printer = editor.create_external_printer()?;
    let (tx, rx) = unbounded();
    thread::Builder::new()
        .name("tickcast-editor".into())
        .spawn(move || {
            loop {
                match editor.readline("> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        // After /quit, read no more: the terminal stays
                        // out of the editor's raw mode while the chat ends.
                        let last = quit_reason(&line).is_some();
                        if tx.send(Input::Line(line)).is_err() || last {
                            break;
                        }
                    }
                    Err(ReadlineError::Interrupted) => {
                        let _ = tx.send(Input::Interrupted);
                        break;
                    }
                    // Ctrl-D, or the terminal is gone: the channel closes.
                    Err(_) => break,
                }
            }
        })
        .map_err(ReadlineError::Io)?;
    Ok((rx, Box::new(printer)))
}

/// Something that prints a line above the prompt: rustyline's printer.
trait Print: Send {
    fn print_line(&mut self, line: String) -> bool;
}

impl<P: rustyline::ExternalPrinter + Send> Print for P {
    fn print_line(&mut self, line: String) -> bool {
        self.print(line).is_ok()
    }
}

/// The terminal's settings at the start, put back on drop. The line
/// editor switches the terminal to raw mode while it reads; if the chat
/// ends while it is reading (say the server refused the token), its
/// thread never gets to switch back, and without this the shell would be
/// left with a terminal that does not echo.
struct TerminalGuard(Option<nix::sys::termios::Termios>);

impl TerminalGuard {
    fn save() -> TerminalGuard {
        TerminalGuard(nix::sys::termios::tcgetattr(io::stdin()).ok())
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(settings) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                settings,
            );
        }
    }
}

fn quit_reason(line: &str) -> Option<&str> {
    match Command::parse(line) {
        Ok(Some(Command::Quit(reason))) => Some(reason),
        _ => None,
    }
}

/// Quits politely, prints what arrived up to the server's `BYE`.
fn finish(client: &Client, out: &mut Printer, reason: &str) -> Closed {
    // The editor has stopped reading (after /quit, Ctrl-D or Ctrl-C):
    // print plainly.
    out.screen = Screen::Plain;
    if let Err(e) = client.quit(reason) {
        out.note(&format!("! {}", in_words(&e)));
    }
    let mut why = Closed::Quit;
    while let Ok(event) = client.events().recv_timeout(Duration::from_millis(100)) {
        if let Event::Closed(w) = event {
            why = w;
        }
        out.print(&event);
    }
    why
}

/// What this client does with typed `/commands`, for `/help`.
const HELP: &[&str] = &[
    "TEXT               say TEXT to everyone (//TEXT says /TEXT)",
    "/nick NAME         take a name (kept across reconnects)",
    "/list              who is here",
    "/msg NAME TEXT     say TEXT to NAME only",
    "/send FILE         send the bytes of FILE to everyone",
    "/ticks on|off      show or hide the server's periodic ticks",
    "/ping              how long a round trip to the server takes",
    "/help              this list",
    "/quit [REASON]     leave (Ctrl-D too)",
];

/// A client error in words for the person at the keyboard.
fn in_words(e: &ClientError) -> String {
    match e {
        ClientError::Server {
            code: ErrorCode::AuthRequired,
            ..
        } => NEEDS_TOKEN.to_string(),
        ClientError::NotConnected => "not connected right now (reconnecting): not sent".into(),
        e => e.to_string(),
    }
}

const NEEDS_TOKEN: &str = "this server needs a token: use --token or TICKCAST_TOKEN";

/// Where human-readable lines go.
enum Screen {
    /// Plain stdout.
    Plain,
    /// Above the line being typed.
    Editor(Box<dyn Print>),
}

/// Prints events, for people or (`--raw`) for scripts.
struct Printer {
    raw: bool,
    screen: Screen,
    colour: bool,
    show_ticks: bool,
    /// The connections that are down: each outage gets one line.
    down: BTreeSet<usize>,
    /// A gap was reported since the connection was last lost.
    gap_since_loss: bool,
    /// The server said `BYE shutdown` before the connection was lost: a
    /// clean stop, which delivers everything it accepted.
    said_shutdown: bool,
    /// A `BYE unavailable` was shown since the last connection was made:
    /// one line per outage of a cluster's Redis, not one per attempt.
    said_unavailable: bool,
    /// Several addresses were given: a stopped server means moving on.
    several: bool,
}

impl Printer {
    /// Handles one typed line. In human mode this client's own commands
    /// are answered here; everything else (and everything in raw mode)
    /// goes through as typed, and its replies arrive as events.
    fn typed(&mut self, client: &Client, line: &str) {
        if let Err(e) = self.try_typed(client, line) {
            self.note(&format!("! {}", in_words(&e)));
        }
    }

    fn try_typed(&mut self, client: &Client, line: &str) -> Result<(), ClientError> {
        if self.raw {
            return client.send_line(line);
        }
        let (verb, args) = match line.strip_prefix('/') {
            Some(body) if !body.starts_with('/') => body.split_once(' ').unwrap_or((body, "")),
            _ => return client.send_line(line),
        };
        match verb.to_ascii_lowercase().as_str() {
            "help" => {
                self.note("* what you can type:");
                for row in HELP {
                    self.line(&format!("  {row}"));
                }
            }
            "ticks" => match args.trim() {
                "on" => {
                    self.show_ticks = true;
                    self.note("* ticks are shown");
                }
                "off" => {
                    self.show_ticks = false;
                    self.note("* ticks are hidden (/ticks on shows them)");
                }
                _ => self.note("! say /ticks on or /ticks off"),
            },
            "send" => self.send_file(client, args.trim())?,
            "auth" => self.note("! this client logs in by itself: use --token or TICKCAST_TOKEN"),
            "resume" => self.note("! this client resumes by itself after a reconnect"),
            "pong" => self.note("! this client answers the server's pings by itself"),
            "mirror" => self.note("! with --redundant this client opens its mirror by itself"),
            _ => match Command::parse(line) {
                Ok(Some(Command::List)) => {
                    let names = client.list()?;
                    let names: Vec<String> = names.iter().map(|n| self.name(n)).collect();
                    self.note(&format!("* here ({}): {}", names.len(), names.join(", ")));
                }
                Ok(Some(Command::Nick(name))) => {
                    client.nick(name)?;
                    self.note(&format!("* you are now {}", self.name(name)));
                }
                Ok(Some(Command::Msg { to, text })) => {
                    client.msg(to, text)?;
                    self.line(&format!("-> *{}* {text}", self.name(to)));
                }
                Ok(Some(Command::Ping(_))) => {
                    let rtt = client.ping()?;
                    self.note(&format!(
                        "* the server answered in {:.1} ms",
                        rtt.as_secs_f64() * 1000.0
                    ));
                }
                // Unknown words get the server's own answer.
                _ => client.send_line(line)?,
            },
        }
        Ok(())
    }

    /// `/send FILE`: the file's bytes as one payload.
    fn send_file(&mut self, client: &Client, path: &str) -> Result<(), ClientError> {
        if path.is_empty() {
            self.note("! say which file: /send FILE");
            return Ok(());
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                client.send_bytes(&bytes)?;
                self.note(&format!("* sending {path} ({} bytes)", bytes.len()));
            }
            Err(e) => self.note(&format!("! cannot read {path}: {e}")),
        }
        Ok(())
    }

    fn print(&mut self, event: &Event) {
        if self.raw {
            match event.to_protocol() {
                Some(bytes) => {
                    let mut stdout = io::stdout().lock();
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
                None => {
                    if let Some(text) = raw_note(event) {
                        super::log_line(format_args!("# {text}"));
                    }
                }
            }
            return;
        }
        if let Some(text) = self.describe(event) {
            self.line(&text);
        }
    }

    /// A name, in a colour of its own when colour is on (the same name
    /// always gets the same colour).
    fn name(&self, name: &str) -> String {
        if !self.colour {
            return name.to_string();
        }
        // Names are unique without regard to case: colour them so too.
        let hash = name.bytes().fold(0u32, |h, b| {
            h.wrapping_mul(31)
                .wrapping_add(b.to_ascii_lowercase() as u32)
        });
        // Red, green, yellow, blue, magenta, cyan.
        let colour = 31 + hash % 6;
        format!("\x1b[{colour}m{name}\x1b[0m")
    }

    /// One event in words (`None`: not worth a line).
    fn describe(&mut self, event: &Event) -> Option<String> {
        Some(match event {
            Event::Msg { from, text, .. } => format!("<{}> {text}", self.name(from)),
            Event::Data { from, payload, .. } => {
                let from = self.name(from);
                match std::str::from_utf8(payload) {
                    Ok(text)
                        if text
                            .chars()
                            .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
                    {
                        format!("* {from} sent {} bytes: {}", payload.len(), text.trim_end())
                    }
                    _ => format!("* {from} sent {} bytes", payload.len()),
                }
            }
            Event::Dm { from, text } if from == SERVER_SENDER => format!("*server* {text}"),
            Event::Dm { from, text } => format!("*{}* {text}", self.name(from)),
            Event::Join { name, .. } => format!("* {} joined", self.name(name)),
            Event::Nick { old, new, .. } => {
                format!("* {} is now known as {}", self.name(old), self.name(new))
            }
            Event::Leave { name, reason, .. } => {
                format!("* {} left ({})", self.name(name), leave_words(*reason))
            }
            Event::Tick { .. } if !self.show_ticks => return None,
            Event::Tick { text, .. } => format!("* tick {text}"),
            Event::Users { names } => {
                let names: Vec<String> = names.iter().map(|n| self.name(n)).collect();
                format!("* here ({}): {}", names.len(), names.join(", "))
            }
            Event::Pong { token } => format!("* pong {token}"),
            Event::Help { text } => format!("  {text}"),
            Event::Ok { what, detail } => format!("* ok {what} {detail}"),
            Event::Err {
                code: ErrorCode::AuthRequired,
                ..
            } if !self.raw => format!("! {NEEDS_TOKEN}"),
            Event::Err { code, text } => format!("! {code}: {text}"),
            Event::Bye {
                reason: Reason::Shutdown,
                ..
            } => {
                self.said_shutdown = true;
                "* the server is shutting down".into()
            }
            // The answer to our own /quit: "* bye" follows.
            Event::Bye {
                reason: Reason::Quit,
                ..
            } => return None,
            Event::Bye {
                reason: Reason::Unavailable,
                ..
            } => {
                if std::mem::replace(&mut self.said_unavailable, true) {
                    return None;
                }
                "* the server cannot reach the room's store (Redis) now; trying again…".into()
            }
            Event::Bye { reason, .. } => format!("* the server says goodbye ({reason})"),
            Event::Connected { link, name, .. } => {
                self.said_unavailable = false;
                if self.down.remove(link) {
                    format!("* reconnected as {}", self.name(name))
                } else {
                    format!("* connected as {}", self.name(name))
                }
            }
            Event::Disconnected { link, cause } => {
                self.gap_since_loss = false;
                // One line per outage, however many attempts it takes.
                if !self.down.insert(*link) {
                    return None;
                }
                if self.said_shutdown && self.several {
                    "* that server stopped; moving to the next one…".into()
                } else if self.said_shutdown {
                    "* the server stopped; reconnecting when it is back…".into()
                } else {
                    format!("* lost the connection ({cause}); reconnecting…")
                }
            }
            Event::Reconnecting { .. } => return None,
            Event::Resumed { .. } if self.gap_since_loss => "* caught up (see above)".into(),
            Event::Resumed { .. } => "* caught up: nothing was missed".into(),
            Event::Gap(Gap::Expired { first, last }) => {
                self.gap_since_loss = true;
                format!("! missed events {first} to {last}: the server no longer had them")
            }
            Event::Gap(Gap::Restarted { .. }) if self.said_shutdown => {
                // A clean stop delivered everything before BYE shutdown.
                self.said_shutdown = false;
                self.gap_since_loss = true;
                "* the server restarted".into()
            }
            Event::Gap(Gap::Restarted { after }) => {
                self.gap_since_loss = true;
                format!(
                    "! the server restarted without a clean shutdown: what it sent after \
                     event {after} may not have reached you"
                )
            }
            Event::Gap(Gap::Unreadable { seq }) => {
                format!("! event {seq} could not be read (see above)")
            }
            Event::Unreadable { error, .. } => format!("! unreadable: {error}"),
            Event::Closed(Closed::Quit) => "* bye".into(),
            Event::Closed(why) => format!("* closed: {why}"),
            // Answered by the client itself; nothing to say.
            Event::Ping { .. } | Event::Welcome { .. } => return None,
            _ => return None,
        })
    }

    /// A timestamped line: above the prompt, or on stdout.
    fn line(&mut self, text: &str) {
        let time = chrono::Local::now().format("%H:%M:%S");
        let line = format!("[{time}] {text}");
        if let Screen::Editor(printer) = &mut self.screen {
            // With its newline: between two prompts the printer writes
            // the text as it is.
            if printer.print_line(format!("{line}\n")) {
                return;
            }
            self.screen = Screen::Plain;
        }
        // A closed stdout (say, piped into `head`) is not worth a panic.
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// A note: timestamped on stdout, or on stderr in raw mode.
    fn note(&mut self, text: &str) {
        if self.raw {
            super::log_line(format_args!(
                "# {}",
                text.trim_start_matches(['*', '!', ' '])
            ));
        } else {
            self.line(text);
        }
    }
}

/// In `--raw` mode, what the events that are not protocol lines say on
/// stderr: one line each, as scripts have always seen them.
fn raw_note(event: &Event) -> Option<String> {
    Some(match event {
        Event::Connected { name, .. } => format!("connected as {name}"),
        Event::Disconnected { cause, .. } => format!("disconnected: {cause}"),
        Event::Reconnecting { attempt, delay, .. } => format!(
            "reconnecting… (attempt {attempt}, in {} ms)",
            delay.as_millis()
        ),
        Event::Resumed { .. } => "resumed".into(),
        Event::Gap(Gap::Expired { first, last }) => {
            format!("missed events {first} to {last}: the server no longer had them")
        }
        Event::Gap(Gap::Restarted { after }) => {
            format!("the server restarted: SEQs start over (the last one before was {after})")
        }
        Event::Gap(Gap::Unreadable { seq }) => format!("event {seq} could not be read"),
        Event::Unreadable { error, .. } => format!("unreadable: {error}"),
        Event::Closed(why) => format!("closed: {why}"),
        _ => return None,
    })
}

/// Why someone left, in words.
fn leave_words(reason: Reason) -> &'static str {
    match reason {
        Reason::Quit => "quit",
        Reason::Closed => "connection closed",
        Reason::SlowConsumer => "too slow to keep up",
        Reason::Timeout => "timed out",
        Reason::Replaced => "reconnected",
        Reason::Error => "connection error",
        other => other.as_str(),
    }
}
