//! A replica's idle kept-alive HTTP/1.1 connections. They live on the
//! [`Replica`](crate::replica::Replica), so they are found without hashing
//! an address into a shared map, are never shared between replicas, and
//! close when a removed or replaced replica's last request ends. A
//! connection comes back when its response body has ended (the proxy's
//! body wrapper returns it).
//!
//! An idle connection is the bare socket: the client side of HTTP/1.1 is
//! our own ([`crate::h1`]) and keeps no task, channel or buffer for a
//! connection between requests, as HAProxy's idle server connections hold
//! no buffers.
//!
//! The idle list is last in, first out: the connection most recently used
//! is the one least likely to have been closed by the replica's own idle
//! timeout, and the oldest age out at the list's front. With `--scheduler
//! per-thread` there is one list per worker thread ([`crate::workers`]): a
//! socket is registered with the thread's own reactor, and a request
//! taking it there wakes no other thread; under work stealing (one
//! runtime, one reactor) there is one list. A socket the replica closed, or wrote to unasked, is never
//! handed out.

use std::{
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::{io::ReadBuf, net::TcpStream, time::Instant};

use crate::workers;

/// How often idle connections are looked over ([`Conns::sweep`]), and how
/// long a client connection idles before it is parked
/// ([`crate::server`]).
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// One idle connection and since when it has been idle.
struct Idle {
    io: TcpStream,
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
    /// and quiet and has idled less than `max_idle`; older ones are closed.
    pub fn take(&self, max_idle: Duration) -> Option<TcpStream> {
        let now = Instant::now();
        let mut list = lock(self.slot());
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) < max_idle && quiet(&idle.io) {
                return Some(idle.io);
            }
        }
        None
    }

    /// Keeps `io` for the next request, unless this thread already holds
    /// `max` idle connections to the replica (then it closes).
    pub fn put(&self, io: TcpStream, max: usize) {
        let mut list = lock(self.slot());
        if list.len() < max {
            list.push(Idle {
                io,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for `max_idle` or longer, and those the
    /// replica closed or wrote to unasked.
    pub fn sweep(&self, max_idle: Duration) {
        let now = Instant::now();
        for slot in &self.slots {
            lock(slot).retain(|idle| now.duration_since(idle.since) < max_idle && quiet(&idle.io));
        }
    }

    /// Idle connections held, over every thread.
    pub fn idle(&self) -> usize {
        self.slots.iter().map(|slot| lock(slot).len()).sum()
    }
}

/// Whether an idle socket is still open with nothing unread: the replica
/// has neither closed it nor sent anything unasked. Looks without waiting,
/// and without a system call while the reactor has seen nothing arrive.
fn quiet(io: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if io.poll_read_ready(&mut cx).is_pending() {
        return true;
    }
    // Readiness may be left over from the last response's reads: look.
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(io.poll_peek(&mut cx, &mut buf), Poll::Pending)
}

/// The list even if a thread panicked holding it: it holds only sockets,
/// each valid on its own.
fn lock(slot: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod testing {
    use tokio::net::TcpStream;

    /// A loopback TCP connection: ours (as the pool holds it) and the peer.
    pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (peer, _) = listener.accept().await.expect("accept");
        (ours, peer)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::{testing::tcp_pair, *};

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_taken_connection_leaves_the_list() {
        let conns = Conns::default();
        let (a, _pa) = tcp_pair().await;
        let (b, _pb) = tcp_pair().await;
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
            let (s, p) = tcp_pair().await;
            peers.push(p);
            conns.put(s, 3);
        }
        assert_eq!(conns.idle(), 3);
    }

    #[tokio::test]
    async fn a_socket_is_handed_out_only_while_quiet() {
        let conns = Conns::default();
        let (quiet_one, _keep) = tcp_pair().await;
        conns.put(quiet_one, 8);
        assert!(conns.take(LONG).is_some());

        let (closed, peer) = tcp_pair().await;
        conns.put(closed, 8);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(conns.take(LONG).is_none(), "the replica closed it");

        let (chatty, mut peer) = tcp_pair().await;
        conns.put(chatty, 8);
        peer.write_all(b"HTTP/1.1 408").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(conns.take(LONG).is_none(), "the replica wrote unasked");
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_replica_closed() {
        let conns = Conns::default();
        let (a, _pa) = tcp_pair().await;
        let (b, pb) = tcp_pair().await;
        conns.put(a, 8);
        conns.put(b, 8);
        drop(pb);
        tokio::time::sleep(Duration::from_millis(50)).await;
        conns.sweep(LONG);
        assert_eq!(conns.idle(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_idle_too_long_are_closed_on_take_and_on_sweep() {
        let conns = Conns::default();
        let (a, _pa) = tcp_pair().await;
        conns.put(a, 8);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(conns.take(Duration::from_secs(1)).is_none());

        let (b, _pb) = tcp_pair().await;
        let (c, _pc) = tcp_pair().await;
        conns.put(b, 8);
        tokio::time::advance(Duration::from_secs(2)).await;
        conns.put(c, 8);
        conns.sweep(Duration::from_secs(1));
        assert_eq!(conns.idle(), 1, "only the young one stays");
    }
}
