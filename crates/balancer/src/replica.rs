//! A replica as the data path sees it: where it listens and how it is doing.
//!
//! A [`Replica`] is shared (`Arc`) between pool snapshots, so its counters
//! (requests in flight, served, failures) and its health survive every
//! rebuild of the selection policy: a membership change must not reset
//! least-connections or P2C state (the lesson of Pingora #269, Traefik
//! #13913). Everything here is atomics; the hot path never locks.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The integer id of a replica on the ring: `server-1` is id 1.
pub type ReplicaId = u32;

/// Which incarnation of a name a replica is. One counter per supervisor
/// hands them out, so they only grow and are never reused.
pub type Generation = u64;

/// The name `/add` generates for ring id `id`: `server-<id>`, so that the
/// spec's `server-1` is id 1 and placement follows names.
pub fn generated_name(id: ReplicaId) -> String {
    format!("server-{id}")
}

/// The ring id `name` stands for if it is a generated name (`server-<k>`,
/// k >= 1, written exactly as [`generated_name`] writes it).
pub fn generated_id(name: &str) -> Option<ReplicaId> {
    let k: ReplicaId = name.strip_prefix("server-")?.parse().ok()?;
    (k >= 1 && generated_name(k) == name).then_some(k)
}

/// The protocol a replica speaks to the balancer.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (keep-alive, pooled connections).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, no TLS (gRPC replicas).
    H2c,
}

/// Whether a replica takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// In rotation.
    Up,
    /// A proxied request failed to connect or was reset: out of rotation at
    /// once, until active checks see it answer `rise` times.
    Suspect,
    /// Failed `fall` active checks in a row, or its process exited.
    Down,
    /// Removed by `/rm`: finishing the requests it already has.
    Draining,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Up,
            1 => Self::Suspect,
            2 => Self::Down,
            _ => Self::Draining,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Self::Up => 0,
            Self::Suspect => 1,
            Self::Down => 2,
            Self::Draining => 3,
        }
    }
}

/// One running replica (one process or container incarnation).
#[derive(Debug)]
pub struct Replica {
    /// Hostname, unique in the pool (`server-1`, or a name given to `/add`).
    pub name: String,
    /// Ring id; a replacement keeps it so keys map as before.
    pub id: ReplicaId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `host:port` for the `Host` of forwarded requests and the client URI.
    pub authority: http::uri::Authority,
    /// Relative weight for weighted round robin (>= 1).
    pub weight: u32,
    /// What it speaks.
    pub protocol: Protocol,
    /// Which incarnation of `name` this is; a new one on every replacement.
    pub generation: Generation,
    /// Process id when the replica is a local process.
    pub pid: Option<u32>,
    pub started: Instant,
    health: AtomicU8,
    in_flight: AtomicU64,
    served: AtomicU64,
    failures: AtomicU64,
    /// Time from a request's arrival to this replica's response head.
    pub latency: crate::latency::LatencyHistogram,
    /// Requests it may have in flight at once (`--max-conns-per-replica`).
    limit: Option<Arc<Semaphore>>,
    /// Its idle kept-alive HTTP/1.1 connections.
    pub conns: crate::conns::Conns,
}

impl Replica {
    pub fn new(
        name: impl Into<String>,
        id: ReplicaId,
        addr: SocketAddr,
        weight: u32,
        generation: Generation,
    ) -> Self {
        let authority = addr
            .to_string()
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"));
        Self {
            name: name.into(),
            id,
            addr,
            authority,
            weight: weight.max(1),
            protocol: Protocol::Http1,
            generation,
            pid: None,
            started: Instant::now(),
            health: AtomicU8::new(Health::Up.as_u8()),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: crate::latency::LatencyHistogram::default(),
            limit: None,
            conns: crate::conns::Conns::default(),
        }
    }

    #[must_use]
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Limits it to `max` requests in flight at once (0: no limit).
    #[must_use]
    pub fn with_limit(mut self, max: usize) -> Self {
        self.limit = (max > 0).then(|| Arc::new(Semaphore::new(max)));
        self
    }

    #[must_use]
    pub fn with_pid(mut self, pid: Option<u32>) -> Self {
        self.pid = pid;
        self
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets the health and returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        Health::from_u8(self.health.swap(health.as_u8(), Ordering::AcqRel))
    }

    /// Moves `from` -> `to` only if the replica is still in `from`, so a
    /// passive "suspect" never overrides a "down" or "draining".
    pub fn transition(&self, from: Health, to: Health) -> bool {
        self.health
            .compare_exchange(
                from.as_u8(),
                to.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Whether a policy may send it a new request.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.health.load(Ordering::Relaxed) == Health::Up.as_u8()
    }

    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard is dropped (when the
    /// response body has been sent, or the attempt failed). Under
    /// `--max-conns-per-replica`, waits up to `queue` for a free place
    /// first; `None` if none came.
    #[inline]
    pub async fn admit(self: &Arc<Self>, queue: Duration) -> Option<InFlight> {
        let permit = match &self.limit {
            None => None,
            Some(limit) => Some(
                tokio::time::timeout(queue, limit.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?,
            ),
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            replica: self.clone(),
            _permit: permit,
        })
    }

    /// Counts a request in flight regardless of any limit (policy tests).
    #[cfg(test)]
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            replica: self.clone(),
            _permit: None,
        }
    }
}

/// A request in flight to a replica; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    replica: Arc<Replica>,
    /// Its place under `--max-conns-per-replica`, if there is a limit.
    _permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// The request got a response from the replica.
    pub fn served(&self) {
        self.replica.served.fetch_add(1, Ordering::Relaxed);
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> Arc<Replica> {
        Arc::new(Replica::new(
            "s1",
            1,
            "127.0.0.1:1".parse().expect("addr"),
            1,
            0,
        ))
    }

    #[tokio::test]
    async fn in_flight_counts_until_guard_drops() {
        let r = replica();
        let a = r.admit(Duration::ZERO).await.expect("no limit");
        let b = r.start_request();
        assert_eq!(r.in_flight(), 2);
        drop(a);
        assert_eq!(r.in_flight(), 1);
        b.served();
        drop(b);
        assert_eq!((r.in_flight(), r.served()), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_queues_for_a_bounded_time() {
        let r = Arc::new(
            Replica::new("s1", 1, "127.0.0.1:1".parse().expect("addr"), 1, 0).with_limit(1),
        );
        let first = r.admit(Duration::from_secs(1)).await.expect("a free place");
        assert!(
            r.admit(Duration::from_secs(1)).await.is_none(),
            "no place within 1 s"
        );
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.admit(Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(first);
        assert!(
            waiting.await.expect("task"),
            "the place freed after 2 s was taken"
        );
    }

    #[test]
    fn generated_names_and_ids_agree() {
        assert_eq!(generated_name(7), "server-7");
        assert_eq!(generated_id("server-7"), Some(7));
        for other in [
            "server-0",
            "server-07",
            "server-",
            "server-x",
            "s7",
            "server-+7",
        ] {
            assert_eq!(generated_id(other), None, "{other}");
        }
    }

    #[test]
    fn transition_only_from_the_expected_state() {
        let r = replica();
        assert!(r.is_available());
        assert!(r.transition(Health::Up, Health::Suspect));
        assert!(!r.is_available());
        r.set_health(Health::Down);
        assert!(!r.transition(Health::Up, Health::Suspect));
        assert_eq!(r.health(), Health::Down);
    }
}
