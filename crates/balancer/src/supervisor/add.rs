//! `/add`: a batch of new members, all or nothing.
//!
//! Each new member starts in its own task; the batch is answered when the
//! last start has reported. If every instance came up, all join the pool
//! at once; if any failed, the ones that did start are stopped and the
//! pool is as it was.

use std::collections::HashSet;

use super::{
    Member, MembershipError, Op, Phase, Reply, Supervisor, member::Started, naming::name_new,
};
use crate::{
    change::Change,
    events::EventKind,
    orchestrator::{Instance, OrchestratorError, ReplicaSpec},
    replica::{Generation, ReplicaId},
};

/// An `/add` waiting for its starts.
pub(super) struct Batch {
    names: Vec<String>,
    pending: usize,
    errors: Vec<String>,
    reply: Option<Reply>,
}

impl Supervisor {
    pub(super) fn add(&mut self, change: Change, reply: Reply) {
        let specs = match self.plan_add(&change) {
            Ok(specs) => specs,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let batch = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(
            batch,
            Batch {
                names: specs.iter().map(|s| s.name.clone()).collect(),
                pending: specs.len(),
                errors: Vec::new(),
                reply: Some(reply),
            },
        );
        for spec in specs {
            let generation = self.generations.next();
            let member = Member {
                id: spec.id,
                generation,
                phase: Phase::Adding {
                    batch,
                    started: None,
                },
            };
            self.members.insert(spec.name.clone(), member);
            self.start_instance(Op::Add(batch), spec, generation, None);
        }
    }

    /// Checks an `/add` against the pool and names the new replicas;
    /// changes nothing.
    fn plan_add(&self, change: &Change) -> Result<Vec<ReplicaSpec>, MembershipError> {
        self.ensure_manages_replicas()?;
        let n = change.n();
        let current = self.members.len();
        if current + n > self.settings.max_replicas {
            return Err(MembershipError::OverMax {
                wanted: n,
                current,
                max: self.settings.max_replicas,
            });
        }
        let used: HashSet<ReplicaId> = self.members.values().map(|m| m.id).collect();
        let taken: HashSet<&str> = self
            .members
            .keys()
            .chain(self.reserved.keys())
            .map(String::as_str)
            .collect();
        let specs = name_new(n, change.hostnames(), &used, &taken)?;
        let mut all_ids: Vec<ReplicaId> = used.into_iter().collect();
        all_ids.extend(specs.iter().map(|s| s.id));
        self.pool
            .check(&all_ids)
            .map_err(|e| MembershipError::RingRejects {
                n,
                reason: e.to_string(),
            })?;
        Ok(specs)
    }

    /// One start of batch `batch` has reported.
    pub(super) fn added(
        &mut self,
        batch: u64,
        name: String,
        generation: Generation,
        result: Result<Instance, OrchestratorError>,
    ) {
        if !self.batches.contains_key(&batch) {
            // Not an incarnation anyone waits for: never adopt a stray.
            if let Ok(instance) = result {
                self.stop_later(instance.handle, None);
            }
            return;
        }
        let error = match result {
            Ok(instance) => self.keep_started(batch, &name, generation, instance),
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
        if let Some(b) = self.batches.remove(&batch) {
            self.finish(b);
        }
    }

    /// Holds a started instance until its batch is complete; an error if
    /// its member is no longer waiting for it (it is stopped then).
    fn keep_started(
        &mut self,
        batch: u64,
        name: &str,
        generation: Generation,
        instance: Instance,
    ) -> Option<String> {
        let id = self
            .members
            .get(name)
            .filter(|m| {
                m.generation == generation
                    && matches!(m.phase, Phase::Adding { batch: b, .. } if b == batch)
            })
            .map(|m| m.id);
        let Some(id) = id else {
            self.stop_later(instance.handle, None);
            return Some(format!("replica '{name}' is no longer wanted"));
        };
        let replica = self.replica_for(name, id, generation, &instance);
        if let Some(m) = self.members.get_mut(name) {
            m.phase = Phase::Adding {
                batch,
                started: Some(Started {
                    replica,
                    handle: instance.handle,
                    exited: instance.exited,
                }),
            };
        }
        None
    }

    /// Every start of a batch has reported: all join, or none does.
    fn finish(&mut self, mut batch: Batch) {
        let reply = batch.reply.take();
        if batch.errors.is_empty() {
            for name in &batch.names {
                if let Some(m) = self.members.get_mut(name)
                    && let Phase::Adding { started, .. } = &mut m.phase
                    && let Some(s) = started.take()
                {
                    m.phase = Phase::running(&self.watcher, s.replica, s.handle, s.exited);
                }
                self.events.record(EventKind::Added, name, "");
            }
            self.publish();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(self.names()));
            }
        } else {
            // All or nothing: stop what did start, forget the batch.
            for name in &batch.names {
                if let Some(Member {
                    phase:
                        Phase::Adding {
                            started: Some(s), ..
                        },
                    ..
                }) = self.members.remove(name)
                {
                    self.stop_later(s.handle, None);
                }
            }
            let error = MembershipError::NotAdded(batch.errors);
            tracing::warn!(%error);
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
        }
    }
}
