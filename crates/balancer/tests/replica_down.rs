//! A replica that goes silent (a node cut off: connections neither answer
//! nor reset) while requests wait for its answer: once its heartbeats
//! declare it down, those requests are retried on another replica instead
//! of waiting out the whole response timeout.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer::{
    Balancer, Config,
    orchestrator::{OrchestratorConfig, StaticArgs},
};
use common::{local_backend, replica_of};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// An HTTP/1.1 replica named "silent" that answers every request while
/// `alive`, and afterwards reads requests but never answers.
async fn silent_replica(alive: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, alive.clone()));
        }
    });
    format!("http://{addr}")
}

async fn serve(mut socket: TcpStream, alive: Arc<AtomicBool>) {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if !alive.load(Ordering::SeqCst) {
                // Cut off: hold the connection, answer nothing, ever.
                std::future::pending::<()>().await;
            }
            let body = r#"{"message": "Hello from Server: silent", "status": "successful"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if socket.write_all(head.as_bytes()).await.is_err()
                || socket.write_all(body.as_bytes()).await.is_err()
            {
                return;
            }
        }
    }
}

#[tokio::test]
async fn requests_waiting_on_a_replica_declared_down_are_retried_elsewhere() {
    let alive = Arc::new(AtomicBool::new(true));
    let silent = silent_replica(alive.clone()).await;
    let steady = local_backend("steady", 0).await;
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        orchestrator: OrchestratorConfig {
            kind: "static".into(),
            upstreams: StaticArgs {
                upstream: vec![format!("silent={silent}"), format!("steady={}", steady.url)],
            },
            ..OrchestratorConfig::default()
        },
        policy: "round-robin".into(),
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(100),
        fall: 2,
        ..Config::default()
    };
    // Far longer than the test may take: only the heartbeats can end the wait.
    config.limits.response_timeout = Duration::from_secs(30);
    let lb = Balancer::new(config).start().await.expect("start");
    let url = format!("http://{}", lb.addr());
    let client = common::client();
    // Both serve at first.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = common::send(client.get(format!("{url}/home"))).await;
        assert_eq!(status, 200);
        seen.insert(replica_of(&body));
    }
    assert_eq!(seen.len(), 2, "both replicas answered: {seen:?}");

    alive.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { common::send(client.get(format!("{url}/home"))).await })
        })
        .collect();
    for request in requests {
        let (status, body) = request.await.expect("request task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(replica_of(&body), "steady");
    }
    // Round robin sent about half to "silent"; they waited for its
    // heartbeats (2 x 100 ms, plus a check step), not for 30 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    lb.stop().await;
}
