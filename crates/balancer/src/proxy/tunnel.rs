//! HTTP/1.1 upgrades (WebSocket and the like), tunnelled to a replica.
//!
//! An upgrade request goes to the replica the policy picks for its key, on
//! a connection of its own (an upgraded connection never returns to the
//! pool), with its `Upgrade` and `Connection: upgrade` kept. If the replica
//! switches protocols (101), the client's connection and the replica's are
//! joined and bytes copied both ways until either side closes or both are
//! silent for `--tunnel-timeout`. The tunnel counts as a request in flight
//! on its replica for its whole life, so `/rm` drains it (up to the drain
//! timeout) like any other request. A replica that answers anything else is
//! relayed as a normal response.
//!
//! The client's side is not hyper's upgrade: hyper serves client
//! connections without it, so that an idle one can be parked (hyper hands
//! the socket back only then). The tunnel asks the connection's
//! [`Handover`] for the socket, and the connection gives it, with what the
//! client sent after its request head, once the 101 is out.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
    sync::oneshot,
    time::Instant,
};

use crate::{activity::RequestGuard, metrics::Metrics, replica::InFlight};

/// A client connection's stream, once hyper has let go of it.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// A client connection handed to its tunnel, and the bytes hyper had read
/// past the upgrade request's head: the client's first tunnelled bytes.
type Switched = (Box<dyn ClientStream>, Bytes);

/// Where a client connection's HTTP/1.1 server and a tunnel meet: the
/// tunnel, as it answers 101, asks for the connection
/// (`Handover::expect`); the server, once hyper has sent the 101 and let
/// go, gives it ([`Handover::give`]). One per connection, put in the
/// extensions of its upgrade requests only.
#[derive(Clone, Default)]
pub struct Handover(Arc<Mutex<Option<oneshot::Sender<Switched>>>>);

impl Handover {
    /// Asks for the connection; resolves once the 101 is out (an error if
    /// the connection ended first).
    fn expect(&self) -> oneshot::Receiver<Switched> {
        let (tx, rx) = oneshot::channel();
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Gives `stream` and the bytes read past the 101's request (`read`)
    /// to the tunnel that asked for them, or back if none did. A tunnel
    /// that asked and then gave up drops them: the connection closes.
    pub fn give<T: ClientStream + 'static>(
        &self,
        stream: T,
        read: Bytes,
    ) -> Result<(), (T, Bytes)> {
        let asked = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match asked {
            Some(tunnel) => {
                let _ = tunnel.send((Box::new(stream), read));
                Ok(())
            }
            None => Err((stream, read)),
        }
    }
}

/// The client's side of an upgrade request.
pub(super) struct Upgrade {
    /// Gives the client's connection once the 101 has been sent.
    pub client: Handover,
    /// Its `Upgrade` header (`websocket`, ...).
    pub protocol: HeaderValue,
    /// Its place on the client connection: a tunnel is a request in
    /// flight for its whole life (the idle timeout must not close it).
    pub request: Option<RequestGuard>,
}

/// Whether `headers` ask to upgrade the connection (RFC 9110 7.8).
pub(super) fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Why an upgrade request got no answer from its replica.
#[derive(Debug)]
pub(super) enum TunnelError {
    Connect,
    Failed,
    TimedOut,
}

/// Sends an upgrade request on a fresh connection to `addr` and returns
/// the replica's response head, and the replica side of the upgrade.
pub(super) async fn open(
    addr: std::net::SocketAddr,
    request: Request<Body>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Response<hyper::body::Incoming>, TunnelError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| TunnelError::Connect)?
        .map_err(|_| TunnelError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| TunnelError::Connect)?;
    tokio::spawn(async move {
        // Ends when the tunnel (or a refused upgrade's response) is done.
        let _ = conn.with_upgrades().await;
    });
    tokio::time::timeout(response_timeout, sender.send_request(request))
        .await
        .map_err(|_| TunnelError::TimedOut)?
        .map_err(|_| TunnelError::Failed)
}

/// Puts back the headers an upgrade needs (the proxy strips them as
/// hop-by-hop from every other request).
pub(super) fn keep_upgrade_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Joins the client's upgraded connection with the replica's once both
/// upgrades complete, in a task of its own; the tunnel holds `in_flight`.
pub(super) fn join(
    to: Upgrade,
    replica: Response<hyper::body::Incoming>,
    in_flight: InFlight,
    idle: Duration,
    metrics: Arc<Metrics>,
) {
    let upstream = hyper::upgrade::on(replica);
    let client = to.client.expect();
    tokio::spawn(async move {
        let _held = (in_flight, to.request);
        let (Ok((client, sent)), Ok(upstream)) = tokio::join!(client, upstream) else {
            tracing::debug!("an upgrade did not complete; no tunnel");
            return;
        };
        Metrics::inc(&metrics.tunnels);
        let last = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let mut client = Stamped::new(client, last.clone(), epoch);
        let mut upstream = Stamped::new(TokioIo::new(upstream), last.clone(), epoch);
        // What the client sent right behind its upgrade request, read
        // with the head: the tunnel's first bytes.
        if !sent.is_empty()
            && let Err(e) = upstream.write_all(&sent).await
        {
            tracing::debug!(error = %e, "tunnel ended with an error");
            return;
        }
        // A view of hyper's whole read buffer.
        drop(sent);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        let watchdog = async {
            loop {
                let at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                tokio::time::sleep_until(at).await;
                let quiet = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if Instant::now() >= quiet {
                    return;
                }
            }
        };
        tokio::select! {
            result = copy => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "tunnel ended with an error");
                }
            }
            () = watchdog => tracing::debug!("tunnel idle for the tunnel timeout; closed"),
        }
    });
}

/// The 101 to send the client: the replica's head with its hop-by-hop
/// headers other than the upgrade's own.
pub(super) fn switching(head: &Response<hyper::body::Incoming>) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    for (name, value) in head.headers() {
        if !super::headers::is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(upgrade) = head.headers().get(header::UPGRADE) {
        keep_upgrade_headers(headers, upgrade.clone());
    }
    response
}

/// An upgraded connection that stamps the time of every byte read, so a
/// watchdog can close a tunnel silent both ways.
struct Stamped<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Stamped<T> {
    fn new(inner: T, last: Arc<AtomicU64>, epoch: Instant) -> Self {
        Self { inner, last, epoch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(Version::HTTP_11, &h));
        assert!(!wants_upgrade(Version::HTTP_10, &h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!wants_upgrade(Version::HTTP_11, &h));
        h.remove(header::UPGRADE);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        assert!(!wants_upgrade(Version::HTTP_11, &h));
    }
}
