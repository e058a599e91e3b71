"""Round 12 (perf notes): why fewer instructions a request do not buy
less user time. Callgrind with its cache simulator on each proxy (1
worker, the bench's layout), counted over exactly REQUESTS responses at
CONNS connections as the bench's instruction count is
(`counters.callgrind_run`): instructions, data reads and writes, and the
simulated first-level data misses and last-level misses a request. The
last level is set to one core's 512 KiB L2 (this EPYC's; its L3 is shared
with the other guests), the first to its 32 KiB L1d.

Usage: python3 cache.py BIN_DIR "ours;haproxy" [ROUNDS]
(CONNS, REQUESTS from the environment; KEEP_DIR keeps each output for callgrind_annotate)
"""
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round8"))
import common  # noqa: E402,F401  (puts bench/ on the path)
from lbbench import counters, procs, proxies  # noqa: E402

CACHES = ["--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=524288,8,64"]


def events(out):
    text = Path(out).read_text()
    names = re.search(r"^events: (.+)$", text, re.M).group(1).split()
    # "summary:" near the top stays 0 with --instr-atstart=no; "totals:" at the end counts
    totals = (re.search(r"^totals: (.+)$", text, re.M) or re.search(r"^summary: (.+)$", text, re.M)).group(1).split()
    return dict(zip(names, (int(x) for x in totals)))


def main():
    bins, variants, rounds = common.args(1)
    conns = int(os.environ.get("CONNS", "50"))
    requests = int(os.environ.get("REQUESTS", "5000"))
    backends, _ = proxies.start_replicas(bins, 3, "1")
    try:
        with tempfile.TemporaryDirectory(prefix="cache-") as tmp:
            for _ in range(rounds):
                for v in variants:
                    seen = {}

                    def start(wrapper, v=v):
                        seen["out"] = next(a.split("=", 1)[1] for a in wrapper if a.startswith("--callgrind-out"))
                        return proxies.start(proxies.Target(v), 1, backends, bins, Path(tmp), "0",
                                             wrapper=wrapper + CACHES, single_process=True, wait_timeout=60)
                    r = counters.callgrind_run(start, requests, conns, "1", tmp, v)
                    e = events(seen["out"])
                    if os.environ.get("KEEP_DIR"):  # for callgrind_annotate
                        shutil.copy(seen["out"], Path(os.environ["KEEP_DIR"]) / f"callgrind.{v}.out")
                    n = r["requests"]
                    per = {k: e.get(k, 0) / n for k in ("Ir", "Dr", "Dw", "D1mr", "D1mw", "DLmr", "DLmw", "I1mr")}
                    print(f"{v:8s} {n} responses: instructions {per['Ir']:7.0f}  data reads {per['Dr']:6.0f} "
                          f"writes {per['Dw']:6.0f}  L1d misses {per['D1mr'] + per['D1mw']:6.0f} "
                          f"(read {per['D1mr']:.0f}, write {per['D1mw']:.0f})  L2 misses "
                          f"{per['DLmr'] + per['DLmw']:6.0f}  L1i misses {per['I1mr']:5.0f}", flush=True)
    finally:
        procs.cleanup()


if __name__ == "__main__":
    main()
