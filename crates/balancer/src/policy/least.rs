//! Load-aware policies: least connections and power of two choices.
//!
//! Both read each replica's in-flight counter, which lives on the
//! [`Replica`](crate::replica::Replica) and so survives membership changes.

use super::{Pick, Policy};

/// The usable replica with the fewest requests in flight; ties go to a
/// rotating start so equal replicas share the load instead of the first one
/// taking every tie.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: std::sync::atomic::AtomicUsize,
}

impl Policy for LeastConnections {
    fn name(&self) -> &'static str {
        "least-connections"
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pick.usable_from(start)
            .min_by_key(|&i| pick.replicas[i].in_flight())
    }
}

/// Power of two random choices: sample two usable replicas, take the one with
/// fewer in flight. Nearly as good as least connections, O(1), and free of
/// the herd effect where every balancer picks the same idle replica.
#[derive(Debug, Default)]
pub struct PowerOfTwoChoices;

impl Policy for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let n = pick.replicas.len();
        if n == 0 {
            return None;
        }
        let a = pick.usable_from(fastrand::usize(..n)).next()?;
        // A second, different candidate: random among the others.
        let second = a + 1 + fastrand::usize(..n.max(2) - 1);
        let b = pick.usable_from(second).find(|&i| i != a);
        Some(match b {
            Some(b) if pick.replicas[b].in_flight() < pick.replicas[a].in_flight() => b,
            _ => a,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing;

    #[test]
    fn least_connections_prefers_the_idle_replica() {
        let replicas = testing::replicas(3);
        let _busy: Vec<_> = (0..5).map(|_| replicas[0].start_request()).collect();
        let _busy2: Vec<_> = (0..2).map(|_| replicas[2].start_request()).collect();
        let lc = LeastConnections::default();
        for _ in 0..10 {
            assert_eq!(
                lc.pick(&Pick {
                    key: 0,
                    replicas: &replicas,
                    tried: &[]
                }),
                Some(1)
            );
        }
    }

    #[test]
    fn least_connections_shares_ties() {
        let replicas = testing::replicas(3);
        let counts = testing::spread(&LeastConnections::default(), &replicas, 300);
        assert_eq!(counts, vec![100, 100, 100]);
    }

    #[test]
    fn p2c_avoids_the_busiest() {
        let replicas = testing::replicas(2);
        let _busy: Vec<_> = (0..3).map(|_| replicas[0].start_request()).collect();
        for _ in 0..100 {
            assert_eq!(
                PowerOfTwoChoices.pick(&Pick {
                    key: 0,
                    replicas: &replicas,
                    tried: &[]
                }),
                Some(1)
            );
        }
    }

    #[test]
    fn p2c_with_one_replica() {
        let replicas = testing::replicas(1);
        assert_eq!(
            PowerOfTwoChoices.pick(&Pick {
                key: 0,
                replicas: &replicas,
                tried: &[]
            }),
            Some(0)
        );
    }
}
