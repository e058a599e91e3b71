//! Maglev hashing (Eisenbud et al., NSDI 2016): the well-balancing ring.
//!
//! Each server fills a prime-sized lookup table in the order of its own
//! permutation (offset and skip from two independent hashes of its *id*,
//! not its position, so a server keeps its preferences when others come and
//! go). The table is filled round-robin, so every server owns M/N entries
//! within one: near-perfect balance, O(1) lookup, and small disruption when
//! membership changes.

use crate::{
    RingError,
    hash::{ServerId, fmix64},
};

/// The default table size: prime, and large enough for max/mean within 1%
/// of ideal for hundreds of servers.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;

/// A Maglev lookup table.
#[derive(Debug, Clone)]
pub struct Maglev {
    /// Server id of each table entry.
    table: Vec<ServerId>,
    servers: Vec<ServerId>,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    (2..)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

impl Maglev {
    /// A table of [`DEFAULT_TABLE_SIZE`] for `ids`.
    pub fn build(ids: &[ServerId]) -> Result<Self, RingError> {
        Self::with_table_size(ids, DEFAULT_TABLE_SIZE)
    }

    /// A table of `m` entries (`m` prime and at least the number of servers).
    pub fn with_table_size(ids: &[ServerId], m: u64) -> Result<Self, RingError> {
        if ids.is_empty() {
            return Err(RingError::Empty);
        }
        let mut servers = ids.to_vec();
        servers.sort_unstable();
        servers.dedup();
        if !is_prime(m) || m < servers.len() as u64 || usize::try_from(m).is_err() {
            return Err(RingError::TableSize(m));
        }
        let size = m as usize;
        let perms: Vec<(u64, u64)> = servers
            .iter()
            .map(|&id| {
                let h = fmix64(u64::from(id) ^ 0x6a09_e667_f3bc_c908);
                let offset = h % m;
                let skip = fmix64(h ^ 0xbb67_ae85_84ca_a73b) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; servers.len()];
        let mut table = vec![ServerId::MAX; size];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                let mut c = ((u128::from(offset) + u128::from(next[i]) * u128::from(skip))
                    % u128::from(m)) as usize;
                while table[c] != ServerId::MAX {
                    next[i] += 1;
                    c = ((u128::from(offset) + u128::from(next[i]) * u128::from(skip))
                        % u128::from(m)) as usize;
                }
                table[c] = servers[i];
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Ok(Self { table, servers })
    }

    #[inline]
    fn position(&self, key: u64) -> usize {
        (fmix64(key) % self.table.len() as u64) as usize
    }

    /// The server of `key`.
    #[inline]
    pub fn lookup(&self, key: u64) -> Option<ServerId> {
        self.table.get(self.position(key)).copied()
    }

    /// The key's server, then the other servers in the order they appear
    /// walking the table forward: where a retry or a bounded-load spill goes.
    pub fn candidates(&self, key: u64) -> MaglevCandidates<'_> {
        MaglevCandidates {
            maglev: self,
            start: self.position(key),
            step: 0,
            seen: Vec::new(),
        }
    }

    /// Server ids, ascending.
    pub fn servers(&self) -> &[ServerId] {
        &self.servers
    }

    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// Table entries owned by each server, in [`servers`](Self::servers) order.
    pub fn shares(&self) -> Vec<usize> {
        self.servers
            .iter()
            .map(|s| self.table.iter().filter(|t| *t == s).count())
            .collect()
    }
}

/// Iterator of [`Maglev::candidates`]; allocation-free for the first item.
#[derive(Debug)]
pub struct MaglevCandidates<'a> {
    maglev: &'a Maglev,
    start: usize,
    step: usize,
    seen: Vec<ServerId>,
}

impl Iterator for MaglevCandidates<'_> {
    type Item = ServerId;

    fn next(&mut self) -> Option<ServerId> {
        let table = &self.maglev.table;
        while self.step < table.len() && self.seen.len() < self.maglev.servers.len() {
            let id = table[(self.start + self.step) % table.len()];
            self.step += 1;
            if !self.seen.contains(&id) {
                self.seen.push(id);
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shares_differ_by_at_most_one_round() {
        for n in 1..=10u32 {
            let ids: Vec<_> = (1..=n).collect();
            let m = Maglev::build(&ids).expect("build");
            let shares = m.shares();
            let (min, max) = (
                shares.iter().min().copied().unwrap_or(0),
                shares.iter().max().copied().unwrap_or(0),
            );
            assert!(max - min <= 1, "n = {n}: {shares:?}");
        }
    }

    #[test]
    fn rejects_bad_sizes_and_empty_sets() {
        assert_eq!(Maglev::build(&[]).err(), Some(RingError::Empty));
        assert_eq!(
            Maglev::with_table_size(&[1, 2], 100).err(),
            Some(RingError::TableSize(100))
        );
        assert_eq!(
            Maglev::with_table_size(&[1, 2, 3], 2).err(),
            Some(RingError::TableSize(2))
        );
        assert!(Maglev::with_table_size(&[1, 2, 3], 7).is_ok());
    }

    #[test]
    fn candidates_cover_every_server_once() {
        let m = Maglev::build(&[4, 9, 1, 7]).expect("build");
        for key in 0..500 {
            let c: Vec<_> = m.candidates(key).collect();
            assert_eq!(c[0], m.lookup(key).expect("lookup"));
            let mut s = c.clone();
            s.sort_unstable();
            assert_eq!(s, vec![1, 4, 7, 9]);
        }
    }
}
