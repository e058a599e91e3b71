//! Consistent-hashing policies, thin adapters over the `ring` crate.
//!
//! Each maps the request key to the ring's candidate order (primary first,
//! then the next distinct replicas clockwise) and takes the first usable
//! one. The rings are built over every member, up or not, so a replica that
//! is briefly down only lends its keys to its neighbours and gets exactly
//! the same keys back when it returns.

use std::sync::Arc;

use ring::{BoundedLoad, Maglev, RingConfig, ServerId, SlottedRing};

use super::{Pick, Policy, PolicyError};
use crate::replica::Replica;

/// Maps ring ids back to indices of the member slice.
#[derive(Debug, Default, Clone)]
struct IdIndex(Vec<u32>);

impl IdIndex {
    const NONE: u32 = u32::MAX;

    fn new(replicas: &[Arc<Replica>]) -> Self {
        let max = replicas.iter().map(|r| r.id as usize).max().unwrap_or(0);
        let mut index = vec![Self::NONE; max + 1];
        for (i, r) in replicas.iter().enumerate() {
            index[r.id as usize] = u32::try_from(i).unwrap_or(Self::NONE);
        }
        Self(index)
    }

    #[inline]
    fn get(&self, id: ServerId) -> Option<usize> {
        match self.0.get(id as usize) {
            Some(&i) if i != Self::NONE => Some(i as usize),
            _ => None,
        }
    }

    /// The key's own replica if it is usable (the O(1) common case), else
    /// the first usable one in the ring's candidate order.
    #[inline]
    fn first_usable<I: Iterator<Item = ServerId>>(
        &self,
        primary: Option<ServerId>,
        candidates: impl FnOnce() -> I,
        pick: &Pick<'_>,
    ) -> Option<usize> {
        if let Some(i) = primary.and_then(|id| self.get(id))
            && pick.usable(i)
        {
            return Some(i);
        }
        candidates()
            .filter_map(|id| self.get(id))
            .find(|&i| pick.usable(i))
    }
}

fn ids(replicas: &[Arc<Replica>]) -> Vec<ServerId> {
    replicas.iter().map(|r| r.id).collect()
}

/// The spec's slotted ring: M slots, K virtual nodes a replica, quadratic
/// probing, hash functions chosen by `--hash-preset`.
#[derive(Debug, Clone)]
pub struct RingPolicy {
    ring: SlottedRing,
    index: IdIndex,
}

impl RingPolicy {
    pub fn new(config: RingConfig) -> Result<Self, PolicyError> {
        Ok(Self {
            ring: SlottedRing::new(config)?,
            index: IdIndex::default(),
        })
    }
}

/// The keys `--key random` draws from (the spec's 6-digit request ids):
/// the ring's share is measured over exactly these, because the spec's
/// hash function does not spread them evenly over the slots.
const REQUEST_IDS: std::ops::RangeInclusive<u64> = 100_000..=999_999;

impl Policy for RingPolicy {
    fn name(&self) -> &'static str {
        "ring"
    }

    /// Shares of the 900,000 request ids: a few milliseconds, asked for
    /// only when the dashboard sees the membership change.
    fn shares(&self) -> Option<Vec<(ServerId, f64)>> {
        let servers = self.ring.servers();
        let mut counts = vec![0u64; servers.len()];
        for key in REQUEST_IDS {
            if let Some(i) = self
                .ring
                .lookup(key)
                .and_then(|id| servers.binary_search(&id).ok())
            {
                counts[i] += 1;
            }
        }
        Some(fractions(servers, &counts))
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        self.index.first_usable(
            self.ring.lookup(pick.key),
            || self.ring.candidates(pick.key),
            pick,
        )
    }

    /// Applies the difference to a copy of the current ring instead of
    /// building from scratch: a survivor's virtual nodes then stay where
    /// quadratic probing put them, so only the changed replicas' keys move.
    fn rebuild(&self, replicas: &[Arc<Replica>]) -> Result<Option<Arc<dyn Policy>>, PolicyError> {
        let wanted = ids(replicas);
        let mut ring = self.ring.clone();
        let current: Vec<ServerId> = ring.servers().to_vec();
        for id in current.iter().filter(|id| !wanted.contains(id)) {
            ring.remove(*id)?;
        }
        for id in wanted.iter().filter(|id| !current.contains(id)) {
            ring.add(*id)?;
        }
        Ok(Some(Arc::new(Self {
            ring,
            index: IdIndex::new(replicas),
        })))
    }
}

/// Maglev hashing: near-perfect balance, minimal disruption, O(1) lookup.
#[derive(Debug, Default)]
pub struct MaglevPolicy {
    table: Option<Maglev>,
    index: IdIndex,
}

impl MaglevPolicy {
    /// The table for a member set; none for an empty pool.
    fn for_members(replicas: &[Arc<Replica>]) -> Result<Self, PolicyError> {
        let table = if replicas.is_empty() {
            None
        } else {
            Some(Maglev::build(&ids(replicas))?)
        };
        Ok(Self {
            table,
            index: IdIndex::new(replicas),
        })
    }
}

impl Policy for MaglevPolicy {
    fn name(&self) -> &'static str {
        "maglev"
    }

    /// Shares of the lookup table's entries.
    fn shares(&self) -> Option<Vec<(ServerId, f64)>> {
        let Some(table) = &self.table else {
            return Some(Vec::new());
        };
        let counts: Vec<u64> = table.shares().into_iter().map(|n| n as u64).collect();
        Some(fractions(table.servers(), &counts))
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let table = self.table.as_ref()?;
        self.index
            .first_usable(table.lookup(pick.key), || table.candidates(pick.key), pick)
    }

    fn rebuild(&self, replicas: &[Arc<Replica>]) -> Result<Option<Arc<dyn Policy>>, PolicyError> {
        Ok(Some(Arc::new(Self::for_members(replicas)?)))
    }
}

/// Consistent hashing with bounded loads over a Maglev table: the key's
/// replica unless it already has more than `(1 + eps)` times the mean of
/// the requests in flight, then the next one in the key's candidate order.
#[derive(Debug)]
pub struct BoundedLoadPolicy {
    bound: BoundedLoad,
    maglev: MaglevPolicy,
}

impl BoundedLoadPolicy {
    pub fn new(eps: f64) -> Result<Self, PolicyError> {
        let bound = BoundedLoad::new(eps).map_err(|e| PolicyError::Option(e.to_string()))?;
        Ok(Self {
            bound,
            maglev: MaglevPolicy::default(),
        })
    }
}

impl Policy for BoundedLoadPolicy {
    fn name(&self) -> &'static str {
        "bounded-load"
    }

    /// The table's shares: where keys go before the load bound moves some.
    fn shares(&self) -> Option<Vec<(ServerId, f64)>> {
        self.maglev.shares()
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let table = self.maglev.table.as_ref()?;
        let (usable, total) = (0..pick.replicas.len())
            .filter(|&i| pick.usable(i))
            .fold((0usize, 0u64), |(n, t), i| {
                (n + 1, t + pick.replicas[i].in_flight())
            });
        if usable == 0 {
            return None;
        }
        let index = &self.maglev.index;
        let candidates = table
            .candidates(pick.key)
            .filter(|&id| index.get(id).is_some_and(|i| pick.usable(i)));
        let load = |id: ServerId| {
            index
                .get(id)
                .map_or(u64::MAX, |i| pick.replicas[i].in_flight())
        };
        let chosen = self.bound.pick(candidates, usable, total, load)?;
        index.get(chosen)
    }

    fn rebuild(&self, replicas: &[Arc<Replica>]) -> Result<Option<Arc<dyn Policy>>, PolicyError> {
        Ok(Some(Arc::new(Self {
            bound: self.bound,
            maglev: MaglevPolicy::for_members(replicas)?,
        })))
    }
}

/// `counts` (one per server) as fractions of their sum.
fn fractions(servers: &[ServerId], counts: &[u64]) -> Vec<(ServerId, f64)> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    servers
        .iter()
        .zip(counts)
        .map(|(id, n)| (*id, *n as f64 / total))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy::testing, replica::Health};

    fn built(policy: &dyn Policy, replicas: &[Arc<Replica>]) -> Arc<dyn Policy> {
        policy.rebuild(replicas).expect("rebuild").expect("rebuilt")
    }

    fn max_over_mean(counts: &[usize]) -> f64 {
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        *counts.iter().max().expect("non-empty") as f64 / mean
    }

    #[test]
    fn maglev_balances_10k_requests_over_3() {
        let replicas = testing::replicas(3);
        let policy = built(&MaglevPolicy::default(), &replicas);
        let counts = testing::spread(policy.as_ref(), &replicas, 10_000);
        assert!(max_over_mean(&counts) <= 1.05, "{counts:?}");
    }

    #[test]
    fn shares_cover_the_space_and_show_the_spec_skew() {
        let replicas = testing::replicas(3);
        let spec = built(
            &RingPolicy::new(RingConfig::default()).expect("ring"),
            &replicas,
        );
        let maglev = built(&MaglevPolicy::default(), &replicas);
        for policy in [&spec, &maglev] {
            let shares = policy.shares().expect("a hashing policy");
            assert_eq!(shares.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
            let sum: f64 = shares.iter().map(|s| s.1).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{shares:?}");
        }
        let top = |p: &Arc<dyn Policy>| {
            p.shares()
                .expect("shares")
                .iter()
                .map(|s| s.1)
                .fold(0.0, f64::max)
        };
        assert!(top(&spec) > 0.5, "the spec ring is skewed");
        assert!(top(&maglev) < 0.35, "maglev is even");
        assert!(RoundRobinForTest::default().shares().is_none());
    }

    type RoundRobinForTest = crate::policy::RoundRobin;

    #[test]
    fn spec_ring_is_skewed_as_the_spec_predicts() {
        let replicas = testing::replicas(3);
        let policy = built(
            &RingPolicy::new(RingConfig::default()).expect("ring"),
            &replicas,
        );
        let mut counts = vec![0; 3];
        for _ in 0..10_000 {
            let key = fastrand::u64(100_000..=999_999);
            let i = policy
                .pick(&Pick {
                    key,
                    replicas: &replicas,
                    tried: &[],
                })
                .expect("pick");
            counts[i] += 1;
        }
        assert!(max_over_mean(&counts) > 1.5, "{counts:?}");
    }

    #[test]
    fn a_down_replica_gets_its_keys_back_when_up() {
        let replicas = testing::replicas(3);
        for policy in [
            built(&MaglevPolicy::default(), &replicas),
            built(
                &RingPolicy::new(RingConfig::default()).expect("ring"),
                &replicas,
            ),
        ] {
            let map = |key| {
                policy.pick(&Pick {
                    key,
                    replicas: &replicas,
                    tried: &[],
                })
            };
            let before: Vec<_> = (0..1000).map(map).collect();
            replicas[1].set_health(Health::Down);
            let during: Vec<_> = (0..1000).map(map).collect();
            replicas[1].set_health(Health::Up);
            let after: Vec<_> = (0..1000).map(map).collect();
            assert_eq!(before, after);
            for (b, d) in before.iter().zip(&during) {
                if *b != Some(1) {
                    assert_eq!(b, d, "only the down replica's keys move");
                }
            }
        }
    }

    #[test]
    fn ring_rejects_more_replicas_than_slots_allow() {
        let config = RingConfig {
            slots: 22,
            vnodes: 9,
            ..RingConfig::default()
        };
        let policy = RingPolicy::new(config).expect("ring");
        assert!(policy.rebuild(&testing::replicas(2)).is_ok());
        assert!(matches!(
            policy.rebuild(&testing::replicas(3)),
            Err(PolicyError::Ring(_))
        ));
    }

    #[test]
    fn bounded_load_spills_from_an_overloaded_replica() {
        let replicas = testing::replicas(3);
        let policy = built(&BoundedLoadPolicy::new(0.25).expect("eps"), &replicas);
        let key = 42;
        let home = policy
            .pick(&Pick {
                key,
                replicas: &replicas,
                tried: &[],
            })
            .expect("pick");
        let _held: Vec<_> = (0..10).map(|_| replicas[home].start_request()).collect();
        let next = policy
            .pick(&Pick {
                key,
                replicas: &replicas,
                tried: &[],
            })
            .expect("pick");
        assert_ne!(
            next, home,
            "capacity ceil(1.25 * 11 / 3) = 5 < 10 in flight"
        );
    }
}
