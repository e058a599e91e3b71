//! The request body as the proxy reads it from the client: bounded in time
//! and watched, so a failed upload is known to be the client's.
//!
//! [`ClientBody`] wraps the client's body on its way to a replica (or into
//! the replay buffer). It fails the body when the client pauses longer than
//! `--client-body-timeout` between two reads, or uploads slower on average
//! than `--client-body-min-rate` once `--client-body-grace` has passed,
//! and records in the shared [`Upload`] why it failed (or that it ended).
//! When the upstream request then fails, the proxy asks the [`Upload`]
//! first: a client's fault is answered 400 or 408 and never counted against
//! the replica. The [`Upload`] also tells when the whole body has been
//! read, which is when the response timeout starts (a long upload is not
//! a slow replica).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    sync::Notify,
    time::{Instant, Sleep},
};

/// How a client's upload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// It paused longer than the body timeout.
    Stalled,
    /// It was slower on average than the minimum rate.
    TooSlow,
    /// Its framing was invalid, or it closed or reset the connection
    /// before the body was complete.
    Broken,
}

impl ClientFault {
    /// The label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stalled => "body-timeout",
            Self::TooSlow => "body-too-slow",
            Self::Broken => "body-broken",
        }
    }
}

const STREAMING: u8 = 0;
const DONE: u8 = 1;
const STALLED: u8 = 2;
const TOO_SLOW: u8 = 3;
const BROKEN: u8 = 4;

/// What became of one request's upload; shared by the body and the proxy.
#[derive(Debug)]
pub struct Upload {
    state: AtomicU8,
    ended: Notify,
}

impl Upload {
    /// An upload still to be read.
    pub fn streaming() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(STREAMING),
            ended: Notify::new(),
        })
    }

    /// An upload that is complete already (no body): one shared value, so
    /// a request without a body allocates nothing for it.
    pub fn done() -> Arc<Self> {
        static DONE_UPLOAD: std::sync::LazyLock<Arc<Upload>> = std::sync::LazyLock::new(|| {
            Arc::new(Upload {
                state: AtomicU8::new(DONE),
                ended: Notify::new(),
            })
        });
        DONE_UPLOAD.clone()
    }

    /// Why the client's upload failed, if it did.
    pub fn fault(&self) -> Option<ClientFault> {
        match self.state.load(Ordering::Acquire) {
            STALLED => Some(ClientFault::Stalled),
            TOO_SLOW => Some(ClientFault::TooSlow),
            BROKEN => Some(ClientFault::Broken),
            _ => None,
        }
    }

    /// Resolves once the body has been read to its end (never if it fails:
    /// the request fails with it).
    pub async fn sent(&self) {
        // Most requests have no body, or one read whole with the head:
        // nothing to wait for, and no need to register as a waiter.
        if self.state.load(Ordering::Acquire) == DONE {
            return;
        }
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.state.load(Ordering::Acquire) {
                DONE => return,
                STREAMING => ended.await,
                _ => std::future::pending::<()>().await,
            }
        }
    }

    fn end(&self, state: u8) {
        // The first ending wins: a body that failed stays failed.
        if self
            .state
            .compare_exchange(STREAMING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ended.notify_waiters();
        }
    }
}

/// Time bounds of an upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Longest pause between two reads.
    pub idle: Duration,
    /// Slowest average rate in bytes per second (0: none)...
    pub min_rate: u64,
    /// ...once the upload has lasted this long.
    pub grace: Duration,
}

/// A client's request body, bounded in time, reporting to an [`Upload`].
pub struct ClientBody<B> {
    inner: B,
    upload: Arc<Upload>,
    limits: UploadLimits,
    started: Instant,
    received: u64,
    /// Fires when the client has paused too long.
    idle: Pin<Box<Sleep>>,
}

impl<B> ClientBody<B> {
    pub fn new(inner: B, upload: Arc<Upload>, limits: UploadLimits) -> Self {
        let started = Instant::now();
        Self {
            inner,
            upload,
            limits,
            started,
            received: 0,
            idle: Box::pin(tokio::time::sleep_until(started + limits.idle)),
        }
    }

    fn fail(
        &self,
        state: u8,
        why: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.upload.end(state);
        Poll::Ready(Some(Err(why.into())))
    }

    /// Whether the upload is below the minimum average rate.
    fn too_slow(&self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.started);
        self.limits.min_rate > 0
            && elapsed > self.limits.grace
            && (self.received as f64) < self.limits.min_rate as f64 * elapsed.as_secs_f64()
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                if this.too_slow(now) {
                    return this.fail(TOO_SLOW, "request body arrived below the minimum rate");
                }
                this.idle.as_mut().reset(now + this.limits.idle);
                if this.inner.is_end_stream() {
                    this.upload.end(DONE);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.end(BROKEN);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.upload.end(DONE);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    return this.fail(STALLED, "request body paused longer than the body timeout");
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ClientBody<B> {
    fn drop(&mut self) {
        // Dropped before its end without an error of its own: the client's
        // side went away (hyper drops a body whose connection closed).
        if !self.inner_ended() {
            self.upload.end(BROKEN);
        }
    }
}

impl<B> ClientBody<B> {
    fn inner_ended(&self) -> bool {
        self.upload.state.load(Ordering::Acquire) != STREAMING
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    const LIMITS: UploadLimits = UploadLimits {
        idle: Duration::from_secs(2),
        min_rate: 100,
        grace: Duration::from_secs(5),
    };

    /// A body whose chunks arrive on a channel.
    fn channel() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        StreamBody<tokio_stream_shim::Receiver>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        (tx, StreamBody::new(tokio_stream_shim::Receiver(rx)))
    }

    mod tokio_stream_shim {
        use super::*;
        pub struct Receiver(pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);
        impl futures_util::Stream for Receiver {
            type Item = Result<Frame<Bytes>, std::io::Error>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.0.poll_recv(cx)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_sent_and_no_fault() {
        let (tx, body) = channel();
        let upload = Upload::streaming();
        let body = ClientBody::new(body, upload.clone(), LIMITS);
        tokio::spawn(async move {
            for _ in 0..3 {
                tx.send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
                    .await
                    .expect("send");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let bytes = body.collect().await.expect("collects").to_bytes();
        assert_eq!(bytes.len(), 12);
        assert_eq!(upload.fault(), None);
        tokio::time::timeout(Duration::from_millis(1), upload.sent())
            .await
            .expect("sent resolves once the body ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_timeout_is_the_clients_fault() {
        let (tx, body) = channel();
        let upload = Upload::streaming();
        let body = ClientBody::new(body, upload.clone(), LIMITS);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abcd"))))
            .await
            .expect("send");
        let err = body.collect().await.expect_err("stalls");
        assert!(err.to_string().contains("paused"), "{err}");
        assert_eq!(upload.fault(), Some(ClientFault::Stalled));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_fails_after_the_grace() {
        let (tx, body) = channel();
        let upload = Upload::streaming();
        let body = ClientBody::new(body, upload.clone(), LIMITS);
        tokio::spawn(async move {
            // One byte a second: never idle for 2 s, far below 100 B/s.
            for _ in 0..20 {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let err = body.collect().await.expect_err("too slow");
        assert!(err.to_string().contains("minimum rate"), "{err}");
        assert_eq!(upload.fault(), Some(ClientFault::TooSlow));
        let took = started.elapsed();
        assert!(
            took > LIMITS.grace && took < LIMITS.grace + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_or_a_drop_mid_body_is_broken() {
        let (tx, body) = channel();
        let upload = Upload::streaming();
        let body = ClientBody::new(body, upload.clone(), LIMITS);
        tx.send(Err(std::io::Error::other("bad chunk size")))
            .await
            .expect("send");
        assert!(body.collect().await.is_err());
        assert_eq!(upload.fault(), Some(ClientFault::Broken));

        let (_tx, body) = channel();
        let upload = Upload::streaming();
        drop(ClientBody::new(body, upload.clone(), LIMITS));
        assert_eq!(upload.fault(), Some(ClientFault::Broken));
    }
}
