"""RSS and upstream connections of one proxy under wrk -c500 (1 worker)."""
import subprocess, sys, time
from proxy_under_test import proxy_under_test
from lbbench import procs

bins, target = sys.argv[1], sys.argv[2]
with proxy_under_test(bins, target, 500) as (proc, port, backends, _):
    time.sleep(0.5)
    base = procs.rss_kib([proc.pid])
    w = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c500", "-d4s", "--timeout", "10s", f"http://127.0.0.1:{port}/home"], stdout=subprocess.PIPE, text=True)
    peak = 0; ups = 0
    while w.poll() is None:
        peak = max(peak, procs.rss_kib([proc.pid]))
        s = subprocess.run(["ss", "-tnH", "state", "established", "( " + " or ".join(f"dport = :{b}" for b in backends) + " )"], capture_output=True, text=True).stdout
        ups = max(ups, len(s.splitlines()))
        time.sleep(0.1)
    out = w.stdout.read()
    rps = [l.split()[-1] for l in out.splitlines() if "Requests/sec" in l]
    print(f"{target}: base {base} KiB peak {peak} KiB per-conn {(peak-base)/500:.1f} KiB, upstream conns max {ups}, req/s {rps}")
