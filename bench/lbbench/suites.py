"""The dimensions users hit beyond the headline comparison, each measured
in alternating rounds (ours, HAProxy, nginx, ours, ...), median and
spread kept:

  instructions  instructions (and cycles) per request
  c10k          10,000 concurrent connections
  large         1 MiB responses and 1 MiB uploads (MB/s)
  replicas100   100 replicas: each of our policies beside HAProxy's
                roundrobin and leastconn
  memory        RSS at 500 and 10,000 idle and active connections, and the
                cost per connection

Each suite returns {"setup": {...}, "runs": [...]} for results.json."""

import os
import re
import subprocess
import time

from . import counters, procs, proxies, wrk
from .measure import Load, Setup, alternate, describe_http, median_of, one_run
from .proxies import Target

PAYLOAD = 1024 * 1024  # bytes of a large response / upload
RING_SLOTS_100 = 4096  # the ring policy needs M >= replicas x K; as in the pick benchmark (M=4096, K=12)


def policies(bins):
    """Our policies, as `balancer --help` lists them."""
    text = subprocess.run([str(bins / "balancer"), "--help"], capture_output=True, text=True).stdout
    m = re.search(r"Selection policy:\s*(.*?)\n\s*\n", text, re.S)
    names = re.findall(r"[a-z][a-z0-9-]+", m.group(1)) if m else []
    return names or ["maglev", "ring", "bounded-load", "round-robin", "weighted-round-robin",
                     "least-connections", "p2c", "random"]


class Origin:
    """A static nginx (1 worker, pinned to the load side) listening on many
    ports: the replica for 1 MiB bodies and for 100 replicas. The backend
    binary serves /home and /heartbeat only and listens on one port."""

    def __init__(self, workdir, ports, cpus):
        self.dir = workdir / f"origin-{ports[0]}"
        (self.dir / "www").mkdir(parents=True, exist_ok=True)
        (self.dir / "www" / "large.bin").write_bytes(os.urandom(PAYLOAD))
        cfg = self.dir / "origin.conf"
        cfg.write_text(proxies.origin_config(ports, self.dir))
        self.ports = ports
        self.proc = procs.start(["nginx", "-c", str(cfg), "-p", str(self.dir)], cpus, nofile=procs.NOFILE)
        for p in ports:
            procs.wait_http(f"http://127.0.0.1:{p}/heartbeat", self.proc)

    @property
    def pids(self):
        return procs.process_tree(self.proc.pid)

    def stop(self):
        procs.stop(self.proc)


def _setup_with(setup, backends, backend_pids):
    return Setup(setup.bins, setup.workdir, setup.load_cpus, setup.proxy_cpus, backends, backend_pids,
                 setup.before_bins, setup.perf)


def _summaries(runs, key=lambda r: r["rps"], **extra):
    out = []
    for name, rs in runs.items():
        r = median_of(rs, key)
        r.update(target=name, **extra)
        out.append(r)
    return out


# ------------------------------------------------------------ instructions


def instructions(setup, targets, rounds, requests=5000, connections=10):
    """Callgrind (no hardware counters here): each proxy with 1 worker
    (nginx without a master), `requests` responses counted exactly."""
    def run(t):
        def start(wrapper):
            return proxies.start(t, 1, setup.backends, setup.bins, setup.workdir, setup.proxy_cpus[1],
                                 wrapper=wrapper, single_process=True, wait_timeout=60)
        return counters.callgrind_run(start, requests, connections, setup.load_cpus, setup.workdir, t.name)

    runs = alternate([Target(t) for t in targets], rounds, run,
                     lambda r: f"{r['instructions_per_request']:.0f} instructions/request ({r['seconds']} s)")
    out = []
    for name, rs in runs.items():
        r = median_of(rs, key=lambda r: r["instructions_per_request"])
        r.update(target=name)
        out.append(r)
    return {"setup": {"method": "callgrind", "requests": requests, "connections": connections,
                      "threads": 1, "rounds": rounds, "path": "/home", "replicas": len(setup.backends)},
            "runs": out}


# -------------------------------------------------------------------- c10k


LENIENT = "ours:health-timeout-5s"


def c10k(setup, targets, rounds, connections=10000, duration=8, warmup=2, threads=1, wrk_threads=4, timeout_s=10):
    load = Load(connections, duration, warmup, wrk_threads=wrk_threads, timeout_s=timeout_s)
    ts = [Target(t) for t in targets]
    if "ours" in targets:
        # Ours as configured by default, and with a health-check timeout
        # long enough that overloaded replicas are not taken out of rotation
        # (HAProxy and nginx here run no active health checks).
        ts.insert(targets.index("ours") + 1, Target("ours", label=LENIENT, extra=["--health-timeout", "5s"]))
    runs = alternate(ts, rounds, lambda t: one_run(t, threads, load, setup), describe_http)
    return {"setup": {"connections": connections, "duration_s": duration, "warmup_s": warmup, "threads": threads,
                      "client": f"wrk -t{wrk_threads} -c{connections} -d{duration}s --timeout {timeout_s}s --latency",
                      "rounds": rounds, "nofile_limit": procs.nofile_limit(),
                      "haproxy_maxconn": proxies.haproxy_maxconn(connections),
                      "nginx_worker_connections": proxies.nginx_worker_connections(connections)},
            # median by successful responses: a proxy answering errors fast is not fast
            "runs": _summaries(runs, key=lambda r: r["ok_rps"], connections=connections, threads=threads,
                               duration_s=duration)}


# ------------------------------------------------------------------- large


def large(setup, targets, rounds, connections=10, duration=3, warmup=1, threads=1):
    """1 MiB GET responses and 1 MiB POST uploads through each proxy to the
    static origin on 3 ports."""
    origin = Origin(setup.workdir, procs.free_ports(3), setup.load_cpus)
    try:
        s = _setup_with(setup, origin.ports, origin.pids)
        script = wrk.upload_script(PAYLOAD, setup.workdir)
        out = []
        for mode, load in (("download", Load(connections, duration, warmup, path="/large.bin")),
                           ("upload", Load(connections, duration, warmup, path="/upload", script=script))):
            runs = alternate([Target(t) for t in targets], rounds, lambda t: one_run(t, threads, load, s),
                             lambda r, mode=mode: f"{mode} {r['rps'] * PAYLOAD / 1e6:.0f} MB/s  " + describe_http(r))
            for r in _summaries(runs, mode=mode, connections=connections, threads=threads, duration_s=duration):
                r["mb_per_s"] = round(r["rps"] * PAYLOAD / 1e6, 1)
                for x in r["repeats"]:
                    x["mb_per_s"] = round(x["rps"] * PAYLOAD / 1e6, 1)
                out.append(r)
    finally:
        origin.stop()
    return {"setup": {"payload_bytes": PAYLOAD, "connections": connections, "duration_s": duration,
                      "warmup_s": warmup, "threads": threads, "rounds": rounds,
                      "origin": "nginx, 1 worker, 3 ports: GET /large.bin (sendfile), POST /upload (body read, "
                                "discarded, 200)",
                      "upload": "wrk Lua script: POST with a 1 MiB body"},
            "runs": out}


# -------------------------------------------------------------- replicas100


def replicas100(setup, rounds, replicas=100, connections=50, duration=3, warmup=1, threads=1, our_policies=None):
    origin = Origin(setup.workdir, procs.free_ports(replicas), setup.load_cpus)
    try:
        s = _setup_with(setup, origin.ports, origin.pids)
        targets = [Target("ours", p, extra=["--slots", str(RING_SLOTS_100)] if p == "ring" else [])
                   for p in (our_policies or policies(setup.bins))]
        targets += [Target("haproxy", b) for b in proxies.HAPROXY_BALANCE]
        load = Load(connections, duration, warmup)
        runs = alternate(targets, rounds, lambda t: one_run(t, threads, load, s), describe_http)
    finally:
        origin.stop()
    out = _summaries(runs, connections=connections, threads=threads, duration_s=duration)
    for r in out:
        r["kind"], _, r["policy"] = r["target"].partition(":")
    return {"setup": {"replicas": replicas, "connections": connections, "duration_s": duration, "warmup_s": warmup,
                      "threads": threads, "rounds": rounds, "path": "/home",
                      "origin": f"nginx, 1 worker, listening on {replicas} ports (one replica per port)",
                      "ring": f"--slots {RING_SLOTS_100}"},
            "runs": out}


# ------------------------------------------------------------------ memory


def _wait_fds(pids, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and procs.open_fds(pids) < want:
        time.sleep(0.1)
    return procs.open_fds(pids)


def _rest(target, setup, top, settle):
    """A fresh proxy (1 worker) sized for `top` connections, at rest."""
    proc, port = proxies.start(target, 1, setup.backends, setup.bins, setup.workdir, setup.proxy_cpus[1],
                               connections=top)
    pids = procs.process_tree(proc.pid)
    time.sleep(settle)
    return proc, port, pids, procs.rss_kib(pids)


def memory_run(target, setup, idle_levels, active_levels, duration, settle=1.0, kept_idle=3.0):
    """RSS of a proxy (1 worker) at rest and then with each number of idle
    connections (opened and held, nothing sent; one start, levels in
    increasing order), and, each from a fresh start (freed memory is not
    always given back), with each number of kept-alive connections (each
    served one GET, then held idle between requests for `kept_idle`
    seconds: what a browser's or a pooled client's spare connections cost)
    and under load with each
    number of active connections (peak of samples every 0.1 s). KiB per
    connection = (RSS at N - RSS of the same start at rest) / N."""
    top = max([*idle_levels, *active_levels])
    r = {"idle": {}, "kept": {}, "active": {}}
    proc, port, pids, base = _rest(target, setup, top, settle)
    r["baseline_kib"] = base
    idle = procs.IdleConnections()
    try:
        base_fds = procs.open_fds(pids)
        for n in sorted(idle_levels):
            idle.open(port, n - len(idle))
            fds = _wait_fds(pids, base_fds + n)
            time.sleep(settle)
            rss = procs.rss_kib(pids)
            r["idle"][str(n)] = {"rss_kib": rss, "accepted": fds - base_fds,
                                 "kib_per_connection": round((rss - base) / n, 2)}
    finally:
        idle.close()
        procs.stop(proc)
    for n in sorted(idle_levels):
        proc, port, pids, base = _rest(target, setup, top, settle)
        kept = procs.IdleConnections()
        try:
            kept.open(port, n)
            answered = kept.request_each()
            time.sleep(kept_idle)
            rss = procs.rss_kib(pids)
            r["kept"][str(n)] = {"rss_kib": rss, "answered": answered,
                                 "kib_per_connection": round((rss - base) / n, 2)}
        finally:
            kept.close()
            procs.stop(proc)
    for n in sorted(active_levels):
        proc, port, pids, base = _rest(target, setup, top, settle)
        try:
            w = wrk.spawn(f"http://127.0.0.1:{port}/home", n, duration, setup.load_cpus, 4 if n > 1000 else 1,
                          nofile=procs.NOFILE, timeout_s=10)
            peak = 0
            while w.poll() is None:
                peak = max(peak, procs.rss_kib(pids))
                time.sleep(0.1)
            res = wrk.collect(w, 30)
            r["active"][str(n)] = {"rss_kib": peak, "baseline_kib": base, "rps": res["rps"], "errors": res["errors"],
                                   "kib_per_connection": round((peak - base) / n, 2)}
        finally:
            procs.stop(proc)
    return r


def memory(setup, targets, rounds, idle_levels=(500, 10000), active_levels=(500, 10000), duration=3,
           kept_idle=3.0):
    def describe(r):
        parts = [f"base {r['baseline_kib'] / 1024:.1f} MiB"]
        for state in ("idle", "kept", "active"):
            parts += [f"{state} {n}: {x['rss_kib'] / 1024:.1f} MiB ({x['kib_per_connection']} KiB/conn)"
                      for n, x in r[state].items()]
        return ", ".join(parts)

    runs = alternate([Target(t) for t in targets], rounds,
                     lambda t: memory_run(t, setup, idle_levels, active_levels, duration, kept_idle=kept_idle), describe)
    out = []
    for name, rs in runs.items():
        summary = {"target": name, "rounds": rs}
        cells = {"baseline_kib": [r["baseline_kib"] for r in rs]}
        for state in ("idle", "kept", "active"):
            for n in rs[0].get(state, {}):
                cells[f"{state}_{n}_rss_kib"] = [r[state][n]["rss_kib"] for r in rs]
                cells[f"{state}_{n}_kib_per_connection"] = [r[state][n]["kib_per_connection"] for r in rs]
        summary["median"] = {k: sorted(v)[len(v) // 2] for k, v in cells.items()}
        summary["min"] = {k: min(v) for k, v in cells.items()}
        summary["max"] = {k: max(v) for k, v in cells.items()}
        out.append(summary)
    return {"setup": {"threads": 1, "idle_levels": list(idle_levels), "active_levels": list(active_levels),
                      "kept_idle_s": kept_idle,
                      "active_duration_s": duration, "rounds": rounds,
                      "rss": "sum of VmRSS over the proxy's processes; active: peak of samples every 0.1 s",
                      "per_connection": "(RSS at N - RSS at rest) / N, KiB",
                      "nofile_limit": procs.nofile_limit()},
            "runs": out}

