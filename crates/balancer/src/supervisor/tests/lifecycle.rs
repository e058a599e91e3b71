//! Naming, refusals, adoption and shutdown.

use super::*;

#[tokio::test(start_paused = true)]
async fn generated_names_keep_their_ring_ids() {
    let mut h = Harness::new();
    h.add(3, &[]).await.expect("add 3");
    h.sup.remove(rm(1, &["server-2"])).expect("rm server-2");
    // server-2 is still draining: s4 must leave id 2 to it.
    h.add(1, &["s4"]).await.expect("add s4");
    h.drained("server-2").await;
    let names = h.add(1, &[]).await.expect("add 1");
    assert!(names.contains(&"server-2".to_owned()), "{names:?}");
    let ids = h.ids();
    assert_eq!(ids["server-2"], 2, "{ids:?}");
    assert_eq!(ids["s4"], 4, "{ids:?}");

    // An explicit `server-<k>` gets id k when it is free, and other
    // names leave id k (and the ids of reserved names) alone.
    h.add(2, &["s9", "server-7"]).await.expect("add 2");
    h.add(1, &[]).await.expect("add 1");
    let ids = h.ids();
    assert_eq!(ids["server-7"], 7, "{ids:?}");
    assert_eq!(ids["s9"], 5, "{ids:?}");
    assert_eq!(ids["server-6"], 6, "{ids:?}");
    for (name, id) in &ids {
        if let Some(k) = name.strip_prefix("server-") {
            assert_eq!(k, id.to_string(), "{ids:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn control_refuses_what_the_pool_cannot_take_without_hanging() {
    let fake = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let (control, task) = running(
        Settings {
            max_replicas: 3,
            ..settings()
        },
        &fake,
        pool(),
        &shutdown,
    )
    .await;
    control.add(add(2, &["a", "b"])).await.expect("add a, b");
    let within = Duration::from_secs(2);
    for (what, r) in [
        (
            "add a again",
            tokio::time::timeout(within, control.add(add(1, &["a"]))).await,
        ),
        (
            "add 2 over max 3",
            tokio::time::timeout(within, control.add(add(2, &[]))).await,
        ),
        (
            "rm unknown c",
            tokio::time::timeout(within, control.remove(rm(1, &["c"]))).await,
        ),
        (
            "rm 3 of 2",
            tokio::time::timeout(within, control.remove(rm(3, &[]))).await,
        ),
    ] {
        let r = r.unwrap_or_else(|_| panic!("{what} was not answered within 2 s"));
        let ok = match what {
            "add a again" => matches!(r, Err(MembershipError::Duplicate(_))),
            "add 2 over max 3" => matches!(r, Err(MembershipError::OverMax { .. })),
            "rm unknown c" => matches!(r, Err(MembershipError::Unknown(_))),
            _ => matches!(r, Err(MembershipError::NotEnough { .. })),
        };
        assert!(ok, "{what}: {r:?}");
    }
    // Still alive, nothing changed.
    assert!(!task.is_finished());
    assert_eq!(control.members().await, strings(&["a", "b"]));
    assert_eq!(fake.spawns.load(Ordering::SeqCst), 2);
    shutdown.cancel();
    task.await.expect("supervisor exits cleanly");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_removals_and_starts_in_flight_and_stops_them() {
    let fake = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let (control, task) = running(settings(), &fake, pool(), &shutdown).await;
    control.add(add(1, &["b"])).await.expect("add b");
    // A removal whose stop takes a while...
    *fake.stop_delay.lock().expect("stop_delay") = Duration::from_millis(300);
    control.remove(rm(1, &["b"])).await.expect("rm b");
    // ...and an /add whose start takes a while, both in flight.
    fake.slow
        .lock()
        .expect("slow")
        .insert("a".into(), Duration::from_millis(300));
    let add = tokio::spawn({
        let control = control.clone();
        async move { control.add(add(1, &["a"])).await }
    });
    assert!(
        eventually(Duration::from_secs(2), || fake
            .spawns
            .load(Ordering::SeqCst)
            == 2)
        .await,
        "the start of 'a' never began"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(4), task)
        .await
        .expect("shutdown returns within 4 s")
        .expect("supervisor exits cleanly");
    assert_eq!(
        fake.stops.load(Ordering::SeqCst),
        2,
        "shutdown returned before stopping the removed 'b' and the starting 'a'"
    );
    assert_eq!(fake.running("a") + fake.running("b"), 0);
    let r = add.await.expect("the /add task");
    assert!(matches!(r, Err(MembershipError::ShuttingDown)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn adopting_two_instances_of_one_name_keeps_one_and_stops_the_other() {
    let fake = Arc::new(Fake::default());
    let spec = |name: &str, id| ReplicaSpec {
        name: name.into(),
        id,
    };
    let mut adoptable = Vec::new();
    for (name, id) in [("a", 1), ("a", 2), ("b", 1)] {
        let instance = fake.spawn(spec(name, id)).await.expect("spawn");
        adoptable.push(Adopted {
            spec: spec(name, id),
            instance,
            weight: 1,
        });
    }
    let kept = adoptable[0].instance.addr;
    *fake.adoptable.lock().expect("adoptable") = adoptable;
    let shutdown = CancellationToken::new();
    let pool = pool();
    let (control, task) = running(settings(), &fake, pool.clone(), &shutdown).await;
    assert_eq!(control.members().await, strings(&["a"]));
    let addrs: Vec<_> = pool.load().replicas.iter().map(|r| r.addr).collect();
    assert_eq!(addrs, vec![kept]);
    // The second "a" and "b" (ring id 1 is taken) are stopped, not
    // left running unmanaged.
    assert!(
        eventually(Duration::from_secs(2), || fake.running("a") == 1
            && fake.running("b") == 0)
        .await,
        "a duplicate was left running: {} 'a', {} 'b'",
        fake.running("a"),
        fake.running("b")
    );
    shutdown.cancel();
    task.await.expect("supervisor exits cleanly");
}
