"""What the Round 8 scripts share: their command line, and one warmed-up
proxy per variant and round in front of three replicas, the bench's
layout (the proxy on CPU 0, or CPUs 0-1 with 2 threads; wrk and the
replicas on CPU 1). CONNS (50) and THREADS (2) come from the environment."""
import glob
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "bench"))
from lbbench import procs, proxies, wrk  # noqa: E402

PERCENTILES = HERE / "percentiles.lua"


def load():
    """(connections, threads) to measure at."""
    return int(os.environ.get("CONNS", "50")), int(os.environ.get("THREADS", "2"))


def args(default_rounds):
    """(BIN_DIR, variants, rounds) from `script BIN_DIR "ours;haproxy" [ROUNDS]`."""
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else default_rounds
    return Path(sys.argv[1]), sys.argv[2].split(";"), rounds


def each_proxy(bins, variants, rounds, name, threads=None, cpus=None):
    """For each round and variant ("ours", "haproxy", "ours --flag ...",
    "ours@BIN_DIR" for another build's balancer; a "+..." suffix on the
    kind is the caller's, e.g. knobs.py's "+pin0/1", and ignored here):
    the proxy started and warmed up by 1 s of wrk, as (variant, kind,
    process, url, replica ports); stopped when the caller asks for the next.
    `threads` and `cpus` override THREADS and the bench's CPUs for it."""
    conns, default_threads = load()
    threads = threads or default_threads
    work = Path(f"/tmp/{name}-w")
    work.mkdir(exist_ok=True)
    backends, _ = proxies.start_replicas(bins, 3, "1")
    try:
        for _ in range(rounds):
            for v in variants:
                kind, *extra = v.split()
                kind, _, other = kind.split("+")[0].partition("@")
                proc, port = proxies.start(proxies.Target(kind, extra=extra), threads, backends,
                                           Path(other) if other else bins, work,
                                           cpus or ("0" if threads == 1 else "0-1"), connections=conns)
                url = f"http://127.0.0.1:{port}/home"
                try:
                    wrk.run(url, conns, 1, cpus="1")
                    yield v, kind, proc, url, backends
                finally:
                    procs.stop(proc)
    finally:
        procs.cleanup()


def wrk_percentiles(url, seconds=3):
    """wrk on CPU 1 for `seconds`, printing p50..p99.9 on a line of its own
    (starts with "PCT"); the caller reads its stdout."""
    conns, _ = load()
    return subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s",
                             str(PERCENTILES), url], stdout=subprocess.PIPE, text=True)


def cpu_ticks(pid):
    """(user, system) clock ticks over the process's threads."""
    user = system = 0
    for t in glob.glob(f"/proc/{pid}/task/*"):
        f = open(t + "/stat").read().rsplit(")", 1)[1].split()
        user, system = user + int(f[11]), system + int(f[12])
    return user, system


def measured(pid, url, settle, during):
    """A 3 s `wrk_percentiles` run with `during(pid)` called `settle` s in:
    (wrk's PCT line, requests, proxy user us/request, system us/request,
    what `during` returned)."""
    before = cpu_ticks(pid)
    p = wrk_percentiles(url)
    time.sleep(settle)
    seen = during(pid)
    out = p.communicate()[0]
    after = cpu_ticks(pid)
    line = next(x for x in out.splitlines() if x.startswith("PCT"))
    n = int(re.search(r"n=(\d+)", line).group(1))
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    user, system = ((after[i] - before[i]) * tick_us / n for i in (0, 1))
    return line, n, user, system, seen
