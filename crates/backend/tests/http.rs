//! The replica over a real socket: the spec's two endpoints, nothing else,
//! the artificial delay, and graceful shutdown.

use std::time::{Duration, Instant};

use tokio::{net::TcpListener, sync::oneshot};

async fn start(
    id: &str,
    delay_ms: u64,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let config = backend::Config {
        id: id.into(),
        delay_ms,
    };
    let task = tokio::spawn(backend::serve(listener, config, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx, task)
}

#[tokio::test]
async fn home_answers_the_spec_body() {
    let (url, stop, task) = start("server-7", 0).await;
    let resp = reqwest::get(format!("{url}/home")).await.expect("get");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"message": "Hello from Server: server-7", "status": "successful"})
    );
    stop.send(()).expect("stop");
    task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn heartbeat_is_200_with_empty_body() {
    let (url, _stop, _task) = start("1", 0).await;
    let resp = reqwest::get(format!("{url}/heartbeat")).await.expect("get");
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (url, _stop, _task) = start("1", 0).await;
    let resp = reqwest::get(format!("{url}/nope")).await.expect("get");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn delay_applies_per_replica_and_per_request() {
    let (url, _stop, _task) = start("slow", 150).await;
    let t = Instant::now();
    reqwest::get(format!("{url}/home")).await.expect("get");
    assert!(t.elapsed() >= Duration::from_millis(150));

    let (url, _stop, _task) = start("fast", 0).await;
    let t = Instant::now();
    reqwest::get(format!("{url}/home?delay_ms=120"))
        .await
        .expect("get");
    assert!(t.elapsed() >= Duration::from_millis(120));
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let (url, stop, task) = start("draining", 300).await;
    let pending = tokio::spawn(reqwest::get(format!("{url}/home")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).expect("stop");
    let resp = pending
        .await
        .expect("join")
        .expect("request in flight completes");
    assert_eq!(resp.status(), 200);
    task.await.expect("join").expect("serve");
}

/// The process contract the balancer's process orchestrator relies on:
/// announce the port on stdout, exit when stdin closes.
#[tokio::test]
async fn binary_announces_its_port_and_exits_with_its_parent() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_backend"))
        .args([
            "--id",
            "p1",
            "--listen",
            "127.0.0.1:0",
            "--announce",
            "--exit-with-parent",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn backend");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("announces in time")
    .expect("read");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .expect("announce line")
        .to_owned();
    let resp = reqwest::get(format!("http://{addr}/home"))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits once stdin closes")
        .expect("wait");
    assert!(status.success(), "{status}");
}
