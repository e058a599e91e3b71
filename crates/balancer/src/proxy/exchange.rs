//! One HTTP/1.1 exchange with a replica, on an idle connection from its
//! pool ([`crate::conns`]) or on a new one. What this knows that a pooled
//! client hides: whether the connection was reused (a reused one that
//! closed before answering is stale, not the replica's failure) and whether
//! the request left at all (a request the connection never took is sent on
//! another whatever its method).

use std::{fmt, time::Duration};

use axum::{BoxError, body::Body};
use http::{Request, Response, Uri};
use hyper::{
    body::Incoming,
    client::conn::http1::{Builder, SendRequest},
};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service as _;

use crate::replica::Replica;

/// How connections to replicas are made: the same `HttpConnector` (connect
/// timeout, `TCP_NODELAY`, keep-alive probes) as the h2c client's, then an
/// HTTP/1.1 handshake.
#[derive(Debug, Clone)]
pub(super) struct Connect {
    pub tcp: HttpConnector,
    pub h1: Builder,
}

/// Why an exchange failed.
pub(super) enum Failure {
    /// No connection could be made: nothing was sent.
    Connect(String),
    /// A reused connection closed before any answer (the replica's idle
    /// timeout raced the request): not the replica's failure.
    Stale(BoxError),
    /// The request failed after it may have reached the replica.
    Failed(BoxError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Stale(e) | Self::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Sends `req` to `replica` and returns the response head with the
/// connection it came on (for the pool once the body has ended).
pub(super) async fn exchange(
    connect: &Connect,
    replica: &Replica,
    mut req: Request<Body>,
    max_idle: Duration,
) -> Result<(Response<Incoming>, SendRequest<Body>), Failure> {
    loop {
        let (mut sender, reused) = match replica.conns.take(max_idle) {
            Some(sender) => (sender, true),
            None => (connect.open(replica).await?, false),
        };
        // A connection comes back as its last body ends; hyper may not
        // have finished with that exchange yet.
        if reused && !sender.is_ready() && sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(response) => return Ok((response, sender)),
            Err(mut e) => match e.take_message() {
                // The connection closed before taking the request.
                Some(unsent) if reused => req = unsent,
                _ => {
                    let e = e.into_error();
                    return Err(if reused && closed_before_answer(&e) {
                        Failure::Stale(e.into())
                    } else {
                        Failure::Failed(e.into())
                    });
                }
            },
        }
    }
}

impl Connect {
    /// A new connection to `replica`, its task spawned on this thread.
    async fn open(&self, replica: &Replica) -> Result<SendRequest<Body>, Failure> {
        let uri = Uri::from_maybe_shared(format!("http://{}/", replica.authority))
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let stream = self
            .tcp
            .clone()
            .call(uri)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let (sender, conn) = self
            .h1
            .handshake(stream)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let name = replica.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(replica = %name, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Whether the connection closed before any response came (the error a
/// request gets when the replica closed an idle connection under it).
pub(super) fn closed_before_answer(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed()
}
