//! A customizable HTTP load balancer.
//!
//! The request path reads top to bottom in a few files: [`server`] accepts
//! connections and sends each request to the [`admin`] API or straight to
//! the [`proxy`], which extracts the key,
//! asks the [`policy`] for a replica from the [`pool`]'s current snapshot and
//! forwards over a kept-alive connection from the replica's idle list
//! ([`conns`]) with our own HTTP/1.1 client side ([`h1`]), retrying
//! elsewhere on a connect failure.
//! The control path: the admin API, [`health`] checks and the
//! [`orchestrator`] send messages to the [`supervisor`], the only writer of
//! pool membership, which publishes a new snapshot.
//!
//! ```no_run
//! # async fn example() -> Result<(), balancer::StartError> {
//! let config = balancer::Config { listen: "127.0.0.1:0".into(), ..Default::default() };
//! let running = balancer::Balancer::new(config).start().await?;
//! println!("balancing on http://{}", running.addr());
//! running.stop().await;
//! # Ok(()) }
//! ```

pub mod access_log;
pub mod activity;
pub mod admin;
pub mod cancel;
pub mod change;
pub mod config;
pub mod conns;
pub mod duration;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod h1;
pub mod health;
pub mod latency;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod orchestrator;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod replica;
pub mod server;
pub mod supervisor;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod workers;

use std::{net::SocketAddr, sync::Arc};

use tokio_util::sync::CancellationToken;

pub use config::{Cli, Config};
pub use error::StartError;
use orchestrator::Orchestrator;
use policy::Policy;

/// A balancer to configure and start.
pub struct Balancer {
    config: Config,
    policy: Option<Arc<dyn Policy>>,
    orchestrator: Option<Arc<dyn Orchestrator>>,
}

impl Balancer {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            policy: None,
            orchestrator: None,
        }
    }

    /// Uses `policy` instead of the one `--policy` names (a custom policy).
    #[must_use]
    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Uses `orchestrator` instead of the one `--orchestrator` names.
    #[must_use]
    pub fn with_orchestrator(mut self, orchestrator: Arc<dyn Orchestrator>) -> Self {
        self.orchestrator = Some(orchestrator);
        self
    }

    /// Binds, starts the initial replicas, and serves in the background.
    pub async fn start(self) -> Result<Running, StartError> {
        let c = &self.config;
        if c.replicas > c.max_replicas {
            return Err(StartError::Config(format!(
                "--replicas {} is above --max-replicas {}",
                c.replicas, c.max_replicas
            )));
        }
        let options = c.policy_options();
        let policy = match self.policy {
            Some(p) => p,
            None => policy::from_name(&c.policy, &options)?,
        };
        let weights = c.weights().map_err(StartError::Config)?;
        let orchestrator = match self.orchestrator {
            Some(o) => o,
            None => orchestrator::from_config(&c.orchestrator)?,
        };
        let listener = bind(&c.listen).await?;
        let addr = listener.local_addr().map_err(StartError::Serve)?;
        let (admin_listener, admin_addr) = bind_optional(c.admin_listen.as_deref()).await?;
        let max_connections = server::limit::effective_max_connections(c.limits.max_connections);
        // TLS: the certificate is checked before anything starts.
        let tls = match &c.tls.tls_listen {
            Some(_) => Some(tls::Tls::from_args(&c.tls)?),
            None => None,
        };
        let (tls_listener, tls_addr) = bind_optional(c.tls.tls_listen.as_deref()).await?;

        let pool = Arc::new(pool::Pool::new(policy)?);
        let events = Arc::new(events::EventLog::default());
        let metrics = Arc::new(metrics::Metrics::default());
        let shutdown = CancellationToken::new();
        let supervisor_stop = CancellationToken::new();
        let (control, supervisor) = supervisor::Supervisor::start(
            c.supervisor_settings(weights),
            orchestrator.clone(),
            pool.clone(),
            events.clone(),
            match c.health_check {
                config::HealthCheck::Http => Arc::new(health::HttpProbe::default()),
                config::HealthCheck::Grpc => Arc::new(health::GrpcProbe::default()),
            },
            c.replicas,
            supervisor_stop.clone(),
        )
        .await?;

        let proxy_config = c.proxy_config(orchestrator.manages_replicas());
        let access_log = match &c.access_log {
            Some(path) => Some(
                access_log::AccessLog::start(path, metrics.clone())
                    .await
                    .map_err(|e| StartError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let app = Arc::new(admin::App {
            control,
            proxy: proxy::Proxy::new(proxy_config, pool.clone(), metrics.clone(), events.clone())
                .with_access_log(access_log),
            pool,
            metrics,
            events,
            admin_token: c.admin_token.clone().filter(|t| !t.is_empty()),
            max_replicas: c.max_replicas,
            settings: admin::status::Settings::from_config(
                c,
                addr,
                admin_addr,
                max_connections,
                orchestrator.kind(),
                &options,
            ),
            shutdown: shutdown.clone(),
        });
        let role = if admin_listener.is_some() {
            server::Role::Data
        } else {
            server::Role::Both
        };
        let options = server::ServeOptions::new(&c.limits, max_connections, c.drain_timeout, role);
        let stop = shutdown.clone();
        tokio::spawn({
            let app = app.clone();
            let stop = stop.clone();
            async move { app.proxy.sweep_idle(stop).await }
        });
        let admin_task = admin_listener.map(|listener| {
            let admin = server::ServeOptions {
                role: server::Role::Admin,
                max_connections: ADMIN_CONNECTIONS,
                ..options
            };
            tokio::spawn(server::serve(
                listener,
                app.clone(),
                stop.clone(),
                admin,
                None,
            ))
        });
        let tls_task = match (tls_listener, tls) {
            (Some(listener), Some(tls)) => {
                tls.watch(stop.clone());
                Some(tokio::spawn(server::serve(
                    listener,
                    app.clone(),
                    stop.clone(),
                    options,
                    Some(tls),
                )))
            }
            _ => None,
        };
        let task = tokio::spawn(async move {
            // Requests in flight finish (bounded), then replicas are drained
            // and stopped in order.
            server::serve(listener, app, stop, options, None).await;
            for task in [admin_task, tls_task].into_iter().flatten() {
                let _ = task.await;
            }
            supervisor_stop.cancel();
            let _ = supervisor.await;
        });
        Ok(Running {
            addr,
            admin_addr,
            tls_addr,
            shutdown,
            task,
        })
    }
}

/// Connections the admin listener holds at once: its own small pool, so an
/// operator gets in while the data listener is at its cap.
const ADMIN_CONNECTIONS: usize = 256;

/// A listener (and the address it got) on `addr` where one is configured.
async fn bind_optional(
    addr: Option<&str>,
) -> Result<(Option<tokio::net::TcpListener>, Option<SocketAddr>), StartError> {
    let Some(addr) = addr else {
        return Ok((None, None));
    };
    let listener = bind(addr).await?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    Ok((Some(listener), Some(local)))
}

/// The accept queue asked of the kernel, which caps it at
/// `net.core.somaxconn` (4096 on current Linux). tokio's default, 1024, is
/// short for a burst: a client whose handshake finds the queue full has its
/// ACK dropped and waits for a SYN-ACK retransmit, a second or more.
/// HAProxy sizes its queue to `maxconn` the same way.
pub const LISTEN_BACKLOG: u32 = 65_535;

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, StartError> {
    let failed = |source| StartError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let mut last = None;
    for at in tokio::net::lookup_host(addr).await.map_err(failed)? {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(failed)?;
        // As `TcpListener::bind` does: a restart need not wait out
        // TIME_WAIT.
        socket.set_reuseaddr(true).map_err(failed)?;
        match socket.bind(at).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })))
}

/// A started balancer.
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's own address, with `--admin-listen`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The HTTPS listener's address, with `--tls-listen`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Stops accepting, finishes requests in flight, stops every replica it
    /// started, and returns when all of that is done.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Runs the balancer until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = Balancer::new(config).start().await?;
    println!("balancer listening on http://{}", running.addr());
    if let Some(admin) = running.admin_addr() {
        println!("admin API on http://{admin}");
    }
    if let Some(tls) = running.tls_addr() {
        println!("balancer listening on https://{tls}");
    }
    backend::shutdown_signal().await;
    tracing::info!("shutting down: draining requests and stopping replicas");
    running.stop().await;
    Ok(())
}
