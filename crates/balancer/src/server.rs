//! The listener: accepts client connections and serves HTTP/1.1 on them.
//!
//! The proxy path is the hot path, so it is served by hyper directly: a
//! request whose path is not the balancer's own ([`admin::is_admin_path`])
//! goes straight to [`Proxy::forward`](crate::proxy::Proxy::forward) with
//! the client's address in hand. Only the admin API and `/lb/` go through
//! the axum router. Going through the router for every request cost, per
//! request, a router clone, a boxed body, and an extension map allocated just
//! to carry the client's address (see `analysis/bench/profile.md`).
//!
//! Each connection has a header read timeout, so a client that opens a
//! connection and sends nothing (or a header a byte at a time) cannot hold
//! it forever. Shutdown stops accepting, lets requests in flight finish
//! (bounded by the caller), and closes idle keep-alive connections.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::admin::{self, App};

/// Timeouts of client connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeTimeouts {
    /// How long a client may take to send a request's headers, counted from
    /// the moment the connection is ready for its next request (so it also
    /// bounds how long an idle keep-alive connection stays open).
    pub header_read: Duration,
    /// How long requests in flight may take to finish at shutdown.
    pub drain: Duration,
}

/// Serves `listener` until `stop` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stop: CancellationToken,
    timeouts: ServeTimeouts,
) {
    let router = admin::router(app.clone());
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    loop {
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
        let service = hyper::service::service_fn({
            let app = app.clone();
            let router = router.clone();
            move |req| handle(app.clone(), &router, client, req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(%client, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// One request: the balancer's own endpoints to the router, the rest to the
/// proxy.
fn handle(
    app: Arc<App>,
    router: &Router,
    client: SocketAddr,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<> {
    let admin = admin::is_admin_path(req.uri().path()).then(|| {
        req.extensions_mut().insert(ConnectInfo(client));
        router.clone()
    });
    async move {
        Ok(match admin {
            Some(router) => router.oneshot(req.map(Body::new)).await?,
            None => app.proxy.forward(client, req).await,
        })
    }
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
