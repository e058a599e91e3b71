"""Running wrk and reading its output."""

import re
import subprocess
import tempfile
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
SIZE = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot read wrk latency '{text}'")
    return float(m.group(1)) * UNITS[m.group(2)]


def to_bytes(text):
    """wrk's sizes (`27.53MB`, `1.02GB`, `512.00B`) are binary multiples."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text)
    if not m:
        raise ValueError(f"cannot read wrk size '{text}'")
    return float(m.group(1)) * SIZE[m.group(2)]


def parse_wrk(out):
    """Requests/s, latency percentiles (ms), requests, bytes and errors of one wrk run."""
    r = {"raw": out}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise ValueError(f"not wrk output: {out[-500:]!r}")
    r["rps"] = float(rps.group(1))
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    r["latency_ms"] = {"avg": to_ms(lat.group(1)), "max": to_ms(lat.group(3))} if lat else {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M):
        r["latency_ms"][f"p{pct}"] = to_ms(value)
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), (\S+) read", out)
    r["requests"] = int(done.group(1))
    r["read_bytes"] = int(to_bytes(done.group(4)))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    r["socket_errors"] = sum(int(x) for x in sock.groups()) if sock else 0
    r["errors"] = r["non_2xx"] + r["socket_errors"]
    return r


UPLOAD_LUA = """-- POST a {size}-byte body on every request
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def upload_script(size, workdir):
    path = Path(workdir) / f"upload-{size}.lua"
    path.write_text(UPLOAD_LUA.format(size=size))
    return path


def command(url, connections, duration, cpus=None, threads=1, script=None, timeout_s=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if timeout_s:
        cmd.append(f"--timeout={timeout_s}s")
    if script:
        cmd += ["-s", str(script)]
    cmd.append(url)
    return ["taskset", "-c", cpus, *cmd] if cpus is not None else cmd


def run(url, connections, duration, cpus=None, threads=1, script=None, timeout_s=None, nofile=None):
    """One wrk run; its parsed result."""
    from .procs import raise_nofile
    cmd = command(url, connections, duration, cpus, threads, script, timeout_s)
    pre = (lambda: raise_nofile(nofile)) if nofile else None
    with tempfile.TemporaryFile() as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=duration + 60,
                           preexec_fn=pre)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}: {err.read().decode(errors='replace')[-1000:]}")
    return parse_wrk(p.stdout)


def spawn(url, connections, duration, cpus=None, threads=1, script=None, nofile=None, timeout_s=None):
    """wrk started in the background (for sampling the proxy meanwhile); finish with `collect`."""
    from .procs import raise_nofile
    from .procs import CHILDREN
    cmd = command(url, connections, duration, cpus, threads, script, timeout_s)
    pre = (lambda: raise_nofile(nofile)) if nofile else None
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=pre,
                         start_new_session=True)
    CHILDREN.append(p)  # stopped by procs.cleanup() if the bench dies meanwhile
    return p


def collect(p, timeout):
    from .procs import CHILDREN
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p in CHILDREN and p.poll() is not None:
            CHILDREN.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"{p.args} exited with {p.returncode}")
    return parse_wrk(out)
