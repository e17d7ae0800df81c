//! The figures behind `GET /metrics` and `GET /stats`: counters cheap
//! enough for the hot path, a plain snapshot of the present, and the two
//! ways of writing them out.
//!
//! # Two kinds of figure
//!
//! * **Counters** only ever go up: connections accepted, events
//!   broadcast, bytes written… [`Counters`] is a struct of `AtomicU64`s.
//!   Counting is one `fetch_add` with `Ordering::Relaxed`, no lock: each
//!   counter is independent, and nothing else is ordered by it, so no
//!   stronger ordering is needed. The broadcaster counts once per batch
//!   (`count_deliveries(n)`), not once per client.
//! * **The present** (who is connected, the newest SEQ, what the history
//!   holds) already lives in the server's own structures. Rather than
//!   mirror it in more atomics, the server fills a plain [`Snapshot`] when
//!   someone asks, under the locks it takes anyway.
//!
//! # Writing them out
//!
//! [`render_metrics`] writes the Prometheus text exposition format
//! (version 0.0.4) **by hand**. For a dozen fixed metrics the format is
//! three kinds of line (`# HELP`, `# TYPE`, `name{label="value"} number`)
//! and one escaping rule for label values; a client library such as
//! `prometheus-client` would bring a registry, metric families and
//! encoders built for programs with hundreds of dynamic metrics, all to
//! print what a `for` loop prints here. The test parses the output back.
//!
//! [`render_stats_json`] writes `/stats` with serde_json, from small
//! structs whose field order is the JSON's order (a derived `Serialize`
//! keeps declaration order, where a `serde_json::Map` would sort keys).

use crate::protocol::{Reason, ServerLine, format_time};
use serde::Serialize;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The TCP line protocol.
    Tcp,
    /// An HTTP event stream (`GET /events`).
    Sse,
}

impl Transport {
    /// Both transports.
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Sse];

    /// The label value: `tcp` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Sse => "sse",
        }
    }
}

/// The verb of a broadcast event, as counted by `tickcast_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `MSG`
    Msg,
    /// `DATA`
    Data,
    /// `JOIN`
    Join,
    /// `NICK`
    Nick,
    /// `LEAVE`
    Leave,
    /// `TICK`
    Tick,
}

impl Verb {
    /// Every broadcast verb.
    pub const ALL: [Verb; 6] = [
        Verb::Msg,
        Verb::Data,
        Verb::Join,
        Verb::Nick,
        Verb::Leave,
        Verb::Tick,
    ];

    /// The label value: the verb in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Msg => "msg",
            Verb::Data => "data",
            Verb::Join => "join",
            Verb::Nick => "nick",
            Verb::Leave => "leave",
            Verb::Tick => "tick",
        }
    }

    /// The verb of a broadcast line (`None` for the others).
    pub fn of(line: &ServerLine<'_>) -> Option<Verb> {
        Some(match line {
            ServerLine::Msg { .. } => Verb::Msg,
            ServerLine::Data { .. } => Verb::Data,
            ServerLine::Join { .. } => Verb::Join,
            ServerLine::Nick { .. } => Verb::Nick,
            ServerLine::Leave { .. } => Verb::Leave,
            ServerLine::Tick { .. } => Verb::Tick,
            _ => return None,
        })
    }

    /// The verb of an encoded broadcast event (`MSG 7 alice hi\n` → `Msg`).
    pub fn of_encoded(encoded: &[u8]) -> Option<Verb> {
        Some(match encoded.split(|&b| b == b' ').next()? {
            b"MSG" => Verb::Msg,
            b"DATA" => Verb::Data,
            b"JOIN" => Verb::Join,
            b"NICK" => Verb::Nick,
            b"LEAVE" => Verb::Leave,
            b"TICK" => Verb::Tick,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The refusal reasons counted by `tickcast_refused_total`.
const REFUSALS: [Reason; 3] = [
    Reason::ServerFull,
    Reason::TooManyConnections,
    Reason::AuthFailed,
];

fn reason_index(reason: Reason) -> usize {
    Reason::ALL
        .iter()
        .position(|&r| r == reason)
        .expect("Reason::ALL holds every reason")
}

/// The server's counters; see the module docs. Share it in an `Arc`.
#[derive(Debug, Default)]
pub struct Counters {
    connections: [AtomicU64; 2],
    refused: [AtomicU64; 3],
    leaves: [AtomicU64; Reason::ALL.len()],
    events: [AtomicU64; 6],
    deliveries: AtomicU64,
    bytes_out: AtomicU64,
    resumes: AtomicU64,
    resume_gaps: AtomicU64,
}

impl Counters {
    /// All counters at zero.
    pub fn new() -> Self {
        Counters::default()
    }

    /// A connection was accepted on `transport`.
    pub fn count_connection(&self, transport: Transport) {
        self.connections[transport as usize].fetch_add(1, Relaxed);
    }

    /// A connection was refused at the door. Only `server-full`,
    /// `too-many-connections` and `auth-failed` are refusals; other
    /// reasons are not counted here.
    pub fn count_refused(&self, reason: Reason) {
        if let Some(i) = REFUSALS.iter().position(|&r| r == reason) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }

    /// A `LEAVE` with this reason was broadcast.
    pub fn count_leave(&self, reason: Reason) {
        self.leaves[reason_index(reason)].fetch_add(1, Relaxed);
    }

    /// A broadcast event with this verb was numbered.
    pub fn count_event(&self, verb: Verb) {
        self.events[verb.index()].fetch_add(1, Relaxed);
    }

    /// `n` broadcast events were written to clients (one event to one
    /// client is one).
    pub fn count_deliveries(&self, n: u64) {
        self.deliveries.fetch_add(n, Relaxed);
    }

    /// `n` bytes were written to clients (any line: events and replies).
    pub fn count_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }

    /// A replay was served (`/resume` or a stream's `Last-Event-ID` /
    /// `since=`); `gap` when the history no longer reached back far
    /// enough.
    pub fn count_resume(&self, gap: bool) {
        self.resumes.fetch_add(1, Relaxed);
        if gap {
            self.resume_gaps.fetch_add(1, Relaxed);
        }
    }

    /// Connections accepted on `transport`.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.connections[transport as usize].load(Relaxed)
    }

    /// Connections refused for `reason` (0 for reasons that are not
    /// refusals).
    pub fn refused(&self, reason: Reason) -> u64 {
        REFUSALS
            .iter()
            .position(|&r| r == reason)
            .map_or(0, |i| self.refused[i].load(Relaxed))
    }

    /// `LEAVE`s with `reason`.
    pub fn leaves(&self, reason: Reason) -> u64 {
        self.leaves[reason_index(reason)].load(Relaxed)
    }

    /// Broadcast events with `verb`.
    pub fn events(&self, verb: Verb) -> u64 {
        self.events[verb.index()].load(Relaxed)
    }

    /// Broadcast events written to clients.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Relaxed)
    }

    /// Bytes written to clients.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }

    /// Replays served.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Relaxed)
    }

    /// Replays that could not reach back far enough.
    pub fn resume_gaps(&self) -> u64 {
        self.resume_gaps.load(Relaxed)
    }
}

/// What the history ring holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryStats {
    /// Events held.
    pub events: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// The SEQ of the oldest one (`None`, JSON `null`, when empty).
    pub oldest: Option<u64>,
}

/// One connected client, as `/stats` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStats {
    /// Its connection id (`guest-ID`).
    pub id: u64,
    /// Its current name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// TCP or an event stream.
    pub transport: Transport,
    /// When it connected.
    pub connected: SystemTime,
    /// Lines it sent (TCP lines, or `POST /line` and `/data` requests).
    pub lines_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
}

/// The server's present state, filled by the server when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The crate version.
    pub version: String,
    /// This run's EPOCH.
    pub epoch: String,
    /// When this run started.
    pub started: SystemTime,
    /// The newest SEQ (0 before the first event).
    pub seq: u64,
    /// What the history holds.
    pub history: HistoryStats,
    /// The listed clients.
    pub clients: Vec<ClientStats>,
    /// Connected TCP clients, for the `tickcast_clients` gauge (this
    /// counts connections still waiting to authenticate, which are not
    /// listed).
    pub clients_tcp: u64,
    /// Connected event streams, for the `tickcast_clients` gauge.
    pub clients_sse: u64,
    /// A cluster node's own view (`--redis`), `None` on a single server.
    pub cluster: Option<ClusterStats>,
}

/// A cluster node's view of its room, in `/stats` (`"cluster"`) and
/// `/metrics` (`tickcast_cluster_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStats {
    /// This node's id (random, for this run).
    pub node: String,
    /// `--room`.
    pub room: String,
    /// Whether Redis answers.
    pub redis_up: bool,
    /// How many events the room's log holds that this node has not yet
    /// delivered, as of its last heartbeat (about once a second).
    pub reader_lag: u64,
}

impl Snapshot {
    /// An empty snapshot for this crate's version.
    pub fn new(epoch: impl Into<String>, started: SystemTime) -> Self {
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            epoch: epoch.into(),
            started,
            seq: 0,
            history: HistoryStats::default(),
            clients: Vec::new(),
            clients_tcp: 0,
            clients_sse: 0,
            cluster: None,
        }
    }

    fn clients_on(&self, transport: Transport) -> u64 {
        match transport {
            Transport::Tcp => self.clients_tcp,
            Transport::Sse => self.clients_sse,
        }
    }
}

/// The `Content-Type` of [`render_metrics`]' output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// Writes one metric family: its `# HELP` and `# TYPE` lines, then one
/// sample per `(label value, number)`; `label` is `None` for a metric
/// without labels.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: Option<&str>,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (value, number) in samples {
        match label {
            Some(label) => {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{}\"}} {number}",
                    escape_label(&value)
                );
            }
            None => {
                let _ = writeln!(out, "{name} {number}");
            }
        }
    }
}

/// One sample without labels.
fn single(n: u64) -> [(String, u64); 1] {
    [(String::new(), n)]
}

/// `GET /metrics`: every figure in the Prometheus text format 0.0.4.
pub fn render_metrics(snapshot: &Snapshot, counters: &Counters) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    info(
        o,
        "tickcast_info",
        "This server: its version and EPOCH.",
        &[("version", &snapshot.version), ("epoch", &snapshot.epoch)],
    );
    if let Some(cluster) = &snapshot.cluster {
        cluster_metrics(o, cluster);
    }
    let transports =
        |f: &dyn Fn(Transport) -> u64| Transport::ALL.map(|t| (t.as_str().to_owned(), f(t)));
    family(
        o,
        "tickcast_clients",
        "gauge",
        "Connected clients, by transport.",
        Some("transport"),
        transports(&|t| snapshot.clients_on(t)),
    );
    family(
        o,
        "tickcast_connections_total",
        "counter",
        "Connections accepted, by transport.",
        Some("transport"),
        transports(&|t| counters.connections(t)),
    );
    family(
        o,
        "tickcast_refused_total",
        "counter",
        "Connections refused at the door, by reason.",
        Some("reason"),
        REFUSALS.map(|r| (r.as_str().to_owned(), counters.refused(r))),
    );
    family(
        o,
        "tickcast_leaves_total",
        "counter",
        "LEAVE events, by reason.",
        Some("reason"),
        Reason::ALL.map(|r| (r.as_str().to_owned(), counters.leaves(r))),
    );
    family(
        o,
        "tickcast_events_total",
        "counter",
        "Broadcast events, by verb.",
        Some("verb"),
        Verb::ALL.map(|v| (v.as_str().to_owned(), counters.events(v))),
    );
    family(
        o,
        "tickcast_seq",
        "gauge",
        "The newest SEQ.",
        None,
        single(snapshot.seq),
    );
    family(
        o,
        "tickcast_deliveries_total",
        "counter",
        "Broadcast events written to clients (one event to one client is one).",
        None,
        single(counters.deliveries()),
    );
    family(
        o,
        "tickcast_bytes_out_total",
        "counter",
        "Bytes written to clients.",
        None,
        single(counters.bytes_out()),
    );
    family(
        o,
        "tickcast_history_events",
        "gauge",
        "Events held in the history.",
        None,
        single(snapshot.history.events),
    );
    family(
        o,
        "tickcast_history_bytes",
        "gauge",
        "Bytes held in the history.",
        None,
        single(snapshot.history.bytes),
    );
    family(
        o,
        "tickcast_resumes_total",
        "counter",
        "Replays served.",
        None,
        single(counters.resumes()),
    );
    family(
        o,
        "tickcast_resume_gaps_total",
        "counter",
        "Replays that could not reach back far enough.",
        None,
        single(counters.resume_gaps()),
    );
    out
}

/// An "info" gauge: one sample, always 1, whose labels carry the facts.
fn info(o: &mut String, name: &str, help: &str, labels: &[(&str, &str)]) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} gauge");
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    let _ = writeln!(o, "{name}{{{}}} 1", labels.join(","));
}

/// A cluster node's own figures.
fn cluster_metrics(o: &mut String, cluster: &ClusterStats) {
    info(
        o,
        "tickcast_cluster_node",
        "This node of a cluster room.",
        &[("node", &cluster.node), ("room", &cluster.room)],
    );
    family(
        o,
        "tickcast_cluster_redis_up",
        "gauge",
        "Whether this node can reach the room's Redis (1) or not (0).",
        None,
        single(u64::from(cluster.redis_up)),
    );
    family(
        o,
        "tickcast_cluster_reader_lag_events",
        "gauge",
        "Events in the room's log this node has not delivered yet.",
        None,
        single(cluster.reader_lag),
    );
}

/// `/stats` as JSON, in the contract's field order.
#[derive(Serialize)]
struct StatsJson<'a> {
    version: &'a str,
    epoch: &'a str,
    started: String,
    seq: u64,
    history: &'a HistoryStats,
    clients: Vec<ClientJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterJson<'a>>,
}

/// A cluster node's view in `/stats`.
#[derive(Serialize)]
struct ClusterJson<'a> {
    node: &'a str,
    room: &'a str,
    /// `up` or `down`.
    redis: &'a str,
    reader_lag: u64,
}

/// One client in `/stats`, in the contract's field order.
#[derive(Serialize)]
struct ClientJson<'a> {
    id: u64,
    name: &'a str,
    addr: String,
    transport: Transport,
    connected: String,
    lines_in: u64,
    bytes_out: u64,
}

/// `GET /stats`: the snapshot as pretty-printed JSON (for people reading
/// it with curl), ending in LF.
pub fn render_stats_json(snapshot: &Snapshot) -> String {
    let stats = StatsJson {
        version: &snapshot.version,
        epoch: &snapshot.epoch,
        started: format_time(snapshot.started),
        seq: snapshot.seq,
        history: &snapshot.history,
        clients: snapshot
            .clients
            .iter()
            .map(|c| ClientJson {
                id: c.id,
                name: &c.name,
                addr: c.addr.to_string(),
                transport: c.transport,
                connected: format_time(c.connected),
                lines_in: c.lines_in,
                bytes_out: c.bytes_out,
            })
            .collect(),
        cluster: snapshot.cluster.as_ref().map(|c| ClusterJson {
            node: &c.node,
            room: &c.room,
            redis: if c.redis_up { "up" } else { "down" },
            reader_lag: c.reader_lag,
        }),
    };
    let mut json = serde_json::to_string_pretty(&stats).expect("plain structs serialize");
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            seq: 1234,
            history: HistoryStats {
                events: 1024,
                bytes: 81234,
                oldest: Some(211),
            },
            clients: vec![
                ClientStats {
                    id: 7,
                    name: "alice".into(),
                    addr: "127.0.0.1:50512".parse().unwrap(),
                    transport: Transport::Tcp,
                    connected: at(1_795_341_606_001),
                    lines_in: 12,
                    bytes_out: 40960,
                },
                ClientStats {
                    id: 8,
                    name: "wall".into(),
                    addr: "[::1]:50600".parse().unwrap(),
                    transport: Transport::Sse,
                    connected: at(1_795_341_607_000),
                    lines_in: 0,
                    bytes_out: 100,
                },
            ],
            clients_tcp: 1,
            clients_sse: 1,
            ..Snapshot::new("5b0e1f6a2d4c8e90", at(1_795_341_605_123))
        }
    }

    /// Parses the text format back: `(name, labels) → value`, checking that
    /// every sample's family was announced by `# HELP` and `# TYPE` first.
    fn parse_metrics(text: &str) -> (HashMap<String, String>, HashMap<String, u64>) {
        let mut types = HashMap::new();
        let mut helped = Vec::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                types.insert(name.to_owned(), kind.to_owned());
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(helped.iter().any(|h| h == name), "no HELP for {line}");
                assert!(types.contains_key(name), "no TYPE for {line}");
                let old = samples.insert(series.to_owned(), value.parse().unwrap());
                assert_eq!(old, None, "{series} twice");
            }
        }
        (types, samples)
    }

    #[test]
    fn metrics_hold_every_figure_of_the_contract() {
        let counters = Counters::new();
        counters.count_connection(Transport::Tcp);
        counters.count_connection(Transport::Tcp);
        counters.count_connection(Transport::Sse);
        counters.count_refused(Reason::ServerFull);
        counters.count_refused(Reason::AuthFailed);
        counters.count_refused(Reason::Quit); // not a refusal: not counted
        counters.count_leave(Reason::SlowConsumer);
        counters.count_leave(Reason::Quit);
        counters.count_leave(Reason::Quit);
        assert_eq!(Verb::of_encoded(b"msg 1 a x\n"), None);
        assert_eq!(Verb::of_encoded(b"USERS 1 a\n"), None);
        for line in ["MSG 1 a x\n", "MSG 2 a y\n", "DATA 3 a 0\n\n", "TICK 4 t\n"] {
            counters.count_event(Verb::of_encoded(line.as_bytes()).unwrap());
        }
        counters.count_event(Verb::of(&ServerLine::Join { seq: 5, name: "b" }).unwrap());
        counters.count_deliveries(10);
        counters.count_deliveries(5);
        counters.count_bytes_out(999);
        counters.count_resume(false);
        counters.count_resume(true);

        let text = render_metrics(&snapshot(), &counters);
        let (types, samples) = parse_metrics(&text);
        for (name, kind) in [
            ("tickcast_clients", "gauge"),
            ("tickcast_connections_total", "counter"),
            ("tickcast_refused_total", "counter"),
            ("tickcast_leaves_total", "counter"),
            ("tickcast_events_total", "counter"),
            ("tickcast_seq", "gauge"),
            ("tickcast_deliveries_total", "counter"),
            ("tickcast_bytes_out_total", "counter"),
            ("tickcast_history_events", "gauge"),
            ("tickcast_history_bytes", "gauge"),
            ("tickcast_resumes_total", "counter"),
            ("tickcast_resume_gaps_total", "counter"),
        ] {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        for (series, value) in [
            (r#"tickcast_clients{transport="tcp"}"#, 1),
            (r#"tickcast_clients{transport="sse"}"#, 1),
            (r#"tickcast_connections_total{transport="tcp"}"#, 2),
            (r#"tickcast_connections_total{transport="sse"}"#, 1),
            (r#"tickcast_refused_total{reason="server-full"}"#, 1),
            (
                r#"tickcast_refused_total{reason="too-many-connections"}"#,
                0,
            ),
            (r#"tickcast_refused_total{reason="auth-failed"}"#, 1),
            (r#"tickcast_leaves_total{reason="quit"}"#, 2),
            (r#"tickcast_leaves_total{reason="slow-consumer"}"#, 1),
            (r#"tickcast_leaves_total{reason="closed"}"#, 0),
            (r#"tickcast_events_total{verb="msg"}"#, 2),
            (r#"tickcast_events_total{verb="data"}"#, 1),
            (r#"tickcast_events_total{verb="join"}"#, 1),
            (r#"tickcast_events_total{verb="nick"}"#, 0),
            (r#"tickcast_events_total{verb="leave"}"#, 0),
            (r#"tickcast_events_total{verb="tick"}"#, 1),
            ("tickcast_seq", 1234),
            ("tickcast_deliveries_total", 15),
            ("tickcast_bytes_out_total", 999),
            ("tickcast_history_events", 1024),
            ("tickcast_history_bytes", 81234),
            ("tickcast_resumes_total", 2),
            ("tickcast_resume_gaps_total", 1),
            (
                &format!(
                    r#"tickcast_info{{version="{}",epoch="5b0e1f6a2d4c8e90"}}"#,
                    env!("CARGO_PKG_VERSION")
                ),
                1,
            ),
        ] {
            assert_eq!(samples.get(series), Some(&value), "{series}");
        }
        // Every leave reason is a series, even at 0.
        assert_eq!(
            samples
                .keys()
                .filter(|k| k.starts_with("tickcast_leaves_total"))
                .count(),
            Reason::ALL.len()
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("a\nb"), r"a\nb");
        let mut s = snapshot();
        s.version = "1.0\"\\\n".into();
        let text = render_metrics(&s, &Counters::new());
        assert!(
            text.contains(r#"tickcast_info{version="1.0\"\\\n",epoch"#),
            "{text}"
        );
    }

    #[test]
    fn stats_json_has_the_contract_fields_in_order() {
        let json = render_stats_json(&snapshot());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["epoch"], "5b0e1f6a2d4c8e90");
        assert_eq!(v["started"], "2026-11-22T10:00:05.123Z");
        assert_eq!(v["seq"], 1234);
        assert_eq!(
            v["history"],
            serde_json::json!({"events": 1024, "bytes": 81234, "oldest": 211})
        );
        assert_eq!(
            v["clients"][0],
            serde_json::json!({
                "id": 7, "name": "alice", "addr": "127.0.0.1:50512", "transport": "tcp",
                "connected": "2026-11-22T10:00:06.001Z", "lines_in": 12, "bytes_out": 40960
            })
        );
        assert_eq!(v["clients"][1]["addr"], "[::1]:50600");
        assert_eq!(v["clients"][1]["transport"], "sse");

        // The order of the keys, as written.
        let order = |keys: &[&str], within: &str| {
            let at: Vec<usize> = keys
                .iter()
                .map(|k| within.find(&format!("\"{k}\":")).unwrap())
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        };
        order(
            &["version", "epoch", "started", "seq", "history", "clients"],
            &json,
        );
        order(&["events", "bytes", "oldest"], &json);
        order(
            &[
                "id",
                "name",
                "addr",
                "transport",
                "connected",
                "lines_in",
                "bytes_out",
            ],
            &json,
        );
    }

    #[test]
    fn an_empty_history_has_a_null_oldest() {
        let empty = Snapshot::new("ab", at(0));
        let v: serde_json::Value = serde_json::from_str(&render_stats_json(&empty)).unwrap();
        assert_eq!(v["history"]["oldest"], serde_json::Value::Null);
        assert_eq!(v["clients"], serde_json::json!([]));
        assert_eq!(v["seq"], 0);
    }
}
