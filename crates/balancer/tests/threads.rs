//! The balancer binary with more than one worker thread, under each
//! `--scheduler`: requests over many connections at once are all answered
//! by a replica, and the control path (`/add`, `/rm`) still works beside
//! them. The bench runs `--threads 2`; this is what keeps both modes tested.

mod common;

use common::{load, start_balancer};
use serde_json::json;

async fn serves_with(scheduler: &str) {
    let lb = start_balancer(&[
        "--replicas",
        "2",
        "--threads",
        "2",
        "--scheduler",
        scheduler,
        "--policy",
        "round-robin",
    ])
    .await;
    let replicas = lb.replicas().await;
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    // 16 requests in flight: the client opens as many connections.
    let seen = load(&lb.url, 400, 16).await;
    assert_eq!(seen.values().sum::<usize>(), 400);
    for r in seen.keys() {
        assert!(replicas.contains(r), "{r} answered, replicas {replicas:?}");
    }
    assert!(
        replicas.iter().all(|r| seen.contains_key(r)),
        "round robin over 400 requests reached every replica: {replicas:?}"
    );

    let (status, body) = lb.post("/add", &json!({"n": 1}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lb.replicas().await.len(), 3);
    let seen = load(&lb.url, 80, 8).await;
    assert_eq!(seen.values().sum::<usize>(), 80);
    let (status, body) = lb.delete("/rm", &json!({"n": 1}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lb.replicas().await.len(), 2);
    lb.terminate().await;
}

#[tokio::test]
async fn two_threads_work_stealing_serve_every_request() {
    serves_with("work-stealing").await;
}

#[tokio::test]
async fn two_threads_per_thread_serve_every_request() {
    serves_with("per-thread").await;
}
