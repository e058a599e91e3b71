//! Round robin and smooth weighted round robin.
//!
//! Both advance one shared atomic counter, so concurrent requests never wait
//! on each other. Weighted round robin precomputes nginx's smooth schedule
//! (a heavy replica's turns are spread out, not bunched) once per member
//! set; picking is then a counter step into that schedule.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use super::{Pick, Policy, PolicyError};
use crate::replica::Replica;

/// Each usable replica in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        pick.usable_from(self.next.fetch_add(1, Ordering::Relaxed))
            .next()
    }
}

/// The longest schedule we precompute; weights are scaled down past it.
const MAX_SCHEDULE: usize = 4096;

/// Smooth weighted round robin over [`Replica::weight`].
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Replica indices in the order they take turns.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    fn schedule(weights: &[u64]) -> Vec<usize> {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return Vec::new();
        }
        let mut current = vec![0i64; weights.len()];
        let len = usize::try_from(total)
            .unwrap_or(MAX_SCHEDULE)
            .min(MAX_SCHEDULE);
        let total = i64::try_from(total).unwrap_or(i64::MAX);
        (0..len)
            .map(|_| {
                for (c, w) in current.iter_mut().zip(weights) {
                    *c += i64::try_from(*w).unwrap_or(i64::MAX);
                }
                let (best, _) = current
                    .iter()
                    .enumerate()
                    .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
                    .unwrap_or((0, &0));
                current[best] -= total;
                best
            })
            .collect()
    }
}

impl Policy for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted-round-robin"
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 || pick.replicas.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let scheduled = (0..len)
            .map(|step| self.schedule[(start + step) % len])
            .find(|&i| pick.usable(i));
        // The schedule belongs to the member set it was built for; fall back
        // to any usable replica rather than fail if the two ever disagree.
        scheduled.or_else(|| pick.usable_from(0).next())
    }

    fn rebuild(&self, replicas: &[Arc<Replica>]) -> Result<Option<Arc<dyn Policy>>, PolicyError> {
        let weights: Vec<u64> = replicas.iter().map(|r| u64::from(r.weight)).collect();
        Ok(Some(Arc::new(Self {
            schedule: Self::schedule(&weights),
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy::testing, replica::Health};

    #[test]
    fn round_robin_is_exact() {
        let replicas = testing::replicas(3);
        let rr = RoundRobin::default();
        let counts = testing::spread(&rr, &replicas, 3000);
        assert_eq!(counts, vec![1000, 1000, 1000]);
    }

    #[test]
    fn round_robin_skips_a_down_replica_evenly() {
        let replicas = testing::replicas(3);
        replicas[0].set_health(Health::Down);
        let counts = testing::spread(&RoundRobin::default(), &replicas, 3000);
        assert_eq!(counts[0], 0);
        assert!(counts[1].abs_diff(counts[2]) <= 1000, "{counts:?}");
    }

    #[test]
    fn smooth_schedule_interleaves_by_weight() {
        // nginx's example: weights 5, 1, 1 -> a a b a c a a
        assert_eq!(
            WeightedRoundRobin::schedule(&[5, 1, 1]),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
        assert!(WeightedRoundRobin::schedule(&[]).is_empty());
    }

    #[test]
    fn weighted_shares_follow_weights() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let replicas: Vec<_> = [3u32, 1, 2]
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(Replica::new(format!("s{i}"), i as u32 + 1, addr, w, 0)))
            .collect();
        let policy = WeightedRoundRobin::default()
            .rebuild(&replicas)
            .expect("rebuild")
            .expect("some");
        assert_eq!(
            testing::spread(policy.as_ref(), &replicas, 600),
            vec![300, 100, 200]
        );
    }
}
