"""Renders a `bench/run` output directory: results.json -> results.md + chart.svg.

Everything written here is computed from results.json; nothing is typed by
hand. If DIR/ab.json exists (`bench/run --ab`: our balancer from an earlier
build against this one), results.md also gets a before/after table.

Usage: bench/report [DIR] [--readme]   (default analysis/bench)
  --readme  also replace the generated block of README's "Benchmarks"
            section (between the bench markers) with results.md, pick.md
            and profile.md, so the README shows exactly the measured numbers
"""

import json
import re
import sys
from pathlib import Path

from . import ANALYSIS, ROOT
from .chart import LABEL, Panel, bar_chart
from .measure import median_latency
from .report_suites import dimensions_svg, suites_markdown

ORDER = ["direct", "ours", "haproxy", "haproxy-xff", "nginx", "relay"]


def load(path):
    """results.json (or ab.json), each row's latency the median over its
    rounds (results before 2026-11-27 15:30 UTC stored the round's own)."""
    doc = json.loads(Path(path).read_text())

    def walk(x):
        if isinstance(x, dict):
            if "repeats" in x and "latency_ms" in x:
                median_latency(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return doc


def groups(doc):
    """(connections, threads) pairs in run order."""
    seen = []
    for r in doc["runs"]:
        if r["target"] != "direct" and (r["connections"], r["threads"]) not in seen:
            seen.append((r["connections"], r["threads"]))
    return seen


def find(doc, target, connections, threads=None):
    for r in doc["runs"]:
        if r["target"] == target and r["connections"] == connections and (target == "direct" or r["threads"] == threads):
            return r
    return None


def added_p99(doc, r):
    base = find(doc, "direct", r["connections"])
    return None if base is None else r["latency_ms"]["p99"] - base["latency_ms"]["p99"]


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b <= 0 or a < 0:
        return "n/a"
    return f"{a / b:.2f}"


def spread(r, value):
    """`min–max` of `value` over a row's rounds (its `repeats`), or – with one."""
    xs = [value(x) for x in r.get("repeats", [])]
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return "–"
    digits = 0 if max(xs) >= 1000 else 1 if max(xs) >= 100 else 2
    return f"{min(xs):.{digits}f}–{max(xs):.{digits}f}"


def table(doc):
    perf = any(r.get("instructions_per_request") for r in doc["runs"])
    head = ("| conns | threads | target | req/s | req/s min–max | p50 ms | p99 ms | p99 min–max | max ms | added p99 ms "
            "| errors | proxy CPU s | CPU µs/req |" + (" instructions/req | cycles/req |" if perf else "")
            + " proxy peak RSS MiB | other CPU s |")
    lines = [head, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if perf else "")
             + "---:|---:|"]
    for c, n in groups(doc):
        for t in ORDER:
            r = find(doc, t, c, n)
            if r is None:
                continue
            lat = r["latency_ms"]
            cpu = r.get("proxy_cpu_s")
            per_req = None if cpu is None or not r["requests"] else cpu / r["requests"] * 1e6
            add = None if t == "direct" else added_p99(doc, r)
            counters = (f" {fmt(r.get('instructions_per_request'), 0)} | {fmt(r.get('cycles_per_request'), 0)} |"
                        if perf else "")
            lines.append(
                f"| {c} | {n if t != 'direct' else '–'} | {LABEL[t]} | {r['rps']:.0f} | {spread(r, lambda x: x['rps'])} | "
                f"{fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} | {spread(r, lambda x: x['latency_ms'].get('p99'))} | "
                f"{fmt(lat['max'])} | {fmt(add)} | {r['errors']} | {fmt(cpu)} | "
                f"{fmt(per_req, 1)} |{counters} {fmt(r.get('proxy_peak_rss_mib'), 1)} | {fmt(r.get('other_cpu_s'))} |"
            )
    return "\n".join(lines)


def rounds_ahead(ours, other):
    """How many of the alternating rounds ours beat `other` in, each round
    against the same round's run (drift between rounds hits both alike):
    "req/s k of N, p99 m of N", or "n/a" without the rounds."""
    a, b = (ours or {}).get("repeats") or [], (other or {}).get("repeats") or []
    if not a or len(a) != len(b):
        return "n/a"
    rps = sum(1 for x, y in zip(a, b) if x["rps"] >= y["rps"])
    p99 = sum(1 for x, y in zip(a, b) if x["latency_ms"]["p99"] <= y["latency_ms"]["p99"])
    return f"req/s {rps} of {len(a)}, p99 {p99} of {len(a)}"


def ratios(doc):
    lines = [
        "| conns | threads | req/s ours/HAProxy | req/s ours/nginx | req/s ours/HAProxy XFF only "
        "| p99 ours/HAProxy | added p99 ours/HAProxy | added p99 ours/nginx | rounds ours ahead of HAProxy "
        "| req/s ours/ceiling | req/s HAProxy/ceiling |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c, n in groups(doc):
        ours, ha, ng, xff, top = (find(doc, t, c, n) for t in ("ours", "haproxy", "nginx", "haproxy-xff", "relay"))
        if ours is None:
            continue
        rps = lambda other: ratio(ours["rps"], other["rps"]) if other else "n/a"  # noqa: E731
        p99 = lambda other: ratio(added_p99(doc, ours), added_p99(doc, other)) if other else "n/a"  # noqa: E731
        raw = ratio(ours["latency_ms"].get("p99"), ha["latency_ms"].get("p99")) if ha else "n/a"
        ceiling = lambda r: ratio(r["rps"], top["rps"]) if r and top else "n/a"  # noqa: E731
        lines.append(f"| {c} | {n} | {rps(ha)} | {rps(ng)} | {rps(xff)} | {raw} | {p99(ha)} | {p99(ng)} | "
                     f"{rounds_ahead(ours, ha)} | {ceiling(ours)} | {ceiling(ha)} |")
    return "\n".join(lines)


def before_after(ab):
    """Our balancer before and after the hot-path changes, from ab.json:
    means over the interleaved rounds, and how many paired rounds `after` won."""
    lines = [
        "| conns | threads | req/s before | req/s after | change | rounds after won | req/s per round before "
        "| req/s per round after | p99 ms before | p99 ms after | CPU µs/req before | CPU µs/req after |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for c, n in groups(ab):
        a, b = find(ab, "ours", c, n), find(ab, "before", c, n)
        if a is None or b is None:
            continue
        ra, rb = a["repeats"], b["repeats"]
        rps_a, rps_b = mean([x["rps"] for x in ra]), mean([x["rps"] for x in rb])
        p99_a, p99_b = mean([x["latency_ms"]["p99"] for x in ra]), mean([x["latency_ms"]["p99"] for x in rb])
        per = lambda rs: sum(x["proxy_cpu_s"] for x in rs) / sum(x["requests"] for x in rs) * 1e6  # noqa: E731
        won = sum(1 for x, y in zip(ra, rb) if x["rps"] > y["rps"])
        rounds = lambda rs: ", ".join(f"{x['rps']:.0f}" for x in rs)  # noqa: E731
        lines.append(
            f"| {c} | {n} | {rps_b:.0f} | {rps_a:.0f} | {(rps_a / rps_b - 1) * 100:+.1f}% | {won} of {len(ra)} | "
            f"{rounds(rb)} | {rounds(ra)} | {p99_b:.2f} | {p99_a:.2f} | {per(rb):.1f} | {per(ra):.1f} |"
        )
    return "\n".join(lines)


def short_version(banner, name):
    """`name X.Y.Z` out of a tool's whole version banner (older results.json)."""
    m = re.search(r"(\d+\.\d+[\w.+~-]*)", banner or "")
    return f"{name} {m.group(1)}" if m else f"{name} ?"


def markdown(doc, ab):
    m = doc["machine"]
    s = doc["setup"]
    proxy_cpus = ", ".join(f"{k} thread(s): CPUs {v}" for k, v in s["proxy_cpus"].items())
    parts = [
        "# Proxy benchmark",
        "",
        f"Generated by `bench/run` on {doc['date_utc']} ({doc['elapsed_s']} s){' — ' + doc['label'] if doc.get('label') else ''}. "
        "Do not edit: rerun `bench/run` (or `bench/report` to re-render).",
        "",
        f"Machine: `nproc` = {m['nproc']}, CPU: {m['cpu_model']}, kernel {m['kernel']}; "
        f"{short_version(m.get('haproxy'), 'HAProxy')}, {short_version(m.get('nginx'), 'nginx')}, "
        f"{short_version(m.get('wrk'), 'wrk')}.",
        "",
        f"Load: {s['replicas']} replicas, `GET {s['path']}`, `{s['client']}` after a {s['warmup_s']} s warm-up; " +
        (f"targets alternate over {s.get('repeat', 1)} rounds (each run: a fresh start, the warm-up, one measured "
         f"run); each row is the median round by req/s, with its latency figures each the median over the "
         f"rounds (not that round's own), the spread (min–max over the rounds) beside them, every round "
         f"kept in results.json. " if s.get("rounds") == "alternating" else
         f"each row is the median (by req/s) of {s.get('repeat', 1)} runs, all kept in results.json. ") +
        f"wrk and the replicas run on CPU {s['load_cpus']}; the proxy on {proxy_cpus}. "
        "*added p99* = the proxy's p99 minus the direct p99 at the same connection count. "
        "*errors* = non-2xx responses + socket errors. CPU = utime + stime of the proxy's processes during the "
        "measured run; RSS = sum of VmHWM over them (peak). *other CPU s* = CPU the rest of the machine used during the "
        "run (all busy time in /proc/stat minus proxy, wrk and replicas): work by other programs that skews the row.",
        "",
        "Every proxy does the same job: round robin, upstream keep-alive, no logging, and the forwarding fields ours "
        "adds to each request (`X-Request-ID`, kept from the client or new, and returned in the reply; "
        "`X-Forwarded-For`, `-Proto`, `-Host`; `Forwarded`), configured in HAProxy and nginx "
        "(`bench/lbbench/proxies.py`). *HAProxy, XFF only* is HAProxy adding `X-Forwarded-For` alone "
        "(`option forwardfor`), the lighter job runs before 2026-11-27 compared against.",
        "",
        table(doc),
        "",
        "## Ratios",
        "",
        ratios(doc),
        "",
        "*Rounds ours ahead* pairs each of our rounds with HAProxy's run of the same round. "
        "*Ceiling* is the byte relay (`relay`, loadgen's): one upstream connection per client and the bytes "
        "copied both ways unread, the same system calls a request as a proxy and almost no user-space work. "
        "What it reaches is what this machine lets any proxy reach in the same layout; a proxy's share of it "
        "says how much its own work costs. "
        "Above 1 is better for ours in the req/s columns; below 1 is better in the p99 columns; n/a where "
        "the other proxy's added p99 is not positive (at 500 connections the baseline itself queues, so a proxy "
        "that spreads the load can end with a lower p99 than the direct run).",
    ]
    if ab:
        parts += [
            "",
            "## Our balancer before / after the hot-path changes",
            "",
            f"From `ab.json` ({ab['date_utc']}{', ' + ab['label'] if ab.get('label') else ''}): "
            f"`bench/run --ab BEFORE_BIN_DIR`, the two builds run alternately, {ab['setup'].get('repeat', 1)} "
            f"rounds of {ab['runs'][0]['duration_s'] if ab['runs'] else '?'} s each; req/s and p99 are means over "
            "the rounds, CPU µs/req is total proxy CPU over total requests; same machine, pinning and load as above.",
            "",
            before_after(ab),
        ]
    parts += ["", "![requests per second and p99](chart.svg)"]
    if doc.get("suites"):
        parts += ["", suites_markdown(doc), "", "![the other dimensions](dimensions.svg)"]
    parts.append("")
    return "\n".join(parts)


def svg(doc):
    """Two grouped bar panels, req/s and p99 ms, one group per (conns, threads)."""
    gs = groups(doc)
    targets = [t for t in ORDER if any(r["target"] == t for r in doc["runs"])]
    labels = [f"{c} conns, {n} thr" for c, n in gs]

    def value(fn):
        def v(gi, t):
            r = find(doc, t, *gs[gi])
            return None if r is None else fn(r)
        return v

    panels = [
        Panel("requests / s (higher is better)", labels, targets, value(lambda r: r["rps"]), "{:.0f}"),
        Panel("p99 latency, ms, log scale (lower is better)", labels, targets,
              value(lambda r: r["latency_ms"]["p99"]), "{:g}", log=True),
    ]
    m = doc["machine"]
    return bar_chart(f"Proxy benchmark: {m['nproc']} CPUs, {m['cpu_model']}", panels,
                     [(t, LABEL[t]) for t in targets])


BEGIN = "<!-- bench:begin: generated by `bench/report --readme` from analysis/bench; do not edit -->"
END = "<!-- bench:end -->"


def readme_block(out):
    """The generated part of README's Benchmarks section: results.md, pick.md
    and profile.md with their titles shifted under README's headings."""
    parts = []
    for name in ("results.md", "pick.md", "profile.md"):
        path = out / name
        if not path.exists():
            continue
        text = path.read_text().strip()
        text = "\n".join(line for line in text.splitlines() if not line.startswith("!["))
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines[0] = "#### " + lines[0][2:]
        lines = [("#### " + l[3:]) if l.startswith("## ") else l for l in lines]
        parts.append("\n".join(lines))
    parts.append("![requests per second and p99](analysis/bench/chart.svg)")
    if (out / "dimensions.svg").exists():
        parts.append("![the other dimensions](analysis/bench/dimensions.svg)")
    return "\n\n".join(parts)


def update_readme(out):
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print("[bench] README.md has no bench markers; nothing replaced", file=sys.stderr)
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n\n" + readme_block(out) + "\n\n" + END + tail)
    print("[bench] updated the generated block of README.md", file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = [a for a in argv if a != "--readme"]
    out = Path(args[0]) if args else ANALYSIS
    ab = load(out / "ab.json") if (out / "ab.json").exists() else None
    if not (out / "results.json").exists():
        print(f"[bench] no {out / 'results.json'} yet: run bench/run", file=sys.stderr)
        return
    doc = load(out / "results.json")
    (out / "results.md").write_text(markdown(doc, ab))
    (out / "chart.svg").write_text(svg(doc))
    written = ["results.md", "chart.svg"]
    if doc.get("suites"):
        (out / "dimensions.svg").write_text(dimensions_svg(doc))
        written.append("dimensions.svg")
    print(f"[bench] wrote {', '.join(str(out / w) for w in written)}", file=sys.stderr)
    if "--readme" in argv:
        update_readme(out)
