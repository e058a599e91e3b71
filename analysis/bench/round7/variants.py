"""Round 7 (perf notes): variants of the proxies at CONNS (50) connections and THREADS (2) threads, alternating; per-thread CPU ticks and context switches. Variants: "ours", "ours --flag ...", "haproxy", "slice=NS" (ours with a custom scheduler slice on its workers). The yield/LIFO variants used experimental builds (env LB_EXP_*), not kept. Usage: python3 variants.py BIN_DIR "ours;slice=700000;haproxy" ROUNDS
Ours vs HAProxy at 50 conns / 2 threads: per-thread CPU and p99, alternating."""
import sys, time, os, glob
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "bench"))
from pathlib import Path
from lbbench import proxies, procs, wrk
bins = Path(sys.argv[1]); variants = sys.argv[2].split(";"); rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
conns = int(os.environ.get("CONNS", "50")); threads = int(os.environ.get("THREADS", "2"))
work = Path("/tmp/variants-w"); work.mkdir(exist_ok=True)
backends, _ = proxies.start_replicas(bins, 3, "1")
cpus = "0" if threads == 1 else "0-1"
def tasks(pid):
    out = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            f = open(t + "/stat").read().rsplit(")", 1)[1].split()
            name = open(t + "/comm").read().strip()
            st = dict(l.split(":\t") for l in open(t + "/status").read().splitlines() if ":\t" in l)
            out[t.rsplit("/", 1)[1]] = (name, int(f[11]) + int(f[12]), int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"]))
        except OSError:
            pass
    return out
try:
    for r in range(rounds):
        for v in variants:
            kind, *extra = v.split()
            for k in ("LB_EXP_YIELD", "LB_EXP_YIELD2", "LB_EXP_NOLIFO", "LB_EXP_GQI", "LB_EXP_EVI"):
                os.environ.pop(k, None)
            if kind.startswith("evi="):
                os.environ["LB_EXP_EVI"] = kind[4:]; kind = "ours"
            elif "=" in kind and kind.split("=")[0] in ("NOLIFO", "GQI", "EVI"):
                for kv in kind.split(","):
                    k2, v2 = kv.split("=")
                    os.environ["LB_EXP_" + k2] = v2
                kind = "ours"; extra = ["--scheduler", "work-stealing"]
            if kind == "yield":
                kind = "ours"; os.environ["LB_EXP_YIELD"] = "1"
            elif kind.startswith("y2="):
                os.environ["LB_EXP_YIELD2"] = kind[3:]; kind = "ours"
            slice_ns = None
            pin = kind == "pin"
            if pin:
                kind = "ours"
            if kind.startswith("slice="):
                slice_ns = int(kind[6:]); kind = "ours"
            if kind.startswith("hslice="):
                slice_ns = int(kind[7:]); kind = "haproxy"
            t = proxies.Target(kind, extra=extra, label=v)
            proc, port = proxies.start(t, threads, backends, bins, work, cpus, connections=conns)
            if pin:
                import subprocess
                pids = [int(x) for x in subprocess.check_output(["pgrep", "-f", f"127.0.0.1:{port}"]).split()]
                for pid in pids:
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                        if name.startswith("lb-worker-"):
                            subprocess.run(["taskset", "-p", "-c", name[len("lb-worker-"):], tid], capture_output=True)
            if slice_ns:
                import subprocess, sys as _s
                _s.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent)); import slice as sl
                pids = [int(x) for x in subprocess.check_output(["pgrep", "-f", f"127.0.0.1:{port}"]).split()]
                for pid in pids:
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                        if name.startswith("lb-worker") or name == "haproxy":
                            sl.set_slice(int(tid), slice_ns)
            wrk.run(f"http://127.0.0.1:{port}/home", conns, 1, cpus="1")
            before = tasks(proc.pid)
            res = wrk.run(f"http://127.0.0.1:{port}/home", conns, 3, cpus="1")
            after = tasks(proc.pid)
            z = (0, 0, 0, 0)
            busy = {after[k][0] + ":" + k: tuple(after[k][i] - before.get(k, z)[i] for i in (1, 2, 3)) for k in after}
            busy = {k: v2 for k, v2 in busy.items() if v2[0] > 0}
            print(f"{v:40s} {res['rps']:8.0f} req/s p50 {res['latency_ms']['p50']:.2f} p99 {res['latency_ms']['p99']} ticks {busy}", flush=True)
            procs.stop(proc)
finally:
    procs.cleanup()
