//! A lock-free latency histogram: fixed buckets of relaxed atomics, so the
//! data path records a latency in a few nanoseconds with no lock and no
//! allocation. One lives in [`Metrics`](crate::metrics::Metrics) for the
//! whole pool and one on each replica; `/lb/metrics` exports them as
//! Prometheus histograms and `/lb/stats` as raw counts, from which the
//! dashboard derives percentiles over a recent window (as Prometheus'
//! `histogram_quantile` does from bucket deltas).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;

/// Upper bounds (seconds) of the buckets; a last, implicit one is `+Inf`.
/// Fine at the low end, where a loopback request's latency sits.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Counts per bucket (not cumulative) and the sum of what was observed.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramCounts {
    /// Per bucket, not cumulative; the last is above every bound.
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum_s: f64,
}

impl LatencyHistogram {
    #[inline]
    pub fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn counts(&self) -> HistogramCounts {
        HistogramCounts {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_s: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl HistogramCounts {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count in that bucket)`, `+Inf` last: what an exporter
    /// encodes.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_lands_in_its_first_bound_at_or_above() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100)); // on the first bound
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60)); // above every bound
        let c = h.counts();
        assert_eq!(c.counts[0], 1);
        assert_eq!(c.counts[2], 1, "0.3 ms is in the 0.5 ms bucket");
        assert_eq!(c.counts[BUCKETS.len()], 1);
        assert_eq!(c.count(), 3);
        assert!((c.sum_s - 60.0004).abs() < 1e-9, "{}", c.sum_s);
        let b = c.buckets();
        assert_eq!(b.len(), BUCKETS.len() + 1);
        assert_eq!(b[BUCKETS.len()], (f64::INFINITY, 1));
    }
}
