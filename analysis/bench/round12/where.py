"""Round 12 (perf notes): where each proxy's CPU goes at CONNS connections
and THREADS threads in the bench's layout: `perf record -e cpu-clock` on
the proxy for 2 s of a 3 s wrk run, then the top symbols (kernel and
user) as a share of its samples and in microseconds a request.

Usage: python3 where.py BIN_DIR "ours;haproxy;relay" [ROUNDS] [TOP]
"""
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402

FREQ = 4000


def record(pid, out):
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ), "-o", out, "-p", str(pid),
                    "--", "sleep", "2"], capture_output=True)
    return out


def main():
    bins, variants, rounds = common.args(1)
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    for i, (v, _kind, proc, url, _) in enumerate(common.each_proxy(bins, variants, rounds, "where")):
        out = f"/tmp/where-{i}.data"
        line, n, user, system, _ = common.measured(proc.pid, url, 0.5, lambda pid: record(pid, out))
        rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "dso,sym", "--stdio",
                              "-q", "--percent-limit", "0.3"], capture_output=True, text=True).stdout
        per_req_us = (user + system)
        print(f"== {v}: {n / 3:.0f} req/s, user {user:.1f} + system {system:.1f} us/req; {line[4:]}")
        for row in rep.splitlines()[:top]:
            f = row.split()
            if not f or not f[0].endswith("%"):
                continue
            share = float(f[0][:-1])
            print(f"{share:6.2f}% {share * per_req_us / 100:6.2f} us  {' '.join(f[1:])[:110]}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
