// The balancer's live dashboard: polls /lb/status and /lb/stats every
// second, long-polls /lb/events (so a replica's fall shows the moment it
// happens), fetches /lb/ring when membership changes. Rates and
// percentiles come from differences of cumulative counters and histogram
// buckets over a window, as Prometheus computes them. No library, nothing
// fetched from elsewhere. The charts are drawn by dashboard-charts.js.
"use strict";

const POLL_MS = 1000;
const HISTORY_S = 300;     // charts
const WINDOW_S = 10;       // per-replica req/s and percentiles
const CHART_WINDOW_S = 5;  // pool latency points
const MAX_EVENTS = 300;
const RECOVERED_S = 15;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("lb-token") || "",
  samples: [],          // {t, requests, latency:{counts}, replicas: Map name -> {served, failures, counts}}
  bounds: [],
  status: null,
  statusSeq: 0,         // event seq known when the last status poll was sent
  lastSeq: 0,
  events: [],           // newest last
  lastEventOf: new Map(),
  lastFailureOf: new Map(),
  membership: "",
  shares: new Map(),
  rows: new Map(),
};

// ---- API ----------------------------------------------------------------

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const resp = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  const text = await resp.text();
  let body;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  if (!resp.ok) {
    // The API's own words, as it gave them.
    const message = body && body.message !== undefined ? body.message : text;
    throw new ApiError(`HTTP ${resp.status}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
  }
  return body;
}

function showError(e) {
  const el = $("error");
  if (e) { el.textContent = e.message || String(e); el.hidden = false; }
  else { el.hidden = true; el.textContent = ""; }
}

// ---- numbers ------------------------------------------------------------

function quantile(q, bounds, counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < counts.length; i++) {
    const prev = cum;
    cum += counts[i];
    if (cum >= rank && counts[i] > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1]; // the +Inf bucket
      const lower = i === 0 ? 0 : bounds[i - 1];
      return lower + (bounds[i] - lower) * ((rank - prev) / counts[i]);
    }
  }
  return bounds[bounds.length - 1];
}

const diff = (a, b) => a.map((v, i) => Math.max(0, v - (b[i] || 0)));

// The sample at least `seconds` older than `sample` (or the oldest).
function before(sample, seconds) {
  let pick = state.samples[0];
  for (const s of state.samples) {
    if (s.t <= sample.t - seconds * 1000) pick = s; else break;
  }
  return pick;
}

const fmt = (v, digits = 1) => (v === null || v === undefined || !isFinite(v)) ? "–" : v.toFixed(digits);
const ms = (secs) => secs === null ? null : secs * 1000;

function ago(atMs) {
  const s = Math.max(0, (Date.now() - atMs) / 1000);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function clock(atMs) {
  const d = new Date(atMs);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// ---- polling ------------------------------------------------------------

async function pollOnce() {
  const seqAtSend = state.lastSeq;
  const [status, stats] = await Promise.all([api("/lb/status"), api("/lb/stats")]);
  state.status = status;
  state.statusSeq = seqAtSend;
  state.bounds = stats.bounds;
  const replicas = new Map();
  for (const r of stats.replicas) {
    replicas.set(r.name, { served: r.served, failures: r.failures, counts: r.latency.counts });
  }
  state.samples.push({
    t: stats.at_ms, requests: stats.requests, latency: stats.latency.counts,
    clientErrors: stats.client_errors, replicaErrors: stats.replica_errors,
    connections: stats.connections, replicas,
  });
  const oldest = stats.at_ms - HISTORY_S * 1000;
  while (state.samples.length > 2 && state.samples[0].t < oldest) state.samples.shift();
  // Per-replica detail is only needed for the last window.
  for (const s of state.samples) if (s.t < stats.at_ms - (WINDOW_S + 5) * 1000) s.replicas = null;
  const membership = status.replicas.map((r) => `${r.id}:${r.name}`).join(",");
  if (membership !== state.membership) {
    state.membership = membership;
    await loadRing();
  }
  showError(null);
  $("conn").textContent = `updated ${clock(Date.now())}`;
  render();
}

async function pollLoop() {
  for (;;) {
    try { await pollOnce(); } catch (e) { showError(e); $("conn").textContent = "not connected"; }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function eventLoop() {
  for (;;) {
    try {
      const body = await api(`/lb/events?after=${state.lastSeq}&wait_ms=20000`);
      for (const e of body.events) addEvent(e);
      if (body.events.length) { renderEvents(); renderReplicas(); }
    } catch (e) {
      showError(e);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

function addEvent(e) {
  if (e.seq <= state.lastSeq) return;
  state.lastSeq = e.seq;
  state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.shift();
  state.lastEventOf.set(e.replica, e);
  if (FAILURES[e.kind]) state.lastFailureOf.set(e.replica, e);
}

// How a replica left rotation, in the words of its health checks.
const FAILURES = {
  exited: "its process or container exited",
  down: "missed heartbeats",
  suspect: "a proxied request failed (passive check)",
};

const said = (e) => `${e.kind}${e.detail ? ": " + e.detail : ""} (${ago(e.at_ms)})`;

// The last event of a replica, and its last failure if that came before.
function why(name, last) {
  if (!last) return "";
  const failure = state.lastFailureOf.get(name);
  let text = said(last);
  if (FAILURES[last.kind]) text += ` — ${FAILURES[last.kind]}`;
  else if (failure) text += `; last failure: ${said(failure)} — ${FAILURES[failure.kind]}`;
  return text;
}

async function loadRing() {
  const ring = await api("/lb/ring");
  state.shares = new Map(ring.shares.map((s) => [s.name, s.share]));
  renderRing(ring);
}

// ---- rendering ----------------------------------------------------------

// What an event says about a replica's health right after it.
const HEALTH_AFTER = {
  exited: "down", down: "down", replacing: "down", "replace-failed": "down",
  suspect: "suspect", up: "up", replaced: "up", added: "up", adopted: "up",
  removed: "draining",
};

function healthOf(r) {
  // An event newer than the last status poll is fresher than that poll.
  const e = state.lastEventOf.get(r.name);
  if (e && e.seq > state.statusSeq && HEALTH_AFTER[e.kind]) return HEALTH_AFTER[e.kind];
  return r.health;
}

function render() {
  renderTiles();
  renderReplicas();
  renderCharts();
}

function renderTiles() {
  const s = state.status, last = state.samples[state.samples.length - 1];
  if (!s || !last) return;
  $("policy").textContent = s.policy;
  const up = s.replicas.filter((r) => healthOf(r) === "up").length;
  $("t-up").textContent = `${up} / ${s.replicas.length}`;
  const prev = before(last, WINDOW_S);
  const dt = (last.t - prev.t) / 1000;
  $("t-rps").textContent = dt > 0 ? fmt((last.requests - prev.requests) / dt) : "–";
  const window = diff(last.latency, prev.latency);
  $("t-p50").textContent = `${fmt(ms(quantile(0.5, state.bounds, window)), 2)} ms`;
  $("t-p99").textContent = `${fmt(ms(quantile(0.99, state.bounds, window)), 2)} ms`;
  $("t-cerr").textContent = last.clientErrors;
  $("t-rerr").textContent = last.replicaErrors;
  $("t-conns").textContent = last.connections;
}

function cell(tr, i) { return tr.children[i]; }

function renderReplicas() {
  const s = state.status;
  if (!s) return;
  const tbody = document.querySelector("#replicas tbody");
  const last = state.samples[state.samples.length - 1];
  const prev = last && before(last, WINDOW_S);
  const dt = last && prev ? (last.t - prev.t) / 1000 : 0;
  const filter = $("filter").value.trim().toLowerCase();
  const seen = new Set();
  for (const r of s.replicas) {
    seen.add(r.name);
    let tr = state.rows.get(r.name);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.name = r.name;
      for (let i = 0; i < 12; i++) {
        const td = document.createElement("td");
        if (i >= 5 && i !== 3) td.className = "num";
        tr.appendChild(td);
      }
      cell(tr, 3).className = "why";
      state.rows.set(r.name, tr);
    }
    tbody.appendChild(tr); // keeps the status order (by ring id)
    const health = healthOf(r);
    // Back up after a failure in the last RECOVERED_S: marked, so a
    // replacement that took milliseconds is still seen by a person.
    const failure = state.lastFailureOf.get(r.name);
    const recovered = health === "up" && failure && Date.now() - failure.at_ms < RECOVERED_S * 1000;
    tr.className = recovered ? `${health} recovered` : health;
    const e = state.lastEventOf.get(r.name);
    const now = last && last.replicas && last.replicas.get(r.name);
    const then = prev && prev.replicas && prev.replicas.get(r.name);
    let rps = null, p50 = null, p99 = null;
    if (now && dt > 0) {
      rps = (now.served - (then ? then.served : 0)) / dt;
      const w = diff(now.counts, then ? then.counts : []);
      p50 = ms(quantile(0.5, state.bounds, w));
      p99 = ms(quantile(0.99, state.bounds, w));
    }
    const share = state.shares.get(r.name);
    const values = [
      r.name, String(r.id), health, why(r.name, e),
      r.addr, String(r.in_flight), String(r.served), fmt(rps), fmt(p50, 2), fmt(p99, 2),
      String(r.failures), share === undefined ? "–" : `${(share * 100).toFixed(1)} %`,
    ];
    values.forEach((v, i) => { if (cell(tr, i).textContent !== v) cell(tr, i).textContent = v; });
    cell(tr, 2).className = `health ${health}`;
    tr.hidden = filter !== "" && !values.slice(0, 5).join(" ").toLowerCase().includes(filter);
  }
  for (const [name, tr] of state.rows) {
    if (!seen.has(name)) { tr.remove(); state.rows.delete(name); }
  }
  $("replica-count").textContent = `(${s.replicas.length})`;
}

function renderEvents() {
  const ol = $("events");
  ol.replaceChildren(...state.events.slice().reverse().map((e) => {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = new Date(e.at_ms).toISOString();
    time.textContent = clock(e.at_ms);
    const kind = document.createElement("span");
    kind.className = `kind ${e.kind}`;
    kind.textContent = e.kind;
    const what = document.createElement("span");
    what.textContent = `${e.replica}${e.detail ? " — " + e.detail : ""}`;
    li.append(time, kind, what);
    return li;
  }));
}

function renderCharts() {
  const rps = [], p50 = [], p99 = [];
  const samples = state.samples;
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = (b.t - a.t) / 1000;
    if (dt > 0) rps.push([b.t, (b.requests - a.requests) / dt]);
    const w = diff(b.latency, before(b, CHART_WINDOW_S).latency);
    p50.push([b.t, ms(quantile(0.5, state.bounds, w))]);
    p99.push([b.t, ms(quantile(0.99, state.bounds, w))]);
  }
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  lineChart($("chart-rps"), [{ name: "requests/s", points: rps }], "requests per second", now, HISTORY_S);
  lineChart($("chart-latency"), [{ name: "p50", points: p50 }, { name: "p99", points: p99 }],
    "latency (ms)", now, HISTORY_S);
}

function renderRing(ring) {
  const bar = $("ring-bar");
  const note = $("ring-note");
  if (!ring.hashing) {
    note.textContent = `Policy ${ring.policy} does not hash keys: every replica is eligible for every request.`;
    bar.replaceChildren();
    return;
  }
  const n = ring.shares.length;
  const top = ring.shares.reduce((a, s) => (s.share > a.share ? s : a), { share: 0, name: "–" });
  note.textContent = `Policy ${ring.policy}: each replica's share of the hash space` +
    (ring.policy === "ring" ? " (measured over the 900,000 six-digit request ids)" : "") +
    `. An even split is ${(100 / Math.max(1, n)).toFixed(1)} % each; the largest is ${top.name} with ` +
    `${(top.share * 100).toFixed(1)} % (${(top.share * n).toFixed(2)}× even).`;
  const palette = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];
  bar.replaceChildren(...ring.shares.map((s, i) => {
    const seg = document.createElement("span");
    const pct = (s.share * 100).toFixed(1);
    seg.style.width = `${s.share * 100}%`;
    seg.style.background = palette[i % palette.length];
    seg.title = `${s.name} (id ${s.id}): ${(s.share * 100).toFixed(2)} %`;
    seg.textContent = `${s.name} ${pct} %`;
    return seg;
  }));
}

// ---- controls -----------------------------------------------------------

function change(method, path, nId, namesId) {
  return async (ev) => {
    ev.preventDefault();
    const out = $("result");
    const hostnames = $(namesId).value.split(/[\s,]+/).filter((s) => s);
    const n = Number($(nId).value);
    try {
      const body = await api(path, {
        method, headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ n, hostnames }),
      });
      out.className = "";
      out.textContent = `${method} ${path}: ${JSON.stringify(body.message)}`;
      await pollOnce();
    } catch (e) {
      out.className = "error";
      out.textContent = `${method} ${path}: ${e.message}`;
    }
  };
}

function start() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("lb-token", state.token);
    try { await pollOnce(); } catch (e) { showError(e); }
  });
  $("add-form").addEventListener("submit", change("POST", "/add", "add-n", "add-names"));
  $("rm-form").addEventListener("submit", change("DELETE", "/rm", "rm-n", "rm-names"));
  $("filter").addEventListener("input", renderReplicas);
  pollLoop();
  eventLoop();
}

document.addEventListener("DOMContentLoaded", start);
