//! The response body the proxy relays: the replica's body, holding the
//! request counted in flight on its replica until the body has been sent.

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

use crate::replica::InFlight;

/// A response body that keeps its request counted in flight until it ends.
pub(super) struct InFlightBody {
    pub(super) inner: Incoming,
    pub(super) _in_flight: InFlight,
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
