"""Round 9 (perf notes): RSS per active connection, two builds of ours
and HAProxy in alternating rounds, as the bench's memory suite measures
it (`suites.memory_run`: a fresh start, wrk at N connections for 3 s,
peak RSS sampled every 0.1 s, KiB per connection against the same
start at rest).

With WHAT = kept (Round 10), kept-alive connections instead: each served
one GET and then held idle for 3 s (and idle ones, which the same run
measures first).

Usage: python3 memory_ab.py BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [LEVELS] [active|kept]
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from lbbench import procs, proxies  # noqa: E402
from lbbench.measure import Setup  # noqa: E402
from lbbench.proxies import Target  # noqa: E402
from lbbench.suites import memory_run  # noqa: E402


def main():
    before, after = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    levels = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "500,10000").split(",")]
    what = sys.argv[5] if len(sys.argv) > 5 else "active"
    procs.raise_nofile()
    with tempfile.TemporaryDirectory(prefix="mem-ab-") as tmp:
        setup = Setup(after, Path(tmp), "1", {1: "0"})
        setup.backends, setup.backend_pids = proxies.start_replicas(after, 3, "1")
        try:
            for i in range(rounds):
                for t, bins in ((Target("ours", label="before"), before), (Target("ours", label="after"), after),
                                (Target("haproxy"), after)):
                    setup.bins = bins
                    r = memory_run(t, setup, levels if what == "kept" else [], [] if what == "kept" else levels, 3)
                    per = ", ".join(f"{n}: {r[what][str(n)]['kib_per_connection']:.2f} KiB "
                                    f"({r[what][str(n)]['rss_kib'] / 1024:.1f} MiB"
                                    + (f", {r[what][str(n)]['rps']:.0f} req/s)" if what == "active" else ")")
                                    for n in levels)
                    print(f"round {i + 1} {t.name:8} at rest {r['baseline_kib'] / 1024:.1f} MiB; {what} {per}",
                          flush=True)
        finally:
            procs.cleanup()


if __name__ == "__main__":
    main()
