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
import time

import common


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
    bins, variants, rounds = common.args(3)
    for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "shape"):
        before = cpu_ticks(proc.pid)
        p = common.wrk_percentiles(url)
        time.sleep(0.2)
        where = placement(proc.pid, 2.6)
        out = p.communicate()[0]
        after = cpu_ticks(proc.pid)
        line = next(x for x in out.splitlines() if x.startswith("PCT"))
        n = int(re.search(r"n=(\d+)", line).group(1))
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        cpu = (f"user {(after[0] - before[0]) * tick_us / n:.2f} us/req, "
               f"system {(after[1] - before[1]) * tick_us / n:.2f} us/req")
        print(f"{v:10s} {line[4:]}\n{'':10s} runnable on CPU 1: {where}; {cpu}", flush=True)


if __name__ == "__main__":
    main()
