//! One HTTP/1.1 exchange with a replica, on an idle connection from its
//! pool ([`crate::conns`]) or on a new one. What this knows that a pooled
//! client hides: whether the connection was reused (a reused one that
//! closed before answering is stale, not the replica's failure) and whether
//! the request left at all (a request the connection never took is sent on
//! another whatever its method).

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{BoxError, body::Body};
use http::{Request, Response, Uri};
use hyper::{body::Incoming, client::conn::http1::Builder};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpStream;
use tower::Service as _;

use crate::{
    conns::{Taken, Upstream},
    replica::Replica,
};

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
    replica: &Arc<Replica>,
    mut req: Request<Body>,
    max_idle: Duration,
) -> Result<(Response<Incoming>, Upstream), Failure> {
    loop {
        let (mut up, reused) = match replica.conns.take(max_idle) {
            Some(Taken::Ready(up)) => (up, true),
            // A parked socket that cannot be made ready is not the
            // replica's failure: the next one, or a new connection.
            Some(Taken::Parked(io)) => match connect.start(io, replica).await {
                Ok(up) => (up, true),
                Err(_) => continue,
            },
            None => (connect.open(replica).await?, false),
        };
        // A connection comes back as its last body ends; hyper may not
        // have finished with that exchange yet.
        if reused && !up.sender.is_ready() && up.sender.ready().await.is_err() {
            continue;
        }
        match up.sender.try_send_request(req).await {
            Ok(response) => return Ok((response, up)),
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
    async fn open(&self, replica: &Arc<Replica>) -> Result<Upstream, Failure> {
        let uri = Uri::from_maybe_shared(format!("http://{}/", replica.authority))
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let stream = self
            .tcp
            .clone()
            .call(uri)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        self.start(stream, replica).await
    }

    /// HTTP/1.1 over `stream` (new, or parked by the pool), its task
    /// spawned on this thread. When the pool parks the connection the task
    /// hands the socket back to `replica`'s pool, if the replica is still
    /// there; otherwise the connection closes when its task ends.
    async fn start(
        &self,
        stream: TokioIo<TcpStream>,
        replica: &Arc<Replica>,
    ) -> Result<Upstream, Failure> {
        let (sender, conn) = self
            .h1
            .handshake(stream)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let (up, park) = Upstream::new(sender);
        let home = Arc::downgrade(replica);
        tokio::spawn(async move {
            match conn.without_shutdown().await {
                Ok(parts) if park.load(Ordering::Relaxed) && parts.read_buf.is_empty() => {
                    if let Some(replica) = home.upgrade() {
                        replica.conns.park(parts.io);
                    }
                    crate::memory::released();
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(replica) = home.upgrade() {
                        tracing::trace!(replica = %replica.name, error = %e, "upstream connection ended with an error");
                    }
                }
            }
        });
        Ok(up)
    }
}

/// Whether the connection closed before any response came (the error a
/// request gets when the replica closed an idle connection under it).
pub(super) fn closed_before_answer(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed()
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use http_body_util::BodyExt as _;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// A replica answering every request `ok` on kept-alive connections,
    /// closing each `close_after` its last answer if given; with the count
    /// of connections it accepted.
    async fn replica(close_after: Option<Duration>) -> (Arc<Replica>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let read = match close_after {
                            Some(wait) => tokio::time::timeout(wait, socket.read(&mut chunk))
                                .await
                                .unwrap_or(Ok(0)),
                            None => socket.read(&mut chunk).await,
                        };
                        let Ok(n @ 1..) = read else { return };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if socket.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let replica = Arc::new(Replica::new("r", 1, addr, 1, 0));
        (replica, accepted)
    }

    fn connect() -> Connect {
        Connect {
            tcp: HttpConnector::new(),
            h1: Builder::new(),
        }
    }

    /// One GET through the pool; its connection goes back when the body ends.
    async fn get(connect: &Connect, replica: &Arc<Replica>) {
        let req = Request::get("/").body(Body::empty()).expect("request");
        let (resp, up) = exchange(connect, replica, req, LONG)
            .await
            .unwrap_or_else(|e| panic!("exchange: {e}"));
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        replica.conns.put(up, 8);
    }

    /// Parks every idle connection and waits for their tasks to hand the
    /// sockets back.
    async fn park_all(replica: &Replica) {
        let idle = replica.conns.idle();
        replica.conns.sweep(LONG, Duration::ZERO);
        for _ in 0..200 {
            if replica.conns.parked() == idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} of {idle} parked", replica.conns.parked());
    }

    #[tokio::test]
    async fn a_parked_socket_serves_the_next_request() {
        let (replica, accepted) = replica(None).await;
        let connect = connect();
        get(&connect, &replica).await;
        park_all(&replica).await;
        assert_eq!(replica.conns.parked(), 1);
        get(&connect, &replica).await;
        get(&connect, &replica).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the parked socket was not reused"
        );
        assert_eq!(replica.conns.parked(), 0);
    }

    #[tokio::test]
    async fn a_parked_socket_the_replica_closed_is_not_handed_out() {
        let (replica, accepted) = replica(Some(Duration::from_millis(300))).await;
        let connect = connect();
        get(&connect, &replica).await;
        park_all(&replica).await;
        // The replica closes it meanwhile; the next request must not fail.
        tokio::time::sleep(Duration::from_millis(600)).await;
        get(&connect, &replica).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
