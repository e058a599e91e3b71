//! `/add`: a batch of new members, all or nothing.
//!
//! Each new member starts in its own task; the batch is answered when the
//! last start has reported. If every instance came up, all join the pool
//! at once; if any failed, the ones that did start are stopped and the
//! pool is as it was.
//!
//! With an engine that several balancers share, another balancer may take
//! a name or ring id first (the engine answers [`Taken`]): a generated name
//! is retried with the next free id, a given hostname with another id; a
//! given hostname whose name is taken is a duplicate. At start-up (`fill`)
//! a name another balancer creates counts as filled: it joins through
//! `observe`, so two balancers started together do not double the pool.

use std::collections::HashSet;

use tokio::time::Instant;

use super::{
    Member, MembershipError, Op, Phase, Reply, Supervisor, member::Started, naming::name_new,
};
use crate::{
    change::Change,
    change::Hostname,
    events::EventKind,
    orchestrator::{Instance, OrchestratorError, ReplicaSpec, Taken},
    replica::{Generation, ReplicaId},
};

/// An `/add` waiting for its starts.
pub(super) struct Batch {
    names: Vec<String>,
    pending: usize,
    errors: Vec<String>,
    reply: Option<Reply>,
    /// The start-up fill (see the module doc).
    fill: bool,
    /// Hostnames the request gave (the others were generated).
    asked: HashSet<String>,
    /// Starts tried again because a name or id was taken elsewhere.
    retries: usize,
}

/// Most retries of one batch after names or ids taken elsewhere.
const MAX_TAKEN_RETRIES: usize = 16;

impl Supervisor {
    pub(super) fn add(&mut self, change: Change, reply: Reply, fill: bool) {
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
                fill,
                asked: change.hostnames().iter().map(ToString::to_string).collect(),
                retries: 0,
            },
        );
        for spec in specs {
            self.start_member(batch, spec);
        }
    }

    /// Starts one new member of batch `batch`.
    fn start_member(&mut self, batch: u64, spec: ReplicaSpec) {
        let generation = self.generations.next();
        let member = Member {
            id: spec.id,
            generation,
            phase: Phase::Adding {
                batch,
                started: None,
            },
            joined: tokio::time::Instant::now(),
        };
        self.members.insert(spec.name.clone(), member);
        self.start_instance(Op::Add(batch), spec, generation, None);
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
        let (used, taken) = self.in_use();
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

    /// Ring ids and names that a new member cannot have: members', reserved
    /// names, and what another balancer was just seen to take.
    fn in_use(&self) -> (HashSet<ReplicaId>, HashSet<&str>) {
        let used = self
            .members
            .values()
            .map(|m| m.id)
            .chain(self.recent.ids.keys().copied())
            .collect();
        let taken = self
            .members
            .keys()
            .chain(self.reserved.keys())
            .chain(self.recent.names.keys())
            .map(String::as_str)
            .collect();
        (used, taken)
    }

    /// `name` of batch `batch` lost its name or ring id to another
    /// balancer: `Ok(true)` if it is started again under another id (the
    /// batch waits on), `Ok(false)` if it counts as done, or the error.
    fn taken(&mut self, batch: u64, name: &str, what: Taken) -> Result<bool, String> {
        match what {
            Taken::Name => self.recent.names.insert(name.to_owned(), Instant::now()),
            Taken::Id(id) => self.recent.ids.insert(id, Instant::now()),
        };
        self.members.remove(name);
        let Some(b) = self.batches.get(&batch) else {
            return Ok(false);
        };
        let asked = b.asked.contains(name);
        if b.fill && !asked {
            // Someone else is filling the pool too; theirs joins via observe.
            if let Some(b) = self.batches.get_mut(&batch) {
                b.names.retain(|n| n != name);
            }
            return Ok(false);
        }
        if asked && what == Taken::Name {
            return Err(MembershipError::Duplicate(name.to_owned()).to_string());
        }
        if b.retries >= MAX_TAKEN_RETRIES {
            return Err(format!(
                "replica '{name}': names and ids kept being taken elsewhere"
            ));
        }
        let hostnames: Vec<Hostname> = if asked {
            Hostname::try_from(name).into_iter().collect()
        } else {
            Vec::new()
        };
        let (used, taken) = self.in_use();
        let spec = name_new(1, &hostnames, &used, &taken)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "no name left".to_owned())?;
        if let Some(b) = self.batches.get_mut(&batch) {
            b.retries += 1;
            for n in &mut b.names {
                if n == name {
                    n.clone_from(&spec.name);
                }
            }
        }
        tracing::info!(lost = %name, %what, retry = %spec.name, id = spec.id, "taken by another balancer; trying the next id");
        self.start_member(batch, spec);
        Ok(true)
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
            Err(OrchestratorError::Taken { what, .. }) => match self.taken(batch, &name, what) {
                Ok(true) => return,
                Ok(false) => None,
                Err(e) => Some(e),
            },
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
                    m.joined = tokio::time::Instant::now();
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
