"""bench/profile's callgrind run, keeping the callgrind output file in WORKDIR for
callgrind_annotate (--inclusive=yes, --tree=caller). Usage, from bench/:
python3 ../analysis/bench/perf/tools/callgrind_keep.py BIN_DIR WORKDIR [SECONDS]"""
import sys, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
from lbbench import profile, proxies, procs
bins = Path(sys.argv[1]); work = Path(sys.argv[2]); work.mkdir(parents=True, exist_ok=True)
procs.install_cleanup()
try:
    backends, _ = proxies.start_replicas(bins, 3, "1")
    r = profile.profile(bins, backends, int(sys.argv[3]) if len(sys.argv) > 3 else 8, work)
    print(json.dumps({k: r[k] for k in ("requests", "instructions", "instructions_per_request")}))
finally:
    procs.cleanup()
