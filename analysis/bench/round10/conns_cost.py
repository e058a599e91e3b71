"""Round 10 (perf notes): why our CPU per request nearly doubles from 50 to
500 connections with 1 thread (17.8 -> 32.0 us in the 14:28 full run)
where HAProxy's rises less (22.7 -> 30.3). For each proxy and connection
count, in the bench's layout (proxy on CPU 0, wrk and the replicas on
CPU 1), over a 3 s wrk run: requests/s, the proxy's user and system CPU
per request, its system calls per request by kind and its
context switches and wake-ups (`perf stat` counting tracepoints over 2 s
of the 3 s run).

Usage: python3 conns_cost.py BIN_DIR "ours;haproxy" [ROUNDS] [CONNS,...]
"""
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402


EVENTS = ["raw_syscalls:sys_enter", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_writev",
          "syscalls:sys_enter_sendto", "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_ctl",
          "sched:sched_switch", "sched:sched_wakeup", "page-faults", "syscalls:sys_enter_madvise",
          "syscalls:sys_enter_mmap", "syscalls:sys_enter_munmap"]


def counted(pid, seconds):
    """{event: count} of `perf stat` on the proxy's tracepoints for `seconds`
    (counting, not tracing: no slowdown worth the name)."""
    p = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid), "--", "sleep", str(seconds)],
                       capture_output=True, text=True)
    counts = {}
    for line in p.stderr.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            counts[f[2].split(":")[-1].replace("sys_enter_", "").replace("sys_enter", "syscalls")] = int(f[0])
    return counts


def main():
    bins, variants, rounds = common.args(3)
    levels = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "50,500").split(",")]
    for conns in levels:
        os.environ["CONNS"] = str(conns)
        os.environ.setdefault("THREADS", "1")
        for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "conns_cost"):
            line, n, user, system, calls = common.measured(proc.pid, url, 0.5, lambda pid: counted(pid, 2))
            p99 = re.search(r"p99=([\d.]+)", line).group(1)
            # the counted 2 s hold about 2/3 of the run's requests
            per = " ".join(f"{k} {c / (n * 2 / 3):.2f}" for k, c in calls.items() if c)
            print(f"{conns:4d} {v:10s} {n / 3:8.0f} req/s p99 {p99} ms  user {user:5.2f} us/req "
                  f"system {system:5.2f} us/req  | per request: {per}", flush=True)


if __name__ == "__main__":
    main()
