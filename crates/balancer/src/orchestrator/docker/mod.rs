//! The Docker orchestrator: each replica is a container on one network,
//! created, watched and removed through the Docker API (bollard).
//!
//! Every container it creates carries labels (`lb.project`, `lb.replica`,
//! `lb.id`); it lists, adopts and removes only containers with its project
//! label, never anything else on the host. Containers outlive the balancer
//! on purpose: a restarted balancer adopts them instead of spawning
//! duplicates, and `just down` removes them. Adoption goes container by
//! container ([`plan_adoption`], then each is inspected or removed on its
//! own): one that cannot be inspected is skipped, never the rest, and of
//! two containers with one name only one is adopted. Replicas are reached by their
//! IP on the network, so nothing inside the scratch images resolves names.

use std::{collections::HashMap, net::SocketAddr};

use bollard::{
    Docker,
    models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, NetworkCreateRequest},
    query_parameters::{
        CreateContainerOptionsBuilder, InspectNetworkOptions, ListContainersOptionsBuilder,
        RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use futures_util::StreamExt as _;

mod adoption;

use super::{Adopted, BoxFuture, Instance, Orchestrator, OrchestratorError, ReplicaSpec};
use adoption::carry_out;
pub use adoption::{AdoptionPlan, Found, plan_adoption};

/// Flags of the Docker orchestrator.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Docker orchestrator")]
pub struct DockerArgs {
    /// Image of replica containers.
    #[arg(long, env = "LB_DOCKER_IMAGE", default_value = "lb-backend:latest")]
    pub docker_image: String,
    /// Network replica containers join (created as a bridge if missing).
    #[arg(long, env = "LB_DOCKER_NETWORK", default_value = "net1")]
    pub docker_network: String,
    /// Label value that marks containers as this balancer's.
    #[arg(long, env = "LB_DOCKER_PROJECT", default_value = "lb")]
    pub docker_project: String,
    /// Remove the containers when the balancer stops, instead of leaving
    /// them for the next balancer to adopt (for experiments).
    #[arg(long, env = "LB_DOCKER_REMOVE_ON_EXIT")]
    pub docker_remove_on_exit: bool,
}

/// The Docker orchestrator of `config` (connects lazily: see
/// [`DockerOrchestrator::connect`]).
pub fn build(
    config: &super::OrchestratorConfig,
) -> Result<std::sync::Arc<dyn Orchestrator>, OrchestratorError> {
    let args = &config.docker;
    Ok(std::sync::Arc::new(DockerOrchestrator::connect(
        DockerSettings {
            image: args.docker_image.clone(),
            network: args.docker_network.clone(),
            project: args.docker_project.clone(),
            stop_timeout: i32::try_from(config.stop_timeout.as_secs()).unwrap_or(i32::MAX),
            socket: None,
            remove_on_shutdown: args.docker_remove_on_exit,
        },
    )))
}

/// Label with the project name; every container we own has it.
pub const LABEL_PROJECT: &str = "lb.project";
/// Label with the replica's hostname.
pub const LABEL_REPLICA: &str = "lb.replica";
/// Label with the replica's ring id.
pub const LABEL_ID: &str = "lb.id";
/// The port the backend listens on inside its container.
pub const BACKEND_PORT: u16 = 5000;

/// Settings of the Docker orchestrator.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub image: String,
    pub network: String,
    pub project: String,
    /// Seconds a container gets to stop before it is killed.
    pub stop_timeout: i32,
    /// Engine socket; `None` for `DOCKER_HOST` or the local default.
    pub socket: Option<String>,
    /// Remove the containers when the balancer stops (experiments), instead
    /// of leaving them for the next balancer to adopt (the default).
    pub remove_on_shutdown: bool,
}

/// Runs replicas as containers.
#[derive(Debug)]
pub struct DockerOrchestrator {
    /// `None` until the engine's socket can be opened: the balancer starts
    /// and serves without an engine, and every call tries again.
    docker: std::sync::Mutex<Option<Docker>>,
    settings: DockerSettings,
    /// Held while checking for and creating the network: Docker accepts two
    /// networks with one name, so concurrent spawns must not both create it.
    network_ready: tokio::sync::Mutex<bool>,
}

fn engine(e: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Engine(e.to_string())
}

impl DockerOrchestrator {
    /// Connects to the engine named by `DOCKER_HOST`, or the local socket.
    /// Connecting is lazy: an unreachable engine shows up as errors of
    /// individual calls, and routing to running replicas goes on.
    pub fn connect(settings: DockerSettings) -> Self {
        let this = Self {
            docker: std::sync::Mutex::new(None),
            settings,
            network_ready: tokio::sync::Mutex::new(false),
        };
        if let Err(e) = this.client() {
            tracing::error!(error = %e, "Docker engine unreachable; /add will answer 503 until it is back");
        }
        this
    }

    /// The engine client, connecting first if needed.
    fn client(&self) -> Result<Docker, OrchestratorError> {
        let mut slot = self
            .docker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let docker = match &self.settings.socket {
            Some(path) => Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(engine)?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    /// The labels of a replica container.
    pub fn labels(&self, spec: &ReplicaSpec) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_PROJECT.to_owned(), self.settings.project.clone()),
            (LABEL_REPLICA.to_owned(), spec.name.clone()),
            (LABEL_ID.to_owned(), spec.id.to_string()),
        ])
    }

    /// The create request of a replica container.
    pub fn container_config(&self, spec: &ReplicaSpec) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            hostname: Some(spec.name.clone()),
            env: Some(vec![format!("SERVER_ID={}", spec.name)]),
            cmd: Some(vec!["--listen".into(), format!("0.0.0.0:{BACKEND_PORT}")]),
            labels: Some(self.labels(spec)),
            host_config: Some(HostConfig {
                network_mode: Some(self.settings.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn project_filter(&self, extra: Option<(&str, &str)>) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_PROJECT}={}", self.settings.project)];
        if let Some((k, v)) = extra {
            labels.push(format!("{k}={v}"));
        }
        HashMap::from([("label".to_owned(), labels)])
    }

    async fn ensure_network(&self) -> Result<(), OrchestratorError> {
        let mut ready = self.network_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let network = &self.settings.network;
        let docker = self.client()?;
        if docker
            .inspect_network(network, None::<InspectNetworkOptions>)
            .await
            .is_err()
        {
            let request = NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                ..Default::default()
            };
            docker.create_network(request).await.map_err(engine)?;
        }
        *ready = true;
        Ok(())
    }

    /// The container's address on our network.
    async fn address(&self, container: &str) -> Result<SocketAddr, OrchestratorError> {
        let info = self
            .client()?
            .inspect_container(container, None)
            .await
            .map_err(engine)?;
        let ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.settings.network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| {
                engine(format!(
                    "container {container} has no address on {}",
                    self.settings.network
                ))
            })?;
        let ip: std::net::IpAddr = ip.parse().map_err(engine)?;
        Ok(SocketAddr::new(ip, BACKEND_PORT))
    }

    fn exited(&self, docker: Docker, container: &str) -> BoxFuture<'static, ()> {
        let container = container.to_owned();
        Box::pin(async move {
            let mut wait = docker.wait_container(&container, None);
            // Any item (exit code, error) or the stream's end means it stopped
            // or can no longer be watched; either way it is not serving.
            let _ = wait.next().await;
        })
    }

    async fn remove(&self, container: &str) -> Result<(), OrchestratorError> {
        let docker = self.client()?;
        let stop = StopContainerOptionsBuilder::default()
            .t(self.settings.stop_timeout)
            .build();
        let _ = docker.stop_container(container, Some(stop)).await;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(container, Some(remove)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(OrchestratorError::Stop {
                handle: container.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    async fn start(&self, spec: ReplicaSpec) -> Result<Instance, OrchestratorError> {
        let docker = self.client()?;
        self.ensure_network().await?;
        // A stale container of ours under this name (a dead incarnation)
        // would block the name: remove it. Never touch unlabelled ones.
        let filters = self.project_filter(Some((LABEL_REPLICA, &spec.name)));
        let list = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for stale in docker.list_containers(Some(list)).await.map_err(engine)? {
            if let Some(id) = stale.id {
                self.remove(&id).await?;
            }
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = docker
            .create_container(Some(options), self.container_config(&spec))
            .await
            .map_err(|e| OrchestratorError::Spawn {
                name: spec.name.clone(),
                reason: e.to_string(),
            })?;
        let id = created.id;
        if let Err(e) = docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(OrchestratorError::Spawn {
                name: spec.name.clone(),
                reason: e.to_string(),
            });
        }
        let addr = match self.address(&id).await {
            Ok(addr) => addr,
            Err(e) => {
                let _ = self.remove(&id).await;
                return Err(e);
            }
        };
        Ok(Instance {
            protocol: None,
            exited: Some(self.exited(docker, &id)),
            handle: id,
            addr,
            pid: None,
        })
    }

    async fn running(&self) -> Result<Vec<Adopted>, OrchestratorError> {
        let docker = self.client()?;
        let filters = self.project_filter(None);
        let list = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = docker
            .list_containers(Some(list))
            .await
            .map_err(engine)?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(Found {
                    container: c.id?,
                    name: labels.get(LABEL_REPLICA).cloned(),
                    ring_id: labels.get(LABEL_ID).and_then(|v| v.parse().ok()),
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    created: c.created.unwrap_or(0),
                })
            })
            .collect();
        let settled = carry_out(
            plan_adoption(found),
            |id| async move { self.address(&id).await },
            |id| async move { self.remove(&id).await },
        )
        .await;
        Ok(settled
            .into_iter()
            .map(|(spec, id, addr)| Adopted {
                spec,
                instance: Instance {
                    protocol: None,
                    exited: Some(self.exited(docker.clone(), &id)),
                    handle: id,
                    addr,
                    pid: None,
                },
                weight: 1,
            })
            .collect())
    }
}

impl Orchestrator for DockerOrchestrator {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn adopt(&self) -> BoxFuture<'_, Result<Vec<Adopted>, OrchestratorError>> {
        Box::pin(async move {
            match self.running().await {
                Ok(adopted) => Ok(adopted),
                Err(e) => {
                    // No engine at start: serve what we can (nothing yet),
                    // and let /add answer the engine's error.
                    tracing::error!(error = %e, "cannot list containers; starting with none adopted");
                    Ok(Vec::new())
                }
            }
        })
    }

    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        Box::pin(self.start(spec))
    }

    fn stop(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        Box::pin(async move { self.remove(&handle).await })
    }

    fn stop_on_shutdown(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        Box::pin(async move {
            if self.settings.remove_on_shutdown {
                self.remove(&handle).await
            } else {
                // Left running for the next balancer to adopt; `just down`
                // removes them.
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orchestrator() -> DockerOrchestrator {
        DockerOrchestrator::connect(DockerSettings {
            image: "lb-backend:latest".into(),
            network: "net1".into(),
            project: "lb".into(),
            stop_timeout: 5,
            socket: Some("/nonexistent/docker.sock".into()),
            remove_on_shutdown: false,
        })
    }

    #[test]
    fn containers_carry_our_labels_and_join_the_network() {
        let o = orchestrator();
        let spec = ReplicaSpec {
            name: "s4".into(),
            id: 4,
        };
        let config = o.container_config(&spec);
        let labels = config.labels.expect("labels");
        assert_eq!(labels[LABEL_PROJECT], "lb");
        assert_eq!(labels[LABEL_REPLICA], "s4");
        assert_eq!(labels[LABEL_ID], "4");
        assert_eq!(config.hostname.as_deref(), Some("s4"));
        assert_eq!(config.env, Some(vec!["SERVER_ID=s4".to_owned()]));
        assert_eq!(
            config.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("net1")
        );
    }

    #[test]
    fn filters_select_only_our_project() {
        let o = orchestrator();
        let f = o.project_filter(Some((LABEL_REPLICA, "s1")));
        assert_eq!(
            f["label"],
            vec!["lb.project=lb".to_owned(), "lb.replica=s1".to_owned()]
        );
        assert_eq!(
            o.project_filter(None)["label"],
            vec!["lb.project=lb".to_owned()]
        );
    }
}
