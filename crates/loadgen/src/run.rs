//! One load run: N requests, at most C in flight, on keep-alive connections.
//!
//! C workers pull request numbers from one atomic counter, so the run ends
//! exactly after N requests however fast each worker is. Each worker keeps
//! its own HDR histogram and counters (no shared lock on the hot path) and
//! they are merged at the end. The replica that answered is read from the
//! spec's reply body, `Hello from Server: <id>`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub target: String,
    pub path: String,
    pub requests: u64,
    pub concurrency: usize,
    pub method: http::Method,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Keep a per-request trace (index, start, latency, outcome).
    pub trace: bool,
    /// Send header NAME with the request's 6-digit id ([`request_id`]) as
    /// value: a deterministic hash key for the balancer's `--key header:NAME`.
    pub key_header: Option<String>,
    /// Show a progress bar (only honoured when stderr is a terminal).
    pub progress: bool,
    /// Pace the run: request i starts no earlier than i / rate seconds in
    /// (an open-loop schedule, for runs that must span a failure).
    pub rate: Option<f64>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            target: "http://127.0.0.1:5000".into(),
            path: "/home".into(),
            requests: 10_000,
            concurrency: 64,
            method: http::Method::GET,
            timeout: Duration::from_secs(5),
            trace: false,
            key_header: None,
            progress: false,
            rate: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid target URL '{0}': {1}")]
    Url(String, String),
    #[error("target {target} is not answering: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("concurrency must be at least 1")]
    Concurrency,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One request of a traced run.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TraceEntry {
    pub index: u64,
    /// Start, in ms since the run began.
    pub start_ms: f64,
    /// Start as Unix time in ms (fractional), to line up with the balancer's
    /// events.
    pub start_unix_ms: f64,
    pub latency_ms: f64,
    /// HTTP status, or 0 for a transport error.
    pub status: u16,
    pub replica: Option<String>,
}

/// The outcome of a run; `--json` prints it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    pub rps: f64,
    pub per_replica: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    pub status_counts: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEntry>>,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(concurrency: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    per_replica: BTreeMap<String, u64>,
    status_counts: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    trace: Vec<TraceEntry>,
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// The 6-digit request id of request `index`: `100000 + (7919 * index mod
/// 900000)`, distinct for 900,000 consecutive indices (7919 is prime and
/// shares no factor with 900000), spread over the spec's id range.
pub fn request_id(index: u64) -> u64 {
    100_000 + (index % 900_000) * 7919 % 900_000
}

/// The replica id in a `/home` reply.
pub fn replica_id(body: &[u8]) -> Option<String> {
    backend::HomeReply::replica_id(body)
}

/// Unix time in ms, with the sub-millisecond part kept: recovery times are
/// differences of a few ms, so flooring each term would skew them.
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Checks the target answers at all, so a dead target is a clear error
/// rather than N timeouts.
pub async fn probe(target: &str, timeout: Duration) -> Result<(), LoadError> {
    let uri: http::Uri = format!("{target}/")
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(target.into(), e.to_string()))?;
    let authority = uri
        .authority()
        .ok_or_else(|| LoadError::Url(target.into(), "no host:port".into()))?
        .to_string();
    let connect = tokio::net::TcpStream::connect(&authority);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(LoadError::Unreachable {
            target: target.into(),
            reason: e.to_string(),
        }),
        Err(_) => Err(LoadError::Unreachable {
            target: target.into(),
            reason: format!("no connection within {timeout:?}"),
        }),
    }
}

/// Runs the load and reports.
pub async fn run(config: RunConfig) -> Result<Report, LoadError> {
    if config.concurrency == 0 {
        return Err(LoadError::Concurrency);
    }
    let target = config.target.trim_end_matches('/').to_owned();
    let uri: http::Uri = format!("{target}{}", config.path)
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(target.clone(), e.to_string()))?;
    probe(&target, Duration::from_secs(3)).await?;

    let client = client(config.concurrency);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(&config);
    let started = Instant::now();
    let start_unix = unix_ms();
    let mut workers = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        let (client, next, done, uri, config) = (
            client.clone(),
            next.clone(),
            done.clone(),
            uri.clone(),
            config.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut tally = Tally::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.requests {
                    break;
                }
                // A paced request that is overdue because its worker was
                // still busy with the previous reply counts from when it was
                // due: otherwise a stall hides the very delay it causes
                // (coordinated omission). One that was on time counts from
                // when it went out, so the timer's own lateness (up to a
                // millisecond) is not charged to the system under test.
                let due = config
                    .rate
                    .filter(|r| *r > 0.0)
                    .map(|rate| started + Duration::from_secs_f64(index as f64 / rate));
                let sent = match due {
                    Some(at) if at > Instant::now() => {
                        tokio::time::sleep_until(at.into()).await;
                        Instant::now()
                    }
                    Some(at) => at,
                    None => Instant::now(),
                };
                let mut req = http::Request::new(Empty::<Bytes>::new());
                *req.method_mut() = config.method.clone();
                *req.uri_mut() = uri.clone();
                if let Some(name) = &config.key_header
                    && let (Ok(name), Ok(value)) = (
                        http::HeaderName::try_from(name.as_str()),
                        http::HeaderValue::try_from(request_id(index).to_string()),
                    )
                {
                    req.headers_mut().insert(name, value);
                }
                let outcome = tokio::time::timeout(config.timeout, async {
                    let resp = client.request(req).await.map_err(|e| error_kind(&e))?;
                    let status = resp.status();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|_| "body".to_owned())?
                        .to_bytes();
                    Ok::<_, String>((status, body))
                })
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
                let latency = sent.elapsed();
                hist.saturating_record(
                    u64::try_from(latency.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                let (status, replica) = match outcome {
                    Ok((status, body)) => {
                        *tally.status_counts.entry(status.as_u16()).or_insert(0) += 1;
                        let replica = replica_id(&body);
                        if status.is_success() {
                            tally.ok += 1;
                            if let Some(r) = &replica {
                                *tally.per_replica.entry(r.clone()).or_insert(0) += 1;
                            }
                        } else {
                            tally.failed += 1;
                        }
                        (status.as_u16(), replica)
                    }
                    Err(kind) => {
                        tally.failed += 1;
                        *tally.errors.entry(kind).or_insert(0) += 1;
                        (0, None)
                    }
                };
                if config.trace {
                    let start_ms = sent.duration_since(started).as_secs_f64() * 1e3;
                    tally.trace.push(TraceEntry {
                        index,
                        start_ms,
                        start_unix_ms: start_unix + start_ms,
                        latency_ms: latency.as_secs_f64() * 1e3,
                        status,
                        replica,
                    });
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (hist, tally)
        }));
    }
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let mut hist = histogram();
    let mut total = Tally::default();
    for w in workers {
        let Ok((h, t)) = w.await else { continue };

        let _ = hist.add(&h);
        total.ok += t.ok;
        total.failed += t.failed;
        merge(&mut total.per_replica, t.per_replica);
        merge(&mut total.status_counts, t.status_counts);
        merge(&mut total.errors, t.errors);
        total.trace.extend(t.trace);
    }
    // A worker that panicked took its tally with it: its requests count as
    // failed, never as vanished.
    let lost = config.requests.saturating_sub(total.ok + total.failed);
    if lost > 0 {
        total.failed += lost;
        *total.errors.entry("worker panicked".into()).or_insert(0) += lost;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    total.trace.sort_by_key(|e| e.index);
    let ms = |us: u64| us as f64 / 1e3;
    Ok(Report {
        requests: config.requests,
        ok: total.ok,
        failed: total.failed,
        elapsed_s: elapsed,
        rps: if elapsed > 0.0 {
            config.requests as f64 / elapsed
        } else {
            0.0
        },
        per_replica: total.per_replica,
        latency_ms: Latency {
            p50: ms(hist.value_at_quantile(0.50)),
            p90: ms(hist.value_at_quantile(0.90)),
            p99: ms(hist.value_at_quantile(0.99)),
            max: ms(hist.max()),
        },
        status_counts: total.status_counts,
        errors: total.errors,
        trace: config.trace.then_some(total.trace),
    })
}

fn merge<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

fn error_kind(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

fn progress_bar(config: &RunConfig) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !config.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(config.requests);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

impl Report {
    /// A readable summary.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "requests {}  ok {}  failed {}  in {:.3} s  ({:.0} req/s)",
            self.requests, self.ok, self.failed, self.elapsed_s, self.rps
        );
        let _ = writeln!(
            out,
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
            self.latency_ms.p50, self.latency_ms.p90, self.latency_ms.p99, self.latency_ms.max
        );
        let _ = writeln!(out, "per replica:");
        for (id, n) in &self.per_replica {
            let share = if self.ok > 0 {
                100.0 * *n as f64 / self.ok as f64
            } else {
                0.0
            };
            let _ = writeln!(out, "  {id:<16} {n:>8}  {share:5.1}%");
        }
        if !self.errors.is_empty() || self.status_counts.keys().any(|s| !(200..300).contains(s)) {
            let _ = writeln!(
                out,
                "statuses: {:?}  errors: {:?}",
                self.status_counts, self.errors
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_six_digit_numbers() {
        let ids: std::collections::HashSet<u64> = (0..900_000).map(request_id).collect();
        assert_eq!(ids.len(), 900_000);
        assert!(ids.iter().all(|id| (100_000..=999_999).contains(id)));
    }

    #[test]
    fn parses_replica_ids() {
        assert_eq!(
            replica_id(br#"{"message":"Hello from Server: s-1","status":"successful"}"#).as_deref(),
            Some("s-1")
        );
        assert_eq!(
            replica_id(br#"{"message":"<Error> nope","status":"failure"}"#),
            None
        );
        assert_eq!(replica_id(b"garbage"), None);
        assert_eq!(replica_id(b""), None);
    }

    #[test]
    fn percentiles_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("record");
        }
        let p50 = h.value_at_quantile(0.5) as f64 / 1e3;
        assert!((p50 - 500.0).abs() < 2.0, "{p50}");
        assert!(h.max() >= 999_000);
    }

    #[tokio::test]
    async fn zero_concurrency_is_refused() {
        let config = RunConfig {
            concurrency: 0,
            ..RunConfig::default()
        };
        assert!(matches!(run(config).await, Err(LoadError::Concurrency)));
    }
}
