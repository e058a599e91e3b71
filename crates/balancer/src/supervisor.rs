//! The supervisor: the one task that changes pool membership.
//!
//! `/add`, `/rm`, replica deaths and health verdicts all arrive here as
//! messages and are handled one at a time, so two of them can never spawn
//! the same replica twice or lose one. Slow work (starting a process,
//! waiting for its heartbeat, draining) runs in tasks that report back with
//! a message; a result for an incarnation that is no longer wanted (its
//! member was removed or replaced meanwhile) is stopped, never adopted.
//!
//! Members are named (`server-1`) and carry a ring id. A dead member keeps
//! both: its replacement starts under the same name and id, so consistent
//! hashing maps keys exactly as before once it serves.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    error::AdminError,
    events::EventLog,
    health::{Signal, Watcher},
    orchestrator::{BoxFuture, Instance, Orchestrator, OrchestratorError, ReplicaSpec},
    pool::Pool,
    replica::{Health, Replica, ReplicaId},
};

/// Tunables of membership changes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_replicas: usize,
    /// How long a new replica may take to answer its first heartbeat.
    pub ready_timeout: Duration,
    /// How long `/rm` lets requests in flight finish before stopping.
    pub drain_timeout: Duration,
    /// Pause before trying a failed replacement again.
    pub retry_backoff: Duration,
    /// Weights by hostname for weighted round robin.
    pub weights: HashMap<String, u32>,
}

type Reply = oneshot::Sender<Result<Vec<String>, AdminError>>;

enum Message {
    Add {
        n: usize,
        hostnames: Vec<String>,
        reply: Reply,
    },
    Remove {
        n: usize,
        hostnames: Vec<String>,
        reply: Reply,
    },
    Members {
        reply: oneshot::Sender<Vec<String>>,
    },
    Started {
        op: Op,
        name: String,
        generation: u64,
        result: Result<Instance, OrchestratorError>,
    },
    Retry {
        name: String,
        generation: u64,
    },
    Stopped {
        name: String,
    },
    Health(Signal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add(u64),
    Replace,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Starting as part of the `/add` batch with this number.
    Adding(u64),
    Running,
    /// Its incarnation died; a new one is starting.
    Replacing {
        since: Instant,
    },
}

struct Member {
    id: ReplicaId,
    generation: u64,
    phase: Phase,
    replica: Option<Arc<Replica>>,
    handle: Option<String>,
    /// The started-but-not-yet-committed instance's exit future.
    exited: Option<BoxFuture<'static, ()>>,
    watch: Option<CancellationToken>,
}

struct Batch {
    names: Vec<String>,
    pending: usize,
    errors: Vec<String>,
    reply: Option<Reply>,
}

/// Talks to the supervisor task.
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::UnboundedSender<Message>,
}

impl Control {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Message) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).ok()?;
        rx.await.ok()
    }

    fn stopped() -> AdminError {
        AdminError::Unavailable("the balancer is shutting down".into())
    }

    /// Adds `n` replicas, `hostnames` first; answers the new member list
    /// once they all answer their heartbeat, or an error and no change.
    pub async fn add(&self, n: usize, hostnames: Vec<String>) -> Result<Vec<String>, AdminError> {
        self.ask(|reply| Message::Add {
            n,
            hostnames,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(Self::stopped()))
    }

    /// Removes `n` replicas, `hostnames` first, random ones for the rest.
    pub async fn remove(
        &self,
        n: usize,
        hostnames: Vec<String>,
    ) -> Result<Vec<String>, AdminError> {
        self.ask(|reply| Message::Remove {
            n,
            hostnames,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(Self::stopped()))
    }

    /// Member hostnames, sorted by ring id.
    pub async fn members(&self) -> Vec<String> {
        self.ask(|reply| Message::Members { reply })
            .await
            .unwrap_or_default()
    }
}

/// The state the supervisor task owns.
pub struct Supervisor {
    settings: Settings,
    orchestrator: Arc<dyn Orchestrator>,
    pool: Arc<Pool>,
    events: Arc<EventLog>,
    watcher: Watcher,
    members: BTreeMap<String, Member>,
    draining: HashSet<String>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    tx: mpsc::UnboundedSender<Message>,
}

impl Supervisor {
    /// Starts the supervisor task: adopts what the orchestrator already
    /// runs, then starts replicas until `initial` exist. Resolves once that
    /// first batch is ready (or failed, which is logged).
    pub async fn start(
        settings: Settings,
        orchestrator: Arc<dyn Orchestrator>,
        pool: Arc<Pool>,
        events: Arc<EventLog>,
        watcher_config: crate::health::HealthConfig,
        initial: usize,
        shutdown: CancellationToken,
    ) -> Result<(Control, tokio::task::JoinHandle<()>), OrchestratorError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (signals, mut signal_rx) = mpsc::unbounded_channel();
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(signal) = signal_rx.recv().await {
                if forward.send(Message::Health(signal)).is_err() {
                    break;
                }
            }
        });
        let watcher = Watcher {
            config: watcher_config,
            prober: Default::default(),
            signals,
            events: events.clone(),
        };
        let mut this = Self {
            settings,
            orchestrator,
            pool,
            events,
            watcher,
            members: BTreeMap::new(),
            draining: HashSet::new(),
            batches: HashMap::new(),
            next_batch: 1,
            tx: tx.clone(),
        };
        this.adopt().await?;
        let control = Control { tx };
        let task = tokio::spawn(this.run(rx, shutdown));
        let missing = initial.saturating_sub(control.members().await.len());
        if missing > 0 {
            match control.add(missing, Vec::new()).await {
                Ok(names) => tracing::info!(?names, "initial replicas ready"),
                Err(e) => tracing::error!(error = %e, "could not start the initial replicas"),
            }
        }
        Ok((control, task))
    }

    async fn adopt(&mut self) -> Result<(), OrchestratorError> {
        for adopted in self.orchestrator.adopt().await? {
            let ReplicaSpec { name, id } = adopted.spec;
            let weight = self
                .settings
                .weights
                .get(&name)
                .copied()
                .unwrap_or(adopted.weight);
            let replica = Arc::new(
                Replica::new(&name, id, adopted.instance.addr, weight, 0)
                    .with_pid(adopted.instance.pid),
            );
            self.events
                .record("adopted", &name, adopted.instance.addr.to_string());
            let member = Member {
                id,
                generation: 0,
                phase: Phase::Running,
                replica: Some(replica),
                handle: Some(adopted.instance.handle),
                exited: adopted.instance.exited,
                watch: None,
            };
            self.members.insert(name.clone(), member);
            self.watch(&name);
        }
        self.publish();
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
            }
        }
        self.shutdown().await;
    }

    fn handle(&mut self, msg: Message) {
        match msg {
            Message::Add {
                n,
                hostnames,
                reply,
            } => self.add(n, hostnames, reply),
            Message::Remove {
                n,
                hostnames,
                reply,
            } => {
                let _ = reply.send(self.remove(n, hostnames));
            }
            Message::Members { reply } => {
                let _ = reply.send(self.names());
            }
            Message::Started {
                op: Op::Add(batch),
                name,
                generation,
                result,
            } => self.added(batch, name, generation, result),
            Message::Started {
                op: Op::Replace,
                name,
                generation,
                result,
            } => self.replaced(name, generation, result),
            Message::Retry { name, generation } => {
                if let Some(m) = self.members.get(&name).filter(|m| {
                    m.generation == generation && matches!(m.phase, Phase::Replacing { .. })
                }) {
                    let spec = ReplicaSpec {
                        name: name.clone(),
                        id: m.id,
                    };
                    self.start_instance(Op::Replace, spec, generation, None);
                }
            }
            Message::Stopped { name } => {
                self.draining.remove(&name);
            }
            Message::Health(Signal::Exited { name, generation }) => {
                self.failed(name, generation, "its process exited")
            }
            Message::Health(Signal::Down { name, generation }) => {
                self.failed(name, generation, "missed its heartbeats")
            }
        }
    }

    /// Member names sorted by ring id, as `/rep` shows them.
    fn names(&self) -> Vec<String> {
        let mut members: Vec<(&ReplicaId, &String)> = self
            .members
            .iter()
            .filter(|(_, m)| !matches!(m.phase, Phase::Adding(_)))
            .map(|(n, m)| (&m.id, n))
            .collect();
        members.sort();
        members.into_iter().map(|(_, n)| n.clone()).collect()
    }

    fn publish(&self) {
        let replicas: Vec<Arc<Replica>> = self
            .members
            .values()
            .filter(|m| matches!(m.phase, Phase::Running | Phase::Replacing { .. }))
            .filter_map(|m| m.replica.clone())
            .collect();
        if let Err(e) = self.pool.publish(replicas) {
            tracing::error!(error = %e, "cannot rebuild the policy; keeping the previous pool");
        }
    }

    fn watch(&mut self, name: &str) {
        let Some(member) = self.members.get_mut(name) else {
            return;
        };
        let Some(replica) = member.replica.clone() else {
            return;
        };
        if let Some(old) = member.watch.take() {
            old.cancel();
        }
        let cancel = CancellationToken::new();
        self.watcher
            .spawn(replica, member.exited.take(), cancel.clone());
        member.watch = Some(cancel);
    }

    fn is_taken(&self, name: &str) -> bool {
        self.members.contains_key(name) || self.draining.contains(name)
    }

    fn unused_ids(&self, n: usize) -> Vec<ReplicaId> {
        let used: HashSet<ReplicaId> = self.members.values().map(|m| m.id).collect();
        (1..).filter(|id| !used.contains(id)).take(n).collect()
    }

    fn add(&mut self, n: usize, hostnames: Vec<String>, reply: Reply) {
        match self.plan_add(n, hostnames) {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(specs) => {
                let batch = self.next_batch;
                self.next_batch += 1;
                let names = specs.iter().map(|s| s.name.clone()).collect();
                self.batches.insert(
                    batch,
                    Batch {
                        names,
                        pending: specs.len(),
                        errors: Vec::new(),
                        reply: Some(reply),
                    },
                );
                for spec in specs {
                    let member = Member {
                        id: spec.id,
                        generation: 0,
                        phase: Phase::Adding(batch),
                        replica: None,
                        handle: None,
                        exited: None,
                        watch: None,
                    };
                    self.members.insert(spec.name.clone(), member);
                    self.start_instance(Op::Add(batch), spec, 0, None);
                }
            }
        }
    }

    /// Validates an `/add` and names the new replicas; changes nothing.
    fn plan_add(&self, n: usize, hostnames: Vec<String>) -> Result<Vec<ReplicaSpec>, AdminError> {
        if !self.orchestrator.manages_replicas() {
            return Err(AdminError::Conflict(
                OrchestratorError::Unsupported(self.orchestrator.kind()).to_string(),
            ));
        }
        let current = self.members.len();
        if current + n > self.settings.max_replicas {
            return Err(AdminError::OverMax {
                wanted: n,
                current,
                max: self.settings.max_replicas,
            });
        }
        if let Some(name) = hostnames.iter().find(|h| self.is_taken(h)) {
            return Err(AdminError::Duplicate(name.clone()));
        }
        let ids = self.unused_ids(n);
        let mut names: Vec<String> = hostnames;
        let mut generated = 1..;
        while names.len() < n {
            let candidate = generated.find(|i| {
                let name = format!("server-{i}");
                !self.is_taken(&name) && !names.contains(&name)
            });
            names.push(format!("server-{}", candidate.unwrap_or(0)));
        }
        let mut all_ids: Vec<ReplicaId> = self.members.values().map(|m| m.id).collect();
        all_ids.extend(&ids);
        self.pool
            .check(&all_ids)
            .map_err(|e| AdminError::Conflict(format!("cannot add {n} replicas: {e}")))?;
        Ok(names
            .into_iter()
            .zip(ids)
            .map(|(name, id)| ReplicaSpec { name, id })
            .collect())
    }

    /// Starts an instance and waits for its heartbeat in a task of its own;
    /// the result comes back as [`Message::Started`]. `old` is stopped first.
    fn start_instance(&self, op: Op, spec: ReplicaSpec, generation: u64, old: Option<String>) {
        let orchestrator = self.orchestrator.clone();
        let prober = self.watcher.prober.clone();
        let tx = self.tx.clone();
        let ready_timeout = self.settings.ready_timeout;
        tokio::spawn(async move {
            if let Some(old) = old
                && let Err(e) = orchestrator.stop(old).await
            {
                tracing::warn!(error = %e, "stopping the failed instance");
            }
            let name = spec.name.clone();
            let result =
                async {
                    let instance = orchestrator.spawn(spec.clone()).await?;
                    let authority = instance.addr.to_string().parse().map_err(|_| {
                        OrchestratorError::Spawn {
                            name: spec.name.clone(),
                            reason: format!("bad address {}", instance.addr),
                        }
                    })?;
                    if prober.wait_ready(&authority, ready_timeout).await {
                        Ok(instance)
                    } else {
                        let _ = orchestrator.stop(instance.handle).await;
                        Err(OrchestratorError::NotReady {
                            name: spec.name.clone(),
                            timeout_ms: u64::try_from(ready_timeout.as_millis())
                                .unwrap_or(u64::MAX),
                        })
                    }
                }
                .await;
            let _ = tx.send(Message::Started {
                op,
                name,
                generation,
                result,
            });
        });
    }

    fn replica_for(
        &self,
        name: &str,
        id: ReplicaId,
        generation: u64,
        instance: &Instance,
    ) -> Arc<Replica> {
        let weight = self.settings.weights.get(name).copied().unwrap_or(1);
        Arc::new(Replica::new(name, id, instance.addr, weight, generation).with_pid(instance.pid))
    }

    fn added(
        &mut self,
        batch: u64,
        name: String,
        generation: u64,
        result: Result<Instance, OrchestratorError>,
    ) {
        if !self.batches.contains_key(&batch) {
            return;
        }
        let error = match result {
            Ok(instance) => {
                let id = self.members.get(&name).map_or(0, |m| m.id);
                let replica = self.replica_for(&name, id, generation, &instance);
                if let Some(m) = self.members.get_mut(&name) {
                    m.replica = Some(replica);
                    m.handle = Some(instance.handle);
                    m.exited = instance.exited;
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let Some(b) = self.batches.get_mut(&batch) else {
            return;
        };
        b.pending = b.pending.saturating_sub(1);
        b.errors.extend(error);
        if b.pending > 0 {
            return;
        }
        let Some(mut b) = self.batches.remove(&batch) else {
            return;
        };
        let reply = b.reply.take();
        if b.errors.is_empty() {
            for name in &b.names {
                if let Some(m) = self.members.get_mut(name) {
                    m.phase = Phase::Running;
                }
                self.watch(name);
                self.events.record("added", name, "");
            }
            self.publish();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(self.names()));
            }
        } else {
            // All or nothing: stop what did start, forget the batch.
            for name in &b.names {
                if let Some(handle) = self.members.remove(name).and_then(|m| m.handle) {
                    let orchestrator = self.orchestrator.clone();
                    tokio::spawn(async move { orchestrator.stop(handle).await });
                }
            }
            let message = format!("no replica was added: {}", b.errors.join("; "));
            tracing::warn!(%message);
            if let Some(reply) = reply {
                let _ = reply.send(Err(AdminError::Unavailable(message)));
            }
        }
    }

    /// A running incarnation died or stopped answering: out of rotation now,
    /// replaced under the same name and id.
    fn failed(&mut self, name: String, generation: u64, why: &str) {
        let manages = self.orchestrator.manages_replicas();
        let Some(m) = self.members.get_mut(&name) else {
            return;
        };
        if m.generation != generation || m.phase != Phase::Running {
            return;
        }
        if let Some(r) = &m.replica {
            r.set_health(Health::Down);
        }
        if !manages {
            // Someone else runs it; health checks put it back when it answers.
            return;
        }
        if let Some(w) = m.watch.take() {
            w.cancel();
        }
        m.generation += 1;
        m.phase = Phase::Replacing {
            since: Instant::now(),
        };
        let spec = ReplicaSpec {
            name: name.clone(),
            id: m.id,
        };
        let (generation, old) = (m.generation, m.handle.take());
        self.events.record("replacing", &name, why);
        self.start_instance(Op::Replace, spec, generation, old);
    }

    fn replaced(
        &mut self,
        name: String,
        generation: u64,
        result: Result<Instance, OrchestratorError>,
    ) {
        let wanted = self.members.get(&name).is_some_and(|m| {
            m.generation == generation && matches!(m.phase, Phase::Replacing { .. })
        });
        match result {
            Ok(instance) if wanted => {
                let Some(id) = self.members.get(&name).map(|m| m.id) else {
                    return;
                };
                let replica = self.replica_for(&name, id, generation, &instance);
                let Some(m) = self.members.get_mut(&name) else {
                    return;
                };
                let took = match m.phase {
                    Phase::Replacing { since } => since.elapsed(),
                    _ => Duration::ZERO,
                };
                m.replica = Some(replica);
                m.handle = Some(instance.handle);
                m.exited = instance.exited;
                m.phase = Phase::Running;
                self.watch(&name);
                self.publish();
                self.events.record(
                    "replaced",
                    &name,
                    format!("serving after {} ms", took.as_millis()),
                );
            }
            Ok(instance) => {
                // Removed or replaced again meanwhile: never adopt a stray.
                let orchestrator = self.orchestrator.clone();
                tokio::spawn(async move { orchestrator.stop(instance.handle).await });
            }
            Err(e) if wanted => {
                self.events.record("replace-failed", &name, e.to_string());
                let tx = self.tx.clone();
                let backoff = self.settings.retry_backoff;
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    let _ = tx.send(Message::Retry { name, generation });
                });
            }
            Err(_) => {}
        }
    }

    fn remove(&mut self, n: usize, hostnames: Vec<String>) -> Result<Vec<String>, AdminError> {
        if !self.orchestrator.manages_replicas() {
            return Err(AdminError::Conflict(
                OrchestratorError::Unsupported(self.orchestrator.kind()).to_string(),
            ));
        }
        let removable: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !matches!(m.phase, Phase::Adding(_)))
            .map(|(n, _)| n.clone())
            .collect();
        if let Some(name) = hostnames.iter().find(|h| !self.members.contains_key(*h)) {
            return Err(AdminError::Unknown(name.clone()));
        }
        if let Some(name) = hostnames.iter().find(|h| !removable.contains(h)) {
            return Err(AdminError::Conflict(format!(
                "replica '{name}' is still starting"
            )));
        }
        if n > removable.len() {
            return Err(AdminError::NotEnough {
                wanted: n,
                available: removable.len(),
            });
        }
        let mut chosen = hostnames;
        let mut others: Vec<String> = removable
            .into_iter()
            .filter(|h| !chosen.contains(h))
            .collect();
        fastrand::shuffle(&mut others);
        chosen.extend(others.into_iter().take(n - chosen.len()));

        for name in &chosen {
            let Some(mut m) = self.members.remove(name) else {
                continue;
            };
            if let Some(w) = m.watch.take() {
                w.cancel();
            }
            self.draining.insert(name.clone());
            self.events.record("removed", name, "");
            let replica = m.replica.take();
            if let Some(r) = &replica {
                r.set_health(Health::Draining);
            }
            let (orchestrator, tx, grace, name) = (
                self.orchestrator.clone(),
                self.tx.clone(),
                self.settings.drain_timeout,
                name.clone(),
            );
            let handle = m.handle.take();
            tokio::spawn(async move {
                if let Some(r) = replica {
                    drain(&r, grace).await;
                }
                if let Some(handle) = handle
                    && let Err(e) = orchestrator.stop(handle).await
                {
                    tracing::warn!(error = %e, "stopping a removed replica");
                }
                let _ = tx.send(Message::Stopped { name });
            });
        }
        self.publish();
        Ok(self.names())
    }

    async fn shutdown(mut self) {
        let grace = self.settings.drain_timeout;
        let mut stops = Vec::new();
        for (_, mut m) in std::mem::take(&mut self.members) {
            if let Some(w) = m.watch.take() {
                w.cancel();
            }
            let replica = m.replica.take();
            let handle = m.handle.take();
            let orchestrator = self.orchestrator.clone();
            stops.push(async move {
                if let Some(r) = replica {
                    r.set_health(Health::Draining);
                    drain(&r, grace).await;
                }
                if let Some(h) = handle {
                    let _ = orchestrator.stop_on_shutdown(h).await;
                }
            });
        }
        futures_util::future::join_all(stops).await;
        self.orchestrator.shutdown().await;
    }
}

/// Waits until `replica` has no request in flight, or `grace` has passed.
async fn drain(replica: &Replica, grace: Duration) {
    let until = tokio::time::Instant::now() + grace;
    while replica.in_flight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
