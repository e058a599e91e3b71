"""Round 8 (perf notes): the shape of the latency distribution at CONNS (50)
connections and THREADS (2) threads, alternating rounds: wrk's percentiles
p50..p99.9 (a wrk script prints them), where each proxy thread was found
runnable (CPU 1 samples / all samples taken every 3 ms while it was
runnable), and user / system CPU time per request.

Usage: python3 shape.py BIN_DIR "ours;haproxy" [ROUNDS]
"""
import collections
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

SCRIPT = HERE / "percentiles.lua"


def placement(pid, seconds):
    """Per thread: (samples on CPU 1, samples) of the runnable ones."""
    on1, seen = collections.Counter(), collections.Counter()
    end = time.time() + seconds
    while time.time() < end:
        for t in glob.glob(f"/proc/{pid}/task/*"):
            try:
                name = open(t + "/comm").read().strip()
                f = open(t + "/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if f[0] == "R":
                key = f"{name}/{t.rsplit('/', 1)[1]}"
                seen[key] += 1
                on1[key] += f[36] == "1"
        time.sleep(0.003)
    return " ".join(f"{k}:{on1[k]}/{seen[k]}" for k in sorted(seen) if seen[k] > 20)


def cpu_ticks(pid):
    user = system = 0
    for t in glob.glob(f"/proc/{pid}/task/*"):
        f = open(t + "/stat").read().rsplit(")", 1)[1].split()
        user, system = user + int(f[11]), system + int(f[12])
    return user, system


def main():
    bins, variants = Path(sys.argv[1]), sys.argv[2].split(";")
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    conns, threads = int(os.environ.get("CONNS", "50")), int(os.environ.get("THREADS", "2"))
    work = Path("/tmp/shape-w")
    work.mkdir(exist_ok=True)
    backends, _ = proxies.start_replicas(bins, 3, "1")
    try:
        for _ in range(rounds):
            for v in variants:
                kind, *extra = v.split()
                proc, port = proxies.start(proxies.Target(kind, extra=extra), threads, backends, bins, work,
                                           "0" if threads == 1 else "0-1", connections=conns)
                url = f"http://127.0.0.1:{port}/home"
                wrk.run(url, conns, 1, cpus="1")
                before = cpu_ticks(proc.pid)
                p = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", "-d3s", "-s", str(SCRIPT), url],
                                     stdout=subprocess.PIPE, text=True)
                time.sleep(0.2)
                where = placement(proc.pid, 2.6)
                out = p.communicate()[0]
                after = cpu_ticks(proc.pid)
                procs.stop(proc)
                line = next(x for x in out.splitlines() if x.startswith("PCT"))
                n = int(re.search(r"n=(\d+)", line).group(1))
                tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
                cpu = (f"user {(after[0] - before[0]) * tick_us / n:.2f} us/req, "
                       f"system {(after[1] - before[1]) * tick_us / n:.2f} us/req")
                print(f"{v:10s} {line[4:]}\n{'':10s} runnable on CPU 1: {where}; {cpu}", flush=True)
    finally:
        procs.cleanup()


if __name__ == "__main__":
    main()
