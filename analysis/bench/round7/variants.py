"""Round 7 (perf notes): variants of the proxies at CONNS (50) connections and
THREADS (2) threads, alternating rounds; p99 and, per thread, CPU ticks and
voluntary / involuntary context switches.

Variants: "ours", "ours --flag ..." (e.g. "ours --scheduler work-stealing"),
"haproxy", "slice=NS" / "hslice=NS" (ours / HAProxy with a custom scheduler
slice on its threads, see slice.py), "batch" / "hbatch" (ours / HAProxy with
its threads under SCHED_BATCH, whose wake-ups do not preempt the running
thread; Round 8), "pin" (each of our workers pinned to the CPU of its index). The yield, LIFO and event-interval variants of the notes
used experimental builds that were not kept.

Usage: python3 variants.py BIN_DIR "ours;pin;haproxy" [ROUNDS]
"""
import glob
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "bench"))
sys.path.insert(0, str(HERE))
from lbbench import procs, proxies, wrk  # noqa: E402
import slice as sched_slice  # noqa: E402


def threads_of(pid, prefixes):
    """(tid, name) of the threads of `pid` whose names start with one of `prefixes`
    (taskset execs the proxy, so the process started is the proxy)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        if name.startswith(prefixes):
            yield int(tid), name


def tasks(pid):
    """Per thread: (name, CPU ticks, voluntary, involuntary context switches)."""
    out = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            f = open(t + "/stat").read().rsplit(")", 1)[1].split()
            name = open(t + "/comm").read().strip()
            st = dict(line.split(":\t") for line in open(t + "/status").read().splitlines() if ":\t" in line)
            out[t.rsplit("/", 1)[1]] = (name, int(f[11]) + int(f[12]), int(st["voluntary_ctxt_switches"]),
                                        int(st["nonvoluntary_ctxt_switches"]))
        except OSError:
            pass
    return out


def main():
    bins, variants = Path(sys.argv[1]), sys.argv[2].split(";")
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    conns, threads = int(os.environ.get("CONNS", "50")), int(os.environ.get("THREADS", "2"))
    work = Path("/tmp/variants-w")
    work.mkdir(exist_ok=True)
    cpus = "0" if threads == 1 else "0-1"
    backends, _ = proxies.start_replicas(bins, 3, "1")
    try:
        for _ in range(rounds):
            for v in variants:
                kind, *extra = v.split()
                slice_ns, pin, batch = None, kind == "pin", kind in ("batch", "hbatch")
                if pin:
                    kind = "ours"
                elif batch:
                    kind = "ours" if kind == "batch" else "haproxy"
                elif kind.startswith(("slice=", "hslice=")):
                    kind, slice_ns = ("ours" if kind.startswith("slice=") else "haproxy"), int(kind.split("=")[1])
                proc, port = proxies.start(proxies.Target(kind, extra=extra, label=v), threads, backends, bins,
                                           work, cpus, connections=conns)
                if pin:
                    for tid, name in threads_of(proc.pid, ("lb-worker-",)):
                        subprocess.run(["taskset", "-p", "-c", name[len("lb-worker-"):], str(tid)],
                                       capture_output=True, check=True)
                if batch:
                    for tid, _name in threads_of(proc.pid, ("lb-worker", "haproxy")):
                        subprocess.run(["chrt", "-b", "-p", "0", str(tid)], capture_output=True, check=True)
                if slice_ns:
                    for tid, _name in threads_of(proc.pid, ("lb-worker", "haproxy")):
                        sched_slice.set_slice(tid, slice_ns)
                wrk.run(f"http://127.0.0.1:{port}/home", conns, 1, cpus="1")
                before = tasks(proc.pid)
                res = wrk.run(f"http://127.0.0.1:{port}/home", conns, 3, cpus="1")
                after = tasks(proc.pid)
                zero = (None, 0, 0, 0)
                busy = {f"{a[0]}:{k}": tuple(a[i] - before.get(k, zero)[i] for i in (1, 2, 3))
                        for k, a in after.items()}
                busy = {k: b for k, b in busy.items() if b[0] > 0}
                print(f"{v:40s} {res['rps']:8.0f} req/s p50 {res['latency_ms']['p50']:.2f} "
                      f"p99 {res['latency_ms']['p99']} ticks/vol/invol {busy}", flush=True)
                procs.stop(proc)
    finally:
        procs.cleanup()


if __name__ == "__main__":
    main()
