//! The cap on open client connections, and the file-descriptor limit it
//! must fit under.
//!
//! At the cap the listener stops accepting: new connections wait in the
//! kernel's listen backlog (and are served as others close) instead of
//! being accepted and starved, as with HAProxy's maxconn. The cap is kept
//! below what the process's file-descriptor limit allows (each client
//! connection may hold an upstream connection too), so `accept` never
//! fails for want of descriptors.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything but client connections (listeners,
/// replicas' pipes, health checks, logs).
const RESERVED_FDS: u64 = 128;

/// Raises the soft file-descriptor limit to the hard one and returns the
/// largest connection cap that fits under it, at most `wanted`.
pub fn effective_max_connections(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the file-descriptor limit");
        u64::MAX
    });
    // A client connection and, behind it, an upstream connection.
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::info!(
            wanted,
            fits,
            nofile = limit,
            "--max-connections lowered to what the file-descriptor limit allows"
        );
    }
    wanted.min(fits).max(1)
}

/// Permits to hold a client connection open.
#[derive(Debug, Clone)]
pub struct ConnectionCap(Arc<Semaphore>);

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }

    /// Waits until a connection may be accepted.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            // The semaphore is never closed; the loop only satisfies the
            // type (acquire_owned fails only on a closed semaphore).
            if let Ok(permit) = self.0.clone().acquire_owned().await {
                return permit;
            }
        }
    }
}
