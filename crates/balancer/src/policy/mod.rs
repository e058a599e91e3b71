//! Selection policies: which replica gets the next request.
//!
//! A policy is *built* for a set of replicas on the control path (a ring
//! computes its table there) and then *asked* on the hot path, once per
//! attempt, for a replica index in that set. The set is the pool's current
//! members, including ones that are down: a policy skips replicas that are
//! not [`Pick::usable`], so a hashing policy keeps every key's place while a
//! replica is briefly out and maps it exactly as before once it is back, and
//! a retry naturally lands on a *different* replica (Envoy #27317).
//!
//! Adding a policy is one type implementing [`Policy`] and one line in
//! [`REGISTRY`]; library users can also hand a policy to the balancer directly
//! (see `Balancer::with_policy`).

mod hashing;
mod least;
mod random;
mod round_robin;

use std::{fmt::Debug, str::FromStr, sync::Arc};

use crate::replica::Replica;

pub use hashing::{BoundedLoadPolicy, MaglevPolicy, RingPolicy};
pub use least::{LeastConnections, PowerOfTwoChoices};
pub use random::RandomPolicy;
pub use round_robin::{RoundRobin, WeightedRoundRobin};

/// What a policy sees when it picks.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The request's hash key (see `--key`).
    pub key: u64,
    /// The members, sorted by ring id; the index into this slice is the answer.
    pub replicas: &'a [Arc<Replica>],
    /// Indices already tried for this request (a retry must go elsewhere).
    pub tried: &'a [usize],
}

impl Pick<'_> {
    /// Whether `index` may take this request: healthy and not already tried.
    #[inline]
    pub fn usable(&self, index: usize) -> bool {
        self.replicas.get(index).is_some_and(|r| r.is_available()) && !self.tried.contains(&index)
    }

    /// Usable indices in index order, starting at `start` (modulo the
    /// member count) and wrapping once around: a walk that is fair when all
    /// are usable and always ends when some are not.
    #[inline]
    pub fn usable_from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let n = self.replicas.len();
        (0..n)
            .map(move |step| (start.wrapping_add(step)) % n)
            .filter(move |&i| self.usable(i))
    }
}

/// Why a policy cannot be built for a set of replicas.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy '{0}' (known: {known})", known = names().join(", "))]
    Unknown(String),
    #[error("the ring cannot hold these replicas: {0}")]
    Ring(#[from] ring::RingError),
    #[error("invalid policy option: {0}")]
    Option(String),
}

/// A selection policy. Implementations must be cheap to call: no locks, no
/// allocation, no I/O in [`Policy::pick`].
pub trait Policy: Send + Sync + Debug + 'static {
    /// The name shown at `/lb/status`.
    fn name(&self) -> &'static str;

    /// The index of the replica for this request, or `None` when no replica
    /// is usable.
    fn pick(&self, pick: &Pick<'_>) -> Option<usize>;

    /// A policy prepared for a new member set (sorted by id). Stateless
    /// policies keep the default and are reused as they are.
    fn rebuild(&self, _replicas: &[Arc<Replica>]) -> Result<Option<Arc<dyn Policy>>, PolicyError> {
        Ok(None)
    }

    /// Each member's share of the hash space as `(ring id, fraction)`, for
    /// hashing policies (shown by `/lb/ring` and the dashboard); `None`
    /// for policies that do not hash.
    fn shares(&self) -> Option<Vec<(crate::replica::ReplicaId, f64)>> {
        None
    }
}

/// Everything a policy may be configured with.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub ring: ring::RingConfig,
    /// Slack of consistent hashing with bounded loads.
    pub bounded_eps: f64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            ring: ring::RingConfig::default(),
            bounded_eps: 0.25,
        }
    }
}

type Constructor = fn(&PolicyOptions) -> Result<Arc<dyn Policy>, PolicyError>;

/// Every policy `--policy` accepts: name, one-line description, constructor.
/// A new policy is one more line here.
pub const REGISTRY: &[(&str, &str, Constructor)] = &[
    (
        "maglev",
        "Maglev consistent hashing (65537-entry table): even and stable",
        |_| Ok(Arc::new(MaglevPolicy::default())),
    ),
    (
        "ring",
        "the spec's slotted ring (M slots, K vnodes, --hash-preset)",
        |o| Ok(Arc::new(RingPolicy::new(o.ring)?)),
    ),
    (
        "bounded-load",
        "consistent hashing with bounded loads (Mirrokni et al.)",
        |o| Ok(Arc::new(BoundedLoadPolicy::new(o.bounded_eps)?)),
    ),
    ("round-robin", "each replica in turn", |_| {
        Ok(Arc::new(RoundRobin::default()))
    }),
    (
        "weighted-round-robin",
        "smooth weighted round robin (--weight NAME=W)",
        |_| Ok(Arc::new(WeightedRoundRobin::default())),
    ),
    ("least-connections", "fewest requests in flight", |_| {
        Ok(Arc::new(LeastConnections::default()))
    }),
    (
        "p2c",
        "power of two random choices, fewer in flight wins",
        |_| Ok(Arc::new(PowerOfTwoChoices)),
    ),
    ("random", "uniformly random", |_| Ok(Arc::new(RandomPolicy))),
];

/// The policy used when none is named: balances well and keeps affinity.
pub const DEFAULT_POLICY: &str = "maglev";

/// Names of every registered policy.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(name, _, _)| *name).collect()
}

/// Builds the policy registered under `name`.
pub fn from_name(name: &str, options: &PolicyOptions) -> Result<Arc<dyn Policy>, PolicyError> {
    let (_, _, make) = REGISTRY
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| PolicyError::Unknown(name.to_owned()))?;
    make(options)
}

/// A policy ready for a member set: `rebuild` applied, or the policy itself.
pub fn prepared(
    policy: &Arc<dyn Policy>,
    replicas: &[Arc<Replica>],
) -> Result<Arc<dyn Policy>, PolicyError> {
    Ok(policy.rebuild(replicas)?.unwrap_or_else(|| policy.clone()))
}

/// Where the hash key comes from (`--key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A random 6-digit request id per request, as the spec does.
    Random,
    ClientIp,
    Path,
    Header(http::HeaderName),
    Cookie(String),
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(Self::Random),
            "client-ip" => Ok(Self::ClientIp),
            "path" => Ok(Self::Path),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    http::HeaderName::from_str(name)
                        .map(Self::Header)
                        .map_err(|_| format!("'{name}' is not a valid header name"))
                } else if let Some(name) = s.strip_prefix("cookie:").filter(|n| !n.is_empty()) {
                    // A cookie name is a token (RFC 6265 4.1.1): any other
                    // name could never match, and every request would get
                    // a random key without a word said.
                    if name.bytes().all(crate::token::is_tchar) {
                        Ok(Self::Cookie(name.to_owned()))
                    } else {
                        Err(format!("'{name}' is not a valid cookie name"))
                    }
                } else {
                    Err(format!(
                        "unknown key '{s}' (random, client-ip, path, header:NAME, cookie:NAME)"
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Random => f.write_str("random"),
            Self::ClientIp => f.write_str("client-ip"),
            Self::Path => f.write_str("path"),
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl KeySource {
    /// The hash key of a request. A request without the header or cookie
    /// named falls back to a random key rather than piling onto one replica.
    pub fn key(&self, parts: &http::request::Parts, client: std::net::IpAddr) -> u64 {
        let bytes_key = |b: &[u8]| Some(ring::key_from_bytes(b));
        let key = match self {
            Self::Random => None,
            Self::ClientIp => match client {
                std::net::IpAddr::V4(v4) => bytes_key(&v4.octets()),
                std::net::IpAddr::V6(v6) => bytes_key(&v6.octets()),
            },
            Self::Path => bytes_key(parts.uri.path().as_bytes()),
            // A numeric value is the request id itself, as the spec's ids
            // are, so `--key header:x-request-id` reproduces the spec's
            // mapping of known ids; anything else is hashed.
            Self::Header(name) => parts.headers.get(name).and_then(|v| {
                std::str::from_utf8(v.as_bytes())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| bytes_key(v.as_bytes()))
            }),
            Self::Cookie(name) => {
                cookie(&parts.headers, name).and_then(|v| bytes_key(v.as_bytes()))
            }
        };
        key.unwrap_or_else(|| fastrand::u64(100_000..=999_999))
    }
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the policies' unit tests.
    use super::*;

    pub fn replicas(n: u32) -> Vec<Arc<Replica>> {
        (1..=n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 10_000 + i).parse().expect("addr");
                Arc::new(Replica::new(
                    crate::replica::generated_name(i),
                    i,
                    addr,
                    1,
                    0,
                ))
            })
            .collect()
    }

    /// Counts picks per index over `n` requests with random keys.
    pub fn spread(policy: &dyn Policy, replicas: &[Arc<Replica>], n: usize) -> Vec<usize> {
        let mut counts = vec![0; replicas.len()];
        for _ in 0..n {
            let pick = Pick {
                key: fastrand::u64(..),
                replicas,
                tried: &[],
            };
            if let Some(i) = policy.pick(&pick) {
                counts[i] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_policy_builds_and_skips_unusable_replicas() {
        let replicas = testing::replicas(4);
        replicas[1].set_health(crate::replica::Health::Down);
        for name in names() {
            let policy = from_name(name, &PolicyOptions::default()).expect("builds");
            let policy = prepared(&policy, &replicas).expect("prepared");
            for key in 0..500 {
                let tried = [2];
                let pick = Pick {
                    key,
                    replicas: &replicas,
                    tried: &tried,
                };
                let i = policy.pick(&pick).expect("a usable replica exists");
                assert!(i != 1 && i != 2, "{name} picked unusable replica {i}");
            }
        }
    }

    #[test]
    fn no_usable_replica_means_none() {
        let replicas = testing::replicas(2);
        for r in &replicas {
            r.set_health(crate::replica::Health::Down);
        }
        for name in names() {
            let policy = prepared(
                &from_name(name, &PolicyOptions::default()).expect("builds"),
                &replicas,
            )
            .expect("prepared");
            let pick = Pick {
                key: 7,
                replicas: &replicas,
                tried: &[],
            };
            assert_eq!(policy.pick(&pick), None, "{name}");
            let pick = Pick {
                key: 7,
                replicas: &[],
                tried: &[],
            };
            assert_eq!(policy.pick(&pick), None, "{name} on an empty pool");
        }
    }

    #[test]
    fn unknown_policy_is_a_clear_error() {
        let err = from_name("fastest", &PolicyOptions::default()).expect_err("unknown");
        assert!(err.to_string().contains("round-robin"), "{err}");
    }

    #[test]
    fn key_sources_parse_and_extract() {
        let req = http::Request::builder()
            .uri("/a/b?x=1")
            .header("x-user", "alice")
            .header("cookie", "theme=dark; session=abc")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let ip: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
        let k = |s: &str| s.parse::<KeySource>().expect("parses").key(&parts, ip);
        assert_eq!(k("path"), ring::key_from_bytes(b"/a/b"));
        assert_eq!(k("header:x-user"), ring::key_from_bytes(b"alice"));
        let numeric = http::Request::builder()
            .header("x-id", "123456")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        assert_eq!(
            "header:x-id"
                .parse::<KeySource>()
                .expect("parses")
                .key(&numeric, ip),
            123_456
        );
        assert_eq!(k("cookie:session"), ring::key_from_bytes(b"abc"));
        assert_eq!(k("client-ip"), ring::key_from_bytes(&[10, 1, 2, 3]));
        assert!((100_000..=999_999).contains(&k("random")));
        assert!((100_000..=999_999).contains(&k("header:missing")));
        assert!("header:".parse::<KeySource>().is_err());
        assert!("cookie:".parse::<KeySource>().is_err());
        for bad in ["cookie:a=b", "cookie:a;b", "cookie: a", "cookie:a,b"] {
            assert!(bad.parse::<KeySource>().is_err(), "{bad}");
        }
        assert!("ip".parse::<KeySource>().is_err());
    }
}
