//! The `backend` binary: parse flags, run the replica until SIGTERM/SIGINT.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "A replica: GET /home and GET /heartbeat")]
struct Cli {
    #[command(flatten)]
    args: backend::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    backend::run(Cli::parse().args).await
}
