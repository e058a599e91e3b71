//! The supervisor: the one task that changes pool membership.
//!
//! `/add`, `/rm`, replica deaths and health verdicts all arrive here as
//! [`Message`]s and are handled one at a time, so two of them can never
//! spawn the same replica twice or lose one. Slow work (starting an
//! instance, waiting for its heartbeat, draining, stopping) runs in tracked
//! tasks ([`tasks`]) that report back with a message; a result for an
//! incarnation that is no longer wanted (its member was removed or replaced
//! meanwhile) is stopped, never adopted.
//!
//! The parts, one file each: [`member`] (a member's phases, the names that
//! are reserved, generations), [`naming`] (pure: which names and ring ids
//! new replicas get), [`add`], [`replace`], [`remove`], [`shutdown`], and
//! [`observe`] (membership read from an engine that several balancers
//! share: members added, removed or restarted elsewhere).
//!
//! Every incarnation (adopted, added or replacement) gets a generation from
//! one counter, so a late message about an older incarnation can never
//! match a newer one, not even of a name removed and added again.
//!
//! A dead member keeps its name and ring id: its replacement starts under
//! both, so consistent hashing maps keys exactly as before once it serves.
//! A name stays taken while anything of its last incarnation may still
//! run (see [`member::Reservation`]), so two starts of one name never race
//! (with Docker each would remove the other's container).

mod add;
mod adopt;
mod error;
mod member;
mod naming;
mod observe;
mod remove;
mod replace;
mod shutdown;
mod tasks;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::MembershipError;

use crate::{
    change::Change,
    events::EventLog,
    health::{Probe, Signal, Watcher},
    orchestrator::{Instance, Observation, Orchestrator, OrchestratorError},
    pool::Pool,
    replica::{Generation, Replica, ReplicaId},
};
use add::Batch;
use member::{Generations, Member, Phase, Reservation};

/// How long a failed replacement waits before it is tried again.
pub const REPLACE_RETRY_BACKOFF: Duration = Duration::from_millis(500);

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
    /// Active health checks of every member.
    pub health: crate::health::HealthConfig,
    /// Most requests in flight to one replica (0: no limit).
    pub max_conns_per_replica: usize,
    /// What replicas speak unless their orchestrator says otherwise.
    pub upstream_protocol: crate::replica::Protocol,
}

type Reply = oneshot::Sender<Result<Vec<String>, MembershipError>>;

/// Everything the supervisor task is told, by [`Control`] and by its own
/// tasks.
enum Message {
    Add {
        change: Change,
        reply: Reply,
        /// The start-up fill: a name another balancer creates first counts
        /// as filled (it joins through `observe`), not as an error.
        fill: bool,
    },
    Remove {
        change: Change,
        reply: Reply,
    },
    Members {
        reply: oneshot::Sender<Vec<String>>,
    },
    /// A start finished (ready, or failed).
    Started {
        op: Op,
        name: String,
        generation: Generation,
        result: Result<Instance, OrchestratorError>,
    },
    /// A failed replacement's back-off is over.
    Retry {
        name: String,
        generation: Generation,
    },
    /// A removed member's instance is stopped: its name is free.
    Stopped {
        name: String,
    },
    Health(Signal),
    /// What the engine shows (orchestrators that share membership).
    Observed(Observation),
}

/// Why an instance was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// For the `/add` batch with this number.
    Add(u64),
    /// To replace a dead incarnation.
    Replace,
    /// Not started by us: an instance the engine shows, waited for until it
    /// answers its heartbeat.
    Follow,
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

    /// Adds `change.n()` replicas, the named ones first; answers the new
    /// member list once they all answer their heartbeat, or an error and
    /// no change.
    pub async fn add(&self, change: Change) -> Result<Vec<String>, MembershipError> {
        self.ask(|reply| Message::Add {
            change,
            reply,
            fill: false,
        })
        .await
        .unwrap_or(Err(MembershipError::ShuttingDown))
    }

    /// Adds replicas at start-up, up to `--replicas`: like [`Self::add`],
    /// but a generated name another balancer takes first counts as added.
    async fn fill(&self, change: Change) -> Result<Vec<String>, MembershipError> {
        self.ask(|reply| Message::Add {
            change,
            reply,
            fill: true,
        })
        .await
        .unwrap_or(Err(MembershipError::ShuttingDown))
    }

    /// Removes `change.n()` replicas, the named ones first, random ones for
    /// the rest.
    pub async fn remove(&self, change: Change) -> Result<Vec<String>, MembershipError> {
        self.ask(|reply| Message::Remove { change, reply })
            .await
            .unwrap_or(Err(MembershipError::ShuttingDown))
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
    /// Names that are not members and not free yet.
    reserved: HashMap<String, Reservation>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    generations: Generations,
    tx: mpsc::UnboundedSender<Message>,
    /// Every task spawned for membership work; shutdown waits for them.
    tasks: TaskTracker,
    /// Cancelled when shutdown begins: starts still in flight then stop
    /// their instance instead of reporting it.
    stopping: CancellationToken,
    /// Names and ids seen taken elsewhere, names that left, and instances
    /// being followed, until an engine reading catches up (`observe`).
    recent: observe::Recent,
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
        probe: Arc<dyn Probe>,
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
            config: settings.health,
            probe,
            signals,
            events,
        };
        let mut this = Self::new(settings, orchestrator.clone(), pool, watcher, tx.clone());
        this.adopt().await?;
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        if let Some(watch) = orchestrator.observe(seen_tx, shutdown.clone()) {
            tokio::spawn(watch);
            let forward = tx.clone();
            tokio::spawn(async move {
                while let Some(seen) = seen_rx.recv().await {
                    if forward.send(Message::Observed(seen)).is_err() {
                        break;
                    }
                }
            });
        }
        let control = Control { tx };
        let task = tokio::spawn(this.run(rx, shutdown));
        let missing = initial.saturating_sub(control.members().await.len());
        if let Ok(change) = Change::new(crate::change::Direction::Add, missing, Vec::new()) {
            match control.fill(change).await {
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
            reserved: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 1,
            generations: Generations::default(),
            tx,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            recent: observe::Recent::default(),
        }
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
                change,
                reply,
                fill,
            } => self.add(change, reply, fill),
            Message::Remove { change, reply } => {
                let _ = reply.send(self.remove(change));
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
            Message::Started {
                op: Op::Follow,
                name,
                generation,
                result,
            } => self.followed(name, generation, result),
            Message::Retry { name, generation } => self.retry(name, generation),
            Message::Stopped { name } => {
                self.reserved.remove(&name);
                self.recent.left(name);
            }
            Message::Observed(seen) => self.observed(seen),
            Message::Health(Signal::Exited { name, generation }) => {
                self.failed(name, generation, "its process exited");
            }
            Message::Health(Signal::Down { name, generation }) => {
                self.failed(name, generation, "missed its heartbeats");
            }
        }
    }

    /// Member names sorted by ring id, as `/rep` shows them: every member
    /// but those still starting for an `/add`.
    fn names(&self) -> Vec<String> {
        let mut members: Vec<(ReplicaId, &String)> = self
            .members
            .iter()
            .filter(|(_, m)| !m.phase.is_adding())
            .map(|(n, m)| (m.id, n))
            .collect();
        members.sort();
        members.into_iter().map(|(_, n)| n.clone()).collect()
    }

    /// Swaps in a pool of every member that has a place on the ring.
    fn publish(&self) {
        let replicas: Vec<Arc<Replica>> = self
            .members
            .values()
            .filter_map(|m| m.phase.in_pool())
            .cloned()
            .collect();
        if let Err(e) = self.pool.publish(replicas) {
            tracing::error!(error = %e, "cannot rebuild the policy; keeping the previous pool");
        }
    }

    /// The replica of a started instance, weighted as configured.
    fn replica_for(
        &self,
        name: &str,
        id: ReplicaId,
        generation: Generation,
        instance: &Instance,
    ) -> Arc<Replica> {
        let weight = self.settings.weights.get(name).copied().unwrap_or(1);
        Arc::new(
            Replica::new(name, id, instance.addr, weight, generation)
                .with_pid(instance.pid)
                .with_protocol(self.protocol_of(instance))
                .with_limit(self.settings.max_conns_per_replica),
        )
    }

    /// What an instance speaks.
    fn protocol_of(&self, instance: &Instance) -> crate::replica::Protocol {
        instance.protocol.unwrap_or(self.settings.upstream_protocol)
    }

    /// Refuses a change when someone else runs the replicas.
    fn ensure_manages_replicas(&self) -> Result<(), MembershipError> {
        if self.orchestrator.manages_replicas() {
            Ok(())
        } else {
            Err(MembershipError::Unsupported(self.orchestrator.kind()))
        }
    }
}

#[cfg(test)]
mod tests;
