//! The access log (`--access-log PATH|-`): one JSON line per request.
//!
//! The data path never waits for it: a finished request hands its entry to
//! a bounded channel with `try_send` and goes on; one writer task batches
//! what is queued into a buffered file (or stdout) and flushes whenever the
//! queue runs dry. When the writer falls behind and the queue is full, the
//! entry is dropped and counted (`lb_access_log_dropped_total`): a slow
//! disk costs log lines, never latency.
//!
//! An entry is completed when the response body has been sent (or the
//! client went away), so `bytes` and `duration_ms` cover the whole reply.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _, BufWriter},
    sync::mpsc,
};

use crate::metrics::Metrics;

/// Entries queued for the writer at most; beyond, entries are dropped.
pub const QUEUE: usize = 16 * 1024;

/// Why the access log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}")]
pub struct AccessLogError {
    path: PathBuf,
    source: std::io::Error,
}

/// One line of the access log.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub time: String,
    pub client: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The replica that answered, if one did.
    pub replica: Option<String>,
    /// Replicas tried (0: none was, e.g. a client's fault or no replica).
    pub attempts: u32,
    /// Arrival to the end of the response body.
    pub duration_ms: f64,
    /// Response body bytes sent.
    pub bytes: u64,
    pub request_id: String,
}

/// The sending half, held by the proxy.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens `target` (a file, appended to, or `-` for stdout) and starts
    /// its writer task, which ends once every sender is gone.
    pub async fn start(target: &Path, metrics: Arc<Metrics>) -> Result<Self, AccessLogError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = if target == Path::new("-") {
            Box::new(tokio::io::stdout())
        } else {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .await
                .map_err(|source| AccessLogError {
                    path: target.to_owned(),
                    source,
                })?;
            Box::new(file)
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(rx, BufWriter::new(out)));
        Ok(Self { tx, metrics })
    }

    /// Queues `entry` if there is room; counts it dropped otherwise.
    pub fn send(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            Metrics::inc(&self.metrics.access_log_dropped);
        }
    }
}

/// The writer: batches what is queued, flushes when the queue is empty.
async fn write(
    mut rx: mpsc::Receiver<Entry>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut line = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for entry in batch.drain(..) {
            line.clear();
            if serde_json::to_writer(&mut line, &entry).is_err() {
                continue;
            }
            line.push(b'\n');
            if let Err(e) = out.write_all(&line).await {
                tracing::warn!(error = %e, "access log write failed");
            }
        }
        if rx.is_empty()
            && let Err(e) = out.flush().await
        {
            tracing::warn!(error = %e, "access log flush failed");
        }
    }
    let _ = out.flush().await;
}

/// Which replica answered and after how many attempts: put in a
/// response's extensions by the proxy, read here.
#[derive(Debug, Clone)]
pub struct Served {
    pub replica: Option<String>,
    pub attempts: u32,
}

/// What is known of a request when it arrives.
#[derive(Debug)]
pub struct Head {
    pub client: std::net::SocketAddr,
    pub method: http::Method,
    pub path: String,
    pub request_id: http::HeaderValue,
    pub arrived: SystemTime,
    pub started: Instant,
}

impl AccessLog {
    /// `response` with a body that logs the request once it is sent.
    pub fn wrap(
        &self,
        head: Head,
        response: http::Response<axum::body::Body>,
    ) -> http::Response<axum::body::Body> {
        let served = response.extensions().get::<Served>().cloned();
        let entry = Entry {
            time: rfc3339(head.arrived),
            client: head.client.to_string(),
            method: head.method.to_string(),
            path: head.path,
            status: response.status().as_u16(),
            replica: served.as_ref().and_then(|s| s.replica.clone()),
            attempts: served.map_or(0, |s| s.attempts),
            duration_ms: 0.0,
            bytes: 0,
            request_id: String::from_utf8_lossy(head.request_id.as_bytes()).into_owned(),
        };
        let pending = Pending {
            log: self.clone(),
            entry,
            started: head.started,
        };
        response.map(|body| axum::body::Body::new(Logged::new(body, pending)))
    }
}

/// An entry waiting for its response body to be sent.
#[derive(Debug)]
pub struct Pending {
    log: AccessLog,
    entry: Entry,
    started: Instant,
}

/// A response body that completes its access-log entry when it is done.
pub struct Logged<B> {
    inner: B,
    pending: Option<Pending>,
    bytes: u64,
}

impl<B> Logged<B> {
    pub fn new(inner: B, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
            bytes: 0,
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(mut p) = self.pending.take() {
            p.entry.bytes = self.bytes;
            p.entry.duration_ms = p.started.elapsed().as_secs_f64() * 1e3;
            p.log.send(p.entry);
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-11-26T05:20:01.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): no date crate for one line of output.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::default());
        // A receiver nobody reads: the queue fills and stays full.
        let (tx, _rx) = mpsc::channel(2);
        let log = AccessLog {
            tx,
            metrics: metrics.clone(),
        };
        let entry = Entry {
            time: String::new(),
            client: String::new(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            replica: None,
            attempts: 1,
            duration_ms: 0.0,
            bytes: 0,
            request_id: "x".into(),
        };
        for _ in 0..5 {
            log.send(entry.clone());
        }
        let dropped = metrics
            .access_log_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(dropped, 3);
    }
}
