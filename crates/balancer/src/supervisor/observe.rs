//! Membership read from an engine that several balancers share (Swarm):
//! the engine, not this balancer's memory, says who the members are.
//!
//! Each [`Observation`] is the whole member set at one moment. A name the
//! engine shows that is not ours joins (once its instance answers its
//! heartbeat); a member the engine no longer shows leaves (no stop: whoever
//! removed it did); a member whose instance has a new address (the engine
//! restarted it) is followed to the new address, keeping its name and ring
//! id, so every balancer builds the same table from the same labels.
//!
//! Readings arrive late: one taken before a member joined, or before a
//! name we removed was gone, must not undo either. Hence `joined` on each
//! member and [`Recent`], both compared with the reading's `taken_at`.

use std::{collections::HashMap, sync::Arc, time::Instant};

use tokio::time::Instant as TokioInstant;

use super::{Member, Phase, Supervisor};
use crate::{
    events::EventKind,
    orchestrator::{Instance, Observation, Observed, OrchestratorError},
    replica::{Generation, Health, Replica, ReplicaId},
};

/// What this balancer knows that an engine reading may not show yet.
#[derive(Debug, Default)]
pub(super) struct Recent {
    /// Ring ids and names another balancer was seen to take (a create that
    /// lost), so retries skip them before a reading shows their owner.
    pub ids: HashMap<ReplicaId, TokioInstant>,
    pub names: HashMap<String, TokioInstant>,
    /// Names this balancer removed, and when they were gone.
    gone: HashMap<String, TokioInstant>,
    /// Names whose instance at this address is being waited for.
    following: HashMap<String, (Generation, std::net::SocketAddr)>,
}

impl Recent {
    /// `name` was removed here and nothing of it runs any more.
    pub fn left(&mut self, name: String) {
        self.gone.insert(name, TokioInstant::now());
    }

    /// Forgets what a reading taken at `taken_at` shows by itself.
    fn catch_up(&mut self, taken_at: TokioInstant) {
        self.ids.retain(|_, at| *at >= taken_at);
        self.names.retain(|_, at| *at >= taken_at);
        self.gone.retain(|_, at| *at >= taken_at);
    }
}

impl Supervisor {
    /// An engine reading: members join, leave or move to a new address.
    pub(super) fn observed(&mut self, seen: Observation) {
        self.recent.catch_up(seen.taken_at);
        let shown: HashMap<&str, &Observed> = seen
            .members
            .iter()
            .map(|o| (o.spec.name.as_str(), o))
            .collect();
        let left: Vec<String> = self
            .members
            .iter()
            .filter(|(name, m)| {
                !m.phase.is_adding()
                    && m.joined < seen.taken_at
                    && !shown.contains_key(name.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut changed = !left.is_empty();
        for name in left {
            if let Some(m) = self.members.remove(&name)
                && let Some(replica) = m.phase.in_pool()
            {
                // Requests in flight finish; whoever removed it stops it.
                replica.set_health(Health::Draining);
            }
            self.recent.following.remove(&name);
            self.events
                .record(EventKind::Removed, &name, "gone from the engine");
        }
        for o in &seen.members {
            changed |= self.follow(o, seen.taken_at);
        }
        if changed {
            self.publish();
        }
    }

    /// Brings one shown member in step; whether the pool's member set
    /// changed.
    fn follow(&mut self, o: &Observed, taken_at: TokioInstant) -> bool {
        let name = &o.spec.name;
        if self.reserved.contains_key(name) || self.recent.gone.contains_key(name) {
            // Being removed here, or removed after this reading was taken.
            return false;
        }
        let following = self.recent.following.get(name).map(|(_, a)| *a);
        let Some(m) = self.members.get_mut(name) else {
            return self.join(o, taken_at);
        };
        if m.id != o.spec.id {
            tracing::warn!(%name, ours = m.id, engine = o.spec.id, "ring id differs from the engine's; keeping ours");
            return false;
        }
        let addr = match (&m.phase, o.addr) {
            (Phase::Adding { .. }, _) => return false,
            (Phase::Running { replica, .. }, None) => {
                // Dead or on a node that is down: out of rotation until the
                // engine shows it serving again.
                if replica.set_health(Health::Down) != Health::Down {
                    self.events
                        .record(EventKind::Down, name, "no task serves in the engine");
                }
                return false;
            }
            (Phase::Running { replica, .. }, Some(addr)) if replica.addr == addr => return false,
            (Phase::Replacing { .. }, Some(addr)) if following == Some(addr) => return false,
            (Phase::Replacing { .. }, None) => return false,
            (_, Some(addr)) => addr,
        };
        // A new task: the old address is dead. The dead replica keeps its
        // place (out of rotation) until the new one answers.
        let dead = match &m.phase {
            Phase::Running { replica, .. } => replica.clone(),
            Phase::Replacing { dead, .. } => dead.clone(),
            Phase::Adding { .. } => return false,
        };
        dead.set_health(Health::Down);
        m.phase = Phase::Replacing {
            since: Instant::now(),
            dead,
            engine: Some(o.handle.clone()),
        };
        m.generation = self.generations.next();
        let generation = m.generation;
        self.events
            .record(EventKind::Replacing, name, format!("new task at {addr}"));
        self.wait_for(name.clone(), generation, o.handle.clone(), addr);
        false
    }

    /// A member added elsewhere: it takes its place in the table at once,
    /// out of rotation until its heartbeat answers. Whether it joined.
    fn join(&mut self, o: &Observed, taken_at: TokioInstant) -> bool {
        let Some(addr) = o.addr else {
            // No task serves yet: it joins with the reading that shows one.
            return false;
        };
        if self.members.values().any(|m| m.id == o.spec.id) {
            tracing::warn!(name = %o.spec.name, id = o.spec.id, "ring id already taken here; not joining");
            return false;
        }
        let name = o.spec.name.clone();
        let generation = self.generations.next();
        let weight = self.settings.weights.get(&name).copied().unwrap_or(1);
        let dead = Arc::new(
            Replica::new(&name, o.spec.id, addr, weight, generation)
                .with_limit(self.settings.max_conns_per_replica),
        );
        dead.set_health(Health::Down);
        self.members.insert(
            name.clone(),
            Member {
                id: o.spec.id,
                generation,
                phase: Phase::Replacing {
                    since: Instant::now(),
                    dead,
                    engine: Some(o.handle.clone()),
                },
                joined: taken_at,
            },
        );
        self.events
            .record(EventKind::Added, &name, format!("in the engine, at {addr}"));
        self.wait_for(name, generation, o.handle.clone(), addr);
        true
    }

    fn wait_for(
        &mut self,
        name: String,
        generation: Generation,
        handle: String,
        addr: std::net::SocketAddr,
    ) {
        self.recent
            .following
            .insert(name.clone(), (generation, addr));
        let instance = Instance {
            handle,
            addr,
            pid: None,
            protocol: None,
            exited: None,
        };
        self.follow_instance(name, generation, instance);
    }

    /// A followed instance answered its heartbeat (or never did).
    pub(super) fn followed(
        &mut self,
        name: String,
        generation: Generation,
        result: Result<Instance, OrchestratorError>,
    ) {
        if self
            .recent
            .following
            .get(&name)
            .is_some_and(|(g, _)| *g == generation)
        {
            // Done either way; a failure is retried by the next reading.
            self.recent.following.remove(&name);
        }
        let Ok(instance) = result else { return };
        let Some(m) = self
            .members
            .get(&name)
            .filter(|m| m.generation == generation && m.phase.is_replacing())
        else {
            // Removed or moved on meanwhile; the engine owns the instance.
            return;
        };
        let replica = self.replica_for(&name, m.id, generation, &instance);
        let took = match &m.phase {
            Phase::Replacing { since, .. } => since.elapsed(),
            _ => std::time::Duration::ZERO,
        };
        if let Some(m) = self.members.get_mut(&name) {
            m.phase = Phase::running(&self.watcher, replica, instance.handle, None);
        }
        self.publish();
        self.events.record(
            EventKind::Replaced,
            &name,
            format!("serving at {} after {} ms", instance.addr, took.as_millis()),
        );
    }
}
