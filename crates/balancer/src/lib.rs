//! A customizable HTTP load balancer.
//!
//! The request path reads top to bottom in a few files: [`server`] accepts
//! connections and sends each request to the [`admin`] API or straight to
//! the [`proxy`], which extracts the key,
//! asks the [`policy`] for a replica from the [`pool`]'s current snapshot and
//! forwards with a pooled client, retrying elsewhere on a connect failure.
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

pub mod admin;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod metrics;
pub mod orchestrator;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod replica;
pub mod server;
pub mod supervisor;

use std::{net::SocketAddr, sync::Arc};

use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Config, OrchestratorKind};
pub use error::StartError;
use orchestrator::{
    Orchestrator, ProcessOrchestrator, StaticOrchestrator, process::BackendCommand,
};
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

    fn orchestrator(&self) -> Result<Arc<dyn Orchestrator>, StartError> {
        let c = &self.config;
        Ok(match c.orchestrator {
            OrchestratorKind::Process => {
                let command = match &c.backend_bin {
                    Some(program) => BackendCommand {
                        program: program.clone(),
                        args: Vec::new(),
                    },
                    None => BackendCommand::current_exe().map_err(|e| {
                        StartError::Config(format!("cannot find this executable: {e}"))
                    })?,
                };
                let extra = if c.backend_delay_ms > 0 {
                    vec!["--delay-ms".into(), c.backend_delay_ms.to_string()]
                } else {
                    Vec::new()
                };
                Arc::new(ProcessOrchestrator::new(
                    command,
                    extra,
                    c.drain_timeout.min(std::time::Duration::from_secs(5)),
                ))
            }
            OrchestratorKind::Static => {
                if c.upstream.is_empty() {
                    return Err(StartError::Config(
                        "--orchestrator static needs at least one --upstream URL".into(),
                    ));
                }
                let upstreams = c
                    .upstream
                    .iter()
                    .enumerate()
                    .map(|(i, u)| orchestrator::fixed::Upstream::parse(u, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StartError::Config)?;
                Arc::new(StaticOrchestrator::new(upstreams))
            }
            OrchestratorKind::Docker => Arc::new(orchestrator::DockerOrchestrator::connect(
                orchestrator::docker::DockerSettings {
                    image: c.docker_image.clone(),
                    network: c.docker_network.clone(),
                    project: c.docker_project.clone(),
                    stop_timeout: 5,
                    socket: None,
                    remove_on_shutdown: false,
                },
            )),
        })
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
        let options = policy::PolicyOptions {
            ring: ring::RingConfig {
                slots: c.slots,
                vnodes: c.vnodes.unwrap_or_else(|| c.slots.max(2).ilog2()),
                preset: c.hash_preset,
            },
            bounded_eps: c.bounded_eps,
        };
        let policy = match &self.policy {
            Some(p) => p.clone(),
            None => policy::from_name(&c.policy, &options)?,
        };
        let weights = c.weights().map_err(StartError::Config)?;
        let orchestrator = match &self.orchestrator {
            Some(o) => o.clone(),
            None => self.orchestrator()?,
        };
        let listener = tokio::net::TcpListener::bind(&c.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: c.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(StartError::Serve)?;

        let pool = Arc::new(pool::Pool::new(policy.clone())?);
        let events = Arc::new(events::EventLog::default());
        let metrics = Arc::new(metrics::Metrics::default());
        let shutdown = CancellationToken::new();
        let supervisor_stop = CancellationToken::new();
        let settings = supervisor::Settings {
            max_replicas: c.max_replicas,
            ready_timeout: c.ready_timeout,
            drain_timeout: c.drain_timeout,
            retry_backoff: std::time::Duration::from_millis(500),
            weights,
        };
        let health = health::HealthConfig {
            interval: c.health_interval,
            timeout: c.health_timeout,
            fall: c.fall,
            rise: c.rise,
        };
        let (control, supervisor) = supervisor::Supervisor::start(
            settings,
            orchestrator.clone(),
            pool.clone(),
            events.clone(),
            health,
            c.replicas,
            supervisor_stop.clone(),
        )
        .await?;

        let proxy_config = proxy::ProxyConfig {
            key: c.key.clone(),
            retries: c.retries,
            connect_timeout: c.connect_timeout,
            response_timeout: c.response_timeout,
            spec_not_found: orchestrator.manages_replicas(),
            max_idle_per_replica: c.max_idle,
        };
        let describe = json!({
            "listen": addr.to_string(),
            "orchestrator": orchestrator.kind(),
            "key": c.key.to_string(),
            "hash_preset": c.hash_preset.to_string(),
            "slots": options.ring.slots,
            "vnodes": options.ring.vnodes,
            "max_replicas": c.max_replicas,
            "policies": policy::names(),
            "health": {"interval_ms": c.health_interval.as_millis() as u64, "timeout_ms": c.health_timeout.as_millis() as u64, "fall": c.fall, "rise": c.rise},
            "retries": c.retries,
        });
        let app = Arc::new(admin::App {
            control,
            proxy: proxy::Proxy::new(proxy_config, pool.clone(), metrics.clone(), events.clone()),
            pool,
            metrics,
            events,
            admin_token: c.admin_token.clone().filter(|t| !t.is_empty()),
            max_replicas: c.max_replicas,
            describe,
        });
        let timeouts = server::ServeTimeouts {
            header_read: c.header_read_timeout,
            drain: c.drain_timeout,
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            // Requests in flight finish (bounded), then replicas are drained
            // and stopped in order.
            server::serve(listener, app, stop, timeouts).await;
            supervisor_stop.cancel();
            let _ = supervisor.await;
        });
        Ok(Running {
            addr,
            shutdown,
            task,
        })
    }
}

/// A started balancer.
pub struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    backend::shutdown_signal().await;
    tracing::info!("shutting down: draining requests and stopping replicas");
    running.stop().await;
    Ok(())
}
