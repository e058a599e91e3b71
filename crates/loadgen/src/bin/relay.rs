//! `relay`: the bench's ceiling, not a load balancer. Each client
//! connection gets its own upstream connection (round robin over
//! `--upstream`) and bytes are copied both ways without reading them: no
//! HTTP parsing, no pool, no headers added, no health checks. In front of
//! the same replicas it makes the same system calls a kept-alive request
//! as an HTTP proxy (a read and a write each side), so its requests/s and
//! tail on one core say how far any proxy could go on this machine, and
//! how much of that a real one (ours, HAProxy) leaves on the table.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "A byte relay, one upstream connection per client: the bench's ceiling")]
struct Cli {
    #[arg(long)]
    listen: SocketAddr,
    /// An upstream address (repeat for several; taken in turn per connection).
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<SocketAddr>,
    /// Runtime threads; 1 runs tokio's current-thread scheduler, as ours does.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(cli))
}

async fn serve(cli: Cli) -> std::io::Result<()> {
    let listener = TcpListener::bind(cli.listen).await?;
    let upstreams: &'static [SocketAddr] = cli.upstreams.leak();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, or a reset before accept: back off rather
            // than spin on a listener that stays readable.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let upstream = upstreams[NEXT.fetch_add(1, Ordering::Relaxed) % upstreams.len()];
        tokio::spawn(async move {
            let _ = relay(client, upstream).await;
        });
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
