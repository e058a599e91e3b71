//! A request body in a form the proxy can send, and send again on a retry.
//!
//! Bodies up to [`RETRY_BUFFER`] bytes (by their declared size) are read
//! whole first, so a retry can resend them; larger ones, and bodies of
//! unknown size, stream through once and make their request not retryable.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt as _;

/// Request bodies up to this size are buffered so a retry can resend them.
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// A request body ready to be sent.
pub(super) enum Payload {
    Empty,
    Buffered(Bytes),
    /// Can be sent once; `None` after that.
    Stream(Option<Body>),
}

/// The body could not be read from the client.
#[derive(Debug)]
pub(super) struct ReadError;

impl Payload {
    /// Reads `body` whole if it is small enough to replay, or keeps it to
    /// stream.
    pub(super) async fn read<B>(body: B) -> Result<Self, ReadError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if body.is_end_stream() {
            return Ok(Self::Empty);
        }
        if body.size_hint().upper().is_none_or(|n| n > RETRY_BUFFER) {
            return Ok(Self::Stream(Some(Body::new(body))));
        }
        http_body_util::Limited::new(body, RETRY_BUFFER as usize)
            .collect()
            .await
            .map(|collected| Self::Buffered(collected.to_bytes()))
            .map_err(|_| ReadError)
    }

    /// Whether it can be sent more than once.
    pub(super) fn replayable(&self) -> bool {
        !matches!(self, Self::Stream(_))
    }

    /// The body for the next attempt; `None` once a stream has been sent.
    pub(super) fn take(&mut self) -> Option<Body> {
        match self {
            Self::Empty => Some(Body::empty()),
            Self::Buffered(b) => Some(Body::from(b.clone())),
            Self::Stream(s) => s.take(),
        }
    }
}
