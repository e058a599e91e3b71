//! A-3: every endpoint exercised (each status recorded), then a replica
//! SIGKILLed in the middle of a paced run: per-request latency over time,
//! time to detect, time until the replacement serves, failed requests.

use crate::run::unix_ms;
use std::{fmt::Write as _, time::Duration};

use balancer::{
    admin::Status,
    events::{EventKind, Events},
};

use super::{ExperimentError, Settings, Stack, StackSpec, provenance, table, write, write_json};
use crate::{RunConfig, chart, run::TraceEntry};

const VICTIM: &str = "server-2";

/// (method, path, body, expected status)
const ENDPOINTS: [(&str, &str, &str, u16); 14] = [
    ("GET", "/home", "", 200),
    ("GET", "/heartbeat", "", 200),
    ("GET", "/rep", "", 200),
    (
        "POST",
        "/add",
        r#"{"n": 1, "hostnames": ["a3-extra"]}"#,
        200,
    ),
    ("GET", "/rep", "", 200),
    (
        "DELETE",
        "/rm",
        r#"{"n": 1, "hostnames": ["a3-extra"]}"#,
        200,
    ),
    ("POST", "/add", r#"{"n": 1, "hostnames": ["x", "y"]}"#, 400),
    (
        "DELETE",
        "/rm",
        r#"{"n": 1, "hostnames": ["server-1", "server-2"]}"#,
        400,
    ),
    ("POST", "/add", r#"{"n": "#, 400),
    ("DELETE", "/rm", r#"{"n": 1, "hostnames": ["ghost"]}"#, 404),
    ("GET", "/other", "", 400),
    ("GET", "/lb/status", "", 200),
    ("GET", "/lb/metrics", "", 200),
    ("GET", "/lb/events", "", 200),
];

async fn exercise(stack: &Stack) -> Result<(String, String, bool), ExperimentError> {
    let mut csv = String::from("method,path,body,status,expected\n");
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (method, path, body, expected) in ENDPOINTS {
        let (status, reply) = stack.request(method, path, body).await?;
        all_ok &= status == expected;
        let _ = writeln!(csv, "{method},{path},{:?},{status},{expected}", body);
        let shown: String = reply
            .chars()
            .take(90)
            .collect::<String>()
            .replace('|', "\\|")
            .replace('\n', " ");
        rows.push(vec![
            method.to_owned(),
            format!("`{path}`"),
            if body.is_empty() {
                String::new()
            } else {
                format!("`{body}`")
            },
            status.to_string(),
            expected.to_string(),
            format!("`{shown}`"),
        ]);
    }
    Ok((
        csv,
        table(
            &[
                "method",
                "path",
                "body",
                "status",
                "expected",
                "reply (start)",
            ],
            &rows,
        ),
        all_ok,
    ))
}

fn victim_pid(status: &Status) -> Option<u32> {
    status.replicas.iter().find(|r| r.name == VICTIM)?.pid
}

/// The first event of a kind that `wanted` accepts, recorded for the
/// victim at or after `after` (the balancer's events have 1 ms resolution,
/// so "at" is within a ms): its time and kind.
fn event_after(
    events: &Events,
    wanted: impl Fn(EventKind) -> bool,
    after: f64,
) -> Option<(f64, EventKind)> {
    events
        .events
        .iter()
        .filter(|e| e.replica == VICTIM && wanted(e.kind))
        .map(|e| (e.at_ms as f64, e.kind))
        .find(|&(t, _)| t >= after.floor())
}

pub(crate) async fn run(settings: &Settings) -> Result<String, ExperimentError> {
    let dir = settings.dir("a3")?;
    let stack = Stack::start(&StackSpec::new(3, "maglev"), settings).await?;
    let result = measure(settings, &stack).await;
    stack.stop().await;
    let (endpoints_csv, endpoints_table, endpoints_ok, outcome) = result?;
    write(&dir.join("endpoints.csv"), endpoints_csv)?;
    let o = outcome;
    write_json(&dir.join("events.json"), &o.events)?;
    let trace: &[TraceEntry] = o.report.trace.as_deref().unwrap_or(&[]);
    let mut csv = String::from("index,start_ms,latency_ms,status,replica\n");
    for t in trace {
        let _ = writeln!(
            csv,
            "{},{:.3},{:.3},{},{}",
            t.index,
            t.start_ms,
            t.latency_ms,
            t.status,
            t.replica.as_deref().unwrap_or("")
        );
    }
    write(&dir.join("trace.csv"), csv)?;
    let mut points: Vec<(f64, f64)> = trace
        .iter()
        .map(|t| (t.start_ms / 1e3, t.latency_ms))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut markers = vec![(o.kill_offset_ms / 1e3, "kill".to_owned())];
    if let Some((d, _)) = o.detected {
        markers.push(((o.kill_offset_ms + d) / 1e3, "detected".into()));
    }
    if let Some(r) = o.replaced_ms {
        markers.push(((o.kill_offset_ms + r) / 1e3, "replaced".into()));
    }
    chart::line_chart(
        &dir.join("a3.svg"),
        &format!(
            "A-3: latency of each request, {VICTIM} SIGKILLed at t = {:.2} s",
            o.kill_offset_ms / 1e3
        ),
        "time since start (s)",
        "latency (ms)",
        &[("per-request latency".to_owned(), points)],
        &markers,
    )?;
    let ms = |v: Option<f64>| v.map_or_else(|| "not observed".to_owned(), |v| format!("{v:.0} ms"));
    let rows = vec![
        vec!["requests".into(), o.report.requests.to_string()],
        vec!["failed requests".into(), o.report.failed.to_string()],
        vec!["statuses".into(), format!("{:?}", o.report.status_counts)],
        vec![
            format!("kill of {VICTIM} to detection (out of rotation)"),
            o.detected.map_or_else(
                || "not observed".to_owned(),
                |(d, kind)| format!("{d:.0} ms (`{kind}` event)"),
            ),
        ],
        vec!["kill to replacement in rotation".into(), ms(o.replaced_ms)],
        vec![
            "kill to first request served by the replacement".into(),
            ms(o.first_served_ms),
        ],
        vec![
            "latency p50 / p99 / max (ms)".into(),
            format!(
                "{:.2} / {:.2} / {:.2}",
                o.report.latency_ms.p50, o.report.latency_ms.p99, o.report.latency_ms.max
            ),
        ],
    ];
    let summary = format!(
        "# A-3: every endpoint, then a replica killed mid-run\n\n{}\n## Endpoints\n\n{endpoints_table}\nAll statuses as expected: {endpoints_ok}.\n\n## Failure\n\n{} GETs paced at {:.0}/s (concurrency {}), `{}` of {VICTIM} issued at Unix ms {:.0}; times below are measured from that moment against the balancer's event timestamps (1 ms resolution). Detection is the first event that takes {VICTIM} out of rotation: `suspect` (a proxied request failed), `exited` (the process or container ended) or `down` (heartbeats missed). A request that is overdue because its worker was still waiting on a reply counts its latency from when it was due, so a stall's queueing delay is included (no coordinated omission). The first request served by the replacement is the first reply from {VICTIM} to a request sent after `kill` returned.\n\n![A-3](a3.svg)\n\n{}",
        provenance(settings),
        o.report.requests,
        settings.failure_rate,
        settings.concurrency.min(16),
        if settings.docker {
            "docker kill"
        } else {
            "kill -9"
        },
        o.kill_unix_ms,
        table(&["measure", "value"], &rows),
    );
    write(&dir.join("summary.md"), &summary)?;
    if !endpoints_ok {
        return Err(ExperimentError::Failed(format!(
            "an endpoint answered an unexpected status; see {}",
            dir.join("summary.md").display()
        )));
    }
    Ok(summary)
}

struct Outcome {
    report: crate::Report,
    kill_unix_ms: f64,
    kill_offset_ms: f64,
    /// Kill to the first out-of-rotation event, and that event's kind.
    detected: Option<(f64, String)>,
    replaced_ms: Option<f64>,
    first_served_ms: Option<f64>,
    events: Events,
}

async fn measure(
    settings: &Settings,
    stack: &Stack,
) -> Result<(String, String, bool, Outcome), ExperimentError> {
    let (csv, tbl, ok) = exercise(stack).await?;
    let status: Status = stack.get("/lb/status").await?;
    // A process replica is killed by pid; a container with `docker kill`.
    let kill: Vec<String> = if settings.docker {
        vec!["docker".into(), "kill".into(), VICTIM.into()]
    } else {
        let pid = victim_pid(&status)
            .ok_or_else(|| ExperimentError::Failed(format!("no pid for {VICTIM}: {status:?}")))?;
        vec!["kill".into(), "-9".into(), pid.to_string()]
    };
    let config = RunConfig {
        target: stack.url.clone(),
        requests: settings.failure_requests,
        concurrency: settings.concurrency.min(16),
        trace: true,
        rate: Some(settings.failure_rate),
        ..RunConfig::default()
    };
    let kill_after =
        Duration::from_secs_f64(settings.failure_requests as f64 / settings.failure_rate / 3.0);
    let load = tokio::spawn(crate::run(config));
    let started = unix_ms();
    tokio::time::sleep(kill_after).await;
    let kill_unix_ms = unix_ms();
    let killed = tokio::process::Command::new(&kill[0])
        .args(&kill[1..])
        .stdout(std::process::Stdio::null())
        .status()
        .await;
    // The signal lands somewhere between issuing kill(1) and its return;
    // after the return the old process is certainly gone.
    let kill_done_ms = unix_ms();
    if !killed.is_ok_and(|s| s.success()) {
        return Err(ExperimentError::Failed(format!(
            "could not kill {VICTIM}: {kill:?}"
        )));
    }
    let report = load
        .await
        .map_err(|e| ExperimentError::Failed(e.to_string()))??;
    // Give the replacement a moment if the run ended before it served.
    let replaced = |k| k == EventKind::Replaced;
    let mut events: Events = stack.get("/lb/events").await?;
    for _ in 0..50 {
        if event_after(&events, replaced, kill_unix_ms).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        events = stack.get("/lb/events").await?;
    }
    let since = |t: f64| (t - kill_unix_ms).max(0.0);
    let detected = event_after(&events, EventKind::is_failure, kill_unix_ms)
        .map(|(t, kind)| (since(t), kind.to_string()));
    let replaced_ms = event_after(&events, replaced, kill_unix_ms).map(|(t, _)| since(t));
    let first_served_ms = report
        .trace
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.replica.as_deref() == Some(VICTIM) && t.start_unix_ms > kill_done_ms)
        .map(|t| t.start_unix_ms + t.latency_ms)
        .min_by(f64::total_cmp)
        .map(since);
    // The run's own clock starts after its connection probe: line the kill
    // up with the trace, not with when we spawned the run.
    let run_start = report
        .trace
        .as_deref()
        .and_then(|t| t.first())
        .map_or(started, |t| t.start_unix_ms - t.start_ms);
    let kill_offset_ms = kill_unix_ms - run_start;
    Ok((
        csv,
        tbl,
        ok,
        Outcome {
            report,
            kill_unix_ms,
            kill_offset_ms,
            detected,
            replaced_ms,
            first_served_ms,
            events,
        },
    ))
}
