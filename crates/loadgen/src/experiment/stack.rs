//! A stack for one measurement: a balancer (in this process) over replica
//! processes, started fresh and torn down after, so runs never share state.

use std::time::Duration;

use balancer::{
    Balancer, Config,
    orchestrator::{DockerArgs, ProcessArgs},
};

use super::ExperimentError;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub replicas: usize,
    pub policy: String,
    pub preset: ring::HashPreset,
    /// Ring shape (`--slots`, `--vnodes`); the spec's by default.
    pub slots: u64,
    pub vnodes: u32,
    pub key: String,
}

impl StackSpec {
    pub fn new(replicas: usize, policy: &str) -> Self {
        Self {
            replicas,
            policy: policy.into(),
            preset: ring::RingConfig::SPEC.preset,
            slots: ring::RingConfig::SPEC.slots,
            vnodes: ring::RingConfig::SPEC.vnodes,
            key: "random".into(),
        }
    }
}

/// A running stack.
pub struct Stack {
    running: Option<balancer::Running>,
    pub url: String,
}

impl Stack {
    pub async fn start(
        spec: &StackSpec,
        settings: &super::Settings,
    ) -> Result<Self, ExperimentError> {
        let key = spec.key.parse().map_err(ExperimentError::Stack)?;
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            replicas: spec.replicas,
            max_replicas: 16,
            policy: spec.policy.clone(),
            hash_preset: spec.preset,
            slots: spec.slots,
            vnodes: Some(spec.vnodes),
            key,
            health_interval: Duration::from_millis(250),
            health_timeout: Duration::from_millis(250),
            ..Config::default()
        };
        let o = &mut config.orchestrator;
        o.stop_timeout = Duration::from_secs(2);
        if settings.docker {
            o.kind = "docker".into();
            o.docker = DockerArgs {
                // Its own label: an experiment never adopts or removes the
                // containers of a `just up` stack.
                docker_project: "lb-experiment".into(),
                docker_remove_on_exit: true,
                ..o.docker.clone()
            };
        } else {
            o.kind = "process".into();
            o.process = ProcessArgs {
                backend_bin: Some(settings.replica_program.clone()),
                backend_arg: vec!["backend".into()],
                ..o.process.clone()
            };
        }
        let running = Balancer::new(config)
            .start()
            .await
            .map_err(|e| ExperimentError::Stack(e.to_string()))?;
        let url = format!("http://{}", running.addr());
        let stack = Self {
            running: Some(running),
            url,
        };
        // A stack that came up wrong is stopped before the error is
        // returned: its replicas (processes or containers) must not outlive it.
        let members = match stack.json("/rep").await {
            Ok(members) => members,
            Err(e) => {
                stack.stop().await;
                return Err(e);
            }
        };
        let n = members["message"]["N"].as_u64().unwrap_or(0);
        if n != spec.replicas as u64 {
            stack.stop().await;
            return Err(ExperimentError::Stack(format!(
                "wanted {} replicas, got {members}",
                spec.replicas
            )));
        }
        Ok(stack)
    }

    /// GET `path` on the balancer, parsed as `T` (the balancer's own types:
    /// `Status`, `Events`).
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ExperimentError> {
        let (_, body) = self.request("GET", path, "").await?;
        serde_json::from_str(&body)
            .map_err(|e| ExperimentError::Failed(format!("{path}: {e}: {body}")))
    }

    /// GET `path` on the balancer, as JSON.
    pub async fn json(&self, path: &str) -> Result<serde_json::Value, ExperimentError> {
        let (_, body) = self.request("GET", path, "").await?;
        serde_json::from_str(&body)
            .map_err(|e| ExperimentError::Failed(format!("{path}: {e}: {body}")))
    }

    /// Any request to the balancer: (status, body).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), ExperimentError> {
        use http_body_util::BodyExt as _;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .map_err(|e| ExperimentError::Failed(e.to_string()))?;
        // One bound over the head and the body: an answer that stalls
        // half-way is an error, not a hang.
        let exchange = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| ExperimentError::Failed(format!("{method} {path}: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ExperimentError::Failed(format!("{method} {path}: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| ExperimentError::Failed(format!("{method} {path} timed out")))?
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}
