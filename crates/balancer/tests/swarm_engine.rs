//! The Swarm orchestrator against a fake Docker Engine on a real Unix
//! socket: the raw HTTP client, the service spec it sends, 409 on a taken
//! name, a ring id lost to an older service, adoption and the membership
//! watch. The fake keeps services and their one running task in memory and
//! answers the few endpoints the orchestrator calls, in the engine's JSON
//! shapes (see tests/fixtures/swarm/README.md).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{delete, get, post},
};
use balancer::orchestrator::{
    Orchestrator, OrchestratorError, ReplicaSpec, Taken,
    swarm::{SwarmOrchestrator, SwarmSettings},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Engine {
    /// Services in creation order, each with its one running task.
    services: Vec<Value>,
    created: usize,
    /// Every create request's body, as sent.
    requests: Vec<Value>,
}

type Shared = Arc<Mutex<Engine>>;

const NETWORK: &str = "lb-test";

/// `filters={"label": ["k=v", ...]}` of a query, as (k, v) pairs.
fn label_filters(query: &HashMap<String, String>) -> Vec<(String, String)> {
    let Some(text) = query.get("filters") else {
        return Vec::new();
    };
    let filters: Value = serde_json::from_str(text).expect("filters are JSON");
    filters["label"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let (k, v) = l.as_str()?.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

async fn services(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let wanted = label_filters(&query);
    let engine = engine.lock().expect("engine");
    let list: Vec<Value> = engine
        .services
        .iter()
        .filter(|s| wanted.iter().all(|(k, v)| s["Spec"]["Labels"][k] == *v))
        .cloned()
        .collect();
    Json(Value::Array(list))
}

async fn create(
    State(engine): State<Shared>,
    Json(spec): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut engine = engine.lock().expect("engine");
    engine.requests.push(spec.clone());
    let name = spec["Name"].as_str().unwrap_or_default().to_owned();
    if engine.services.iter().any(|s| s["Spec"]["Name"] == name) {
        let message = format!(
            "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {name} already exists"
        );
        return (StatusCode::CONFLICT, Json(json!({ "message": message })));
    }
    engine.created += 1;
    let n = engine.created;
    let id = format!("svc{n}");
    engine.services.push(json!({
        "ID": id,
        "CreatedAt": format!("2026-11-26T01:00:{n:02}.5Z"),
        "Spec": spec,
    }));
    (StatusCode::CREATED, Json(json!({ "ID": id })))
}

async fn remove(State(engine): State<Shared>, Path(id): Path<String>) -> StatusCode {
    let mut engine = engine.lock().expect("engine");
    let before = engine.services.len();
    engine.services.retain(|s| s["ID"] != id);
    if engine.services.len() < before {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// One running task per service, at 10.0.9.<n>.
async fn tasks(State(engine): State<Shared>) -> Json<Value> {
    let engine = engine.lock().expect("engine");
    let tasks: Vec<Value> = engine
        .services
        .iter()
        .map(|s| {
            let id = s["ID"].as_str().unwrap_or_default();
            let n = id.trim_start_matches("svc");
            json!({
                "ID": format!("task-{id}"), "ServiceID": id, "NodeID": "node1",
                "DesiredState": "running", "Status": {"State": "running"},
                "Version": {"Index": 10},
                "NetworksAttachments": [{
                    "Network": {"ID": "net-id", "Spec": {"Name": NETWORK}},
                    "Addresses": [format!("10.0.9.{n}/24")],
                }],
            })
        })
        .collect();
    Json(Value::Array(tasks))
}

async fn fake_engine(dir: &std::path::Path) -> (String, Shared) {
    let socket = dir.join("engine.sock");
    let engine = Shared::default();
    let app = Router::new()
        .route("/services", get(services))
        .route("/services/create", post(create))
        .route("/services/{id}", delete(remove))
        .route("/tasks", get(tasks))
        .route(
            "/nodes",
            get(|| async { Json(json!([{"ID": "node1", "Status": {"State": "ready"}}])) }),
        )
        .route(
            "/networks/{name}",
            get(|| async { Json(json!({"Name": NETWORK})) }),
        )
        // No events: the watch falls back to polling.
        .route("/events", get(|| async { StatusCode::OK }))
        .with_state(engine.clone());
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (socket.to_string_lossy().into_owned(), engine)
}

fn orchestrator(socket: &str) -> SwarmOrchestrator {
    SwarmOrchestrator::new(SwarmSettings {
        image: "lb-backend:test".into(),
        network: NETWORK.into(),
        project: "t".into(),
        socket: Some(socket.into()),
        poll: Duration::from_millis(50),
        stop_grace: Duration::from_secs(2),
        start_timeout: Duration::from_secs(2),
        remove_on_shutdown: false,
    })
}

fn spec(name: &str, id: u32) -> ReplicaSpec {
    ReplicaSpec {
        name: name.into(),
        id,
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-swarm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn a_spawned_replica_is_a_labelled_service_reached_at_its_task_address() {
    let dir = temp_dir("spawn");
    let (socket, engine) = fake_engine(&dir).await;
    let o = orchestrator(&socket);
    let instance = o.spawn(spec("s1", 1)).await.expect("spawn");
    assert_eq!(instance.addr.to_string(), "10.0.9.1:5000");
    assert_eq!(instance.handle, "svc1");
    {
        let engine = engine.lock().expect("engine");
        let sent = &engine.requests[0];
        assert_eq!(sent["Name"], "t-s1");
        assert_eq!(sent["Labels"]["lb.replica"], "s1");
        assert_eq!(sent["Labels"]["lb.id"], "1");
        assert_eq!(sent["EndpointSpec"]["Mode"], "dnsrr");
        assert_eq!(sent["TaskTemplate"]["Networks"][0]["Target"], NETWORK);
    }
    // A restarted balancer adopts it.
    let adopted = o.adopt().await.expect("adopt");
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].spec, spec("s1", 1));
    assert_eq!(adopted[0].instance.addr, instance.addr);
    // Stopping removes the service; a second stop of it is not an error.
    o.stop(instance.handle.clone()).await.expect("stop");
    assert!(engine.lock().expect("engine").services.is_empty());
    o.stop(instance.handle).await.expect("stop again");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_name_another_balancer_created_is_taken() {
    let dir = temp_dir("name");
    let (socket, engine) = fake_engine(&dir).await;
    let (a, b) = (orchestrator(&socket), orchestrator(&socket));
    a.spawn(spec("s1", 1)).await.expect("first");
    let err = b.spawn(spec("s1", 1)).await.expect_err("taken");
    assert!(
        matches!(
            err,
            OrchestratorError::Taken {
                what: Taken::Name,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(engine.lock().expect("engine").services.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_ring_id_held_by_an_older_service_is_given_up() {
    let dir = temp_dir("id");
    let (socket, engine) = fake_engine(&dir).await;
    let (a, b) = (orchestrator(&socket), orchestrator(&socket));
    a.spawn(spec("alpha", 4)).await.expect("older");
    // Another name with the same ring id: created, seen to be younger,
    // removed again by its creator.
    let err = b.spawn(spec("beta", 4)).await.expect_err("id taken");
    assert!(
        matches!(
            err,
            OrchestratorError::Taken {
                what: Taken::Id(4),
                ..
            }
        ),
        "{err}"
    );
    let names: Vec<String> = engine
        .lock()
        .expect("engine")
        .services
        .iter()
        .map(|s| s["Spec"]["Name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["t-alpha"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_watch_reports_services_added_and_removed_by_others() {
    let dir = temp_dir("watch");
    let (socket, engine) = fake_engine(&dir).await;
    let (a, b) = (orchestrator(&socket), orchestrator(&socket));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    tokio::spawn(b.observe(tx, stop.clone()).expect("swarm observes"));
    let seen = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
        let mut last: Option<balancer::orchestrator::Observation> = None;
        while let Ok(o) = rx.try_recv() {
            last = Some(o);
        }
        last
    };
    let instance = a.spawn(spec("s7", 7)).await.expect("spawn");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reading = seen(&mut rx).expect("a reading");
    assert_eq!(reading.members.len(), 1);
    assert_eq!(reading.members[0].spec, spec("s7", 7));
    assert_eq!(reading.members[0].addr, Some(instance.addr));
    a.stop(instance.handle).await.expect("stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen(&mut rx).expect("a reading").members.is_empty());
    assert!(engine.lock().expect("engine").services.is_empty());
    stop.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
