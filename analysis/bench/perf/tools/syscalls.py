"""Syscalls per request of one proxy (1 worker) under wrk -t1 -c50 for 4 s,
counted by `strace -c -f` attached for the whole wrk run; requests from
wrk's total. strace slows the proxy, so batching differs from an
unattached run: indicative, for comparing proxies under the same method."""
import re, subprocess, sys, time
from proxy_under_test import proxy_under_test

bins, target = sys.argv[1], sys.argv[2]
with proxy_under_test(bins, target, 50) as (proc, port, _, tmp):
    subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d1s", f"http://127.0.0.1:{port}/home"], capture_output=True)
    out = tmp / "strace.txt"
    st = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(proc.pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    w = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d4s", f"http://127.0.0.1:{port}/home"], capture_output=True, text=True).stdout
    st.send_signal(2); st.wait(20)
    n = int(re.search(r"(\d+) requests in", w).group(1))
    text = out.read_text()
    total = int(re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)", text, re.M).group(1))
    rows = [l for l in text.splitlines() if re.match(r"^\s*\d+\.\d+\s", l) and "total" not in l][:8]
    print(f"{target}: {n} requests, {total} syscalls, {total / n:.2f} syscalls/request")
    for r in rows:
        f = r.split(); calls = int(f[3]); print(f"   {f[-1]:<16} {calls / n:.2f}/request")
