//! The `loadgen` binary: `run` fires load at a target, `experiment` runs
//! A-1..A-4, `backend` runs a replica (the experiments' replica processes).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use loadgen::experiment::{self, Experiment, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "Load generator and experiments for the load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fire N requests at a target and report per-replica counts and latency.
    Run {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        target: String,
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "/home")]
        path: String,
        #[arg(long, default_value = "GET")]
        method: http::Method,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
        /// Send this header with a 6-digit request id (for --key header:NAME).
        #[arg(long)]
        key_header: Option<String>,
        /// Pace requests at this many per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run an experiment and write its data, charts and summary.
    Experiment {
        #[arg(value_enum)]
        which: Vec<Experiment>,
        #[arg(long, default_value = "analysis")]
        out: PathBuf,
        /// Requests per measurement.
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Replicas as Docker containers (needs `just images` and an engine).
        #[arg(long)]
        docker: bool,
    },
    /// A bounded chaos run against a balancer process; exits non-zero if a
    /// goal is violated.
    Soak {
        /// How long the load and the chaos last (e.g. 3m, 40s).
        #[arg(long, default_value = "3m", value_parser = balancer::duration::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "analysis/soak")]
        out: PathBuf,
        /// The balancer binary (default: `balancer` beside this one).
        #[arg(long)]
        balancer_bin: Option<PathBuf>,
        /// Seed of the chaos (default: from the clock; the report names it).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a replica (what the experiments' stacks start).
    Backend(backend::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default = if matches!(cli.command, Command::Backend(_)) {
        "warn"
    } else {
        "warn,loadgen=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            target,
            requests,
            concurrency,
            path,
            method,
            timeout_ms,
            key_header,
            rate,
            json,
        } => {
            let config = loadgen::RunConfig {
                target,
                path,
                requests,
                concurrency,
                method,
                timeout: Duration::from_millis(timeout_ms),
                trace: false,
                key_header,
                progress: !json,
                rate,
            };
            let report = loadgen::run(config).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Experiment {
            which,
            out,
            requests,
            concurrency,
            docker,
        } => {
            let mut settings = Settings::new(out, std::env::current_exe()?);
            settings.requests = requests;
            settings.concurrency = concurrency;
            settings.docker = docker;
            let which = if which.is_empty() {
                vec![
                    Experiment::A1,
                    Experiment::A2,
                    Experiment::A3,
                    Experiment::A4,
                ]
            } else {
                which
            };
            for w in which {
                eprintln!("running {w:?} ...");
                let summary = experiment::run(w, &settings).await?;
                println!("{summary}");
            }
            Ok(())
        }
        Command::Soak {
            duration,
            out,
            balancer_bin,
            seed,
        } => {
            let balancer_bin = match balancer_bin {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("balancer"),
            };
            let config = loadgen::soak::SoakConfig {
                duration,
                out,
                balancer_bin,
                seed: seed.unwrap_or_else(|| fastrand::u64(..)),
            };
            let report = loadgen::soak::run(&config).await?;
            for g in &report.goals {
                let mark = if g.met { "ok  " } else { "FAIL" };
                println!("{mark} {}: {} (goal {})", g.name, g.value, g.limit);
            }
            println!("results in {}", config.out.display());
            anyhow::ensure!(report.passed(), "soak goals violated");
            Ok(())
        }
        Command::Backend(args) => backend::run(args).await,
    }
}
