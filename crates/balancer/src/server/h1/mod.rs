//! HTTP/1.1 on plain client connections, our own server side of it for the
//! requests that make up nearly all of a proxy's traffic: a head, and no
//! body, a short one that came with it, or a longer one of a known length
//! streamed as it arrives (`body`).
//!
//! hyper's server holds a fixed 8 KiB read buffer and an 8 KiB write buffer
//! per connection while a request is in flight (hyper 1.x has no setting
//! for either), so with thousands of requests in flight its buffers were
//! most of the balancer's memory. Here a connection holds only the bytes
//! read of its head (they become the request's target and field values,
//! uncopied), and a response goes out from where its body was read, with
//! the head encoded once into a small buffer and sent with the first bytes
//! of the body in one write.
//!
//! Whatever else a client sends, from its first byte on, is hyper's, as
//! before: upgrades and `CONNECT`, `Expect`, `TE`, chunked uploads, and
//! every head hyper would refuse (its 400 and 431 answers stay its own).
//! The connection goes back to this loop once hyper lets go of it (parked
//! after idling). Between requests the connection holds its socket and
//! this loop's future only; parked (idle over [`PARK_AFTER`]) it is
//! counted as such.

mod body;
mod date;
pub(crate) mod head;
mod write;

use std::{
    convert::Infallible,
    io,
    pin::Pin,
    sync::Arc,
    task::{Poll, ready},
};

use bytes::BytesMut;
use http::Response;
use tokio::{
    io::{AsyncRead as _, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{conn::Listener, handle, io::ClientIo};
use crate::{
    activity::Activity,
    cancel,
    conns::PARK_AFTER,
    metrics::Metrics,
    proxy::{ClientInfo, Handover},
};
use head::Parsed;

/// The most read from a client at once, into the thread's scratch buffer.
const READ: usize = 16 * 1024;

thread_local! {
    /// Where client bytes are read before being copied to their own
    /// exact-size buffer: a request in flight holds its head's bytes, not
    /// a buffer sized for the largest head (hyper's holds 8 KiB), and a
    /// connection between requests holds none.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ].into_boxed_slice());
}

/// How serving a connection here ended.
pub(super) enum End {
    /// The connection is done with (closed, or to be closed).
    Closed,
    /// What was read is for hyper, from its first byte.
    Hyper(BytesMut),
}

/// What serving requests on one connection needs.
pub(super) struct Server<'a> {
    pub(super) listener: &'a Arc<Listener>,
    pub(super) info: ClientInfo,
    pub(super) activity: &'a Arc<Activity>,
    pub(super) handover: &'a Handover,
    pub(super) metrics: &'a Metrics,
    pub(super) stop: &'a CancellationToken,
}

impl Server<'_> {
    /// Serves requests on `io` until the connection ends or a request is
    /// one for hyper. Once `stop` fires, the request in flight is answered
    /// and the connection closed.
    pub(super) async fn run(&self, io: &mut ClientIo<TcpStream>) -> io::Result<End> {
        let listener = &**self.listener;
        let max_head = listener.options.max_header_size;
        let mut buf = BytesMut::new();
        // The encoded head of the last response: reused while the
        // connection is busy, let go of when it parks.
        let mut out = Vec::new();
        let mut stopping = std::pin::pin!(cancel::cancelled(self.stop));
        // Due when the connection will have idled PARK_AFTER: at once for
        // one hyper gives back after idling, a PARK_AFTER after the last
        // request otherwise; checked again then, not on every request.
        let mut idle_check = std::pin::pin!(tokio::time::sleep_until(
            self.activity.idle_since() + PARK_AFTER
        ));
        let mut parked = None;
        loop {
            let ready = match head::parse(&mut buf, max_head) {
                Parsed::Request(ready) => ready,
                Parsed::Hyper => return Ok(End::Hyper(buf)),
                Parsed::Partial => {
                    tokio::select! {
                        biased;
                        read = read(io, &mut buf) => {
                            if read? == 0 {
                                // Closed, or half-closed in the middle of a
                                // request: hyper answers that as it did.
                                return Ok(if buf.is_empty() { End::Closed } else { End::Hyper(buf) });
                            }
                            if parked.take().is_some() {
                                idle_check.as_mut().reset(Instant::now() + PARK_AFTER);
                            }
                        }
                        () = stopping.as_mut() => {
                            let _ = io.shutdown().await;
                            return Ok(End::Closed);
                        }
                        () = idle_check.as_mut(), if parked.is_none() => {
                            let now = Instant::now();
                            let due = self.activity.idle_since() + PARK_AFTER;
                            if buf.is_empty() && due <= now {
                                // Nothing held but the socket and this future.
                                (buf, out) = (BytesMut::new(), Vec::new());
                                crate::memory::released();
                                parked = Some(self.metrics.connection_parked());
                            } else {
                                idle_check.as_mut().reset(due.max(now + PARK_AFTER / 4));
                            }
                        }
                    }
                    continue;
                }
            };
            let asked = write::Asked::of(&ready.request, ready.keep_alive);
            // Boxed: held only while a request is in flight, not by every
            // connection's future.
            let response = Box::pin(handle(
                listener.app.clone(),
                &listener.router,
                listener.options.role,
                self.info,
                self.activity,
                self.handover,
                ready.request,
            ));
            let keep_alive = match ready.feeder {
                None => {
                    let response = response
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    write::send(io, response, asked, &mut out).await?
                }
                Some(feeder) => {
                    // Boxed, as the request's future is: its state (a
                    // second response writer, the body's timer) is held
                    // only while an upload is in flight, not by every
                    // connection's future (it made each active connection
                    // 2-4 KiB larger).
                    let (keep_alive, next) =
                        Box::pin(serve_streamed(io, response, feeder, asked, &mut out)).await?;
                    // Read past the body: the next request's first bytes.
                    buf.extend_from_slice(&next);
                    keep_alive
                }
            };
            if !keep_alive || self.stop.is_cancelled() {
                let _ = io.shutdown().await;
                return Ok(End::Closed);
            }
        }
    }
}

/// Serves a request whose body is still arriving: `feeder` reads it from
/// the connection while the request is handled and its response sent, as
/// a replica may answer before it has read the whole body, or stream its
/// answer as it reads. Whether the connection may serve another request
/// after it, and what was read past the body.
async fn serve_streamed(
    io: &mut ClientIo<TcpStream>,
    response: impl Future<Output = Result<Response<axum::body::Body>, Infallible>>,
    mut feeder: body::Feeder,
    mut asked: write::Asked,
    out: &mut Vec<u8>,
) -> io::Result<(bool, bytes::Bytes)> {
    let pause = io.timeouts().body;
    let (tcp, ahead, mut send) = io.split_for_body();
    feeder.read_ahead(ahead);
    let watch = feeder.watch();
    let sent = {
        let serve = async {
            let response = response
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            // Let go of before its end: the rest will not be read, so the
            // connection closes after this response.
            asked.keep_alive &= !watch.abandoned();
            write::send(&mut send, response, asked, out).await
        };
        let mut serve = std::pin::pin!(serve);
        let mut feeding = true;
        std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(sent) = serve.as_mut().poll(cx) {
                    return Poll::Ready(sent);
                }
                if !feeding {
                    return Poll::Pending;
                }
                match feeder.poll_feed(tcp, cx) {
                    // The request may take it at once: poll it again now
                    // rather than after a wake-up.
                    Poll::Ready(body::Fed::Piece) => {}
                    Poll::Ready(body::Fed::Done) => feeding = false,
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    };
    if sent.is_ok() {
        // The response has gone, and the request may still be sending
        // the body on (to a replica that answered before reading it all):
        // the rest is read for as long as it is taken, pausing no longer
        // than an upload may.
        let mut pause_over = std::pin::pin!(tokio::time::sleep(pause));
        std::future::poll_fn(|cx| {
            loop {
                match feeder.poll_feed(tcp, cx) {
                    Poll::Ready(body::Fed::Piece) => {
                        pause_over.as_mut().reset(Instant::now() + pause);
                    }
                    Poll::Ready(body::Fed::Done) => return Poll::Ready(()),
                    Poll::Pending => return pause_over.as_mut().poll(cx),
                }
            }
        })
        .await;
    }
    let (whole, next) = feeder.finish(tcp);
    Ok((sent? && whole, next))
}

/// Reads what the client has sent, appending it to `buf`; the bytes read
/// (0: the client closed).
async fn read(io: &mut ClientIo<TcpStream>, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        // Borrowed within one poll only: never across an await.
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
    })
    .await
}
