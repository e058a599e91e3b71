"""Round 11 (perf notes): which side of the bench's layout is the
bottleneck. For each proxy and (connections, threads) point, alternating
rounds, over 2 s of a 3 s wrk run: each CPU's idle, softirq and busy share
from /proc/stat (CPU 0 holds the proxy; CPU 1 wrk and the replicas, and
with 2 threads the proxy's second), with the requests/s and wrk's p50/p99.
A CPU at no idle is the bound; a proxy whose CPU has idle time left is
waiting for the load side, and its latency is the load side's queueing.

Usage: python3 idle.py BIN_DIR "ours;haproxy" ROUNDS CONNS/THREADS,...
"""
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402


def cpu_times():
    """{cpu: (idle, softirq, total)} in clock ticks."""
    out = {}
    for line in open("/proc/stat"):
        if re.match(r"cpu\d", line):
            f = line.split()
            v = [int(x) for x in f[1:9]]
            out[f[0]] = (v[3] + v[4], v[6], sum(v))
    return out


def window(_pid, seconds=2):
    a = cpu_times()
    time.sleep(seconds)
    b = cpu_times()
    return {c: tuple(b[c][i] - a[c][i] for i in range(3)) for c in a}


def main():
    bins, variants, rounds = common.args(5)
    for point in sys.argv[4].split(","):
        conns, threads = point.split("/")
        os.environ["CONNS"], os.environ["THREADS"] = conns, threads
        for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "idle"):
            line, n, _user, _system, cpus = common.measured(proc.pid, url, 0.5, window)
            pct = dict(re.findall(r"(p[\d.]+)=([\d.]+)", line))
            shares = " ".join(f"{c}: idle {100 * i / t:4.1f}% softirq {100 * s / t:4.1f}%"
                              for c, (i, s, t) in sorted(cpus.items()))
            print(f"{conns:>4}/{threads} {v:8s} {n / 3:7.0f} req/s p50 {pct['p50']:>6} p99 {pct['p99']:>6} ms | "
                  f"{shares}", flush=True)


if __name__ == "__main__":
    main()
