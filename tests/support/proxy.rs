//! A fault-injecting TCP proxy for the client tests: it forwards between
//! clients and a server, and on command cuts one connection or all of
//! them (also in the middle of a line or a payload), holds back what the
//! server sends on one connection (a reader that lags), and refuses new
//! connections for a while. Loopback only.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;

/// One proxied connection: the client's side and the server's side.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

impl Pair {
    fn cut(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// A cut that waits for a pattern in what the server sends.
struct Armed {
    pattern: Vec<u8>,
    extra: usize,
}

struct State {
    target: Mutex<SocketAddr>,
    /// Every connection ever accepted, in order; cut ones stay (as `None`).
    pairs: Mutex<Vec<Option<Arc<Pair>>>>,
    refusing: AtomicBool,
    stopping: AtomicBool,
    /// When each connection attempt arrived (refused ones included).
    attempts: Mutex<Vec<Instant>>,
    armed: Mutex<Option<Armed>>,
    /// Connections whose server-to-client bytes are held back for now.
    held: Mutex<HashSet<usize>>,
    released: Condvar,
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            target: Mutex::new(target),
            pairs: Mutex::new(Vec::new()),
            refusing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            attempts: Mutex::new(Vec::new()),
            armed: Mutex::new(None),
            held: Mutex::new(HashSet::new()),
            released: Condvar::new(),
        });
        let st = Arc::clone(&state);
        let acceptor = thread::spawn(move || accept_loop(listener, st));
        Proxy {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points new connections at another server.
    pub fn retarget(&self, target: SocketAddr) {
        *self.state.target.lock() = target;
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        for pair in self.state.pairs.lock().iter_mut() {
            if let Some(p) = pair.take() {
                p.cut();
            }
        }
    }

    /// Cuts the `n`-th connection accepted (from 0), if it is open.
    pub fn cut(&self, n: usize) {
        if let Some(Some(p)) = self.state.pairs.lock().get_mut(n).map(Option::take) {
            p.cut();
        }
    }

    /// Indexes of the connections still open.
    pub fn open(&self) -> Vec<usize> {
        let pairs = self.state.pairs.lock();
        (0..pairs.len()).filter(|&i| pairs[i].is_some()).collect()
    }

    /// Arms a cut: the next time a connection's server-to-client bytes
    /// contain `pattern`, forward `extra` more bytes after it, then cut
    /// that connection. (`"MSG ", 3` cuts inside a line; `"DATA ", 20`
    /// inside a payload's header or bytes.)
    pub fn cut_inside(&self, pattern: &str, extra: usize) {
        *self.state.armed.lock() = Some(Armed {
            pattern: pattern.as_bytes().to_vec(),
            extra,
        });
    }

    /// Whether an armed cut is still waiting.
    pub fn armed(&self) -> bool {
        self.state.armed.lock().is_some()
    }

    /// Holds back (`true`) or lets through again what the server sends on
    /// the `n`-th connection: its client lags behind, the connection stays.
    pub fn hold(&self, n: usize, holding: bool) {
        let mut held = self.state.held.lock();
        if holding {
            held.insert(n);
        } else {
            held.remove(&n);
            self.state.released.notify_all();
        }
    }

    /// While refusing, new connections are accepted and closed at once.
    pub fn refuse(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    /// How many connection attempts arrived at or after `since`.
    pub fn attempts_since(&self, since: Instant) -> usize {
        self.state
            .attempts
            .lock()
            .iter()
            .filter(|&&t| t >= since)
            .count()
    }

    /// How many connections were accepted and forwarded, in all.
    pub fn forwarded(&self) -> usize {
        self.state.pairs.lock().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        {
            let _held = self.state.held.lock();
            self.state.released.notify_all();
        }
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut_all();
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        state.attempts.lock().push(Instant::now());
        if state.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = *state.target.lock();
        let Ok(server) = TcpStream::connect(target) else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let pair = Arc::new(Pair {
            client: client.try_clone().unwrap(),
            server: server.try_clone().unwrap(),
        });
        let index = {
            let mut pairs = state.pairs.lock();
            pairs.push(Some(Arc::clone(&pair)));
            pairs.len() - 1
        };
        // Client to server: plain forwarding.
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        // Server to client: forwarding, watching for an armed cut.
        let st = Arc::clone(&state);
        thread::spawn(move || pump_down(server, client, st, index));
    }
}

fn pump_down(mut from: TcpStream, mut to: TcpStream, state: Arc<State>, index: usize) {
    let mut buf = [0u8; 16 * 1024];
    // The last bytes seen, so a pattern split across reads is found.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let cut_at = {
            let mut armed = state.armed.lock();
            let found = armed.as_ref().and_then(|a| {
                let mut window = tail.clone();
                window.extend_from_slice(chunk);
                window
                    .windows(a.pattern.len())
                    .position(|w| w == a.pattern.as_slice())
                    .map(|p| (p + a.pattern.len() + a.extra).saturating_sub(tail.len()))
            });
            if let Some(at) = found
                && at < chunk.len()
            {
                armed.take();
                Some(at)
            } else {
                None
            }
        };
        if let Some(at) = cut_at {
            let _ = to.write_all(&chunk[..at]);
            if let Some(Some(p)) = state.pairs.lock().get_mut(index).map(Option::take) {
                p.cut();
            }
            break;
        }
        {
            // A held connection waits here (the server's bytes queue up in
            // the socket buffers) until released or cut.
            let mut held = state.held.lock();
            while held.contains(&index) && !state.stopping.load(Ordering::SeqCst) {
                state.released.wait(&mut held);
            }
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        tail.extend_from_slice(chunk);
        let keep = 64;
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
