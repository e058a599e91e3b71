//! Observability in the ecosystem's formats, over real sockets: a live
//! scrape that `promtool check metrics` accepts, OpenMetrics when asked,
//! JSON log lines without colour codes, the access log, `X-Request-Id`
//! end to end, and the dashboard's page and data endpoints.

mod common;

use std::{
    collections::BTreeSet,
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use balancer::Config;
use common::{
    raw::{ok, raw_upstream},
    start_balancer,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// An in-process balancer over static upstreams (round robin).
async fn over(upstreams: Vec<String>, tweak: impl FnOnce(&mut Config)) -> balancer::Running {
    common::start_static(upstreams, "round-robin", tweak).await
}

async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = common::client().get(format!("{url}/lb/metrics"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (content_type, resp.text().await.expect("body"))
}

/// The value of the sample `series` (name and labels as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Metric family names in a Prometheus text scrape (from `# TYPE`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_live_scrape_passes_promtool_and_the_readme_lists_every_family() {
    common::ensure_tools(&[("promtool", "prometheus")]);
    let lb = start_balancer(&["--replicas", "2", "--policy", "round-robin"]).await;
    lb.spread(10).await;
    let (status, _) = lb.get("/nope").await; // the replicas' 404: the spec's 400
    assert_eq!(status, 400);
    let (content_type, text) = scrape(&lb.url, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(text.contains("lb_requests_total 11"), "{text}");
    assert!(
        text.contains("lb_responses_total{class=\"4xx\"} 1"),
        "{text}"
    );
    // Every answered request is in its replica's latency histogram.
    for r in [
        "replica=\"server-1\",id=\"1\"",
        "replica=\"server-2\",id=\"2\"",
    ] {
        let served = sample(&text, &format!("lb_replica_served_total{{{r}}}"));
        let timed = sample(&text, &format!("lb_replica_latency_seconds_count{{{r}}}"));
        assert!(served >= 5.0 && served == timed, "{r}: {served} vs {timed}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );

    // The README's list of metric names is the scrape's, no more, no less.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let start = readme
        .find("<!-- metrics -->")
        .expect("README metrics marker");
    let end = readme
        .find("<!-- end metrics -->")
        .expect("README end marker");
    let listed: BTreeSet<String> = readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, families(&text), "README metric names vs the scrape");
    lb.terminate().await;
}

#[tokio::test]
async fn a_killed_replica_counts_as_an_exited_ejection_and_a_replacement() {
    let lb = start_balancer(&["--replicas", "2"]).await;
    let (_, before) = scrape(&lb.url, None).await;
    assert_eq!(
        sample(&before, "lb_ejections_total{reason=\"exited\"}"),
        0.0
    );
    assert_eq!(sample(&before, "lb_pool_replicas{health=\"up\"}"), 2.0);
    let pid = lb.pids().await["server-1"];
    common::signal(pid, "KILL");
    // Bounded: the process orchestrator replaces it within milliseconds.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = scrape(&lb.url, None).await;
        if sample(&text, "lb_replica_events_total{kind=\"replaced\"}") == 1.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < until,
            "no replacement counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&text, "lb_ejections_total{reason=\"exited\"}"), 1.0);
    assert_eq!(sample(&text, "lb_ejections_total{reason=\"passive\"}"), 0.0);
    assert_eq!(sample(&text, "lb_pool_replicas{health=\"up\"}"), 2.0);
    lb.terminate().await;
}

#[tokio::test]
async fn openmetrics_when_the_scrape_asks_for_it() {
    let replica = common::local_backend("a", 0).await;
    let lb = over(vec![replica.url.clone()], |_| {}).await;
    let url = format!("http://{}", lb.addr());
    let (content_type, text) = scrape(
        &url,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE lb_requests counter\n"), "{text}");
    assert!(
        text.contains("# UNIT lb_upstream_latency_seconds seconds\n"),
        "{text}"
    );
    let (_, plain) = scrape(&url, Some("text/plain")).await;
    assert!(!plain.contains("# EOF"));
    lb.stop().await;
}

/// Starts the binary with `args` and returns its first stderr lines.
async fn stderr_lines(args: &[&str], n: usize) -> Vec<String> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--listen", "127.0.0.1:0", "--replicas", "2"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn balancer");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => got.push(line),
            _ => break,
        }
    }
    let _ = child.kill().await;
    got
}

#[tokio::test]
async fn logs_are_json_lines_or_plain_text_never_colour_off_a_terminal() {
    let json = stderr_lines(&["--log-format", "json", "--log", "info"], 2).await;
    assert_eq!(json.len(), 2, "{json:?}");
    for line in &json {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "INFO", "{line}");
        assert!(
            v["message"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    let text = stderr_lines(&["--log", "info"], 2).await;
    assert_eq!(text.len(), 2, "{text:?}");
    for line in &text {
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
        assert!(line.contains("INFO"), "{line}");
        assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    }
}

#[tokio::test]
async fn access_log_and_request_ids_follow_each_request() {
    let up = raw_upstream(|_| ok("hello")).await;
    let path = std::env::temp_dir().join(format!("lb-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let lb = over(vec![up.url.clone()], |c| c.access_log = Some(path.clone())).await;
    let http = common::client();
    let url = format!("http://{}", lb.addr());
    let get = |path: &str, id: Option<&str>| {
        let mut req = http.get(format!("{url}{path}"));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let kept = get("/a", Some("client-id.1")).await.expect("a");
    assert_eq!(kept.headers()["x-request-id"], "client-id.1");
    let made = get("/b", None).await.expect("b");
    let made_id = made.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert!(
        made_id.len() == 32 && made_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made_id}"
    );
    let bad = get("/c", Some("two words")).await.expect("c");
    let bad_id = bad.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_ne!(bad_id, "two words");
    // The replica got the same ids.
    let seen: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.header("x-request-id").unwrap_or("").to_owned())
        .collect();
    assert_eq!(seen, ["client-id.1", made_id.as_str(), bad_id.as_str()]);

    // The balancer's own endpoints are logged and given ids too.
    let admin = get("/lb/health", None).await.expect("health");
    assert_eq!(admin.headers()["x-request-id"].len(), 32);

    let mut lines = Vec::new();
    common::eventually(Duration::from_secs(5), "four access-log lines", || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        std::future::ready(lines.len() >= 4)
    })
    .await;
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for (entry, (path, id)) in entries.iter().zip([
        ("/a", "client-id.1"),
        ("/b", made_id.as_str()),
        ("/c", bad_id.as_str()),
    ]) {
        assert_eq!(entry["method"], "GET", "{entry}");
        assert_eq!(entry["path"], path, "{entry}");
        assert_eq!(entry["status"], 200, "{entry}");
        assert_eq!(entry["attempts"], 1, "{entry}");
        assert_eq!(entry["bytes"], 5, "{entry}");
        assert_eq!(entry["request_id"], id, "{entry}");
        assert!(entry["replica"].is_string(), "{entry}");
        assert!(
            entry["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
            "{entry}"
        );
        assert!(
            entry["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:"))
        );
        assert!(
            entry["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
        );
    }
    let own = &entries[3];
    assert_eq!(own["path"], "/lb/health", "{own}");
    assert_eq!(own["status"], 200, "{own}");
    assert!(own["replica"].is_null() && own["attempts"] == 0, "{own}");
    assert_eq!(
        own["request_id"],
        admin.headers()["x-request-id"].to_str().expect("id")
    );
    lb.stop().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn access_log_to_stdout_with_a_dash() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--replicas",
            "1",
            "--log",
            "warn",
        ])
        .args(["--access-log", "-"])
        .env_remove("LB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn balancer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line within 30 s")
            .expect("read")
            .expect("a line")
    };
    let first = next().await;
    let url = first
        .strip_prefix("balancer listening on ")
        .expect("address line")
        .to_owned();
    let (status, _) = common::send(common::client().get(format!("{url}/home"))).await;
    assert_eq!(status, 200);
    let entry: Value = serde_json::from_str(&next().await).expect("a JSON line");
    assert_eq!(entry["path"], "/home", "{entry}");
    assert_eq!(entry["replica"], "server-1", "{entry}");
    let _ = child.kill().await;
}

#[tokio::test]
async fn the_dashboard_is_served_self_contained_and_its_data_needs_the_token() {
    let mut replicas = Vec::new();
    for id in ["a", "b", "c"] {
        replicas.push(common::local_backend(id, 0).await);
    }
    let lb = over(replicas.iter().map(|r| r.url.clone()).collect(), |c| {
        c.policy = "maglev".into();
        c.admin_token = Some("s3cret".into());
    })
    .await;
    let http = common::client();
    let url = format!("http://{}", lb.addr());
    for (path, kind) in [
        ("/lb/dashboard", "text/html"),
        ("/lb/dashboard/app.js", "text/javascript"),
        ("/lb/dashboard/charts.js", "text/javascript"),
        ("/lb/dashboard/app.css", "text/css"),
    ] {
        let resp = http.get(format!("{url}{path}")).send().await.expect(path);
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .is_ok_and(|c| c.starts_with(kind))
        );
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        let body = resp.text().await.expect("body");
        // Nothing from elsewhere: the only URL is the SVG namespace name.
        let outside = body
            .match_indices("://")
            .filter(|(i, _)| !body[i.saturating_sub(4)..].starts_with("http://www.w3.org/2000/svg"))
            .count();
        assert_eq!(outside, 0, "{path} refers to another origin");
        if path == "/lb/dashboard" {
            assert!(body.contains("<title>Load balancer dashboard</title>"));
        }
    }
    for path in ["/lb/stats", "/lb/ring", "/lb/events", "/lb/status"] {
        let (status, body) = common::send(http.get(format!("{url}{path}"))).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let authed = |path: &str| http.get(format!("{url}{path}")).bearer_auth("s3cret");
    let (status, stats) = common::send(authed("/lb/stats")).await;
    assert_eq!(status, 200, "{stats}");
    let bounds = stats["bounds"].as_array().expect("bounds").len();
    assert_eq!(stats["replicas"].as_array().expect("replicas").len(), 3);
    assert_eq!(
        stats["latency"]["counts"].as_array().expect("counts").len(),
        bounds + 1
    );
    let (status, ring) = common::send(authed("/lb/ring")).await;
    assert_eq!(status, 200, "{ring}");
    assert_eq!(ring["policy"], "maglev");
    assert_eq!(ring["hashing"], true);
    let shares: Vec<f64> = ring["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s["share"].as_f64().expect("share"))
        .collect();
    assert_eq!(shares.len(), 3);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{ring}");

    // A dashboard's long poll of the events does not hold up shutdown.
    let (_, events) = common::send(authed("/lb/events")).await;
    let last = events["events"].as_array().expect("events").len();
    let poll = tokio::spawn(common::send(authed(&format!(
        "/lb/events?after={last}&wait_ms=25000"
    ))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long poll waits for an event");
    let stopping = std::time::Instant::now();
    lb.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    let (status, body) = poll.await.expect("poll");
    assert_eq!(
        (status, body["events"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}
