//! A running incarnation died or stopped answering: out of rotation at once,
//! replaced under the same name and ring id, retried after a back-off while
//! its replacement fails to start.

use std::time::Instant;

use super::{Message, Op, Phase, Reservation, Supervisor};
use crate::{
    events::EventKind,
    orchestrator::{Instance, OrchestratorError, ReplicaSpec},
    replica::{Generation, Health},
};

impl Supervisor {
    /// Incarnation `generation` of `name` failed (`why`, for the event).
    pub(super) fn failed(&mut self, name: String, generation: Generation, why: &str) {
        let manages = self.orchestrator.manages_replicas();
        let Some(m) = self
            .members
            .get_mut(&name)
            .filter(|m| m.generation == generation)
        else {
            return;
        };
        let Phase::Running { replica, .. } = &m.phase else {
            return;
        };
        replica.set_health(Health::Down);
        if !manages {
            // Someone else runs it; health checks put it back when it answers.
            return;
        }
        if self.orchestrator.restarts_replicas() {
            // The engine restarts it; its new address comes with the next
            // engine reading (`observe`), or this one answers again.
            self.events.record(EventKind::Down, &name, why);
            return;
        }
        let replacing = Phase::Replacing {
            since: Instant::now(),
            dead: replica.clone(),
            engine: None,
        };
        // Leaving `Running` drops its watch.
        let Phase::Running { handle: old, .. } = std::mem::replace(&mut m.phase, replacing) else {
            return;
        };
        m.generation = self.generations.next();
        let spec = ReplicaSpec {
            name: name.clone(),
            id: m.id,
        };
        let generation = m.generation;
        self.events.record(EventKind::Replacing, &name, why);
        self.start_instance(Op::Replace, spec, generation, Some(old));
    }

    /// A replacement's start has reported.
    pub(super) fn replaced(
        &mut self,
        name: String,
        generation: Generation,
        result: Result<Instance, OrchestratorError>,
    ) {
        if self.reserved.get(&name) == Some(&Reservation::PendingStart(generation)) {
            // Its member was removed while this start was in flight: the
            // name is free once nothing of it runs.
            match result {
                Ok(instance) => {
                    self.reserved.insert(name.clone(), Reservation::Stopping);
                    self.stop_later(instance.handle, Some(name));
                }
                Err(_) => {
                    self.reserved.remove(&name);
                }
            }
            return;
        }
        let wanted = self
            .members
            .get(&name)
            .filter(|m| m.generation == generation && m.phase.is_replacing())
            .map(|m| m.id);
        match (result, wanted) {
            (Ok(instance), Some(id)) => {
                let replica = self.replica_for(&name, id, generation, &instance);
                let Some(m) = self.members.get_mut(&name) else {
                    return;
                };
                let took = match m.phase {
                    Phase::Replacing { since, .. } => since.elapsed(),
                    _ => std::time::Duration::ZERO,
                };
                m.phase = Phase::running(&self.watcher, replica, instance.handle, instance.exited);
                self.publish();
                self.events.record(
                    EventKind::Replaced,
                    &name,
                    format!("serving after {} ms", took.as_millis()),
                );
            }
            (Ok(instance), None) => {
                // Removed or replaced again meanwhile: never adopt a stray.
                self.stop_later(instance.handle, None);
            }
            (Err(e), Some(_)) => {
                self.events
                    .record(EventKind::ReplaceFailed, &name, e.to_string());
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
            (Err(_), None) => {}
        }
    }

    /// A failed replacement's back-off is over: start it again, unless it
    /// is no longer wanted.
    pub(super) fn retry(&mut self, name: String, generation: Generation) {
        if self.reserved.get(&name) == Some(&Reservation::PendingStart(generation)) {
            // Removed while it waited to retry: nothing of it runs.
            self.reserved.remove(&name);
            return;
        }
        let Some(id) = self
            .members
            .get(&name)
            .filter(|m| m.generation == generation && m.phase.is_replacing())
            .map(|m| m.id)
        else {
            return;
        };
        self.start_instance(Op::Replace, ReplicaSpec { name, id }, generation, None);
    }
}
