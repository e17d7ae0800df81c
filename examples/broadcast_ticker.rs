//! A price board: the whole of tickcast working by itself.
//!
//! ```sh
//! cargo run --example broadcast_ticker
//! cargo run --example broadcast_ticker -- --tick-ms 500 --clients 3
//! ```
//!
//! It starts the hub with a ticker whose text is a simulated price board,
//! serves the web page (`--http`, see docs/HTTP.md) and prints its address
//! first: open it in a browser to watch the board move. It runs a few demo
//! clients (the `tickcast::client` library), and tells you how to join in
//! with `nc`, `telnet` or `tickcast chat`. The first demo
//! client prints what it receives (the others receive the same, in the
//! same order, so printing theirs would only repeat it), and every 10
//! seconds the hint on how to join is printed again, so it never scrolls
//! away for long. Ctrl-C stops everything cleanly.
//!
//! Every thread has a name (`demo-1`, `hub-watcher`…), which shows in
//! debuggers, `top -H` and panic messages.

use argh::FromArgs;
use crossbeam_channel::{bounded, select, tick};
use parking_lot::Mutex;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tickcast::client::{Client, ClientConfig, Event};
use tickcast::server::{self, Config, ServerEvent, TickInfo};

/// A tickcast demo: a hub broadcasting a price board, and a few clients.
#[derive(FromArgs)]
struct Args {
    /// port to listen on [7878, or any free port if that one is taken]
    #[argh(option)]
    port: Option<u16>,

    /// port of the web page [7880, or any free port if that one is taken
    /// or --port is 0]
    #[argh(option)]
    http_port: Option<u16>,

    /// milliseconds between price updates [1000]
    #[argh(option, default = "1000")]
    tick_ms: u64,

    /// how many demo clients to run [2]
    #[argh(option, default = "2")]
    clients: usize,

    /// stop by itself after this many seconds [run until Ctrl-C]
    #[argh(option)]
    seconds: Option<u64>,
}

/// A small random walk over a few prices.
struct Board {
    prices: Vec<(&'static str, f64)>,
    state: u64,
}

impl Board {
    fn new() -> Self {
        Board {
            prices: vec![("EURUSD", 1.0842), ("GBPUSD", 1.2650), ("USDJPY", 151.32)],
            state: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Moves every price a little and describes the board.
    fn step(&mut self, info: TickInfo) -> String {
        let mut parts = Vec::new();
        for (symbol, price) in &mut self.prices {
            // xorshift: good enough to make numbers wiggle.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let change = ((self.state % 2001) as f64 - 1000.0) / 1_000_000.0;
            *price *= 1.0 + change;
            parts.push(format!("{symbol} {price:.4}"));
        }
        parts.push(format!("({} watching)", info.clients));
        parts.join("  ")
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = argh::from_env();
    let listener = bind(args.port)?;
    let http = http_address(args.http_port.or((args.port == Some(0)).then_some(0)));
    let board = Mutex::new(Board::new());
    let hub = server::spawn_on(
        listener,
        Config {
            tick: (args.tick_ms > 0).then(|| Duration::from_millis(args.tick_ms)),
            tick_text: Some(Arc::new(move |info| board.lock().step(info))),
            http: Some(http),
            ..Config::default()
        },
    )?;
    let addr = hub.local_addr();
    let page = hub.http_addr().expect("the page is served");
    println!("open the price board in a browser:  http://{page}/");
    println!("tickcast price board on {addr}");
    print_hint(addr);

    // The embedding program watches the hub too.
    let hub_events = hub.events();
    let watcher = thread::Builder::new()
        .name("hub-watcher".into())
        .spawn(move || {
            for event in hub_events.iter() {
                match event {
                    ServerEvent::Joined { name, .. } => println!("[hub] {name} joined"),
                    ServerEvent::Renamed { old, new, .. } => println!("[hub] {old} is now {new}"),
                    ServerEvent::Left { name, reason, .. } => {
                        println!("[hub] {name} left ({reason})")
                    }
                    ServerEvent::Message { name, text, .. } => {
                        println!("[hub] {name} said {text:?}")
                    }
                    _ => {}
                }
            }
        })?;

    // Demo clients: the first prints what it receives.
    let mut demos = Vec::new();
    for n in 1..=args.clients {
        let name = format!("demo-{n}");
        let client = Client::with_config(
            addr,
            ClientConfig {
                name: Some(name.clone()),
                ..ClientConfig::default()
            },
        )?;
        let client = Arc::new(client);
        let reader = Arc::clone(&client);
        let prints = n == 1;
        let printer = thread::Builder::new().name(name.clone()).spawn(move || {
            for event in reader.events().iter() {
                if !prints {
                    // Read anyway: events queue up until they are read.
                    if let Event::Closed(_) = event {
                        break;
                    }
                    continue;
                }
                match event {
                    Event::Tick { seq, text, .. } => println!("[{name}] #{seq} {text}"),
                    Event::Msg { seq, from, text } => println!("[{name}] #{seq} <{from}> {text}"),
                    Event::Join { seq, name: who } => println!("[{name}] #{seq} {who} joined"),
                    Event::Nick { seq, old, new } => println!("[{name}] #{seq} {old} is now {new}"),
                    Event::Leave { seq, name: who, .. } => println!("[{name}] #{seq} {who} left"),
                    Event::Gap(gap) => println!("[{name}] lost events: {gap:?}"),
                    Event::Closed(_) => break,
                    _ => {}
                }
            }
        })?;
        demos.push((client, printer));
    }
    if let Some((first, _)) = demos.first() {
        first.say("hello from the first demo client")?;
    }

    // Run until Ctrl-C (or --seconds).
    let (stop_tx, stop) = bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })?;
    let deadline = match args.seconds {
        Some(s) => crossbeam_channel::after(Duration::from_secs(s)),
        None => crossbeam_channel::never(),
    };
    let heartbeat = tick(Duration::from_secs(10));
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(deadline) -> _ => break,
            recv(heartbeat) -> _ => {
                println!("\n[hub] {} clients connected", hub.clients().len());
                print_hint(addr);
            }
        }
    }

    println!("\nstopping: the demo clients quit, then the hub shuts down");
    for (client, printer) in demos {
        client.quit("demo over")?;
        let _ = printer.join();
    }
    hub.shutdown();
    drop(hub); // waits for every server thread
    let _ = watcher.join();
    println!("stopped cleanly");
    Ok(())
}

/// How to join in: printed at the start and every 10 seconds.
fn print_hint(addr: SocketAddr) {
    println!("  join in:  cargo run --release -- chat {addr} --name you");
    println!("            or the web page, whose address is printed above");
    println!(
        "            nc {} {}   or   telnet {} {}",
        addr.ip(),
        addr.port(),
        addr.ip(),
        addr.port()
    );
    println!("  Ctrl-C stops it.\n");
}

/// Where to serve the page: the port asked for; without one, 7880 if it
/// is free (checked just before), or else any free port.
fn http_address(port: Option<u16>) -> SocketAddr {
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    match port {
        Some(port) => at(port),
        None if TcpListener::bind(at(7880)).is_ok() => at(7880),
        None => at(0),
    }
}

/// Binds the port asked for; without one, 7878 or else any free port.
fn bind(port: Option<u16>) -> std::io::Result<TcpListener> {
    let at = |port| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)));
    match port {
        Some(port) => at(port),
        None => at(Config::DEFAULT_PORT).or_else(|_| {
            println!("port {} is taken; using a free one", Config::DEFAULT_PORT);
            at(0)
        }),
    }
}
