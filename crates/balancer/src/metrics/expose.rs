//! `/lb/metrics`: the counters encoded by `prometheus-client`, in the
//! Prometheus text format (0.0.4) or, when the scrape's `Accept` asks for
//! it, OpenMetrics 1.0. Every family has its `# HELP` and `# TYPE`; names
//! are given without `_total` and units, which the encoder appends.
//!
//! One [`Collector`] per scrape reads the atomics, the snapshot's replicas
//! and the event log, so the hot path never touches the registry.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::Metrics;
use crate::{
    events::{EventKind, EventLog},
    latency::HistogramCounts,
    pool::Snapshot,
    replica::{Health, Replica},
};

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, what `promtool check metrics` reads.
    Prometheus,
    /// OpenMetrics 1.0 text (`# EOF`-terminated, `# UNIT` lines).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics only when named.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes everything the balancer exports, in `format`.
pub fn render(
    metrics: &Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    events: &Arc<EventLog>,
    format: Format,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        metrics: metrics.clone(),
        snapshot,
        events: events.clone(),
    }));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

type CounterOf = fn(&Metrics) -> &std::sync::atomic::AtomicU64;
type ReplicaValue = fn(&Replica) -> u64;
/// A family of counters split by one `reason` label: `(reason, field)`.
type Reasons = &'static [(&'static str, CounterOf)];

/// Unlabelled balancer-wide counters: name (the encoder adds `_total`),
/// help, field.
const COUNTERS: &[(&str, &str, CounterOf)] = &[
    ("lb_requests", "Requests received for replicas.", |m| {
        &m.requests
    }),
    (
        "lb_retries",
        "Attempts beyond the first, each on another replica.",
        |m| &m.retries,
    ),
    (
        "lb_no_replica",
        "Requests answered 503 because no replica was usable.",
        |m| &m.no_replica,
    ),
    (
        "lb_queue_timeouts",
        "Attempts that found their replica at --max-conns-per-replica for --queue-timeout.",
        |m| &m.queue_timeouts,
    ),
    (
        "lb_stale_connections",
        "Pooled upstream connections found closed by their replica (no one's fault, retried).",
        |m| &m.stale_connections,
    ),
    (
        "lb_tunnels",
        "Upgraded connections (WebSocket) tunnelled to a replica.",
        |m| &m.tunnels,
    ),
    (
        "lb_connections_accepted",
        "Client connections accepted.",
        |m| &m.connections_accepted,
    ),
    (
        "lb_abandoning_connections",
        "Connections closed for abandoning most of their requests (HTTP/2 Rapid Reset).",
        |m| &m.abandoning_connections,
    ),
    (
        "lb_access_log_dropped",
        "Access-log lines dropped because the log writer fell behind.",
        |m| &m.access_log_dropped,
    ),
];

/// Failures by who caused them: `(family, help, [(reason, field)])`.
const CAUSES: &[(&str, &str, Reasons)] = &[
    (
        "lb_client_errors",
        "Requests that failed by the client's fault (never blamed on a replica), by reason.",
        &[
            ("body_timeout", |m| &m.client_body_timeouts),
            ("body_error", |m| &m.client_body_errors),
            ("bad_head", |m| &m.client_bad_heads),
        ],
    ),
    (
        "lb_upstream_errors",
        "Attempts that failed by their replica's fault (each feeds its passive health), by reason.",
        &[
            ("connect", |m| &m.connect_errors),
            ("reset", |m| &m.upstream_errors),
            ("timeout", |m| &m.timeouts),
        ],
    ),
];

/// Per-replica series: name, type, help, value.
const REPLICA_SERIES: &[(&str, MetricType, &str, ReplicaValue)] = &[
    (
        "lb_replica_in_flight",
        MetricType::Gauge,
        "Requests in flight to the replica.",
        Replica::in_flight,
    ),
    (
        "lb_replica_served",
        MetricType::Counter,
        "Requests the replica answered.",
        Replica::served,
    ),
    (
        "lb_replica_failures",
        MetricType::Counter,
        "Failed requests and heartbeats of the replica (its own fault).",
        Replica::failures,
    ),
    (
        "lb_replica_up",
        MetricType::Gauge,
        "1 if the replica is in rotation.",
        |r| u64::from(r.is_available()),
    ),
];

/// The events that take a replica out of rotation, as ejection reasons.
const EJECTIONS: [(&str, EventKind); 3] = [
    ("passive", EventKind::Suspect),
    ("heartbeat", EventKind::Down),
    ("exited", EventKind::Exited),
];

const HEALTHS: [(&str, Health); 4] = [
    ("up", Health::Up),
    ("suspect", Health::Suspect),
    ("down", Health::Down),
    ("draining", Health::Draining),
];

/// One scrape's view: read once, encoded once.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    events: Arc<EventLog>,
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let m = &*self.metrics;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, field) in COUNTERS {
            let d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(get(field(m))).encode(d)?;
        }
        let mut d = e.encode_descriptor(
            "lb_responses",
            "Responses sent to clients, by status class.",
            None,
            MetricType::Counter,
        )?;
        for (i, n) in m.responses().into_iter().enumerate() {
            let class = format!("{}xx", i + 1);
            ConstCounter::new(n).encode(d.encode_family(&[("class", class.as_str())])?)?;
        }
        for (family, help, reasons) in CAUSES {
            let mut d = e.encode_descriptor(family, help, None, MetricType::Counter)?;
            for (reason, field) in *reasons {
                let value = get(field(m));
                ConstCounter::new(value).encode(d.encode_family(&[("reason", *reason)])?)?;
            }
        }
        let mut d = e.encode_descriptor(
            "lb_ejections",
            "Times a replica was taken out of rotation: passive (a proxied request failed), \
             heartbeat (missed --fall checks), exited (its process or container ended).",
            None,
            MetricType::Counter,
        )?;
        for (reason, kind) in EJECTIONS {
            let n = self.events.count(kind);
            ConstCounter::new(n).encode(d.encode_family(&[("reason", reason)])?)?;
        }
        let mut d = e.encode_descriptor(
            "lb_replica_events",
            "Replica events recorded (as /lb/events shows them), by kind.",
            None,
            MetricType::Counter,
        )?;
        for kind in EventKind::ALL {
            let n = self.events.count(kind);
            ConstCounter::new(n).encode(d.encode_family(&[("kind", kind.as_str())])?)?;
        }
        let d = e.encode_descriptor(
            "lb_connections",
            "Client connections open now.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(get(&m.connections)).encode(d)?;
        let d = e.encode_descriptor(
            "lb_connections_parked",
            "Client connections open now and parked: idle over 1 s, held as their bare socket.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(get(&m.connections_parked)).encode(d)?;
        let mut d = e.encode_descriptor(
            "lb_pool_replicas",
            "Replicas in the pool, by health.",
            None,
            MetricType::Gauge,
        )?;
        for (label, health) in HEALTHS {
            let n = self
                .snapshot
                .replicas
                .iter()
                .filter(|r| r.health() == health)
                .count();
            ConstGauge::new(n as u64).encode(d.encode_family(&[("health", label)])?)?;
        }
        let d = e.encode_descriptor(
            "lb_upstream_latency",
            "Time from a request's arrival to its replica's response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram(d, &m.latency.counts())?;
        self.replicas(&mut e)
    }
}

impl Scrape {
    fn replicas(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let labels: Vec<[(&str, String); 2]> = self
            .snapshot
            .replicas
            .iter()
            .map(|r| [("replica", r.name.clone()), ("id", r.id.to_string())])
            .collect();
        for (name, kind, help, value) in REPLICA_SERIES {
            let mut d = e.encode_descriptor(name, help, None, *kind)?;
            for (r, labels) in self.snapshot.replicas.iter().zip(&labels) {
                let v = value(r);
                let m = d.encode_family(labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(v).encode(m)?,
                    _ => ConstGauge::new(v).encode(m)?,
                }
            }
        }
        let mut d = e.encode_descriptor(
            "lb_replica_latency",
            "Time from a request's arrival to the replica's response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (r, labels) in self.snapshot.replicas.iter().zip(&labels) {
            histogram(d.encode_family(labels)?, &r.latency.counts())?;
        }
        Ok(())
    }
}

fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder,
    counts: &HistogramCounts,
) -> fmt::Result {
    m.encode_histogram::<NoLabelSet>(counts.sum_s, counts.count(), &counts.buckets(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scrape(format: Format) -> String {
        let m = Arc::new(Metrics::default());
        m.response(http::StatusCode::OK);
        m.upstream_latency(Duration::from_micros(300));
        m.response(http::StatusCode::SERVICE_UNAVAILABLE);
        m.upstream_latency(Duration::from_secs(60));
        m.response(http::StatusCode::BAD_GATEWAY);
        Metrics::inc(&m.client_body_errors);
        Metrics::inc(&m.connect_errors);
        let snap = Arc::new(Snapshot {
            replicas: crate::policy::testing::replicas(2),
            policy: Arc::new(crate::policy::RandomPolicy),
        });
        snap.replicas[0].latency.observe(Duration::from_millis(2));
        let events = Arc::new(EventLog::default());
        events.record(EventKind::Exited, "server-1", "test");
        render(&m, snap, &events, format).expect("encodes")
    }

    #[test]
    fn prometheus_text_has_help_type_and_cumulative_buckets() {
        let text = scrape(Format::Prometheus);
        for want in [
            "lb_responses_total{class=\"2xx\"} 1",
            "lb_responses_total{class=\"5xx\"} 2",
            "lb_upstream_latency_seconds_bucket{le=\"0.0005\"} 1",
            "lb_upstream_latency_seconds_bucket{le=\"10\"} 1",
            "lb_upstream_latency_seconds_bucket{le=\"+Inf\"} 2",
            "lb_upstream_latency_seconds_count 2",
            "lb_replica_up{replica=\"server-2\",id=\"2\"} 1",
            "lb_replica_latency_seconds_bucket{replica=\"server-1\",id=\"1\",le=\"0.0025\"} 1",
            "lb_replica_latency_seconds_count{replica=\"server-2\",id=\"2\"} 0",
            "lb_client_errors_total{reason=\"body_error\"} 1",
            "lb_upstream_errors_total{reason=\"connect\"} 1",
            "lb_ejections_total{reason=\"exited\"} 1",
            "lb_pool_replicas{health=\"up\"} 2",
            "# TYPE lb_requests_total counter",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("# EOF"));
        // Every sample's family has its HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }

    #[test]
    fn openmetrics_when_asked() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Prometheus
        );
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
        assert_eq!(Format::from_accept(Some(accept)), Format::OpenMetrics);
        let text = scrape(Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE lb_requests counter"), "{text}");
        assert!(text.contains("# UNIT lb_upstream_latency_seconds seconds"));
    }
}
