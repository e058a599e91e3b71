#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium (Debian's `chromium`
and `chromium-driver`) driven by Selenium, against the real `balancer`
binary with real replica processes on loopback.

Checks: the page shows the 3 replicas; a replica killed with SIGKILL is
shown down and then up again within 2 s (the process orchestrator replaces
it); the add and remove controls change the pool and `/rep` agrees; an
invalid change and a wrong token show the API's error verbatim; the page fits a narrow screen; 100 replicas render and the
table stays usable. Saves screenshots under analysis/dashboard/. Also
parses the OpenMetrics scrape with the Prometheus project's Python parser
(strict about the format: `# EOF`, `_total`, `# UNIT`).

Usage: dashboard.py BALANCER_BINARY OUT_DIR
Exits non-zero on the first failed check.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")  # never fetch a driver

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

KILL_DEADLINE_S = 2.0


def fail(msg):
    raise AssertionError(msg)


def wait_for(what, check, timeout=10.0, every=0.05):
    """Polls `check` until it returns a truthy value or `timeout` passes."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        value = check()
        if value:
            return value
        time.sleep(every)
    fail(f"timed out after {timeout} s waiting for: {what}")


class Balancer:
    """A balancer process; its first stdout line is its address."""

    def __init__(self, binary, args, token=None):
        self.token = token
        cmd = [binary, "--listen", "127.0.0.1:0", "--log", "warn"] + args
        if token:
            cmd += ["--admin-token", token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("balancer listening on "):
            fail(f"balancer did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].strip()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def api(self, path, method="GET", body=None):
        req = urllib.request.Request(self.url + path, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        data = json.dumps(body).encode() if body is not None else None
        with urllib.request.urlopen(req, data=data, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Load(threading.Thread):
    """Steady GETs of /home so the charts and rates have something to show."""

    def __init__(self, url, per_second=50):
        super().__init__(daemon=True)
        self.url, self.pause, self.running = url, 1.0 / per_second, True

    def run(self):
        while self.running:
            try:
                urllib.request.urlopen(self.url + "/home", timeout=5).read()
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(self.pause)


def browser(width, height):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def rows(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#replicas tbody tr')]"
        ".map(tr => [tr.dataset.name, tr.children[2].textContent])")


def set_value(driver, element_id, value):
    el = driver.find_element(By.ID, element_id)
    el.clear()
    if value:
        el.send_keys(value)


# Records every health the row of `name` shows, with the time, as the
# page changes it: a replacement can take only tens of milliseconds, too
# quick to catch by sampling.
WATCH = """
const name = arguments[0];
window.__health = [];
const tbody = document.querySelector('#replicas tbody');
const record = () => {
  const tr = tbody.querySelector(`tr[data-name="${name}"]`);
  const h = tr ? tr.children[2].textContent : 'missing';
  const log = window.__health;
  if (!log.length || log[log.length - 1].h !== h) log.push({h, t: Date.now()});
};
record();
new MutationObserver(record).observe(tbody, {subtree: true, childList: true, characterData: true});
"""


def check_openmetrics(lb):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    req = urllib.request.Request(lb.url + "/lb/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0",
        "Authorization": f"Bearer {lb.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        kind = resp.headers["Content-Type"]
        text = resp.read().decode()
    if not kind.startswith("application/openmetrics-text"):
        fail(f"OpenMetrics asked, {kind} given")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in [("lb_requests", "counter"), ("lb_replica_latency_seconds", "histogram"),
                       ("lb_client_errors", "counter"), ("lb_pool_replicas", "gauge")]:
        if families.get(name) is None or families[name].type != kind:
            fail(f"OpenMetrics scrape lacks the {kind} {name}")
    print(f"ok: the OpenMetrics scrape parses ({len(families)} families)")


def main_scenario(binary, out_dir):
    token = "t-" + secrets.token_hex(8)
    lb = Balancer(binary, ["--replicas", "3", "--policy", "ring"], token)
    load = Load(lb.url)
    load.start()
    check_openmetrics(lb)
    driver = browser(1400, 2100)
    try:
        driver.get(lb.url + "/lb/dashboard")
        if driver.title != "Load balancer dashboard":
            fail(f"title: {driver.title!r}")
        # Without the token the data endpoints refuse, and the page says so.
        wait_for("the 401 without a token", lambda: "HTTP 401" in
                 driver.find_element(By.ID, "error").text)
        set_value(driver, "token", token)
        driver.find_element(By.ID, "token-btn").click()
        want = [["server-1", "up"], ["server-2", "up"], ["server-3", "up"]]
        wait_for("three replicas up", lambda: rows(driver) == want)
        if driver.find_element(By.ID, "error").is_displayed():
            fail("error still shown with the right token")
        print("ok: the page shows the 3 replicas", rows(driver))

        # SIGKILL a replica: shown down, then up, within 2 s.
        time.sleep(1.5)  # a few samples for the rates first
        driver.execute_script(WATCH, "server-2")
        before = {r["name"]: r["pid"] for r in lb.api("/lb/status")["replicas"]}
        killed_at = time.time() * 1000
        os.kill(before["server-2"], signal.SIGKILL)

        def down_then_up():
            log = driver.execute_script("return window.__health")
            down = next((e for e in log if e["h"] in ("down", "suspect")), None)
            up = down and next((e for e in log if e["t"] >= down["t"] and e["h"] == "up"), None)
            return (down, up, log) if up else None

        down, up, log = wait_for("server-2 shown down then up", down_then_up,
                                 timeout=KILL_DEADLINE_S + 1)
        took_down, took_up = down["t"] - killed_at, up["t"] - killed_at
        print(f"ok: server-2 shown {down['h']} {took_down:.0f} ms after the kill, "
              f"up again {took_up:.0f} ms after it; rows went {[e['h'] for e in log]}")
        if took_up > KILL_DEADLINE_S * 1000:
            fail(f"back up only after {took_up:.0f} ms")
        after = {r["name"]: r["pid"] for r in lb.api("/lb/status")["replicas"]}
        if after["server-2"] == before["server-2"]:
            fail("server-2 was not replaced")
        timeline = driver.find_element(By.ID, "events").text
        for kind in ("exited", "replacing", "replaced"):
            if kind not in timeline:
                fail(f"the timeline lacks {kind}: {timeline}")
        why = driver.execute_script(
            "return document.querySelector('tr[data-name=\"server-2\"] td.why').textContent")
        print(f"ok: timeline shows exited/replacing/replaced; server-2's why: {why!r}")

        # The add control.
        set_value(driver, "add-n", "1")
        set_value(driver, "add-names", "")
        driver.find_element(By.ID, "add-btn").click()
        wait_for("server-4 in the table", lambda: ["server-4", "up"] in rows(driver), timeout=15)
        rep = lb.api("/rep")["message"]
        if rep["N"] != 4 or "server-4" not in rep["replicas"]:
            fail(f"/rep disagrees: {rep}")
        result = driver.find_element(By.ID, "result").text
        if "server-4" not in result:
            fail(f"the add result: {result!r}")
        print("ok: the add control added server-4; /rep says", rep)

        # A named add beyond what n allows: the API's error, verbatim.
        set_value(driver, "add-n", "1")
        set_value(driver, "add-names", "a, b")
        driver.find_element(By.ID, "add-btn").click()
        want_err = "Length of hostname list is more than newly added instances"
        wait_for("the add error", lambda: want_err in driver.find_element(By.ID, "result").text)
        print("ok: an invalid add shows:", driver.find_element(By.ID, "result").text)

        time.sleep(4)  # let the charts and the 10 s rates fill in a little
        driver.save_screenshot(os.path.join(out_dir, "dashboard.png"))

        # A narrow screen: nothing sticks out sideways; the table scrolls in its box.
        driver.set_window_size(390, 1600)
        time.sleep(1.2)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if overflow > 1:
            fail(f"the page is {overflow}px wider than a narrow screen")
        driver.save_screenshot(os.path.join(out_dir, "dashboard-narrow.png"))
        driver.set_window_size(1400, 2100)
        print("ok: fits a 390 px screen")

        # The remove control, by name.
        set_value(driver, "rm-n", "1")
        set_value(driver, "rm-names", "server-4")
        driver.find_element(By.ID, "rm-btn").click()
        wait_for("server-4 gone from the table",
                 lambda: "server-4" not in [r[0] for r in rows(driver)], timeout=15)
        rep = lb.api("/rep")["message"]
        if rep["N"] != 3 or "server-4" in rep["replicas"]:
            fail(f"/rep disagrees after the remove: {rep}")
        print("ok: the remove control removed server-4; /rep says", rep)

        # A wrong token: the API's 401, as it words it.
        set_value(driver, "token", "wrong-" + token)
        driver.find_element(By.ID, "token-btn").click()
        err = wait_for("the wrong-token error", lambda: (
            lambda t: t if "HTTP 401" in t and "missing or wrong admin token" in t else None)(
                driver.find_element(By.ID, "error").text))
        print("ok: a wrong token shows:", err)
    finally:
        driver.quit()
        load.running = False
        lb.stop()


def hundred_replicas(binary, out_dir):
    """100 static upstreams (one real replica behind them all): every row
    renders, and the table scrolls inside its own box."""
    backend = subprocess.Popen([binary, "backend", "--id", "shared", "--listen", "127.0.0.1:0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lb = None
    driver = None
    try:
        port = wait_for("the shared replica's port", lambda: listening_port(backend.pid))
        ups = ",".join(f"r{i}=http://127.0.0.1:{port}" for i in range(1, 101))
        lb = Balancer(binary, ["--orchestrator", "static", "--upstream", ups,
                               "--max-replicas", "100", "--policy", "maglev"])
        load = Load(lb.url, per_second=100)
        load.start()
        driver = browser(1400, 2100)
        started = time.monotonic()
        driver.get(lb.url + "/lb/dashboard")
        wait_for("100 rows", lambda: len(rows(driver)) == 100, timeout=15)
        print(f"ok: 100 replicas rendered {time.monotonic() - started:.2f} s after loading")
        box = driver.execute_script(
            "const w = document.querySelector('.table-wrap');"
            "return [w.scrollHeight, w.clientHeight, window.innerHeight]")
        if not box[0] > box[1] or box[1] > box[2]:
            fail(f"the table does not scroll in its own box: {box}")
        time.sleep(3)
        driver.save_screenshot(os.path.join(out_dir, "dashboard-100.png"))
        load.running = False
    finally:
        if driver:
            driver.quit()
        if lb:
            lb.stop()
        backend.kill()
        backend.wait()


def listening_port(pid):
    """The TCP port process `pid` listens on (from /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                return int(parts[1].split(":")[1], 16)
    return None


def main():
    binary, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    main_scenario(binary, out_dir)
    hundred_replicas(binary, out_dir)
    print("dashboard browser test: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
