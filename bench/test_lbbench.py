"""Unit tests of the bench's pure parts: `python3 -m unittest discover bench`
from the repository root (no proxy, wrk or cargo needed)."""

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lbbench import cargo, chart, counters, procs, proxies, report, report_suites, tls, wrk  # noqa: E402

WRK_OUT = """Running 3s test @ http://127.0.0.1:38167/home
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   667.02us  135.09us   1.59ms   84.76%
    Req/Sec    58.96k     1.02k   60.26k    86.67%
  Latency Distribution
     50%  679.00us
     75%  740.00us
     90%  788.00us
     99%    0.97ms
  175993 requests in 3.00s, 27.53MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec:  58598.72
Transfer/sec:      9.16MB
"""


class WrkParsing(unittest.TestCase):
    def test_fields(self):
        r = wrk.parse_wrk(WRK_OUT)
        self.assertEqual(r["rps"], 58598.72)
        self.assertEqual(r["requests"], 175993)
        self.assertAlmostEqual(r["latency_ms"]["avg"], 0.66702)
        self.assertAlmostEqual(r["latency_ms"]["p50"], 0.679)
        self.assertAlmostEqual(r["latency_ms"]["p99"], 0.97)
        self.assertAlmostEqual(r["latency_ms"]["max"], 1.59)
        self.assertEqual(r["socket_errors"], 7)
        self.assertEqual(r["non_2xx"], 3)
        self.assertEqual(r["errors"], 10)
        self.assertEqual(r["read_bytes"], int(27.53 * 1024 * 1024))

    def test_units(self):
        self.assertEqual(wrk.to_ms("2.00s"), 2000.0)
        self.assertEqual(wrk.to_ms("1.5m"), 90000.0)
        self.assertAlmostEqual(wrk.to_ms("250.00us"), 0.25)
        self.assertEqual(wrk.to_bytes("1.00GB"), 1024**3)
        with self.assertRaises(ValueError):
            wrk.to_ms("fast")

    def test_no_errors_lines(self):
        out = WRK_OUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 5\n", "").replace(
            "  Non-2xx or 3xx responses: 3\n", "")
        self.assertEqual(wrk.parse_wrk(out)["errors"], 0)

    def test_not_wrk(self):
        with self.assertRaises(ValueError):
            wrk.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")

    def test_upload_script(self):
        with tempfile.TemporaryDirectory() as d:
            text = wrk.upload_script(1048576, d).read_text()
        self.assertIn('wrk.method = "POST"', text)
        self.assertIn('string.rep("x", 1048576)', text)


class Configs(unittest.TestCase):
    def test_haproxy(self):
        cfg = proxies.haproxy_config(8080, [9001, 9002], 2, maxconn=21000, balance="leastconn")
        self.assertIn("nbthread 2", cfg)
        self.assertIn("bind 127.0.0.1:8080", cfg)
        self.assertIn("balance leastconn", cfg)
        self.assertIn("    server s1 127.0.0.1:9001\n    server s2 127.0.0.1:9002", cfg)
        self.assertEqual(cfg.count("maxconn 21000"), 2)  # global and defaults (frontends)
        self.assertIn("option forwardfor", cfg)
        self.assertIn("http-reuse always", cfg)

    # The fields our balancer adds (proxy/headers.rs, proxy/request_id.rs):
    # the comparison gives the other proxies the same job.
    FORWARDING = ("X-Request-ID", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")

    def test_haproxy_adds_the_fields_ours_adds(self):
        cfg = proxies.haproxy_config(8080, [9001], 1)
        for name in self.FORWARDING:
            self.assertIn(f"http-request set-header {name} ", cfg)
        self.assertIn("http-response set-header X-Request-ID", cfg)
        self.assertIn('Forwarded "for=%[src];proto=http;host=\\"%[req.hdr(host)]\\""', cfg)
        # Rules live in the frontend: HAProxy refuses them in `defaults`.
        self.assertLess(cfg.index("frontend fe"), cfg.index("http-request"))

    def test_haproxy_xff_adds_only_x_forwarded_for(self):
        cfg = proxies.haproxy_config(8080, [9001], 1, forwarding="xff")
        self.assertIn("option forwardfor", cfg)
        self.assertNotIn("http-request", cfg)
        self.assertNotIn("X-Request-ID", cfg)

    def test_nginx_adds_the_fields_ours_adds(self):
        cfg = proxies.nginx_config(8080, [9001], 1, Path("/w"))
        for name in self.FORWARDING:
            self.assertIn(f"proxy_set_header {name} ", cfg)
        self.assertIn("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", cfg)
        self.assertIn("add_header X-Request-ID $request_id;", cfg)

    def test_tls_haproxy_says_https(self):
        cfg = tls.haproxy_tls_config(8443, [9001], 1, "/w/tls.pem")
        self.assertIn("X-Forwarded-Proto https\n", cfg)
        self.assertIn("proto=https;", cfg)
        self.assertNotIn("proto=http;", cfg)

    def test_nginx(self):
        cfg = proxies.nginx_config(8080, [9001, 9002], 1, Path("/w"), worker_connections=21000,
                                   master_process=False, client_max_body_size="2m")
        self.assertIn("worker_processes 1;", cfg)
        self.assertIn("worker_connections 21000;", cfg)
        self.assertIn("worker_rlimit_nofile 42000;", cfg)
        self.assertIn("master_process off;", cfg)
        self.assertIn("client_max_body_size 2m;", cfg)
        self.assertIn("server 127.0.0.1:9001;", cfg)
        self.assertIn("listen 127.0.0.1:8080 reuseport;", cfg)
        self.assertIn("pid /w/nginx.pid;", cfg)
        self.assertEqual(cfg.count("{"), cfg.count("}"))

    def test_nginx_defaults_as_before(self):
        cfg = proxies.nginx_config(1, [2], 2, Path("/w"))
        self.assertIn("worker_connections 10000;", cfg)
        self.assertIn("worker_rlimit_nofile 20000;", cfg)
        self.assertNotIn("master_process", cfg)

    def test_worker_connections_cover_both_sides(self):
        self.assertEqual(proxies.nginx_worker_connections(500), 10000)
        self.assertGreaterEqual(proxies.nginx_worker_connections(10000), 20000)

    def test_origin(self):
        cfg = proxies.origin_config([9001, 9002, 9003], Path("/w"))
        for p in (9001, 9002, 9003):
            self.assertIn(f"listen 127.0.0.1:{p} reuseport;", cfg)
        self.assertIn("location = /upload", cfg)
        self.assertIn("location = /heartbeat", cfg)
        self.assertIn("client_max_body_size 2m;", cfg)
        self.assertEqual(cfg.count("{"), cfg.count("}"))

    def test_ours_command(self):
        cmd = proxies.ours_command(Path("/b"), 8080, [9001, 9002], 1, "p2c", ["--slots", "4096"])
        self.assertEqual(cmd[0], "/b/balancer")
        self.assertEqual(cmd.count("--upstream"), 2)
        self.assertIn("http://127.0.0.1:9002", cmd)
        self.assertEqual(cmd[cmd.index("--policy") + 1], "p2c")
        self.assertEqual(cmd[-2:], ["--slots", "4096"])


class Counters(unittest.TestCase):
    def test_perf_stat(self):
        text = ("# started on Thu\n\n1234567,,instructions,1000,100.00,1.10,insn per cycle\n"
                "2345678,,cycles,1000,100.00,,\n")
        self.assertEqual(counters.parse_perf_stat(text), {"instructions": 1234567, "cycles": 2345678})

    def test_perf_stat_not_supported(self):
        text = "<not supported>,,instructions,0,100.00,,\n<not supported>,,cycles,0,100.00,,\n"
        self.assertEqual(counters.parse_perf_stat(text), {"instructions": None, "cycles": None})

    def test_callgrind_totals_not_summary(self):
        # with --instr-atstart=no the summary line can be 0 while totals counts
        self.assertEqual(counters.callgrind_totals("events: Ir\nsummary: 0\ntotals: 28533676\n"), 28533676)
        self.assertEqual(counters.callgrind_totals("events: Ir\nsummary: 42\n"), 42)
        with self.assertRaises(ValueError):
            counters.callgrind_totals("events: Ir\n")

    def test_count_script(self):
        lua = counters.COUNT_LUA.format(limit=5000, pid=42, marker="/tmp/m")
        self.assertIn("if n >= 5000 then", lua)
        self.assertIn("callgrind_control -i off 42", lua)


class Sizing(unittest.TestCase):
    def test_haproxy_maxconn_fits_the_fd_limit(self):
        self.assertEqual(proxies.haproxy_maxconn(500, nofile=20000), 5000)
        self.assertEqual(proxies.haproxy_maxconn(10000, nofile=65536), 10100)
        self.assertEqual(proxies.haproxy_maxconn(10000, nofile=20000), 9950)


class Memory(unittest.TestCase):
    def test_content_length(self):
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 52"
        self.assertEqual(procs.parse_content_length(head), 52)
        self.assertIsNone(procs.parse_content_length(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked"))

    def _suite(self, with_kept):
        cell = {"rss_kib": 2048, "kib_per_connection": 4.0, "accepted": 10, "answered": 9}
        rnd = {"baseline_kib": 1024, "idle": {"10": cell}, "active": {"10": cell}}
        if with_kept:
            rnd["kept"] = {"10": cell}
        keys = ["baseline_kib"] + [f"{s}_10_{k}" for s in ("idle", "kept", "active") if with_kept or s != "kept"
                                   for k in ("rss_kib", "kib_per_connection")]
        stats = {k: (1024 if k == "baseline_kib" else cell[k.split("_10_")[1]]) for k in keys}
        run = {"target": "ours", "rounds": [rnd], "median": stats, "min": stats, "max": stats}
        setup = {"idle_levels": [10], "active_levels": [10], "rss": "VmRSS", "active_duration_s": 3,
                 "per_connection": "(RSS at N - RSS at rest) / N", "rounds": 1, "nofile_limit": 1}
        return {"setup": setup, "runs": [run]}

    def test_kept_alive_column_and_unanswered(self):
        text = "\n".join(report_suites.memory_md({}, self._suite(True)))
        self.assertIn("kept-alive 10: KiB/conn", text)
        self.assertIn("answered 9–9 of 10", text)

    def test_results_without_kept_alive_still_render(self):
        text = "\n".join(report_suites.memory_md({}, self._suite(False)))
        self.assertNotIn("kept-alive 10:", text)
        self.assertIn("idle 10: KiB/conn", text)


class RoundsAhead(unittest.TestCase):
    @staticmethod
    def _row(*rounds):
        return {"repeats": [{"rps": rps, "latency_ms": {"p99": p99}} for rps, p99 in rounds]}

    def test_each_round_against_the_same_round(self):
        # each of our rounds against HAProxy's run of the same round, not
        # against its best or its median: ahead in the first and third
        ours = self._row((100, 2.0), (50, 4.0), (70, 3.0))
        haproxy = self._row((90, 2.5), (60, 3.5), (65, 3.1))
        self.assertEqual(report.rounds_ahead(ours, haproxy), "req/s 2 of 3, p99 2 of 3")

    def test_without_rounds(self):
        self.assertEqual(report.rounds_ahead({"rps": 1}, self._row((1, 1.0))), "n/a")
        self.assertEqual(report.rounds_ahead(self._row((1, 1.0)), None), "n/a")
        self.assertEqual(report.rounds_ahead(self._row((1, 1.0)), self._row((1, 1.0), (2, 2.0))), "n/a")


class CeilingColumns(unittest.TestCase):
    @staticmethod
    def _doc(*targets):
        rps = {"ours": 90.0, "haproxy": 80.0, "relay": 120.0, "direct": 200.0}
        return {"runs": [{"target": t, "connections": 50, "threads": 1, "rps": rps[t],
                          "latency_ms": {"p99": 2.0}} for t in targets]}

    def test_each_proxy_as_a_share_of_the_relay(self):
        last = report.ratios(self._doc("direct", "ours", "haproxy", "relay")).splitlines()[-1]
        self.assertTrue(last.endswith("| 0.75 | 0.67 |"), last)

    def test_without_the_relay(self):
        last = report.ratios(self._doc("direct", "ours", "haproxy")).splitlines()[-1]
        self.assertTrue(last.endswith("| n/a | n/a |"), last)


class TargetDir(unittest.TestCase):
    def test_from_metadata(self):
        meta = json.dumps({"packages": [], "target_directory": "/elsewhere/target", "workspace_root": "/w"})
        self.assertEqual(cargo.parse_target_dir(meta), Path("/elsewhere/target"))

    def test_missing(self):
        with self.assertRaises(KeyError):
            cargo.parse_target_dir("{}")


class Chart(unittest.TestCase):
    def test_one_style(self):
        panel = chart.Panel("req/s", ["a", "b"], ["ours", "haproxy"],
                            lambda gi, k: None if (gi, k) == (1, "haproxy") else (10.0 + gi, 9.0, 12.0))
        svg = chart.bar_chart("t", [panel], [("ours", "ours"), ("haproxy", "HAProxy")])
        self.assertTrue(svg.startswith("<svg"))
        self.assertEqual(svg.count("<rect x="), 3 + 2)  # 3 bars + 2 legend swatches
        self.assertIn(chart.COLOR["ours"], svg)

    def test_every_labelled_kind_has_a_colour_of_its_own(self):
        # the relay once fell back to the default grey, next to direct's
        self.assertEqual(set(chart.LABEL) - set(chart.COLOR), set())
        self.assertEqual(len(set(chart.COLOR.values())), len(chart.COLOR))

    def test_nice_steps(self):
        self.assertEqual(chart.nice_step(16115), 20000)
        self.assertEqual(chart.nice_step(0.3), 0.5)


if __name__ == "__main__":
    unittest.main()


H2LOAD_OUT = """starting benchmark...
spawning thread #0: 2 total client(s). 200 total requests
Application protocol: http/1.1
progress: 100% done

finished in 28.91ms, 6918.74 req/s, 0B/s
requests: 200 total, 200 started, 198 done, 196 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 196 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 0B (0) total, 17.97KB (18400) headers (space savings 0.00%), 10.94KB (11200) data
                     min         max         mean         sd        +/- sd
time for request:       29us       419us       161us        86us    64.50%
time for connect:       56us        69us        62us         9us   100.00%
"""


class Tls(unittest.TestCase):
    def test_h2load_summary(self):
        r = tls.parse_h2load(H2LOAD_OUT)
        self.assertAlmostEqual(r["rps"], 6918.74)
        self.assertAlmostEqual(r["seconds"], 0.02891)
        self.assertEqual((r["requests"], r["succeeded"], r["errors"], r["non_2xx"]), (198, 196, 2, 2))
        self.assertAlmostEqual(r["latency_ms"]["mean"], 0.161)
        self.assertAlmostEqual(r["latency_ms"]["max"], 0.419)
        self.assertEqual(r["protocol"], "http/1.1")

    def test_not_h2load(self):
        with self.assertRaises(RuntimeError):
            tls.parse_h2load("connection refused")

    def test_configs_terminate_tls(self):
        ha = tls.haproxy_tls_config(8443, [9001], 1, "/t/tls.pem")
        self.assertIn("bind 127.0.0.1:8443 ssl crt /t/tls.pem alpn h2,http/1.1\n", ha)
        ng = tls.nginx_tls_config(8443, [9001], 1, Path("/t"), "/t/c.pem", "/t/k.pem")
        self.assertIn("listen 127.0.0.1:8443 ssl http2 reuseport;", ng)
        self.assertIn("ssl_certificate /t/c.pem;", ng)
        self.assertIn("ssl_certificate_key /t/k.pem;", ng)


class Update(unittest.TestCase):
    def test_replaces_only_the_suites_run(self):
        from lbbench import run
        old = {"machine": "m", "label": "", "date_utc": "old", "elapsed_s": 1, "runs": ["headline"],
               "setup": {"elapsed_s": {"headline": 5, "memory": 7}},
               "suites": {"memory": {"setup": {}, "runs": [1]}, "tls": {"setup": {}, "runs": ["old"]}}}
        new = {"machine": "m2", "label": "", "date_utc": "new", "elapsed_s": 2, "runs": [],
               "setup": {"elapsed_s": {"tls": 9}}, "suites": {"tls": {"setup": {}, "runs": ["new"]}}}
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "results.json"
            self.assertIs(run.updated(path, new, ["tls"]), new)
            path.write_text(json.dumps(old))
            m = run.updated(path, new, ["tls"])
        self.assertEqual(m["runs"], ["headline"])
        self.assertEqual(m["suites"]["memory"]["runs"], [1])
        self.assertEqual(m["suites"]["tls"]["runs"], ["new"])
        self.assertEqual(m["suites"]["tls"]["setup"]["date_utc"], "new")
        self.assertEqual(m["setup"]["elapsed_s"], {"headline": 5, "memory": 7, "tls": 9})


class MedianLatency(unittest.TestCase):
    """A row's latency figures are each the median over its rounds, not
    the figures of the round picked by requests/s."""

    @staticmethod
    def row(picked, p99s):
        repeats = [{"rps": 100 + i, "latency_ms": {"p50": 1.0 + i, "p99": p, "max": 10.0 + i}}
                   for i, p in enumerate(p99s)]
        return dict(repeats[picked], repeats=repeats)

    def test_p99_is_the_median_over_rounds(self):
        from lbbench.measure import median_latency, median_of
        r = median_of([dict(x) for x in self.row(0, [2.45, 4.48, 3.29, 2.45, 3.62])["repeats"]])
        self.assertEqual(r["rps"], 102)
        self.assertEqual(r["latency_ms"]["p99"], 3.29)
        self.assertEqual(r["latency_ms"]["p50"], 3.0)
        # max stays the picked round's; that round's own figures are kept
        self.assertEqual(r["latency_ms"]["max"], 12.0)
        self.assertEqual(r["latency_ms_round"]["p99"], 3.29)
        picked = self.row(4, [2.45, 4.48, 3.29, 2.45, 3.62])
        median_latency(picked)
        self.assertEqual(picked["latency_ms"]["p99"], 3.29)
        self.assertEqual(picked["latency_ms_round"]["p99"], 3.62)
        # idempotent: applying it again (bench/report on stored results) changes nothing
        again = json.loads(json.dumps(picked))
        self.assertEqual(median_latency(again), picked)

    def test_one_round_is_left_as_it_is(self):
        from lbbench.measure import median_latency
        r = self.row(0, [5.0])
        self.assertEqual(median_latency(dict(r)), r)
