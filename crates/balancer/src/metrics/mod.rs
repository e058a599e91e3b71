//! Counters of the data path, exported at `/lb/metrics` by the Prometheus
//! project's `prometheus-client` crate ([`expose`]): Prometheus text by
//! default, OpenMetrics when the scrape asks for it.
//!
//! The counters are plain relaxed atomics: a few nanoseconds a request, no
//! lock, no allocation, and no label lookup on the hot path. Labelled
//! families (status class, per replica, failure cause) are assembled at
//! scrape time from those atomics, the replicas' own counters and the event
//! log, by a collector; so a replica that leaves the pool leaves the scrape.

pub mod expose;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use expose::{Format, render};

use crate::latency::LatencyHistogram;

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
    /// Client connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Client connections open now and parked: idle, held as their socket.
    pub connections_parked: AtomicU64,
    pub abandoning_connections: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
    /// Time from a request's arrival to its replica's response head.
    pub latency: LatencyHistogram,
}

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
        self.latency.observe(latency);
    }

    /// A client connection is open until the guard drops.
    pub fn connection_opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// A client connection is parked until the guard drops.
    pub fn connection_parked(&self) -> ParkedConnection<'_> {
        self.connections_parked.fetch_add(1, Ordering::Relaxed);
        ParkedConnection(self)
    }

    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses sent by status class (`[1xx, 2xx, 3xx, 4xx, 5xx]`).
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
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

/// A parked client connection, counted in `lb_connections_parked`.
#[derive(Debug)]
pub struct ParkedConnection<'a>(&'a Metrics);

impl Drop for ParkedConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_parked.fetch_sub(1, Ordering::Relaxed);
    }
}
