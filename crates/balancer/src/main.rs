//! The `balancer` binary: parse the configuration, run the balancer (or, as
//! `balancer backend`, a replica).

use balancer::config::{self, Command};

#[cfg(all(target_env = "gnu", not(feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = match config::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(config::ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = match &cli.command {
        Some(Command::Backend(_)) => std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| cli.config.log.clone()),
    };
    balancer::logging::init(&filter, cli.config.log_format);
    // One worker thread means one event loop, as `nbthread 1` in HAProxy:
    // the current-thread scheduler runs every task on this thread with no
    // cross-thread queue or wake-up, which the multi-thread one still pays.
    // With more, tokio's multi-thread runtime serves everything (the
    // default), or with `--scheduler per-thread` each worker thread runs a
    // loop of its own (`workers`) and this one keeps the control path:
    // supervisor, health checks, accept.
    let threads = match (&cli.command, cli.config.threads) {
        (Some(_), _) => None,
        (None, Some(t)) => Some(usize::from(t)),
        (None, None) => Some(std::thread::available_parallelism().map_or(1, usize::from)),
    };
    let per_thread =
        cli.config.scheduler == balancer::workers::Scheduler::PerThread && threads > Some(1);
    let mut builder = if threads == Some(1) || per_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(threads) = threads.filter(|&t| t > 1 && !per_thread) {
        builder.worker_threads(threads);
    }
    if per_thread
        && let Some(n) = threads
        && let Err(e) = balancer::workers::start(n)
    {
        eprintln!("error: cannot start the worker threads: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Backend(args)) => backend::run(args).await.map_err(|e| e.to_string()),
            None => balancer::run(cli.config).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
