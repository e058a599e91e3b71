"""Round 11 (perf notes): TCP segments the whole machine sends per request
through each proxy (the load side is the same for every proxy, so the
difference is the proxy's), from /proc/net/snmp and /proc/net/netstat over
2 s of a 3 s wrk run, in the bench's layout, alternating rounds. Also the
proxy's CPU per request.

Usage: CONNS=50 THREADS=1 python3 segments.py BIN_DIR "ours;haproxy" [ROUNDS]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402

FIELDS = [("Tcp", "OutSegs"), ("Tcp", "InSegs"), ("TcpExt", "DelayedACKs"), ("TcpExt", "TCPPureAcks"),
          ("TcpExt", "TCPHPAcks"), ("TcpExt", "TCPAutoCorking"), ("TcpExt", "TCPOrigDataSent")]


def counters():
    """{(group, name): value} of /proc/net/snmp and /proc/net/netstat."""
    out = {}
    for f in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = open(f).read().splitlines()
        for names, values in zip(lines[0::2], lines[1::2]):
            group = names.split(":")[0]
            for k, v in zip(names.split()[1:], values.split()[1:]):
                out[(group, k)] = int(v)
    return out


def window(_pid, seconds=2):
    a = counters()
    time.sleep(seconds)
    b = counters()
    return {k: b[k] - a[k] for k in FIELDS}


def main():
    bins, variants, rounds = common.args(5)
    for v, _kind, proc, url, _ in common.each_proxy(bins, variants, rounds, "segments"):
        line, n, user, system, delta = common.measured(proc.pid, url, 0.5, window)
        per = n * 2 / 3
        counts = " ".join(f"{k[1]} {delta[k] / per:.2f}" for k in FIELDS)
        print(f"{v:12s} {n / 3:8.0f} req/s cpu {user:.1f}+{system:.1f} us/req | per request: {counts}", flush=True)


if __name__ == "__main__":
    main()
