//! The listeners: accept client connections and serve HTTP/1.1 and HTTP/2
//! on them: on the plain listener HTTP/2 with prior knowledge (h2c) beside
//! HTTP/1.1, told apart by the first bytes, on the TLS listener whichever
//! ALPN chose. This module accepts and drains; `conn.rs` serves one
//! connection, which costs its socket and a small future until its first
//! bytes come (hyper's state for it is built only then).
//!
//! The proxy path is the hot path, so it is served without a router: on a
//! plain connection most HTTP/1.1 requests by our own server side
//! ([`h1`]), the rest by hyper directly. A request whose path is not the
//! balancer's own ([`admin::is_admin_path`]) goes straight to
//! [`Proxy::forward`](crate::proxy::Proxy::forward) with the client's
//! address in hand. Only the admin API and `/lb/` go through
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

mod conn;
pub(crate) mod h1;
pub mod io;
pub mod limit;
pub mod request;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::{
    activity::{Activity, RequestGuard},
    admin::{self, App},
    config::Limits,
    error::failure,
    metrics::Metrics,
    proxy::{ClientInfo, Handover},
    tls::Tls,
};
use io::ClientTimeouts;

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
                body: limits.client_body_timeout,
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
    let shared = Arc::new(conn::Listener {
        router: admin::router(app.clone()),
        builders: conn::Builders::new(&options),
        app,
        tls,
        options,
        stop: stop.clone(),
    });
    // Every connection, to wait for at shutdown.
    let open = TaskTracker::new();
    let cap = limit::ConnectionCap::new(options.max_connections);
    let proto = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
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
        let conn = conn::Connection {
            listener: shared.clone(),
            client: ClientInfo {
                addr: client,
                proto,
            },
        };
        let open = open.clone();
        // Built where the connection is served (a worker thread, see
        // `workers`): its timers and I/O belong to that thread's runtime.
        crate::workers::serve(tcp, move |tcp| open.track_future(conn.run(tcp, permit)));
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

/// One request: its head checked, then the balancer's own endpoints to the
/// router and the rest to the proxy, as the listener's role says.
fn handle<B>(
    app: Arc<App>,
    router: &Router,
    role: Role,
    info: ClientInfo,
    activity: &Arc<Activity>,
    handover: &Handover,
    mut req: Request<B>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    let guard = activity.start();
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
    {
        // hyper saw an upgrade request (HTTP/1.1 with `Upgrade`): should
        // the replica switch, the tunnel takes the connection from here.
        req.extensions_mut().insert(handover.clone());
    }
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
