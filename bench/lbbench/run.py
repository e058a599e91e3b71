"""Throughput and latency of the balancer beside HAProxy and nginx.

Starts 3 identical replicas (the `backend` binary) on loopback, then for
each target in turn -- the replica itself (baseline), our balancer (static
orchestrator, round robin), HAProxy (roundrobin) and nginx (upstream
round robin) -- drives the same `wrk` load at `/home` and records requests/s,
p50/p99/max latency, errors, the proxy's CPU seconds and its peak RSS.
Every combination of concurrency (--connections) and proxy worker threads
(--threads) is measured. Writes `results.json` (raw) into --out and calls
`bench/report` to render `results.md` and `chart.svg` from it.

CPU placement on a 2-core machine (see README "Benchmarks"): the load side
(wrk and the 3 replicas, one runtime thread each) is pinned to the last
core; the proxy gets core 0 alone with 1 worker, and cores 0-1 with 2 (its
second worker then shares the last core with the load side). The
baseline runs wrk and the replica on the last core only.

Every process started here is stopped on exit, whatever the exit path.

Usage: bench/run [--duration 3] [--repeat 3] [--connections 50,500] [--threads 1,2]
                 [--targets direct,ours,haproxy,nginx] [--out analysis/bench]
                 [--bin-dir DIR] [--no-build] [--no-install]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ANALYSIS, ROOT, cargo, log, procs, proxies, wrk
from .machine import ensure_tools, machine


class Context:
    """What every measurement needs: binaries, replicas, CPU placement."""

    def __init__(self, bins, workdir, load_cpus, proxy_cpus, before_bins=None):
        self.bins = bins
        self.before_bins = before_bins
        self.workdir = workdir
        self.load_cpus = load_cpus
        self.proxy_cpus = proxy_cpus  # threads -> taskset list
        self.backends = []  # replica ports
        self.backend_pids = []

    def start_replicas(self, n=3):
        self.backends, self.backend_pids = proxies.start_replicas(self.bins, n, self.load_cpus)
        return self.backends


def placement(threads):
    """Load side (wrk + replicas) on the last core; the proxy on core 0, or
    on the first N cores with N workers (sharing the last one if N = ncpu)."""
    ncpu = os.cpu_count() or 1
    load_cpus = str(ncpu - 1) if ncpu > 1 else "0"
    proxy_cpus = {n: ("0" if min(n, ncpu) == 1 else f"0-{min(n, ncpu) - 1}") for n in threads}
    return load_cpus, proxy_cpus


def strip(r, drop=("raw",)):
    return {k: v for k, v in r.items() if k not in drop}


def median_run(runs, key=lambda r: r["rps"]):
    return dict(sorted(runs, key=key)[len(runs) // 2])


def measure(target, threads, connections, args, ctx):
    """A warm-up, then `--repeat` measured wrk runs against one start of
    `target`; the run with the median req/s is the result, all are kept."""
    if target == "direct":
        port, proc = ctx.backends[0], None
    else:
        proc, port = proxies.start(target, threads, ctx.backends, ctx.bins, ctx.workdir, ctx.proxy_cpus[threads],
                                   connections=connections, before_bins=ctx.before_bins)
    url = f"http://127.0.0.1:{port}/home"
    runs, pids = [], []
    try:
        wrk.run(url, connections, args.warmup, ctx.load_cpus)
        for _ in range(args.repeat):
            pids = procs.process_tree(proc.pid) if proc else []
            cpu0, busy0 = procs.cpu_seconds(pids), procs.busy_seconds()
            wrk0, be0 = procs.children_cpu_seconds(), procs.cpu_seconds(ctx.backend_pids)
            r = wrk.run(url, connections, args.duration, ctx.load_cpus)
            pids = procs.process_tree(proc.pid) if proc else []
            proxy_cpu = procs.cpu_seconds(pids) - cpu0
            r["proxy_cpu_s"] = round(proxy_cpu, 2) if proc else None
            r["wrk_cpu_s"] = round(procs.children_cpu_seconds() - wrk0, 2)
            r["backends_cpu_s"] = round(procs.cpu_seconds(ctx.backend_pids) - be0, 2)
            # CPU used by anything else on the machine meanwhile: other
            # people's work skews a run, so it is measured, not guessed.
            r["other_cpu_s"] = round(procs.busy_seconds() - busy0 - proxy_cpu - r["wrk_cpu_s"] - r["backends_cpu_s"], 2)
            runs.append(r)
        rss = round(procs.peak_rss_kib(pids) / 1024, 1) if proc else None
    finally:
        if proc:
            procs.stop(proc)
    result = median_run(runs)
    result.update(
        target=target,
        threads=threads,
        connections=connections,
        duration_s=args.duration,
        proxy_peak_rss_mib=rss,
        proxy_processes=len(pids),
        repeats=[strip(r) for r in runs],
    )
    return result


def ab_rounds(conns, threads, args, ctx):
    """`before` and `ours` alternately, one run each per round, so drift in
    the machine's speed hits both alike; the median run of each is kept."""
    results = []
    one = argparse.Namespace(**{**vars(args), "repeat": 1})
    for c in conns:
        for n in threads:
            runs = {"before": [], "ours": []}
            for _ in range(args.repeat):
                for t in runs:
                    r = measure(t, n, c, one, ctx)
                    log(f"{t:7} threads={n} connections={c}: {r['rps']:.0f} req/s  p99 {r['latency_ms']['p99']:.2f} ms")
                    runs[t].append(r)
            for t, rs in runs.items():
                best = median_run(rs)
                best["repeats"] = [strip(r, ("raw", "repeats")) for r in rs]
                results.append(best)
    return results


def parser():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds of each measured wrk run")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per target; the median is reported")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of the unrecorded run before each")
    ap.add_argument("--connections", default="50,500")
    ap.add_argument("--threads", default="1,2", help="proxy worker threads / processes")
    ap.add_argument("--targets", default="direct,ours,haproxy,nginx")
    ap.add_argument("--out", default=str(ANALYSIS))
    ap.add_argument("--bin-dir", help="use backend and balancer from here (implies no build)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--label", default="", help="free text stored in results.json (e.g. a commit)")
    ap.add_argument("--ab", metavar="DIR",
                    help="instead of the comparison: our balancer from DIR (before) against this build (after), "
                         "--repeat rounds interleaved, written to OUT/ab.json")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    procs.install_cleanup()
    procs.raise_nofile()
    ensure_tools(not args.no_install)
    bins = cargo.build(args.no_build, args.bin_dir)
    conns = [int(c) for c in args.connections.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    targets = args.targets.split(",")
    load_cpus, proxy_cpus = placement(threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    host = machine()
    try:
        with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
            ctx = Context(bins, Path(tmp), load_cpus, proxy_cpus, Path(args.ab).resolve() if args.ab else None)
            ctx.start_replicas(3)
            results = []
            if args.ab:
                results = ab_rounds(conns, threads, args, ctx)
            for c in ([] if args.ab else conns):
                for n in threads:
                    for t in targets:
                        if t == "direct" and n != threads[0]:
                            continue  # the baseline has no proxy threads
                        log(f"{t:8} threads={n} connections={c}")
                        r = measure(t, n, c, args, ctx)
                        log(f"  {r['rps']:.0f} req/s  p99 {r['latency_ms']['p99']:.2f} ms  errors {r['errors']}"
                            f"  cpu {r['proxy_cpu_s']}s  rss {r['proxy_peak_rss_mib']} MiB")
                        results.append(r)
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
            "repeat": args.repeat,
            "warmup_s": args.warmup,
            "load_cpus": load_cpus,
            "proxy_cpus": {str(k): v for k, v in proxy_cpus.items()},
        },
        "runs": results,
    }
    name = "ab.json" if args.ab else "results.json"
    if args.ab:
        doc["setup"]["before_bin_dir"] = str(Path(args.ab).resolve())
    (out / name).write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {out / name}")
    subprocess.run([sys.executable, str(ROOT / "bench" / "report"), str(out)], check=True)
