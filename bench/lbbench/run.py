"""Throughput and latency of the balancer beside HAProxy and nginx, and the
dimensions users hit: instructions per request, 10,000 connections, 1 MiB
bodies, 100 replicas, memory per connection.

Headline: 3 identical replicas (the `backend` binary) on loopback; for each
combination of concurrency (--connections) and proxy worker threads
(--threads), the targets -- the replica itself (baseline), our balancer
(static orchestrator, round robin), HAProxy (roundrobin), nginx
(upstream round robin) and the byte relay (`relay`, the ceiling: bytes
copied unread, one upstream connection per client) -- get the same `wrk`
load at `/home` in alternating rounds (direct, ours, HAProxy, nginx,
relay, direct, ours, ...; each
run a fresh start, a warm-up, one measured run), so drift in the machine's
speed hits all alike. Each row is the round of median requests/s, its
latency figures each the median over the rounds; every round is kept,
and the table shows their spread. Recorded: requests/s, p50/p99/max
latency, errors, the proxy's CPU seconds and peak RSS, and the CPU the
rest of the machine used meanwhile.

Suites (--suites, all by default; `--suites headline` for a quick run):
  instructions  instructions per request: perf stat counters in every
                headline run if the machine has them, else callgrind over
                a fixed number of requests, 1 worker per proxy
  c10k          10,000 concurrent connections (RLIMIT_NOFILE raised to the
                hard limit; HAProxy maxconn, nginx worker_connections sized)
  large         1 MiB responses and 1 MiB uploads, MB/s, through a static
                nginx origin (the backend binary has no payload endpoint)
  replicas100   100 replicas (one static nginx on 100 ports): every policy
                of ours beside HAProxy roundrobin and leastconn
  memory        RSS at rest, at 500 and 10,000 idle (nothing sent),
                kept-alive (one GET each, then idle) and active
                connections, and KiB per connection
  tls           TLS termination and HTTP/2 (each proxy with the same
                certificate): TLS keep-alive req/s (wrk), new TLS handshakes
                per second (h2load --h1, Connection: close), h2 req/s
                (h2load, ALPN h2)

Writes `results.json` (raw) into --out and calls `bench/report` to render
`results.md`, `chart.svg` and `dimensions.svg` from it.

CPU placement on a 2-core machine (see README "Benchmarks"): the load side
(wrk and the replicas, one runtime thread each) is pinned to the last
core; the proxy gets core 0 alone with 1 worker, and cores 0-1 with 2 (its
second worker then shares the last core with the load side). The
baseline runs wrk and the replica on the last core only.

Every process started here is stopped on exit, whatever the exit path.

Usage: bench/run [--duration 3] [--headline-repeat 9] [--repeat 3] [--connections 50,500] [--threads 1,2]
                 [--targets direct,ours,haproxy,nginx,relay] [--out analysis/bench]
                 [--bin-dir DIR] [--no-build] [--no-install] [--suites LIST]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ANALYSIS, ROOT, cargo, counters, log, procs, proxies, suites, tls
from .machine import ensure_tools, machine
from .measure import Load, Setup, alternate, describe_http, median_of, one_run
from .proxies import Target

# Headline references, not proxies: no proxy at all, and the byte relay.
REFERENCES = ("direct", "relay")
SUITES = ["headline", "instructions", "c10k", "large", "replicas100", "memory", "tls"]
SUITE_NOTES = {
    "instructions": "no hardware counters here (perf stat: <not supported>), callgrind over {args.instr_requests} "
                    "responses per proxy instead",
    "c10k": "{args.c10k_connections} connections (RLIMIT_NOFILE {nofile})",
    "large": "1 MiB responses and uploads, {args.large_connections} connections",
    "replicas100": "{args.replicas} replicas, every policy",
    "memory": "RSS at {levels} idle and active connections",
    "tls": "TLS keep-alive, new handshakes and h2, {args.tls_connections} connections",
}


def placement(threads):
    """Load side (wrk + replicas) on the last core; the proxy on core 0, or
    on the first N cores with N workers (sharing the last one if N = ncpu)."""
    ncpu = os.cpu_count() or 1
    load_cpus = str(ncpu - 1) if ncpu > 1 else "0"
    proxy_cpus = {n: ("0" if min(n, ncpu) == 1 else f"0-{min(n, ncpu) - 1}") for n in sorted({1, *threads})}
    return load_cpus, proxy_cpus


def comparison(conns, threads, targets, args, setup):
    """The headline: every (connections, threads) pair, targets alternating
    over --headline-repeat rounds; `direct` only with the first thread count
    (the baseline has no proxy threads)."""
    results = []
    for c in conns:
        for n in threads:
            ts = [Target(t) for t in targets if not (t == "direct" and n != threads[0])]
            log(f"connections={c} threads={n}: {', '.join(t.name for t in ts)} x {args.headline_repeat} rounds")
            load = Load(c, args.duration, args.warmup)
            runs = alternate(ts, args.headline_repeat, lambda t: one_run(t, n, load, setup), describe_http)
            for name, rs in runs.items():
                r = median_of(rs)
                r.update(target=name, threads=n, connections=c, duration_s=args.duration)
                results.append(r)
    return results


def parser():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds of each measured wrk run")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternating rounds per point (every suite but the headline); the median is reported, "
                         "the spread shown")
    ap.add_argument("--headline-repeat", type=int, default=9,
                    help="alternating rounds per headline point (and per A/B point): its 3-second runs move by "
                         "up to 1.7x in req/s and 2.6x in p99 between rounds on this kind of machine, more than "
                         "the 10-20%% between proxies it is to tell apart, so the median needs many rounds")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of the unrecorded run before each")
    ap.add_argument("--connections", default="50,500")
    ap.add_argument("--threads", default="1,2", help="proxy worker threads / processes")
    ap.add_argument("--targets", default="direct,ours,haproxy,nginx,relay",
                    help="headline targets; direct (no proxy) and relay (a byte relay, one upstream connection "
                         "per client: the most any proxy can get through this machine) are references, left "
                         "out of the other suites")
    ap.add_argument("--baselines", default="haproxy-xff",
                    help="extra targets of the headline and the instruction count only: haproxy-xff is HAProxy "
                         "adding X-Forwarded-For alone, the lighter job than ours; '' for none")
    ap.add_argument("--out", default=str(ANALYSIS))
    ap.add_argument("--bin-dir", help="use backend and balancer from here (implies no build)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--update", action="store_true",
                    help="keep what OUT/results.json already holds and replace only the suites run now")
    ap.add_argument("--label", default="", help="free text stored in results.json (e.g. a commit)")
    ap.add_argument("--ab", metavar="DIR",
                    help="instead of the comparison: our balancer from DIR (before) against this build (after), "
                         "--repeat rounds interleaved, written to OUT/ab.json")
    ap.add_argument("--ab-also", default="", metavar="LIST",
                    help="with --ab: other targets (e.g. haproxy) measured in the same rounds, as a reference "
                         "for the drift between rounds")
    g = ap.add_argument_group("suites")
    g.add_argument("--suites", default="all",
                   help=f"comma-separated, or all: {','.join(SUITES)} (e.g. --suites headline for a quick run)")
    g.add_argument("--instr-requests", type=int, default=5000,
                   help="responses counted per proxy under callgrind (no hardware counters)")
    g.add_argument("--c10k-connections", type=int, default=10000)
    g.add_argument("--c10k-duration", type=int, default=8, help="seconds of each 10k-connection run")
    g.add_argument("--large-connections", type=int, default=10, help="connections for 1 MiB bodies")
    g.add_argument("--replicas", type=int, default=100, help="replicas of the many-replica suite")
    g.add_argument("--replicas-connections", type=int, default=50)
    g.add_argument("--policies", help="our policies for the many-replica suite (default: all, from balancer --help)")
    g.add_argument("--tls-connections", type=int, default=50, help="connections of the TLS and h2 runs")
    g.add_argument("--tls-handshakes", type=int, default=20000, help="new connections per handshake run")
    g.add_argument("--memory-levels", default="500,10000", help="idle, kept-alive and active connection counts")
    return ap


def updated(path, doc, chosen):
    """`doc` laid over the results already at `path`: the suites run now
    replace theirs, the rest (and the headline, unless it ran) are kept,
    with the date of each part recorded."""
    if not path.exists():
        return doc
    old = json.loads(path.read_text())
    merged = dict(old)
    merged.setdefault("suites", {})
    for key, value in doc.get("suites", {}).items():
        value["setup"]["date_utc"] = doc["date_utc"]
        merged["suites"][key] = value
    if "headline" in chosen:
        merged.update({k: doc[k] for k in ("machine", "label", "date_utc", "elapsed_s", "setup", "runs")})
    else:
        merged["setup"]["elapsed_s"] = {**old["setup"].get("elapsed_s", {}), **doc["setup"]["elapsed_s"]}
    return merged


def suite_list(text):
    chosen = SUITES if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        sys.exit(f"unknown suites {unknown}; choose from {SUITES}")
    return chosen


def main(argv=None):
    args = parser().parse_args(argv)
    chosen = suite_list(args.suites)
    procs.install_cleanup()
    nofile = procs.raise_nofile()
    extra_tools = {"valgrind": "valgrind"} if "instructions" in chosen else {}
    if "tls" in chosen:
        extra_tools.update(h2load="nghttp2-client", openssl="openssl", curl="curl")
    ensure_tools(not args.no_install, extra_tools)
    bins = cargo.build(args.no_build, args.bin_dir)
    conns = [int(c) for c in args.connections.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    targets = args.targets.split(",")
    proxies_only = [t for t in targets if t not in REFERENCES]
    baselines = [b for b in args.baselines.split(",") if b and b not in targets]
    # Each baseline runs right after the proxy it is a variant of.
    headline = [x for t in targets for x in [t, *(b for b in baselines if b.startswith(t + "-"))]]
    counted = [t for t in headline if t not in REFERENCES]
    load_cpus, proxy_cpus = placement(threads)
    perf = counters.perf_supported()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    host = machine()
    host["nofile_limit"] = nofile
    host["perf_counters"] = perf
    extra, elapsed = {}, {}
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
            setup = Setup(bins, Path(tmp), load_cpus, proxy_cpus, perf=perf,
                          before_bins=Path(args.ab).resolve() if args.ab else None)
            setup.backends, setup.backend_pids = proxies.start_replicas(bins, 3, load_cpus)
            if args.ab:
                also = [t for t in args.ab_also.split(",") if t]
                results = comparison(conns, threads, ["before", "ours", *also], args, setup)
            else:
                t0 = time.time()
                if "headline" in chosen:
                    results = comparison(conns, threads, headline, args, setup)
                    elapsed["headline"] = round(time.time() - t0, 1)
                levels = [int(x) for x in args.memory_levels.split(",")]
                plan = {
                    "instructions": lambda: suites.instructions(setup, counted, args.repeat, args.instr_requests),
                    "c10k": lambda: suites.c10k(setup, proxies_only, args.repeat, args.c10k_connections,
                                                args.c10k_duration),
                    # direct stays as the baseline of the 1 MiB bodies; the relay has no HTTP to compare
                    "large": lambda: suites.large(setup, [t for t in targets if t != "relay"], args.repeat,
                                                  args.large_connections, args.duration, args.warmup),
                    "replicas100": lambda: suites.replicas100(
                        setup, args.repeat, args.replicas, args.replicas_connections, args.duration, args.warmup,
                        our_policies=args.policies.split(",") if args.policies else None),
                    "memory": lambda: suites.memory(setup, proxies_only, args.repeat, levels, levels),
                    "tls": lambda: tls.suite(setup, proxies_only, args.repeat, args.tls_connections, args.duration,
                                             args.warmup, handshakes=args.tls_handshakes),
                }
                for key, fn in plan.items():
                    if key not in chosen:
                        continue
                    if key == "instructions" and perf:
                        continue  # counted by perf stat in every headline run
                    log(f"{key}: {SUITE_NOTES[key].format(args=args, nofile=nofile, levels=levels)}")
                    t0 = time.time()
                    extra[key] = fn()
                    extra[key]["setup"]["elapsed_s"] = elapsed[key] = round(time.time() - t0, 1)
    finally:
        procs.cleanup()
    doc = {
        "machine": host,
        "label": args.label,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "setup": {
            "replicas": 3,
            "path": "/home",
            "client": f"wrk -t1 -c<conns> -d{args.duration}s --latency",
            "repeat": args.headline_repeat,
            "suite_repeat": args.repeat,
            "rounds": "alternating",
            "warmup_s": args.warmup,
            "load_cpus": load_cpus,
            "proxy_cpus": {str(k): v for k, v in proxy_cpus.items() if k in threads},
            "suites": chosen if not args.ab else [],
            "elapsed_s": elapsed,
        },
        "runs": results,
    }
    if extra:
        doc["suites"] = extra
    name = "ab.json" if args.ab else "results.json"
    if args.update and not args.ab:
        doc = updated(out / name, doc, chosen)
    if args.ab:
        doc["setup"]["before_bin_dir"] = str(Path(args.ab).resolve())
    (out / name).write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {out / name}")
    subprocess.run([sys.executable, str(ROOT / "bench" / "report"), str(out)], check=True)
