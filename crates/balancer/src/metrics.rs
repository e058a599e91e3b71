//! Counters of the data path, exposed in Prometheus text at `/lb/metrics`.
//!
//! Plain relaxed atomics: a few nanoseconds a request, no lock, no
//! allocation. Per-replica counters live on each `Replica`.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::pool::Snapshot;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses: [AtomicU64; 5],
    pub retries: AtomicU64,
    pub connect_errors: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub no_replica: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    #[inline]
    pub fn response(&self, status: http::StatusCode, latency: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# TYPE lb_requests_total counter\nlb_requests_total {}",
            get(&self.requests)
        );
        let _ = writeln!(out, "# TYPE lb_responses_total counter");
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "lb_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        for (name, c) in [
            ("lb_retries_total", &self.retries),
            ("lb_upstream_connect_errors_total", &self.connect_errors),
            ("lb_upstream_errors_total", &self.upstream_errors),
            ("lb_upstream_timeouts_total", &self.timeouts),
            ("lb_no_replica_total", &self.no_replica),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", get(c));
        }
        let _ = writeln!(out, "# TYPE lb_upstream_latency_seconds histogram");
        let mut cumulative = 0;
        for (i, c) in self.latency_buckets.iter().enumerate() {
            cumulative += get(c);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = writeln!(
                out,
                "lb_upstream_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "lb_upstream_latency_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "lb_upstream_latency_seconds_count {cumulative}");
        for (metric, kind) in [
            ("lb_replica_in_flight", "gauge"),
            ("lb_replica_served_total", "counter"),
            ("lb_replica_failures_total", "counter"),
            ("lb_replica_up", "gauge"),
        ] {
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for r in &snapshot.replicas {
                let value = match metric {
                    "lb_replica_in_flight" => r.in_flight(),
                    "lb_replica_served_total" => r.served(),
                    "lb_replica_failures_total" => r.failures(),
                    _ => u64::from(r.is_available()),
                };
                let _ = writeln!(
                    out,
                    "{metric}{{replica=\"{}\",id=\"{}\"}} {value}",
                    r.name, r.id
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.response(http::StatusCode::OK, Duration::from_micros(300));
        m.response(http::StatusCode::BAD_GATEWAY, Duration::from_secs(10));
        let snap = Snapshot {
            replicas: Vec::new(),
            policy: std::sync::Arc::new(crate::policy::RandomPolicy),
        };
        let text = m.render(&snap);
        assert!(
            text.contains("lb_responses_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("lb_responses_total{class=\"5xx\"} 1"));
        assert!(text.contains("lb_upstream_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("lb_upstream_latency_seconds_bucket{le=\"+Inf\"} 2"));
    }
}
