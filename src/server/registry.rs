//! The client map: every open connection, and the names of the clients
//! that are *listed* (have joined), behind one `parking_lot::Mutex`.
//!
//! This is the shared state of the server. Sessions use it to admit
//! themselves, take names, find the target of a `/msg`, answer `/list`;
//! the broadcaster uses it to drop clients; the embedding program to list
//! clients. Every method takes the lock for a few map operations and lets
//! it go before returning: **no socket I/O ever happens while it is
//! held**, so one stuck client cannot stall the map. (Bytes go out through
//! each connection's own write lock; see `conn`.)
//!
//! Connections and listed clients are not the same thing. A connection is
//! counted from `accept` (for `--max-clients` and `--max-per-ip`) to the
//! end of its session; it is *listed* from the moment it joins (right
//! after its `WELCOME` is queued, or its `OK auth`: see `session`) until
//! it is closed. A *mirror* (a client's second connection, `/mirror KEY`) is
//! counted but never listed. Names are unique without regard to case:
//! `names` is keyed by the lowercased name.

use super::conn::Conn;
use super::{ClientId, ClientInfo};
use crate::http::stats::ClientStats;
use crate::protocol::{Reason, guest_name, is_guest_name, validate_name};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The limits checked when a connection is admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    pub max_clients: usize,
    pub max_per_ip: Option<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every open connection.
    conns: HashMap<ClientId, Entry>,
    /// Listed clients by lowercased name.
    names: HashMap<String, ClientId>,
    /// Open connections per client address.
    per_ip: HashMap<IpAddr, usize>,
    /// The last id handed out.
    last_id: u64,
    /// Set at shutdown: admit nobody any more.
    closing: bool,
}

#[derive(Debug)]
struct Entry {
    conn: Arc<Conn>,
    /// The current name (`guest-ID` until a `/nick`).
    name: String,
    standing: Standing,
    /// Listed, but its greeting (`WELCOME` or `OK auth`) is not queued yet
    /// (see [`Registry::list_before_greeting`]): no `DM` may reach it.
    greeting: bool,
}

/// Where a connection stands, until it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Not joined: before `/auth`, before its `WELCOME`, or never.
    Unlisted,
    /// Joined: listed under its name, its `JOIN` announced.
    Listed,
    /// A mirror: a member of the broadcaster's that is never listed.
    Mirror,
}

impl Entry {
    fn is_listed(&self) -> bool {
        self.standing == Standing::Listed
    }
}

/// The outcome of [`Registry::claim`]: who ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This call ended it, and it was listed: the caller has its `LEAVE`
    /// announced.
    Listed,
    /// This call ended it; it was not listed (never joined): no `LEAVE`.
    Unlisted,
    /// This call ended it, and it was a mirror: the broadcaster lets go of
    /// it (with no `LEAVE`: it was never announced).
    Mirror,
    /// Someone else ended it first: nothing to do.
    Lost,
}

impl Claim {
    /// Whether this call ended the connection.
    pub(crate) fn won(self) -> bool {
        self != Claim::Lost
    }
}

/// Why a `/nick` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NickError {
    /// `ERR nick-taken`.
    Taken,
    /// `ERR nick-invalid`, with the reason in words.
    Invalid(String),
}

impl Registry {
    /// Admits a new connection if the limits allow, building its [`Conn`]
    /// with the next id. Refusals carry the `BYE` reason.
    /// A cluster node gives the id (`given`, room-wide, from Redis); a
    /// single server counts its own.
    pub(crate) fn admit(
        &self,
        peer: SocketAddr,
        limits: Admission,
        given: Option<ClientId>,
        make: impl FnOnce(ClientId) -> Conn,
    ) -> Result<Arc<Conn>, Reason> {
        let ip = peer.ip().to_canonical();
        let mut inner = self.inner.lock();
        if inner.closing {
            return Err(Reason::Shutdown);
        }
        if inner.conns.len() >= limits.max_clients {
            return Err(Reason::ServerFull);
        }
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if limits.max_per_ip.is_some_and(|max| from_ip >= max) {
            return Err(Reason::TooManyConnections);
        }
        let id = given.unwrap_or_else(|| {
            inner.last_id += 1;
            ClientId(inner.last_id)
        });
        let conn = Arc::new(make(id));
        inner.conns.insert(
            id,
            Entry {
                conn: Arc::clone(&conn),
                name: guest_name(id.0),
                standing: Standing::Unlisted,
                greeting: false,
            },
        );
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Ok(conn)
    }

    /// Forgets a connection whose session has ended; returns its last name.
    pub(crate) fn remove(&self, id: ClientId) -> Option<String> {
        let mut inner = self.inner.lock();
        let entry = inner.conns.remove(&id)?;
        if entry.is_listed() {
            inner.names.remove(&entry.name.to_ascii_lowercase());
        }
        let ip = entry.conn.peer.ip().to_canonical();
        if let Some(n) = inner.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&ip);
            }
        }
        Some(entry.name)
    }

    /// Lists a connection under its guest name (it has joined). Returns the
    /// name, or `None` if the connection is already closed (or a mirror).
    pub(crate) fn list(&self, id: ClientId) -> Option<String> {
        self.list_greeting(id, false)
    }

    /// Lists a connection whose greeting is about to be queued. The
    /// contract wants a client listed by the time it gets its `WELCOME`
    /// (or `OK auth`), and nothing before its `WELCOME`: so it is listed
    /// first, and no `DM` finds it until [`Registry::greeted`].
    pub(crate) fn list_before_greeting(&self, id: ClientId) -> Option<String> {
        self.list_greeting(id, true)
    }

    /// Lists a connection; with `greeting`, no `DM` finds it yet.
    fn list_greeting(&self, id: ClientId, greeting: bool) -> Option<String> {
        let mut inner = self.inner.lock();
        let entry = inner.conns.get_mut(&id)?;
        if entry.conn.reason().is_some() || entry.standing != Standing::Unlisted {
            return None;
        }
        entry.standing = Standing::Listed;
        entry.greeting = greeting;
        let name = entry.name.clone();
        // Guest names are reserved, so this never collides.
        inner.names.insert(name.to_ascii_lowercase(), id);
        Some(name)
    }

    /// The connection's greeting is queued: `DM`s may reach it now.
    pub(crate) fn greeted(&self, id: ClientId) {
        if let Some(entry) = self.inner.lock().conns.get_mut(&id) {
            entry.greeting = false;
        }
    }

    /// Renames a listed client. `Ok(Some(old))` on a rename, `Ok(None)` if
    /// the client already has exactly this name.
    pub(crate) fn rename(&self, id: ClientId, new: &str) -> Result<Option<String>, NickError> {
        check_name(id, new)?;
        let mut inner = self.inner.lock();
        let new_key = new.to_ascii_lowercase();
        if inner
            .names
            .get(&new_key)
            .is_some_and(|&holder| holder != id)
        {
            return Err(NickError::Taken);
        }
        let Some(entry) = inner.conns.get_mut(&id).filter(|e| e.is_listed()) else {
            return Err(NickError::Invalid("this connection has not joined".into()));
        };
        if entry.name == new {
            return Ok(None);
        }
        let old = std::mem::replace(&mut entry.name, new.to_string());
        inner.names.remove(&old.to_ascii_lowercase());
        inner.names.insert(new_key, id);
        Ok(Some(old))
    }

    /// Gives a listed client the name its room gave it (a cluster node:
    /// Redis keeps names unique room-wide, and has just given this one).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_name(&self, id: ClientId, new: &str) {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.conns.get_mut(&id).filter(|e| e.is_listed()) else {
            return;
        };
        let old = std::mem::replace(&mut entry.name, new.to_string());
        if inner.names.get(&old.to_ascii_lowercase()) == Some(&id) {
            inner.names.remove(&old.to_ascii_lowercase());
        }
        inner.names.insert(new.to_ascii_lowercase(), id);
    }

    /// Every open connection.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn conns(&self) -> Vec<Arc<Conn>> {
        let inner = self.inner.lock();
        inner.conns.values().map(|e| Arc::clone(&e.conn)).collect()
    }

    /// Decides that `conn` ends, for `reason`, unless someone decided so
    /// already: the one place where that race is settled. When this call
    /// wins, the client is no longer listed (its name is free at once) and
    /// the caller must finish the job: end the connection (`Conn::finish`,
    /// `close` or `abort`) and, for [`Claim::Listed`], have its `LEAVE`
    /// announced (for [`Claim::Mirror`], tell the broadcaster, which
    /// announces nothing).
    pub(crate) fn claim(&self, conn: &Conn, reason: Reason) -> Claim {
        let mut inner = self.inner.lock();
        if !conn.set_reason(reason) {
            return Claim::Lost;
        }
        let Some(entry) = inner.conns.get_mut(&conn.id) else {
            return Claim::Unlisted;
        };
        match std::mem::replace(&mut entry.standing, Standing::Unlisted) {
            Standing::Unlisted => Claim::Unlisted,
            Standing::Mirror => Claim::Mirror,
            Standing::Listed => {
                let key = entry.name.to_ascii_lowercase();
                inner.names.remove(&key);
                Claim::Listed
            }
        }
    }

    /// Makes connection `id`, not yet joined, a mirror of the connection
    /// whose session key is `key`: another open connection, joined or
    /// about to join, that is not a mirror itself. Returns the name of
    /// the connection it mirrors; `None` if no such connection is here
    /// (or `id` is closed, or has joined), and then nothing changed.
    ///
    /// The one place that looks connections up by key is this, once per
    /// `/mirror`, so it walks the map rather than keep an index.
    pub(crate) fn mirror(&self, id: ClientId, key: &str) -> Option<(String, ClientId)> {
        let mut inner = self.inner.lock();
        let name = inner
            .conns
            .values()
            .find(|e| {
                e.conn.key == key
                    && e.conn.id != id
                    && e.standing != Standing::Mirror
                    && e.conn.reason().is_none()
            })
            .map(|e| (e.name.clone(), e.conn.id))?;
        let entry = inner
            .conns
            .get_mut(&id)
            .filter(|e| e.standing == Standing::Unlisted && e.conn.reason().is_none())?;
        entry.standing = Standing::Mirror;
        Some(name)
    }

    /// The listed client called `name` (without regard to case).
    /// A client whose greeting is not queued yet is not found.
    pub(crate) fn find(&self, name: &str) -> Option<(Arc<Conn>, String)> {
        let inner = self.inner.lock();
        let id = inner.names.get(&name.to_ascii_lowercase())?;
        let entry = inner.conns.get(id).filter(|e| !e.greeting)?;
        Some((Arc::clone(&entry.conn), entry.name.clone()))
    }

    /// The listed client with this id (once its greeting is queued).
    pub(crate) fn get(&self, id: ClientId) -> Option<(Arc<Conn>, String)> {
        let inner = self.inner.lock();
        let entry = inner
            .conns
            .get(&id)
            .filter(|e| e.is_listed() && !e.greeting)?;
        Some((Arc::clone(&entry.conn), entry.name.clone()))
    }

    /// The current name of a connection (listed or not).
    pub(crate) fn name_of(&self, id: ClientId) -> Option<String> {
        self.inner.lock().conns.get(&id).map(|e| e.name.clone())
    }

    /// The listed clients as `/stats` shows them, by id.
    pub(crate) fn client_stats(&self) -> Vec<ClientStats> {
        let mut clients: Vec<ClientStats> = {
            let inner = self.inner.lock();
            inner
                .conns
                .values()
                .filter(|e| e.is_listed())
                .map(|e| ClientStats {
                    id: e.conn.id.0,
                    name: e.name.clone(),
                    addr: e.conn.peer,
                    transport: e.conn.wire.transport(),
                    connected: e.conn.connected_at,
                    lines_in: e.conn.lines_in.load(Relaxed),
                    bytes_out: e.conn.bytes_out.load(Relaxed),
                })
                .collect()
        };
        clients.sort_by_key(|c| c.id);
        clients
    }

    /// The names of the listed clients, sorted without regard to case.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = {
            let inner = self.inner.lock();
            inner
                .conns
                .values()
                .filter(|e| e.is_listed())
                .map(|e| e.name.clone())
                .collect()
        };
        names.sort_by_cached_key(|n| (n.to_ascii_lowercase(), n.clone()));
        names
    }

    /// The listed clients, sorted by id.
    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        let mut clients: Vec<ClientInfo> = {
            let inner = self.inner.lock();
            inner
                .conns
                .values()
                .filter(|e| e.is_listed())
                .map(|e| ClientInfo {
                    id: e.conn.id,
                    name: e.name.clone(),
                    peer: e.conn.peer,
                    connected_at: e.conn.connected_at,
                })
                .collect()
        };
        clients.sort_by_key(|c| c.id);
        clients
    }

    /// How many connections are open.
    pub(crate) fn connection_count(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Stops admitting connections and returns every open one.
    pub(crate) fn close_doors(&self) -> Vec<Arc<Conn>> {
        let mut inner = self.inner.lock();
        inner.closing = true;
        inner.conns.values().map(|e| Arc::clone(&e.conn)).collect()
    }
}

/// Whether client `id` may take the name `new` (the naming rules, not
/// whether someone has it).
pub(crate) fn check_name(id: ClientId, new: &str) -> Result<(), NickError> {
    validate_name(new).map_err(|e| NickError::Invalid(e.to_string()))?;
    if is_guest_name(new) && !new.eq_ignore_ascii_case(&guest_name(id.0)) {
        return Err(NickError::Invalid(
            "names that start with guest- are the server's".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::{FlusherLink, Link};
    use crate::server::outbox::Limits;
    use crate::server::wire::Wire;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn conn(reg: &Registry, peer: &str) -> Result<Arc<Conn>, Reason> {
        let (watch, _) = crossbeam_channel::unbounded();
        let (wake, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let flusher = FlusherLink {
            watch,
            wake: Arc::new(wake),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let limits = Admission {
            max_clients: 3,
            max_per_ip: Some(2),
        };
        reg.admit(peer.parse().unwrap(), limits, None, |id| {
            Conn::new(
                id,
                peer.parse().unwrap(),
                "k".into(),
                stream,
                Wire::Line,
                Limits {
                    max_pending: 1024,
                    max_age: Duration::from_secs(1),
                },
                &Link {
                    flusher: flusher.clone(),
                    counters: Default::default(),
                },
            )
        })
    }

    #[test]
    fn limits_are_checked_at_admission_and_freed_on_removal() {
        let reg = Registry::default();
        let a = conn(&reg, "127.0.0.1:1").unwrap();
        conn(&reg, "127.0.0.1:2").unwrap();
        assert_eq!(
            conn(&reg, "127.0.0.1:3").unwrap_err(),
            Reason::TooManyConnections
        );
        conn(&reg, "127.0.0.2:1").unwrap();
        assert_eq!(conn(&reg, "127.0.0.3:1").unwrap_err(), Reason::ServerFull);
        reg.remove(a.id);
        conn(&reg, "127.0.0.1:4").unwrap();
    }

    #[test]
    fn a_client_listed_before_its_greeting_gets_no_dm_until_greeted() {
        let reg = Registry::default();
        let a = conn(&reg, "127.0.0.1:1").unwrap();
        assert_eq!(reg.list_before_greeting(a.id).as_deref(), Some("guest-1"));
        assert_eq!(reg.names(), ["guest-1"], "listed");
        assert!(reg.find("guest-1").is_none(), "not yet for a DM");
        assert!(reg.get(a.id).is_none());
        reg.greeted(a.id);
        assert!(reg.find("guest-1").is_some());
        assert!(reg.get(a.id).is_some());
    }

    #[test]
    fn names_are_unique_without_regard_to_case() {
        let reg = Registry::default();
        let a = conn(&reg, "127.0.0.1:1").unwrap();
        let b = conn(&reg, "127.0.0.2:1").unwrap();
        assert_eq!(reg.list(a.id).as_deref(), Some("guest-1"));
        reg.list(b.id);
        assert_eq!(reg.rename(a.id, "Alice"), Ok(Some("guest-1".into())));
        assert_eq!(reg.rename(b.id, "alice"), Err(NickError::Taken));
        assert_eq!(reg.rename(a.id, "Alice"), Ok(None));
        assert_eq!(reg.rename(a.id, "alice"), Ok(Some("Alice".into())));
        assert!(matches!(
            reg.rename(b.id, "guest-1"),
            Err(NickError::Invalid(_))
        ));
        assert_eq!(reg.rename(b.id, "GUEST-2"), Ok(Some("guest-2".into())));
        assert_eq!(
            reg.names(),
            vec!["alice".to_string(), "GUEST-2".to_string()]
        );
        assert_eq!(reg.find("ALICE").unwrap().1, "alice");
    }

    #[test]
    fn only_the_first_close_counts_and_it_frees_the_name() {
        let reg = Registry::default();
        let a = conn(&reg, "127.0.0.1:1").unwrap();
        reg.list(a.id);
        reg.rename(a.id, "bob").unwrap();
        assert_eq!(reg.claim(&a, Reason::Quit), Claim::Listed);
        assert_eq!(reg.claim(&a, Reason::Closed), Claim::Lost);
        assert_eq!(a.reason(), Some(Reason::Quit));
        assert!(reg.find("bob").is_none());
        assert_eq!(reg.list(a.id), None, "a closed connection cannot join");
    }

    #[test]
    fn a_mirror_is_counted_never_listed_and_claimed_as_a_mirror() {
        let reg = Registry::default();
        // Every test connection has the key "k".
        let a = conn(&reg, "127.0.0.1:1").unwrap();
        assert_eq!(reg.mirror(a.id, "k"), None, "not of itself");
        let b = conn(&reg, "127.0.0.2:1").unwrap();
        assert_eq!(reg.mirror(b.id, "nope"), None);
        assert_eq!(reg.mirror(b.id, "k"), Some(("guest-1".to_string(), a.id)));
        assert_eq!(reg.list(b.id), None, "a mirror never joins");
        assert_eq!(reg.mirror(a.id, "k"), None, "a mirror is not mirrored");
        assert_eq!(reg.connection_count(), 2);
        assert!(reg.names().is_empty() && reg.clients().is_empty());
        assert_eq!(reg.claim(&b, Reason::Quit), Claim::Mirror);
        assert_eq!(reg.claim(&a, Reason::Quit), Claim::Unlisted);
    }
}
