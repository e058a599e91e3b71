//! Each policy over real sockets: only live replicas are picked, and the
//! spread is what the policy promises. Slow replicas are in-process
//! backends behind `--orchestrator static` so a test controls their delay.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use balancer::{
    Balancer, Config,
    policy::{Pick, Policy},
};
use common::{LocalBackend, load, local_backend, start_balancer};

const ALL: [&str; 8] = [
    "maglev",
    "ring",
    "bounded-load",
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "p2c",
    "random",
];

async fn in_process(
    backends: &[&LocalBackend],
    policy: &str,
    custom: Option<Arc<dyn Policy>>,
) -> balancer::Running {
    let upstreams = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("s{}={}", i + 1, b.url))
        .collect();
    let config = Config {
        health_interval: Config::default().health_interval,
        ..common::static_config(upstreams, policy)
    };
    let mut lb = Balancer::new(config);
    if let Some(p) = custom {
        lb = lb.with_policy(p);
    }
    lb.start().await.expect("balancer starts")
}

#[tokio::test]
async fn every_policy_serves_and_avoids_a_dead_replica() {
    for policy in ALL {
        let lb = start_balancer(&[
            "--replicas",
            "3",
            "--policy",
            policy,
            "--health-interval",
            "100ms",
        ])
        .await;
        let spread = lb.spread(60).await;
        assert!(spread.len() >= 2, "{policy}: {spread:?}");
        // Remove one: it must never be picked again.
        let (status, _) = lb
            .delete("/rm", r#"{"n": 1, "hostnames": ["server-2"]}"#)
            .await;
        assert_eq!(status, 200);
        let spread = lb.spread(60).await;
        assert!(!spread.contains_key("server-2"), "{policy}: {spread:?}");
        lb.terminate().await;
    }
}

#[tokio::test]
async fn round_robin_is_exact_and_default_balances() {
    let lb = start_balancer(&["--replicas", "3", "--policy", "round-robin"]).await;
    let spread = lb.spread(300).await;
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{spread:?}"
    );
    lb.terminate().await;

    let lb = start_balancer(&["--replicas", "3"]).await;
    let spread = load(&lb.url, 3000, 16).await;
    let max = *spread.values().max().expect("counts") as f64;
    assert!(
        max / 1000.0 < 1.1,
        "maglev over 3000 random keys: {spread:?}"
    );
    lb.terminate().await;
}

#[tokio::test]
async fn least_connections_and_p2c_prefer_the_idle_replica() {
    let slow = local_backend("slow", 150).await;
    let fast1 = local_backend("fast1", 0).await;
    let fast2 = local_backend("fast2", 0).await;
    let backends = [&slow, &fast1, &fast2];

    let rr = in_process(&backends, "round-robin", None).await;
    let rr_spread = load(&format!("http://{}", rr.addr()), 150, 6).await;
    rr.stop().await;
    assert_eq!(
        rr_spread["slow"], 50,
        "round robin ignores load: {rr_spread:?}"
    );

    for policy in ["least-connections", "p2c"] {
        let lb = in_process(&backends, policy, None).await;
        let spread = load(&format!("http://{}", lb.addr()), 150, 6).await;
        lb.stop().await;
        let slow_share = spread.get("slow").copied().unwrap_or(0);
        assert!(
            slow_share < 25,
            "{policy} sent {slow_share} of 150 to the slow replica: {spread:?}"
        );
    }
}

/// A custom policy: always the replica with the lowest ring id that is usable.
#[derive(Debug)]
struct LowestId;

impl Policy for LowestId {
    fn name(&self) -> &'static str {
        "lowest-id"
    }
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        (0..pick.replicas.len()).find(|&i| pick.usable(i))
    }
}

#[tokio::test]
async fn a_custom_policy_plugs_in() {
    let a = local_backend("a", 0).await;
    let b = local_backend("b", 0).await;
    let lb = in_process(&[&a, &b], "round-robin", Some(Arc::new(LowestId))).await;
    let url = format!("http://{}", lb.addr());
    let spread = load(&url, 50, 4).await;
    assert_eq!(spread, BTreeMap::from([("a".to_owned(), 50)]));
    let (_, status) = common::send(common::client().get(format!("{url}/lb/status"))).await;
    assert_eq!(status["policy"], "lowest-id");
    lb.stop().await;
}

#[tokio::test]
async fn static_upstream_down_then_up_after_rise() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let flaky = common::local_backend_on(listener, "flaky", 0);
    let steady = local_backend("steady", 0).await;
    let upstreams = vec![
        format!("flaky={}", flaky.url),
        format!("steady={}", steady.url),
    ];
    let lb = common::start_static(upstreams, "round-robin", |config| {
        config.health_interval = Duration::from_millis(50);
        config.health_timeout = Duration::from_millis(100);
        config.fall = 2;
        config.rise = 3;
    })
    .await;
    let url = format!("http://{}", lb.addr());
    let client = common::client();
    let health = |name: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (_, body) = common::send(client.get(format!("{url}/lb/status"))).await;
            body["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .find(|r| r["name"] == name)
                .expect("replica")["health"]
                .as_str()
                .expect("health")
                .to_owned()
        }
    };
    drop(flaky);
    common::eventually(Duration::from_secs(5), "flaky marked down", || async {
        health("flaky").await == "down"
    })
    .await;
    // Down means no traffic, and no client error either.
    let spread = load(&url, 20, 2).await;
    assert_eq!(spread, BTreeMap::from([("steady".to_owned(), 20)]));
    // It comes back on the same address: up again after `rise` heartbeats.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let _flaky = common::local_backend_on(listener, "flaky", 0);
    common::eventually(Duration::from_secs(5), "flaky marked up", || async {
        health("flaky").await == "up"
    })
    .await;
    let spread = load(&url, 20, 1).await;
    assert_eq!(spread.get("flaky"), Some(&10), "{spread:?}");
    lb.stop().await;
}
