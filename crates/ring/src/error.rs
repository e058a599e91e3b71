//! The ring's errors: data a caller can match on, never strings to parse.

use crate::hash::ServerId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The ring has no server to map a key to.
    #[error("the ring has no servers")]
    Empty,
    /// Placing the virtual nodes needs more free slots than there are.
    #[error("the ring cannot hold the virtual nodes: {needed} needed, {slots} slots")]
    Full { slots: u64, needed: u64 },
    #[error("a ring needs at least one slot")]
    ZeroSlots,
    #[error("a server needs at least one virtual node")]
    ZeroVnodes,
    #[error("server {0} is already on the ring")]
    DuplicateServer(ServerId),
    #[error("server {0} is not on the ring")]
    UnknownServer(ServerId),
    #[error("the Maglev table size {0} must be a prime at least as large as the number of servers")]
    TableSize(u64),
    #[error("unknown hash preset '{0}' (spec, spec-v1, fmix64, xxh3)")]
    UnknownPreset(String),
    #[error("bounded-load slack must be a positive finite number, got {0}")]
    InvalidEpsilon(String),
}
