"""The set-up the measurement scripts here share: `bench/lbbench` on the
path, 3 replicas pinned to core 1, one proxy (1 worker, one process) on
core 0, everything stopped on exit."""
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
from lbbench import procs, proxies  # noqa: E402


@contextlib.contextmanager
def proxy_under_test(bins, target, connections):
    """Yields (proxy process, its port, replica ports)."""
    procs.install_cleanup()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backends, _ = proxies.start_replicas(Path(bins), 3, "1")
            proc, port = proxies.start(target, 1, backends, Path(bins), Path(tmp), "0",
                                       connections=connections, single_process=True)
            try:
                yield proc, port, backends, Path(tmp)
            finally:
                procs.stop(proc)
    finally:
        procs.cleanup()
