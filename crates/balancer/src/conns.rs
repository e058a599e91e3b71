//! A replica's idle kept-alive HTTP/1.1 connections: our own pool, not
//! hyper-util's pooled client. The idle connections live on the
//! [`Replica`](crate::replica::Replica), so they are found without hashing
//! an address into a shared map, are never shared between replicas, and
//! close when a removed or replaced replica's last request ends. A
//! connection comes back when its response body has ended (the proxy's
//! body wrapper returns it), not through a task spawned per request to
//! wait for it.
//!
//! A connection has no task of its own: the request using it drives it
//! ([`Link`]), in the client connection's task, so the replica's answer
//! wakes that task directly instead of waking a connection task that then
//! wakes it (HAProxy's one pass per stream). An idle connection is driven
//! once when taken, and by the sweep: a replica's close is seen then.
//!
//! The idle list is last in, first out: the connection most recently used
//! is the one least likely to have been closed by the replica's own idle
//! timeout, and the oldest age out at the list's front. There is one list
//! per worker thread ([`crate::workers`]): a connection's task runs on the
//! thread that made it, so a request taking it there wakes no other thread.

use std::{
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::body::Body;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

use crate::workers;

/// hyper's state machine of one connection to a replica.
type Upstream = Connection<TokioIo<TcpStream>, Body>;

/// An HTTP/1.1 connection to a replica: where requests go in, and the
/// connection's state machine, driven by whoever uses it.
pub struct Link {
    pub sender: SendRequest<Body>,
    /// `None` once it has ended (closed, or failed).
    conn: Option<Pin<Box<Upstream>>>,
}

impl Link {
    pub fn new(sender: SendRequest<Body>, conn: Upstream) -> Self {
        Self {
            sender,
            conn: Some(Box::pin(conn)),
        }
    }

    /// Drives the connection: writes what is queued, reads what arrived,
    /// hands it to the response and its body. Ready once the connection
    /// has ended (its outcome, for the log).
    pub fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(Ok(()));
        };
        let done = conn.as_mut().poll(cx);
        if done.is_ready() {
            self.conn = None;
        }
        done
    }

    /// Whether it can take a request now: driven once (so a close by the
    /// replica while it idled is seen), still open, and waiting for one.
    fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
            .is_pending()
            && self.sender.is_ready()
    }

    /// Returns it once its exchange is over. Usually it is at
    /// once; a replica may also answer before the request's body has all
    /// been sent (a 413, or a `return 200` that discards the body), and
    /// then the connection is driven by a task of its own until the body
    /// has gone, so the client's upload does not stall behind it.
    /// `put` returns it (to its replica's [`Conns`]).
    pub fn release(mut self, put: impl FnOnce(Self) + Send + 'static) {
        // Waiting already: taking it drives it once anyway.
        if self.sender.is_ready() || self.usable() {
            put(self);
            return;
        }
        if self.conn.is_none() {
            return;
        }
        tokio::spawn(async move {
            let idle = std::future::poll_fn(|cx| match self.drive(cx) {
                Poll::Ready(_) => Poll::Ready(false),
                Poll::Pending if self.sender.is_ready() => Poll::Ready(true),
                Poll::Pending => Poll::Pending,
            })
            .await;
            if idle {
                put(self);
            }
        });
    }
}

/// One idle connection and since when it has been idle.
struct Idle {
    link: Link,
    since: Instant,
}

/// Idle connections to one replica, one list per worker thread.
pub struct Conns {
    slots: Box<[Mutex<Vec<Idle>>]>,
}

impl Default for Conns {
    fn default() -> Self {
        Self {
            slots: (0..workers::count()).map(|_| Mutex::default()).collect(),
        }
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns").field("idle", &self.idle()).finish()
    }
}

impl Conns {
    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.slots[workers::current() % self.slots.len()]
    }

    /// The most recently idle connection of this thread that is still open
    /// and has idled less than `max_idle`; older ones are closed.
    pub fn take(&self, max_idle: Duration) -> Option<Link> {
        let now = Instant::now();
        let mut list = lock(self.slot());
        while let Some(mut idle) = list.pop() {
            if now.duration_since(idle.since) < max_idle && idle.link.usable() {
                return Some(idle.link);
            }
        }
        None
    }

    /// Keeps `sender` for the next request, unless this thread already holds
    /// `max` idle connections to the replica (then it closes).
    pub fn put(&self, link: Link, max: usize) {
        if link.conn.is_none() {
            return;
        }
        let mut list = lock(self.slot());
        if list.len() < max {
            list.push(Idle {
                link,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for `max_idle` or longer, and those the
    /// replica closed.
    pub fn sweep(&self, max_idle: Duration) {
        let now = Instant::now();
        for slot in &self.slots {
            lock(slot).retain_mut(|idle| {
                now.duration_since(idle.since) < max_idle
                    && idle
                        .link
                        .drive(&mut Context::from_waker(Waker::noop()))
                        .is_pending()
            });
        }
    }

    /// Idle connections held, over every thread.
    pub fn idle(&self) -> usize {
        self.slots.iter().map(|slot| lock(slot).len()).sum()
    }
}

/// The list even if a thread panicked holding it: it holds only senders,
/// each valid on its own.
fn lock(slot: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection over loopback, and the peer's end: dropping the peer
    /// closes the connection.
    async fn sender() -> (Link, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (peer, _) = listener.accept().await.expect("accept");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake");
        (Link::new(sender, conn), peer)
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_taken_connection_leaves_the_list() {
        let conns = Conns::default();
        let (a, _pa) = sender().await;
        let (b, _pb) = sender().await;
        conns.put(a, 8);
        conns.put(b, 8);
        assert_eq!(conns.idle(), 2);
        let first = conns.take(LONG).expect("one");
        assert_eq!(conns.idle(), 1);
        drop(first);
        assert!(conns.take(LONG).is_some());
        assert!(conns.take(LONG).is_none());
    }

    #[tokio::test]
    async fn no_more_than_max_are_kept() {
        let conns = Conns::default();
        let mut peers = Vec::new();
        for _ in 0..5 {
            let (s, p) = sender().await;
            peers.push(p);
            conns.put(s, 3);
        }
        assert_eq!(conns.idle(), 3);
    }

    #[tokio::test]
    async fn a_closed_connection_is_never_handed_out() {
        let conns = Conns::default();
        let (s, peer) = sender().await;
        conns.put(s, 8);
        drop(peer);
        // The close reaches our socket.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(conns.take(LONG).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_idle_too_long_are_closed_on_take_and_on_sweep() {
        let conns = Conns::default();
        let (a, _pa) = sender().await;
        conns.put(a, 8);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(conns.take(Duration::from_secs(1)).is_none());

        let (b, _pb) = sender().await;
        let (c, _pc) = sender().await;
        conns.put(b, 8);
        tokio::time::advance(Duration::from_secs(2)).await;
        conns.put(c, 8);
        conns.sweep(Duration::from_secs(1));
        assert_eq!(conns.idle(), 1, "only the young one stays");
    }
}
