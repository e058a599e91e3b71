"""Round 8 (perf notes): how each proxy's threads take turns on the CPU at
CONNS (50) connections and THREADS (2) threads. `perf sched record` for
1.5 s inside a 3 s wrk run, then `perf sched timehist --state`: for the
proxy's threads, the runs that ended with the thread asleep (S) and those
that ended preempted (R), their lengths, and the delay before each run;
for wrk and the replicas (CPU 1) the same delays.

Usage: python3 runs.py BIN_DIR "ours;haproxy"
"""
import collections
import re
import subprocess
import time

import common
from lbbench import wrk

PROXY_THREADS = ("lb-worker", "haproxy")


def pct(xs, q):
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def summary(timehist):
    runs = collections.defaultdict(lambda: collections.defaultdict(list))
    delays = collections.defaultdict(list)
    for line in timehist.splitlines():
        f = line.split()
        if len(f) < 7 or not re.match(r"\d+\.\d+$", f[0]):
            continue
        name = re.sub(r"\[.*", "", f[2])
        name = "proxy threads" if name.startswith(PROXY_THREADS) else name
        try:
            delay, run = float(f[4]), float(f[5])
        except ValueError:
            continue
        runs[name][f[6]].append(run)
        delays[name].append(delay)
    for name in ("proxy threads", "wrk", "tokio-rt-worker"):
        d = sorted(delays[name])
        if not d:
            continue
        print(f"  {name}: delay before a run p50 {pct(d, .5):.3f} p90 {pct(d, .9):.3f} p99 {pct(d, .99):.3f} ms")
        for state, label in (("S", "ended asleep"), ("R", "ended preempted")):
            r = sorted(runs[name][state])
            if r:
                print(f"    {len(r):5d} runs {label}: p50 {pct(r, .5):.3f} p90 {pct(r, .9):.3f} p99 {pct(r, .99):.3f} "
                      f"max {r[-1]:.3f} ms, {sum(x > 1.2 for x in r)} over 1.2 ms, {sum(r):.0f} ms in all")


def main():
    bins, variants, _ = common.args(1)
    conns, _threads = common.load()
    for v, kind, _proc, url, _ in common.each_proxy(bins, variants, 1, "runs"):
        p = wrk.spawn(url, conns, 3, cpus="1")
        time.sleep(0.5)
        data = f"/tmp/runs-{kind}.data"
        subprocess.run(["perf", "sched", "record", "-o", data, "--", "sleep", "1.5"], capture_output=True)
        p.wait()
        th = subprocess.run(["perf", "sched", "timehist", "--state", "-i", data], capture_output=True, text=True)
        print(v)
        summary(th.stdout)


if __name__ == "__main__":
    main()
