//! One client connection, from its accept to its end: the wait for its
//! first bytes (which also tell HTTP/1.1 from h2c on the plain listener),
//! the TLS handshake, then hyper's HTTP/1.1 (with upgrades) or HTTP/2
//! until it ends or shutdown asks it to finish what is in flight.

use std::{pin::Pin, sync::Arc};

use axum::{Router, body::Body};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{ServeOptions, handle, io::ClientIo};
use crate::{activity::Activity, admin::App, metrics::Metrics, proxy::ClientInfo, tls::Tls};

/// How connections are served: HTTP/1.1 and HTTP/2, with the limits.
pub(super) struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub(super) fn new(options: &ServeOptions) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Head and idle timeouts are `io::ClientIo`'s: hyper's own header
            // timer also runs while a kept-alive connection idles.
            .header_read_timeout(None)
            .max_buf_size(options.max_header_size)
            .half_close(true)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(options.h2.max_streams)
            .max_header_list_size(u32::try_from(options.max_header_size).unwrap_or(u32::MAX))
            .initial_stream_window_size(options.h2.stream_window)
            .initial_connection_window_size(options.h2.connection_window)
            // h2's own Rapid Reset guard: streams reset before being accepted.
            .max_pending_accept_reset_streams(20);
        Self { h1, h2 }
    }
}

/// What serving one client connection needs.
pub(super) struct Connection {
    pub(super) app: Arc<App>,
    pub(super) router: Router,
    pub(super) builders: Arc<Builders>,
    pub(super) tls: Option<Tls>,
    pub(super) options: ServeOptions,
    pub(super) client: ClientInfo,
    /// Shutdown: the connection finishes what is in flight, then closes.
    pub(super) stop: CancellationToken,
}

/// HTTP/2's connection preface (RFC 9113 3.4), what a client speaking it
/// with prior knowledge sends first. No HTTP/1 request line starts `PRI`.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's first bytes, read to learn that it is in use and, on the
/// plain listener, which HTTP it speaks; handed back to hyper by
/// [`ClientIo`] as if unread.
pub(crate) struct First {
    bytes: [u8; H2_PREFACE.len()],
    len: usize,
}

impl First {
    /// Reads until the connection's first bytes tell HTTP/1.1 from HTTP/2
    /// (`sniff`; one or two bytes for a request line, the whole preface for
    /// HTTP/2), or until any byte has come (TLS: ALPN tells). `None` if the
    /// client closed without sending anything.
    async fn read(tcp: &TcpStream, sniff: bool) -> std::io::Result<Option<Self>> {
        let mut first = Self {
            bytes: [0; H2_PREFACE.len()],
            len: 0,
        };
        while first.len < first.bytes.len() {
            tcp.readable().await?;
            match tcp.try_read(&mut first.bytes[first.len..]) {
                Ok(0) => break,
                Ok(n) => first.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            if !sniff || !H2_PREFACE.starts_with(first.as_slice()) {
                break;
            }
        }
        Ok((first.len > 0).then_some(first))
    }

    /// The bytes read.
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the client opened with HTTP/2's preface.
    fn is_h2_preface(&self) -> bool {
        self.as_slice() == H2_PREFACE
    }
}

impl Connection {
    /// Serves the connection just accepted as `tcp` until it ends.
    ///
    /// Until its first bytes arrive it holds its socket and this small
    /// future only; hyper's connection state (over 2 KiB) is built then,
    /// boxed: connections opened ahead of use (a client's spare ones,
    /// pre-connects, a flood of empty ones) cost little. The head timeout
    /// runs from the accept.
    pub(super) async fn run(self, tcp: TcpStream) {
        let _open = self.app.metrics.connection_opened();
        let accepted = Instant::now();
        let first = tokio::select! {
            biased;
            first = First::read(&tcp, self.tls.is_none()) => match first {
                Ok(Some(first)) => first,
                Ok(None) | Err(_) => return,
            },
            () = tokio::time::sleep_until(accepted + self.options.timeouts.header_read) => {
                tracing::trace!(client = %self.client.addr, "no request head in time");
                return;
            }
            () = self.stop.cancelled() => return,
        };
        Box::pin(self.serve(tcp, first, accepted)).await;
    }

    /// Serves the connection accepted at `accepted` whose `first` bytes
    /// have been read: TLS handshake if any, then HTTP until it ends.
    async fn serve(self, tcp: TcpStream, first: First, accepted: Instant) {
        let Self {
            app,
            router,
            builders,
            tls,
            options,
            client: info,
            stop,
        } = self;
        let client = info.addr;
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new(options.max_abandoned);
        let h2_preface = first.is_h2_preface();
        let io = ClientIo::new(tcp, options.timeouts, activity.clone(), accepted, first);
        let service = hyper::service::service_fn({
            let app = app.clone();
            let role = options.role;
            let activity = activity.clone();
            move |req| handle(app.clone(), &router, role, info, &activity, req)
        });
        let metrics = app.metrics.clone();
        let handshake_by = accepted + options.timeouts.header_read;
        let served = async {
            match tls {
                None => http(TokioIo::new(io), h2_preface, &builders, service, &stop).await,
                // Boxed: a TLS connection's state (the handshake, the
                // rustls session) is larger than a plain one's, and
                // inline it would size every plain connection's task.
                Some(tls) => {
                    Box::pin(async move {
                        let stream = tokio::time::timeout_at(handshake_by, tls.acceptor.accept(io))
                            .await
                            .map_err(|_| "TLS handshake timed out".to_owned())?
                            .map_err(|e| format!("TLS handshake failed: {e}"))?;
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        http(TokioIo::new(stream), h2, &builders, service, &stop).await
                    })
                    .await
                }
            }
        };
        tokio::select! {
            result = served => if let Err(e) = result {
                tracing::trace!(%client, error = %e, "client connection ended with an error");
            },
            () = activity.killed() => {
                Metrics::inc(&metrics.abandoning_connections);
                tracing::debug!(%client, abandoned = activity.abandoned(), "connection closed for abandoning its requests");
            }
        }
    }
}

/// Serves HTTP/2 (`h2`) or HTTP/1.1 with upgrades on `io` until the
/// connection ends; once `stop` fires, requests in flight finish and the
/// connection closes (HTTP/2: GOAWAY).
async fn http<I, S>(
    io: I,
    h2: bool,
    builders: &Builders,
    service: S,
    stop: &CancellationToken,
) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let result = if h2 {
        let conn = builders.h2.serve_connection(io, service);
        until_stopped(conn, stop, |c| c.graceful_shutdown()).await
    } else {
        let conn = builders.h1.serve_connection(io, service).with_upgrades();
        until_stopped(conn, stop, |c| c.graceful_shutdown()).await
    };
    result.map_err(|e| e.to_string())
}

/// Runs `conn` to its end, asking it to shut down gracefully once `stop`
/// fires.
async fn until_stopped<C, E>(
    conn: C,
    stop: &CancellationToken,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        () = stop.cancelled() => {}
    }
    shutdown(conn.as_mut());
    conn.await
}
