"""What the Round 8 scripts share: their command line, and one warmed-up
proxy per variant and round in front of three replicas, the bench's
layout (the proxy on CPU 0, or CPUs 0-1 with 2 threads; wrk and the
replicas on CPU 1). CONNS (50) and THREADS (2) come from the environment."""
import os
import subprocess
import sys
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
    """For each round and variant ("ours", "haproxy", "ours --flag ..."):
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
                proc, port = proxies.start(proxies.Target(kind, extra=extra), threads, backends, bins, work,
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
