//! Consistent hashing for the load balancer: pure, synchronous, no I/O.
//!
//! - [`SlottedRing`]: the spec's ring (M slots, K virtual nodes a server,
//!   quadratic probing) with pluggable [`HashFn`]s; [`HashPreset::Spec`]
//!   reproduces the spec exactly, skew and all.
//! - [`Maglev`]: the ring that balances well (max/mean within about 1%).
//! - [`BoundedLoad`]: consistent hashing with bounded loads over either
//!   ring's candidate order.
//!
//! ```
//! use ring::{HashPreset, Maglev, RingConfig, SlottedRing};
//!
//! // The spec's ring with servers 1, 2, 3.
//! let mut spec = SlottedRing::build(RingConfig::default(), [1, 2, 3])?;
//! assert_eq!(spec.slots_of(1)[..3], [26, 29, 34]); // Phi(1, j) = j^2 + 2j + 26
//! let server = spec.lookup(123_456).expect("three servers");
//! // Where a retry goes: the next distinct servers clockwise.
//! let order: Vec<_> = spec.candidates(123_456).collect();
//! assert_eq!(order[0], server);
//! assert_eq!(order.len(), 3);
//! // Adding a server moves keys only to it.
//! spec.add(4)?;
//! let moved = spec.lookup(123_456).expect("four servers");
//! assert!(moved == server || moved == 4);
//!
//! // Maglev: even and stable.
//! let maglev = Maglev::build(&[1, 2, 3])?;
//! assert!(maglev.lookup(42).is_some());
//!
//! // The same ring with a strong hash instead of the spec's quadratic one.
//! let config = RingConfig { preset: "xxh3".parse()?, ..RingConfig::default() };
//! let strong = SlottedRing::build(config, [1, 2, 3])?;
//! assert!(strong.lookup(42).is_some());
//! # Ok::<(), ring::RingError>(())
//! ```

mod bounded;
mod error;
mod hash;
mod maglev;
mod slotted;

pub use bounded::BoundedLoad;
pub use error::RingError;
pub use hash::{HashFn, HashPreset, ServerId, fmix64, key_from_bytes};
pub use maglev::{DEFAULT_TABLE_SIZE, Maglev, MaglevCandidates};
pub use slotted::{Candidates, RingConfig, SlottedRing};
