//! The response body the proxy relays: the replica's body, holding the
//! request counted in flight on its replica (and on its client connection)
//! until the body has been sent, and bounded in time: a replica that pauses
//! its body longer than `--upstream-idle-timeout` has the response cut off
//! (the client sees it truncated, never silently shortened) and is blamed.
//! A gRPC call with a `grpc-timeout` is ended at its deadline with
//! DEADLINE_EXCEEDED in the trailers, and its upstream stream dropped.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::conns::Upstream;

use super::{attempt::blame, grpc};
use crate::{activity::RequestGuard, events::EventLog, replica::InFlight};

/// A response body that keeps its request counted in flight until it ends.
pub(super) struct InFlightBody {
    inner: Incoming,
    in_flight: InFlight,
    idle_timeout: Duration,
    /// Armed only once the body has to wait (most bodies never do).
    idle: Option<Pin<Box<Sleep>>>,
    events: Arc<EventLog>,
    _request: Option<RequestGuard>,
    /// A gRPC call's deadline; `None` once it has ended the body.
    deadline: Option<Pin<Box<Sleep>>>,
    ended: bool,
    /// The connection the body comes on, back to its replica's pool once
    /// the body has ended (most idle connections kept per thread beside).
    conn: Option<(Upstream, usize)>,
}

impl InFlightBody {
    pub(super) fn new(
        inner: Incoming,
        in_flight: InFlight,
        idle_timeout: Duration,
        events: Arc<EventLog>,
        request: Option<RequestGuard>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            inner,
            in_flight,
            idle_timeout,
            idle: None,
            events,
            _request: request,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            ended: false,
            conn: None,
        }
    }

    /// Returns `conn` to the replica's idle connections when the body ends
    /// (at most `max_idle` kept per thread).
    pub(super) fn keeping(mut self, conn: Option<Upstream>, max_idle: usize) -> Self {
        self.conn = conn.map(|c| (c, max_idle));
        self
    }

    /// The body has ended cleanly: its connection may serve the next request.
    fn release(&mut self) {
        if let Some((conn, max_idle)) = self.conn.take() {
            self.in_flight.replica().conns.put(conn, max_idle);
        }
    }
}

impl Drop for InFlightBody {
    fn drop(&mut self) {
        // Dropped before its end (the client went away), the connection is
        // left to close: hyper does not keep one whose body was not read.
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.ended = true;
            let trailers = grpc::status(
                grpc::Code::DeadlineExceeded,
                "the call's grpc-timeout passed",
            );
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut this.idle {
                    idle.as_mut().reset(Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                blame(this.in_flight.replica(), &this.events, || {
                    format!("its response body failed: {e}")
                });
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                blame(this.in_flight.replica(), &this.events, || {
                    format!(
                        "its response body paused longer than {} ms",
                        timeout.as_millis()
                    )
                });
                Poll::Ready(Some(Err("the replica's response body stalled".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
