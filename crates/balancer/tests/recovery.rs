//! Failure recovery over real sockets with real replica processes: a
//! killed or hung replica is noticed, replaced under the same name, and no
//! client GET fails meanwhile; nothing outlives the balancer.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{BalancerProcess, alive, eventually, signal, start_balancer};

/// GETs /home from `workers` tasks until `stop`; returns (ok, failed, failures).
fn steady_load(
    lb: &BalancerProcess,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize, Vec<String>)> {
    let (url, client) = (lb.url.clone(), lb.http.clone());
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (url, client, stop, ok) = (url.clone(), client.clone(), stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(format!("{url}/home")).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!(
                            "status {}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => failures.push(format!("transport: {e}")),
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.expect("worker"));
        }
        (ok.load(Ordering::Relaxed), failures.len(), failures)
    })
}

async fn replaced(lb: &BalancerProcess, name: &str, old_pid: u32) -> bool {
    let status = lb.status().await;
    status.get(name).is_some_and(|r| {
        r["health"] == "up" && r["pid"].as_u64().is_some_and(|p| p != u64::from(old_pid))
    })
}

#[tokio::test]
async fn sigkill_under_load_loses_no_request_and_is_replaced() {
    let lb = start_balancer(&["--replicas", "3", "--policy", "round-robin"]).await;
    let pids = lb.pids().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&lb, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = pids["server-2"];
    signal(victim, "KILL");
    eventually(Duration::from_secs(10), "server-2 replaced", || {
        replaced(&lb, "server-2", victim)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, failures) = load.await.expect("load");
    assert_eq!(failed, 0, "failed GETs: {failures:?}");
    assert!(ok > 50, "only {ok} requests went through");
    assert_eq!(
        lb.replicas().await,
        vec!["server-1", "server-2", "server-3"]
    );
    // The replacement serves.
    let spread = lb.spread(30).await;
    assert_eq!(spread.get("server-2"), Some(&10), "{spread:?}");
    assert!(!alive(victim));
    lb.terminate().await;
}

#[tokio::test]
async fn two_killed_at_once_are_both_replaced() {
    let lb = start_balancer(&["--replicas", "3"]).await;
    let pids = lb.pids().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&lb, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(pids["server-1"], "KILL");
    signal(pids["server-3"], "KILL");
    eventually(Duration::from_secs(10), "both replaced", || async {
        replaced(&lb, "server-1", pids["server-1"]).await
            && replaced(&lb, "server-3", pids["server-3"]).await
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (_, failed, failures) = load.await.expect("load");
    assert_eq!(failed, 0, "{failures:?}");
    let status = lb.status().await;
    assert_eq!(status.len(), 3, "no duplicate, no loss: {status:?}");
    lb.terminate().await;
}

#[tokio::test]
async fn a_hung_replica_is_marked_down_by_timeout_and_replaced() {
    let lb = start_balancer(&[
        "--replicas",
        "2",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "100ms",
        "--fall",
        "2",
        "--response-timeout",
        "1s",
    ])
    .await;
    let pids = lb.pids().await;
    let victim = pids["server-1"];
    // SIGSTOP: the kernel still accepts connections, nothing answers.
    signal(victim, "STOP");
    eventually(Duration::from_secs(10), "hung server-1 replaced", || {
        replaced(&lb, "server-1", victim)
    })
    .await;
    let (_, events) = lb.get("/lb/events").await;
    let down = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["kind"] == "down" && e["replica"] == "server-1");
    assert!(down, "marked down by the heartbeat timeout: {events}");
    // The stopped process was killed, not leaked.
    eventually(Duration::from_secs(10), "hung process gone", || async {
        !alive(victim)
    })
    .await;
    lb.terminate().await;
}

#[tokio::test]
async fn removed_replica_finishes_its_requests_first() {
    let lb = start_balancer(&["--replicas", "2", "--policy", "round-robin"]).await;
    let url = lb.url.clone();
    // Slow requests in flight to both replicas.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let client = lb.http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                common::send(client.get(format!("{url}/home?delay_ms=700"))).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = lb
        .delete("/rm", r#"{"n": 1, "hostnames": ["server-1"]}"#)
        .await;
    assert_eq!(status, 200);
    for t in slow {
        let (status, body) = t.await.expect("request");
        assert_eq!(
            status, 200,
            "a request in flight to a removed replica completes: {body}"
        );
    }
    lb.terminate().await;
}

#[tokio::test]
async fn no_orphans_after_sigterm_or_sigkill() {
    let lb = start_balancer(&["--replicas", "3"]).await;
    let pids: Vec<u32> = lb.pids().await.into_values().collect();
    assert!(pids.iter().all(|&p| alive(p)));
    lb.terminate().await;
    eventually(
        Duration::from_secs(10),
        "replicas gone after SIGTERM",
        || async { pids.iter().all(|&p| !alive(p)) },
    )
    .await;

    let lb = start_balancer(&["--replicas", "3"]).await;
    let pids: Vec<u32> = lb.pids().await.into_values().collect();
    let mut child = lb.child;
    child.start_kill().expect("SIGKILL the balancer");
    child.wait().await.expect("wait");
    eventually(
        Duration::from_secs(10),
        "replicas gone after the balancer was SIGKILLed",
        || async { pids.iter().all(|&p| !alive(p)) },
    )
    .await;
}

#[tokio::test]
async fn concurrent_add_rm_and_failures_converge_without_duplicates() {
    let lb = start_balancer(&["--replicas", "3", "--max-replicas", "10"]).await;
    let pids = lb.pids().await;
    let url = lb.url.clone();
    // `/add` or `/rm` of one named replica, in a task of its own.
    let change = |method: reqwest::Method, path: &'static str, name: &'static str| {
        let request = lb
            .http
            .request(method, format!("{url}/{path}"))
            .body(format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#));
        tokio::spawn(common::send(request))
    };
    let add = |name| change(reqwest::Method::POST, "add", name);
    let rm = |name| change(reqwest::Method::DELETE, "rm", name);
    let adds = [add("c1"), add("c2"), add("c3")];
    signal(pids["server-1"], "KILL");
    let removal = rm("server-3");
    signal(pids["server-2"], "KILL");
    for a in adds {
        let (status, body) = a.await.expect("add");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = removal.await.expect("rm");
    assert_eq!(status, 200, "{body}");

    let expected = ["server-1", "server-2", "c1", "c2", "c3"];
    eventually(
        Duration::from_secs(15),
        "pool converges to 5 healthy replicas",
        || async {
            let status = lb.status().await;
            status.len() == 5 && status.values().all(|r| r["health"] == "up")
        },
    )
    .await;
    let mut names = lb.replicas().await;
    names.sort();
    let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(names, want);
    // One live process per replica: no double spawn, no leak.
    let pids = lb.pids().await;
    let unique: std::collections::BTreeSet<u32> = pids.values().copied().collect();
    assert_eq!(unique.len(), 5);
    assert!(unique.iter().all(|&p| alive(p)));
    let spread = lb.spread(50).await;
    assert_eq!(spread.values().sum::<usize>(), 50);
    lb.terminate().await;
    eventually(Duration::from_secs(10), "all gone", || async {
        unique.iter().all(|&p| !alive(p))
    })
    .await;
}
