//! A request body in a form the proxy can send, and send again on a retry.
//!
//! Bodies up to [`RETRY_BUFFER`] bytes (by their declared size) are read
//! whole first, so a retry can resend them; larger ones, and bodies of
//! unknown size, stream through once and make their request not retryable.
//! Either way the client's body is read through a [`ClientBody`], so its
//! time bounds hold while it is buffered as well as while it streams.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt as _;

use super::upload::{ClientBody, ClientFault, Upload, UploadLimits};

/// Request bodies up to this size are buffered so a retry can resend them.
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// A request body ready to be sent.
pub(super) enum Payload {
    Empty,
    Buffered(Bytes),
    /// Can be sent once; `None` after that.
    Stream(Option<Body>),
}

impl Payload {
    /// Reads `body` whole if it is small enough to replay, or keeps it to
    /// stream; with the [`Upload`] that tells how its reading goes.
    pub(super) async fn read<B>(
        body: B,
        limits: UploadLimits,
    ) -> Result<(Self, Arc<Upload>), ClientFault>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if body.is_end_stream() {
            return Ok((Self::Empty, Upload::done()));
        }
        let upload = Upload::streaming();
        let replayable = body.size_hint().upper().is_some_and(|n| n <= RETRY_BUFFER);
        let body = ClientBody::new(body, upload.clone(), limits);
        if !replayable {
            return Ok((Self::Stream(Some(Body::new(body))), upload));
        }
        match http_body_util::Limited::new(body, RETRY_BUFFER as usize)
            .collect()
            .await
        {
            Ok(collected) => Ok((Self::Buffered(collected.to_bytes()), upload)),
            Err(_) => Err(upload.fault().unwrap_or(ClientFault::Broken)),
        }
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
