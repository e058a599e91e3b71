//! Worker threads of `--scheduler per-thread`. With `--threads N` above 1
//! and that scheduler, the data path runs on N threads, each with a runtime
//! of its own (tokio's current-thread scheduler), and each accepted
//! connection is handed to the least loaded of them and stays there, as
//! HAProxy's threads do: a connection's requests, its upstream connections
//! and their tasks then all run on one thread, with no work stealing and no
//! cross-thread wake-ups on the hot path. The default, `work-stealing`, is
//! tokio's multi-thread runtime and needs nothing here: where the workers
//! share a core with each other or with other work, whichever thread runs
//! serves every connection, which gave a lower tail than a connection
//! waiting for its own thread's turn (perf notes, Round 10). What is per
//! thread elsewhere (the idle upstream connections of [`crate::conns`]) is
//! found with [`current`].

use std::{
    cell::Cell,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::net::TcpStream;

/// How the data path's work is spread over threads (`--scheduler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// A runtime per thread; each connection stays on the thread it was
    /// given at accept (the least loaded).
    PerThread,
    /// One runtime whose threads steal each other's tasks (tokio's
    /// multi-thread scheduler): the default, since a connection never waits
    /// for one particular thread's turn.
    #[default]
    WorkStealing,
}

thread_local! {
    /// This thread's worker index; 0 on any thread that is not a worker.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// How many worker threads there are (1 without workers: the runtime's own
/// threads share one slot).
pub fn count() -> usize {
    WORKERS.get().map_or(1, Vec::len)
}

/// This thread's worker index (0 off the workers).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Marks this thread as worker `index`.
fn enter(index: usize) {
    CURRENT.with(|c| c.set(index));
}

/// A worker thread's runtime, and how many connections it holds.
struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
}

/// The worker threads, once started.
static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

/// Starts `n` worker threads, each running a runtime of its own until the
/// process exits. Called once, before the balancer starts.
///
/// # Errors
/// A thread or a runtime could not be started.
pub fn start(n: usize) -> std::io::Result<()> {
    let mut workers = Vec::with_capacity(n);
    for index in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("lb-worker-{index}"))
            .spawn(move || {
                enter(index);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("a worker thread ended at start"))??;
        workers.push(Worker {
            handle,
            open: Arc::default(),
        });
    }
    WORKERS
        .set(workers)
        .map_err(|_| std::io::Error::other("worker threads started twice"))
}

/// Serves an accepted connection: on the worker thread holding the fewest
/// connections when there are workers (the stream moves to that thread's
/// reactor, so its readiness wakes that thread only), otherwise as a task
/// of the current runtime.
pub fn serve<F, Fut>(tcp: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = WORKERS.get() else {
        tokio::spawn(serve(tcp));
        return;
    };
    let std = match tcp.into_std() {
        Ok(std) => std,
        Err(e) => {
            tracing::debug!(error = %e, "an accepted connection could not be handed to a worker");
            return;
        }
    };
    let worker = workers
        .iter()
        .min_by_key(|w| w.open.load(Ordering::Relaxed))
        .expect("at least one worker");
    let open = worker.open.clone();
    open.fetch_add(1, Ordering::Relaxed);
    worker.handle.spawn(async move {
        let _open = Open(open);
        match TcpStream::from_std(std) {
            Ok(tcp) => serve(tcp).await,
            Err(e) => tracing::debug!(error = %e, "a worker could not take a connection"),
        }
    });
}

/// One connection counted on its worker until it ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
