//! Membership read from a shared engine: members added, removed and
//! restarted elsewhere, late readings, names taken by another balancer.

use super::*;
use crate::orchestrator::{Observation, Observed};

/// An instance "the engine" runs for `name` (not started by the fake's
/// `spawn`): live, so the fake probe answers for it.
fn engine_runs(h: &Harness, name: &str, port: u16) -> SocketAddr {
    let addr = SocketAddr::from(([127, 0, 0, 2], port));
    h.fake
        .live
        .lock()
        .expect("live")
        .insert(format!("{name}#engine{port}"), addr);
    addr
}

fn shown(name: &str, id: ReplicaId, addr: Option<SocketAddr>) -> Observed {
    Observed {
        spec: ReplicaSpec {
            name: name.into(),
            id,
        },
        handle: format!("svc-{name}"),
        addr,
    }
}

fn reading(members: Vec<Observed>) -> Message {
    Message::Observed(Observation {
        taken_at: tokio::time::Instant::now(),
        members,
    })
}

fn addr_of(h: &Harness, name: &str) -> Option<SocketAddr> {
    h.sup
        .pool
        .load()
        .replicas
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.addr)
}

fn usable(h: &Harness, name: &str) -> bool {
    h.sup
        .pool
        .load()
        .replicas
        .iter()
        .any(|r| r.name == name && r.is_available())
}

#[tokio::test(start_paused = true)]
async fn a_member_added_elsewhere_joins_once_it_answers() {
    let mut h = Harness::new();
    let addr = engine_runs(&h, "x", 1);
    h.sup.handle(reading(vec![shown("x", 5, Some(addr))]));
    // In the table at once (same table as the other balancers), out of
    // rotation until its heartbeat answers.
    assert_eq!(h.ids().get("x"), Some(&5));
    assert!(!usable(&h, "x"));
    h.settle(Duration::from_millis(200)).await;
    assert!(usable(&h, "x"), "x never came into rotation");
    assert_eq!(addr_of(&h, "x"), Some(addr));
    assert_eq!(h.sup.names(), strings(&["x"]));
    // Nothing was started or stopped here.
    assert_eq!(h.fake.spawns.load(Ordering::SeqCst), 0);
    // Shown again unchanged: nothing moves.
    let generation = h.sup.members["x"].generation;
    h.sup.handle(reading(vec![shown("x", 5, Some(addr))]));
    assert_eq!(h.sup.members["x"].generation, generation);
}

#[tokio::test(start_paused = true)]
async fn a_member_gone_from_the_engine_leaves_without_a_stop() {
    let mut h = Harness::new();
    let addr = engine_runs(&h, "x", 1);
    h.sup.handle(reading(vec![shown("x", 5, Some(addr))]));
    h.settle(Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.sup.handle(reading(Vec::new()));
    assert!(h.ids().is_empty());
    assert!(h.sup.names().is_empty());
    h.settle(Duration::from_millis(200)).await;
    assert_eq!(h.fake.stops.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reading_taken_before_a_member_joined_does_not_remove_it() {
    let mut h = Harness::new();
    let before = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.add(1, &["a"]).await.expect("add a");
    h.sup.handle(Message::Observed(Observation {
        taken_at: before,
        members: Vec::new(),
    }));
    assert_eq!(h.sup.names(), strings(&["a"]));
    // A reading taken now that lacks it does remove it.
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.sup.handle(reading(Vec::new()));
    assert!(h.sup.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_task_is_followed_to_its_new_address() {
    let mut h = Harness::new();
    h.fake.restarts.store(true, Ordering::SeqCst);
    h.add(1, &["a"]).await.expect("add a");
    let id = h.ids()["a"];
    let old = addr_of(&h, "a").expect("a in pool");
    // The task dies: the balancer learns it (exit or heartbeats) and takes
    // it out of rotation, but starts nothing: the engine restarts it.
    h.fake.live.lock().expect("live").clear();
    h.die("a");
    assert!(!usable(&h, "a"));
    h.settle(Duration::from_millis(200)).await;
    assert_eq!(h.fake.spawns.load(Ordering::SeqCst), 1);
    // The engine shows no serving task, then the new one.
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.sup.handle(reading(vec![shown("a", id, None)]));
    assert_eq!(h.ids()["a"], id, "a kept its place while dead");
    let new = engine_runs(&h, "a", 2);
    h.sup.handle(reading(vec![shown("a", id, Some(new))]));
    h.settle(Duration::from_millis(200)).await;
    assert!(usable(&h, "a"), "a's new task never came into rotation");
    assert_eq!(addr_of(&h, "a"), Some(new));
    assert_ne!(old, new);
    assert_eq!(h.ids()["a"], id);
    assert_eq!(h.fake.spawns.load(Ordering::SeqCst), 1);
    assert_eq!(h.fake.stops.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn removing_a_followed_member_removes_it_in_the_engine() {
    let mut h = Harness::new();
    // Never answers: stays "Replacing" (followed) with its engine handle.
    let addr = SocketAddr::from(([127, 0, 0, 3], 1));
    h.sup.handle(reading(vec![shown("x", 5, Some(addr))]));
    h.sup.remove(rm(1, &["x"])).expect("rm x");
    h.drained("x").await;
    assert_eq!(h.fake.stops.load(Ordering::SeqCst), 1);
    // A reading from before the removal does not bring it back.
    h.sup.handle(Message::Observed(Observation {
        taken_at: tokio::time::Instant::now() - Duration::from_millis(1),
        members: vec![shown("x", 5, Some(addr))],
    }));
    assert!(h.sup.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_generated_name_taken_elsewhere_is_retried_with_the_next_id() {
    let mut h = Harness::new();
    h.fake.take("server-1");
    let names = h.add(1, &[]).await.expect("add");
    assert_eq!(names, strings(&["server-2"]));
    assert_eq!(h.ids()["server-2"], 2);
    // A given hostname that is taken is a duplicate, and nothing changes.
    h.fake.take("s9");
    let err = h.add(1, &["s9"]).await.expect_err("taken");
    assert!(
        matches!(err, MembershipError::Duplicate(ref n) if n == "s9"),
        "{err}"
    );
    assert_eq!(h.sup.names(), strings(&["server-2"]));
}

#[tokio::test(start_paused = true)]
async fn at_start_a_name_filled_by_another_balancer_counts() {
    let mut h = Harness::new();
    h.fake.take("server-1");
    let (reply, mut answer) = oneshot::channel();
    h.sup.handle(Message::Add {
        change: add(2, &[]),
        reply,
        fill: true,
    });
    let names = loop {
        if let Ok(result) = answer.try_recv() {
            break result.expect("fill");
        }
        let msg = h.until(|_| true).await;
        h.sup.handle(msg);
    };
    // server-1 is the other balancer's (it joins through a reading); no
    // server-3 was made up for it.
    assert_eq!(names, strings(&["server-2"]));
    assert_eq!(h.fake.spawns.load(Ordering::SeqCst), 1);
}
