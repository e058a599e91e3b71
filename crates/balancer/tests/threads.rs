//! The balancer binary with more than one worker thread, under each
//! `--scheduler`: requests over many connections at once are all answered
//! by a replica, and the control path (`/add`, `/rm`) still works beside
//! them. The bench runs `--threads 2`; this is what keeps both modes tested.

mod common;

use common::{client, replica_of, send, start_balancer};
use serde_json::json;

/// `connections` clients, each with a connection of its own, sending
/// `per_connection` GETs of /home one after another; every answer's replica.
async fn load(url: &str, connections: usize, per_connection: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let url = format!("{url}/home?c={i}");
            tokio::spawn(async move {
                let http = client();
                let mut seen = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let (status, body) = send(http.get(&url)).await;
                    assert_eq!(status, 200, "{body}");
                    seen.push(replica_of(&body));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

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

    let seen = load(&lb.url, 16, 25).await;
    assert_eq!(seen.len(), 16 * 25);
    for r in &seen {
        assert!(replicas.contains(r), "{r} answered, replicas {replicas:?}");
    }
    assert!(
        replicas.iter().all(|r| seen.contains(r)),
        "round robin over 400 requests reached every replica: {replicas:?}"
    );

    let (status, body) = lb.post("/add", &json!({"n": 1}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lb.replicas().await.len(), 3);
    let seen = load(&lb.url, 8, 10).await;
    assert_eq!(seen.len(), 80);
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
