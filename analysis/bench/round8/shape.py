"""Round 8 (perf notes): the shape of the latency distribution at CONNS (50)
connections and THREADS (2) threads, alternating rounds: wrk's percentiles
p50..p99.9 (a wrk script prints them), where each proxy thread was found
runnable (CPU 1 samples / all samples taken every 3 ms while it was
runnable), and user / system CPU time per request.

Usage: python3 shape.py BIN_DIR "ours;haproxy" [ROUNDS]
"""
import collections
import glob
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


def main():
    bins, variants, rounds = common.args(3)
    for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "shape"):
        line, _n, user, system, where = common.measured(proc.pid, url, 0.2, lambda pid: placement(pid, 2.6))
        cpu = f"user {user:.2f} us/req, system {system:.2f} us/req"
        print(f"{v:10s} {line[4:]}\n{'':10s} runnable on CPU 1: {where}; {cpu}", flush=True)


if __name__ == "__main__":
    main()
