//! Hash functions for the slotted ring: H places a request, Phi places a
//! server's virtual node. The spec's quadratic functions are reproduced
//! exactly (presets `spec` and `spec-v1`) beside strong mixers (`fmix64`,
//! `xxh3`) that show what fixes the spec's skew.
//!
//! All arithmetic is exact for any `u64` input: the quadratic presets reduce
//! modulo M first and compute in `u128`, so no key can overflow or panic.

use std::{fmt, str::FromStr};

use crate::RingError;

/// A server's integer id on the ring (`server-1` is 1).
pub type ServerId = u32;

/// The two hash functions of a slotted ring.
pub trait HashFn: Send + Sync + fmt::Debug {
    /// H: the slot of a request key, in `0..slots`.
    fn request_slot(&self, key: u64, slots: u64) -> u64;
    /// Phi: the home slot of virtual node `vnode` of `server`, in `0..slots`.
    fn vnode_slot(&self, server: ServerId, vnode: u32, slots: u64) -> u64;
}

/// The built-in hash functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum HashPreset {
    /// H(i) = i^2 + 2i + 17, Phi(i, j) = i^2 + j^2 + 2j + 25 (mod M).
    #[default]
    Spec,
    /// The older text: H(i) = i + 2i^2 + 17, Phi(i, j) = i + j + 2j^2 + 25.
    SpecV1,
    /// murmur3's 64-bit finaliser: every input bit affects every output bit.
    Fmix64,
    /// xxh3-64 of the little-endian bytes.
    Xxh3,
}

impl HashPreset {
    pub const ALL: [Self; 4] = [Self::Spec, Self::SpecV1, Self::Fmix64, Self::Xxh3];

    pub fn name(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::SpecV1 => "spec-v1",
            Self::Fmix64 => "fmix64",
            Self::Xxh3 => "xxh3",
        }
    }
}

impl fmt::Display for HashPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashPreset {
    type Err = RingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| RingError::UnknownPreset(s.to_owned()))
    }
}

/// `(a * x^2 + b * x + c) mod m`, exact for every `x`.
#[inline]
fn quadratic(x: u64, a: u128, b: u128, c: u128, m: u64) -> u128 {
    let m = u128::from(m);
    let r = u128::from(x) % m;
    (a * r % m * r + b * r + c) % m
}

/// murmur3's fmix64.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The `u64` key of arbitrary bytes (a client IP, a header, a path).
#[inline]
pub fn key_from_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[inline]
fn narrow(x: u128) -> u64 {
    // Always < m <= u64::MAX by construction.
    u64::try_from(x).unwrap_or(u64::MAX)
}

impl HashFn for HashPreset {
    #[inline]
    fn request_slot(&self, key: u64, slots: u64) -> u64 {
        match self {
            Self::Spec => narrow(quadratic(key, 1, 2, 17, slots)),
            Self::SpecV1 => narrow(quadratic(key, 2, 1, 17, slots)),
            Self::Fmix64 => fmix64(key) % slots,
            Self::Xxh3 => xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes()) % slots,
        }
    }

    #[inline]
    fn vnode_slot(&self, server: ServerId, vnode: u32, slots: u64) -> u64 {
        let m = u128::from(slots);
        let (i, j) = (u64::from(server), u64::from(vnode));
        match self {
            // i^2 + (j^2 + 2j + 25)
            Self::Spec => {
                narrow((quadratic(i, 1, 0, 0, slots) + quadratic(j, 1, 2, 25, slots)) % m)
            }
            // i + (2j^2 + j + 25)
            Self::SpecV1 => {
                narrow((quadratic(i, 0, 1, 0, slots) + quadratic(j, 2, 1, 25, slots)) % m)
            }
            Self::Fmix64 => fmix64(fmix64(i) ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % slots,
            Self::Xxh3 => {
                let mut bytes = [0u8; 8];
                bytes[..4].copy_from_slice(&server.to_le_bytes());
                bytes[4..].copy_from_slice(&vnode.to_le_bytes());
                xxhash_rust::xxh3::xxh3_64(&bytes) % slots
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_request_slots_by_hand() {
        let h = |i| HashPreset::Spec.request_slot(i, 512);
        // 0 + 0 + 17
        assert_eq!(h(0), 17);
        // 1 + 2 + 17 = 20
        assert_eq!(h(1), 20);
        // 100000^2 + 200000 + 17 = 10_000_200_017; 10_000_200_017 mod 512:
        // 512 * 19_531_640 = 10_000_199_680, remainder 337.
        assert_eq!(h(100_000), 337);
        // 123456: 123456^2 = 15_241_383_936; + 246_912 + 17 = 15_241_630_865;
        // 512 * 29_768_810 = 15_241_630_720, remainder 145.
        assert_eq!(h(123_456), 145);
    }

    #[test]
    fn spec_v1_by_hand() {
        // H(1) = 1 + 2 + 17 = 20; H(10) = 10 + 200 + 17 = 227
        assert_eq!(HashPreset::SpecV1.request_slot(1, 512), 20);
        assert_eq!(HashPreset::SpecV1.request_slot(10, 512), 227);
        // Phi(1, 0) = 1 + 0 + 0 + 25 = 26; Phi(2, 3) = 2 + 3 + 18 + 25 = 48
        assert_eq!(HashPreset::SpecV1.vnode_slot(1, 0, 512), 26);
        assert_eq!(HashPreset::SpecV1.vnode_slot(2, 3, 512), 48);
    }

    #[test]
    fn no_overflow_for_any_u64() {
        // u64::MAX = 2^64 - 1 = -1 (mod 512): H = 1 - 2 + 17 = 16.
        assert_eq!(HashPreset::Spec.request_slot(u64::MAX, 512), 16);
        // spec-v1: -1 + 2 * 1 + 17 = 18.
        assert_eq!(HashPreset::SpecV1.request_slot(u64::MAX, 512), 18);
        // The largest prime below 2^64 is 2^64 - 59, so u64::MAX = 58 (mod it):
        // H = 58^2 + 2 * 58 + 17 = 3364 + 116 + 17 = 3497.
        assert_eq!(HashPreset::Spec.request_slot(u64::MAX, u64::MAX - 58), 3497);
        // Phi(u32::MAX, u32::MAX) with M = 512: u32::MAX = -1 (mod 512):
        // 1 + 1 - 2 + 25 = 25.
        assert_eq!(HashPreset::Spec.vnode_slot(u32::MAX, u32::MAX, 512), 25);
        for p in HashPreset::ALL {
            assert!(p.vnode_slot(u32::MAX, u32::MAX, 512) < 512);
            assert!(p.request_slot(u64::MAX, 7) < 7);
            assert!(p.request_slot(u64::MAX, u64::MAX) < u64::MAX);
        }
    }

    #[test]
    fn names_round_trip() {
        for p in HashPreset::ALL {
            assert_eq!(p.name().parse::<HashPreset>(), Ok(p));
        }
        assert_eq!(
            "md5".parse::<HashPreset>(),
            Err(RingError::UnknownPreset("md5".into()))
        );
    }
}
