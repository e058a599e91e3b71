//! The Docker orchestrator without an engine: the balancer still starts
//! and answers, and `/add` is a clear 503 JSON error that changes nothing.

mod common;

use std::sync::Arc;

use balancer::{
    Balancer, Config,
    orchestrator::{DockerOrchestrator, docker::DockerSettings},
};

#[tokio::test]
async fn add_without_an_engine_is_a_503_and_changes_nothing() {
    let orchestrator = DockerOrchestrator::connect(DockerSettings {
        image: "lb-backend:latest".into(),
        network: "net1".into(),
        project: "lb-test-no-engine".into(),
        stop_timeout: 1,
        socket: Some("/nonexistent/docker.sock".into()),
        remove_on_shutdown: false,
    });
    let config = Config {
        listen: "127.0.0.1:0".into(),
        replicas: 0,
        ..Config::default()
    };
    let lb = Balancer::new(config)
        .with_orchestrator(Arc::new(orchestrator))
        .start()
        .await
        .expect("starts without an engine");
    let url = format!("http://{}", lb.addr());
    let client = common::client();
    let (status, body) = common::send(client.post(format!("{url}/add")).body(r#"{"n": 1}"#)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "failure");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("engine"),
        "{body}"
    );
    let (status, rep) = common::send(client.get(format!("{url}/rep"))).await;
    assert_eq!(status, 200);
    assert_eq!(rep["message"]["N"], 0);
    // No replica: requests are answered 503, never hang.
    let (status, _) = common::send(client.get(format!("{url}/home"))).await;
    assert_eq!(status, 503);
    lb.stop().await;
}
