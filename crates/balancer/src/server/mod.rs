//! The listeners: accept client connections and serve HTTP/1.1 and HTTP/2
//! on them: on the plain listener HTTP/2 with prior knowledge (h2c) beside
//! HTTP/1.1, told apart by the first bytes (`First`), on the TLS listener
//! whichever ALPN chose. A connection costs its socket and a small future
//! until those bytes come; hyper's state for it is built only then.
//!
//! The proxy path is the hot path, so it is served by hyper directly: a
//! request whose path is not the balancer's own ([`admin::is_admin_path`])
//! goes straight to [`Proxy::forward`](crate::proxy::Proxy::forward) with
//! the client's address in hand. Only the admin API and `/lb/` go through
//! the axum router. With `--admin-listen` the admin API has a listener of
//! its own and the data listener forwards every path.
//!
//! What keeps one client from hurting the others here: a cap on open
//! connections (at the cap, new ones wait in the kernel's backlog, as with
//! HAProxy's maxconn), the client-side timeouts of [`io`], a cap on the
//! request head's size (431 above it), the `Host` rules of [`request`], and
//! half-closed clients still getting their answer, HTTP/2 limits (streams,
//! header list, flow-control windows), and connections that abandon most
//! of their requests (Rapid Reset) closed (`activity`). The TLS handshake
//! happens in the connection's own task, bounded by the head timeout, never
//! in the accept loop. Shutdown stops accepting, lets requests in flight
//! finish (bounded by the caller), and closes idle keep-alive connections.

pub mod io;
pub mod limit;
pub mod request;

use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::{
    activity::{Activity, RequestGuard},
    admin::{self, App},
    config::Limits,
    error::failure,
    metrics::Metrics,
    proxy::ClientInfo,
    tls::Tls,
};
use io::{ClientIo, ClientTimeouts};

/// How a listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub timeouts: ClientTimeouts,
    /// Largest request head accepted (hyper's read buffer, HTTP/2's header
    /// list size).
    pub max_header_size: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish at shutdown.
    pub drain: Duration,
    /// What this listener serves.
    pub role: Role,
    pub h2: H2Limits,
    /// Abandoned requests after which a connection is closed.
    pub max_abandoned: u32,
}

/// HTTP/2 limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct H2Limits {
    pub max_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
}

impl ServeOptions {
    /// The options of the data listener, from the limits.
    pub fn new(limits: &Limits, max_connections: usize, drain: Duration, role: Role) -> Self {
        Self {
            timeouts: ClientTimeouts {
                idle: limits.client_idle_timeout,
                header_read: limits.header_read_timeout,
                send: limits.send_timeout,
            },
            max_header_size: usize::try_from(limits.max_header_size).unwrap_or(usize::MAX),
            max_connections,
            drain,
            role,
            h2: H2Limits {
                max_streams: limits.h2_max_streams,
                stream_window: limits.h2_stream_window,
                connection_window: limits.h2_connection_window,
            },
            max_abandoned: limits.max_abandoned,
        }
    }
}

/// How connections are served: HTTP/1.1 and HTTP/2, with the limits.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(options: &ServeOptions) -> Self {
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

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Replicas' paths, and the admin API on the same port (the spec's
    /// single port).
    Both,
    /// Replicas' paths only: every path is forwarded (`--admin-listen`).
    Data,
    /// The admin API only.
    Admin,
}

/// Serves `listener` until `stop` is cancelled, then drains. With `tls`,
/// every connection is a TLS one.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stop: CancellationToken,
    options: ServeOptions,
    tls: Option<Tls>,
) {
    let router = admin::router(app.clone());
    // Every connection, to wait for at shutdown.
    let open = TaskTracker::new();
    let builders = Arc::new(Builders::new(&options));
    let cap = limit::ConnectionCap::new(options.max_connections);
    let proto = if tls.is_some() { "https" } else { "http" };
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = cap.acquire() => permit,
        };
        let (tcp, client) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let conn = Connection {
            app: app.clone(),
            router: router.clone(),
            builders: builders.clone(),
            tls: tls.clone(),
            options,
            client: ClientInfo {
                addr: client,
                proto,
            },
            stop: stop.clone(),
        };
        let open = open.clone();
        // Built where the connection is served (a worker thread, see
        // `workers`): its timers and I/O belong to that thread's runtime.
        crate::workers::serve(tcp, move |tcp| {
            open.track_future(async move {
                let _permit = permit;
                let _open = conn.app.metrics.connection_opened();
                let accepted = Instant::now();
                // Until its first bytes arrive a connection holds its socket
                // and this small future only. hyper's connection state (over
                // 2 KiB) is built then, boxed: connections opened ahead of
                // use (a client's spare ones, pre-connects, a flood of empty
                // ones) cost little. The head timeout runs from the accept.
                let first = tokio::select! {
                    biased;
                    first = First::read(&tcp, conn.tls.is_none()) => match first {
                        Ok(Some(first)) => first,
                        Ok(None) | Err(_) => return,
                    },
                    () = tokio::time::sleep_until(accepted + options.timeouts.header_read) => {
                        tracing::trace!(client = %conn.client.addr, "no request head in time");
                        return;
                    }
                    () = conn.stop.cancelled() => return,
                };
                Box::pin(conn.serve(tcp, first, accepted)).await;
            })
        });
    }
    drop(listener);
    open.close();
    if tokio::time::timeout(options.drain, open.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// What serving one client connection needs.
struct Connection {
    app: Arc<App>,
    router: Router,
    builders: Arc<Builders>,
    tls: Option<Tls>,
    options: ServeOptions,
    client: ClientInfo,
    /// Shutdown: the connection finishes what is in flight, then closes.
    stop: CancellationToken,
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

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the client opened with HTTP/2's preface.
    fn is_h2_preface(&self) -> bool {
        self.as_slice() == H2_PREFACE
    }
}

impl Connection {
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

/// One request: its head checked, then the balancer's own endpoints to the
/// router and the rest to the proxy, as the listener's role says.
fn handle(
    app: Arc<App>,
    router: &Router,
    role: Role,
    info: ClientInfo,
    activity: &Arc<Activity>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<> {
    let guard = activity.start();
    let answering = activity.answering();
    let client = info.addr;
    let checked = request::check(&mut req);
    let admin = match role {
        Role::Admin => true,
        Role::Data => false,
        Role::Both => admin::is_admin_path(req.uri().path()),
    };
    let router = admin.then(|| {
        req.extensions_mut().insert(ConnectInfo(client));
        router.clone()
    });
    async move {
        let response = if let Err(bad) = checked {
            Metrics::inc(&app.metrics.client_bad_heads);
            // Logged and given an id like any request: it is the client's.
            let arrival = app
                .proxy
                .arrive(&mut req, info, tokio::time::Instant::now());
            app.proxy.depart(arrival, refuse(bad, guard))
        } else {
            match router {
                Some(router) => {
                    let arrival = app
                        .proxy
                        .arrive(&mut req, info, tokio::time::Instant::now());
                    let response = router.oneshot(req.map(Body::new)).await?;
                    // Small, and sent at once: the request ends with it.
                    drop(guard);
                    app.proxy.depart(arrival, response)
                }
                None => app.proxy.forward(info, req, Some(guard)).await,
            }
        };
        answering.answered();
        Ok(response)
    }
}

/// A 400 for a head that breaks the `Host` rules; the connection closes.
fn refuse(bad: request::BadHead, guard: RequestGuard) -> Response<Body> {
    drop(guard);
    let mut response = failure(StatusCode::BAD_REQUEST, bad);
    response
        .headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// Errors that concern one connection are skipped; anything else (out of
/// file descriptors) is waited out so the loop does not spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
