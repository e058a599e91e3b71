//! One HTTP/1.1 exchange with a replica, on an idle connection from its
//! pool ([`crate::conns`]) or on a new one. What this knows that a pooled
//! client hides: whether the connection was reused (a reused one that
//! closed before answering is stale, not the replica's failure) and whether
//! the request left at all (a request the connection never took is sent on
//! another whatever its method).

use std::{fmt, task::Poll, time::Duration};

use axum::{BoxError, body::Body};
use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http1::Builder};
use hyper_util::rt::TokioIo;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::{conns::Link, replica::Replica};

/// How connections to replicas are made.
#[derive(Debug, Clone)]
pub(super) struct Connect {
    pub h1: Builder,
    pub timeout: Duration,
    /// TCP keep-alive probes start after this much silence.
    pub keepalive: Duration,
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
/// connection it came on, which the response body drives from then on and
/// returns to the pool once the body has ended.
pub(super) async fn exchange(
    connect: &Connect,
    replica: &Replica,
    mut req: Request<Body>,
    max_idle: Duration,
) -> Result<(Response<Incoming>, Link), Failure> {
    loop {
        let (mut link, reused) = match replica.conns.take(max_idle) {
            Some(link) => (link, true),
            None => (connect.open(replica).await?, false),
        };
        let mut sending = std::pin::pin!(link.sender.try_send_request(req));
        let sent = std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the
            // answer that `sending` then finds.
            if let Poll::Ready(Err(e)) = link.drive(cx) {
                tracing::trace!(replica = %replica.name, error = %e, "upstream connection ended with an error");
            }
            sending.as_mut().poll(cx)
        })
        .await;
        match sent {
            Ok(response) => return Ok((response, link)),
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
    /// A new connection to `replica`.
    async fn open(&self, replica: &Replica) -> Result<Link, Failure> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(replica.addr))
            .await
            .map_err(|_| Failure::Connect(format!("timed out after {:?}", self.timeout)))?
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let _ = SockRef::from(&stream)
            .set_tcp_keepalive(&TcpKeepalive::new().with_time(self.keepalive));
        let (sender, conn) = self
            .h1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        Ok(Link::new(sender, conn))
    }
}

/// Whether the connection closed before any response came (the error a
/// request gets when the replica closed an idle connection under it).
pub(super) fn closed_before_answer(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed()
}
