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
//!
//! A name stays taken while anything of its last incarnation may still
//! run: while a removed member drains and stops, and while the start of a
//! removed member's replacement is in flight (its instance, if it comes
//! up, is stopped before the name is free). So two starts of one name never
//! race (with Docker each would remove the other's container).
//!
//! Every task the supervisor spawns for membership work (starts, drains,
//! stops, retries) is tracked: shutdown waits for them (bounded by
//! `ready_timeout + drain_timeout`), and an instance whose start finishes
//! after shutdown began is stopped, never left running unmanaged.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    /// Names not free yet: removed, but an instance of theirs may still run.
    draining: HashSet<String>,
    /// Removed while being replaced: name -> the replacement's generation,
    /// whose start (or retry) is still due. Each is also in `draining`.
    orphans: HashMap<String, u64>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    /// The next incarnation's generation; shared by all names.
    next_generation: u64,
    tx: mpsc::UnboundedSender<Message>,
    /// Every task spawned for membership work; shutdown waits for them.
    tasks: TaskTracker,
    /// Cancelled when shutdown begins: starts still in flight then stop
    /// their instance instead of reporting it.
    stopping: CancellationToken,
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
            events,
        };
        let mut this = Self::new(settings, orchestrator, pool, watcher, tx.clone());
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

    /// A supervisor with no members yet, sending its own messages to `tx`.
    fn new(
        settings: Settings,
        orchestrator: Arc<dyn Orchestrator>,
        pool: Arc<Pool>,
        watcher: Watcher,
        tx: mpsc::UnboundedSender<Message>,
    ) -> Self {
        Self {
            settings,
            orchestrator,
            pool,
            events: watcher.events.clone(),
            watcher,
            members: BTreeMap::new(),
            draining: HashSet::new(),
            orphans: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 1,
            next_generation: 1,
            tx,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        }
    }

    async fn adopt(&mut self) -> Result<(), OrchestratorError> {
        for adopted in self.orchestrator.adopt().await? {
            let ReplicaSpec { name, id } = adopted.spec;
            if self.members.contains_key(&name) || self.members.values().any(|m| m.id == id) {
                // Never overwrite a member (which would leave its instance
                // running unmanaged): keep the first, stop the duplicate.
                tracing::warn!(
                    %name, id, handle = %adopted.instance.handle,
                    "found a second instance with this name or ring id; stopping it"
                );
                self.events
                    .record("duplicate", &name, adopted.instance.addr.to_string());
                self.stop_later(adopted.instance.handle, None);
                continue;
            }
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
        self.shutdown(rx).await;
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
                if self.orphans.get(&name) == Some(&generation) {
                    // Removed while it waited to retry: nothing of it runs.
                    self.orphans.remove(&name);
                    self.draining.remove(&name);
                } else if let Some(m) = self.members.get(&name).filter(|m| {
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

    /// Starts an instance and waits for its heartbeat in a tracked task;
    /// the result comes back as [`Message::Started`]. `old` is stopped
    /// first. If shutdown begins meanwhile, the task stops the instance
    /// itself (nobody would take the result any more).
    fn start_instance(&self, op: Op, spec: ReplicaSpec, generation: u64, old: Option<String>) {
        let orchestrator = self.orchestrator.clone();
        let prober = self.watcher.prober.clone();
        let tx = self.tx.clone();
        let ready_timeout = self.settings.ready_timeout;
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
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
                    let ready = tokio::select! {
                        ready = prober.wait_ready(&authority, ready_timeout) => ready,
                        () = stopping.cancelled() => false,
                    };
                    if ready && !stopping.is_cancelled() {
                        Ok(instance)
                    } else {
                        let _ = orchestrator.stop(instance.handle).await;
                        Err(if stopping.is_cancelled() {
                            OrchestratorError::Spawn {
                                name: spec.name.clone(),
                                reason: "the balancer is shutting down".into(),
                            }
                        } else {
                            OrchestratorError::NotReady {
                                name: spec.name.clone(),
                                timeout_ms: u64::try_from(ready_timeout.as_millis())
                                    .unwrap_or(u64::MAX),
                            }
                        })
                    }
                }
                .await;
            let sent = tx.send(Message::Started {
                op,
                name,
                generation,
                result,
            });
            // The supervisor stopped taking messages (shutdown): stop it here.
            if let Err(mpsc::error::SendError(Message::Started {
                result: Ok(instance),
                ..
            })) = sent
            {
                let _ = orchestrator.stop(instance.handle).await;
            }
        });
    }

    /// Stops an instance in a tracked task; then, if `name` is given,
    /// reports [`Message::Stopped`] so the name is free again.
    fn stop_later(&self, handle: String, name: Option<String>) {
        let (orchestrator, tx) = (self.orchestrator.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            if let Err(e) = orchestrator.stop(handle).await {
                tracing::warn!(error = %e, "stopping an instance that is not wanted");
            }
            if let Some(name) = name {
                let _ = tx.send(Message::Stopped { name });
            }
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
            // Not an incarnation anyone waits for: never adopt a stray.
            if let Ok(instance) = result {
                self.stop_later(instance.handle, None);
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
                self.stop_later(instance.handle, None);
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
                    self.stop_later(handle, None);
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
        if self.orphans.get(&name) == Some(&generation) {
            // Its member was removed while this start was in flight: the
            // name is free once nothing of it runs.
            self.orphans.remove(&name);
            match result {
                Ok(instance) => self.stop_later(instance.handle, Some(name)),
                Err(_) => {
                    self.draining.remove(&name);
                }
            }
            return;
        }
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
                self.stop_later(instance.handle, None);
            }
            Err(e) if wanted => {
                self.events.record("replace-failed", &name, e.to_string());
                let tx = self.tx.clone();
                let backoff = self.settings.retry_backoff;
                let stopping = self.stopping.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {
                            let _ = tx.send(Message::Retry { name, generation });
                        }
                        () = stopping.cancelled() => {}
                    }
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
            if matches!(m.phase, Phase::Replacing { .. }) {
                // Its dead incarnation was stopped already, but its
                // replacement's start (or retry) is still due: the name
                // stays taken until that resolves (see `replaced`).
                self.orphans.insert(name.clone(), m.generation);
                continue;
            }
            let (orchestrator, tx, grace, name) = (
                self.orchestrator.clone(),
                self.tx.clone(),
                self.settings.drain_timeout,
                name.clone(),
            );
            let handle = m.handle.take();
            self.tasks.spawn(async move {
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

    /// Drains and stops every member, and waits (bounded by
    /// `ready_timeout + drain_timeout`) for the tasks still in flight:
    /// removals draining and stopping, and starts, whose instances are
    /// stopped once they come up.
    async fn shutdown(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        self.stopping.cancel();
        // From here on a finished start cannot report and stops its own
        // instance; one that reported already is still in the buffer.
        rx.close();
        while let Some(msg) = rx.recv().await {
            // Requests waiting for an answer get "shutting down".
            if let Message::Started {
                result: Ok(instance),
                ..
            } = msg
            {
                self.stop_later(instance.handle, None);
            }
        }
        let grace = self.settings.drain_timeout;
        let mut stops = Vec::new();
        for (_, mut m) in std::mem::take(&mut self.members) {
            if let Some(w) = m.watch.take() {
                w.cancel();
            }
            let replica = m.replica.take();
            let handle = m.handle.take();
            // An uncommitted `/add` is answered as failed: nothing of it
            // may outlive the balancer, whatever the orchestrator's habit.
            let adding = matches!(m.phase, Phase::Adding(_));
            let orchestrator = self.orchestrator.clone();
            stops.push(async move {
                if let Some(r) = replica {
                    r.set_health(Health::Draining);
                    drain(&r, grace).await;
                }
                if let Some(h) = handle {
                    let _ = if adding {
                        orchestrator.stop(h).await
                    } else {
                        orchestrator.stop_on_shutdown(h).await
                    };
                }
            });
        }
        self.tasks.close();
        let bound = self.settings.ready_timeout + self.settings.drain_timeout;
        let tasks = self.tasks.clone();
        let in_flight = async move {
            if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
                tracing::warn!(
                    tasks = tasks.len(),
                    "shutting down without waiting longer for starts and stops in flight"
                );
            }
        };
        tokio::join!(futures_util::future::join_all(stops), in_flight);
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
mod tests;
