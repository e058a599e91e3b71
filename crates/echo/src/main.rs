//! `echo --listen ADDR --id ID`: a gRPC echo replica on h2c.

use clap::Parser;

#[derive(Parser)]
#[command(about = "A gRPC echo replica (h2c)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    #[arg(long, default_value = "echo-1")]
    id: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("LISTENING {}", listener.local_addr()?);
    echo::serve(listener, args.id, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
