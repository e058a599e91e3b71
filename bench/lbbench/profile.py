"""Where the balancer's user-space CPU goes per request: callgrind
instruction counts, which (unlike req/s on a shared 2-core VM) do not move
with what else the machine is doing.

For each build given: 3 replicas, the balancer under `valgrind
--tool=callgrind` (1 worker thread, static upstreams, round robin),
a `wrk -c10` warm-up, then instrumentation switched on only for a measured
wrk run; requests are counted from `lb_requests_total` at /lb/metrics.
Writes OUT/profile.json and OUT/profile.md: instructions per request, and
the self cost per request grouped by where the code lives (our proxy,
hyper, hyper-util's client pool, axum, tokio, the allocator, memcpy...),
plus the top functions. Kernel time (TCP on loopback) is not in these
counts; a `perf` sample gives the kernel / user split.

Usage: bench/profile [--before DIR] [--bin-dir DIR] [--seconds 8] [--out analysis/bench]
  --before DIR   also profile the balancer in DIR and show before/after
With `perf` available it also samples the uninstrumented balancer for the
kernel / user split of its CPU time.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from . import ANALYSIS, cargo, log, procs, proxies
from .machine import ensure_tools

# (group, regex on a source path, regex on a function name), first match wins.
# Code callgrind places in the Rust standard library's sources (inlined
# generics) is attributed by the crate its function name starts with.
GROUPS = [
    ("allocator (glibc malloc/free, mimalloc)", r"/malloc/|malloc\.c|arena\.c|mimalloc",
     r"^(_int_)?(malloc|free|realloc)|^_?mi_|^<mimalloc::"),
    ("memcpy/memmove", r"memmove|memcpy", r"^__mem(cpy|move)"),
    ("SipHash (hyper-util pool map, axum router map)", r"hash/sip\.rs", r"sip::Hasher|hash_one"),
    ("our proxy (balancer crate)", r"crates/balancer/src", r"^<?balancer::|Handler<\(M,T1,T2,T3\)"),
    ("hyper-util client + pool", r"hyper-util-[^/]*/src/client", r"^<?hyper_util::client"),
    ("hyper-util server (auto, rewind)", r"hyper-util-[^/]*/src/(server|common)", r"^<?hyper_util::(server|common|rt)"),
    ("hyper (h1 parse, encode, dispatch)", r"/hyper-1[^/]*/|httparse", r"^<?(hyper|httparse)::"),
    ("http (HeaderMap, Uri)", r"/http-1[^/]*/", r"^<?http::"),
    ("axum + tower (routing, extractors)", r"/(axum|tower)[^/]*/", r"^<?(axum|axum_core|tower|tower_service)::"),
    ("tokio (scheduler, I/O, timers)", r"/tokio-1[^/]*/|/mio-", r"^<?(tokio|mio)::"),
    ("bytes, futures, other crates", r"/registry/src/", r"^<?(bytes|futures_util|futures_core|arc_swap|tracing)"),
    ("Rust std/core (fmt, Vec, Arc, Drop...)", r"^/rustc/", r"."),
    ("libc syscall wrappers", r"libc\.so|sysdeps", r"."),
]


def classify(name):
    path, _, rest = name.partition(":")
    func = re.sub(r" \[[^\]]*\]$", "", rest) if rest else name
    for group, path_rx, func_rx in GROUPS:
        if path.startswith("/rustc/"):
            if group.startswith("Rust std") or re.search(func_rx, func):
                return group
        elif not group.startswith("Rust std") and (re.search(path_rx, path) or re.search(func_rx, func)):
            return group
    return "other"


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/lb/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(float(re.search(rf"^{name} (\S+)", text, re.M).group(1)))


def annotate(outfile):
    """Self cost per function: [(Ir, 'file:function [object]')]."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", str(outfile)],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    table = text.split("file:function", 1)[-1]
    for line in table.splitlines():
        m = re.match(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(\S.*)$", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return rows


def short(name):
    """`file:function [object]` -> the function, without the generic noise."""
    fn = name.split(":", 1)[1] if ":" in name and not name.startswith("???") else name
    fn = re.sub(r" \[[^\]]*\]$", "", fn)
    return fn if len(fn) <= 110 else fn[:107] + "..."


def profile(bin_dir, backends, seconds, workdir):
    port = procs.free_port()
    out = workdir / f"callgrind.{bin_dir.name}.{port}.out"
    proc = procs.start(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         *proxies.ours_command(bin_dir, port, backends, 1)],
        "0",
    )
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/home", proc, timeout=60)
        url = f"http://127.0.0.1:{port}/home"
        wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c10", "--latency", url]
        subprocess.run([*wrk, "-d2s"], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        before = metric(port, "lb_requests_total")
        subprocess.run([*wrk, f"-d{seconds}s"], capture_output=True, check=True)
        requests = metric(port, "lb_requests_total") - before
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
    finally:
        procs.stop(proc, timeout=30)
    totals = re.search(r"^totals: (\d+)", out.read_text(), re.M)
    ir = int(totals.group(1))
    rows = annotate(out)
    groups = {g: 0 for g, _, _ in GROUPS}
    groups["other"] = 0
    for cost, name in rows:
        groups[classify(name)] += cost
    return {
        "bin_dir": str(bin_dir),
        "requests": requests,
        "instructions": ir,
        "instructions_per_request": ir / requests,
        "groups_per_request": {g: c / requests for g, c in groups.items()},
        "top_per_request": [{"function": short(n), "ir": c / requests} for c, n in rows[:20]],
    }


def perf_split(bin_dir, backends, workdir):
    """Kernel / user shares of the (uninstrumented) balancer's CPU under
    `wrk -c50`, sampled with `perf record -e cpu-clock`; None without perf."""
    if shutil.which("perf") is None:
        return None
    port = procs.free_port()
    proc = procs.start(proxies.ours_command(bin_dir, port, backends, 1), "0")
    data = workdir / "perf.data"
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/home", proc)
        wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d6s", f"http://127.0.0.1:{port}/home"],
                               stdout=subprocess.DEVNULL)
        time.sleep(1)
        rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(proc.pid), "-o", str(data),
                              "--", "sleep", "4"], capture_output=True, text=True)
        wrk.wait()
    finally:
        procs.stop(proc)
    if rec.returncode != 0:
        return None
    rep = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-q"],
                         capture_output=True, text=True).stdout
    shares = {m.group(2): float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)%\s+(\S+)", rep, re.M)}
    kernel = sum(v for k, v in shares.items() if "kernel" in k)
    return {"kernel_pct": round(kernel, 1), "user_pct": round(100 - kernel, 1), "by_dso_pct": shares}


def markdown(doc):
    builds = doc["builds"]
    names = list(builds)
    lines = [
        "# Balancer profile: user-space instructions per request",
        "",
        f"Generated by `bench/profile` on {doc['date_utc']}: callgrind on the balancer (1 worker thread, "
        f"round robin over 3 replicas), `wrk -t1 -c10 -d{doc['seconds']}s` on `/home`, instructions counted "
        "only during the measured run and divided by the requests it served. Kernel work (loopback TCP) "
        "is not counted by callgrind.",
        "",
    ]
    split = doc.get("perf_split")
    if split:
        lines += [
            f"Where the balancer's CPU time goes (`perf record -e cpu-clock` on the uninstrumented {doc['perf_build']}, "
            f"`wrk -c50`): kernel {split['kernel_pct']}%, user space {split['user_pct']}% "
            f"({', '.join(f'{k} {v}%' for k, v in split['by_dso_pct'].items())}).",
            "",
        ]
    lines += [
        "| build | requests | instructions / request |",
        "|---|---:|---:|",
    ]
    for n in names:
        b = builds[n]
        lines.append(f"| {n} | {b['requests']} | {b['instructions_per_request']:.0f} |")
    if len(names) == 2:
        a, b = builds[names[0]], builds[names[1]]
        lines.append(f"| change | | {(b['instructions_per_request'] / a['instructions_per_request'] - 1) * 100:+.1f}% |")
    lines += ["", "Self cost per request by where the code lives (the source file callgrind gives each function; "
              "code inlined from one crate into another counts where the function is):", "",
              "| code | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    last = builds[names[-1]]["groups_per_request"]
    for g in sorted(last, key=lambda k: -last[k]):
        lines.append(f"| {g} | " + " | ".join(f"{builds[n]['groups_per_request'].get(g, 0):.0f}" for n in names) + " |")
    lines += ["", f"Top functions by self cost per request ({names[-1]}):", "",
              "| instructions / request | function |", "|---:|---|"]
    for t in builds[names[-1]]["top_per_request"][:15]:
        fn = t["function"].replace("|", "\\|")
        lines.append(f"| {t['ir']:.0f} | `{fn}` |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="directory with an earlier build's balancer")
    ap.add_argument("--bin-dir", help="this build's binaries (default: cargo build --release)")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out", default=str(ANALYSIS))
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    procs.install_cleanup()
    ensure_tools(True)
    bins = cargo.build(bool(args.bin_dir), args.bin_dir)
    started = time.time()
    builds = {}
    try:
        with tempfile.TemporaryDirectory(prefix="lb-profile-") as tmp:
            backends, _ = proxies.start_replicas(bins, 3, "1")
            todo = ([("before", Path(args.before).resolve())] if args.before else []) + [("after" if args.before else "this build", bins)]
            for name, d in todo:
                log(f"callgrind: {name} ({d})")
                builds[name] = profile(d, backends, args.seconds, Path(tmp))
                log(f"  {builds[name]['instructions_per_request']:.0f} instructions/request")
            split = perf_split(bins, backends, Path(tmp))
    finally:
        procs.cleanup()
    doc = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "seconds": args.seconds, "builds": builds,
           "perf_build": list(builds)[-1], "perf_split": split}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "profile.md").write_text(markdown(doc))
    print(markdown(doc))
