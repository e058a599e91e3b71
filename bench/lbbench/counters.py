"""Instructions and cycles per request.

With hardware counters (`perf stat -e instructions,cycles` works), they are
counted for the proxy's processes over each measured window of the
headline runs. Without them (many VMs and containers: perf prints
`<not supported>`), callgrind counts the proxy's user-space instructions
deterministically over a fixed number of requests, one worker each."""

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import procs, wrk

EVENTS = ("instructions", "cycles")


def parse_perf_stat(text):
    """{event: count or None} from `perf stat -x,` output (None: not
    supported or not counted)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or line.startswith("#"):
            continue
        value, event = fields[0], fields[2].split(":")[0]
        if event in EVENTS:
            counts[event] = int(float(value)) if re.fullmatch(r"[\d.]+", value) else None
    return counts


def perf_supported():
    """True if `perf stat` can count instructions and cycles here."""
    if shutil.which("perf") is None:
        return False
    p = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "true"], capture_output=True, text=True)
    counts = parse_perf_stat(p.stderr)
    return p.returncode == 0 and all(counts.get(e) for e in EVENTS)


class PerfStat:
    """`perf stat` attached to some pids for the duration of a `with` block."""

    def __init__(self, pids, workdir):
        self.pids = pids
        self.out = Path(workdir) / f"perf-stat-{pids[0]}-{time.monotonic_ns()}.txt"
        self.counts = {}

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", ",".join(map(str, self.pids)), "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.CHILDREN.append(self.proc)
        time.sleep(0.05)  # let it attach before the window opens
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        finally:
            procs.stop(self.proc)
        self.counts = parse_perf_stat(self.out.read_text()) if self.out.exists() else {}
        return False


COUNT_LUA = """-- Counts responses; at {limit} switches callgrind's instrumentation off,
-- leaves a marker (responses, non-200 ones) and stops this wrk thread.
local n, bad, done = 0, 0, false
function response(status, headers, body)
  if done then return end
  n = n + 1
  if status ~= 200 then bad = bad + 1 end
  if n >= {limit} then
    done = true
    os.execute("callgrind_control -i off {pid} > /dev/null 2>&1")
    local f = io.open("{marker}", "w")
    f:write(n, " ", bad, "\\n")
    f:close()
    wrk.thread:stop()
  end
end
"""


def callgrind_totals(text):
    m = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    if not m:
        raise ValueError("no totals in callgrind output")
    return int(m.group(1))


def callgrind_run(start_proxy, requests, connections, load_cpus, workdir, tag):
    """Starts a proxy under callgrind (instrumentation off) with
    `start_proxy(wrapper) -> (proc, port)`, warms it up, then counts its
    instructions over exactly `requests` responses (wrk with a counting Lua
    script switches instrumentation on its last response off). Returns
    {requests, instructions, instructions_per_request, errors, seconds}."""
    workdir = Path(workdir)
    out = workdir / f"callgrind.{tag}.{time.monotonic_ns()}.out"
    marker = out.with_suffix(".done")
    proc, port = start_proxy(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"])
    url = f"http://127.0.0.1:{port}/home"
    try:
        wrk.run(url, connections, 1, load_cpus)  # warm-up, not counted
        time.sleep(0.3)  # the warm-up's connections closed
        script = workdir / f"count-{proc.pid}.lua"
        script.write_text(COUNT_LUA.format(limit=requests, pid=proc.pid, marker=marker))
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        started = time.monotonic()
        w = wrk.spawn(url, connections, 600, load_cpus, script=script)
        while not marker.exists():
            if w.poll() is not None or proc.poll() is not None:
                raise RuntimeError(f"{tag}: wrk or the proxy ended before {requests} responses")
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{tag}: {requests} responses not reached in 600 s")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        procs.stop(w)
        n, bad = (int(x) for x in marker.read_text().split())
    finally:
        procs.stop(proc, timeout=60)  # callgrind writes its counts at exit
    ir = callgrind_totals(out.read_text())
    return {"requests": n, "errors": bad, "instructions": ir, "instructions_per_request": ir / n,
            "seconds": round(seconds, 1)}
