//! Counters of the data path, exposed in Prometheus text at `/lb/metrics`.
//!
//! Plain relaxed atomics: a few nanoseconds a request, no lock, no
//! allocation. Per-replica counters live on each `Replica`. What is
//! exported is listed in two tables ([`COUNTERS`], [`REPLICA_METRICS`]), so
//! a metric is one line with its name, help and value.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::{pool::Snapshot, replica::Replica};

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
    pub queue_timeouts: AtomicU64,
    pub stale_connections: AtomicU64,
    pub tunnels: AtomicU64,
    pub client_body_timeouts: AtomicU64,
    pub client_body_errors: AtomicU64,
    pub client_bad_heads: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicU64,
    pub abandoning_connections: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

type CounterOf = fn(&Metrics) -> &AtomicU64;
type ReplicaValue = fn(&Replica) -> u64;

/// The balancer-wide counters: name, help, field.
const COUNTERS: &[(&str, &str, CounterOf)] = &[
    (
        "lb_requests_total",
        "Requests received for replicas.",
        |m| &m.requests,
    ),
    (
        "lb_retries_total",
        "Attempts beyond the first, each on another replica.",
        |m| &m.retries,
    ),
    (
        "lb_upstream_connect_errors_total",
        "Attempts that could not connect to their replica.",
        |m| &m.connect_errors,
    ),
    (
        "lb_upstream_errors_total",
        "Attempts whose replica closed or reset the connection before answering.",
        |m| &m.upstream_errors,
    ),
    (
        "lb_upstream_timeouts_total",
        "Attempts whose replica did not answer within --response-timeout.",
        |m| &m.timeouts,
    ),
    (
        "lb_no_replica_total",
        "Requests answered 503 because no replica was usable.",
        |m| &m.no_replica,
    ),
    (
        "lb_queue_timeouts_total",
        "Attempts that found their replica at --max-conns-per-replica for --queue-timeout.",
        |m| &m.queue_timeouts,
    ),
    (
        "lb_stale_connections_total",
        "Pooled upstream connections found closed by their replica (not the replica's fault).",
        |m| &m.stale_connections,
    ),
    (
        "lb_tunnels_total",
        "Upgraded connections (WebSocket) tunnelled to a replica.",
        |m| &m.tunnels,
    ),
    (
        "lb_client_body_timeouts_total",
        "Requests whose body paused too long or came too slowly (the client's fault, 408).",
        |m| &m.client_body_timeouts,
    ),
    (
        "lb_client_body_errors_total",
        "Requests whose body was malformed or cut off (the client's fault, 400).",
        |m| &m.client_body_errors,
    ),
    (
        "lb_abandoning_connections_total",
        "Connections closed for abandoning most of their requests (HTTP/2 Rapid Reset).",
        |m| &m.abandoning_connections,
    ),
    (
        "lb_client_bad_heads_total",
        "Requests refused for their head: Host missing, twice or invalid (the client's fault, 400).",
        |m| &m.client_bad_heads,
    ),
];

/// The per-replica series: name, type, help, value.
const REPLICA_METRICS: &[(&str, &str, &str, ReplicaValue)] = &[
    (
        "lb_replica_in_flight",
        "gauge",
        "Requests in flight to the replica.",
        Replica::in_flight,
    ),
    (
        "lb_replica_served_total",
        "counter",
        "Requests the replica answered.",
        Replica::served,
    ),
    (
        "lb_replica_failures_total",
        "counter",
        "Failed requests and heartbeats of the replica.",
        Replica::failures,
    ),
    (
        "lb_replica_up",
        "gauge",
        "1 if the replica is in rotation.",
        |r| u64::from(r.is_available()),
    ),
];

impl Metrics {
    /// A response sent to a client, by status class.
    #[inline]
    pub fn response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Time from a request's arrival to its replica's response head (only
    /// requests a replica answered).
    #[inline]
    pub fn upstream_latency(&self, latency: Duration) {
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

    /// A client connection is open until the guard drops.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        for (name, help, counter) in COUNTERS {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", get(counter(self)));
        }
        head(
            &mut out,
            "lb_responses_total",
            "counter",
            "Responses sent to clients, by status class.",
        );
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "lb_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        head(
            &mut out,
            "lb_upstream_latency_seconds",
            "histogram",
            "Time from a request's arrival to its replica's response head.",
        );
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
        head(
            &mut out,
            "lb_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "lb_connections {}", get(&self.connections));
        for (name, kind, help, value) in REPLICA_METRICS {
            head(&mut out, name, kind, help);
            for r in &snapshot.replicas {
                let _ = writeln!(
                    out,
                    "{name}{{replica=\"{}\",id=\"{}\"}} {}",
                    r.name,
                    r.id,
                    value(r)
                );
            }
        }
        out
    }
}

/// An open client connection, counted in `lb_connections`.
#[derive(Debug)]
pub struct OpenConnection(std::sync::Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_only_upstream_answers() {
        let m = Metrics::default();
        m.response(http::StatusCode::OK);
        m.upstream_latency(Duration::from_micros(300));
        m.response(http::StatusCode::SERVICE_UNAVAILABLE);
        m.upstream_latency(Duration::from_secs(10));
        m.response(http::StatusCode::BAD_GATEWAY);
        let snap = Snapshot {
            replicas: crate::policy::testing::replicas(2),
            policy: std::sync::Arc::new(crate::policy::RandomPolicy),
        };
        let text = m.render(&snap);
        assert!(
            text.contains("lb_responses_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("lb_responses_total{class=\"5xx\"} 2"));
        assert!(text.contains("lb_upstream_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("lb_upstream_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("lb_replica_up{replica=\"server-2\",id=\"2\"} 1"));
        // Every series has its HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line
                .split(['{', ' '])
                .next()
                .expect("name")
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
