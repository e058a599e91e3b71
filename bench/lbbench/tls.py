"""TLS and HTTP/2 at the edge, side by side: our balancer (`--tls-listen`),
HAProxy (`bind ... ssl crt ... alpn h2,http/1.1`) and nginx (`listen ...
ssl http2`), each terminating TLS with the same self-signed ECDSA P-256
certificate and forwarding HTTP/1.1 to the same 3 replicas.

Three loads, each in alternating rounds (median kept, every round shown):

  keepalive   wrk over TLS (HTTP/1.1), kept-alive connections: TLS record
              cost only
  handshakes  h2load --h1 with `Connection: close`: every request on a new
              connection, so a full TLS handshake each (h2load offers no
              session to resume); requests/s = handshakes/s
  h2          h2load over TLS with ALPN h2, several streams per connection

The client (wrk, h2load) runs on the load core like every other suite;
ECDSA verification costs the client about as much as signing costs the
server, so the handshake rate is bounded by both sides: the ratio between
proxies, measured with the same client, is the comparable figure."""

import re
import subprocess
import time

from . import procs, proxies, wrk
from .measure import alternate, median_of

H2_STREAMS = 10  # concurrent streams per h2 connection (h2load -m)


def certificate(workdir):
    """A self-signed ECDSA P-256 certificate for localhost: (cert, key,
    combined PEM for HAProxy)."""
    cert, key, pem = workdir / "tls-cert.pem", workdir / "tls-key.pem", workdir / "tls.pem"
    if not pem.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        pem.write_text(cert.read_text() + key.read_text())
    return cert, key, pem


def haproxy_tls_config(port, backends, threads, pem, maxconn=5000):
    """The headline's HAProxy configuration with its frontend on TLS (the
    forwarding fields then say `https`, as ours do)."""
    cfg = proxies.haproxy_config(port, backends, threads, maxconn)
    cfg = cfg.replace("X-Forwarded-Proto http\n", "X-Forwarded-Proto https\n").replace("proto=http;", "proto=https;")
    return cfg.replace(f"bind 127.0.0.1:{port}\n", f"bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1\n")


def nginx_tls_config(port, backends, threads, workdir, cert, key):
    """The headline's nginx configuration with its server on TLS and h2."""
    cfg = proxies.nginx_config(port, backends, threads, workdir)
    return cfg.replace(f"listen 127.0.0.1:{port} reuseport;\n",
                       f"listen 127.0.0.1:{port} ssl http2 reuseport;\n"
                       f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
                       "        ssl_protocols TLSv1.2 TLSv1.3;\n")


def start(kind, threads, setup, cert, key, pem):
    """One TLS-terminating proxy; (process, TLS port)."""
    port = procs.free_port()
    d = setup.workdir / f"{kind}-tls-{port}"
    d.mkdir(parents=True, exist_ok=True)
    cpus = setup.proxy_cpus[threads]
    if kind == "ours":
        cmd = proxies.ours_command(setup.bins, procs.free_port(), setup.backends, threads,
                                   extra=["--tls-listen", f"127.0.0.1:{port}", "--tls-cert", str(cert),
                                          "--tls-key", str(key)])
        proc = procs.start(cmd, cpus, nofile=procs.NOFILE)
    elif kind == "haproxy":
        cfg = d / "haproxy.cfg"
        cfg.write_text(haproxy_tls_config(port, setup.backends, threads, pem))
        proc = procs.start(["haproxy", "-db", "-f", str(cfg)], cpus, nofile=procs.NOFILE)
    elif kind == "nginx":
        cfg = d / "nginx.conf"
        cfg.write_text(nginx_tls_config(port, setup.backends, threads, d, cert, key))
        proc = procs.start(["nginx", "-c", str(cfg), "-p", str(d)], cpus, nofile=procs.NOFILE)
    else:
        raise ValueError(kind)
    deadline = time.time() + 10
    while time.time() < deadline:
        ok = subprocess.run(["curl", "-skf", "-o", "/dev/null", f"https://127.0.0.1:{port}/home"]).returncode == 0
        if ok:
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    procs.stop(proc)
    raise RuntimeError(f"{kind} did not answer over TLS on {port}: {procs.stderr_of(proc)}")


def parse_h2load(out):
    """h2load's summary: requests/s, outcome counts, mean latency, and the
    protocol it negotiated."""
    r = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if not m:
        raise RuntimeError(f"no h2load summary in: {out[-800:]}")
    r["seconds"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    total, _, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    r.update(requests=done, succeeded=ok, errors=failed + errored + timeout)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["non_2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if m:
        r["latency_ms"] = {"mean": wrk.to_ms(m.group(5) + m.group(6)), "max": wrk.to_ms(m.group(3) + m.group(4))}
    m = re.search(r"Application protocol: (\S+)", out)
    r["protocol"] = m.group(1) if m else None
    return r


def h2load(url, mode, connections, duration, cpus, requests):
    """One h2load run: `h2` (streams multiplexed per connection) or
    `handshakes` (HTTP/1.1, a new connection per request; h2load reconnects
    when the server closes, with no session resumption)."""
    if mode == "h2":
        args = ["-c", str(connections), "-m", str(H2_STREAMS), "-D", str(duration)]
    else:
        # By count: -D measures only while connections stay up.
        args = ["--h1", "-H", "connection: close", "-c", str(connections), "-n", str(requests)]
    cmd = ["taskset", "-c", cpus, "h2load", *args, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-600:]}{p.stdout[-600:]}")
    return parse_h2load(p.stdout)


def one(kind, mode, threads, setup, cert_files, load):
    """Starts `kind`, warms it up, measures one run of `mode`, stops it."""
    proc, port = start(kind, threads, setup, *cert_files)
    url = f"https://127.0.0.1:{port}/home"
    try:
        pids = procs.process_tree(proc.pid)
        if mode == "keepalive":
            wrk.run(url, load["connections"], load["warmup"], setup.load_cpus)
            cpu0 = procs.cpu_seconds(pids)
            r = wrk.run(url, load["connections"], load["duration"], setup.load_cpus)
            r["seconds"] = load["duration"]
        else:
            h2load(url, mode, load["connections"], load["warmup"], setup.load_cpus, load["handshakes"] // 5)
            cpu0 = procs.cpu_seconds(pids)
            r = h2load(url, mode, load["connections"], load["duration"], setup.load_cpus, load["handshakes"])
        cpu = procs.cpu_seconds(procs.process_tree(proc.pid)) - cpu0
        r["proxy_cpu_s"] = round(cpu, 2)
        r["cpu_us_per_request"] = round(cpu * 1e6 / r["requests"], 1) if r["requests"] else None
        r["proxy_peak_rss_mib"] = round(procs.peak_rss_kib(procs.process_tree(proc.pid)) / 1024, 1)
    finally:
        procs.stop(proc)
    r.pop("raw", None)
    return r


def suite(setup, targets, rounds, connections=50, duration=5, warmup=1, threads=1, handshakes=20000):
    """Every mode for every target in alternating rounds."""
    cert_files = certificate(setup.workdir)
    kinds = [t for t in targets if t in ("ours", "haproxy", "nginx")]
    load = {"connections": connections, "duration": duration, "warmup": warmup, "handshakes": handshakes}
    out = []
    for mode in ("keepalive", "handshakes", "h2"):
        runs = alternate([proxies.Target(k) for k in kinds], rounds,
                         lambda t, mode=mode: one(t.kind, mode, threads, setup, cert_files, load),
                         lambda r, mode=mode: f"tls {mode:10} {r['rps']:.0f} req/s  errors {r['errors']}  "
                                              f"cpu {r['proxy_cpu_s']}s")
        for name, rs in runs.items():
            r = median_of(rs)
            r.update(target=name, mode=mode, connections=connections, threads=threads)
            out.append(r)
    return {"setup": {"connections": connections, "duration_s": duration, "warmup_s": warmup, "threads": threads,
                      "rounds": rounds, "handshakes_per_run": handshakes, "h2_streams": H2_STREAMS,
                      "certificate": "self-signed ECDSA P-256 (openssl req -newkey ec)",
                      "clients": {"keepalive": f"wrk -t1 -c{connections} -d{duration}s https://.../home",
                                  "handshakes": f"h2load --h1 -H 'connection: close' -c{connections} -n{handshakes}",
                                  "h2": f"h2load -c{connections} -m{H2_STREAMS} -D{duration} (ALPN h2)"}},
            "runs": out}
