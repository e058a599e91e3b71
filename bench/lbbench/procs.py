"""Children of the bench: started pinned (taskset) in their own process
group, every one stopped on every exit path; ports, readiness, /proc probes."""

import atexit
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILDREN = []  # every Popen started here and not yet stopped; cleanup() stops them
NOFILE = 65536  # RLIMIT_NOFILE asked for the bench and its children (10k connections need ~20k)


def raise_nofile(want=NOFILE):
    """Raises this process's RLIMIT_NOFILE towards `want` (the hard limit
    too when allowed, i.e. as root); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    for new in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            return new[0]
        except (ValueError, OSError):
            continue
    return soft


def nofile_limit():
    """The most file descriptors a child can have: the hard RLIMIT_NOFILE
    after raise_nofile() (a container without CAP_SYS_RESOURCE keeps its
    hard limit, e.g. 20000)."""
    return raise_nofile()


def start(cmd, cpus=None, env=None, cwd=None, nofile=None, stdout=None):
    """Starts `cmd` (pinned to `cpus` with taskset) in its own process group.
    `nofile` raises the child's RLIMIT_NOFILE first."""
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    full_env = dict(os.environ, **(env or {}))
    errlog = tempfile.TemporaryFile()  # not a pipe: a chatty child must never block on it
    pre = (lambda: raise_nofile(nofile)) if nofile else None
    p = subprocess.Popen(
        cmd,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=errlog,
        start_new_session=True,
        preexec_fn=pre,
    )
    p.errlog = errlog
    CHILDREN.append(p)
    return p


def stderr_of(p, tail=2000):
    p.errlog.seek(0)
    return p.errlog.read().decode(errors="replace")[-tail:]


def stop(p, timeout=5.0, sig=signal.SIGTERM):
    """Stops `p`'s whole process group (SIGTERM, then SIGKILL after
    `timeout`) and forgets it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    # A group may outlive its leader (nginx workers): make sure it is gone.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p in CHILDREN:
        CHILDREN.remove(p)


def cleanup(*_):
    for p in reversed(list(CHILDREN)):
        stop(p)
    CHILDREN.clear()


def install_cleanup():
    """Every child is stopped at exit, on SIGINT/SIGTERM/SIGHUP too."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    atexit.register(cleanup)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """`n` distinct free ports (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(url, proc, timeout=10.0):
    """Waits until `url` answers 200; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}: {stderr_of(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


# ------------------------------------------------------------ /proc probes


def process_tree(pid):
    """`pid` and every descendant (nginx workers are children of the master)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return pids


def proxy_pids(proc):
    """The processes doing a proxy's work: under taskset and valgrind the
    Popen is the tool itself, which execs the proxy, so the tree is the same."""
    return process_tree(proc.pid)


def cpu_seconds(pids):
    """utime + stime of these processes, in seconds (fields 14, 15 of stat)."""
    total = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _status_kib(pids, key):
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def peak_rss_kib(pids):
    """Sum of VmHWM over the processes (shared pages count once per process)."""
    return _status_kib(pids, "VmHWM:")


def rss_kib(pids):
    """Sum of VmRSS over the processes now."""
    return _status_kib(pids, "VmRSS:")


def open_fds(pids):
    total = 0
    for p in pids:
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return total


def busy_seconds():
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------- idle connections


class IdleConnections:
    """`n` TCP connections to a port, opened and held without sending a byte.
    Held by this process (its RLIMIT_NOFILE is raised by the bench)."""

    def __init__(self):
        self.socks = []

    def open(self, port, n, timeout=20.0):
        import selectors
        sel = selectors.DefaultSelector()
        pending = 0
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)
            if err not in (0, 115):  # EINPROGRESS
                raise OSError(err, f"connect to {port}: {os.strerror(err)}")
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect to {port}: {os.strerror(err)}")
                sel.unregister(key.fileobj)
                pending -= 1
        sel.close()
        if pending:
            raise RuntimeError(f"{pending} of {n} connections to {port} not established in {timeout}s")

    def request_each(self, path="/home", timeout=30.0):
        """Sends one GET `path` on every held connection and reads each
        whole response (its Content-Length), leaving the connections kept
        alive between requests; returns how many were answered 2xx."""
        import selectors
        req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        sel = selectors.DefaultSelector()
        for s in self.socks:
            s.sendall(req)
            sel.register(s, selectors.EVENT_READ, bytearray())
        ok, pending = 0, len(self.socks)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                buf = key.data
                chunk = key.fileobj.recv(65536)
                buf += chunk
                done = not chunk
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0 and not done:
                    length = parse_content_length(bytes(buf[:head_end]))
                    done = length is not None and len(buf) - head_end - 4 >= length
                if done:
                    ok += bool(re.match(rb"HTTP/1\.1 2\d\d ", bytes(buf[:13])))
                    sel.unregister(key.fileobj)
                    pending -= 1
        sel.close()
        return ok

    def close(self):
        for s in self.socks:
            s.close()
        self.socks.clear()

    def __len__(self):
        return len(self.socks)


def parse_content_length(head):
    """The Content-Length of a response head (bytes), or None."""
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    return int(m.group(1)) if m else None
