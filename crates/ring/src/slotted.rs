//! The spec's slotted ring: M slots, K virtual nodes a server placed by
//! Phi(i, j), collisions resolved by quadratic probing, and a key served by
//! the first occupied slot clockwise from H(key).
//!
//! Servers are added and removed one at a time and the others' virtual
//! nodes never move, so removing a server moves only its keys and adding
//! one moves keys only to it. Lookup is O(1): a table of "owner of the next
//! occupied slot clockwise", rebuilt on every membership change (M entries).

use crate::{
    RingError,
    hash::{HashFn, HashPreset, ServerId},
};

/// Shape of a slotted ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// M, the number of slots.
    pub slots: u64,
    /// K, virtual nodes per server.
    pub vnodes: u32,
    pub preset: HashPreset,
}

impl RingConfig {
    /// The spec's ring: M = 512, K = log2(512) = 9, the spec's functions.
    pub const SPEC: Self = Self {
        slots: 512,
        vnodes: 9,
        preset: HashPreset::Spec,
    };
}

impl Default for RingConfig {
    /// [`RingConfig::SPEC`].
    fn default() -> Self {
        Self::SPEC
    }
}

const EMPTY: ServerId = ServerId::MAX;

/// The spec's consistent-hash ring.
#[derive(Debug, Clone)]
pub struct SlottedRing {
    config: RingConfig,
    /// Owner of each slot, or `EMPTY`.
    slots: Vec<ServerId>,
    /// Owner of the first occupied slot at or clockwise after each slot.
    next_owner: Vec<ServerId>,
    /// Occupied slot positions, ascending (for the candidate walk).
    occupied: Vec<u32>,
    servers: Vec<ServerId>,
}

impl SlottedRing {
    /// An empty ring.
    pub fn new(config: RingConfig) -> Result<Self, RingError> {
        if config.slots == 0 {
            return Err(RingError::ZeroSlots);
        }
        if config.vnodes == 0 {
            return Err(RingError::ZeroVnodes);
        }
        let m = usize::try_from(config.slots).map_err(|_| RingError::Full {
            slots: config.slots,
            needed: 0,
        })?;
        if u32::try_from(config.slots).is_err() {
            // Slot positions are stored as u32.
            return Err(RingError::Full {
                slots: config.slots,
                needed: config.slots,
            });
        }
        Ok(Self {
            config,
            slots: vec![EMPTY; m],
            next_owner: vec![EMPTY; m],
            occupied: Vec::new(),
            servers: Vec::new(),
        })
    }

    /// A ring holding `ids`, added in ascending order.
    pub fn build(
        config: RingConfig,
        ids: impl IntoIterator<Item = ServerId>,
    ) -> Result<Self, RingError> {
        let mut ring = Self::new(config)?;
        let mut ids: Vec<ServerId> = ids.into_iter().collect();
        ids.sort_unstable();
        for id in ids {
            ring.add(id)?;
        }
        Ok(ring)
    }

    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// Places `id`'s K virtual nodes. On error the ring is unchanged.
    pub fn add(&mut self, id: ServerId) -> Result<(), RingError> {
        if id == EMPTY {
            return Err(RingError::UnknownServer(id));
        }
        if self.servers.contains(&id) {
            return Err(RingError::DuplicateServer(id));
        }
        let RingConfig {
            slots: m,
            vnodes: k,
            preset,
        } = self.config;
        let needed = (self.servers.len() as u64 + 1) * u64::from(k);
        if needed > m {
            return Err(RingError::Full { slots: m, needed });
        }
        let mut placed: Vec<usize> = Vec::with_capacity(k as usize);
        for j in 0..k {
            let home = preset.vnode_slot(id, j, m);
            // Quadratic probing: home + p^2 for p = 0, 1, 2, ... A bounded
            // number of probes: p^2 mod M repeats with period at most M.
            let free = (0..m)
                .map(|p| {
                    ((u128::from(home) + u128::from(p) * u128::from(p)) % u128::from(m)) as usize
                })
                .find(|&s| self.slots[s] == EMPTY);
            match free {
                Some(s) => {
                    self.slots[s] = id;
                    placed.push(s);
                }
                None => {
                    for s in placed {
                        self.slots[s] = EMPTY;
                    }
                    return Err(RingError::Full { slots: m, needed });
                }
            }
        }
        self.servers.push(id);
        self.servers.sort_unstable();
        self.reindex();
        Ok(())
    }

    /// Frees `id`'s slots; nobody else's virtual nodes move.
    pub fn remove(&mut self, id: ServerId) -> Result<(), RingError> {
        let at = self
            .servers
            .iter()
            .position(|&s| s == id)
            .ok_or(RingError::UnknownServer(id))?;
        self.servers.remove(at);
        for s in &mut self.slots {
            if *s == id {
                *s = EMPTY;
            }
        }
        self.reindex();
        Ok(())
    }

    fn reindex(&mut self) {
        self.occupied = (0..self.slots.len())
            .filter(|&s| self.slots[s] != EMPTY)
            .map(|s| s as u32)
            .collect();
        let m = self.slots.len();
        let Some(&first) = self.occupied.first() else {
            self.next_owner.fill(EMPTY);
            return;
        };
        // Walk backwards twice around so every slot sees the next owner.
        let mut owner = self.slots[first as usize];
        for s in (0..m).rev() {
            if self.slots[s] != EMPTY {
                owner = self.slots[s];
            }
            self.next_owner[s] = owner;
        }
    }

    /// The server of `key`, `None` on an empty ring.
    #[inline]
    pub fn lookup(&self, key: u64) -> Option<ServerId> {
        let slot = self.config.preset.request_slot(key, self.config.slots) as usize;
        match self.next_owner[slot] {
            EMPTY => None,
            owner => Some(owner),
        }
    }

    /// Distinct servers in clockwise order from `key`'s slot, starting with
    /// [`lookup`](Self::lookup): where a retry goes next.
    pub fn candidates(&self, key: u64) -> Candidates<'_> {
        let slot = self.config.preset.request_slot(key, self.config.slots) as u32;
        let start = self.occupied.partition_point(|&s| s < slot);
        Candidates {
            ring: self,
            start,
            step: 0,
            seen: Vec::new(),
        }
    }

    /// Server ids, ascending.
    pub fn servers(&self) -> &[ServerId] {
        &self.servers
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The slots `id`'s virtual nodes occupy, ascending.
    pub fn slots_of(&self, id: ServerId) -> Vec<u64> {
        (0..self.slots.len())
            .filter(|&s| self.slots[s] == id)
            .map(|s| s as u64)
            .collect()
    }
}

/// Iterator of [`SlottedRing::candidates`]. It allocates only if asked for
/// more than the first server, so the common case (first candidate is fine)
/// is allocation-free.
#[derive(Debug)]
pub struct Candidates<'a> {
    ring: &'a SlottedRing,
    start: usize,
    step: usize,
    seen: Vec<ServerId>,
}

impl Iterator for Candidates<'_> {
    type Item = ServerId;

    fn next(&mut self) -> Option<ServerId> {
        let occupied = &self.ring.occupied;
        let n = occupied.len();
        while self.step < n && self.seen.len() < self.ring.servers.len() {
            let slot = occupied[(self.start + self.step) % n] as usize;
            self.step += 1;
            let owner = self.ring.slots[slot];
            if !self.seen.contains(&owner) {
                self.seen.push(owner);
                return Some(owner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec3() -> SlottedRing {
        SlottedRing::build(RingConfig::default(), [1, 2, 3]).expect("3 x 9 fit in 512")
    }

    #[test]
    fn spec_positions_for_three_servers_by_hand() {
        let ring = spec3();
        // Server 1: Phi(1, j) = 1 + j^2 + 2j + 25 = j^2 + 2j + 26, no collision:
        // j = 0..8 -> 26, 29, 34, 41, 50, 61, 74, 89, 106.
        assert_eq!(ring.slots_of(1), vec![26, 29, 34, 41, 50, 61, 74, 89, 106]);
        // Server 2: Phi(2, j) = 4 + j^2 + 2j + 25 = j^2 + 2j + 29:
        // j = 0 -> 29, taken by server 1, probe 29 + 1^2 = 30 (free);
        // j = 1..8 -> 32, 37, 44, 53, 64, 77, 92, 109, all free.
        assert_eq!(ring.slots_of(2), vec![30, 32, 37, 44, 53, 64, 77, 92, 109]);
        // Server 3: Phi(3, j) = 9 + j^2 + 2j + 25 = j^2 + 2j + 34:
        // j = 0 -> 34 (server 1) -> 35; j = 1 -> 37 (server 2) -> 38;
        // j = 2..8 -> 42, 49, 58, 69, 82, 97, 114, all free.
        assert_eq!(ring.slots_of(3), vec![35, 38, 42, 49, 58, 69, 82, 97, 114]);
    }

    #[test]
    fn lookup_goes_clockwise_and_wraps() {
        let ring = spec3();
        // H(0) = 17 -> next occupied clockwise is 26 (server 1).
        assert_eq!(ring.lookup(0), Some(1));
        // H(1) = 20 -> 26 (server 1); H(3) = 9 + 6 + 17 = 32 -> slot 32 itself (server 2).
        assert_eq!(ring.lookup(1), Some(1));
        assert_eq!(ring.lookup(3), Some(2));
        // H(4) = 16 + 8 + 17 = 41 -> server 1; H(5) = 25 + 10 + 17 = 52 -> 53 (server 2).
        assert_eq!(ring.lookup(4), Some(1));
        assert_eq!(ring.lookup(5), Some(2));
        // H(10) = 100 + 20 + 17 = 137 -> past 114, wraps to 26 (server 1).
        assert_eq!(ring.lookup(10), Some(1));
        // H(9) = 81 + 18 + 17 = 116 -> wraps too.
        assert_eq!(ring.lookup(9), Some(1));
    }

    #[test]
    fn candidates_are_distinct_and_start_with_lookup() {
        let ring = spec3();
        for key in 0..2000 {
            let c: Vec<_> = ring.candidates(key).collect();
            assert_eq!(c.first().copied(), ring.lookup(key));
            let mut sorted = c.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![1, 2, 3], "key {key}: {c:?}");
        }
        // H(5) = 52: clockwise 53 (2), 58 (3), 61 (1).
        assert_eq!(ring.candidates(5).collect::<Vec<_>>(), vec![2, 3, 1]);
    }

    #[test]
    fn errors_leave_the_ring_unchanged() {
        assert_eq!(
            SlottedRing::new(RingConfig {
                slots: 0,
                ..Default::default()
            })
            .err(),
            Some(RingError::ZeroSlots)
        );
        assert_eq!(
            SlottedRing::new(RingConfig {
                vnodes: 0,
                ..Default::default()
            })
            .err(),
            Some(RingError::ZeroVnodes)
        );
        let config = RingConfig {
            slots: 22,
            vnodes: 9,
            preset: HashPreset::Spec,
        };
        let mut ring = SlottedRing::build(config, [1, 2]).expect("18 of 22 slots");
        let before = ring.clone();
        assert_eq!(
            ring.add(3),
            Err(RingError::Full {
                slots: 22,
                needed: 27
            })
        );
        assert_eq!(ring.add(2), Err(RingError::DuplicateServer(2)));
        assert_eq!(ring.remove(7), Err(RingError::UnknownServer(7)));
        assert_eq!(ring.slots_of(1), before.slots_of(1));
        assert_eq!(ring.servers(), &[1, 2]);
        for key in 0..100 {
            assert_eq!(ring.lookup(key), before.lookup(key));
        }
    }

    #[test]
    fn probing_that_finds_no_slot_is_an_error_not_a_loop() {
        // M = 4, K = 2: quadratic probing from home h visits h, h+1, h+4=h, h+9=h+1, ...
        // only two distinct slots, so the second server may find no free one.
        let config = RingConfig {
            slots: 4,
            vnodes: 2,
            preset: HashPreset::Spec,
        };
        let mut ring = SlottedRing::new(config).expect("ring");
        ring.add(1).expect("first fits");
        let r = ring.add(3);
        if let Err(e) = r {
            assert!(matches!(e, RingError::Full { .. }), "{e}");
            assert_eq!(ring.servers(), &[1]);
        }
    }

    #[test]
    fn empty_ring_maps_nothing() {
        let mut ring = SlottedRing::new(RingConfig::default()).expect("ring");
        assert_eq!(ring.lookup(42), None);
        assert_eq!(ring.candidates(42).next(), None);
        ring.add(1).expect("add");
        ring.remove(1).expect("remove");
        assert_eq!(ring.lookup(42), None);
        assert!(ring.is_empty());
    }
}
