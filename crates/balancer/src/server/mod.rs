//! The listeners: accept client connections and serve HTTP/1.1 on them.
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
//! half-closed clients still getting their answer. Shutdown stops
//! accepting, lets requests in flight finish (bounded by the caller), and
//! closes idle keep-alive connections.

pub mod io;
pub mod limit;
pub mod request;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::{
    activity::{Activity, RequestGuard},
    admin::{self, App},
    error::failure,
    metrics::Metrics,
    proxy::ClientInfo,
};
use io::{ClientIo, ClientTimeouts};

/// How a listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub timeouts: ClientTimeouts,
    /// Largest request head accepted (hyper's read buffer).
    pub max_header_size: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish at shutdown.
    pub drain: Duration,
    /// What this listener serves.
    pub role: Role,
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

/// Serves `listener` until `stop` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stop: CancellationToken,
    options: ServeOptions,
) {
    let router = admin::router(app.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // Head and idle timeouts are `io::ClientIo`'s: hyper's own header
        // timer also runs while a kept-alive connection idles.
        .header_read_timeout(None)
        .max_buf_size(options.max_header_size)
        .half_close(true)
        .keep_alive(true);
    let cap = limit::ConnectionCap::new(options.max_connections);
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
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        let io = ClientIo::new(tcp, options.timeouts, activity.clone());
        let service = hyper::service::service_fn({
            let app = app.clone();
            let router = router.clone();
            let role = options.role;
            move |req| handle(app.clone(), &router, role, client, &activity, req)
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let metrics = app.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = metrics.connection_opened();
            if let Err(e) = conn.await {
                tracing::trace!(%client, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// One request: its head checked, then the balancer's own endpoints to the
/// router and the rest to the proxy, as the listener's role says.
fn handle(
    app: Arc<App>,
    router: &Router,
    role: Role,
    client: SocketAddr,
    activity: &Arc<Activity>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<> {
    let guard = activity.start();
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
        if let Err(bad) = checked {
            Metrics::inc(&app.metrics.client_bad_heads);
            return Ok(refuse(bad, guard));
        }
        Ok(match router {
            Some(router) => {
                let response = router.oneshot(req.map(Body::new)).await?;
                // Small, and sent at once: the request ends with it.
                drop(guard);
                response
            }
            None => {
                let info = ClientInfo {
                    addr: client,
                    proto: "http",
                };
                app.proxy.forward(info, req, Some(guard)).await
            }
        })
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
