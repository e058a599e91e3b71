//! The h2c client's connector: hyper's `HttpConnector`, with each
//! connection stamped with when it was made (HTTP/1.1 replicas use our own
//! pool, [`super::exchange`], which knows this without a stamp). When a request fails on a connection made
//! before the request began, the connection was a pooled one that the
//! replica had already closed (a race every keep-alive proxy has): a safe
//! request is sent again on a fresh connection and the replica is not
//! blamed; an unsafe one is never sent again.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::{net::TcpStream, time::Instant};

/// When a connection was made, carried in its `Connected` extras.
#[derive(Debug, Clone, Copy)]
pub(super) struct Born(pub Instant);

/// `HttpConnector` whose connections carry [`Born`].
#[derive(Debug, Clone)]
pub(super) struct Connector(pub HttpConnector);

impl tower::Service<Uri> for Connector {
    type Response = Stamped;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stamped, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Stamped {
                io,
                born: Instant::now(),
            })
        })
    }
}

/// A connection and when it was made.
pub(super) struct Stamped {
    io: TokioIo<TcpStream>,
    born: Instant,
}

impl Connection for Stamped {
    fn connected(&self) -> Connected {
        self.io.connected().extra(Born(self.born))
    }
}

impl hyper::rt::Read for Stamped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stamped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether the connection a client error happened on was made before
/// `since` (so it came from the pool).
pub(super) fn was_reused(error: &hyper_util::client::legacy::Error, since: Instant) -> bool {
    let Some(info) = error.connect_info() else {
        return false;
    };
    let mut extensions = http::Extensions::new();
    info.get_extras(&mut extensions);
    extensions.get::<Born>().is_some_and(|b| b.0 < since)
}
