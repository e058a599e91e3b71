//! The supervisor: the one task that changes pool membership.
//!
//! `/add`, `/rm`, replica deaths and health verdicts all arrive here as
//! messages and are handled one at a time, so two of them can never spawn
//! the same replica twice or lose one. Slow work (starting a process,
//! waiting for its heartbeat, draining) runs in tasks that report back with
//! a message; a result for an incarnation that is no longer wanted (its
//! member was removed or replaced meanwhile) is stopped, never adopted.
//!
//! Every incarnation (adopted, added or replacement) gets a generation from
//! one counter for the whole supervisor, so generations only grow and are
//! never reused, not even by a name that is removed and added again: a
//! late message about an older incarnation can never match a newer one.
//!
//! Members are named (`server-1`) and carry a ring id. A generated name is
//! always `server-<id>` of its own ring id, and an explicit `server-<k>`
//! gets id k when it is free, so placement follows names. A dead member
//! keeps both: its replacement starts under the same name and id, so
//! consistent hashing maps keys exactly as before once it serves.

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
    /// The next incarnation's generation; shared by all names.
    next_generation: u64,
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
            next_generation: 1,
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
            let generation = self.new_generation();
            let replica = Arc::new(
                Replica::new(&name, id, adopted.instance.addr, weight, generation)
                    .with_pid(adopted.instance.pid),
            );
            self.events
                .record("adopted", &name, adopted.instance.addr.to_string());
            let member = Member {
                id,
                generation,
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

    /// A generation no incarnation has had yet (of any name). Only
    /// `failed` bumps the counter by hand, for the borrow checker.
    fn new_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    fn is_taken(&self, name: &str) -> bool {
        self.members.contains_key(name) || self.draining.contains(name)
    }

    fn add(&mut self, n: usize, hostnames: Vec<String>, reply: Reply) {
        let plan = validate_change(n, &hostnames, AdminError::TooManyHostnamesToAdd)
            .and_then(|()| self.plan_add(n, hostnames));
        match plan {
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
                    let generation = self.new_generation();
                    let member = Member {
                        id: spec.id,
                        generation,
                        phase: Phase::Adding(batch),
                        replica: None,
                        handle: None,
                        exited: None,
                        watch: None,
                    };
                    self.members.insert(spec.name.clone(), member);
                    self.start_instance(Op::Add(batch), spec, generation, None);
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
        let mut used: HashSet<ReplicaId> = self.members.values().map(|m| m.id).collect();
        // Names that exist, are draining, or are asked for now: an id whose
        // generated name is one of them is left alone.
        let mut reserved: HashSet<String> = self
            .members
            .keys()
            .chain(&self.draining)
            .chain(&hostnames)
            .cloned()
            .collect();
        // An explicit `server-<k>` takes id k first, when it is free.
        let mut ids: Vec<Option<ReplicaId>> = hostnames
            .iter()
            .map(|h| generated_id(h).filter(|&k| used.insert(k)))
            .collect();
        // The lowest id that is unused and whose generated name is free.
        let next_id = |used: &mut HashSet<ReplicaId>, reserved: &HashSet<String>| {
            let id = (1..=ReplicaId::MAX)
                .find(|&i| !used.contains(&i) && !reserved.contains(&generated_name(i)))
                .ok_or_else(|| AdminError::Conflict("no ring id is left".into()))?;
            used.insert(id);
            Ok::<_, AdminError>(id)
        };
        for id in &mut ids {
            if id.is_none() {
                *id = Some(next_id(&mut used, &reserved)?);
            }
        }
        let mut specs: Vec<ReplicaSpec> = hostnames
            .into_iter()
            .zip(ids)
            .filter_map(|(name, id)| id.map(|id| ReplicaSpec { name, id }))
            .collect();
        while specs.len() < n {
            let id = next_id(&mut used, &reserved)?;
            let name = generated_name(id);
            reserved.insert(name.clone());
            specs.push(ReplicaSpec { name, id });
        }
        let mut all_ids: Vec<ReplicaId> = self.members.values().map(|m| m.id).collect();
        all_ids.extend(specs.iter().map(|s| s.id));
        self.pool
            .check(&all_ids)
            .map_err(|e| AdminError::Conflict(format!("cannot add {n} replicas: {e}")))?;
        Ok(specs)
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
        let stray = |orchestrator: Arc<dyn Orchestrator>, instance: Instance| {
            tokio::spawn(async move { orchestrator.stop(instance.handle).await });
        };
        if !self.batches.contains_key(&batch) {
            // Not an incarnation anyone waits for: never adopt a stray.
            if let Ok(instance) = result {
                stray(self.orchestrator.clone(), instance);
            }
            return;
        }
        let wanted = self
            .members
            .get(&name)
            .is_some_and(|m| m.generation == generation && m.phase == Phase::Adding(batch));
        let error = match result {
            Ok(instance) if wanted => {
                let id = self.members.get(&name).map_or(0, |m| m.id);
                let replica = self.replica_for(&name, id, generation, &instance);
                if let Some(m) = self.members.get_mut(&name) {
                    m.replica = Some(replica);
                    m.handle = Some(instance.handle);
                    m.exited = instance.exited;
                }
                None
            }
            Ok(instance) => {
                stray(self.orchestrator.clone(), instance);
                Some(format!("replica '{name}' is no longer wanted"))
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
        // A fresh generation (not `+ 1`, which another incarnation of this
        // name may have had): see `new_generation`.
        m.generation = self.next_generation;
        self.next_generation += 1;
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
        validate_change(n, &hostnames, AdminError::TooManyHostnamesToRemove)?;
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
        chosen.extend(others.into_iter().take(n.saturating_sub(chosen.len())));

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

/// The name `/add` generates for ring id `id`.
fn generated_name(id: ReplicaId) -> String {
    format!("server-{id}")
}

/// The ring id `name` stands for if it is a generated name (`server-<k>`,
/// k >= 1, written the way [`generated_name`] writes it).
fn generated_id(name: &str) -> Option<ReplicaId> {
    let k: ReplicaId = name.strip_prefix("server-")?.parse().ok()?;
    (k >= 1 && generated_name(k) == name).then_some(k)
}

/// The checks the admin API makes on an `/add` or `/rm` body, repeated
/// here because [`Control`] is public: `n` of at least 1, no more
/// hostnames than `n`, valid and distinct hostnames.
fn validate_change(n: usize, hostnames: &[String], too_many: AdminError) -> Result<(), AdminError> {
    if n == 0 {
        return Err(AdminError::BadRequest("'n' must be at least 1".into()));
    }
    if hostnames.len() > n {
        return Err(too_many);
    }
    let mut seen = HashSet::new();
    for name in hostnames {
        crate::admin::validate_hostname(name)?;
        if !seen.insert(name.as_str()) {
            return Err(AdminError::BadRequest(format!(
                "hostname '{name}' is listed twice"
            )));
        }
    }
    Ok(())
}

/// Waits until `replica` has no request in flight, or `grace` has passed.
async fn drain(replica: &Replica, grace: Duration) {
    let until = tokio::time::Instant::now() + grace;
    while replica.in_flight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::{
        health::HealthConfig,
        policy::{PolicyOptions, from_name},
    };

    /// Starts in-process replicas on loopback ports and counts the starts.
    #[derive(Default)]
    struct Fake {
        spawns: AtomicUsize,
    }

    impl Orchestrator for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }

        fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
            let n = self.spawns.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
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
                tokio::spawn(backend::serve(listener, config, std::future::pending()));
                Ok(Instance {
                    handle: format!("{}#{n}", spec.name),
                    addr,
                    pid: None,
                    exited: None,
                })
            })
        }

        fn stop(&self, _handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
            Box::pin(async { Ok(()) })
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
            let sup = Supervisor {
                settings: settings(),
                orchestrator: fake.clone(),
                pool: pool(),
                events: events.clone(),
                watcher: Watcher {
                    config: health(),
                    prober: Default::default(),
                    signals,
                    events,
                },
                members: BTreeMap::new(),
                draining: HashSet::new(),
                batches: HashMap::new(),
                next_batch: 1,
                next_generation: 1,
                tx,
            };
            Self {
                sup,
                rx,
                _signals: signal_rx,
                fake,
            }
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
        h.die("a");
        let stale = h
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
        let Message::Started {
            generation: stale_generation,
            result: Ok(ref instance),
            ..
        } = stale
        else {
            panic!("the first replacement failed to start");
        };
        let stale_addr = instance.addr;
        // ...after "a" was removed, added again, and died again.
        h.sup.remove(1, strings(&["a"])).expect("rm a");
        h.drained("a").await;
        h.add(1, &["a"]).await.expect("add a again");
        h.die("a");
        let current = h.sup.members["a"].generation;
        assert_ne!(current, stale_generation, "generation reused for a new 'a'");

        // Let the real replacement's start begin, then count the starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let spawns = h.fake.spawns.load(Ordering::SeqCst);
        h.sup.handle(Message::Retry {
            name: "a".into(),
            generation: stale_generation,
        });
        h.sup.handle(stale);
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
}
