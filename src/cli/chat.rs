//! `tickcast chat`: an interactive terminal client on top of
//! [`tickcast::client::Client`].
//!
//! Lines typed on stdin are sent (`/commands` pass through, so
//! `/msg bob hi` works); what arrives is printed with the local time:
//! `[10:00:05] <alice> hello`, `* bob joined`, `* reconnecting…`. It
//! survives server restarts by reconnecting. Ctrl-D or `/quit` ends it.
//!
//! With `--raw` every broadcast event and reply is printed as its protocol
//! line instead, exactly once and in SEQ order even across reconnects;
//! notes about the connection go to stderr. Fed from a pipe, it sends the
//! lines, then `/quit`, and exits after the server's `BYE`.

use argh::FromArgs;
use crossbeam_channel::{Receiver, bounded, select, unbounded};
use std::error::Error;
use std::io::{self, BufRead, Write};
use std::thread;
use std::time::Duration;
use tickcast::client::{Client, ClientConfig, ClientError, Closed, Event, Gap};
use tickcast::protocol::{Command, SERVER_SENDER};

/// talk to a hub from the terminal: type to say, /help for commands
#[derive(FromArgs)]
#[argh(
    subcommand,
    name = "chat",
    example = "tickcast chat --name alice",
    example = "tickcast chat 10.0.0.5:7878 --redundant",
    example = "printf 'hello\\n/list\\n' | tickcast chat --raw",
    note = "Lines starting with / are commands (/nick, /list, /msg NAME TEXT, /ping, /help, \
            /quit); anything else is said to everyone. The client reconnects by itself and \
            resumes where it left off, saying so if anything was lost."
)]
pub struct ChatArgs {
    /// server address [127.0.0.1:7878]
    #[argh(positional, default = "String::from(\"127.0.0.1:7878\")")]
    addr: String,

    /// name to take (and take back after every reconnect)
    #[argh(option)]
    name: Option<String>,

    /// the server's token (or set TICKCAST_TOKEN)
    #[argh(option)]
    token: Option<String>,

    /// keep two connections, so that losing one loses nothing
    #[argh(switch)]
    redundant: bool,

    /// print protocol lines, for scripts
    #[argh(switch)]
    raw: bool,
}

pub fn run(args: ChatArgs) -> Result<(), Box<dyn Error>> {
    let token = super::token(args.token)?;
    let config = ClientConfig {
        name: args.name,
        token,
        redundant: args.redundant,
        ..ClientConfig::default()
    };
    let client = Client::with_config(args.addr.as_str(), config)
        .map_err(|e| format!("cannot join {}: {e}", args.addr))?;
    let mut out = Printer {
        raw: args.raw,
        gap_since_loss: false,
    };

    let lines = spawn_stdin_reader()?;
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
            recv(lines) -> line => match line {
                Ok(line) => {
                    if let Some(reason) = quit_reason(&line) {
                        break finish(&client, &mut out, reason);
                    }
                    if let Err(e) = send(&client, &mut out, &line) {
                        out.note(&format!("! {e}"));
                    }
                }
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

/// Reads stdin line by line on its own thread (stdin blocks, and cannot
/// be waited on together with a channel otherwise).
fn spawn_stdin_reader() -> io::Result<Receiver<String>> {
    let (tx, rx) = unbounded();
    thread::Builder::new()
        .name("tickcast-stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

fn quit_reason(line: &str) -> Option<&str> {
    match Command::parse(line) {
        Ok(Some(Command::Quit(reason))) => Some(reason),
        _ => None,
    }
}

/// Quits politely, prints what arrived up to the server's `BYE`.
fn finish(client: &Client, out: &mut Printer, reason: &str) -> Closed {
    if let Err(e) = client.quit(reason) {
        out.note(&format!("! {e}"));
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

/// Sends one typed line. In human mode the request commands are answered
/// right here; everything else (and everything in raw mode) goes through
/// as typed, and its replies arrive as events.
fn send(client: &Client, out: &mut Printer, line: &str) -> Result<(), ClientError> {
    if out.raw {
        return client.send_line(line);
    }
    match Command::parse(line) {
        Ok(Some(Command::List)) => {
            let names = client.list()?;
            out.note(&format!("* here ({}): {}", names.len(), names.join(", ")));
        }
        Ok(Some(Command::Nick(name))) => {
            client.nick(name)?;
            out.note(&format!("* you are now {name}"));
        }
        Ok(Some(Command::Msg { to, text })) => {
            client.msg(to, text)?;
            out.line(&format!("-> *{to}* {text}"));
        }
        Ok(Some(Command::Ping(_))) => {
            let rtt = client.ping()?;
            out.note(&format!("* pong in {:.1} ms", rtt.as_secs_f64() * 1000.0));
        }
        _ => client.send_line(line)?,
    }
    Ok(())
}

/// Prints events, for people or (`--raw`) for scripts.
struct Printer {
    raw: bool,
    /// A gap was reported since the connection was last lost.
    gap_since_loss: bool,
}

impl Printer {
    fn print(&mut self, event: &Event) {
        if self.raw {
            match event.to_protocol() {
                Some(bytes) => {
                    let mut stdout = io::stdout().lock();
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
                None => {
                    if let Some(text) = self.describe(event) {
                        super::log_line(format_args!(
                            "# {}",
                            text.trim_start_matches(['*', '!', ' '])
                        ));
                    }
                }
            }
            return;
        }
        if let Some(text) = self.describe(event) {
            self.line(&text);
        }
    }

    /// One event in words (`None`: not worth a line).
    fn describe(&mut self, event: &Event) -> Option<String> {
        Some(match event {
            Event::Msg { from, text, .. } => format!("<{from}> {text}"),
            Event::Data { from, payload, .. } => match std::str::from_utf8(payload) {
                Ok(text)
                    if text
                        .chars()
                        .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
                {
                    format!("* {from} sent {} bytes: {}", payload.len(), text.trim_end())
                }
                _ => format!("* {from} sent {} bytes", payload.len()),
            },
            Event::Dm { from, text } if from == SERVER_SENDER => format!("*server* {text}"),
            Event::Dm { from, text } => format!("*{from}* {text}"),
            Event::Join { name, .. } => format!("* {name} joined"),
            Event::Nick { old, new, .. } => format!("* {old} is now known as {new}"),
            Event::Leave { name, reason, .. } => format!("* {name} left ({reason})"),
            Event::Tick { text, .. } => format!("* tick {text}"),
            Event::Users { names } => format!("* here ({}): {}", names.len(), names.join(", ")),
            Event::Pong { token } => format!("* pong {token}"),
            Event::Help { text } => format!("  {text}"),
            Event::Ok { what, detail } => format!("* ok {what} {detail}"),
            Event::Err { code, text } => format!("! {code}: {text}"),
            Event::Bye { reason, .. } => format!("* the server says goodbye ({reason})"),
            Event::Connected { name, .. } => format!("* connected as {name}"),
            Event::Disconnected { cause, .. } => {
                self.gap_since_loss = false;
                format!("* disconnected: {cause}")
            }
            Event::Reconnecting { attempt, delay, .. } => format!(
                "* reconnecting… (attempt {attempt}, in {} ms)",
                delay.as_millis()
            ),
            Event::Resumed { .. } if self.gap_since_loss => "* resumed (see the gap above)".into(),
            Event::Resumed { .. } => "* resumed, nothing missed".into(),
            Event::Gap(Gap::Expired { first, last }) => {
                self.gap_since_loss = true;
                format!("! missed events {first} to {last}: the server no longer had them")
            }
            Event::Gap(Gap::Restarted { after }) => {
                self.gap_since_loss = true;
                format!("! the server restarted: whatever came after event {after} is lost")
            }
            Event::Gap(Gap::Unreadable { seq }) => {
                format!("! event {seq} could not be read (see above)")
            }
            Event::Unreadable { error, .. } => format!("! unreadable: {error}"),
            Event::Closed(why) => format!("* closed: {why}"),
            // Answered by the client itself; nothing to say.
            Event::Ping { .. } | Event::Welcome { .. } => return None,
            _ => return None,
        })
    }

    /// A timestamped line on stdout.
    fn line(&self, text: &str) {
        let time = chrono::Local::now().format("%H:%M:%S");
        // A closed stdout (say, piped into `head`) is not worth a panic.
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "[{time}] {text}");
        let _ = stdout.flush();
    }

    /// A note: timestamped on stdout, or on stderr in raw mode.
    fn note(&self, text: &str) {
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
