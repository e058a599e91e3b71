//! What a client connection is doing: how many of its requests are in
//! flight, and since when it has been idle. The connection's service starts
//! a request when its head has been parsed; the request ends when its
//! response body is dropped (sent, or abandoned), which the proxy ties to
//! the body it returns. The client-side timeouts (`server::io`) read it.
//!
//! It also counts requests the client abandoned before their answer was
//! ready (an HTTP/2 stream reset, a closed connection): a connection that
//! abandons more than [`Activity::new`]'s limit, and more than half of all
//! its requests, is killed. That bounds what the HTTP/2 Rapid Reset attack
//! (CVE-2023-44487: open a stream, reset it, again) can make the balancer
//! do per connection, on top of h2's own cap on resets pending accept.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    started: AtomicU32,
    abandoned: AtomicU32,
    max_abandoned: u32,
    /// Cancelled to close the connection at once.
    kill: CancellationToken,
}

impl Activity {
    /// A connection's activity; it is killed once it has abandoned more
    /// than `max_abandoned` requests (and more than half of them).
    pub fn new(max_abandoned: u32) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            started: AtomicU32::new(0),
            abandoned: AtomicU32::new(0),
            max_abandoned,
            kill: CancellationToken::new(),
        })
    }

    /// A request's head has been parsed: it is in flight until the guard
    /// is dropped (with its response body).
    pub fn start(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Marks a request whose answer is being worked out: if the marker is
    /// dropped before [`Answering::answered`], the client abandoned it.
    pub fn answering(self: &Arc<Self>) -> Answering {
        Answering(Some(self.clone()))
    }

    /// Cancelled when the connection must be closed at once.
    pub fn kill(&self) -> &CancellationToken {
        &self.kill
    }

    /// Requests this connection abandoned so far.
    pub fn abandoned(&self) -> u32 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Requests started on this connection so far.
    pub fn started(&self) -> u32 {
        self.started.load(Ordering::Acquire)
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    pub fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request whose answer is still being worked out.
#[derive(Debug)]
pub struct Answering(Option<Arc<Activity>>);

impl Answering {
    /// The answer is ready: the client did not abandon this request.
    pub fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let Some(a) = self.0.take() else {
            return;
        };
        let abandoned = a.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let started = a.started.load(Ordering::Relaxed);
        if abandoned > a.max_abandoned && abandoned.saturating_mul(2) > started {
            tracing::warn!(
                abandoned,
                started,
                "a client abandons most of its requests; closing its connection"
            );
            a.kill.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_abandons_most_requests_is_killed() {
        let a = Activity::new(10);
        for _ in 0..30 {
            let _request = a.start();
            a.answering().answered();
        }
        // 30 answered, then 31 abandoned: more than 10, more than half.
        for i in 0..31 {
            let _request = a.start();
            drop(a.answering());
            assert_eq!(a.kill.is_cancelled(), i == 30, "after {} abandoned", i + 1);
        }
        assert_eq!(a.abandoned(), 31);
    }

    #[test]
    fn the_idle_clock_starts_when_the_last_request_ends() {
        let a = Activity::new(10);
        let first = a.start();
        let second = a.start();
        assert!(a.busy());
        drop(first);
        assert!(a.busy());
        drop(second);
        assert!(!a.busy());
    }
}
