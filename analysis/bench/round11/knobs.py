"""Round 11 (perf notes): variants of ours (other builds as "ours@DIR",
flags as "ours --flag") beside HAProxy in alternating rounds at CONNS
connections and THREADS threads, in the bench's layout: each round's
requests/s and wrk's percentiles, then per variant the median p50, p99,
p99.9 and requests/s over the rounds.

Usage: python3 knobs.py BIN_DIR "ours;ours@/other/dir;haproxy" [ROUNDS]
"""
import collections
import glob
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402


def pin(pid, cpus):
    """The proxy's worker threads (by name: tokio's, HAProxy's own) pinned
    in TID order to the CPU lists of `cpus` ("0/1": one per CPU, as a
    `cpu-map` would; "0/0-1": the first on CPU 0, the second free).
    Variant "ours+pin0/1"."""
    tids = sorted(int(t.rsplit("/", 1)[1]) for t in glob.glob(f"/proc/{pid}/task/*")
                  if open(t + "/comm").read().strip() in ("tokio-rt-worker", "haproxy"))
    for i, tid in enumerate(tids):
        each = cpus.split("/")
        subprocess.run(["taskset", "-p", "-c", each[i % len(each)], str(tid)], check=True, capture_output=True)


def main():
    bins, variants, rounds = common.args(5)
    seen = collections.defaultdict(list)
    for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "knobs"):
        if "+pin" in v:
            pin(proc.pid, v.split("+pin")[1].split()[0] or "0/1")
        line, n, user, system, _ = common.measured(proc.pid, url, 0.2, lambda pid: None)
        pct = {k: float(x) for k, x in re.findall(r"(p[\d.]+)=([\d.]+)", line)}
        seen[v].append((n / 3, pct["p50"], pct["p99"], pct["p99.9"], user + system))
        print(f"{v:40s} {n / 3:8.0f} req/s {line[4:]} cpu {user + system:.1f} us/req", flush=True)
    print("median over rounds: req/s, p50, p99, p99.9 (ms), cpu us/req; p99 of each round")
    for v, rows in seen.items():
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        print(f"{v:40s} {med[0]:8.0f} {med[1]:6.2f} {med[2]:6.2f} {med[3]:6.2f} {med[4]:5.1f} | "
              + " ".join(f"{r[2]:.2f}" for r in rows), flush=True)


if __name__ == "__main__":
    main()
