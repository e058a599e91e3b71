//! One client connection, from its accept to its end: the wait for its
//! first bytes (which also tell HTTP/1.1 from h2c on the plain listener),
//! the TLS handshake, then HTTP/1.1 or HTTP/2 until it ends or shutdown
//! asks it to finish what is in flight. Plain HTTP/1.1 is served by our
//! own server side ([`h1`]) and, for what that leaves to hyper, by hyper's;
//! TLS and HTTP/2 by hyper's.
//!
//! A plain HTTP/1.1 connection hyper serves is parked once it idles for
//! [`PARK_AFTER`], as idle upstream connections are (`conns`): hyper lets
//! go of it between two requests, its state (buffers, the in-flight slot,
//! about 30 KiB) is dropped, and the connection goes back to [`h1`], with
//! whatever hyper had already read given back first. hyper hands a socket
//! back only on a connection served without its upgrade support, so
//! upgrades (WebSocket) take the socket the same way, through the
//! tunnel's [`Handover`]. TLS connections are not parked:
//! their session holds state of its own that readiness of the socket does
//! not show.

use std::{pin::Pin, sync::Arc};

use axum::{Router, body::Body};
use bytes::Bytes;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{ServeOptions, h1, handle, io::ClientIo};
use crate::{
    activity::Activity,
    admin::App,
    cancel,
    metrics::Metrics,
    proxy::{ClientInfo, Handover},
    tls::Tls,
};

/// How long a plain HTTP/1.1 connection idles before it is parked; the
/// upstream pool's own threshold, for the same reason: a busy connection
/// never idles that long, so the hot path never rebuilds hyper's state.
pub const PARK_AFTER: std::time::Duration = crate::conns::PARK_AFTER;

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

/// What every connection of a listener shares.
pub(super) struct Listener {
    pub(super) app: Arc<App>,
    pub(super) router: Router,
    pub(super) builders: Builders,
    pub(super) tls: Option<Tls>,
    pub(super) options: ServeOptions,
    /// Shutdown: the connection finishes what is in flight, then closes.
    pub(super) stop: CancellationToken,
}

/// What serving one client connection needs: kept small, as a connection
/// that has sent nothing yet costs this, its socket and a timer.
pub(super) struct Connection {
    pub(super) listener: Arc<Listener>,
    pub(super) client: ClientInfo,
}

/// HTTP/2's connection preface (RFC 9113 3.4), what a client speaking it
/// with prior knowledge sends first. No HTTP/1 request line starts `PRI`.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's first bytes, read to learn that it is in use and, on the
/// plain listener, which HTTP it speaks; handed back to hyper by
/// [`ClientIo`] as if unread.
struct First {
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
    fn as_slice(&self) -> &[u8] {
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
    /// `permit`: its place under the listener's connection cap.
    pub(super) async fn run(self, tcp: TcpStream, permit: OwnedSemaphorePermit) {
        let _held = (permit, self.listener.app.metrics.connection_opened());
        let accepted = Instant::now();
        let shared = &*self.listener;
        let first = tokio::select! {
            biased;
            first = First::read(&tcp, shared.tls.is_none()) => match first {
                Ok(Some(first)) => first,
                Ok(None) | Err(_) => return,
            },
            () = tokio::time::sleep_until(accepted + shared.options.timeouts.header_read) => {
                tracing::trace!(client = %self.client.addr, "no request head in time");
                return;
            }
            () = shared.stop.cancelled() => return,
        };
        Box::pin(self.serve(tcp, first, accepted)).await;
    }

    /// Serves the connection accepted at `accepted` whose `first` bytes
    /// have been read: TLS handshake if any, then HTTP until it ends.
    async fn serve(self, tcp: TcpStream, first: First, accepted: Instant) {
        let Self {
            listener,
            client: info,
        } = self;
        let Listener {
            app,
            builders,
            tls,
            options,
            stop,
            ..
        } = &*listener;
        let options = *options;
        let client = info.addr;
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new(options.max_abandoned);
        let h2 = first.is_h2_preface();
        let first = Bytes::copy_from_slice(first.as_slice());
        let io = ClientIo::new(tcp, options.timeouts, activity.clone(), accepted, first);
        let handover = Handover::default();
        let service = hyper::service::service_fn({
            let listener = listener.clone();
            let role = options.role;
            let activity = activity.clone();
            let handover = handover.clone();
            move |req| {
                // Boxed: hyper hands a connection back (to park it) only if
                // its service's future is `Unpin`. One allocation a request,
                // where hyper would otherwise keep room for the future on
                // every connection, busy or not.
                Box::pin(handle(
                    listener.app.clone(),
                    &listener.router,
                    role,
                    info,
                    &activity,
                    &handover,
                    req,
                ))
            }
        });
        let http = Http {
            builders,
            stop,
            activity: &activity,
        };
        let handshake_by = accepted + options.timeouts.header_read;
        let served = async {
            match tls.clone() {
                // Boxed: HTTP/2's connection state is several times an
                // HTTP/1.1 one's, and inline it would size every task.
                None if h2 => Box::pin(http.h2(TokioIo::new(io), service)).await,
                None => {
                    let own = h1::Server {
                        listener: &listener,
                        info,
                        activity: &activity,
                        handover: &handover,
                        metrics: &app.metrics,
                        stop,
                    };
                    http.plain_h1(io, service, &own).await
                }
                // Boxed: a TLS connection's state (the handshake, the
                // rustls session) is larger than a plain one's, and
                // inline it would size every plain connection's task.
                Some(tls) => {
                    Box::pin(async move {
                        let stream = tokio::time::timeout_at(handshake_by, tls.acceptor.accept(io))
                            .await
                            .map_err(|_| "TLS handshake timed out".to_owned())?
                            .map_err(|e| format!("TLS handshake failed: {e}"))?;
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            return http.h2(TokioIo::new(stream), service).await;
                        }
                        http.h1(stream, service, &handover, false).await.map(|_| ())
                    })
                    .await
                }
            }
        };
        // Polled on every wake of the connection: see `cancel`.
        let killed = cancel::cancelled(activity.kill());
        tokio::select! {
            result = served => if let Err(e) = result {
                tracing::trace!(%client, error = %e, "client connection ended with an error");
            },
            () = killed => {
                Metrics::inc(&app.metrics.abandoning_connections);
                tracing::debug!(%client, abandoned = activity.abandoned(), "connection closed for abandoning its requests");
            }
        }
    }
}

/// What serving HTTP on one connection needs besides the connection.
struct Http<'a> {
    builders: &'a Builders,
    /// Shutdown: requests in flight finish, then the connection closes.
    stop: &'a CancellationToken,
    activity: &'a Activity,
}

/// How serving HTTP/1.1 with hyper ended.
enum H1End<T> {
    /// The connection closed, or went to a tunnel.
    Done,
    /// Idle for [`PARK_AFTER`]: hyper let go of the socket, which is given
    /// back with what hyper had read of it.
    Parked(T, Bytes),
}

impl Http<'_> {
    /// Serves HTTP/2 on `io` until the connection ends; once `stop` fires,
    /// streams in flight finish and the connection closes (GOAWAY).
    async fn h2<I, S>(&self, io: I, service: S) -> Result<(), String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = Body> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = self.builders.h2.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => return result.map_err(|e| e.to_string()),
            () = cancel::cancelled(self.stop) => {}
        }
        conn.as_mut().graceful_shutdown();
        conn.await.map_err(|e| e.to_string())
    }

    /// Serves HTTP/1.1 on a plain connection until it ends: our own server
    /// side ([`h1`]) for what it serves, hyper for the rest from the first
    /// byte of a request it cannot, until hyper parks the connection.
    async fn plain_h1<S>(
        &self,
        mut io: ClientIo<TcpStream>,
        service: S,
        own: &h1::Server<'_>,
    ) -> Result<(), String>
    where
        S: hyper::service::HttpService<Incoming, ResBody = Body> + Clone + Unpin + Send + 'static,
        S::Future: Unpin + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            match own.run(&mut io).await.map_err(|e| e.to_string())? {
                h1::End::Closed => return Ok(()),
                h1::End::Hyper(read) => io.replay(&read),
            }
            // Boxed: built only for a request hyper serves, and let go of
            // once the connection idles again.
            let served = Box::pin(self.h1(io, service.clone(), own.handover, true));
            let (back, read) = match served.await? {
                H1End::Done => return Ok(()),
                H1End::Parked(io, read) => (io, read),
            };
            io = back;
            io.replay(&read);
            drop(read);
            crate::memory::released();
        }
    }

    /// Serves HTTP/1.1 on `io` with hyper until the connection ends, goes
    /// to a tunnel, or (`park`) idles for [`PARK_AFTER`] between requests.
    /// Once `stop` fires, the request in flight finishes and the
    /// connection closes.
    async fn h1<T, S>(
        &self,
        io: T,
        service: S,
        handover: &Handover,
        park: bool,
    ) -> Result<H1End<T>, String>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = Body> + Unpin + Send + 'static,
        S::Future: Unpin + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Boxed: while the connection is parked, none of hyper's state is
        // held, nor room for it in the task.
        let mut conn = Box::new(self.builders.h1.serve_connection(TokioIo::new(io), service));
        let mut stopping = std::pin::pin!(cancel::cancelled(self.stop));
        let mut idle_check = std::pin::pin!(tokio::time::sleep(PARK_AFTER));
        let (mut stopped, mut parked) = (false, false);
        let served = std::future::poll_fn(|cx| {
            if !stopped && stopping.as_mut().poll(cx).is_ready() {
                stopped = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            // Checked once a PARK_AFTER at most, not on every request.
            while park && !stopped && !parked && idle_check.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let due = if self.activity.busy() {
                    now + PARK_AFTER
                } else {
                    self.activity.idle_since() + PARK_AFTER
                };
                if due <= now {
                    // hyper is between two requests: it closes the
                    // connection's HTTP state and hands the socket back.
                    parked = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                } else {
                    idle_check.as_mut().reset(due);
                }
            }
            conn.poll_without_shutdown(cx)
        })
        .await;
        served.map_err(|e| e.to_string())?;
        let http1::Parts { io, read_buf, .. } = conn.into_parts();
        // After a 101 the connection is the tunnel's.
        let Err((mut io, read_buf)) = handover.give(io.into_inner(), read_buf) else {
            return Ok(H1End::Done);
        };
        if parked && !stopped {
            return Ok(H1End::Parked(io, read_buf));
        }
        // What hyper does at a connection's end, left to us by
        // `poll_without_shutdown`: FIN (TLS: close_notify first).
        let _ = io.shutdown().await;
        Ok(H1End::Done)
    }
}
