//! Uniformly random choice: the baseline every smarter policy must beat.

use super::{Pick, Policy};

/// A uniformly random usable replica.
#[derive(Debug, Default)]
pub struct RandomPolicy;

impl Policy for RandomPolicy {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        let n = pick.replicas.len();
        if n == 0 {
            return None;
        }
        // Start at a random index and walk: uniform when all are usable, and
        // never loops forever when some are not.
        pick.usable_from(fastrand::usize(..n)).next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing;

    #[test]
    fn spreads_roughly_evenly() {
        let replicas = testing::replicas(4);
        let counts = testing::spread(&RandomPolicy, &replicas, 40_000);
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
