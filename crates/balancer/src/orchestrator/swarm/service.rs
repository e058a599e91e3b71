//! The engine calls behind the orchestrator: a replica's service spec,
//! creating it (and losing a name or ring id to another balancer), waiting
//! for its task, removing it, and reading every member at once.

use std::net::SocketAddr;

use serde_json::json;

use super::{
    Inner, LABEL_ID, LABEL_PROJECT, LABEL_REPLICA,
    engine::{EngineError, with_filters},
    model,
};
use crate::orchestrator::{
    Instance, Observed, OrchestratorError, ReplicaSpec, Taken, docker::BACKEND_PORT,
};

/// How often a start looks for its service's task.
const START_POLL: std::time::Duration = std::time::Duration::from_millis(100);

fn engine_error(e: EngineError) -> OrchestratorError {
    OrchestratorError::Engine(e.to_string())
}

impl Inner {
    fn service_name(&self, spec: &ReplicaSpec) -> String {
        format!("{}-{}", self.settings.project, spec.name)
    }

    pub(super) fn service_spec(&self, spec: &ReplicaSpec) -> serde_json::Value {
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
    pub(super) async fn members(&self) -> Result<Vec<Observed>, EngineError> {
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
    async fn serving(
        &self,
        spec: &ReplicaSpec,
        service: &str,
    ) -> Result<SocketAddr, OrchestratorError> {
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

    pub(super) async fn start(&self, spec: ReplicaSpec) -> Result<Instance, OrchestratorError> {
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

    pub(super) async fn remove(&self, service: &str) -> Result<(), OrchestratorError> {
        self.engine
            .delete(&format!("/services/{service}"))
            .await
            .map_err(|e| OrchestratorError::Stop {
                handle: service.to_owned(),
                reason: e.to_string(),
            })
    }
}
