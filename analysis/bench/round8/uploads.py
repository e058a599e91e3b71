"""Round 8 (perf notes): 1 MiB uploads through each proxy, as the bench's
"large" suite runs them (static nginx origin on 3 ports, `wrk -t1 -c10`
with a Lua script that POSTs 1 MiB, one proxy worker on CPU 0), with what
each upload costs: the proxy's system calls and context switches (`perf
stat` on tracepoints, 2 s inside a 4 s run) and the TCP segments the whole
machine sent (`nstat`: TcpOutSegs, and TcpExtTCPOrigDataSent for those
carrying data).

A variant "ours@DIR" runs the balancer binary in DIR.
Usage: python3 uploads.py BIN_DIR "ours;ours@/other/bins;haproxy" [ROUNDS]
"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "bench"))
from lbbench import procs, proxies, suites, wrk  # noqa: E402

SYSCALLS = ("epoll_wait", "recvfrom", "writev", "sendto", "sendmsg", "read", "write", "readv", "recvmsg", "splice")
EVENTS = ",".join([f"syscalls:sys_enter_{s}" for s in SYSCALLS] + ["sched:sched_switch"])


def counts(stderr):
    out = {}
    for line in stderr.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            out[f[2].split(":")[-1].replace("sys_enter_", "")] = float(f[0])
    return out


def main():
    bins, variants = Path(sys.argv[1]), sys.argv[2].split(";")
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work = Path("/tmp/uploads-w")
    work.mkdir(exist_ok=True)
    origin = suites.Origin(work, procs.free_ports(3), "1")
    script = wrk.upload_script(suites.PAYLOAD, work)
    try:
        for _ in range(rounds):
            for v in variants:
                kind, b = (v.split("@", 1)[0], Path(v.split("@", 1)[1])) if "@" in v else (v, bins)
                proc, port = proxies.start(proxies.Target(kind), 1, origin.ports, b, work, "0", connections=10)
                url = f"http://127.0.0.1:{port}/upload"
                wrk.run(url, 10, 1, cpus="1", script=script)
                p = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c10", "-d4s", "-s", str(script), url],
                                     stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
                subprocess.run(["nstat", "-n"], check=True)
                start = time.time()
                stat = subprocess.run(["perf", "stat", "-x,", "-e", EVENTS, "-p", str(proc.pid), "--", "sleep", "2"],
                                      capture_output=True, text=True)
                net = subprocess.run(["nstat", "-z", "TcpOutSegs", "TcpExtTCPOrigDataSent"],
                                     capture_output=True, text=True).stdout
                elapsed = time.time() - start
                out = p.communicate()[0]
                procs.stop(proc)
                rps = float(next(x for x in out.splitlines() if "Requests/sec" in x).split()[1])
                calls = counts(stat.stderr)
                segs = {x.split()[0]: float(x.split()[1]) for x in net.splitlines() if x.startswith("Tcp")}
                per = " ".join(f"{k}={c / (rps * 2):.1f}" for k, c in calls.items() if c > 0)
                seg = " ".join(f"{k}={c / (rps * elapsed):.1f}" for k, c in segs.items())
                print(f"{v:28s} {rps * suites.PAYLOAD / 1e6:6.0f} MB/s; per upload: {per}; machine: {seg}", flush=True)
    finally:
        origin.stop()
        procs.cleanup()


if __name__ == "__main__":
    main()
