"""Markdown tables and the chart of the suites beyond the headline
(results.json "suites"): instructions per request, 10,000 connections,
1 MiB bodies, 100 replicas, memory. Computed from results.json only."""

import re

from .chart import LABEL, Panel, bar_chart

LENIENT = "ours:health-timeout-5s"
NAMES = {**LABEL, LENIENT: "ours, --health-timeout 5s", "haproxy:roundrobin": "HAProxy roundrobin",
         "haproxy:leastconn": "HAProxy leastconn"}
ORDER = ["direct", "ours", LENIENT, "haproxy", "haproxy-xff", "nginx"]
LENIENT_COLOR = "#ffa94d"


def name(t):
    return NAMES.get(t, t.replace("ours:", "ours ").replace("haproxy:", "HAProxy "))


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def span(rs, value, digits=0):
    xs = [v for v in (value(r) for r in rs) if v is not None]
    if len(xs) < 2:
        return "–"
    return f"{min(xs):.{digits}f}–{max(xs):.{digits}f}"


def ordered(runs):
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(runs, key=lambda r: rank.get(r["target"], len(ORDER)))


def ok_rps(r):
    """Successful (2xx/3xx) responses per second."""
    if r.get("ok_rps") is not None:
        return r["ok_rps"]
    return r["rps"] * max(r["requests"] - r.get("non_2xx", 0), 0) / r["requests"] if r["requests"] else 0.0


def p99(r):
    return r.get("latency_ms", {}).get("p99")


def cpu_us_per(r, n=None):
    n = r["requests"] if n is None else n
    cpu = r.get("proxy_cpu_s")
    return None if cpu is None or not n else cpu / n * 1e6


def log_line(r):
    """The last thing the proxy logged, shortened (for rows with errors)."""
    tail = (r.get("proxy_log_tail") or "").strip().splitlines()
    if not tail:
        return None
    line = re.sub(r"^\S+Z\s+", "", tail[-1])
    return line[:220]


# ------------------------------------------------------------- sections


def instructions_md(doc, s):
    setup = s["setup"]
    mhz = doc["machine"].get("cpu_mhz")
    head = next((r for r in doc.get("runs", []) if r.get("connections") == 50 and r.get("threads") == 1), None)
    lines = [
        "## Instructions per request",
        "",
        f"No hardware counters on this machine (`perf stat -e instructions,cycles`: `<not supported>`), so "
        f"callgrind counts each proxy's user-space instructions over exactly {setup['requests']} responses "
        f"(`wrk -t1 -c{setup['connections']}` on `{setup['path']}`, {setup['replicas']} replicas, 1 worker: our "
        f"`--threads 1`, HAProxy `nbthread 1`, nginx one process without a master), after a 1 s warm-up; "
        f"{setup['rounds']} alternating round(s), median and min–max. Kernel work (loopback TCP) is not in "
        "these counts. *Cycles/req* is an estimate, not a count: the headline's CPU µs per request at 50 "
        f"connections, 1 thread (user + kernel, under real load) times the clock /proc/cpuinfo reports"
        f"{f' ({mhz:.0f} MHz)' if mhz else ''}.",
        "",
        "| proxy | instructions / request | min–max | responses counted | CPU µs/req (headline 50 conns, 1 thread) "
        "| ≈ cycles / request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in ordered(s["runs"]):
        hr = None
        if head is not None:
            hr = next((x for x in doc["runs"] if x["target"] == r["target"] and x["connections"] == 50
                       and x["threads"] == 1), None)
        us = cpu_us_per(hr) if hr else None
        cyc = us * mhz if us is not None and mhz else None
        lines.append(f"| {name(r['target'])} | {r['instructions_per_request']:.0f} | "
                     f"{span(r['repeats'], lambda x: x['instructions_per_request'])} | {r['requests']} | "
                     f"{fmt(us, 1)} | {fmt(cyc, 0)} |")
    return lines


def c10k_md(doc, s):
    setup = s["setup"]
    lines = [
        f"## {setup['connections']:,} concurrent connections",
        "",
        f"`{setup['client']}` at `/home` through each proxy ({setup['threads']} worker, 3 replicas), after a "
        f"{setup['warmup_s']} s warm-up; {setup['rounds']} alternating round(s), median by 2xx req/s. RLIMIT_NOFILE "
        f"of the bench and its children: {setup['nofile_limit']} (the hard limit here; a proxy needs two "
        f"descriptors per proxied connection), HAProxy `maxconn {setup['haproxy_maxconn']}`, nginx "
        f"`worker_connections {setup['nginx_worker_connections']}`; our balancer caps itself at what the limit "
        f"allows, ({setup['nofile_limit']} - 128) / 2 = {(int(setup['nofile_limit']) - 128) // 2} connections "
        "(`server/limit.rs`: a client and an upstream descriptor each, 128 kept for the rest). "
        "*2xx req/s* counts only successful responses; *errors* = non-2xx responses + socket errors (wrk "
        f"timeouts after {setup['client'].split('--timeout ')[1].split()[0] if '--timeout' in setup['client'] else '2s'}).",
        "",
        "| proxy | req/s | 2xx req/s | 2xx req/s min–max | p50 ms | p99 ms | p99 min–max | errors | proxy CPU s "
        "| CPU µs / 2xx response | peak RSS MiB | other CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in ordered(s["runs"]):
        ok = ok_rps(r)
        lines.append(
            f"| {name(r['target'])} | {r['rps']:.0f} | {ok:.0f} | {span(r['repeats'], ok_rps)} | "
            f"{fmt(r['latency_ms'].get('p50'))} | {fmt(p99(r))} | {span(r['repeats'], p99, 2)} | {r['errors']} | "
            f"{fmt(r.get('proxy_cpu_s'))} | {fmt(cpu_us_per(r, r['requests'] - r.get('non_2xx', 0)), 1)} | "
            f"{fmt(r.get('proxy_peak_rss_mib'), 1)} | {fmt(r.get('other_cpu_s'))} |")
        line = log_line(r)
        if line:
            notes.append(f"- {name(r['target'])}, last log line of the median round: `{line}`")
    if notes:
        lines += ["", *notes]
    return lines


def large_md(doc, s):
    setup = s["setup"]
    mb = setup["payload_bytes"] / 1e6
    lines = [
        "## 1 MiB responses and uploads",
        "",
        f"The replica here is a static nginx ({setup['origin']}), the same for every proxy, since the `backend` "
        f"binary has no payload endpoint. Download: `GET /large.bin` ({setup['payload_bytes']} bytes); upload: "
        f"{setup['upload']} to `POST /upload`. `wrk -t1 -c{setup['connections']} -d{setup['duration_s']}s`, "
        f"{setup['threads']} proxy worker, {setup['rounds']} alternating round(s), median by req/s. MB/s = "
        f"req/s x {mb:.3f} MB of body (10^6 bytes). Each proxy as configured above: nginx buffers proxied "
        "bodies by default (`proxy_buffering`, `proxy_request_buffering` on; beyond its memory buffers to temp "
        "files), HAProxy and ours stream.",
        "",
        "| direction | target | MB/s | MB/s min–max | req/s | p50 ms | p99 ms | errors | proxy CPU s "
        "| proxy CPU ms / MB | peak RSS MiB | other CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("download", "upload"):
        for r in ordered([r for r in s["runs"] if r["mode"] == mode]):
            cpu = r.get("proxy_cpu_s")
            per_mb = None if cpu is None or not r["requests"] else cpu * 1e3 / (r["requests"] * mb)
            lines.append(
                f"| {mode} | {name(r['target'])} | {r['mb_per_s']:.0f} | {span(r['repeats'], lambda x: x['mb_per_s'])} | "
                f"{r['rps']:.0f} | {fmt(r['latency_ms'].get('p50'))} | {fmt(p99(r))} | {r['errors']} | {fmt(cpu)} | "
                f"{fmt(per_mb, 2)} | {fmt(r.get('proxy_peak_rss_mib'), 1)} | {fmt(r.get('other_cpu_s'))} |")
    return lines


def replicas_md(doc, s):
    setup = s["setup"]
    lines = [
        f"## {setup['replicas']} replicas",
        "",
        f"{setup['replicas']} replicas: {setup['origin']}, answering `GET {setup['path']}` with the same kind of "
        f"small JSON body as the `backend` binary (one process instead of {setup['replicas']}, so the load core "
        f"is not spent switching between {setup['replicas']} runtimes). Each of our policies (`--policy`, ring "
        f"with `{setup['ring']}` so {setup['replicas']} replicas fit) beside HAProxy's `balance roundrobin` and "
        f"`leastconn`; `wrk -t1 -c{setup['connections']} -d{setup['duration_s']}s`, {setup['threads']} proxy "
        f"worker, {setup['rounds']} alternating round(s), median by req/s.",
        "",
        "| proxy | policy | req/s | req/s min–max | p50 ms | p99 ms | p99 min–max | errors | CPU µs/req "
        "| peak RSS MiB | other CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["runs"]:
        kind = "ours" if r["kind"] == "ours" else "HAProxy"
        lines.append(
            f"| {kind} | `{r['policy']}` | {r['rps']:.0f} | {span(r['repeats'], lambda x: x['rps'])} | "
            f"{fmt(r['latency_ms'].get('p50'))} | {fmt(p99(r))} | {span(r['repeats'], p99, 2)} | {r['errors']} | "
            f"{fmt(cpu_us_per(r), 1)} | {fmt(r.get('proxy_peak_rss_mib'), 1)} | {fmt(r.get('other_cpu_s'))} |")
    return lines


def memory_md(doc, s):
    setup = s["setup"]
    idle, active = setup["idle_levels"], setup["active_levels"]

    def cell(r, key, digits=1, scale=1.0):
        med, lo, hi = (r[k].get(key) for k in ("median", "min", "max"))
        if med is None:
            return "–"
        text = f"{med / scale:.{digits}f}"
        return text if lo == hi else f"{text} ({lo / scale:.{digits}f}–{hi / scale:.{digits}f})"

    kept = idle if any("kept" in x for r in s["runs"] for x in r["rounds"]) else []
    cols = [f"idle {n:,}" for n in idle] + [f"kept-alive {n:,}" for n in kept] + [f"active {n:,}" for n in active]
    lines = [
        "## Memory per connection",
        "",
        f"RSS of each proxy with 1 worker ({setup['rss']}). Idle: connections opened and held, nothing sent "
        f"(one start, levels in increasing order); kept-alive: each connection served one GET `/home` and then "
        f"held idle between requests for {setup.get('kept_idle_s', 1)} s, as a browser's or a pooled client's "
        f"spare connections are (a fresh start per level); active: under `wrk` load at `/home` for "
        f"{setup['active_duration_s']} s, each level from a fresh start. *KiB per connection* = {setup['per_connection']}"
        f" against the same start at rest. {setup['rounds']} alternating round(s): median (min–max). "
        f"RLIMIT_NOFILE {setup['nofile_limit']}.",
        "",
        "| proxy | at rest MiB | " + " | ".join(f"{c}: RSS MiB" for c in cols) + " | "
        + " | ".join(f"{c}: KiB/conn" for c in cols) + " |",
        "|---|---:|" + "---:|" * (2 * len(cols)),
    ]
    for r in ordered(s["runs"]):
        keys = [f"idle_{n}" for n in idle] + [f"kept_{n}" for n in kept] + [f"active_{n}" for n in active]
        lines.append(
            f"| {name(r['target'])} | {cell(r, 'baseline_kib', 1, 1024)} | "
            + " | ".join(cell(r, f"{k}_rss_kib", 1, 1024) for k in keys) + " | "
            + " | ".join(cell(r, f"{k}_kib_per_connection", 1) for k in keys) + " |")
    accepted = []
    for r in ordered(s["runs"]):
        for n in idle:
            got = [x["idle"][str(n)]["accepted"] for x in r["rounds"] if str(n) in x["idle"]]
            if got and min(got) < n:
                accepted.append(f"{name(r['target'])} held {min(got)}–{max(got)} of {n} idle connections as "
                                "open descriptors when measured")
    if accepted:
        lines += ["", "Not every idle connection was accepted: " + "; ".join(accepted) + "."]
    unanswered = []
    for r in ordered(s["runs"]):
        for n in kept:
            got = [x["kept"][str(n)]["answered"] for x in r["rounds"] if str(n) in x.get("kept", {})]
            if got and min(got) < n:
                unanswered.append(f"{name(r['target'])} answered {min(got)}–{max(got)} of {n}")
    if unanswered:
        lines += ["", "Not every kept-alive connection got its 2xx: " + "; ".join(unanswered) + "."]
    return lines


TLS_MODES = {"keepalive": "TLS, kept-alive connections (HTTP/1.1)",
             "handshakes": "new TLS handshake per request",
             "h2": "HTTP/2 over TLS"}


def tls_md(doc, s):
    setup = s["setup"]
    lines = [
        "## TLS and HTTP/2",
        "",
        f"Each proxy terminates TLS with the same {setup['certificate']} certificate and forwards HTTP/1.1 to the "
        f"same 3 replicas; {setup['threads']} proxy worker, {setup['rounds']} alternating round(s), median by req/s. "
        f"Clients: keep-alive `{setup['clients']['keepalive']}`; handshakes `{setup['clients']['handshakes']}` "
        f"(a full handshake per request, no session resumption offered by the client); "
        f"h2 `{setup['clients']['h2']}`. The ratio is ours over HAProxy's req/s in the same rounds.",
        "",
        "| load | target | req/s | req/s min–max | ours / HAProxy | latency | errors | proxy CPU µs / req "
        "| peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, title in TLS_MODES.items():
        runs = ordered([r for r in s["runs"] if r["mode"] == mode])
        ha = next((r["rps"] for r in runs if r["target"] == "haproxy"), None)
        for r in runs:
            lat = r.get("latency_ms", {})
            latency = f"p99 {fmt(lat['p99'])} ms" if lat.get("p99") is not None else f"mean {fmt(lat.get('mean'))} ms"
            ratio = fmt(r["rps"] / ha) if ha and r["target"] == "ours" else "–"
            lines.append(f"| {title} | {name(r['target'])} | {r['rps']:.0f} | {span(r['repeats'], lambda x: x['rps'])} "
                         f"| {ratio} | {latency} | {r['errors']} | {fmt(r.get('cpu_us_per_request'), 1)} "
                         f"| {fmt(r.get('proxy_peak_rss_mib'), 1)} |")
    return lines


SECTIONS = [("instructions", instructions_md), ("c10k", c10k_md), ("large", large_md),
            ("replicas100", replicas_md), ("memory", memory_md), ("tls", tls_md)]


def suites_markdown(doc):
    parts = []
    for key, fn in SECTIONS:
        if key in doc["suites"]:
            parts += fn(doc, doc["suites"][key]) + [""]
    return "\n".join(parts).rstrip()


# ------------------------------------------------------------------ chart


def _val(r, value, repeats_value=None):
    if r is None:
        return None
    rv = repeats_value or value
    xs = [rv(x) for x in r.get("repeats", [])] or [value(r)]
    return (value(r), min(xs), max(xs))


def dimensions_svg(doc):
    su = doc["suites"]
    panels = []
    colors = {LENIENT: LENIENT_COLOR}
    present = set()
    if "instructions" in su:
        runs = {r["target"]: r for r in su["instructions"]["runs"]}
        keys = [t for t in ORDER if t in runs]
        present.update(keys)
        panels.append(Panel("instructions per request (callgrind, user space; lower is better)", ["/home"], keys,
                            lambda gi, k, runs=runs: _val(runs[k], lambda r: r["instructions_per_request"])))
    if "c10k" in su:
        runs = {r["target"]: r for r in su["c10k"]["runs"]}
        keys = [t for t in ORDER if t in runs]
        present.update(keys)
        n = su["c10k"]["setup"]["connections"]
        panels.append(Panel(f"{n:,} connections: successful responses / s (higher is better)", [f"{n:,} conns"],
                            keys, lambda gi, k, runs=runs: _val(runs[k], ok_rps)))
    if "large" in su:
        runs = {(r["mode"], r["target"]): r for r in su["large"]["runs"]}
        modes = [m for m in ("download", "upload") if any(k[0] == m for k in runs)]
        keys = [t for t in ORDER if any(k[1] == t for k in runs)]
        present.update(keys)
        panels.append(Panel("1 MiB bodies: MB/s (higher is better)", [f"1 MiB {m}" for m in modes], keys,
                            lambda gi, k, runs=runs: _val(runs.get((modes[gi], k)), lambda r: r["mb_per_s"])))
    if "replicas100" in su:
        runs = su["replicas100"]["runs"]
        n = su["replicas100"]["setup"]["replicas"]
        present.update(r["kind"] for r in runs)
        labels = [r["policy"] if r["kind"] == "ours" else f"HAProxy {r['policy']}" for r in runs]
        panels.append(Panel(f"{n} replicas: requests / s by policy (higher is better)", labels,
                            [r["target"] for r in runs],
                            lambda gi, k, runs=runs: _val(runs[gi], lambda r: r["rps"]) if runs[gi]["target"] == k else None))
    if "memory" in su:
        runs = {r["target"]: r for r in su["memory"]["runs"]}
        setup = su["memory"]["setup"]
        levels = [("idle", n) for n in setup["idle_levels"]]
        if any("kept" in x for r in runs.values() for x in r["rounds"]):
            levels += [("kept", n) for n in setup["idle_levels"]]
        levels += [("active", n) for n in setup["active_levels"]]
        keys = [t for t in ORDER if t in runs]
        present.update(keys)

        def mem(gi, k, runs=runs, levels=levels):
            key = f"{levels[gi][0]}_{levels[gi][1]}_kib_per_connection"
            r = runs[k]
            return (r["median"][key], r["min"][key], r["max"][key])
        panels.append(Panel("memory: KiB per connection, log scale (lower is better)",
                            [f"{s} {n:,}" for s, n in levels], keys, mem, fmt="{:g}", log=True))
    legend = [(t, name(t)) for t in ORDER if t in present]
    m = doc["machine"]
    return bar_chart(f"Beyond the headline: {m['nproc']} CPUs, {m['cpu_model']}", panels, legend, colors)
