"""RSS and upstream connections of one proxy under wrk -c500 (1 worker)."""
import sys, subprocess, time, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
from lbbench import proxies, procs
bins = Path(sys.argv[1]); target = sys.argv[2]
procs.install_cleanup()
try:
    with tempfile.TemporaryDirectory() as tmp:
        backends, _ = proxies.start_replicas(bins, 3, "1")
        proc, port = proxies.start(target, 1, backends, bins, Path(tmp), "0", connections=500, single_process=True)
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
        procs.stop(proc)
finally:
    procs.cleanup()
