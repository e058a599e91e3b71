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
mod watch;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::json;

use super::{
    Adopted, BoxFuture, Instance, Observation, Observed, Orchestrator, OrchestratorError,
    ReplicaSpec, Taken,
    docker::{BACKEND_PORT, LABEL_ID, LABEL_PROJECT, LABEL_REPLICA},
};
use engine::{Engine, EngineError, with_filters};

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
/// How often a start looks for its service's task.
const START_POLL: Duration = Duration::from_millis(100);

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

fn engine_error(e: EngineError) -> OrchestratorError {
    OrchestratorError::Engine(e.to_string())
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

impl Inner {
    fn service_name(&self, spec: &ReplicaSpec) -> String {
        format!("{}-{}", self.settings.project, spec.name)
    }

    fn service_spec(&self, spec: &ReplicaSpec) -> serde_json::Value {
        let labels = json!({
            LABEL_PROJECT: self.settings.project,
            LABEL_REPLICA: spec.name,
            LABEL_ID: spec.id.to_string(),
        });
        // The labels go on the service only: the task containers carry
        // Swarm's own labels, so `--orchestrator docker`, which adopts and
        // removes containers by `lb.project`, never takes them for its own.
        let grace = u64::try_from(self.settings.stop_grace.as_nanos()).unwrap_or(u64::MAX);
        json!({
            "Name": self.service_name(spec),
            "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": self.settings.image,
                    "Args": ["--listen", format!("0.0.0.0:{BACKEND_PORT}")],
                    "Env": [format!("SERVER_ID={}", spec.name)],
                    "Hostname": spec.name,
                    "StopGracePeriod": grace,
                },
                // Delay 0: the replacement answers ~1.2 s after a kill
                // instead of ~6 s with the default 5 s delay.
                "RestartPolicy": {"Condition": "any", "Delay": 0, "MaxAttempts": 0},
                "Networks": [{"Target": self.settings.network}],
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": "dnsrr"},
        })
    }

    fn project_label(&self) -> String {
        format!("{LABEL_PROJECT}={}", self.settings.project)
    }

    async fn ensure_network(&self) -> Result<(), OrchestratorError> {
        let mut ready = self.network_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let name = &self.settings.network;
        match self
            .engine
            .get::<serde_json::Value>(&format!("/networks/{name}"))
            .await
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                let request = json!({
                    "Name": name, "Driver": "overlay", "Attachable": true,
                    "CheckDuplicate": true,
                    "Labels": {LABEL_PROJECT: self.settings.project},
                });
                match self
                    .engine
                    .post::<serde_json::Value>("/networks/create", &request)
                    .await
                {
                    // 409: another balancer created it meanwhile.
                    Err(e) if e.status() != Some(409) => return Err(engine_error(e)),
                    _ => {}
                }
            }
            Err(e) => return Err(engine_error(e)),
        }
        *ready = true;
        Ok(())
    }

    /// Every member the engine shows now.
    async fn members(&self) -> Result<Vec<Observed>, EngineError> {
        let filters = json!({"label": [self.project_label()]});
        let services: Vec<model::Service> = self
            .engine
            .get(&with_filters("/services", &filters))
            .await?;
        let tasks: Vec<model::Task> = self.engine.get(&with_filters("/tasks", &filters)).await?;
        let nodes: Vec<model::Node> = self.engine.get("/nodes").await?;
        let scope = model::Scope {
            project: &self.settings.project,
            network: &self.settings.network,
            port: BACKEND_PORT,
        };
        Ok(model::members(scope, &services, &tasks, &nodes))
    }

    /// Creates the service of `spec`; its id. A taken name or ring id is
    /// [`OrchestratorError::Taken`], and nothing of ours is left behind.
    async fn create(&self, spec: &ReplicaSpec) -> Result<String, OrchestratorError> {
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = match self
            .engine
            .post("/services/create", &self.service_spec(spec))
            .await
        {
            Ok(c) => c,
            Err(e) if e.status() == Some(409) => {
                return Err(OrchestratorError::Taken {
                    name: spec.name.clone(),
                    what: Taken::Name,
                });
            }
            Err(e) => {
                return Err(OrchestratorError::Spawn {
                    name: spec.name.clone(),
                    reason: e.to_string(),
                });
            }
        };
        // Another name with this ring id, created just before ours by
        // another balancer? The older keeps it (the rule every balancer's
        // view applies); if that is not ours, ours goes.
        let filters = json!({"label": [self.project_label(), format!("{LABEL_ID}={}", spec.id)]});
        let same_id: Vec<model::Service> = self
            .engine
            .get(&with_filters("/services", &filters))
            .await
            .map_err(engine_error)?;
        let oldest = same_id
            .iter()
            .min_by(|a, b| {
                (model::created_nanos(&a.created_at), &a.id)
                    .cmp(&(model::created_nanos(&b.created_at), &b.id))
            })
            .map(|s| s.id.clone());
        if oldest.is_some_and(|o| o != created.id) {
            let _ = self.remove(&created.id).await;
            return Err(OrchestratorError::Taken {
                name: spec.name.clone(),
                what: Taken::Id(spec.id),
            });
        }
        Ok(created.id)
    }

    /// Waits until the service has a serving task; its address.
    async fn serving(&self, spec: &ReplicaSpec, service: &str) -> Result<SocketAddr, OrchestratorError> {
        let until = tokio::time::Instant::now() + self.settings.start_timeout;
        loop {
            let found = self
                .members()
                .await
                .map_err(engine_error)?
                .into_iter()
                .find(|m| m.handle == service)
                .and_then(|m| m.addr);
            if let Some(addr) = found {
                return Ok(addr);
            }
            if tokio::time::Instant::now() >= until {
                return Err(OrchestratorError::Spawn {
                    name: spec.name.clone(),
                    reason: format!(
                        "no task running after {} s",
                        self.settings.start_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    async fn start(&self, spec: ReplicaSpec) -> Result<Instance, OrchestratorError> {
        self.ensure_network().await?;
        let service = self.create(&spec).await?;
        match self.serving(&spec, &service).await {
            Ok(addr) => Ok(Instance {
                handle: service,
                addr,
                pid: None,
                protocol: None,
                // The engine restarts it; the watch shows the new task.
                exited: None,
            }),
            Err(e) => {
                let _ = self.remove(&service).await;
                Err(e)
            }
        }
    }

    async fn remove(&self, service: &str) -> Result<(), OrchestratorError> {
        self.engine
            .delete(&format!("/services/{service}"))
            .await
            .map_err(|e| OrchestratorError::Stop {
                handle: service.to_owned(),
                reason: e.to_string(),
            })
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
mod tests {
    use super::*;

    fn orchestrator() -> SwarmOrchestrator {
        SwarmOrchestrator::new(SwarmSettings {
            image: "lb-backend:swarm".into(),
            network: "lb-swarm".into(),
            project: "p1".into(),
            socket: Some("/nonexistent/docker.sock".into()),
            poll: Duration::from_secs(1),
            stop_grace: Duration::from_secs(5),
            start_timeout: Duration::from_secs(1),
            remove_on_shutdown: false,
        })
    }

    #[test]
    fn services_are_labelled_dnsrr_and_restart_at_once() {
        let spec = ReplicaSpec {
            name: "s4".into(),
            id: 4,
        };
        let s = orchestrator().service_spec(&spec);
        assert_eq!(s["Name"], "p1-s4");
        assert_eq!(s["Labels"][LABEL_PROJECT], "p1");
        assert_eq!(s["Labels"][LABEL_REPLICA], "s4");
        assert_eq!(s["Labels"][LABEL_ID], "4");
        assert_eq!(s["EndpointSpec"]["Mode"], "dnsrr");
        let task = &s["TaskTemplate"];
        assert_eq!(task["RestartPolicy"]["Delay"], 0);
        assert_eq!(task["RestartPolicy"]["Condition"], "any");
        assert_eq!(task["Networks"][0]["Target"], "lb-swarm");
        assert_eq!(task["ContainerSpec"]["Env"][0], "SERVER_ID=s4");
        assert!(task["ContainerSpec"].get("Labels").is_none());
        assert_eq!(task["ContainerSpec"]["Image"], "lb-backend:swarm");
        assert_eq!(task["ContainerSpec"]["StopGracePeriod"], 5_000_000_000_u64);
        // The labels parse back into the same name and ring id.
        let service: model::Service = serde_json::from_value(json!({
            "ID": "x", "Spec": {"Name": s["Name"], "Labels": s["Labels"]}
        }))
        .expect("service");
        assert_eq!(model::spec_of(&service), Some(spec));
    }

    #[tokio::test]
    async fn without_an_engine_adoption_is_empty_and_starts_fail() {
        let o = orchestrator();
        assert!(o.adopt().await.expect("adopt").is_empty());
        let err = o
            .spawn(ReplicaSpec {
                name: "s1".into(),
                id: 1,
            })
            .await
            .expect_err("no engine");
        assert!(matches!(err, OrchestratorError::Engine(_)), "{err}");
    }
}
