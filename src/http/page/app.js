// tickcast's page: one event stream (GET /events), lines sent with
// POST /line. No framework, no build step. See docs/HTTP.md.
//
// The stream's events carry the protocol's own lines (MSG 42 alice hi),
// with `id: EPOCH:SEQ`. The page keeps the last EPOCH:SEQ it showed and
// the KEY from the latest WELCOME; when the stream breaks, it reopens it
// itself with since=EPOCH:SEQ&key=KEY, which replays what it missed and
// gives its name back. Anything at or below the last SEQ is dropped, so
// every event is shown exactly once, in order.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 2000;       // events kept on screen
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

const fragment = new URLSearchParams(location.hash.slice(1));
const state = {
  token: fragment.get("token") || sessionStorage.getItem("tickcast.token") || "",
  wanted: fragment.get("name") || localStorage.getItem("tickcast.name") || "",
  name: "",        // our name now
  key: "",         // from the latest WELCOME
  epoch: "",       // the server run our SEQs belong to
  lastSeq: 0,      // the newest broadcast SEQ shown
  source: null,    // the EventSource
  attempt: 0,      // reconnects since the last WELCOME
  stopped: false,  // BYE quit / replaced: do not reconnect by ourselves
  note: "",        // a gap note for the next event shown
  who: new Map(),  // lower-case name -> name
  listing: null,   // while a /list is on its way: changes seen meanwhile
  history: [],     // lines typed, for the up arrow
};
if (state.token) sessionStorage.setItem("tickcast.token", state.token);
// Keep the token off the screen (and out of the history) once read.
if (fragment.has("token")) {
  fragment.delete("token");
  const rest = fragment.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
}

// ---- the protocol's lines -------------------------------------------

/** Splits off the first n space-separated words; the rest is the last item. */
function fields(line, n) {
  const out = [];
  let rest = line;
  for (let i = 0; i < n; i++) {
    const sp = rest.indexOf(" ");
    out.push(sp < 0 ? rest : rest.slice(0, sp));
    rest = sp < 0 ? "" : rest.slice(sp + 1);
  }
  out.push(rest);
  return out;
}

function hue(name) {
  let h = 0;
  for (const c of name.toLowerCase()) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- showing things -------------------------------------------------

const events = $("events");

function nearBottom() {
  return events.scrollHeight - events.scrollTop - events.clientHeight < 48;
}

function stickToBottom(wasNear) {
  if (wasNear) {
    events.scrollTop = events.scrollHeight;
    $("jump").hidden = true;
  } else {
    $("jump").hidden = false;
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function timeEl(date) {
  const t = el("time", "", clock(date));
  t.dateTime = date.toISOString();
  return t;
}

function nameEl(name) {
  const b = el("span", "who", name);
  b.style.setProperty("--hue", hue(name));
  return b;
}

/** Adds one broadcast event to #events (its SEQ as data-seq). */
function show(seq, cls, date, body) {
  const wasNear = nearBottom();
  const li = el("li", cls);
  li.dataset.seq = String(seq);
  if (state.note) {
    li.dataset.gap = state.note;
    state.note = "";
  }
  li.append(timeEl(date), body);
  events.append(li);
  while (events.children.length > MAX_SHOWN) events.firstElementChild.remove();
  stickToBottom(wasNear);
}

/** A reply or notice of our own, below the stream (the last few stay). */
function notice(text, cls) {
  const list = $("notices");
  const li = el("li", cls || "", text);
  list.append(li);
  while (list.children.length > 4) list.firstElementChild.remove();
  setTimeout(() => li.remove(), 30000);
}

function setStatus(stateName, text) {
  const s = $("status");
  s.dataset.state = stateName;
  s.textContent = text || stateName;
}

let missedTimer = 0;

/** The "missed something" badge; it goes after ten minutes (the note in
 *  the stream stays). */
function setMissed(text) {
  const m = $("missed");
  m.textContent = text;
  m.hidden = !text;
  clearTimeout(missedTimer);
  if (text) missedTimer = setTimeout(() => setMissed(""), 10 * 60 * 1000);
}

function setName(name) {
  state.name = name;
  $("my-name").textContent = name;
  if (!name.startsWith("guest-") && document.activeElement !== $("name")) $("name").value = name;
  renderWho();
}

// ---- who is here ----------------------------------------------------

function whoChange(op, a, b) {
  if (state.listing) state.listing.push([op, a, b]);
  applyWho(op, a, b);
  renderWho();
}

function applyWho(op, a, b) {
  if (op === "join") state.who.set(a.toLowerCase(), a);
  if (op === "leave") state.who.delete(a.toLowerCase());
  if (op === "nick") {
    state.who.delete(a.toLowerCase());
    state.who.set(b.toLowerCase(), b);
  }
}

function renderWho() {
  const names = [...state.who.values()].sort((x, y) =>
    x.toLowerCase().localeCompare(y.toLowerCase()));
  const list = $("who");
  list.replaceChildren(...names.map((n) => {
    const li = el("li", n === state.name ? "me" : "", n + " ");
    li.style.setProperty("--hue", hue(n));
    return li;
  }));
  $("who-count").textContent = `(${names.length})`;
}

/** USERS N NAME…: the list as of when the server answered; changes seen
 *  since we asked are applied again on top. */
function seedWho(line) {
  const names = line.split(" ").slice(2).filter(Boolean);
  const since = state.listing || [];
  state.listing = null;
  state.who = new Map(names.map((n) => [n.toLowerCase(), n]));
  for (const [op, a, b] of since) applyWho(op, a, b);
  renderWho();
}

// ---- the stream -----------------------------------------------------

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

function connect() {
  if (state.source) state.source.close();
  const q = new URLSearchParams();
  if (state.token) q.set("token", state.token);
  if (state.epoch && state.key) {
    q.set("since", `${state.epoch}:${state.lastSeq}`);
    q.set("key", state.key);
  }
  const name = state.name && !state.name.startsWith("guest-") ? state.name : state.wanted;
  if (name) q.set("name", name);
  setStatus(state.attempt ? "reconnecting" : "connecting");
  const es = new EventSource("events?" + q.toString());
  state.source = es;
  es.addEventListener("welcome", (e) => onWelcome(e.data));
  es.onmessage = (e) => onBroadcast(e.data, e.lastEventId);
  es.addEventListener("dm", (e) => {
    const [, from, text] = fields(e.data, 2);
    notice(`${from} → you: ${text}`, "dm");
  });
  es.addEventListener("err", (e) => notice(e.data, "err"));
  es.addEventListener("gap", (e) => onGap(e.data));
  es.addEventListener("bye", (e) => {
    const reason = e.data.split(" ")[1];
    if (reason === "quit" || reason === "replaced") {
      state.stopped = true;
      es.close();
      setStatus("stopped", reason === "quit" ? "left (you quit)" : "taken over by another window");
      notice(`${e.data}: reload the page to join again`, "err");
    }
  });
  es.onerror = () => {
    if (es !== state.source || state.stopped) return;
    es.close();
    retry();
  };
}

async function retry() {
  const wait = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
  state.attempt++;
  setStatus("reconnecting", `reconnecting in ${Math.round(wait / 100) / 10} s`);
  // EventSource cannot see a 401; ask a cheap endpoint that needs the token.
  try {
    const r = await fetch("stats", { method: "HEAD", headers: authHeaders() });
    if (r.status === 401) return askToken();
  } catch (_) { /* offline: just retry */ }
  setTimeout(connect, wait);
}

function askToken() {
  setStatus("token", "token needed");
  const d = $("token-dialog");
  $("token").value = "";
  if (!d.open) d.showModal();
}

function onWelcome(line) {
  // WELCOME ID NAME TIME KEY EPOCH TEXT
  const [, , name, , key, epoch] = fields(line, 6);
  if (state.epoch && epoch !== state.epoch) {
    state.lastSeq = 0;   // a new server run: its SEQs start again
    state.note = "the server restarted: what was said meanwhile is gone";
    setMissed("server restarted");
  }
  state.key = key;
  state.epoch = epoch;
  state.attempt = 0;
  state.who.clear();
  state.who.set(name.toLowerCase(), name);
  setName(name);
  setStatus("connected");
  state.listing = [];
  sendLine("/list", { quiet: true });
}

function onGap(data) {
  if (data === "restart") {
    state.note = "the server restarted: what was said meanwhile is gone";
    setMissed("server restarted");
    return;
  }
  const oldest = Number(data);
  if (state.lastSeq && oldest > state.lastSeq + 1) {
    const range = `${state.lastSeq + 1}–${oldest - 1}`;
    state.note = `missed events ${range} (too old to replay)`;
    setMissed(`missed ${range}`);
  }
}

function onBroadcast(data, id) {
  const [head, payload] = data.split("\n");
  const [verb, seqText] = fields(head, 2);
  const seq = Number(seqText);
  const epoch = (id || "").split(":")[0];
  if (epoch && state.epoch && epoch !== state.epoch) return; // not this run
  if (!(seq > state.lastSeq)) return;                        // seen already
  if (state.lastSeq && seq > state.lastSeq + 1 && !state.note) {
    state.note = `missed events ${state.lastSeq + 1}–${seq - 1}`;
    setMissed(`missed ${state.lastSeq + 1}–${seq - 1}`);
  }
  state.lastSeq = seq;
  render(verb, head, payload, seq);
}

function render(verb, line, payload, seq) {
  const now = new Date();
  if (verb === "MSG") {
    const [, , from, text] = fields(line, 3);
    const body = el("span", "line");
    body.append(nameEl(from), el("span", "text", text));
    show(seq, "msg" + (from === state.name ? " mine" : ""), now, body);
  } else if (verb === "TICK") {
    const [, , time, text] = fields(line, 3);
    const body = el("span", "line");
    body.append(el("span", "label", "tick"), el("span", "text", text));
    const at = new Date(time);
    show(seq, "tick", isNaN(at) ? now : at, body);
  } else if (verb === "JOIN") {
    const [, , name] = fields(line, 2);
    whoChange("join", name);
    show(seq, "quiet", now, el("span", "", `${name} joined`));
  } else if (verb === "NICK") {
    const [, , oldName, newName] = fields(line, 3);
    if (oldName === state.name) {
      setName(newName);
      if (!newName.startsWith("guest-")) localStorage.setItem("tickcast.name", newName);
    }
    whoChange("nick", oldName, newName);
    show(seq, "quiet", now, el("span", "", `${oldName} is now ${newName}`));
  } else if (verb === "LEAVE") {
    const [, , name, reason] = fields(line, 3);
    whoChange("leave", name);
    show(seq, "quiet", now, el("span", "", `${name} left (${reason})`));
  } else if (verb === "DATA") {
    const [, , from, len] = fields(line, 3);
    const body = el("span", "line");
    body.append(nameEl(from), el("span", "text", `sent ${len} bytes `));
    const preview = decodePayload(payload || "");
    if (preview) body.append(el("code", "", preview));
    show(seq, "msg data", now, body);
  } else {
    show(seq, "quiet", now, el("span", "", line));
  }
}

/** The payload as text, if it is short printable UTF-8. */
function decodePayload(b64) {
  try {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    if (/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) return "";
    return text.length > 200 ? text.slice(0, 200) + "…" : text;
  } catch (_) {
    return "";
  }
}

// ---- sending --------------------------------------------------------

/** POST /line for our stream. Replies (OK, USERS…) become notices. */
async function sendLine(line, opts = {}) {
  if (!state.key) {
    notice("not connected yet: your line was not sent", "err");
    return false;
  }
  let r;
  try {
    r = await fetch("line", {
      method: "POST",
      headers: authHeaders({ "Tickcast-Key": state.key, "Content-Type": "text/plain; charset=utf-8" }),
      body: line,
    });
  } catch (_) {
    notice("not sent: the hub cannot be reached", "err");
    return false;
  }
  if (r.status === 204) return true;
  const text = (await r.text()).trimEnd();
  if (r.status === 401) askToken();
  for (const reply of text.split("\n").filter(Boolean)) {
    if (reply.startsWith("USERS ")) {
      seedWho(reply);
      if (opts.quiet) continue;
    }
    if (reply.startsWith("OK nick ")) {
      localStorage.setItem("tickcast.name", reply.slice(8));
    }
    notice(reply, reply.startsWith("ERR ") ? "err" : "");
  }
  return r.ok;
}

$("say-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("say");
  const line = input.value;
  if (!line.trim()) return;
  state.history.push(line);
  input.value = "";
  if (!(await sendLine(line)) && !input.value) input.value = line;
});

$("say").addEventListener("keydown", (e) => {
  if (e.key === "ArrowUp" && !e.target.value && state.history.length) {
    e.target.value = state.history[state.history.length - 1];
    e.preventDefault();
  } else if (e.key === "Escape") {
    e.target.value = "";
  }
});

$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  if (!name) return;
  state.wanted = name;
  localStorage.setItem("tickcast.name", name);
  if (state.key) sendLine("/nick " + name);
});

$("token-form").addEventListener("submit", () => {
  state.token = $("token").value.trim();
  sessionStorage.setItem("tickcast.token", state.token);
  state.attempt = 0;
  connect();
});

$("jump").addEventListener("click", () => stickToBottom(true));
events.addEventListener("scroll", () => { if (nearBottom()) $("jump").hidden = true; });

$("name").value = state.wanted;

if (location.protocol === "file:") {
  demo();
} else {
  connect();
}

// ---- demo: opened as a file, the page shows made-up events ------------

function demo() {
  const epoch = "5b0e1f6a2d4c8e90";
  sendLine = async (line, opts = {}) => {
    if (line.startsWith("/")) {
      if (!opts.quiet) notice("ERR unknown-command this is a demo: commands need a hub", "err");
      return true;
    }
    onBroadcast(`MSG ${state.lastSeq + 1} ${state.name} ${line}`, `${epoch}:${state.lastSeq + 1}`);
    return true;
  };
  const t = (s) => new Date(Date.now() - s * 1000).toISOString();
  onWelcome(`WELCOME 9 guest-9 ${t(0)} 00ff ${epoch} demo`);
  seedWho("USERS 4 alice bob build-bot guest-9");
  const lines = [
    `TICK 31 ${t(600)} build 1431 passed (main, 4m12s)`,
    "MSG 32 alice morning! coffee machine is fixed",
    "MSG 33 bob finally",
    "JOIN 34 carol",
    "MSG 35 carol can someone review #2211 before standup?",
    `TICK 36 ${t(300)} deploy api-7 to staging: done`,
    "MSG 37 alice on it",
    "NICK 38 guest-9 wall",
    "DATA 39 build-bot 27\ncmVwb3J0OiAxMiB3YXJuaW5ncywgMCBlcnJvcnM=",
    "LEAVE 40 bob closed",
    "__gap__",
    "MSG 47 carol thanks alice, merged",
    `TICK 48 ${t(10)} build 1432 passed (main, 3m58s)`,
  ];
  for (const line of lines) {
    if (line === "__gap__") { onGap("47"); continue; }
    onBroadcast(line, `${epoch}:${line.split(" ")[1]}`);
  }
  notice("OK nick wall");
}
