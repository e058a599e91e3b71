"""Round 10 (perf notes): memory given back after a burst with 2 threads,
per scheduler. The balancer asks mimalloc to return freed memory 250 ms
after connections park (`memory.rs`), from a task on the runtime: on a
per-thread worker that task runs on the thread that freed the memory; on
tokio's work-stealing runtime it runs on whichever thread takes it. Each
variant from a fresh start with `--threads 2` on CPUs 0-1: N connections
each served one GET and then held idle (as the bench's kept-alive
measurement), RSS after 3 s and after 6 s, KiB per connection against the
same start at rest. Alternating rounds.

Usage: python3 kept_threads.py BIN_DIR [ROUNDS] [N]
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from lbbench import procs, proxies  # noqa: E402
from lbbench.proxies import Target  # noqa: E402

VARIANTS = [("work-stealing", ["--scheduler", "work-stealing"]), ("per-thread", ["--scheduler", "per-thread"])]


def main():
    bins = Path(sys.argv[1]).resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    procs.raise_nofile()
    with tempfile.TemporaryDirectory(prefix="kept-threads-") as tmp:
        backends, _ = proxies.start_replicas(bins, 3, "1")
        try:
            for i in range(rounds):
                for name, extra in VARIANTS:
                    proc, port = proxies.start(Target("ours", extra=extra), 2, backends, bins, Path(tmp), "0-1",
                                               connections=n)
                    pids = procs.process_tree(proc.pid)
                    time.sleep(1)
                    base = procs.rss_kib(pids)
                    kept = procs.IdleConnections()
                    try:
                        kept.open(port, n)
                        answered = kept.request_each()
                        time.sleep(3)
                        at3 = procs.rss_kib(pids)
                        time.sleep(3)
                        at6 = procs.rss_kib(pids)
                    finally:
                        kept.close()
                        procs.stop(proc)
                    print(f"round {i + 1} {name:14s} at rest {base / 1024:.1f} MiB; {answered} of {n} answered; "
                          f"held 3 s: {(at3 - base) / n:.2f} KiB/conn, 6 s: {(at6 - base) / n:.2f} KiB/conn",
                          flush=True)
        finally:
            procs.cleanup()


if __name__ == "__main__":
    main()
