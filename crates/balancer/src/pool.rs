//! The pool snapshot the data path reads: members and the policy built for them.
//!
//! Readers call [`Pool::load`] once per request and never lock: a
//! membership change builds a whole new [`Snapshot`] (policy included) on
//! the control path and swaps it in atomically. Health changes do not need a
//! new snapshot at all: they flip an atomic on the shared [`Replica`].

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{
    policy::{self, Policy, PolicyError},
    replica::{Replica, ReplicaId},
};

/// One immutable view of the pool.
#[derive(Debug)]
pub struct Snapshot {
    /// Every member, sorted by ring id, including ones whose incarnation
    /// died and is being replaced (they are not `usable`, and keep their
    /// place so hashing maps their keys back once the replacement serves).
    pub replicas: Vec<Arc<Replica>>,
    /// The policy prepared for exactly these members.
    pub policy: Arc<dyn Policy>,
}

/// The live snapshot behind an atomic pointer.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
}

impl Pool {
    pub fn new(policy: Arc<dyn Policy>) -> Result<Self, PolicyError> {
        let policy = policy::prepared(&policy, &[])?;
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot {
                replicas: Vec::new(),
                policy,
            }),
        })
    }

    /// The current snapshot; cheap, lock-free, for the hot path.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holders that await.
    #[inline]
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new member set. On error (a ring that cannot hold them)
    /// the old snapshot stays in place.
    pub fn publish(&self, mut replicas: Vec<Arc<Replica>>) -> Result<(), PolicyError> {
        replicas.sort_by_key(|r| r.id);
        let policy = policy::prepared(&self.load().policy, &replicas)?;
        self.current.store(Arc::new(Snapshot { replicas, policy }));
        Ok(())
    }

    /// Whether the policy could be built for members with these ids, without
    /// changing anything: lets `/add` refuse before it spawns a thing.
    pub fn check(&self, ids: &[ReplicaId]) -> Result<(), PolicyError> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut probe: Vec<Arc<Replica>> = ids
            .iter()
            .map(|&id| Arc::new(Replica::new("probe", id, addr, 1, 0)))
            .collect();
        probe.sort_by_key(|r| r.id);
        policy::prepared(&self.load().policy, &probe).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyOptions, from_name, testing};

    #[test]
    fn publish_swaps_members_and_policy() {
        let pool = Pool::new(from_name("maglev", &PolicyOptions::default()).expect("policy"))
            .expect("pool");
        assert!(pool.load().replicas.is_empty());
        let mut replicas = testing::replicas(3);
        replicas.reverse();
        pool.publish(replicas).expect("publish");
        let snap = pool.load();
        let ids: Vec<_> = snap.replicas.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let pick = policy::Pick {
            key: 1,
            replicas: &snap.replicas,
            tried: &[],
        };
        assert!(snap.policy.pick(&pick).is_some());
    }

    #[test]
    fn a_ring_that_cannot_hold_the_members_changes_nothing() {
        let options = PolicyOptions {
            ring: ring::RingConfig {
                slots: 22,
                vnodes: 9,
                ..Default::default()
            },
            ..Default::default()
        };
        let pool = Pool::new(from_name("ring", &options).expect("policy")).expect("pool");
        pool.publish(testing::replicas(2))
            .expect("18 vnodes fit in 22 slots");
        assert!(pool.check(&[1, 2, 3]).is_err());
        assert!(pool.publish(testing::replicas(3)).is_err());
        assert_eq!(pool.load().replicas.len(), 2);
    }
}
