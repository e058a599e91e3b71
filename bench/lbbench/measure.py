"""One measured run of one target, and alternating rounds of several.

A run: the target is started fresh (or, for `direct`, the first replica is
used as it is), warmed up, then one wrk run is measured: wrk's figures,
the proxy's CPU seconds, its peak RSS (sampled while wrk runs, and
VmHWM), and the CPU the rest of the machine used meanwhile. Rounds
alternate targets (A, B, C, A, B, C, ...) so drift in the machine's speed
hits all alike; the median run of each target is its result, with every
run kept."""

import re
import time
from dataclasses import dataclass, field

from . import counters, log, procs, proxies, wrk
from .proxies import Target


@dataclass
class Load:
    """What the client does in one run."""

    connections: int
    duration: int
    warmup: int = 1
    path: str = "/home"
    wrk_threads: int = 1
    script: object = None  # a wrk Lua script (uploads)
    timeout_s: int = 0  # wrk's per-request timeout (0: wrk's 2 s)


@dataclass
class Setup:
    """Where a run happens: binaries, replica ports, CPU placement."""

    bins: object
    workdir: object
    load_cpus: str
    proxy_cpus: dict  # threads -> taskset CPU list
    backends: list = field(default_factory=list)
    backend_pids: list = field(default_factory=list)
    before_bins: object = None
    perf: bool = False  # count instructions and cycles with perf stat


def one_run(target, threads, load, setup):
    """Starts `target`, warms it up, measures one wrk run, stops it."""
    target = target if isinstance(target, Target) else Target(target)
    proc = None
    if target.kind == "direct":
        port = setup.backends[0]
    else:
        proc, port = proxies.start(target, threads, setup.backends, setup.bins, setup.workdir,
                                   setup.proxy_cpus[threads], connections=load.connections,
                                   before_bins=setup.before_bins)
    url = f"http://127.0.0.1:{port}{load.path}"
    nofile = procs.NOFILE if load.connections > 1000 else None
    try:
        if load.warmup:
            wrk.run(url, load.connections, load.warmup, setup.load_cpus, load.wrk_threads, load.script,
                    load.timeout_s, nofile)
        pids = procs.process_tree(proc.pid) if proc else []
        cpu0, busy0 = procs.cpu_seconds(pids), procs.busy_seconds()
        wrk0, be0 = procs.children_cpu_seconds(), procs.cpu_seconds(setup.backend_pids)
        perf = counters.PerfStat(pids, setup.workdir) if (setup.perf and pids) else None
        if perf:
            perf.__enter__()
        w = wrk.spawn(url, load.connections, load.duration, setup.load_cpus, load.wrk_threads, load.script, nofile,
                      load.timeout_s)
        peak = 0
        while w.poll() is None:
            if pids:
                peak = max(peak, procs.rss_kib(pids))
            time.sleep(0.1)
        if perf:
            perf.__exit__(None, None, None)
        r = wrk.collect(w, 30)
        # successful responses per second (non-2xx/3xx answers excluded)
        r["ok_rps"] = round(r["rps"] * (r["requests"] - r["non_2xx"]) / r["requests"], 2) if r["requests"] else 0.0
        wrk_cpu = procs.children_cpu_seconds() - wrk0
        pids = procs.process_tree(proc.pid) if proc else []
        proxy_cpu = procs.cpu_seconds(pids) - cpu0
        r["proxy_cpu_s"] = round(proxy_cpu, 2) if proc else None
        r["wrk_cpu_s"] = round(wrk_cpu, 2)
        r["backends_cpu_s"] = round(procs.cpu_seconds(setup.backend_pids) - be0, 2)
        # CPU used by anything else on the machine meanwhile: other
        # people's work skews a run, so it is measured, not guessed.
        r["other_cpu_s"] = round(procs.busy_seconds() - busy0 - proxy_cpu - wrk_cpu - r["backends_cpu_s"], 2)
        r["proxy_peak_rss_mib"] = round(max(peak, procs.peak_rss_kib(pids)) / 1024, 1) if proc else None
        r["proxy_rss_under_load_mib"] = round(peak / 1024, 1) if proc else None
        r["proxy_processes"] = len(pids)
        if perf:
            for event in counters.EVENTS:
                n = perf.counts.get(event)
                r[event] = n
                r[f"{event}_per_request"] = round(n / r["requests"]) if n and r["requests"] else None
        if proc and r["errors"]:
            # What the proxy said about its errors (ANSI colours dropped).
            r["proxy_log_tail"] = re.sub(r"\x1b\[[0-9;]*m", "", procs.stderr_of(proc, 4000))[-600:]
    finally:
        if proc:
            procs.stop(proc)
    return r


def alternate(targets, rounds, run, describe=None):
    """`run(target)` for each target in turn, `rounds` times over:
    {target name: [result per round]}."""
    results = {t.name: [] for t in targets}
    for i in range(rounds):
        for t in targets:
            r = run(t)
            results[t.name].append(r)
            if describe:
                log(f"round {i + 1}/{rounds} {t.name:28} {describe(r)}")
    return results


def strip(r, drop=("raw", "repeats")):
    return {k: v for k, v in r.items() if k not in drop}


def median_of(runs, key=lambda r: r["rps"]):
    """The run with the median `key` (the upper one of an even count), every
    run without wrk's raw text as `repeats`, and its latency percentiles
    each the median over the rounds (`median_latency`)."""
    best = dict(sorted(runs, key=key)[len(runs) // 2])
    best["repeats"] = [strip(r) for r in runs]
    return median_latency(best)


def median_latency(r):
    """Sets each latency percentile of a row (p50, p99, avg...; not max) to
    its median over the row's rounds, keeping the median-`key` round's own
    as `latency_ms_round`. A round's p99 is as noisy as the round: taken
    from the round of median requests/s it was one draw, not a median.
    Idempotent, so that `bench/report` applies it to older results too."""
    rounds = [x.get("latency_ms") or {} for x in r.get("repeats", [])]
    if len(rounds) < 2 or not r.get("latency_ms"):
        return r
    own = r.get("latency_ms_round", r["latency_ms"])
    merged = dict(own)
    for k in own:
        xs = sorted(x[k] for x in rounds if x.get(k) is not None)
        if k != "max" and len(xs) == len(rounds):
            merged[k] = xs[len(xs) // 2]
    r["latency_ms_round"], r["latency_ms"] = own, merged
    return r


def describe_http(r):
    p99 = r.get("latency_ms", {}).get("p99")
    text = f"{r['rps']:.0f} req/s  p99 {p99 if p99 is None else round(p99, 2)} ms  errors {r['errors']}"
    if r.get("proxy_cpu_s") is not None:
        text += f"  cpu {r['proxy_cpu_s']}s  rss {r.get('proxy_peak_rss_mib')} MiB"
    return text
