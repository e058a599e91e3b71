//! The Swarm orchestrator: each replica is a Docker Swarm service of one
//! task on an attachable overlay network, and membership lives in the
//! engine, so any number of balancers pointed at one swarm share it.
//!
//! One service per replica keeps `/add` and `/rm` of named replicas
//! meaningful. Each service is named `<project>-<replica>` and labelled
//! with the project, the replica's name and its ring id (`lb.project`,
//! `lb.replica`, `lb.id`), so every balancer reads the same names and ids
//! and builds the same table. The engine's unique service names arbitrate
//! two balancers adding one name at once (the loser gets 409 and tries the
//! next id); a clash of ring ids between different names is settled by
//! age, the same way on every balancer ([`model::members`]).
//!
//! Swarm's restart policy (delay 0) restarts a dead task; the balancer
//! does not start a replacement but follows the engine: [`watch`] polls
//! `GET /tasks` (about every second, faster right after a container or
//! service event) and the supervisor puts the new task address in rotation
//! once it answers its heartbeat. Endpoint mode is `dnsrr` and the
//! balancer routes to task IPs: there is no service VIP to go through
//! (no IPVS here), and a load balancer wants to balance itself anyway.
//! Why the engine is read with a small client of its own: see [`engine`].

mod engine;
pub mod model;
mod service;
mod watch;

use std::{sync::Arc, time::Duration};

use super::{
    Adopted, BoxFuture, Instance, Observation, Orchestrator, OrchestratorError, ReplicaSpec,
    docker::{LABEL_ID, LABEL_PROJECT, LABEL_REPLICA},
};
use engine::{Engine, EngineError};

/// Flags of the Swarm orchestrator.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Swarm orchestrator")]
pub struct SwarmArgs {
    /// Image of replica services (present on every node: no registry).
    #[arg(long, env = "LB_SWARM_IMAGE", default_value = "lb-backend:latest")]
    pub swarm_image: String,
    /// Attachable overlay network of the replicas (created if missing).
    #[arg(long, env = "LB_SWARM_NETWORK", default_value = "lb-swarm")]
    pub swarm_network: String,
    /// Label value that marks services as this project's.
    #[arg(long, env = "LB_SWARM_PROJECT", default_value = "lb")]
    pub swarm_project: String,
    /// Engine socket of a manager node (default: DOCKER_HOST, else
    /// /var/run/docker.sock).
    #[arg(long, env = "LB_SWARM_SOCKET")]
    pub swarm_socket: Option<String>,
    /// How often the engine's tasks are read (besides right after events).
    #[arg(long, env = "LB_SWARM_POLL", default_value = "1s", value_parser = crate::duration::parse_duration)]
    pub swarm_poll: Duration,
    /// Remove the services when this balancer stops (for experiments);
    /// by default they stay for the other balancers and the next one.
    #[arg(long, env = "LB_SWARM_REMOVE_ON_EXIT")]
    pub swarm_remove_on_exit: bool,
}

/// The Swarm orchestrator of `config`.
pub fn build(
    config: &super::OrchestratorConfig,
) -> Result<Arc<dyn Orchestrator>, OrchestratorError> {
    let args = &config.swarm;
    Ok(Arc::new(SwarmOrchestrator::new(SwarmSettings {
        image: args.swarm_image.clone(),
        network: args.swarm_network.clone(),
        project: args.swarm_project.clone(),
        socket: args.swarm_socket.clone(),
        poll: args.swarm_poll,
        stop_grace: config.stop_timeout,
        start_timeout: START_TIMEOUT,
        remove_on_shutdown: args.swarm_remove_on_exit,
    })))
}

/// How long a new service may take to have a running task.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the Swarm orchestrator.
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    pub image: String,
    pub network: String,
    pub project: String,
    pub socket: Option<String>,
    pub poll: Duration,
    /// The task's stop grace period (SIGTERM, then SIGKILL).
    pub stop_grace: Duration,
    pub start_timeout: Duration,
    pub remove_on_shutdown: bool,
}

/// Runs replicas as Swarm services.
#[derive(Debug, Clone)]
pub struct SwarmOrchestrator {
    inner: Arc<Inner>,
}

/// What the orchestrator and its watch task share.
#[derive(Debug)]
struct Inner {
    engine: Engine,
    settings: SwarmSettings,
    /// Held while checking for and creating the network.
    network_ready: tokio::sync::Mutex<bool>,
}

impl SwarmOrchestrator {
    pub fn new(settings: SwarmSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: Engine::new(settings.socket.as_deref()),
                settings,
                network_ready: tokio::sync::Mutex::new(false),
            }),
        }
    }

    /// The create request of a replica's service.
    pub fn service_spec(&self, spec: &ReplicaSpec) -> serde_json::Value {
        self.inner.service_spec(spec)
    }
}

impl Orchestrator for SwarmOrchestrator {
    fn kind(&self) -> &'static str {
        "swarm"
    }

    fn restarts_replicas(&self) -> bool {
        true
    }

    fn observe(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<Observation>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(watch::run(self.inner.clone(), tx, stop)))
    }

    fn adopt(&self) -> BoxFuture<'_, Result<Vec<Adopted>, OrchestratorError>> {
        Box::pin(async move {
            let members = match self.inner.members().await {
                Ok(m) => m,
                Err(e) => {
                    // No engine at start: serve nothing yet; the watch
                    // brings the members in once the engine answers.
                    tracing::error!(error = %e, "cannot list swarm services; starting with none adopted");
                    return Ok(Vec::new());
                }
            };
            // Services without a serving task come in through the watch.
            Ok(members
                .into_iter()
                .filter_map(|m| {
                    Some(Adopted {
                        instance: Instance {
                            handle: m.handle,
                            addr: m.addr?,
                            pid: None,
                            protocol: None,
                            exited: None,
                        },
                        spec: m.spec,
                        weight: 1,
                    })
                })
                .collect())
        })
    }

    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        Box::pin(self.inner.start(spec))
    }

    fn stop(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        Box::pin(async move { self.inner.remove(&handle).await })
    }

    fn stop_on_shutdown(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        Box::pin(async move {
            if self.inner.settings.remove_on_shutdown {
                self.inner.remove(&handle).await
            } else {
                // Other balancers route to it, and the next one adopts it.
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod tests;
