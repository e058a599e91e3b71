//! The membership rule on the engine answers captured from the lab swarm.

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/swarm/");

fn load<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let text = std::fs::read_to_string(format!("{FIXTURES}{file}")).expect("fixture");
    serde_json::from_str(&text).expect("parses")
}

const SCOPE: Scope<'static> = Scope {
    project: "lb",
    network: "lb-swarm",
    port: 5000,
};

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().expect("address"))
}

fn service(id: &str, created: &str, name: &str, ring_id: &str) -> Service {
    Service {
        id: id.into(),
        created_at: created.into(),
        spec: ServiceSpec {
            name: format!("lb-{name}"),
            labels: HashMap::from([
                (LABEL_PROJECT.to_owned(), "lb".to_owned()),
                (LABEL_REPLICA.to_owned(), name.to_owned()),
                (LABEL_ID.to_owned(), ring_id.to_owned()),
            ]),
        },
    }
}

#[test]
fn running_tasks_give_each_service_its_address() {
    let services: Vec<Service> = load("services.json");
    let tasks: Vec<Task> = load("tasks.json");
    let nodes: Vec<Node> = load("nodes.json");
    let got = members(SCOPE, &services, &tasks, &nodes);
    let got: Vec<(String, u32, Option<SocketAddr>)> = got
        .into_iter()
        .map(|o| (o.spec.name, o.spec.id, o.addr))
        .collect();
    assert_eq!(
        got,
        vec![
            ("server-1".to_owned(), 1, addr("10.214.1.2:5000")),
            ("server-2".to_owned(), 2, addr("10.214.1.3:5000")),
        ]
    );
}

#[test]
fn a_killed_task_is_followed_by_its_replacement() {
    let services: Vec<Service> = load("services.json");
    let tasks: Vec<Task> = load("tasks-after-kill.json");
    let nodes: Vec<Node> = load("nodes.json");
    let got = members(SCOPE, &services, &tasks, &nodes);
    // The failed task keeps its old address in the answer; it must not win.
    assert_eq!(got[0].spec.name, "server-1");
    assert_eq!(got[0].addr, addr("10.214.1.7:5000"));
    // server-2's tasks are not in this answer: no address, still a member.
    assert_eq!(got[1].spec.name, "server-2");
    assert_eq!(got[1].addr, None);
}

#[test]
fn tasks_on_a_down_node_or_shut_down_do_not_serve() {
    let tasks: Vec<Task> = load("tasks-cut.json");
    let nodes: Vec<Node> = load("nodes-cut.json");
    let service_id = tasks[0].service_id.clone();
    let one = |ring_id: &str| service(&service_id, "2026-11-26T01:00:00Z", "cut", ring_id);
    let got = members(SCOPE, &[one("7")], &tasks, &nodes);
    assert_eq!(got.len(), 1);
    // Slot 3 moved from lab-3 (cut: still "running", desired shutdown) to
    // lab-2 with .25; the newest serving task is taken.
    assert_eq!(got[0].addr, addr("10.214.1.25:5000"));
    // With only the cut node's task left, nothing serves.
    let stale: Vec<Task> = tasks
        .iter()
        .filter(|t| {
            t.node_id
                .as_deref()
                .is_some_and(|n| n.starts_with("p25kv8"))
        })
        .cloned()
        .map(|mut t| {
            t.desired_state = "running".into();
            t
        })
        .collect();
    assert_eq!(stale.len(), 1);
    assert_eq!(members(SCOPE, &[one("7")], &stale, &nodes)[0].addr, None);
}

#[test]
fn the_older_service_wins_a_clash_of_names_or_ids() {
    let older = service("b", "2026-11-26T01:00:00.5Z", "s4", "4");
    let younger = service("a", "2026-11-26T01:00:00.25Z", "t4", "4");
    // .25 s is earlier than .5 s although "25" > "5" as text.
    let got = members(SCOPE, &[older.clone(), younger.clone()], &[], &[]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].spec.name, "t4");
    assert_eq!(got[0].handle, "a");
    // The same answer in any order gives the same member.
    let again = members(SCOPE, &[younger, older], &[], &[]);
    assert_eq!(again, got);
}

#[test]
fn other_projects_and_unlabelled_services_are_ignored() {
    let mut other = service("x", "2026-11-26T01:00:00Z", "s1", "1");
    other
        .spec
        .labels
        .insert(LABEL_PROJECT.to_owned(), "someone-else".to_owned());
    let mut unlabelled = service("y", "2026-11-26T01:00:00Z", "s2", "2");
    unlabelled.spec.labels.remove(LABEL_ID);
    assert!(members(SCOPE, &[other, unlabelled], &[], &[]).is_empty());
}

#[test]
fn creation_times_order_by_value() {
    assert!(created_nanos("2026-11-26T01:00:00.5Z") > created_nanos("2026-11-26T01:00:00.25Z"));
    assert!(created_nanos("2026-11-27T00:00:00Z") > created_nanos("2026-11-26T23:59:59.9Z"));
    assert_eq!(created_nanos("garbage"), None);
}
