"""The load balancer's benchmark harness as one package.

The executable scripts beside this package (`bench/run`, `bench/report`,
`bench/profile`, `bench/pick`) are thin entry points: each puts `bench/` on
sys.path and calls `main()` of the module of the same name here.

Modules, one per concept:
  machine    the machine and tool versions recorded with every result; tool install
  cargo      the target directory (from `cargo metadata`) and release builds
  procs      starting, pinning and stopping children; ports; /proc probes
  wrk        running wrk and reading its output
  proxies    HAProxy and nginx configs; starting ours, HAProxy and nginx
  suites     the measured dimensions beyond the headline (instructions,
             10k connections, 1 MiB bodies, 100 replicas, memory)
  chart      the one SVG chart style every chart of the bench uses
  report     results.json -> markdown tables, charts, README block
  run, profile, pick   the entry points' logic
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
ANALYSIS = ROOT / "analysis" / "bench"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
