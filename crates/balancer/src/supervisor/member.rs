//! What the supervisor knows of each name: a member and its phase, a name
//! that is reserved though no longer a member, and the generation counter.

use std::{sync::Arc, time::Instant};

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    health::Watcher,
    orchestrator::BoxFuture,
    replica::{Generation, Replica, ReplicaId},
};

/// A named replica of the pool, in one of its phases.
pub(super) struct Member {
    /// Its place on the ring; kept by every replacement.
    pub id: ReplicaId,
    /// The incarnation that is wanted now; messages about others are stale.
    pub generation: Generation,
    pub phase: Phase,
    /// When it last became a member in the pool (adopted, added, followed):
    /// an engine reading taken before this may lack it without its having
    /// left (see `observe`).
    pub joined: tokio::time::Instant,
}

/// Where a member is in its life. What a phase holds is exactly what that
/// phase needs, so no field is "set only while ...".
pub(super) enum Phase {
    /// Starting for the `/add` batch `batch`; `started` once its instance
    /// answered its heartbeat (it joins the pool when the whole batch has).
    Adding {
        batch: u64,
        started: Option<Started>,
    },
    /// In the pool and watched; dropping the phase stops the watch.
    Running {
        replica: Arc<Replica>,
        handle: String,
        _watch: DropGuard,
    },
    /// Its incarnation died and a new one is starting. The dead replica
    /// keeps its place in the pool (out of rotation) so that hashing maps
    /// its keys back to the same place once the replacement serves.
    ///
    /// `engine` is the handle of what the engine still runs for this member
    /// when the engine restarts instances itself (Swarm): `/rm` removes it.
    /// `None` when this balancer stopped the dead instance itself.
    Replacing {
        since: Instant,
        dead: Arc<Replica>,
        engine: Option<String>,
    },
}

/// An instance that is up but not yet in the pool.
pub(super) struct Started {
    pub replica: Arc<Replica>,
    pub handle: String,
    pub exited: Option<BoxFuture<'static, ()>>,
}

impl Phase {
    /// The phase of a started instance that joins the pool: watched from
    /// now on, until the phase is left.
    pub fn running(
        watcher: &Watcher,
        replica: Arc<Replica>,
        handle: String,
        exited: Option<BoxFuture<'static, ()>>,
    ) -> Self {
        let watch = CancellationToken::new();
        watcher.spawn(replica.clone(), exited, watch.clone());
        Self::Running {
            replica,
            handle,
            _watch: watch.drop_guard(),
        }
    }

    pub fn is_adding(&self) -> bool {
        matches!(self, Self::Adding { .. })
    }

    pub fn is_replacing(&self) -> bool {
        matches!(self, Self::Replacing { .. })
    }

    /// The replica this member shows in the pool, if it has a place there.
    pub fn in_pool(&self) -> Option<&Arc<Replica>> {
        match self {
            Self::Running { replica, .. } | Self::Replacing { dead: replica, .. } => Some(replica),
            Self::Adding { .. } => None,
        }
    }
}

/// Why a name that is no longer a member is not free yet: something of its
/// last incarnation may still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reservation {
    /// Removed: draining, then stopping; free on `Message::Stopped`.
    Stopping,
    /// Removed while being replaced: the replacement of this generation is
    /// still starting (or waiting to retry). Free once that resolves and
    /// whatever it started is stopped.
    PendingStart(Generation),
}

/// Hands out generations; one counter for every name, so they only grow.
#[derive(Debug)]
pub(super) struct Generations {
    next: Generation,
}

impl Default for Generations {
    fn default() -> Self {
        Self { next: 1 }
    }
}

impl Generations {
    /// A generation no incarnation (of any name) has had yet.
    pub fn next(&mut self) -> Generation {
        let generation = self.next;
        self.next += 1;
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_only_grow() {
        let mut g = Generations::default();
        let taken: Vec<Generation> = (0..5).map(|_| g.next()).collect();
        assert_eq!(taken, [1, 2, 3, 4, 5]);
    }
}
