//! Late and stale messages: a start or retry of an earlier incarnation,
//! a name removed while its replacement starts.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_late_replacement_of_an_earlier_incarnation_is_never_adopted() {
    let mut h = Harness::new();
    h.add(1, &["a"]).await.expect("add a");
    // The first "a" dies; its replacement starts but reports late...
    let stale = h.die_and_hold_replacement("a").await;
    let Message::Started {
        generation: stale_generation,
        result: Ok(_),
        ..
    } = stale
    else {
        panic!("the first replacement failed to start");
    };
    // ...after "a" was removed (the name is free once that start has
    // resolved and its instance is stopped), added again, and died again.
    h.sup.remove(rm(1, &["a"])).expect("rm a");
    h.sup.handle(stale);
    h.drained("a").await;
    h.add(1, &["a"]).await.expect("add a again");
    h.die("a");
    let current = h.sup.members["a"].generation;
    assert_ne!(current, stale_generation, "generation reused for a new 'a'");

    // A late report about the earlier incarnation (a duplicate of the
    // one above) and its retry arrive while the real replacement starts.
    let spec = ReplicaSpec {
        name: "a".into(),
        id: h.sup.members["a"].id,
    };
    let late = h.fake.spawn(spec).await.expect("late instance");
    let stale_addr = late.addr;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spawns = h.fake.spawns.load(Ordering::SeqCst);
    h.sup.handle(Message::Retry {
        name: "a".into(),
        generation: stale_generation,
    });
    h.sup.handle(Message::Started {
        op: Op::Replace,
        name: "a".into(),
        generation: stale_generation,
        result: Ok(late),
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        matches!(h.sup.members["a"].phase, Phase::Replacing { .. }),
        "the stale instance was adopted"
    );
    assert!(
        h.sup
            .pool
            .load()
            .replicas
            .iter()
            .all(|r| r.addr != stale_addr),
        "the stale instance is in the pool"
    );
    assert_eq!(
        h.fake.spawns.load(Ordering::SeqCst),
        spawns,
        "a stale retry started an instance"
    );

    // The real replacement still lands.
    let real = h
        .until(|m| {
            matches!(
                m,
                Message::Started {
                    op: Op::Replace,
                    ..
                }
            )
        })
        .await;
    h.sup.handle(real);
    assert!(matches!(h.sup.members["a"].phase, Phase::Running { .. }));
    assert_eq!(h.sup.members["a"].generation, current);
}

#[tokio::test(start_paused = true)]
async fn a_name_removed_while_its_replacement_starts_stays_taken_until_that_start_resolves() {
    let mut h = Harness::new();
    h.add(1, &["a"]).await.expect("add a");
    // "a" dies; its replacement's start is held back...
    let stale = h.die_and_hold_replacement("a").await;
    // ...while "a" is removed and added again.
    h.sup.remove(rm(1, &["a"])).expect("rm a");
    h.settle(Duration::from_millis(100)).await;
    match h.add(1, &["a"]).await {
        Err(MembershipError::Duplicate(name)) => assert_eq!(name, "a"),
        r => panic!("'a' was free while its replacement still started: {r:?}"),
    }

    // The stale start resolves: its instance is stopped, then the name
    // is free, and exactly one "a" runs.
    h.sup.handle(stale);
    h.drained("a").await;
    assert_eq!(h.fake.running("a"), 0, "the stale instance still runs");
    h.add(1, &["a"]).await.expect("add a once the name is free");
    h.settle(Duration::from_millis(50)).await;
    assert_eq!(h.fake.running("a"), 1);
    assert_eq!(h.sup.names(), strings(&["a"]));
}
