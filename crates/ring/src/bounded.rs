//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
//! SODA 2018).
//!
//! A key goes to its consistent-hash server unless that server already
//! carries its share of the load times `(1 + eps)`; then it goes to the next
//! server in the key's candidate order with room. With `c = ceil((1 + eps) *
//! (total + 1) / n)`, no server ever holds more than `c`: a hot key or a
//! slow replica spills to neighbours instead of piling up, while most keys
//! keep their server.

use crate::{RingError, hash::ServerId};

/// The bounded-load selector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedLoad {
    eps: f64,
}

impl BoundedLoad {
    /// `eps > 0`: the slack over the mean load (0.25 = 25%).
    pub fn new(eps: f64) -> Result<Self, RingError> {
        if eps.is_finite() && eps > 0.0 {
            Ok(Self { eps })
        } else {
            Err(RingError::InvalidEpsilon(eps.to_string()))
        }
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The most a server may hold once one more request joins `total`
    /// spread over `servers`.
    pub fn capacity(&self, total: u64, servers: usize) -> u64 {
        if servers == 0 {
            return 0;
        }
        ((1.0 + self.eps) * (total as f64 + 1.0) / servers as f64).ceil() as u64
    }

    /// The first of `candidates` (a key's consistent-hash order) whose load
    /// is below capacity; `None` if none is (only possible when candidates
    /// leave some servers out).
    pub fn pick(
        &self,
        candidates: impl IntoIterator<Item = ServerId>,
        servers: usize,
        total: u64,
        load: impl Fn(ServerId) -> u64,
    ) -> Option<ServerId> {
        let capacity = self.capacity(total, servers);
        candidates.into_iter().find(|&id| load(id) < capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_papers_bound() {
        let b = BoundedLoad::new(0.25).expect("eps");
        // ceil(1.25 * 11 / 3) = ceil(4.58) = 5
        assert_eq!(b.capacity(10, 3), 5);
        assert_eq!(b.capacity(0, 4), 1);
        assert_eq!(b.capacity(5, 0), 0);
    }

    #[test]
    fn spills_past_a_full_server() {
        let b = BoundedLoad::new(0.25).expect("eps");
        let loads = [0u64, 5, 0, 1];
        let load = |id: ServerId| loads[id as usize];
        assert_eq!(b.pick([1, 3, 2], 3, 6, load), Some(3));
        assert_eq!(b.pick([2, 1], 3, 6, load), Some(2));
    }

    #[test]
    fn rejects_bad_eps() {
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(BoundedLoad::new(eps).is_err(), "{eps}");
        }
    }
}
