//! `/lb/stats` and `/lb/ring`: the raw numbers the dashboard turns into
//! rates, percentiles and charts. Counters are cumulative and histograms
//! raw bucket counts, so any poller can take differences over its own
//! window (requests/s, p50/p99 of the last seconds) without the balancer
//! keeping per-client state.

use serde::Serialize;

use crate::{
    events::unix_ms,
    latency::{BUCKETS, HistogramCounts},
    metrics::Metrics,
    pool::Snapshot,
};

/// The body of `/lb/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// When these were read, Unix milliseconds.
    pub at_ms: u64,
    pub requests: u64,
    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Failures the clients caused (bad heads, broken or slow uploads).
    pub client_errors: u64,
    /// Failed attempts the replicas caused (refused, reset, timed out).
    pub replica_errors: u64,
    pub retries: u64,
    pub connections: u64,
    /// Upper bounds (seconds) of the histogram buckets; one more, `+Inf`,
    /// ends every `counts`.
    pub bounds: &'static [f64],
    pub latency: HistogramCounts,
    pub replicas: Vec<ReplicaStats>,
}

#[derive(Debug, Serialize)]
pub struct ReplicaStats {
    pub name: String,
    pub id: u32,
    pub served: u64,
    pub failures: u64,
    pub in_flight: u64,
    pub latency: HistogramCounts,
}

impl Stats {
    pub fn new(m: &Metrics, snapshot: &Snapshot) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let sum = |cs: &[&std::sync::atomic::AtomicU64]| cs.iter().map(|c| c.load(Relaxed)).sum();
        Self {
            at_ms: unix_ms(),
            requests: m.requests.load(Relaxed),
            responses: m.responses(),
            client_errors: sum(&[
                &m.client_bad_heads,
                &m.client_body_errors,
                &m.client_body_timeouts,
            ]),
            replica_errors: sum(&[&m.connect_errors, &m.upstream_errors, &m.timeouts]),
            retries: m.retries.load(Relaxed),
            connections: m.connections.load(Relaxed),
            bounds: &BUCKETS,
            latency: m.latency.counts(),
            replicas: snapshot
                .replicas
                .iter()
                .map(|r| ReplicaStats {
                    name: r.name.clone(),
                    id: r.id,
                    served: r.served(),
                    failures: r.failures(),
                    in_flight: r.in_flight(),
                    latency: r.latency.counts(),
                })
                .collect(),
        }
    }
}

/// The body of `/lb/ring`.
#[derive(Debug, Serialize)]
pub struct Ring {
    pub policy: String,
    /// Whether the policy hashes keys (then `shares` is filled).
    pub hashing: bool,
    pub shares: Vec<Share>,
}

#[derive(Debug, Serialize)]
pub struct Share {
    pub name: String,
    pub id: u32,
    /// Fraction of the hash space (0..=1).
    pub share: f64,
}

impl Ring {
    pub fn new(snapshot: &Snapshot) -> Self {
        let shares = snapshot.policy.shares();
        Self {
            policy: snapshot.policy.name().to_owned(),
            hashing: shares.is_some(),
            shares: shares
                .unwrap_or_default()
                .into_iter()
                .map(|(id, share)| Share {
                    name: snapshot
                        .replicas
                        .iter()
                        .find(|r| r.id == id)
                        .map_or_else(String::new, |r| r.name.clone()),
                    id,
                    share,
                })
                .collect(),
        }
    }
}
