# perf sched record (1.5 s inside a 3 s wrk -c50 run) of each proxy with THREADS (2) threads, then `perf sched latency`.
# Usage: THREADS=2 python3 sched.py BIN_DIR "ours;haproxy"
import sys, time, subprocess
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "bench"))
from pathlib import Path
from lbbench import proxies, procs, wrk
bins=Path(sys.argv[1]); work=Path("/tmp/sched-w"); work.mkdir(exist_ok=True)
import os; THREADS=int(os.environ.get("THREADS", "2"))
backends,_=proxies.start_replicas(bins,3,"1")
try:
    for v in sys.argv[2].split(";"):
        kind,*extra=v.split()
        proc,port=proxies.start(proxies.Target(kind,extra=extra),THREADS,backends,bins,work,"0" if THREADS == 1 else "0-1",connections=50)
        wrk.run(f"http://127.0.0.1:{port}/home",50,1,cpus="1")
        p=wrk.spawn(f"http://127.0.0.1:{port}/home",50,3,cpus="1")
        time.sleep(0.5)
        subprocess.run(["perf","sched","record","-o",f"/tmp/sched-{kind}.data","--","sleep","1.5"],capture_output=True)
        p.wait(); procs.stop(proc)
        out=subprocess.run(["perf","sched","latency","-i",f"/tmp/sched-{kind}.data","--sort","max"],capture_output=True,text=True).stdout
        print(v); print("\n".join(out.splitlines()[:12]))
finally:
    procs.cleanup()
