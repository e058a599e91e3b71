"""The machine a result was measured on, tool versions, and installing the tools."""

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import log

# tool -> Debian package that provides it
TOOLS = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk", "taskset": "util-linux"}


def version(cmd, name):
    """`name X.Y.Z...` from the tool's version banner (only the version)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    m = re.search(r"(\d+\.\d+[\w.+~-]*)", p.stdout + p.stderr)
    return f"{name} {m.group(1)}" if m else None


def cpu_model():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def cpu_mhz():
    """The clock /proc/cpuinfo reports for the first CPU (None if it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def machine(tools=True):
    """What results.json, pick.json and profile.json record about the host.
    With `tools`, also the versions of HAProxy, nginx and wrk."""
    doc = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        # Other work on the machine skews every figure: recorded, not hidden.
        "loadavg_at_start": loadavg(),
    }
    if tools:
        doc.update(
            haproxy=version(["haproxy", "-v"], "HAProxy"),
            nginx=version(["nginx", "-v"], "nginx"),
            wrk=version(["wrk", "-v"], "wrk"),
        )
        mhz = cpu_mhz()
        if mhz:
            doc["cpu_mhz"] = mhz
    return doc


def ensure_tools(install, extra=()):
    """Installs the missing tools (and `extra` {tool: package}) with apt-get."""
    wanted = {**TOOLS, **dict(extra)}
    need = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not need:
        return
    if not install:
        sys.exit(f"missing tools: {need}; install them or drop --no-install")
    log(f"installing {need} with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for pkg in need:
        policy = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
        if "Candidate: (none)" in policy or not policy.strip():
            subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
            break
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *need], check=True, env=env)
    # The nginx package may start a system instance; ours run on their own ports, so leave it.
