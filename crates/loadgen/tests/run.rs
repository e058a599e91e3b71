//! `loadgen run` over real loopback sockets.

use std::time::{Duration, Instant};

use loadgen::{LoadError, RunConfig};

async fn backend(id: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    backend_with_delay(id, 0).await
}

async fn backend_with_delay(id: &str, delay_ms: u64) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = backend::Config {
        id: id.into(),
        delay_ms,
    };
    (url, backend::spawn(listener, config))
}

#[tokio::test]
async fn counts_every_request_and_its_replica() {
    let (url, _stop) = backend("only").await;
    let report = loadgen::run(RunConfig {
        target: url,
        requests: 500,
        concurrency: 8,
        ..RunConfig::default()
    })
    .await
    .expect("run");
    assert_eq!((report.requests, report.ok, report.failed), (500, 500, 0));
    assert_eq!(report.per_replica.get("only"), Some(&500));
    assert_eq!(report.status_counts.get(&200), Some(&500));
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.p99);
    let json = serde_json::to_value(&report).expect("json");
    for field in [
        "requests",
        "ok",
        "failed",
        "elapsed_s",
        "rps",
        "per_replica",
        "latency_ms",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
}

#[tokio::test]
async fn non_2xx_replies_are_failures() {
    let (url, _stop) = backend("x").await;
    let config = RunConfig {
        target: url,
        path: "/missing".into(),
        requests: 50,
        concurrency: 4,
        ..RunConfig::default()
    };
    let report = loadgen::run(config).await.expect("run");
    assert_eq!((report.ok, report.failed), (0, 50));
    assert_eq!(report.status_counts.get(&404), Some(&50));
}

#[tokio::test]
async fn traces_and_paces() {
    let (url, _stop) = backend("t").await;
    let started = Instant::now();
    let config = RunConfig {
        target: url,
        requests: 40,
        concurrency: 4,
        trace: true,
        rate: Some(200.0),
        ..RunConfig::default()
    };
    let report = loadgen::run(config).await.expect("run");
    // 40 requests at 200/s take at least 195 ms.
    assert!(started.elapsed() >= Duration::from_millis(190));
    let trace = report.trace.expect("trace");
    assert_eq!(trace.len(), 40);
    assert!(trace.windows(2).all(|w| w[0].index < w[1].index));
    assert!(
        trace
            .iter()
            .all(|t| t.status == 200 && t.replica.as_deref() == Some("t"))
    );
}

#[tokio::test]
async fn paced_latency_includes_the_wait_behind_a_slow_reply() {
    // One worker, a request due every 2 ms, each answered after 20 ms: the
    // 10th is sent about 180 ms after it was due. Its latency must say so,
    // not the 20 ms it spent on the wire.
    let (url, _stop) = backend_with_delay("slow", 20).await;
    let report = loadgen::run(RunConfig {
        target: url,
        requests: 10,
        concurrency: 1,
        trace: true,
        rate: Some(500.0),
        ..RunConfig::default()
    })
    .await
    .expect("run");
    let trace = report.trace.expect("trace");
    let last = trace.last().expect("a request");
    assert!(last.latency_ms >= 150.0, "{last:?}");
    assert!(report.latency_ms.max >= 150.0, "{:?}", report.latency_ms);
    // And the trace's start is the due time: 2 ms apart.
    assert!((last.start_ms - 18.0).abs() < 5.0, "{last:?}");
}

#[tokio::test]
async fn a_dead_target_is_a_clear_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let started = Instant::now();
    let err = loadgen::run(RunConfig {
        target: format!("http://{addr}"),
        requests: 10,
        ..RunConfig::default()
    })
    .await
    .expect_err("refused");
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
