//! A replica's idle kept-alive HTTP/1.1 connections: our own pool, not
//! hyper-util's pooled client. The idle connections live on the
//! [`Replica`](crate::replica::Replica), so they are found without hashing
//! an address into a shared map, are never shared between replicas, and
//! close when a removed or replaced replica's last request ends. A
//! connection comes back when its response body has ended (the proxy's
//! body wrapper returns it), not through a task spawned per request to
//! wait for it.
//!
//! The idle list is last in, first out: the connection most recently used
//! is the one least likely to have been closed by the replica's own idle
//! timeout, and the oldest age out at the list's front. There is one list
//! per worker thread ([`crate::workers`]): a connection's task runs on the
//! thread that made it, so a request taking it there wakes no other thread.

use std::{sync::Mutex, time::Duration};

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::workers;

/// One idle connection and since when it has been idle.
struct Idle {
    sender: SendRequest<Body>,
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
    pub fn take(&self, max_idle: Duration) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut list = lock(self.slot());
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && now.duration_since(idle.since) < max_idle {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request, unless this thread already holds
    /// `max` idle connections to the replica (then it closes).
    pub fn put(&self, sender: SendRequest<Body>, max: usize) {
        if sender.is_closed() {
            return;
        }
        let mut list = lock(self.slot());
        if list.len() < max {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for `max_idle` or longer, and those the
    /// replica closed.
    pub fn sweep(&self, max_idle: Duration) {
        let now = Instant::now();
        for slot in &self.slots {
            lock(slot).retain(|idle| {
                !idle.sender.is_closed() && now.duration_since(idle.since) < max_idle
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
    use hyper_util::rt::TokioIo;

    /// A sender on an in-memory connection, and the peer's end: dropping
    /// the peer closes the connection.
    async fn sender() -> (SendRequest<Body>, tokio::io::DuplexStream) {
        let (ours, peer) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        (sender, peer)
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
        // The connection's task sees the close and ends.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
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
