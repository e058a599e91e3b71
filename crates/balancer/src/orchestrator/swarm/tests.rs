//! The service spec, and what happens without an engine.

use serde_json::json;

use super::*;

fn orchestrator() -> SwarmOrchestrator {
    SwarmOrchestrator::new(SwarmSettings {
        image: "lb-backend:swarm".into(),
        network: "lb-swarm".into(),
        project: "p1".into(),
        socket: Some("/nonexistent/docker.sock".into()),
        poll: Duration::from_secs(1),
        stop_grace: Duration::from_secs(5),
        start_timeout: Duration::from_secs(1),
        remove_on_shutdown: false,
    })
}

#[test]
fn services_are_labelled_dnsrr_and_restart_at_once() {
    let spec = ReplicaSpec {
        name: "s4".into(),
        id: 4,
    };
    let s = orchestrator().service_spec(&spec);
    assert_eq!(s["Name"], "p1-s4");
    assert_eq!(s["Labels"][LABEL_PROJECT], "p1");
    assert_eq!(s["Labels"][LABEL_REPLICA], "s4");
    assert_eq!(s["Labels"][LABEL_ID], "4");
    assert_eq!(s["EndpointSpec"]["Mode"], "dnsrr");
    let task = &s["TaskTemplate"];
    assert_eq!(task["RestartPolicy"]["Delay"], 0);
    assert_eq!(task["RestartPolicy"]["Condition"], "any");
    assert_eq!(task["Networks"][0]["Target"], "lb-swarm");
    assert_eq!(task["ContainerSpec"]["Env"][0], "SERVER_ID=s4");
    assert!(task["ContainerSpec"].get("Labels").is_none());
    assert_eq!(task["ContainerSpec"]["Image"], "lb-backend:swarm");
    assert_eq!(task["ContainerSpec"]["StopGracePeriod"], 5_000_000_000_u64);
    // The labels parse back into the same name and ring id.
    let service: model::Service = serde_json::from_value(json!({
        "ID": "x", "Spec": {"Name": s["Name"], "Labels": s["Labels"]}
    }))
    .expect("service");
    assert_eq!(model::spec_of(&service), Some(spec));
}

#[tokio::test]
async fn without_an_engine_adoption_is_empty_and_starts_fail() {
    let o = orchestrator();
    assert!(o.adopt().await.expect("adopt").is_empty());
    let err = o
        .spawn(ReplicaSpec {
            name: "s1".into(),
            id: 1,
        })
        .await
        .expect_err("no engine");
    assert!(matches!(err, OrchestratorError::Engine(_)), "{err}");
}
