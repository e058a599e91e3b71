//! The replica: the server a balancer spreads requests over.
//!
//! It answers the spec's two endpoints, `GET /home` (who am I) and
//! `GET /heartbeat` (am I alive), and `POST /home`, which reads the whole
//! body first (uploads through the balancer, in the soak test). It is a library first so
//! the balancer can run it as a child process of its own executable
//! (`balancer backend --id ...`) without a second binary to ship; the `backend`
//! binary is a thin wrapper around [`serve`].
//!
//! An optional artificial delay (`--delay-ms`, or `?delay_ms=` per request)
//! makes a replica slow on purpose, so experiments can show what
//! least-connections and power-of-two-choices buy over round robin.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The longest artificial delay a request may ask for; bounded so a typo in a
/// query string cannot park a connection for hours.
pub const MAX_DELAY_MS: u64 = 60_000;

/// How a replica identifies itself and behaves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The id in `Hello from Server: <id>`.
    pub id: String,
    /// Added to every `/home` reply, for experiments with slow replicas.
    pub delay_ms: u64,
}

/// The reply of `GET /home`, in the spec's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HomeReply {
    pub message: String,
    pub status: String,
}

impl HomeReply {
    /// The prefix of `message` before the replica id.
    pub const PREFIX: &'static str = "Hello from Server: ";

    /// The replica id in a reply body, if it is one of ours. Borrows the
    /// message instead of building a `HomeReply`: load generators call it
    /// for every reply.
    pub fn replica_id(body: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(borrow)]
            message: std::borrow::Cow<'a, str>,
        }
        let reply: Message<'_> = serde_json::from_slice(body).ok()?;
        reply.message.strip_prefix(Self::PREFIX).map(str::to_owned)
    }
}

#[derive(Debug, Deserialize)]
struct HomeQuery {
    delay_ms: Option<u64>,
}

struct Shared {
    /// Serialised once: `/home` is the hottest path in every benchmark.
    home_body: axum::body::Bytes,
    delay_ms: u64,
}

/// The replica's routes, for callers that want to mount them on their own
/// listener (tests, benchmarks).
pub fn router(config: &Config) -> Router {
    let reply = HomeReply {
        message: format!("{}{}", HomeReply::PREFIX, config.id),
        status: "successful".into(),
    };
    let home_body = serde_json::to_vec(&reply).unwrap_or_default();
    let shared = Arc::new(Shared {
        home_body: home_body.into(),
        delay_ms: config.delay_ms.min(MAX_DELAY_MS),
    });
    Router::new()
        .route("/home", get(home).post(upload))
        .route("/heartbeat", get(heartbeat))
        .with_state(shared)
}

async fn home(State(shared): State<Arc<Shared>>, query: Query<HomeQuery>) -> impl IntoResponse {
    let delay = query.delay_ms.unwrap_or(shared.delay_ms).min(MAX_DELAY_MS);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        shared.home_body.clone(),
    )
}

/// `POST /home`: the body is read to its end (axum's default limit, 2 MiB),
/// then answered as a GET is.
async fn upload(
    state: State<Arc<Shared>>,
    query: Query<HomeQuery>,
    _body: axum::body::Bytes,
) -> impl IntoResponse {
    home(state, query).await
}

async fn heartbeat() -> StatusCode {
    StatusCode::OK
}

/// Serves the replica on `listener` until `shutdown` resolves, then finishes
/// the requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(&config);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the replica on `listener` in a task of its own, until the
/// returned sender is used or dropped: an in-process replica for tests.
pub fn spawn(listener: TcpListener, config: Config) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, config, async {
        let _ = stopped.await;
    }));
    stop
}

/// Resolves on SIGTERM or SIGINT: the signals an orchestrator or a terminal
/// sends to ask a process to stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Command-line arguments of a replica, shared by the `backend` binary and the
/// balancer's `backend` subcommand so both accept the same flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Replica id, reported in `Hello from Server: <id>`.
    #[arg(long, env = "SERVER_ID", default_value = "1")]
    pub id: String,
    /// Address to listen on.
    #[arg(long, env = "BACKEND_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: String,
    /// Artificial delay added to every /home reply, in milliseconds.
    #[arg(long, env = "BACKEND_DELAY_MS", default_value_t = 0)]
    pub delay_ms: u64,
    /// Print `LISTENING <addr>` on stdout once bound (lets a parent that
    /// asked for port 0 learn the port without a race).
    #[arg(long, hide = true)]
    pub announce: bool,
    /// Shut down gracefully when stdin reaches end of file: a parent holds
    /// the pipe open, so the replica cannot outlive it, however it dies.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// Runs a replica from parsed arguments until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(id = %args.id, %addr, "replica listening");
    if args.announce {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {addr}")?;
        out.flush()?;
    }
    let config = Config {
        id: args.id,
        delay_ms: args.delay_ms,
    };
    let exit_with_parent = args.exit_with_parent;
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => {},
            () = parent_gone(exit_with_parent) => {},
        }
    };
    serve(listener, config, shutdown).await?;
    Ok(())
}

/// Resolves when stdin hits end of file (the parent closed the pipe or
/// died), if asked to watch it; otherwise never.
async fn parent_gone(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_id_parses_our_reply_only() {
        let body = br#"{"message":"Hello from Server: s7","status":"successful"}"#;
        assert_eq!(HomeReply::replica_id(body).as_deref(), Some("s7"));
        assert_eq!(HomeReply::replica_id(b"{}"), None);
        assert_eq!(HomeReply::replica_id(b"not json"), None);
        let other = br#"{"message":"Hi","status":"successful"}"#;
        assert_eq!(HomeReply::replica_id(other), None);
    }
}
