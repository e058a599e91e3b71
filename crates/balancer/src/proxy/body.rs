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
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::h1::{self, ResponseBody};

use super::{attempt::blame, grpc};
use crate::{activity::RequestGuard, events::EventLog, replica::InFlight};

/// A replica's response body: on a connection of our own (HTTP/1.1), or
/// hyper's (h2c, and a plain answer to an upgrade request).
pub(super) enum Answer {
    Own(ResponseBody),
    Hyper(Incoming),
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(body) => body.is_end_stream(),
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Own(body) => body.size_hint(),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}

/// A response body that keeps its request counted in flight until it ends.
pub(super) struct InFlightBody {
    inner: Answer,
    in_flight: InFlight,
    idle_timeout: Duration,
    /// Armed only once the body has to wait (most bodies never do).
    idle: Option<Pin<Box<Sleep>>>,
    events: Arc<EventLog>,
    _request: Option<RequestGuard>,
    /// A gRPC call's deadline; `None` once it has ended the body.
    deadline: Option<Pin<Box<Sleep>>>,
    ended: bool,
    /// Most idle connections its replica keeps per thread, the body's own
    /// going back once it has ended.
    max_idle: usize,
}

impl InFlightBody {
    pub(super) fn new(
        inner: Answer,
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
            max_idle: 0,
        }
    }

    /// Returns its connection to the replica's idle connections when the
    /// body ends (at most `max_idle` kept per thread).
    pub(super) fn keeping(mut self, max_idle: usize) -> Self {
        self.max_idle = max_idle;
        self
    }

    /// The body has ended cleanly: its connection may serve the next
    /// request, if the replica keeps it open.
    fn release(&mut self) {
        let Answer::Own(body) = &mut self.inner else {
            return;
        };
        let replica = self.in_flight.replica();
        match body.finish() {
            h1::End::Reusable(io) => replica.conns.put(io, self.max_idle),
            h1::End::AfterUpload(rest) => {
                // The replica answered before reading all of the request:
                // the rest goes on its own task, bounded by the client's
                // upload limits, then the connection is kept.
                let home = Arc::downgrade(replica);
                let max_idle = self.max_idle;
                tokio::spawn(async move {
                    if let (Some(io), Some(replica)) = (rest.await, home.upgrade()) {
                        replica.conns.put(io, max_idle);
                    }
                });
            }
            h1::End::Closed => {}
        }
    }
}

impl Drop for InFlightBody {
    fn drop(&mut self) {
        // Dropped before its end (the client went away), the connection is
        // left to close: the rest of its body was never read.
        if self.inner.is_end_stream() {
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
                Poll::Ready(Some(Err(e)))
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
