//! The supervisor driven through its message handlers with an in-process
//! fake orchestrator: races, stale messages, naming, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::{
    health::HealthConfig,
    orchestrator::Adopted,
    policy::{PolicyOptions, from_name},
};

/// Starts in-process replicas on loopback ports; counts starts and
/// stops and knows which instances still run.
#[derive(Default)]
struct Fake {
    spawns: AtomicUsize,
    /// Stops that have completed.
    stops: AtomicUsize,
    /// Running instances: handle -> what stops its server.
    live: std::sync::Mutex<HashMap<String, CancellationToken>>,
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
            let fail = |e: std::io::Error| OrchestratorError::Spawn {
                name: spec.name.clone(),
                reason: e.to_string(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(fail)?;
            let addr = listener.local_addr().map_err(fail)?;
            let config = backend::Config {
                id: spec.name.clone(),
                delay_ms: 0,
            };
            let stop = CancellationToken::new();
            tokio::spawn(backend::serve(
                listener,
                config,
                stop.clone().cancelled_owned(),
            ));
            let handle = format!("{}#{n}", spec.name);
            self.live.lock().expect("live").insert(handle.clone(), stop);
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
            if let Some(server) = self.live.lock().expect("live").remove(&handle) {
                server.cancel();
            }
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
            prober: Default::default(),
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
    async fn add(&mut self, n: usize, hostnames: &[&str]) -> Result<Vec<String>, AdminError> {
        let (reply, mut answer) = oneshot::channel();
        self.sup.handle(Message::Add {
            n,
            hostnames: strings(hostnames),
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
        while self.sup.draining.contains(name) {
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

#[tokio::test]
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
    h.sup.remove(1, strings(&["a"])).expect("rm a");
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
    assert_eq!(h.sup.members["a"].phase, Phase::Running);
    assert_eq!(h.sup.members["a"].generation, current);
}

#[tokio::test]
async fn generated_names_keep_their_ring_ids() {
    let mut h = Harness::new();
    h.add(3, &[]).await.expect("add 3");
    h.sup
        .remove(1, strings(&["server-2"]))
        .expect("rm server-2");
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

#[tokio::test]
async fn control_refuses_bad_changes_without_hanging_or_panicking() {
    let shutdown = CancellationToken::new();
    let (control, task) = Supervisor::start(
        settings(),
        Arc::new(Fake::default()),
        pool(),
        Arc::new(EventLog::default()),
        health(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start");
    let answer = |what: &'static str| {
        move |r: Result<Result<Vec<String>, AdminError>, _>| {
            r.unwrap_or_else(|_| panic!("{what} was not answered within 2 s"))
        }
    };
    let within = Duration::from_secs(2);

    let r = answer("add(0)")(tokio::time::timeout(within, control.add(0, vec![])).await);
    assert!(matches!(r, Err(AdminError::BadRequest(_))), "{r:?}");
    let r = answer("remove(0)")(tokio::time::timeout(within, control.remove(0, vec![])).await);
    assert!(matches!(r, Err(AdminError::BadRequest(_))), "{r:?}");

    control
        .add(2, strings(&["a", "b"]))
        .await
        .expect("add a, b");
    let r = answer("remove(1, [a, b])")(
        tokio::time::timeout(within, control.remove(1, strings(&["a", "b"]))).await,
    );
    assert!(
        matches!(r, Err(AdminError::TooManyHostnamesToRemove)),
        "{r:?}"
    );
    let r = answer("add(1, [c, d])")(
        tokio::time::timeout(within, control.add(1, strings(&["c", "d"]))).await,
    );
    assert!(matches!(r, Err(AdminError::TooManyHostnamesToAdd)), "{r:?}");
    let r = answer("add(2, [c, c])")(
        tokio::time::timeout(within, control.add(2, strings(&["c", "c"]))).await,
    );
    assert!(matches!(r, Err(AdminError::BadRequest(_))), "{r:?}");
    for e in [
        AdminError::TooManyHostnamesToAdd,
        AdminError::TooManyHostnamesToRemove,
        AdminError::BadRequest(String::new()),
    ] {
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }

    // Still alive, nothing changed.
    assert!(!task.is_finished());
    assert_eq!(control.members().await, strings(&["a", "b"]));
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

#[tokio::test]
async fn shutdown_waits_for_removals_and_starts_in_flight_and_stops_them() {
    let fake = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let (control, task) = Supervisor::start(
        settings(),
        fake.clone(),
        pool(),
        Arc::new(EventLog::default()),
        health(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start");
    control.add(1, strings(&["b"])).await.expect("add b");
    // A removal whose stop takes a while...
    *fake.stop_delay.lock().expect("stop_delay") = Duration::from_millis(300);
    control.remove(1, strings(&["b"])).await.expect("rm b");
    // ...and an /add whose start takes a while, both in flight.
    fake.slow
        .lock()
        .expect("slow")
        .insert("a".into(), Duration::from_millis(300));
    let add = tokio::spawn({
        let control = control.clone();
        async move { control.add(1, strings(&["a"])).await }
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
    assert!(matches!(r, Err(AdminError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn a_name_removed_while_its_replacement_starts_stays_taken_until_that_start_resolves() {
    let mut h = Harness::new();
    h.add(1, &["a"]).await.expect("add a");
    // "a" dies; its replacement's start is held back...
    let stale = h.die_and_hold_replacement("a").await;
    // ...while "a" is removed and added again.
    h.sup.remove(1, strings(&["a"])).expect("rm a");
    h.settle(Duration::from_millis(100)).await;
    match h.add(1, &["a"]).await {
        Err(e @ AdminError::Duplicate(_)) => {
            assert_eq!(e.status(), http::StatusCode::CONFLICT);
        }
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

#[tokio::test]
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
        health(),
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
