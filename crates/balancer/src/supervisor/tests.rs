//! The supervisor driven through its message handlers with a fake
//! orchestrator and a fake readiness probe, on paused time (no sockets,
//! no real waiting): races, stale messages, naming, shutdown.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::{
    change::{Direction, Hostname},
    health::HealthConfig,
    orchestrator::{Adopted, BoxFuture},
    policy::{PolicyOptions, from_name},
};

/// "Starts" instances that exist only in its table; counts starts and
/// stops, knows which instances still run, and as a [`Probe`] answers for
/// exactly those.
#[derive(Default, Debug)]
struct Fake {
    spawns: AtomicUsize,
    /// Stops that have completed.
    stops: AtomicUsize,
    /// Running instances: handle -> address.
    live: std::sync::Mutex<HashMap<String, SocketAddr>>,
    /// Extra time a start of this name takes.
    slow: std::sync::Mutex<HashMap<String, Duration>>,
    /// Time every stop takes.
    stop_delay: std::sync::Mutex<Duration>,
    /// What `adopt` returns (once).
    adoptable: std::sync::Mutex<Vec<Adopted>>,
}

impl Fake {
    /// Running instances of `name`.
    fn running(&self, name: &str) -> usize {
        let prefix = format!("{name}#");
        self.live
            .lock()
            .expect("live")
            .keys()
            .filter(|h| h.starts_with(&prefix))
            .count()
    }
}

impl Probe for Fake {
    fn check<'a>(
        &'a self,
        authority: &'a http::uri::Authority,
        _timeout: Duration,
    ) -> BoxFuture<'a, bool> {
        let alive = self
            .live
            .lock()
            .expect("live")
            .values()
            .any(|addr| addr.to_string() == authority.as_str());
        Box::pin(async move { alive })
    }
}

impl Orchestrator for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn adopt(&self) -> BoxFuture<'_, Result<Vec<Adopted>, OrchestratorError>> {
        let adopted = std::mem::take(&mut *self.adoptable.lock().expect("adoptable"));
        Box::pin(async move { Ok(adopted) })
    }

    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        let n = self.spawns.fetch_add(1, Ordering::SeqCst);
        let delay = self
            .slow
            .lock()
            .expect("slow")
            .get(&spec.name)
            .copied()
            .unwrap_or_default();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let port = u16::try_from(10_000 + n).expect("port");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let handle = format!("{}#{n}", spec.name);
            self.live.lock().expect("live").insert(handle.clone(), addr);
            Ok(Instance {
                handle,
                addr,
                pid: None,
                exited: None,
            })
        })
    }

    fn stop(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        let delay = *self.stop_delay.lock().expect("stop_delay");
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.live.lock().expect("live").remove(&handle);
            self.stops.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

fn settings() -> Settings {
    Settings {
        max_replicas: 16,
        ready_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(1),
        retry_backoff: Duration::from_millis(10),
        weights: HashMap::new(),
        health: health(),
    }
}

fn health() -> HealthConfig {
    HealthConfig {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
        fall: 3,
        rise: 1,
    }
}

fn pool() -> Arc<Pool> {
    let policy = from_name("round-robin", &PolicyOptions::default()).expect("policy");
    Arc::new(Pool::new(policy).expect("pool"))
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn change(direction: Direction, n: usize, names: &[&str]) -> Change {
    let names = names
        .iter()
        .map(|&n| Hostname::try_from(n).expect("valid"))
        .collect();
    Change::new(direction, n, names).expect("valid change")
}

fn add(n: usize, names: &[&str]) -> Change {
    change(Direction::Add, n, names)
}

fn rm(n: usize, names: &[&str]) -> Change {
    change(Direction::Remove, n, names)
}

/// A supervisor driven by hand, one message at a time, so a test can
/// hold a message back and deliver it late.
struct Harness {
    sup: Supervisor,
    rx: mpsc::UnboundedReceiver<Message>,
    _signals: mpsc::UnboundedReceiver<Signal>,
    fake: Arc<Fake>,
}

impl Harness {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let events = Arc::new(EventLog::default());
        let fake = Arc::new(Fake::default());
        let watcher = Watcher {
            config: health(),
            probe: fake.clone(),
            signals,
            events,
        };
        let sup = Supervisor::new(settings(), fake.clone(), pool(), watcher, tx);
        Self {
            sup,
            rx,
            _signals: signal_rx,
            fake,
        }
    }

    /// Kills `name`'s instance and handles messages until its replacement
    /// has started; that `Started` is returned unhandled (held back).
    async fn die_and_hold_replacement(&mut self, name: &str) -> Message {
        self.die(name);
        self.until(|m| {
            matches!(
                m,
                Message::Started {
                    op: Op::Replace,
                    ..
                }
            )
        })
        .await
    }

    /// Handles messages until one matches `stop`, returned unhandled.
    async fn until(&mut self, stop: impl Fn(&Message) -> bool) -> Message {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(3), self.rx.recv())
                .await
                .expect("a message within 3 s")
                .expect("channel open");
            if stop(&msg) {
                return msg;
            }
            self.sup.handle(msg);
        }
    }

    /// An `/add`, handling messages until it is answered.
    async fn add(&mut self, n: usize, hostnames: &[&str]) -> Result<Vec<String>, MembershipError> {
        let (reply, mut answer) = oneshot::channel();
        self.sup.handle(Message::Add {
            change: add(n, hostnames),
            reply,
        });
        loop {
            match answer.try_recv() {
                Ok(result) => return result,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Closed) => panic!("/add was never answered"),
            }
            let msg = self.until(|_| true).await;
            self.sup.handle(msg);
        }
    }

    /// Handles messages until `name` has finished draining.
    async fn drained(&mut self, name: &str) {
        while self.sup.reserved.contains_key(name) {
            let msg = self.until(|_| true).await;
            self.sup.handle(msg);
        }
    }

    /// Ring ids of the published pool, by name.
    fn ids(&self) -> BTreeMap<String, ReplicaId> {
        self.sup
            .pool
            .load()
            .replicas
            .iter()
            .map(|r| (r.name.clone(), r.id))
            .collect()
    }

    /// Handles whatever arrives until nothing has for `quiet`.
    async fn settle(&mut self, quiet: Duration) {
        while let Ok(Some(msg)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            self.sup.handle(msg);
        }
    }

    fn die(&mut self, name: &str) {
        let generation = self.sup.members[name].generation;
        self.sup.handle(Message::Health(Signal::Exited {
            name: name.into(),
            generation,
        }));
    }
}

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
    let (control, task) = Supervisor::start(
        Settings {
            max_replicas: 3,
            ..settings()
        },
        fake.clone(),
        pool(),
        Arc::new(EventLog::default()),
        fake.clone(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start");
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

/// Polls `done` every 10 ms for up to `within`.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_removals_and_starts_in_flight_and_stops_them() {
    let fake = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let (control, task) = Supervisor::start(
        settings(),
        fake.clone(),
        pool(),
        Arc::new(EventLog::default()),
        fake.clone(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start");
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
    let (control, task) = Supervisor::start(
        settings(),
        fake.clone(),
        pool.clone(),
        Arc::new(EventLog::default()),
        fake.clone(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start");
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
