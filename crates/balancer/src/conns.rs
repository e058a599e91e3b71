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
//!
//! A connection idle for [`PARK_AFTER`] is parked: hyper's state for it
//! (buffers, request channel, task: about 30 KiB) is let go and the pool
//! keeps the bare socket, made ready again by a handshake (no round trip)
//! when a request takes it. A parked socket the replica closed, or wrote
//! to unasked, is never handed out.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{io::ReadBuf, net::TcpStream, time::Instant};

use crate::workers;

/// A kept-alive connection to a replica, ready for a request.
pub struct Upstream {
    pub sender: SendRequest<Body>,
    /// Set when the pool parks the connection: its task then hands the
    /// socket back ([`Conns::park`]) instead of closing it.
    park: Arc<AtomicBool>,
}

impl Upstream {
    /// `sender`, and the flag its connection's task reads when it ends.
    pub fn new(sender: SendRequest<Body>) -> (Self, Arc<AtomicBool>) {
        let park = Arc::new(AtomicBool::new(false));
        (
            Self {
                sender,
                park: park.clone(),
            },
            park,
        )
    }
}

/// What an idle entry holds.
enum Held {
    /// hyper's connection state with it (buffers, request channel, task):
    /// ready at once.
    Ready(Upstream),
    /// The socket alone, once idle for [`PARK_AFTER`].
    Parked(TokioIo<TcpStream>),
}

/// One idle connection and since when it has been idle.
struct Idle {
    held: Held,
    since: Instant,
}

/// What [`Conns::take`] hands out.
pub enum Taken {
    Ready(Upstream),
    /// A parked socket: an HTTP/1.1 handshake over it makes it ready.
    Parked(TokioIo<TcpStream>),
}

/// How long a connection idles with hyper's state (about 30 KiB: read and
/// write buffers, the request channel, a task) before it is parked as a
/// bare socket. A busy connection never idles that long; after a burst the
/// surplus shrinks to its sockets, as HAProxy's idle server connections
/// hold no buffers.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

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
        f.debug_struct("Conns")
            .field("idle", &self.idle())
            .field("parked", &self.parked())
            .finish()
    }
}

impl Conns {
    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.slots[workers::current() % self.slots.len()]
    }

    /// The most recently idle connection of this thread that is still open
    /// and has idled less than `max_idle`; older ones are closed.
    pub fn take(&self, max_idle: Duration) -> Option<Taken> {
        let now = Instant::now();
        let mut list = lock(self.slot());
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) >= max_idle {
                continue;
            }
            match idle.held {
                Held::Ready(up) if !up.sender.is_closed() => return Some(Taken::Ready(up)),
                Held::Parked(io) if quiet(&io) => return Some(Taken::Parked(io)),
                _ => {}
            }
        }
        None
    }

    /// Keeps `up` for the next request, unless this thread already holds
    /// `max` idle connections to the replica (then it closes).
    pub fn put(&self, up: Upstream, max: usize) {
        if up.sender.is_closed() {
            return;
        }
        let mut list = lock(self.slot());
        if list.len() < max {
            list.push(Idle {
                held: Held::Ready(up),
                since: Instant::now(),
            });
        }
    }

    /// Takes back the socket of a connection the pool parked (its task
    /// ended once the pool dropped its sender). It goes under the ready
    /// ones, which idled less; its idle time counts from now. Not checked
    /// against `put`'s `max`: it stands for an entry the sweep took out,
    /// so a list holds at most twice `max` while parks are on their way.
    pub fn park(&self, io: TokioIo<TcpStream>) {
        if !quiet(&io) {
            return;
        }
        lock(self.slot()).insert(
            0,
            Idle {
                held: Held::Parked(io),
                since: Instant::now(),
            },
        );
    }

    /// Closes the connections idle for `max_idle` or longer, and those the
    /// replica closed; parks those idle for `park_after` ([`PARK_AFTER`]):
    /// their tasks hand the sockets back.
    pub fn sweep(&self, max_idle: Duration, park_after: Duration) {
        let now = Instant::now();
        for slot in &self.slots {
            lock(slot).retain(|idle| {
                let age = now.duration_since(idle.since);
                match &idle.held {
                    Held::Ready(up) if up.sender.is_closed() || age >= max_idle => false,
                    Held::Ready(up) if age >= park_after => {
                        up.park.store(true, Ordering::Relaxed);
                        false
                    }
                    Held::Ready(_) => true,
                    Held::Parked(_) => age < max_idle,
                }
            });
        }
    }

    /// Idle connections held, over every thread.
    pub fn idle(&self) -> usize {
        self.slots.iter().map(|slot| lock(slot).len()).sum()
    }

    /// How many of them are parked sockets.
    pub fn parked(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| {
                lock(slot)
                    .iter()
                    .filter(|idle| matches!(idle.held, Held::Parked(_)))
                    .count()
            })
            .sum()
    }
}

/// Whether a parked socket is still open with nothing unread: the replica
/// has neither closed it nor sent anything unasked. Looks without waiting.
fn quiet(io: &TokioIo<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(
        io.inner()
            .poll_peek(&mut Context::from_waker(Waker::noop()), &mut buf),
        Poll::Pending
    )
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

    /// A connection on an in-memory stream, and the peer's end: dropping
    /// the peer closes the connection.
    async fn sender() -> (Upstream, tokio::io::DuplexStream) {
        let (ours, peer) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        (Upstream::new(sender).0, peer)
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
        conns.sweep(Duration::from_secs(1), LONG);
        assert_eq!(conns.idle(), 1, "only the young one stays");
    }

    /// A loopback TCP connection: ours (as the pool holds it) and the peer.
    async fn tcp_pair() -> (TokioIo<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (peer, _) = listener.accept().await.expect("accept");
        (TokioIo::new(ours), peer)
    }

    #[tokio::test]
    async fn a_parked_socket_is_handed_out_only_while_quiet() {
        use tokio::io::AsyncWriteExt as _;
        let conns = Conns::default();
        let (quiet_one, _keep) = tcp_pair().await;
        conns.park(quiet_one);
        assert!(matches!(conns.take(LONG), Some(Taken::Parked(_))));

        let (closed, peer) = tcp_pair().await;
        conns.park(closed);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(conns.take(LONG).is_none(), "the replica closed it");

        let (chatty, mut peer) = tcp_pair().await;
        conns.park(chatty);
        peer.write_all(b"HTTP/1.1 408").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(conns.take(LONG).is_none(), "the replica wrote unasked");
    }
}
