//! The `balancer` binary: parse the configuration, run the balancer (or, as
//! `balancer backend`, a replica).

use balancer::config::{self, Command};

#[cfg(target_env = "gnu")]
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
    let threads = cli.config.threads.filter(|_| cli.command.is_none());
    let mut builder = if threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(threads) = threads.filter(|&t| t > 1) {
        builder.worker_threads(usize::from(threads));
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
