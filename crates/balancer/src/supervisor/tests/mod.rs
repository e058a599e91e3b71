//! The supervisor driven through its message handlers with a fake
//! orchestrator and a fake readiness probe, on paused time (no sockets,
//! no real waiting). This file holds the fakes and the harness; [`races`]
//! the stale-message and reservation cases, [`lifecycle`] naming, refusals,
//! adoption and shutdown.

mod lifecycle;
mod observe;
mod races;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::{
    change::{Direction, Hostname},
    health::HealthConfig,
    orchestrator::{Adopted, BoxFuture, ReplicaSpec},
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
    /// Whether it restarts dead instances itself, as Swarm does.
    restarts: std::sync::atomic::AtomicBool,
    /// Names another balancer has taken: a start of one is `Taken`.
    taken: std::sync::Mutex<std::collections::HashSet<String>>,
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
        target: crate::health::Target<'a>,
        _timeout: Duration,
    ) -> BoxFuture<'a, bool> {
        let authority = target.authority;
        let alive = self
            .live
            .lock()
            .expect("live")
            .values()
            .any(|addr| addr.to_string() == authority.as_str());
        Box::pin(async move { alive })
    }
}

impl Fake {
    /// Marks `name` as taken by another balancer.
    fn take(&self, name: &str) {
        self.taken.lock().expect("taken").insert(name.to_owned());
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

    fn restarts_replicas(&self) -> bool {
        self.restarts.load(Ordering::SeqCst)
    }

    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        if self.taken.lock().expect("taken").contains(&spec.name) {
            return Box::pin(async move {
                Err(OrchestratorError::Taken {
                    name: spec.name,
                    what: crate::orchestrator::Taken::Name,
                })
            });
        }
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
                protocol: None,
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
        max_conns_per_replica: 0,
        upstream_protocol: crate::replica::Protocol::Http1,
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

/// A running supervisor with `fake` as both orchestrator and probe and no
/// initial replicas.
async fn running(
    settings: Settings,
    fake: &Arc<Fake>,
    pool: Arc<Pool>,
    shutdown: &CancellationToken,
) -> (Control, tokio::task::JoinHandle<()>) {
    Supervisor::start(
        settings,
        fake.clone(),
        pool,
        Arc::new(EventLog::default()),
        fake.clone(),
        0,
        shutdown.clone(),
    )
    .await
    .expect("start")
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
            fill: false,
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

/// Polls `done` every 10 ms for up to `within`.
pub(super) async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
