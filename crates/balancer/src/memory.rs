//! Memory let go in a burst, given back to the OS soon after.
//!
//! When connections park (`server::conn`, [`crate::conns`]), hyper's state
//! for each (some 30 KiB) is freed. mimalloc keeps freed pages for reuse
//! and returns them to the OS only from a later allocation past its purge
//! delay: a balancer that goes quiet after a burst (the common case at an
//! edge: browsers' spare connections idle) would hold the burst's memory
//! for as long as it stays quiet. So a thread that parks connections asks
//! the allocator, [`SETTLE`] later, to return what is free: once per
//! `SETTLE` at most, however many connections park meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// How long after the first release the collection runs: a burst of
/// connections idling together parks within about a second's timers.
pub const SETTLE: Duration = Duration::from_millis(250);

thread_local! {
    /// Whether a collection is already due for this thread's releases.
    static DUE: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
}

/// Collections run so far.
static COLLECTIONS: AtomicU64 = AtomicU64::new(0);

/// Memory was let go on this thread: the allocator is asked to give back
/// what is free [`SETTLE`] from now, unless that is already arranged.
/// Outside a runtime, nothing happens.
pub fn released() {
    let Some(due) = DUE.with(|d| (!d.swap(true, Ordering::AcqRel)).then(|| d.clone())) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        due.store(false, Ordering::Release);
        return;
    };
    // On a per-thread worker (a current-thread runtime) this runs here, on
    // the thread that freed; under work stealing on whichever thread takes
    // it, which gave back as much after a burst (perf notes, Round 10).
    runtime.spawn(async move {
        tokio::time::sleep(SETTLE).await;
        due.store(false, Ordering::Release);
        collect();
    });
}

/// Collections run so far (one per [`SETTLE`] with releases, per thread).
pub fn collections() -> u64 {
    COLLECTIONS.load(Ordering::Relaxed)
}

/// Has the allocator give back to the OS what is free: this thread's
/// empty pages, and every free range of memory it holds (`mi_collect`
/// with force: its purge delay is not waited for). The crate's one
/// `unsafe`: mimalloc's crate wraps no collection call, and this FFI call
/// takes no pointer and has no precondition.
#[allow(unsafe_code)]
fn collect() {
    let started = std::time::Instant::now();
    #[cfg(all(target_env = "gnu", not(feature = "system-allocator")))]
    // SAFETY: `mi_collect` takes no argument to get wrong; it may be called
    // from any thread at any time and frees only what no allocation uses.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    COLLECTIONS.fetch_add(1, Ordering::Relaxed);
    tracing::trace!(took = ?started.elapsed(), "freed memory given back");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_releases_is_one_collection_settle_later() {
        let before = collections();
        for _ in 0..1000 {
            released();
        }
        tokio::time::sleep(SETTLE / 2).await;
        assert_eq!(collections(), before, "collected before the burst settled");
        tokio::time::sleep(SETTLE).await;
        assert_eq!(collections(), before + 1);
        // A later release is collected again.
        released();
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(collections(), before + 2);
    }
}
