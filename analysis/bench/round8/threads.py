"""Round 8 (perf notes): each proxy with 2 threads and with 1 thread, both
allowed CPUs 0-1 (the bench's 2-thread layout: wrk and the replicas on
CPU 1), at CONNS (50) connections, alternating rounds; wrk's percentiles.
What splitting the work over two threads costs when the kernel puts both
on one core.

Usage: python3 threads.py BIN_DIR "ours;haproxy" [ROUNDS]
"""
import re

import common


def main():
    bins, variants, rounds = common.args(3)
    for _ in range(rounds):
        for v in variants:
            for threads in (2, 1):
                for _v, _kind, _proc, url, _ in common.each_proxy(bins, [v], 1, "threads", threads, "0-1"):
                    out = common.wrk_percentiles(url).communicate()[0]
                    line = next(x for x in out.splitlines() if x.startswith("PCT"))
                    rps = float(re.search(r"n=(\d+)", line).group(1)) / 3
                    print(f"{v:8s} {threads} thread(s) on CPUs 0-1: {rps:7.0f} req/s {line[4:]}", flush=True)


if __name__ == "__main__":
    main()
